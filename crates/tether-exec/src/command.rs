//! One command: its shared output state, the actor task that owns its
//! process, and the subscriptions through which clients read its output.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use std::fs::File;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::ExecError;
use crate::contain::{self, Containment, Leaf, Leftovers};
use crate::handover::{Frozen, FrozenStdin, Handover, Live, Phase};
use crate::process::{self, ExitWatch, Reaped};
use crate::pty::{self, Pty, PtyWriter, Term};
use crate::ring::{Read, Ring};
use crate::shell::{JobEvent, JobLink, ShellCtl};
use crate::spec::{OutputLimit, TermSize};
use crate::stdin::{Admit, StdinSeq, Writers};

/// An output stream of a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stream {
    /// File descriptor 1.
    Stdout,
    /// File descriptor 2.
    Stderr,
}

impl Stream {
    fn from_index(i: usize) -> Stream {
        if i == 0 { Stream::Stdout } else { Stream::Stderr }
    }
}

/// Why a command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ExitReason {
    /// It ended on its own (or by a signal from outside tether).
    Exited,
    /// Its wall-clock timeout fired.
    TimedOut,
    /// Nobody was attached for its idle timeout.
    IdleTimeout,
    /// Killed on request or at daemon shutdown.
    Killed,
    /// Its last client went away and it had kill-on-disconnect.
    Disconnected,
    /// Its output passed the limit.
    OutputLimit,
    /// A shell command whose shell closed before or while it ran.
    ShellClosed,
    /// A shell command that could not be handed to its shell.
    SpawnFailed,
}

/// How a command ended.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExitInfo {
    /// Exit code, if it exited normally.
    pub code: Option<i32>,
    /// Terminating signal, if a signal ended it.
    pub signal: Option<i32>,
    /// Whether it dumped core.
    pub core_dumped: bool,
    /// Why it ended.
    pub reason: ExitReason,
    /// Spawn to exit.
    pub wall: Duration,
    /// User CPU time in microseconds.
    pub user_us: u64,
    /// System CPU time in microseconds.
    pub sys_us: u64,
    /// Peak RSS in KiB.
    pub max_rss_kb: u64,
    /// Final end offsets, stdout then stderr.
    pub ends: [u64; 2],
    /// Whether output past the limit was dropped.
    pub truncated: bool,
    /// A shell command: the shell's working directory when it ended.
    pub cwd: Option<String>,
}

/// A snapshot of a command for listings.
#[derive(Clone, Debug)]
pub struct CommandInfo {
    /// Its id.
    pub id: String,
    /// Client-chosen name.
    pub name: Option<String>,
    /// Client-chosen labels.
    pub labels: BTreeMap<String, String>,
    /// The argv executed.
    pub argv: Vec<String>,
    /// Process id (= process group id).
    pub pid: u32,
    /// Start time.
    pub started_at: SystemTime,
    /// Exit status once finished.
    pub exit: Option<ExitInfo>,
    /// `(first_held, end)` per stream, stdout then stderr.
    pub offsets: [(u64, u64); 2],
    /// Attached clients.
    pub attached: usize,
    /// For a PTY command, its current terminal size.
    pub pty: Option<TermSize>,
    /// A shell command: the shell it was submitted to.
    pub shell: Option<String>,
    /// A shell command still waiting for the commands before it.
    pub queued: bool,
}

/// A PTY command's screen at a stdout offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Screen {
    /// The stdout offset the screen reflects; output continues there.
    pub offset: u64,
    /// The size it is rendered for.
    pub size: TermSize,
    /// Bytes that reproduce the screen on a reset terminal of that size.
    pub data: Bytes,
}

/// What a subscription yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Bytes of a stream starting at an absolute offset.
    Output {
        /// The stream.
        stream: Stream,
        /// Offset of `data[0]`.
        offset: u64,
        /// The bytes.
        data: Bytes,
    },
    /// `[requested, first_held)` of a stream is no longer held.
    Gap {
        /// The stream.
        stream: Stream,
        /// Where the subscriber was.
        requested: u64,
        /// Where it continues.
        first_held: u64,
    },
    /// A PTY command's terminal size is now this. The first event of every
    /// subscription to a PTY command, then one after each change.
    Resized(TermSize),
    /// The command ended; always the last event, after all output.
    Exit(ExitInfo),
}

/// What [`CommandHandle::attach_screen`] gives: the screen (unless the
/// subscription resumes from a held offset) and the subscription.
pub type ScreenAttach = (Option<Screen>, Subscription);

/// Messages to a command's actor.
pub(crate) enum Control {
    Signal {
        sig: i32,
        reply: oneshot::Sender<Result<(), ExecError>>,
    },
    Kill {
        reason: ExitReason,
        reply: Option<oneshot::Sender<Result<(), ExecError>>>,
    },
    Remove,
    Resize {
        size: TermSize,
        reply: oneshot::Sender<Result<(), ExecError>>,
    },
    AttachScreen {
        from: u64,
        size: Option<TermSize>,
        pace: bool,
        reply: oneshot::Sender<Result<ScreenAttach, ExecError>>,
    },
}

enum StdinMsg {
    /// Bytes (from a numbered writer, or not), and where to say what
    /// became of them.
    Data(Bytes, Option<StdinSeq>, oneshot::Sender<Taken>),
    /// A terminal's end-of-file character: typed once per writer and offset.
    Eof(u8, Option<StdinSeq>, oneshot::Sender<Taken>),
    Close,
}

/// What became of stdin bytes.
#[derive(Debug)]
enum Taken {
    /// They are in the pipe (or were there already: a resend).
    Written,
    /// Stdin closed before they could be written.
    Closed,
    /// They start past what their writer has given: a client bug.
    Hole(u64),
}

/// State shared by the actor (the only writer) and subscriptions (readers).
pub(crate) struct Shared {
    pub(crate) id: String,
    pub(crate) name: Option<String>,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) argv: Vec<String>,
    pub(crate) pid: u32,
    pub(crate) started_at: SystemTime,
    /// A shell command: the shell's name.
    pub(crate) shell: Option<String>,
    /// The idempotency key it was started with.
    pub(crate) request_key: Option<String>,
    /// For a PTY command, its end-of-file character: `close_stdin` types it
    /// instead of closing anything.
    eof_char: Option<u8>,
    /// A std mutex, not an async one: it is held only to push or slice
    /// `Bytes` (no I/O, no `.await`), by one writer and a few readers.
    output: Mutex<Output>,
    /// Bumped after every change to `output`; subscribers wait on it.
    changed: watch::Sender<u64>,
    attached: AtomicUsize,
    ever_attached: AtomicBool,
    attach_changed: Notify,
    stdin_open: AtomicBool,
    /// How many bytes each numbered stdin writer has given (resumable
    /// stdin). A std mutex held only for a lookup or an update; only the
    /// stdin writer task updates it.
    writers: Mutex<Writers>,
    /// Signalled when a pacing subscription advances or goes away, and when
    /// the screen model catches up.
    pacer_moved: Notify,
    /// Bytes (plus a per-chunk charge) handed to the screen model and not
    /// yet parsed by it.
    model_lag: AtomicUsize,
    next_subscription: std::sync::atomic::AtomicU64,
    pub(crate) ctl: mpsc::Sender<Control>,
    stdin_tx: mpsc::Sender<StdinMsg>,
    /// Returns this command's committed memory to the manager on drop; a
    /// resize charges the new screen size to it first.
    reservation: crate::manager::Reservation,
}

struct Output {
    rings: [Ring; 2],
    seq: u64,
    exit: Option<ExitInfo>,
    /// The pacing subscriptions, and lingering ones that have gone.
    pacers: Vec<Pacer>,
    /// A PTY command's terminal size, and how many times it was set.
    size: Option<(TermSize, u64)>,
    /// A shell command that its shell has not started yet.
    queued: bool,
}

/// A reader the command waits for.
struct Pacer {
    /// Its subscription's number.
    number: u64,
    /// The next offsets it will read (or, paced by acknowledgements, the
    /// offsets its client has taken).
    next: [u64; 2],
    /// A lingering pacer's subscription has gone: it holds the command back
    /// until then, for its client to come back (see
    /// [`CommandHandle::attach_lingering`]).
    until: Option<Instant>,
    /// The client's name: a newer pacer of the same name replaces it.
    name: Option<String>,
}

impl Output {
    /// Bytes stream `i` may still take before a pacing subscriber's unread
    /// data would be evicted (`None`: no pacer, no limit). Half the ring is
    /// kept as headroom for the per-chunk accounting.
    fn pace_room(&self, i: usize) -> Option<u64> {
        let now = Instant::now();
        let live = self.pacers.iter().filter(|p| p.until.is_none_or(|u| u > now));
        let slowest = live.map(|p| p.next[i]).min()?;
        // Counted as the ring charges it (bytes plus per-chunk overhead),
        // so many tiny chunks cannot evict unread data either.
        let unread = self.rings[i].charged_from(slowest) as u64;
        Some((self.rings[i].cap() as u64 / 2).saturating_sub(unread))
    }
}

