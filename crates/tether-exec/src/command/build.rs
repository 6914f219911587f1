//! Building a command: its shared state and actor from a freshly spawned
//! process, or from the frozen record of a handover.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::net::unix::pipe;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::contain::{Containment, Leaf};
use crate::handover::{Frozen, Handover, Phase};
use crate::pty::{Pty, PtyWriter, Term};
use crate::ring::{Read, Ring};
use crate::shell::JobLink;
use crate::spec::{OutputLimit, TermSize};
use crate::stdin::Writers;

use super::actor::{Actor, Job};
use super::handle::CommandHandle;
use super::model::Model;
use super::pacing::Pacing;
use super::shared::Identity;
use super::shared::{Output, Shared};
use super::source::Source;
use super::state::LiveState;
use super::stdin_writer::{StdinPipe, StdinWriter};
use crate::sys::Process;

/// Resolved per-command settings the actor enforces.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Lifetimes {
    pub(crate) timeout: Option<Duration>,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) ttl: Option<Duration>,
    pub(crate) kill_on_disconnect: bool,
    pub(crate) max_output_bytes: Option<u64>,
    pub(crate) output_limit: OutputLimit,
    pub(crate) kill_grace: Duration,
    pub(crate) drain_grace: Duration,
}

/// A spawned process with its pipes, before its actor runs.
pub(crate) struct Spawned {
    pub(crate) pid: u32,
    pub(crate) io: SpawnedIo,
    /// Its cgroup, if commands get one.
    pub(crate) leaf: Option<Leaf>,
}

/// How a spawned process talks to us.
pub(crate) enum SpawnedIo {
    /// Three pipes.
    Pipes { stdin: pipe::Sender, stdout: pipe::Receiver, stderr: pipe::Receiver },
    /// A terminal: input, output (one stream) and control on the master.
    Pty(Pty),
    /// A command run by a named shell: its pipes come when the shell
    /// starts it, its end when the shell reports it.
    Shell(JobLink),
}

/// Metadata for a new command.
pub(crate) struct Meta {
    pub(crate) id: String,
    pub(crate) name: Option<String>,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) argv: Vec<String>,
    pub(crate) ring_bytes: usize,
    pub(crate) initial_stdin: Bytes,
    pub(crate) close_stdin: bool,
    /// For a PTY command, its initial size.
    pub(crate) pty_size: Option<TermSize>,
    /// A shell command: the shell's name.
    pub(crate) shell: Option<String>,
    /// The idempotency key it was started with.
    pub(crate) request_key: Option<String>,
}

impl Meta {
    /// A new command's metadata from its spec: `argv` as resolved (a
    /// shell command's: its script), `shell` the shell it is queued on.
    pub(crate) fn new(
        id: &str,
        spec: &crate::CommandSpec,
        argv: Vec<String>,
        ring_bytes: usize,
        shell: Option<String>,
    ) -> Meta {
        Meta {
            id: id.to_owned(),
            name: spec.name.clone(),
            labels: spec.labels.clone(),
            argv,
            ring_bytes,
            initial_stdin: spec.stdin.clone(),
            close_stdin: spec.close_stdin,
            pty_size: spec.pty.as_ref().map(|p| p.size),
            shell,
            request_key: spec.request_key.clone(),
        }
    }
}

/// Creates the shared state and returns the actor to run.
pub(crate) fn new_command(
    meta: Meta,
    proc_: Spawned,
    life: Lifetimes,
    reservation: crate::manager::Reservation,
    containment: Arc<Containment>,
) -> (CommandHandle, Actor) {
    let mut job = None;
    let mut stdin_later = None;
    let (stdin, sources, pty) = match proc_.io {
        SpawnedIo::Pipes { stdin, stdout, stderr } => {
            (Some(StdinPipe::Pipe(stdin)), [Some(Source::Pipe(stdout)), Some(Source::Pipe(stderr))], None)
        }
        SpawnedIo::Pty(p) => {
            let stdin = StdinPipe::Pty(PtyWriter(p.io.clone()));
            (Some(stdin), [Some(Source::Pty(p.io.clone())), None], Some(p))
        }
        SpawnedIo::Shell(link) => {
            // Nothing to read or write until the shell starts it.
            let (tx, rx) = oneshot::channel();
            stdin_later = Some(rx);
            job = Some(Job { link, stdin: Some(tx), cwd: None });
            (None, [None, None], None)
        }
    };
    let queued = job.is_some();
    let eof_char = pty.as_ref().map(Pty::eof_char);
    let mut initial_stdin = meta.initial_stdin;
    let mut close_stdin = meta.close_stdin;
    if let (Some(c), true) = (eof_char, close_stdin) {
        // A terminal is never closed: end of input is typed.
        let mut b = BytesMut::from(&initial_stdin[..]);
        b.put_u8(c);
        initial_stdin = b.freeze();
        close_stdin = false;
    }
    let size = meta.pty_size;
    assemble(Parts {
        shared: SharedParts {
            ident: Identity {
                id: meta.id,
                name: meta.name,
                labels: meta.labels,
                argv: meta.argv,
                pid: proc_.pid,
                started_at: SystemTime::now(),
                shell: meta.shell,
                request_key: meta.request_key,
            },
            eof_char,
            output: Output {
                rings: [Ring::new(meta.ring_bytes), Ring::new(meta.ring_bytes)],
                seq: 0,
                exit: None,
                pacing: Pacing::default(),
                size: size.map(|s| (s, 1)),
                queued,
            },
            ever_attached: false,
            stdin_open: !close_stdin,
            writers: Writers::default(),
            reservation,
        },
        stdin: StdinParts { pipe: stdin, later: stdin_later, initial: initial_stdin, close: close_stdin },
        sources,
        pty,
        term: size.map(Term::new),
        life,
        job,
        resume: None,
        state: None,
        contain: (containment, proc_.leaf),
    })
}