impl Shared {
    fn output(&self) -> MutexGuard<'_, Output> {
        // A poisoned lock means a panic while pushing bytes; the data is
        // still consistent enough to read, so keep serving it.
        self.output.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn writers(&self) -> MutexGuard<'_, Writers> {
        self.writers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A cheap, cloneable handle to one command.
#[derive(Clone)]
pub struct CommandHandle {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for CommandHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandHandle").field("id", &self.shared.id).finish()
    }
}

impl CommandHandle {
    /// The command id.
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// The process id (also the process group id).
    pub fn pid(&self) -> u32 {
        self.shared.pid
    }

    /// A snapshot for listings.
    pub fn info(&self) -> CommandInfo {
        let out = self.shared.output();
        CommandInfo {
            id: self.shared.id.clone(),
            name: self.shared.name.clone(),
            labels: self.shared.labels.clone(),
            argv: self.shared.argv.clone(),
            pid: self.shared.pid,
            started_at: self.shared.started_at,
            exit: out.exit.clone(),
            offsets: [0, 1].map(|i| (out.rings[i].first_held(), out.rings[i].end())),
            attached: self.shared.attached.load(Ordering::Relaxed),
            pty: out.size.map(|(s, _)| s),
            shell: self.shared.shell.clone(),
            queued: out.queued,
        }
    }

    /// Whether the command runs on a pseudo-terminal.
    pub fn is_pty(&self) -> bool {
        self.shared.eof_char.is_some()
    }

    /// Sets a PTY command's terminal size; every subscription gets
    /// [`Event::Resized`].
    pub async fn resize(&self, size: TermSize) -> Result<(), ExecError> {
        if !size.is_valid() {
            return Err(ExecError::BadSize { rows: size.rows, cols: size.cols });
        }
        if !self.is_pty() {
            return Err(ExecError::NotAPty(self.shared.id.clone()));
        }
        let (reply, rx) = oneshot::channel();
        self.control(Control::Resize { size, reply }).await?;
        rx.await.unwrap_or_else(|_| Err(self.not_running()))
    }

    /// Attaches to a PTY command to show it on a terminal: after applying
    /// `size` (if given; the newest viewer's size wins), returns the current
    /// screen and a subscription from the offset it reflects. A non-zero
    /// stdout offset `from` that the ring still holds is a reconnect of a
    /// viewer whose terminal is intact: no screen, output from `from`.
    pub async fn attach_screen(
        &self,
        from: u64,
        size: Option<TermSize>,
        pace: bool,
    ) -> Result<ScreenAttach, ExecError> {
        if let Some(s) = size.filter(|s| !s.is_valid()) {
            return Err(ExecError::BadSize { rows: s.rows, cols: s.cols });
        }
        if !self.is_pty() {
            return Err(ExecError::NotAPty(self.shared.id.clone()));
        }
        let (reply, rx) = oneshot::channel();
        self.control(Control::AttachScreen { from, size, pace, reply }).await?;
        rx.await.unwrap_or_else(|_| Err(self.not_running()))
    }

    /// The exit status, if the command has finished.
    pub fn exit(&self) -> Option<ExitInfo> {
        self.shared.output().exit.clone()
    }

    /// Attaches from per-stream offsets (stdout, stderr). An offset older
    /// than the ring yields a [`Event::Gap`] first; one beyond the end is an
    /// error.
    pub fn attach(&self, from: [u64; 2]) -> Result<Subscription, ExecError> {
        self.attach_paced(from, false)
    }

    /// Like [`CommandHandle::attach`]; with `pace`, this subscription paces
    /// the command: when it falls half a ring behind, the actor stops
    /// reading the command's pipes (the command blocks on write) until it
    /// catches up, so it never misses a byte. Other subscriptions never
    /// slow the command; a pacing one stops pacing when dropped.
    pub fn attach_paced(&self, from: [u64; 2], pace: bool) -> Result<Subscription, ExecError> {
        {
            let out = self.shared.output();
            for (ring, &asked) in out.rings.iter().zip(&from) {
                let end = ring.end();
                if asked > end {
                    return Err(ExecError::OffsetBeyondEnd { asked, end });
                }
            }
        }
        Ok(self.subscribe(from, pace, None))
    }

    /// A pacing attachment ([`CommandHandle::attach_paced`]) that goes on
    /// pacing for `linger` after it is dropped, from the oldest byte the
    /// rings still hold (what it read may not have reached its client): the
    /// command is held back while its client is away, so that a client that
    /// reconnects within `linger` (and attaches again, which ends the
    /// lingering) misses nothing even of a fast writer, as long as what was
    /// in flight when it went is still in the ring. For clients that cannot
    /// notice a gap (the LangSmith dialect).
    pub fn attach_lingering(&self, from: [u64; 2], linger: Duration) -> Result<Subscription, ExecError> {
        let mut sub = self.attach_paced(from, true)?;
        sub.linger = Some(linger);
        Ok(sub)
    }

    /// Attaches starting at most `tail` bytes before each stream's end (and
    /// never before the first held byte), pacing or not.
    pub fn attach_tail(&self, tail: u64, pace: bool) -> Subscription {
        let from = {
            let out = self.shared.output();
            [0, 1].map(|i| {
                let r = &out.rings[i];
                r.end().saturating_sub(tail).max(r.first_held())
            })
        };
        self.subscribe(from, pace, None)
    }

    fn subscribe(&self, from: [u64; 2], pace: bool, linger: Option<Duration>) -> Subscription {
        let mut sub = subscribe(&self.shared, from, pace);
        sub.linger = linger;
        sub
    }

    /// Writes bytes to the command's stdin; returns once they are in the
    /// pipe, so a command that does not read makes its writers wait rather
    /// than the manager buffer.
    pub async fn write_stdin(&self, data: Bytes) -> Result<(), ExecError> {
        self.write_stdin_at(data, None).await
    }

    /// [`CommandHandle::write_stdin`] for a numbered writer (resumable
    /// stdin): bytes this writer has given before are dropped, so a resend
    /// after a reconnect neither loses nor doubles any; bytes that start
    /// past what it has given are refused ([`ExecError::StdinHole`]).
    pub async fn write_stdin_at(&self, data: Bytes, seq: Option<StdinSeq>) -> Result<(), ExecError> {
        if let Some(seq) = seq.as_ref().filter(|s| !s.is_valid()) {
            return Err(ExecError::BadWriter(seq.writer.clone()));
        }
        let closed = || ExecError::StdinClosed(self.shared.id.clone());
        // A resend of bytes the command has taken is answered as the first
        // send was, even once stdin has closed or the command has ended.
        if seq.as_ref().is_some_and(|seq| self.shared.writers().has(seq, data.len())) {
            return Ok(());
        }
        if self.exit().is_some() {
            return Err(self.not_running());
        }
        if !self.shared.stdin_open.load(Ordering::SeqCst) {
            return Err(closed());
        }
        let (done, taken) = oneshot::channel();
        let msg = StdinMsg::Data(data, seq.clone(), done);
        self.shared.stdin_tx.send(msg).await.map_err(|_| closed())?;
        self.taken(taken.await, seq)
    }

    fn taken(
        &self,
        t: Result<Taken, oneshot::error::RecvError>,
        seq: Option<StdinSeq>,
    ) -> Result<(), ExecError> {
        match t {
            Ok(Taken::Written) => Ok(()),
            Ok(Taken::Hole(have)) => {
                let seq = seq.unwrap_or(StdinSeq { writer: String::new(), offset: 0 });
                Err(ExecError::StdinHole { writer: seq.writer, offset: seq.offset, have })
            }
            Ok(Taken::Closed) | Err(_) => Err(ExecError::StdinClosed(self.shared.id.clone())),
        }
    }

    /// Closes stdin after everything queued before (the command reads EOF).
    /// On a terminal this types the end-of-file character (VEOF) instead,
    /// and the terminal stays open for more input.
    pub async fn close_stdin(&self) -> Result<(), ExecError> {
        self.close_stdin_at(None).await
    }

    /// [`CommandHandle::close_stdin`] for a numbered writer: a repeated
    /// close is answered `Ok` and does nothing more (on a terminal, the
    /// end-of-file character is typed once per writer and offset).
    pub async fn close_stdin_at(&self, seq: Option<StdinSeq>) -> Result<(), ExecError> {
        if let Some(seq) = seq.as_ref().filter(|s| !s.is_valid()) {
            return Err(ExecError::BadWriter(seq.writer.clone()));
        }
        // A repeated close is answered as the first was.
        let repeat = match (&seq, self.shared.eof_char) {
            (Some(seq), Some(_)) => self.shared.writers().has_eof(seq),
            (Some(_), None) => !self.shared.stdin_open.load(Ordering::SeqCst),
            (None, _) => false,
        };
        if repeat {
            return Ok(());
        }
        if self.exit().is_some() {
            return Err(self.not_running());
        }
        if let Some(c) = self.shared.eof_char {
            let (done, taken) = oneshot::channel();
            let msg = StdinMsg::Eof(c, seq.clone(), done);
            self.shared
                .stdin_tx
                .send(msg)
                .await
                .map_err(|_| ExecError::StdinClosed(self.shared.id.clone()))?;
            return self.taken(taken.await, seq);
        }
        if !self.shared.stdin_open.swap(false, Ordering::SeqCst) {
            if seq.is_some() {
                return Ok(());
            }
            return Err(ExecError::StdinClosed(self.shared.id.clone()));
        }
        // If the writer is gone, stdin is closed already: that is success.
        let _ = self.shared.stdin_tx.send(StdinMsg::Close).await;
        Ok(())
    }

    /// Sends a signal (name or number) to the command's process group.
    pub async fn signal(&self, sig: &str) -> Result<(), ExecError> {
        let n = process::parse_signal(sig).ok_or_else(|| ExecError::BadSignal(sig.to_owned()))?;
        let (reply, rx) = oneshot::channel();
        self.control(Control::Signal { sig: n, reply }).await?;
        rx.await.unwrap_or_else(|_| Err(self.not_running()))
    }

    /// Kills the command and every descendant (SIGKILL). Returns once the
    /// signal is sent; the exit follows on subscriptions.
    pub async fn kill(&self) -> Result<(), ExecError> {
        self.kill_for(ExitReason::Killed).await
    }

    pub(crate) async fn kill_for(&self, reason: ExitReason) -> Result<(), ExecError> {
        let (reply, rx) = oneshot::channel();
        self.control(Control::Kill { reason, reply: Some(reply) }).await?;
        rx.await.unwrap_or_else(|_| Err(self.not_running()))
    }

    /// Waits until the command has finished and all its output is drained.
    pub async fn wait(&self) -> ExitInfo {
        let mut rx = self.shared.changed.subscribe();
        loop {
            rx.borrow_and_update();
            if let Some(e) = self.exit() {
                return e;
            }
            if rx.changed().await.is_err() {
                // Unreachable while we hold `shared`, which owns the sender.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Gives both rings buffers of their own (after a handover).
    pub(crate) fn reown_rings(&self) {
        let mut out = self.shared.output();
        out.rings.iter_mut().for_each(Ring::reown);
    }

    async fn control(&self, msg: Control) -> Result<(), ExecError> {
        self.shared.ctl.send(msg).await.map_err(|_| self.not_running())
    }

    fn not_running(&self) -> ExecError {
        ExecError::NotRunning(self.shared.id.clone())
    }
}

/// One client's view of a command's output: its own offsets into the
/// command's rings. Holding one counts as "attached"; dropping it detaches.
/// It holds no buffered data of its own: a reader that falls behind the ring
/// gets a [`Event::Gap`], so its memory is bounded by nothing but offsets.
pub struct Subscription {
    shared: Arc<Shared>,
    next: [u64; 2],
    rx: watch::Receiver<u64>,
    done: bool,
    /// Whether this subscription paces the command.
    pace: bool,
    /// Its number among the command's subscriptions (pacer bookkeeping).
    number: u64,
    /// How many terminal size changes it has reported.
    sizes_seen: u64,
    /// Pacing goes on this long after it is dropped.
    linger: Option<Duration>,
    /// Pacing follows [`PaceRef::ack`] (what the client has taken), not
    /// what this subscription reads.
    acked: bool,
}

/// A pacing subscription's pacer, advanced by its client's
/// acknowledgements (see [`Subscription::pace_by_acks`]).
#[derive(Clone, Debug)]
pub struct PaceRef {
    shared: std::sync::Weak<Shared>,
    number: u64,
}

impl PaceRef {
    /// The client has taken the output up to these offsets: the command may
    /// run half a ring past them.
    pub fn ack(&self, offsets: [u64; 2]) {
        let Some(shared) = self.shared.upgrade() else { return };
        let mut out = shared.output();
        let ends = [out.rings[0].end(), out.rings[1].end()];
        if let Some(p) = out.pacers.iter_mut().find(|p| p.number == self.number) {
            p.next = [0, 1].map(|i| p.next[i].max(offsets[i].min(ends[i])));
        }
        drop(out);
        shared.pacer_moved.notify_one();
    }

    /// Stops pacing at once (the client detached: it will not come back
    /// for these bytes).
    pub fn release(&self) {
        let Some(shared) = self.shared.upgrade() else { return };
        shared.output().pacers.retain(|p| p.number != self.number);
        shared.pacer_moved.notify_one();
    }
}

fn subscribe(shared: &Arc<Shared>, from: [u64; 2], pace: bool) -> Subscription {
    let shared = shared.clone();
    let number = shared.next_subscription.fetch_add(1, Ordering::Relaxed);
    if pace {
        let mut out = shared.output();
        // A new pacing reader is the lingering ones' client back (or one
        // that replaces them): they stop holding the command.
        out.pacers.retain(|p| p.until.is_none());
        out.pacers.push(Pacer { number, next: from, until: None, name: None });
        drop(out);
        shared.pacer_moved.notify_one();
    }
    shared.attached.fetch_add(1, Ordering::SeqCst);
    shared.ever_attached.store(true, Ordering::SeqCst);
    shared.attach_changed.notify_one();
    let rx = shared.changed.subscribe();
    Subscription {
        rx,
        shared,
        next: from,
        done: false,
        pace,
        number,
        sizes_seen: 0,
        linger: None,
        acked: false,
    }
}

impl Subscription {
    /// The command id.
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// The next offset this subscription will deliver, per stream.
    pub fn offsets(&self) -> [u64; 2] {
        self.next
    }

    /// For a client that acknowledges what it takes (flow control): from
    /// now on this pacing subscription holds the command back to the
    /// offsets the returned [`PaceRef`] is told, not to what it reads, so
    /// the bytes in flight to the client stay in the ring; when dropped it
    /// goes on pacing from there for `linger` (its client reconnects and
    /// attaches again), unless [`PaceRef::release`]d first. A `name` (the
    /// client's) replaces the pacers of older attachments of that name, on
    /// any connection (one that died without the daemon knowing yet).
    /// `None` for a subscription that does not pace.
    pub fn pace_by_acks(&mut self, name: Option<String>, linger: Duration) -> Option<PaceRef> {
        if !self.pace {
            return None;
        }
        let mut out = self.shared.output();
        let number = self.number;
        if let Some(name) = &name {
            out.pacers.retain(|p| p.number == number || p.name.as_ref() != Some(name));
        }
        if let Some(p) = out.pacers.iter_mut().find(|p| p.number == number) {
            p.name = name;
        }
        drop(out);
        self.shared.pacer_moved.notify_one();
        self.acked = true;
        self.linger = Some(linger);
        Some(PaceRef { shared: Arc::downgrade(&self.shared), number })
    }

    /// The next event: output (at most `max` bytes), a gap, or the exit;
    /// `None` after the exit. Cancel-safe.
    pub async fn next(&mut self, max: usize) -> Option<Event> {
        loop {
            if self.done {
                return None;
            }
            self.rx.borrow_and_update();
            if let Some(ev) = self.poll_once(max.max(1)) {
                return Some(ev);
            }
            if self.rx.changed().await.is_err() {
                return None;
            }
        }
    }

    fn poll_once(&mut self, max: usize) -> Option<Event> {
        let mut out = self.shared.output();
        if let Some((size, n)) = out.size.filter(|&(_, n)| n != self.sizes_seen && !self.done) {
            self.sizes_seen = n;
            return Some(Event::Resized(size));
        }
        let ev = read_locked(&mut self.next, &mut self.done, &out, max);
        if self.pace && !self.acked && matches!(ev, Some(Event::Output { .. } | Event::Gap { .. })) {
            let (number, next) = (self.number, self.next);
            if let Some(p) = out.pacers.iter_mut().find(|p| p.number == number) {
                p.next = next;
            }
            drop(out);
            self.shared.pacer_moved.notify_one();
        }
        ev
    }
}

/// One event for a reader at `next` (advanced past it), under the lock.
fn read_locked(next: &mut [u64; 2], done: &mut bool, out: &Output, max: usize) -> Option<Event> {
    let mut best: Option<(u64, usize, Bytes)> = None;
    let mut seqs = [u64::MAX; 2];
    #[allow(clippy::needless_range_loop)] // `i` names the stream too
    for i in 0..2 {
        match out.rings[i].read(next[i], max) {
            Read::Gap { first_held } => {
                let requested = next[i];
                next[i] = first_held;
                return Some(Event::Gap { stream: Stream::from_index(i), requested, first_held });
            }
            Read::Data { seq, data } => {
                seqs[i] = seq;
                if best.as_ref().is_none_or(|b| seq < b.0) {
                    best = Some((seq, i, data));
                }
            }
            Read::Pending => {}
        }
    }
    if let Some((_, i, mut data)) = best {
        // Join what follows in the same stream, up to the other stream's
        // next chunk: fewer, larger frames, same order.
        if data.len() < max {
            data = out.rings[i].extend_read(next[i], data, max, seqs[1 - i]);
        }
        let offset = next[i];
        next[i] += data.len() as u64;
        return Some(Event::Output { stream: Stream::from_index(i), offset, data });
    }
    if let Some(exit) = &out.exit {
        *done = true;
        return Some(Event::Exit(exit.clone()));
    }
    None
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if self.pace {
            let mut out = self.shared.output();
            match self.linger {
                Some(d) => {
                    // What this subscription read may not have reached its
                    // client (socket buffers, a proxy): hold everything the
                    // rings still have, not just what follows; or, paced by
                    // acknowledgements, hold from what the client took.
                    let held = [out.rings[0].first_held(), out.rings[1].first_held()];
                    let until = Instant::now() + d;
                    let acked = self.acked;
                    if let Some(p) = out.pacers.iter_mut().find(|p| p.number == self.number) {
                        p.until = Some(until);
                        if !acked {
                            p.next = held;
                        }
                    }
                }
                None => out.pacers.retain(|p| p.number != self.number),
            }
            drop(out);
            self.shared.pacer_moved.notify_one();
        }
        self.shared.attached.fetch_sub(1, Ordering::SeqCst);
        self.shared.attach_changed.notify_one();
    }
}

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
            id: meta.id,
            name: meta.name,
            labels: meta.labels,
            argv: meta.argv,
            pid: proc_.pid,
            started_at: SystemTime::now(),
            shell: meta.shell,
            request_key: meta.request_key,
            eof_char,
            output: Output {
                rings: [Ring::new(meta.ring_bytes), Ring::new(meta.ring_bytes)],
                seq: 0,
                exit: None,
                pacers: Vec::new(),
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
        contain: (containment, proc_.leaf),
    })
}