/// The fields of [`Shared`] that differ between commands.
pub(super) struct SharedParts {
    pub(super) ident: Identity,
    pub(super) eof_char: Option<u8>,
    pub(super) output: Output,
    pub(super) ever_attached: bool,
    pub(super) stdin_open: bool,
    pub(super) writers: Writers,
    pub(super) reservation: crate::manager::Reservation,
}

pub(super) struct StdinParts {
    pub(super) pipe: Option<StdinPipe>,
    pub(super) later: Option<oneshot::Receiver<StdinPipe>>,
    pub(super) initial: Bytes,
    pub(super) close: bool,
}

/// Everything a command's shared state and actor are made of.
pub(super) struct Parts {
    pub(super) shared: SharedParts,
    pub(super) stdin: StdinParts,
    pub(super) sources: [Option<Source>; 2],
    pub(super) pty: Option<Pty>,
    /// The screen model's terminal, already fed with what the ring holds.
    pub(super) term: Option<Term>,
    pub(super) life: Lifetimes,
    pub(super) job: Option<Job>,
    pub(super) resume: Option<Resume>,
    /// A thawed running command's state and its shell's final cwd.
    pub(super) state: Option<(LiveState, Option<String>)>,
    /// The daemon's containment, and the command's cgroup.
    pub(super) contain: (Arc<Containment>, Option<Leaf>),
}

pub(super) fn assemble(p: Parts) -> (CommandHandle, Actor) {
    let (ctl, ctl_rx) = mpsc::channel(32);
    let (changed, _) = watch::channel(0);
    let sp = p.shared;
    let pid = sp.ident.pid;
    let shared = Arc::new(Shared {
        ident: sp.ident,
        eof_char: sp.eof_char,
        output: Mutex::new(sp.output),
        changed,
        attached: AtomicUsize::new(0),
        ever_attached: AtomicBool::new(sp.ever_attached),
        attach_changed: Notify::new(),
        stdin_open: AtomicBool::new(sp.stdin_open),
        writers: Mutex::new(sp.writers),
        pacer_moved: Notify::new(),
        model_lag: AtomicUsize::new(0),
        next_subscription: std::sync::atomic::AtomicU64::new(0),
        ctl,
        stdin_tx: std::sync::OnceLock::new(),
        reservation: sp.reservation,
    });
    let stdin_stop = CancellationToken::new();
    let stdin_writer = StdinWriter {
        pipe: p.stdin.pipe,
        later: p.stdin.later,
        rx: None,
        initial: p.stdin.initial,
        close_after_initial: p.stdin.close,
        shared: Arc::downgrade(&shared),
        stop: stdin_stop.clone(),
    };
    let (state, resumed_cwd) = match p.state {
        Some((state, cwd)) => (state, cwd),
        None => (LiveState::new(&p.life, p.job.is_some()), None),
    };
    // Not for a process already reaped (or a finished command): its pid
    // may belong to another by now.
    let running = !state.is_reaped() && !matches!(p.resume, Some(Resume::Held { .. }));
    let leader = (p.job.is_none() && running).then(|| Process::open(pid));
    let actor = Actor {
        shared: shared.clone(),
        pid,
        leader,
        pipes: p.sources,
        model: p.term.map(|t| Model::spawn(t, shared.clone())),
        pty: p.pty,
        ctl_rx,
        stdin_writer: Some(stdin_writer),
        stdin_task: None,
        stdin_stop,
        life: p.life,
        resume: p.resume,
        state,
        resumed_cwd,
        job: p.job,
        containment: p.contain.0,
        leaf: p.contain.1,
        removed: None,
    };
    (CommandHandle { shared }, actor)
}