/// The fields of [`Shared`] that differ between commands.
struct SharedParts {
    id: String,
    name: Option<String>,
    labels: BTreeMap<String, String>,
    argv: Vec<String>,
    pid: u32,
    started_at: SystemTime,
    shell: Option<String>,
    request_key: Option<String>,
    eof_char: Option<u8>,
    output: Output,
    ever_attached: bool,
    stdin_open: bool,
    writers: Writers,
    reservation: crate::manager::Reservation,
}

struct StdinParts {
    pipe: Option<StdinPipe>,
    later: Option<oneshot::Receiver<StdinPipe>>,
    initial: Bytes,
    close: bool,
}

/// Everything a command's shared state and actor are made of.
struct Parts {
    shared: SharedParts,
    stdin: StdinParts,
    sources: [Option<Source>; 2],
    pty: Option<Pty>,
    /// The screen model's terminal, already fed with what the ring holds.
    term: Option<Term>,
    life: Lifetimes,
    job: Option<Job>,
    resume: Option<Resume>,
    /// The daemon's containment, and the command's cgroup.
    contain: (Arc<Containment>, Option<Leaf>),
}

fn assemble(p: Parts) -> (CommandHandle, Actor) {
    let (ctl, ctl_rx) = mpsc::channel(32);
    let (stdin_tx, stdin_rx) = mpsc::channel(16);
    let (changed, _) = watch::channel(0);
    let sp = p.shared;
    let pid = sp.pid;
    let shared = Arc::new(Shared {
        id: sp.id,
        name: sp.name,
        labels: sp.labels,
        argv: sp.argv,
        pid,
        started_at: sp.started_at,
        shell: sp.shell,
        request_key: sp.request_key,
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
        stdin_tx,
        reservation: sp.reservation,
    });
    let stdin_stop = CancellationToken::new();
    let stdin_writer = StdinWriter {
        pipe: p.stdin.pipe,
        later: p.stdin.later,
        rx: stdin_rx,
        initial: p.stdin.initial,
        close_after_initial: p.stdin.close,
        shared: Arc::downgrade(&shared),
        stop: stdin_stop.clone(),
    };
    let actor = Actor {
        shared: shared.clone(),
        pid,
        pipes: p.sources,
        model: p.term.map(|t| Model::spawn(t, shared.clone())),
        pty: p.pty,
        ctl_rx,
        stdin_writer: Some(stdin_writer),
        stdin_stop,
        life: p.life,
        reaped: false,
        terminated: Vec::new(),
        job: p.job,
        resume: p.resume,
        resumed_cwd: None,
        containment: p.contain.0,
        leaf: p.contain.1,
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
        let leaf = containment.leaf_of(&f.id);
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
    let id = f.id.clone();
    let mut pacers = Vec::new();
    let mut writers = Writers::default();
    let (exit, stdin_open, resume, stdin, sources, pty) = match f.phase {
        Phase::Held { exit, ttl_left } => {
            let stdin = StdinParts { pipe: None, later: None, initial: Bytes::new(), close: true };
            (Some(exit), false, Resume::Held { ttl_left }, stdin, [None, None], None)
        }
        Phase::Live(l) => {
            let mut l = *l;
            let pty = h.fd(l.master).and_then(|fd| {
                Pty::from_master(fd).map_err(|e| tracing::warn!(%id, "terminal not taken over: {e}")).ok()
            });
            let sources = [0, 1].map(|i| match (&pty, l.outputs[i]) {
                (Some(p), Some(raw)) if Some(raw) == l.master => Some(Source::Pty(p.io.clone())),
                (_, raw) => h.fd(raw).and_then(|fd| {
                    pipe::Receiver::from_owned_fd(fd)
                        .map_err(|e| tracing::warn!(%id, "output pipe not taken over: {e}"))
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
            let now = Instant::now();
            // Numbered from the top, clear of the new subscriptions'.
            pacers = std::mem::take(&mut l.lingering)
                .into_iter()
                .zip((0..u64::MAX).rev())
                .map(|((next, left), number)| Pacer { number, next, until: Some(now + left), name: None })
                .collect();
            (None, open, Resume::Live(Box::new(l)), stdin, sources, pty)
        }
    };
    let eof_char = f.size.map(|_| pty.as_ref().map_or(4, Pty::eof_char));
    assemble(Parts {
        shared: SharedParts {
            id: f.id,
            name: f.name,
            labels: f.labels,
            argv: f.argv,
            pid: f.pid,
            started_at: f.started_at,
            shell: f.shell,
            request_key: f.request_key,
            eof_char,
            output: Output { rings, seq: f.seq, exit, pacers, size: f.size, queued: false },
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
        contain,
    })
}

/// Where a thawed actor picks up.
enum Resume {
    Live(Box<Live>),
    Held { ttl_left: Option<Duration> },
}

/// Where actors send their frozen state and fds, once a handover begins.
pub(crate) type HandoverSlot = Arc<std::sync::OnceLock<mpsc::UnboundedSender<(Frozen, Vec<OwnedFd>)>>>;

/// How the actors learn that the daemon stops, and what to do then.
#[derive(Clone)]
pub(crate) struct Stop {
    pub(crate) token: CancellationToken,
    /// Kill running commands (else leave them running, unread).
    pub(crate) kill: bool,
    /// Set when a restart begins, before the connections are closed:
    /// their going is not a disconnect that `kill_on_disconnect` acts on.
    pub(crate) restarting: Arc<AtomicBool>,
    /// Set before `token` is cancelled for a handover: each actor sends
    /// its frozen state and fds here instead.
    pub(crate) handover: HandoverSlot,
}

/// Writes stdin in its own task so a command that does not read its stdin
/// never stalls the actor draining its output.
struct StdinWriter {
    pipe: Option<StdinPipe>,
    /// A shell command's stdin, handed over when the shell starts it.
    /// Nothing is written (or closed) before: closing the FIFO before the
    /// shell has opened it would leave the shell blocked in `open`.
    later: Option<oneshot::Receiver<StdinPipe>>,
    rx: mpsc::Receiver<StdinMsg>,
    initial: Bytes,
    close_after_initial: bool,
    shared: std::sync::Weak<Shared>,
    /// Cancelled for a handover: the writer stops between two writes and
    /// returns its pipe and whatever it has not written.
    stop: CancellationToken,
}

/// What a stopped stdin writer leaves.
struct StdinLeft {
    /// The pipe (`None`: closed).
    pipe: Option<StdinPipe>,
    /// Accepted bytes not yet written.
    pending: BytesMut,
    /// Close after them.
    close: bool,
}

impl StdinWriter {
    async fn run(mut self) -> StdinLeft {
        let pipe = match (self.pipe.take(), self.later.take()) {
            (Some(p), _) => Some(p),
            (None, Some(later)) => tokio::select! {
                p = later => p.ok(),
                _ = self.stop.cancelled() => return self.left(None, Bytes::new(), true),
            },
            (None, None) => None,
        };
        let Some(mut pipe) = pipe else {
            self.closed();
            return self.left(None, Bytes::new(), true);
        };
        // The bytes being written, where to say they are in the pipe, and
        // the numbered writer they came from.
        let mut cur = std::mem::take(&mut self.initial);
        let mut done: Option<oneshot::Sender<Taken>> = None;
        let mut from: Option<String> = None;
        let mut close_when_written = self.close_after_initial;
        loop {
            if cur.is_empty() {
                if let Some(d) = done.take() {
                    let _ = d.send(Taken::Written);
                }
                if close_when_written {
                    return self.left(None, Bytes::new(), true);
                }
                let msg = tokio::select! {
                    m = self.rx.recv() => m,
                    _ = self.stop.cancelled() => return self.left(Some(pipe), cur, false),
                };
                match msg {
                    Some(StdinMsg::Close) | None => close_when_written = true,
                    Some(msg) => {
                        if let Some((b, d, w)) = self.admit(msg) {
                            (cur, done, from) = (b, Some(d), w);
                        }
                    }
                }
                continue;
            }
            // `write` is cancel-safe: a write that did not complete wrote
            // nothing, so stopping here loses no byte.
            let r = tokio::select! {
                r = pipe.write(&cur) => r,
                _ = self.stop.cancelled() => return self.left(Some(pipe), cur, close_when_written),
            };
            match r {
                Ok(n) if n > 0 => cur.advance(n),
                _ => {
                    // EPIPE: the command closed its stdin. What was not
                    // written is not counted as taken.
                    if let (Some(w), Some(s)) = (&from, self.shared.upgrade()) {
                        s.writers().unwrite(w, cur.len());
                    }
                    if let Some(d) = done.take() {
                        let _ = d.send(Taken::Closed);
                    }
                    self.closed();
                    return self.left(None, Bytes::new(), true);
                }
            }
        }
    }

    /// Decides what of a message is to be written: a numbered writer's
    /// bytes that the command has already are answered at once (a resend),
    /// bytes past a hole are refused. Returns the bytes, whom to tell once
    /// they are written, and the numbered writer they came from.
    fn admit(&self, msg: StdinMsg) -> Option<(Bytes, oneshot::Sender<Taken>, Option<String>)> {
        let shared = self.shared.upgrade()?;
        let (admit, done, writer) = match msg {
            StdinMsg::Data(data, None, done) => (Admit::Write(data), done, None),
            StdinMsg::Data(data, Some(seq), done) => {
                (shared.writers().admit(&seq, data), done, Some(seq.writer))
            }
            StdinMsg::Eof(c, seq, done) => {
                let eof = Bytes::copy_from_slice(&[c]);
                match seq {
                    None => (Admit::Write(eof), done, None),
                    Some(seq) => match shared.writers().eof(&seq) {
                        Admit::Write(_) => (Admit::Write(eof), done, None),
                        other => (other, done, None),
                    },
                }
            }
            StdinMsg::Close => return None,
        };
        match admit {
            Admit::Write(data) if !data.is_empty() => Some((data, done, writer)),
            Admit::Write(_) | Admit::Duplicate => {
                let _ = done.send(Taken::Written);
                None
            }
            Admit::Hole { have } => {
                let _ = done.send(Taken::Hole(have));
                None
            }
        }
    }

    /// What is left: the pipe, the unwritten rest of the current write and
    /// everything still queued (admitted as if written, so that the next
    /// daemon's table agrees with its bytes), and whether to close after
    /// them. The writers of those bytes are not told (their connections
    /// are gone by the time of a handover).
    fn left(&mut self, pipe: Option<StdinPipe>, cur: Bytes, close: bool) -> StdinLeft {
        let mut pending = BytesMut::from(&cur[..]);
        let mut close = close || pipe.is_none();
        while let Ok(msg) = self.rx.try_recv() {
            match msg {
                StdinMsg::Close => close = true,
                msg if !close => {
                    if let Some((b, _, _)) = self.admit(msg) {
                        pending.extend_from_slice(&b);
                    }
                }
                _ => {}
            }
        }
        StdinLeft { pipe, pending, close }
    }

    fn closed(&self) {
        if let Some(s) = self.shared.upgrade() {
            s.stdin_open.store(false, Ordering::SeqCst);
        }
    }
}

/// The writing end of a command's stdin.
enum StdinPipe {
    Pipe(pipe::Sender),
    Pty(PtyWriter),
}

impl StdinPipe {
    async fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        use tokio::io::AsyncWriteExt;
        match self {
            StdinPipe::Pipe(p) => p.write(buf).await,
            StdinPipe::Pty(p) => p.write(buf).await,
        }
    }
}

/// When a command's processes are looked for a second time (see
/// `Actor::sweep`).
const SWEEP_AGAIN: Duration = Duration::from_millis(200);

/// The task that owns a command's process and is the only writer of its
/// output state.
pub(crate) struct Actor {
    shared: Arc<Shared>,
    pid: u32,
    /// Where stdout and stderr come from; `None` once a stream has ended.
    pipes: [Option<Source>; 2],
    /// A PTY command's terminal, until the process and its output end.
    pty: Option<Pty>,
    /// A PTY command's screen model, fed with every stored byte of stdout.
    model: Option<Model>,
    ctl_rx: mpsc::Receiver<Control>,
    stdin_writer: Option<StdinWriter>,
    /// Stops the stdin writer for a handover.
    stdin_stop: CancellationToken,
    life: Lifetimes,
    /// Set once the process is reaped: its pid may then be reused, so only
    /// its process group (kept alive by any remaining member) is signalled.
    reaped: bool,
    /// Descendants that were sent SIGTERM by a timeout, to SIGKILL later.
    terminated: Vec<u32>,
    /// A shell command: its link to the shell, which starts it, signals and
    /// kills it, and reports its end. `pid` is then the shell's.
    job: Option<Job>,
    /// A command handed over by a previous daemon: where it was.
    resume: Option<Resume>,
    /// A handed-over shell command's final cwd.
    resumed_cwd: Option<String>,
    /// How the command's processes are found and ended.
    containment: Arc<Containment>,
    /// The command's cgroup, if it has one.
    leaf: Option<Leaf>,
}

/// What the actor of a shell command holds.
struct Job {
    link: JobLink,
    /// Where the stdin pipe goes when the shell starts the command.
    stdin: Option<oneshot::Sender<StdinPipe>>,
    /// The shell's cwd when the command ended.
    cwd: Option<String>,
}

async fn job_event(job: &mut Option<Job>) -> Option<JobEvent> {
    match job {
        Some(j) => j.link.events.recv().await,
        None => std::future::pending().await,
    }
}

/// Largest single read from a pipe.
const READ_BYTES: usize = 256 * 1024;

/// A paced stream is not read while less than this much room is left.
const MIN_PACED_READ: u64 = 1024;

thread_local! {
    /// Read scratch space shared by all actors on a worker thread, so an
    /// idle command holds no read buffer.
    static SCRATCH: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

async fn exit_ready(w: &mut Option<ExitWatch>) {
    match w {
        Some(w) => w.ready().await,
        None => std::future::pending().await,
    }
}

async fn at(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// An output stream's source.
enum Source {
    Pipe(pipe::Receiver),
    /// A terminal master (non-blocking, registered with the runtime).
    Pty(Arc<AsyncFd<File>>),
}

/// Largest single read from a terminal (they rarely hold more than 4 KiB).
const PTY_READ_BYTES: usize = 64 * 1024;

thread_local! {
    /// Terminal read space shared by all actors on a worker thread.
    static PTY_SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; PTY_READ_BYTES].into_boxed_slice());
}

impl Source {
    /// Reads at most `want` bytes as one chunk; `Ok(None)` is the end.
    fn try_read(&self, want: usize) -> io::Result<Option<Bytes>> {
        match self {
            Source::Pipe(p) => SCRATCH.with_borrow_mut(|buf| {
                // Read into spare capacity (never zeroed). A large read
                // becomes the chunk itself (no copy; the thread's next read
                // allocates afresh); a small one is copied out at its exact
                // size and the scratch space is reused.
                buf.clear();
                buf.reserve(READ_BYTES);
                match p.try_read_buf(&mut (&mut *buf).limit(want))? {
                    0 => Ok(None),
                    n if n >= READ_BYTES / 2 => Ok(Some(buf.split().freeze())),
                    _ => Ok(Some(Bytes::copy_from_slice(buf))),
                }
            }),
            // A terminal read is small (about 4 KiB): read into a scratch
            // array zeroed once, then copy out exactly what came.
            Source::Pty(fd) => PTY_SCRATCH.with_borrow_mut(|scratch| {
                let want = want.min(scratch.len());
                match pty::try_read(fd, &mut scratch[..want])? {
                    0 => Ok(None),
                    n => Ok(Some(Bytes::copy_from_slice(&scratch[..n]))),
                }
            }),
        }
    }
}

async fn readable(p: &Option<Source>) -> io::Result<()> {
    match p {
        Some(Source::Pipe(p)) => p.readable().await,
        // The guard is dropped without clearing: the next `try_read` clears
        // readiness when it finds nothing.
        Some(Source::Pty(fd)) => fd.readable().await.map(drop),
        None => std::future::pending().await,
    }
}

impl Actor {
    /// Runs the command to its end, then keeps its record for the TTL.
    /// Returns when the record should be removed from the registry.
    pub(crate) async fn run(mut self, stop: Stop) {
        let ttl_at = match self.resume.take() {
            Some(Resume::Held { ttl_left }) => ttl_left.map(|d| Instant::now() + d),
            resume => {
                let live = match resume {
                    Some(Resume::Live(l)) => Some(l),
                    _ => None,
                };
                if !self.live(&stop, live).await {
                    return;
                }
                self.life.ttl.map(|d| Instant::now() + d)
            }
        };
        self.hold(ttl_at, &stop).await;
    }

    /// The running phase: until the process is reaped and its output
    /// drained. Returns whether to keep the record for the TTL.
    async fn live(&mut self, stop: &Stop, resumed: Option<Box<Live>>) -> bool {
        let mut stdin_task = self.stdin_writer.take().map(|w| tokio::spawn(w.run()));

        // A shell command's clock starts when its shell starts it.
        let mut started = Instant::now();
        let mut reaped: Option<(Reaped, Duration)> = None;
        let mut reason: Option<ExitReason> = None;
        let mut timeout_at = self.life.timeout.filter(|_| self.job.is_none()).map(|d| started + d);
        let mut sigkill_at: Option<Instant> = None;
        let mut idle_at: Option<Instant> = None;
        let mut drain_until: Option<Instant> = None;
        let mut truncated = false;
        let mut shutdown_seen = false;
        let mut remove_after_exit = false;
        if let Some(l) = resumed {
            let now = Instant::now();
            let at = |d: Option<Duration>| d.map(|d| now + d);
            started = now.checked_sub(l.elapsed).unwrap_or(now);
            reaped = l.reaped;
            self.reaped = reaped.is_some();
            reason = l.reason;
            timeout_at = at(l.timeout_left);
            sigkill_at = at(l.sigkill_left);
            idle_at = at(l.idle_left);
            drain_until = at(l.drain_left);
            truncated = l.truncated;
            remove_after_exit = l.remove_after_exit;
            self.terminated = l.terminated;
            self.resumed_cwd = l.cwd;
        }
        // Not for a process already reaped: its pid may belong to another.
        let mut exit_watch = (self.job.is_none() && !self.reaped).then(|| ExitWatch::new(self.pid));
        self.on_attach_change(&mut idle_at, &mut reason, reaped.is_some(), stop);

        while reaped.is_none() || self.pipes.iter().any(Option::is_some) {
            let paused = [0, 1].map(|i| self.paced_room(i) < MIN_PACED_READ);
            // When the first lingering pacer stops holding the command.
            let lingering = if paused[0] || paused[1] {
                self.shared.output().pacers.iter().filter_map(|p| p.until).min()
            } else {
                None
            };
            tokio::select! {
                biased;
                _ = stop.token.cancelled(), if !shutdown_seen => {
                    shutdown_seen = true;
                    if let Some(tx) = stop.handover.get() {
                        let left = match stdin_task.take() {
                            Some(t) => {
                                self.stdin_stop.cancel();
                                t.await.ok()
                            }
                            None => None,
                        };
                        let now = Instant::now();
                        let left_of = |t: Option<Instant>| t.map(|t| t.saturating_duration_since(now));
                        let live = Live {
                            elapsed: started.elapsed(),
                            reaped,
                            reason,
                            timeout_left: left_of(timeout_at),
                            sigkill_left: left_of(sigkill_at),
                            idle_left: left_of(idle_at),
                            drain_left: left_of(drain_until),
                            truncated,
                            remove_after_exit,
                            terminated: std::mem::take(&mut self.terminated),
                            cwd: None,
                            outputs: [None, None],
                            master: None,
                            stdin: FrozenStdin {
                                fd: None,
                                open: false,
                                pending: Default::default(),
                                close: true,
                                writers: Vec::new(),
                            },
                            lingering: self
                                .shared
                                .output()
                                .pacers
                                .iter()
                                .filter_map(|p| Some((p.next, p.until?.saturating_duration_since(now))))
                                .collect(),
                        };
                        let _ = tx.send(self.freeze_live(live, left));
                        return false;
                    }
                    if stop.kill {
                        self.kill(&mut reason, ExitReason::Killed);
                    } else {
                        // Leave the process running; the daemon is going.
                        return false;
                    }
                }
                Some(ctl) = self.ctl_rx.recv() => match ctl {
                    Control::Signal { sig, reply } => {
                        let r = if reaped.is_some() {
                            Err(ExecError::NotRunning(self.shared.id.clone()))
                        } else if let Some(job) = &self.job {
                            // The shell knows where the signal goes.
                            let msg = ShellCtl::Signal { id: self.shared.id.clone(), sig, reply };
                            if let Err(mpsc::error::SendError(ShellCtl::Signal { reply, .. })) =
                                job.link.shell.send(msg).await
                            {
                                let _ = reply.send(Err(ExecError::NotRunning(self.shared.id.clone())));
                            }
                            continue;
                        } else {
                            // On a terminal, signals go where a keyboard's
                            // would: to the foreground job.
                            let group = self.pty.as_ref().and_then(Pty::foreground_group).unwrap_or(self.pid);
                            process::signal_group(group, sig)
                                .map_err(|source| ExecError::Io { context: "kill(2)", source })
                        };
                        let _ = reply.send(r);
                    }
                    Control::Resize { size, reply } => {
                        let _ = reply.send(self.resize(size));
                    }
                    Control::AttachScreen { from, size, pace, reply } => {
                        if let Some(size) = size
                            && let Err(e @ ExecError::ScreenMemory { .. }) = self.resize(size)
                        {
                            let _ = reply.send(Err(e));
                            continue;
                        }
                        self.attach_screen(from, pace, reply);
                    }
                    Control::Kill { reason: why, reply } => {
                        let r = if reaped.is_some() && self.pipes.iter().all(Option::is_none) {
                            Err(ExecError::NotRunning(self.shared.id.clone()))
                        } else {
                            self.kill(&mut reason, why);
                            Ok(())
                        };
                        if let Some(reply) = reply {
                            let _ = reply.send(r);
                        }
                    }
                    Control::Remove => {
                        remove_after_exit = true;
                        self.kill(&mut reason, ExitReason::Killed);
                    }
                },
                ev = job_event(&mut self.job), if reaped.is_none() => match ev {
                    Some(JobEvent::Started { stdin, stdout, stderr }) => {
                        started = Instant::now();
                        timeout_at = self.life.timeout.map(|d| started + d);
                        self.pipes = [Some(Source::Pipe(stdout)), Some(Source::Pipe(stderr))];
                        if let Some(slot) = self.job.as_mut().and_then(|j| j.stdin.take()) {
                            let _ = slot.send(StdinPipe::Pipe(stdin));
                        }
                        self.shared.output().queued = false;
                        self.shared.changed.send_modify(|v| *v += 1);
                    }
                    Some(JobEvent::Ended { code, signal, cwd, reason: why }) => {
                        if let Some(why) = why {
                            reason.get_or_insert(why);
                        }
                        if let Some(job) = &mut self.job {
                            job.cwd = cwd;
                        }
                        let r = Reaped { code, signal, ..Reaped::unknown() };
                        self.reaped = true;
                        reaped = Some((r, started.elapsed()));
                        drain_until = Some(Instant::now() + self.life.drain_grace);
                        timeout_at = None;
                        idle_at = None;
                    }
                    None => {
                        // The shell went away without a word.
                        reason.get_or_insert(ExitReason::ShellClosed);
                        self.reaped = true;
                        reaped = Some((Reaped::unknown(), started.elapsed()));
                        drain_until = Some(Instant::now() + self.life.drain_grace);
                    }
                },
                _ = exit_ready(&mut exit_watch), if reaped.is_none() => {
                    match process::try_reap(self.pid) {
                        Ok(Some(r)) => {
                            self.reaped = true;
                            reaped = Some((r, started.elapsed()));
                            drain_until = Some(Instant::now() + self.life.drain_grace);
                            timeout_at = None;
                            idle_at = None;
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::error!("wait4 failed: {e}");
                            self.reaped = true;
                            reaped = Some((Reaped::unknown(), started.elapsed()));
                        }
                    }
                }
                r = readable(&self.pipes[0]), if !paused[0] => {
                    self.drain(0, r, &mut reason, &mut truncated, false);
                }
                r = readable(&self.pipes[1]), if !paused[1] => {
                    self.drain(1, r, &mut reason, &mut truncated, false);
                }
                // A pacing reader advanced or left: re-check the pause.
                _ = self.shared.pacer_moved.notified(), if paused[0] || paused[1] => {}
                _ = at(lingering) => {
                    let now = Instant::now();
                    self.shared.output().pacers.retain(|p| p.until.is_none_or(|u| u > now));
                }
                _ = self.shared.attach_changed.notified() => {
                    self.on_attach_change(&mut idle_at, &mut reason, reaped.is_some(), stop);
                }
                _ = at(timeout_at) => {
                    timeout_at = None;
                    if self.job.is_some() {
                        // The shell interrupts, then escalates.
                        self.kill(&mut reason, ExitReason::TimedOut);
                        continue;
                    }
                    reason.get_or_insert(ExitReason::TimedOut);
                    self.terminated = process::signal_tree(self.pid, self.pid, libc::SIGTERM);
                    sigkill_at = Some(Instant::now() + self.life.kill_grace);
                }
                _ = at(sigkill_at) => {
                    sigkill_at = None;
                    self.kill(&mut reason, ExitReason::TimedOut);
                }
                _ = at(idle_at) => {
                    idle_at = None;
                    self.kill(&mut reason, ExitReason::IdleTimeout);
                }
                _ = at(drain_until) => {
                    // The process is gone but a descendant holds a pipe open:
                    // take what the pipe buffers hold, then stop reading.
                    // A stream held back by a pacing reader stays open until
                    // it has caught up.
                    drain_until = None;
                    for i in 0..2 {
                        if self.drain(i, Ok(()), &mut reason, &mut truncated, true) {
                            drain_until = Some(Instant::now() + self.life.drain_grace);
                        } else if let (Some(Source::Pipe(p)), Some(job)) = (self.pipes[i].take(), &self.job) {
                            // A background job of the shell still holds the
                            // pipe: keep its reader open (closing it would
                            // kill the job with SIGPIPE) for the shell's life.
                            crate::shell::linger(p, job.link.linger.clone());
                        }
                    }
                }
            }
        }
        // The pidfd and the terminal are not needed for the TTL phase: give
        // the fds back. The screen model stays, for viewers of the end.
        drop(exit_watch);
        self.pty = None;
        if let Some(t) = stdin_task {
            t.abort();
        }
        let cwd = self.job.as_mut().and_then(|j| j.cwd.take()).or(self.resumed_cwd.take());
        if reason.is_some() && self.job.is_none() {
            // We killed it: make sure no member of its group outlives it,
            // even one that ignored SIGTERM after the leader died.
            let _ = process::signal_group(self.pid, libc::SIGKILL);
            process::signal_pids(&std::mem::take(&mut self.terminated), libc::SIGKILL);
            self.sweep(true);
        } else if self.job.is_none() && self.containment.leftovers() == Leftovers::Kill {
            // It ended by itself: what it left running (background jobs,
            // daemons it started) ends with it. Not by process group: the
            // leader is reaped, so its pid may be a new group's by now
            // (pid_max is 32768 on many hosts).
            self.sweep(!self.containment.subreaper());
        }

        let (r, wall) = reaped.unwrap_or((Reaped::unknown(), started.elapsed()));
        let exit = {
            let mut out = self.shared.output();
            let exit = ExitInfo {
                code: r.code,
                signal: r.signal,
                core_dumped: r.core_dumped,
                reason: reason.unwrap_or(ExitReason::Exited),
                wall,
                user_us: r.user_us,
                sys_us: r.sys_us,
                max_rss_kb: r.max_rss_kb,
                ends: [out.rings[0].end(), out.rings[1].end()],
                truncated,
                cwd,
            };
            out.exit = Some(exit.clone());
            exit
        };
        self.shared.changed.send_modify(|v| *v += 1);
        tracing::info!(
            code = ?exit.code,
            signal = ?exit.signal,
            reason = ?exit.reason,
            wall_ms = exit.wall.as_millis() as u64,
            "command finished"
        );

        // Keep the record attachable for the TTL.
        !remove_after_exit
    }

    /// The finished phase: the record stays attachable until `ttl_at`.
    async fn hold(&mut self, ttl_at: Option<Instant>, stop: &Stop) {
        loop {
            tokio::select! {
                _ = at(ttl_at) => return,
                _ = stop.token.cancelled() => {
                    if let Some(tx) = stop.handover.get() {
                        let ttl_left = ttl_at.map(|t| t.saturating_duration_since(Instant::now()));
                        let exit = self.shared.output().exit.clone();
                        if let Some(exit) = exit {
                            let _ = tx.send((self.freeze(Phase::Held { exit, ttl_left }), Vec::new()));
                        }
                    }
                    return;
                }
                ctl = self.ctl_rx.recv() => match ctl {
                    Some(Control::Remove) | None => return,
                    Some(Control::Signal { reply, .. }) => {
                        let _ = reply.send(Err(ExecError::NotRunning(self.shared.id.clone())));
                    }
                    Some(Control::Resize { reply, .. }) => {
                        let _ = reply.send(Err(ExecError::NotRunning(self.shared.id.clone())));
                    }
                    Some(Control::AttachScreen { from, size, pace, reply }) => {
                        // Rendered for the viewer's size; there is no
                        // process left to tell.
                        if let (Some(size), Some(model)) = (size, &self.model) {
                            if let Err(e) = self.shared.reservation.charge_screen(size) {
                                let _ = reply.send(Err(e));
                                continue;
                            }
                            model.send(ModelMsg::Resize(size));
                        }
                        self.attach_screen(from, pace, reply);
                    }
                    Some(Control::Kill { reply, .. }) => {
                        // Ended, but what it left may run (leftovers kept):
                        // a kill ends that.
                        let left = if self.job.is_none() { self.sweep(true) } else { 0 };
                        if let Some(reply) = reply {
                            let r = if left > 0 { Ok(()) } else { Err(ExecError::NotRunning(self.shared.id.clone())) };
                            let _ = reply.send(r);
                        }
                    }
                },
            }
        }
    }

    /// The command's record for a handover, in `phase`.
    fn freeze(&self, phase: Phase) -> Frozen {
        let s = &self.shared;
        let out = s.output();
        Frozen {
            id: s.id.clone(),
            name: s.name.clone(),
            labels: s.labels.clone(),
            argv: s.argv.clone(),
            pid: s.pid,
            started_at: s.started_at,
            shell: s.shell.clone(),
            request_key: s.request_key.clone(),
            rings: [out.rings[0].freeze(), out.rings[1].freeze()],
            seq: out.seq,
            size: out.size,
            ever_attached: s.ever_attached.load(Ordering::SeqCst),
            life: self.life.clone(),
            phase,
        }
    }

    /// A running command's record and fds for a handover. A shell
    /// command cannot outlive its shell, which is not handed over: one
    /// still running counts as ended (`shell_closed`).
    fn freeze_live(&mut self, mut live: Live, stdin: Option<StdinLeft>) -> (Frozen, Vec<OwnedFd>) {
        let mut fds = Vec::new();
        let mut keep = |fd: io::Result<OwnedFd>, what: &str| match fd {
            Ok(fd) => {
                let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
                fds.push(fd);
                Some(raw)
            }
            Err(e) => {
                tracing::warn!(id = %self.shared.id, "{what} not handed over: {e}");
                None
            }
        };
        if let Some(job) = &mut self.job {
            live.cwd = job.cwd.take();
            if live.reaped.is_none() {
                live.reaped = Some((Reaped::unknown(), live.elapsed));
                live.reason.get_or_insert(ExitReason::ShellClosed);
            }
        }
        live.master = self.pty.take().map(Pty::into_master).and_then(|fd| keep(Ok(fd), "terminal"));
        for i in 0..2 {
            live.outputs[i] = match self.pipes[i].take() {
                Some(Source::Pipe(p)) => keep(p.into_blocking_fd(), "output pipe"),
                Some(Source::Pty(_)) => live.master,
                None => None,
            };
        }
        if let Some(left) = stdin {
            live.stdin.open = self.shared.stdin_open.load(Ordering::SeqCst);
            live.stdin.pending = serde_bytes::ByteBuf::from(left.pending.to_vec());
            live.stdin.close = left.close;
            live.stdin.fd = match left.pipe {
                Some(StdinPipe::Pipe(p)) => keep(p.into_blocking_fd(), "stdin pipe"),
                _ => None,
            };
        }
        live.stdin.writers = self.shared.writers().freeze();
        (self.freeze(Phase::Live(Box::new(live))), fds)
    }

    /// Sets the terminal size (the newest request wins) and tells every
    /// subscription.
    fn resize(&mut self, size: TermSize) -> Result<(), ExecError> {
        let (Some(pty), Some(model)) = (&self.pty, &self.model) else {
            return Err(ExecError::NotRunning(self.shared.id.clone()));
        };
        // The same size again: nothing changes, nobody is told.
        if self.shared.output().size.is_some_and(|(s, _)| s == size) {
            return Ok(());
        }
        self.shared.reservation.charge_screen(size)?;
        if let Err(e) = pty.resize(size) {
            // Charged for a size the terminal did not take: charge back.
            if let Some((old, _)) = self.shared.output().size {
                let _ = self.shared.reservation.charge_screen(old);
            }
            return Err(e);
        }
        model.send(ModelMsg::Resize(size));
        {
            let mut out = self.shared.output();
            let n = out.size.map_or(0, |(_, n)| n);
            out.size = Some((size, n + 1));
        }
        self.shared.changed.send_modify(|v| *v += 1);
        Ok(())
    }

    /// Replies with the screen and a subscription from the offset it
    /// reflects, or, for a non-zero offset still held, a subscription from
    /// there. The screen is rendered by the model task after it has parsed
    /// every byte stored so far (its channel is in order), i.e. exactly at
    /// the ring's end now, where the subscription starts.
    fn attach_screen(
        &mut self,
        from: u64,
        pace: bool,
        reply: oneshot::Sender<Result<ScreenAttach, ExecError>>,
    ) {
        let Some(model) = &self.model else {
            let _ = reply.send(Err(ExecError::NotAPty(self.shared.id.clone())));
            return;
        };
        let (first_held, end) = {
            let out = self.shared.output();
            (out.rings[0].first_held(), out.rings[0].end())
        };
        if from > end {
            let _ = reply.send(Err(ExecError::OffsetBeyondEnd { asked: from, end }));
        } else if from != 0 && from >= first_held {
            let _ = reply.send(Ok((None, subscribe(&self.shared, [from, 0], pace))));
        } else {
            let sub = subscribe(&self.shared, [end, 0], pace);
            model.send(ModelMsg::Render { offset: end, sub, reply });
        }
    }

    /// Kills what is left of the command (see [`contain::sweep`]); returns
    /// how many processes (or populated cgroups) were found.
    fn sweep(&self, thorough: bool) -> usize {
        let found = contain::sweep(&self.shared.id, self.leaf.as_ref(), thorough);
        if self.leaf.is_none() {
            // A process caught inside execve shows no environment (so no
            // marker) for a moment: look once more, shortly.
            let id = self.shared.id.clone();
            tokio::spawn(async move {
                tokio::time::sleep(SWEEP_AGAIN).await;
                let _ = tokio::task::spawn_blocking(move || contain::sweep(&id, None, thorough)).await;
            });
        }
        found
    }

    fn kill(&mut self, reason: &mut Option<ExitReason>, why: ExitReason) {
        reason.get_or_insert(why);
        if let Some(job) = &self.job {
            if !self.reaped {
                let msg = ShellCtl::Kill { id: self.shared.id.clone(), reason: why };
                if let Err(mpsc::error::TrySendError::Full(msg)) = job.link.shell.try_send(msg) {
                    // Never lose a kill: wait for room in a task of its own.
                    let tx = job.link.shell.clone();
                    tokio::spawn(async move {
                        let _ = tx.send(msg).await;
                    });
                }
            }
            return;
        }
        if self.reaped {
            let _ = process::signal_group(self.pid, libc::SIGKILL);
        } else {
            process::signal_tree(self.pid, self.pid, libc::SIGKILL);
        }
        // Descendants found when SIGTERM went out: one that left the group
        // and outlived the leader can no longer be found from it.
        process::signal_pids(&std::mem::take(&mut self.terminated), libc::SIGKILL);
        // And those that left the tree as well (a double-forked daemon).
        self.sweep(true);
    }

    fn on_attach_change(
        &mut self,
        idle_at: &mut Option<Instant>,
        reason: &mut Option<ExitReason>,
        exited: bool,
        stop: &Stop,
    ) {
        if exited {
            return;
        }
        if self.shared.attached.load(Ordering::SeqCst) > 0 {
            *idle_at = None;
            return;
        }
        // A restart closes every connection: that is not the client leaving.
        let restarting = stop.restarting.load(Ordering::SeqCst);
        if self.life.kill_on_disconnect && self.shared.ever_attached.load(Ordering::SeqCst) && !restarting {
            tracing::info!(id = %self.shared.id, "last client gone: killing (kill_on_disconnect)");
            self.kill(reason, ExitReason::Disconnected);
            return;
        }
        if idle_at.is_none() {
            *idle_at = self.life.idle_timeout.map(|d| Instant::now() + d);
        }
    }

    /// Room stream `i` has before a pacing reader would lose data
    /// (`u64::MAX` without pacing readers).
    fn paced_room(&self, i: usize) -> u64 {
        if self.pipes[i].is_none() {
            return u64::MAX;
        }
        let room = self.shared.output().pace_room(i).unwrap_or(u64::MAX);
        if i == 0 && self.model.is_some() {
            // The screen model may lag this far behind; past it, reading
            // waits for it (and the command for us).
            let lag = self.shared.model_lag.load(Ordering::SeqCst);
            return room.min(MODEL_MAX_LAG.saturating_sub(lag) as u64);
        }
        room
    }

    /// Reads what pipe `i` has into its ring: a bounded number of reads (or,
    /// with `to_empty`, until the pipe is empty), so one busy stream cannot
    /// starve the actor's other duties, and never past a pacing reader's
    /// room. Returns whether it stopped for a pacing reader.
    fn drain(
        &mut self,
        i: usize,
        ready: io::Result<()>,
        reason: &mut Option<ExitReason>,
        truncated: &mut bool,
        to_empty: bool,
    ) -> bool {
        if let Err(e) = ready {
            tracing::warn!(id = %self.shared.id, "pipe poll failed: {e}");
            self.pipes[i] = None;
            return false;
        }
        let mut pushed = false;
        let mut stalled = false;
        // Even "to empty" is bounded (a full 1 MiB pipe and then some), so
        // a descendant that writes without pause cannot pin this thread.
        let max_reads = if to_empty { 16 } else { 8 };
        for _ in 0..max_reads {
            let room = self.paced_room(i);
            if room < MIN_PACED_READ {
                stalled = true;
                break;
            }
            let Some(p) = &self.pipes[i] else { break };
            let want = room.min(READ_BYTES as u64) as usize;
            match p.try_read(want) {
                Ok(Some(data)) => {
                    if self.store(i, data, reason, truncated) {
                        pushed = true;
                    }
                }
                Ok(None) => {
                    self.pipes[i] = None;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(id = %self.shared.id, "pipe read failed: {e}");
                    self.pipes[i] = None;
                    break;
                }
            }
        }
        if pushed {
            self.shared.changed.send_modify(|v| *v += 1);
        }
        stalled
    }

    /// Stores a chunk, applying the output limit. Returns whether anything
    /// was stored.
    fn store(
        &mut self,
        i: usize,
        mut data: Bytes,
        reason: &mut Option<ExitReason>,
        truncated: &mut bool,
    ) -> bool {
        let mut out = self.shared.output();
        if let Some(max) = self.life.max_output_bytes {
            let total = out.rings[0].end() + out.rings[1].end();
            let room = max.saturating_sub(total);
            if (data.len() as u64) > room {
                data.truncate(room as usize);
                *truncated = true;
                if self.life.output_limit == OutputLimit::Kill && reason.is_none() {
                    drop(out);
                    tracing::info!(id = %self.shared.id, "output limit reached: killing");
                    self.kill(reason, ExitReason::OutputLimit);
                    out = self.shared.output();
                }
            }
        }
        if data.is_empty() {
            return false;
        }
        let seq = out.seq;
        out.seq += 1;
        out.rings[i].push(data.clone(), seq);
        drop(out);
        if let Some(model) = self.model.as_ref().filter(|_| i == 0) {
            self.shared.model_lag.fetch_add(data.len() + MODEL_CHUNK_CHARGE, Ordering::SeqCst);
            model.send(ModelMsg::Feed(data));
        }
        true
    }
}

/// Most bytes the screen model may be behind the ring before the actor
/// stops reading the terminal.
const MODEL_MAX_LAG: usize = 512 * 1024;

/// Charged per chunk handed to the model, so many tiny chunks count too.
const MODEL_CHUNK_CHARGE: usize = 64;

enum ModelMsg {
    Feed(Bytes),
    Resize(TermSize),
    /// Render the screen (at `offset`: everything fed so far) and reply
    /// with it and the subscription that starts there.
    Render {
        offset: u64,
        sub: Subscription,
        reply: oneshot::Sender<Result<ScreenAttach, ExecError>>,
    },
}

/// A PTY command's screen model in a task of its own, so that parsing
/// (the costliest part of a terminal's output path) runs beside the actor's
/// reading rather than in it. Fed in order through a channel whose content
/// is bounded by [`MODEL_MAX_LAG`] (the actor stops reading past it), so the
/// channel needs no bound of its own.
struct Model {
    tx: mpsc::UnboundedSender<ModelMsg>,
    _task: tokio_util::task::AbortOnDropHandle<()>,
}

impl Model {
    fn spawn(mut term: Term, shared: Arc<Shared>) -> Model {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                match msg {
                    ModelMsg::Feed(data) => {
                        term.feed(&data);
                        let charge = data.len() + MODEL_CHUNK_CHARGE;
                        let before = shared.model_lag.fetch_sub(charge, Ordering::SeqCst);
                        // Wake a stalled actor once the lag halves.
                        if before > MODEL_MAX_LAG / 2 && before - charge <= MODEL_MAX_LAG / 2 {
                            shared.pacer_moved.notify_one();
                        }
                    }
                    ModelMsg::Resize(size) => term.resize(size),
                    ModelMsg::Render { offset, sub, reply } => {
                        let screen = Screen { offset, size: term.size(), data: Bytes::from(term.render()) };
                        let _ = reply.send(Ok((Some(screen), sub)));
                    }
                }
            }
        });
        Model { tx, _task: tokio_util::task::AbortOnDropHandle::new(task) }
    }

    fn send(&self, msg: ModelMsg) {
        // The task lives as long as this handle.
        let _ = self.tx.send(msg);
    }
}

impl Reaped {
    /// Status for a child whose wait failed (should not happen).
    pub(crate) fn unknown() -> Reaped {
        Reaped { code: None, signal: None, core_dumped: false, user_us: 0, sys_us: 0, max_rss_kb: 0 }
    }
}