/// Rebuilds a command handed over by a previous daemon (or by this one,
/// when its exec failed). Its fds come out of `h`; one that is missing
/// counts as a stream that ended.
pub(crate) fn thaw(
    f: Frozen,
    h: &mut Handover,
    reservation: crate::manager::Reservation,
    containment: Arc<Containment>,
) -> (CommandHandle, Actor) {
    let contain = {
        let leaf = containment.leaf_of(&f.ident.id);
        (containment, leaf)
    };
    let rings = f.rings.map(Ring::thaw);
    let term = f.size.map(|(size, _)| {
        // The screen is rebuilt from what the ring still holds.
        let mut t = Term::new(size);
        let mut at = rings[0].first_held();
        while let Read::Data { data, .. } = rings[0].read(at, usize::MAX) {
            t.feed(&data);
            at += data.len() as u64;
        }
        t
    });
    let life = f.life;
    let id = f.ident.id.clone();
    let mut pacing = Pacing::default();
    let mut writers = Writers::default();
    let mut state = None;
    let (exit, stdin_open, resume, stdin, sources, pty) = match f.phase {
        Phase::Held { exit, ttl_left } => {
            let stdin = StdinParts { pipe: None, later: None, initial: Bytes::new(), close: true };
            (Some(exit), false, Resume::Held { ttl_left }, stdin, [None, None], None)
        }
        Phase::Live(l) => {
            let mut l = *l;
            let pty = h.fd(l.master).and_then(|fd| {
                Pty::from_master(fd)
                    .map_err(|e| tracing::warn!(command = %id, "terminal not taken over: {e}"))
                    .ok()
            });
            let sources = [0, 1].map(|i| match (&pty, l.outputs[i]) {
                (Some(p), Some(raw)) if Some(raw) == l.master => Some(Source::Pty(p.io.clone())),
                (_, raw) => h.fd(raw).and_then(|fd| {
                    pipe::Receiver::from_owned_fd(fd)
                        .map_err(|e| tracing::warn!(command = %id, "output pipe not taken over: {e}"))
                        .ok()
                        .map(Source::Pipe)
                }),
            });
            let pipe = match &pty {
                Some(p) => Some(StdinPipe::Pty(PtyWriter(p.io.clone()))),
                None => {
                    h.fd(l.stdin.fd).and_then(|fd| pipe::Sender::from_owned_fd(fd).ok().map(StdinPipe::Pipe))
                }
            };
            let stdin = StdinParts {
                close: l.stdin.close || pipe.is_none(),
                pipe,
                later: None,
                initial: Bytes::from(std::mem::take(&mut l.stdin.pending).into_vec()),
            };
            let open = l.stdin.open && stdin.pipe.is_some();
            writers = Writers::thaw(std::mem::take(&mut l.stdin.writers));
            pacing = Pacing::thaw(std::mem::take(&mut l.lingering), Instant::now());
            // Frozen after it saw the old daemon's stop: this actor has seen
            // none (a daemon whose exec failed takes its commands back in the
            // same process, and hands them over again at its next restart).
            let mut live = l.state;
            live.stop_seen = false;
            state = Some((live, l.cwd));
            (None, open, Resume::Live, stdin, sources, pty)
        }
    };
    let eof_char = f.size.map(|_| pty.as_ref().map_or(4, Pty::eof_char));
    assemble(Parts {
        shared: SharedParts {
            ident: f.ident,
            eof_char,
            output: Output { rings, seq: f.seq, exit, pacing, size: f.size, queued: false },
            // Every client was disconnected by the restart, not by leaving:
            // kill-on-disconnect applies again once one has re-attached
            // (until then the idle timeout does).
            ever_attached: f.ever_attached && matches!(resume, Resume::Held { .. }),
            stdin_open,
            writers,
            reservation,
        },
        stdin,
        sources,
        pty,
        term,
        life,
        job: None,
        resume: Some(resume),
        state,
        contain,
    })
}

/// Where a thawed actor picks up.
pub(super) enum Resume {
    /// Running, or ended with output still draining: the actor's state is
    /// the handed-over one.
    Live,
    /// Finished: held for what is left of its TTL (`None`: forever).
    Held { ttl_left: Option<Duration> },
}
