//! Named shells: one long-lived bash per name that runs submitted scripts
//! one at a time, so that cwd, variables, functions and aliases persist from
//! one command to the next, while every command stays a normal command with
//! its own id, rings, exit status and lifetimes.
//!
//! The mechanism (established by experiment in
//! `docs/design/named-shells.md`): an *interactive* bash without a terminal
//! and with job control off. Its stdin is a control pipe the actor writes one
//! line per command to; its fd 3 is a status pipe where a `PROMPT_COMMAND`
//! hook reports NUL-terminated records: `S N` (command N starts), `E N RC
//! CWD` (it ended) and `R` (idle, no current command). Command N's script
//! goes through a file and its stdio through three FIFOs in a private
//! directory, so nothing of the mechanism can reach its output and nothing
//! it does can eat the next command. Interrupting is SIGINT to the shell's
//! process group, exactly what Ctrl-C on a terminal does.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::ExecError;
use crate::command::ExitReason;
use crate::process::{self, ExitWatch, Reaped};
use crate::spec::Lifetime;

/// How to create a named shell.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShellSpec {
    /// Its name (`None`: generated, unguessable). 1..=64 characters of
    /// `[A-Za-z0-9._-]`.
    pub name: Option<String>,
    /// Initial working directory (default: the daemon's).
    pub cwd: Option<PathBuf>,
    /// Variables added to the daemon's environment.
    pub env: BTreeMap<String, String>,
    /// The shell program (default `bash`); it must be bash-compatible.
    pub program: Option<String>,
    /// Close the shell after this long with nothing queued or running.
    pub idle_ttl: Lifetime,
}

impl ShellSpec {
    /// A spec for a shell of this name with every option at its default.
    pub fn named(name: impl Into<String>) -> ShellSpec {
        ShellSpec { name: Some(name.into()), ..ShellSpec::default() }
    }
}

/// Whether a shell is doing something.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShellState {
    /// Waiting for a command.
    Idle,
    /// Running a command.
    Busy,
    /// Gone; see [`ShellInfo::closed`].
    Closed,
}

/// Why a shell closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// A client closed it.
    Closed,
    /// The shell exited by itself (`exit 3`, `set -e`, `exec prog`).
    Exited,
    /// Nothing ran for its idle TTL.
    IdleTtl,
    /// A command could not be interrupted, so the shell was killed.
    Stuck,
    /// The daemon shut down.
    Shutdown,
}

/// How a shell closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShellClosed {
    /// Why.
    pub reason: CloseReason,
    /// The shell's exit code, if it exited.
    pub code: Option<i32>,
    /// The signal that ended the shell, if one did.
    pub signal: Option<i32>,
    /// A sentence for people.
    pub message: String,
}

/// A snapshot of a shell for listings.
#[derive(Clone, Debug)]
pub struct ShellInfo {
    /// Its name.
    pub name: String,
    /// The shell program.
    pub program: String,
    /// The shell's process id (= its process group and session id).
    pub pid: u32,
    /// Idle, busy or closed.
    pub state: ShellState,
    /// The working directory the last command ended in (or the initial one).
    pub cwd: String,
    /// Commands waiting.
    pub queued: usize,
    /// The running command's id.
    pub running: Option<String>,
    /// Commands submitted so far.
    pub commands: u64,
    /// Creation time.
    pub created_at: SystemTime,
    /// Last submission or command end.
    pub last_used: SystemTime,
    /// How it closed, once closed.
    pub closed: Option<ShellClosed>,
}

/// Where a command of a shell's history is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobState {
    /// Waiting for the commands before it.
    Queued,
    /// Running.
    Running,
    /// Ended (or dropped before it ran).
    Exited,
}

/// One command in a shell's history.
#[derive(Clone, Debug)]
pub struct HistoryEntry {
    /// The command id.
    pub id: String,
    /// The script, at most [`HISTORY_SCRIPT_BYTES`] of it.
    pub script: String,
    /// Whether `script` was cut.
    pub script_truncated: bool,
    /// Queued, running or exited.
    pub state: JobState,
    /// The shell's `$?` after it.
    pub exit_code: Option<i32>,
    /// Why it ended, when it ended for a reason other than finishing.
    pub reason: Option<ExitReason>,
    /// Submission time.
    pub submitted_at: SystemTime,
    /// When the shell started it.
    pub started_at: Option<SystemTime>,
    /// When it ended.
    pub ended_at: Option<SystemTime>,
    /// The shell's cwd when it ended.
    pub cwd: Option<String>,
}

/// Most bytes of a script kept in the history.
pub const HISTORY_SCRIPT_BYTES: usize = 4096;

/// Most history entries kept per shell.
pub const HISTORY_ENTRIES: usize = 1000;

/// A cheap, cloneable handle to one shell.
#[derive(Clone)]
pub struct ShellHandle {
    pub(crate) shared: Arc<ShellShared>,
}

impl std::fmt::Debug for ShellHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShellHandle").field("name", &self.shared.name).finish()
    }
}

pub(crate) struct ShellShared {
    pub(crate) name: String,
    program: String,
    pid: u32,
    created_at: SystemTime,
    pub(crate) ctl: mpsc::Sender<ShellCtl>,
    /// Cancelled when the shell ends: FIFOs still held by its background
    /// jobs are read until then.
    pub(crate) linger: CancellationToken,
    /// A std mutex: held only to copy or update plain fields, never across
    /// an `.await`. Written by the actor, read by listings.
    status: Mutex<Status>,
}

struct Status {
    state: ShellState,
    cwd: String,
    queued: usize,
    running: Option<String>,
    commands: u64,
    last_used: SystemTime,
    closed: Option<ShellClosed>,
    history: VecDeque<HistoryEntry>,
}

impl ShellShared {
    fn status(&self) -> MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn entry(&self, id: &str, f: impl FnOnce(&mut HistoryEntry)) {
        let mut st = self.status();
        if let Some(e) = st.history.iter_mut().rev().find(|e| e.id == id) {
            f(e);
        }
    }
}

impl ShellHandle {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The shell's process id.
    pub fn pid(&self) -> u32 {
        self.shared.pid
    }

    /// A snapshot for listings.
    pub fn info(&self) -> ShellInfo {
        let st = self.shared.status();
        ShellInfo {
            name: self.shared.name.clone(),
            program: self.shared.program.clone(),
            pid: self.shared.pid,
            state: st.state,
            cwd: st.cwd.clone(),
            queued: st.queued,
            running: st.running.clone(),
            commands: st.commands,
            created_at: self.shared.created_at,
            last_used: st.last_used,
            closed: st.closed.clone(),
        }
    }

    /// The last [`HISTORY_ENTRIES`] commands, in submission order.
    pub fn history(&self) -> Vec<HistoryEntry> {
        self.shared.status().history.iter().cloned().collect()
    }

    /// Whether the shell has closed.
    pub fn is_closed(&self) -> bool {
        self.shared.status().closed.is_some()
    }

    /// Ids of the commands in the history.
    pub(crate) fn command_ids(&self) -> Vec<String> {
        self.shared.status().history.iter().map(|e| e.id.clone()).collect()
    }

    /// Hands a command to the shell's queue.
    pub(crate) async fn submit(&self, job: QueuedJob) -> Result<(), ExecError> {
        let closed =
            || ExecError::ShellClosed { name: self.shared.name.clone(), why: "it has closed".into() };
        let (reply, rx) = oneshot::channel();
        self.shared.ctl.send(ShellCtl::Submit { job, reply }).await.map_err(|_| closed())?;
        rx.await.unwrap_or_else(|_| Err(closed()))
    }

    /// Closes the shell: kills every process of its session. Returns once
    /// the shell is reaped.
    pub(crate) async fn close(&self) {
        let (reply, rx) = oneshot::channel();
        if self.shared.ctl.send(ShellCtl::Close { reply }).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// Messages to a shell's actor.
pub(crate) enum ShellCtl {
    /// Queue a command.
    Submit { job: QueuedJob, reply: oneshot::Sender<Result<(), ExecError>> },
    /// A signal for a command (from its actor).
    Signal { id: String, sig: i32, reply: oneshot::Sender<Result<(), ExecError>> },
    /// End a command: drop it from the queue or interrupt it (from its actor).
    Kill { id: String, reason: ExitReason },
    /// Close the shell.
    Close { reply: oneshot::Sender<()> },
}

/// A command handed to a shell.
pub(crate) struct QueuedJob {
    pub(crate) id: String,
    pub(crate) script: String,
    /// Where its start and end go (to its command actor).
    pub(crate) events: mpsc::Sender<JobEvent>,
    /// SIGINT-to-SIGTERM and SIGTERM-to-SIGKILL time when it is killed.
    pub(crate) kill_grace: Duration,
}

/// What a shell tells a command's actor.
pub(crate) enum JobEvent {
    /// The shell has opened the command's FIFOs and runs it now.
    Started { stdin: pipe::Sender, stdout: pipe::Receiver, stderr: pipe::Receiver },
    /// The command ended. All its foreground output is in the FIFOs.
    Ended { code: Option<i32>, signal: Option<i32>, cwd: Option<String>, reason: Option<ExitReason> },
}

/// The command actor's side of a shell command.
pub(crate) struct JobLink {
    pub(crate) shell: mpsc::Sender<ShellCtl>,
    pub(crate) events: mpsc::Receiver<JobEvent>,
    /// Cancelled when the shell ends: FIFOs still held by background jobs
    /// are read until then.
    pub(crate) linger: CancellationToken,
}

/// Reads (and drops) what a background job of a shell writes to the FIFO of
/// a command that has ended, until the job closes it or the shell ends, so
/// the job never dies of SIGPIPE or blocks on a full pipe.
pub(crate) fn linger(p: pipe::Receiver, until: CancellationToken) {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        let mut dropped = 0u64;
        loop {
            tokio::select! {
                _ = until.cancelled() => break,
                r = p.readable() => {
                    if r.is_err() {
                        break;
                    }
                    match p.try_read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => dropped += n as u64,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(_) => break,
                    }
                }
            }
        }
        if dropped > 0 {
            tracing::debug!(dropped, "background output after its command ended");
        }
    });
}

/// Checks a client-chosen shell name.
pub(crate) fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && name != "."
        && name != ".."
}

/// A new unguessable shell name.
pub(crate) fn new_name() -> String {
    format!("sh-{:016x}", rand::random::<u64>())
}

/// The one-line file each command's control line sources. One line, so
/// that error line numbers are those of the script (as with `bash -c`).
const RUN_FILE: &str = r#"IFS= builtin read -r -d '' __tether_c <"$__tether_D/$__tether_cur.sh"; if [[ -n $__tether_xt ]]; then __tether_c="set -x;$__tether_c"; fi; __tether_ret "$__tether_rc"; builtin eval "$__tether_c""#;

/// Written to the shell once, in braces so that it is one command and
/// produces exactly one `R`.
const BOOTSTRAP: &str = r#"{
PS1= PS2= PS0= PS4='+ ' PROMPT_COMMAND=
export -n PS1 PS2
set +o history +H +m
unset HISTFILE MAIL MAILPATH MAILCHECK
shopt -s expand_aliases
__tether_rc=0 __tether_cur= __tether_xt= __tether_c=
__tether_s() { __tether_cur=$1; }
__tether_b() { builtin printf 'S %s\0' "$__tether_cur" >&3; }
__tether_ret() { return "$1"; }
__tether_p() {
  local __tether_x=$?
  case $- in *x*) __tether_xt=1; set +x ;; *) __tether_xt= ;; esac
  __tether_c=
  if [[ -n $__tether_cur ]]; then
    builtin printf 'E %s %s %s\0' "$__tether_cur" "$__tether_x" "${PWD-}" >&3
    __tether_rc=$__tether_x __tether_cur=
  else
    builtin printf 'R\0' >&3
  fi
}
readonly -f __tether_s __tether_b __tether_ret __tether_p
PROMPT_COMMAND=__tether_p
readonly PROMPT_COMMAND
}
"#;

/// After an interrupt, how often and how many times to look for processes
/// that missed it.
const RECHECK_EVERY: Duration = Duration::from_millis(100);
const RECHECKS: u32 = 5;

/// How long a new shell may take to report ready.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Escalation rounds (one per kill grace) before a command that does not
/// end is declared stuck and its shell killed.
const ESCALATION_ROUNDS: u32 = 5;

/// A started shell, before its actor runs.
pub(crate) struct Started {
    pub(crate) handle: ShellHandle,
    pub(crate) actor: ShellActor,
}

/// Spawns the shell, bootstraps it and waits until it is ready.
pub(crate) async fn start(
    name: String,
    spec: &ShellSpec,
    env_remove: &[String],
    idle_ttl: Option<Duration>,
    ttl: Option<Duration>,
) -> Result<Started, ExecError> {
    let program = spec.program.clone().unwrap_or_else(|| "bash".to_owned());
    let dir = private_dir()
        .map_err(|source| ExecError::Io { context: "creating the shell's directory", source })?;
    let dir_guard = DirGuard(Some(dir.clone()));
    let io_err = |context| move |source| ExecError::Io { context, source };
    std::fs::write(dir.join("run"), RUN_FILE).map_err(io_err("writing the shell's run file"))?;

    let (control_r, control_w) = std::io::pipe().map_err(io_err("pipe(2)"))?;
    let (status_r, status_w) = std::io::pipe().map_err(io_err("pipe(2)"))?;
    let (log_r, log_w) = std::io::pipe().map_err(io_err("pipe(2)"))?;
    let log_w2 = log_w.try_clone().map_err(io_err("dup(2)"))?;

    let mut cmd = std::process::Command::new(&program);
    cmd.args(["--norc", "--noprofile", "--noediting", "-i"]);
    for k in env_remove {
        cmd.env_remove(k);
    }
    cmd.envs(&spec.env).env("PS1", "").env("PS2", "");
    if let Some(cwd) = &spec.cwd {
        cmd.current_dir(cwd);
    }
    cmd.stdin(control_r).stdout(log_w).stderr(log_w2);
    process::new_session_with_fd3(&mut cmd, std::os::fd::AsRawFd::as_raw_fd(&status_w));
    let child = cmd.spawn().map_err(|source| ExecError::Spawn { program: program.clone(), source })?;
    // Our copies of the child's ends go with `cmd` and `status_w`.
    drop(cmd);
    drop(status_w);
    let pid = child.id();
    process::register_leader(pid);
    // Reaped through a pidfd by the actor; the std handle is not needed.
    drop(child);
    let kill = || {
        let _ = process::signal_group(pid, libc::SIGKILL);
        let _ = process::wait_blocking(pid);
    };
    let pipes = (|| -> io::Result<_> {
        Ok((
            pipe::Sender::from_owned_fd(control_w.into())?,
            pipe::Receiver::from_owned_fd(status_r.into())?,
            pipe::Receiver::from_owned_fd(log_r.into())?,
        ))
    })();
    let (mut control, status, log) = match pipes {
        Ok(p) => p,
        Err(source) => {
            kill();
            return Err(ExecError::Io { context: "registering pipes", source });
        }
    };

    let mut boot = format!("__tether_D={}; readonly __tether_D\n", quote(&dir)).into_bytes();
    boot.extend_from_slice(BOOTSTRAP.as_bytes());
    let mut records = Records::default();
    let ready = async {
        control.write_all(&boot).await?;
        loop {
            match records.next(&status).await? {
                Some(r) if r == b"R" => return Ok::<bool, io::Error>(true),
                Some(_) => {}
                None => return Ok(false),
            }
        }
    };
    let failed = |why: String| ExecError::ShellStart { program: program.clone(), why };
    match tokio::time::timeout(START_TIMEOUT, ready).await {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => {
            let said = read_available(&log);
            kill();
            return Err(failed(format!("it exited during start-up: {}", said.trim())));
        }
        Ok(Err(e)) => {
            kill();
            return Err(failed(format!("talking to it failed: {e}")));
        }
        Err(_) => {
            kill();
            return Err(failed("it did not get ready in 10 s (is it bash?)".into()));
        }
    }
    // Start-up chatter ("no job control in this shell") is not anyone's.
    let _ = read_available(&log);

    let now = SystemTime::now();
    let cwd = match &spec.cwd {
        Some(c) => c.to_string_lossy().into_owned(),
        None => std::env::current_dir().map(|c| c.to_string_lossy().into_owned()).unwrap_or_default(),
    };
    let (ctl, ctl_rx) = mpsc::channel(64);
    let shared = Arc::new(ShellShared {
        name,
        program,
        pid,
        created_at: now,
        ctl,
        linger: CancellationToken::new(),
        status: Mutex::new(Status {
            state: ShellState::Idle,
            cwd,
            queued: 0,
            running: None,
            commands: 0,
            last_used: now,
            closed: None,
            history: VecDeque::new(),
        }),
    });
    let actor = ShellActor {
        shared: shared.clone(),
        pid,
        control,
        status,
        log: Some(log),
        records,
        dir: dir_guard,
        ctl_rx,
        queue: VecDeque::new(),
        current: None,
        next_n: 1,
        idle_ttl,
        ttl,
        exit_watch: ExitWatch::new(pid),
    };
    Ok(Started { handle: ShellHandle { shared }, actor })
}

/// The shell's private directory, removed on drop.
struct DirGuard(Option<PathBuf>);

impl DirGuard {
    fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new("/nonexistent"))
    }
}

impl Drop for DirGuard {
    fn drop(&mut self) {
        if let Some(d) = self.0.take() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// A new directory only we can enter, for the scripts and FIFOs.
fn private_dir() -> io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("tether-sh-{:016x}", rand::random::<u64>()));
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    Ok(dir)
}

/// A path as a single-quoted bash word.
fn quote(p: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let s = String::from_utf8_lossy(p.as_os_str().as_bytes());
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Whatever a pipe holds right now, as text (for error messages).
fn read_available(p: &pipe::Receiver) -> String {
    let mut buf = vec![0u8; 4096];
    let mut out = Vec::new();
    while out.len() < 4096 {
        match p.try_read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Most processes of a shell's tree looked at (bounds a fork bomb's cost).
const MAX_TREE: usize = 100_000;

/// Longest status record accepted.
const MAX_RECORD_BYTES: usize = 64 * 1024;

/// NUL-terminated records from the status pipe.
#[derive(Default)]
struct Records {
    buf: Vec<u8>,
}

impl Records {
    /// The next whole record if one is buffered.
    fn pop(&mut self) -> Option<Vec<u8>> {
        let end = self.buf.iter().position(|&b| b == 0)?;
        let rec = self.buf[..end].to_vec();
        self.buf.drain(..=end);
        Some(rec)
    }

    /// Reads what the pipe has; `Ok(false)` at end of file.
    fn fill(&mut self, p: &pipe::Receiver) -> io::Result<bool> {
        let mut chunk = [0u8; 4096];
        loop {
            match p.try_read(&mut chunk) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    // Records are short (a cwd is at most PATH_MAX); only a
                    // broken shell writes more without a NUL.
                    if self.buf.len() > MAX_RECORD_BYTES && !self.buf.contains(&0) {
                        return Err(io::Error::new(io::ErrorKind::InvalidData, "status record too long"));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The next record, waiting for it; `None` at end of file.
    async fn next(&mut self, p: &pipe::Receiver) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(r) = self.pop() {
                return Ok(Some(r));
            }
            p.readable().await?;
            if !self.fill(p)? {
                return Ok(self.pop());
            }
        }
    }
}

/// A status record.
#[derive(Debug, PartialEq, Eq)]
enum Record {
    Started(u64),
    Ended { n: u64, rc: i32, cwd: String },
    Ready,
    Unknown,
}

fn parse(rec: &[u8]) -> Record {
    let mut parts = rec.splitn(4, |&b| b == b' ');
    let num = |b: Option<&[u8]>| std::str::from_utf8(b?).ok()?.parse::<u64>().ok();
    match parts.next() {
        Some(b"R") => Record::Ready,
        Some(b"S") => num(parts.next()).map_or(Record::Unknown, Record::Started),
        Some(b"E") => {
            let (Some(n), Some(rc)) = (num(parts.next()), num(parts.next())) else {
                return Record::Unknown;
            };
            // The cwd is raw bytes and may hold spaces or newlines.
            let cwd = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            Record::Ended { n, rc: rc as i32, cwd }
        }
        _ => Record::Unknown,
    }
}

/// The command the shell is on.
struct Current {
    job: QueuedJob,
    n: u64,
    /// Its control line, to write again if the shell drops it.
    line: Vec<u8>,
    /// Its FIFOs, held until the shell has opened its ends (`S`).
    files: Option<Fifos>,
    /// Processes of the session before it started (spared by escalation).
    before: HashSet<u32>,
    /// Set once it is being killed.
    kill: Option<Escalation>,
    /// After an interrupt: when to look for processes that missed it, and
    /// how many more looks.
    recheck: Option<(Instant, u32)>,
}

struct Fifos {
    stdin: pipe::Sender,
    stdout: pipe::Receiver,
    stderr: pipe::Receiver,
}

/// Interrupt first, then signals to the command's processes, until the
/// shell reports the command ended.
struct Escalation {
    round: u32,
    next_at: Instant,
}

/// The task that owns a shell process and its queue.
pub(crate) struct ShellActor {
    shared: Arc<ShellShared>,
    pid: u32,
    control: pipe::Sender,
    status: pipe::Receiver,
    /// The shell's own stdout and stderr: only its top-level chatter, never
    /// a command's output.
    log: Option<pipe::Receiver>,
    records: Records,
    dir: DirGuard,
    ctl_rx: mpsc::Receiver<ShellCtl>,
    queue: VecDeque<QueuedJob>,
    current: Option<Current>,
    next_n: u64,
    idle_ttl: Option<Duration>,
    /// How long a closed shell stays listed.
    ttl: Option<Duration>,
    exit_watch: ExitWatch,
}

impl Drop for ShellActor {
    fn drop(&mut self) {
        // Dropped without closing (a runtime torn down under it): leave no
        // shell waiting for a command that will never come.
        if self.shared.status().closed.is_none() {
            kill_session(self.pid);
            let _ = process::try_reap(self.pid);
        }
    }
}

async fn at(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

async fn readable(p: &Option<pipe::Receiver>) -> io::Result<()> {
    match p {
        Some(p) => p.readable().await,
        None => std::future::pending().await,
    }
}

impl ShellActor {
    /// Runs the shell until it closes, then keeps its record listed for the
    /// TTL. Returns when the record should go.
    pub(crate) async fn run(mut self, shutdown: CancellationToken) {
        let mut idle_at = self.idle_ttl.map(|d| Instant::now() + d);
        let closed = loop {
            if self.current.is_none() {
                if let Some(job) = self.queue.pop_front() {
                    self.begin(job).await;
                    idle_at = None;
                    continue;
                }
                if idle_at.is_none() {
                    idle_at = self.idle_ttl.map(|d| Instant::now() + d);
                }
            }
            let escalate_at = self.current.as_ref().and_then(|c| c.kill.as_ref()).map(|k| k.next_at);
            let recheck_at = self.current.as_ref().and_then(|c| c.recheck).map(|(t, _)| t);
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    break self.close(CloseReason::Shutdown, "the daemon shut down".into(), None).await;
                }
                Some(ctl) = self.ctl_rx.recv() => match ctl {
                    ShellCtl::Submit { job, reply } => {
                        self.queued(job);
                        idle_at = None;
                        let _ = reply.send(Ok(()));
                    }
                    ShellCtl::Signal { id, sig, reply } => {
                        let _ = reply.send(self.signal(&id, sig));
                    }
                    ShellCtl::Kill { id, reason } => self.kill(&id, reason),
                    ShellCtl::Close { reply } => {
                        break self.close(CloseReason::Closed, "closed by a client".into(), Some(reply)).await;
                    }
                },
                r = self.status.readable() => {
                    let open = match r.and_then(|()| self.records.fill(&self.status)) {
                        Ok(open) => open,
                        Err(e) => {
                            tracing::warn!(shell = %self.shared.name, "status pipe failed: {e}");
                            false
                        }
                    };
                    while let Some(rec) = self.records.pop() {
                        self.record(parse(&rec)).await;
                    }
                    if !open {
                        break self.exited().await;
                    }
                }
                r = readable(&self.log) => {
                    let said = if r.is_ok() { read_available(self.log.as_ref().expect("polled")) } else { String::new() };
                    if said.is_empty() {
                        self.log = None;
                    } else {
                        tracing::debug!(shell = %self.shared.name, "shell said: {}", said.trim_end());
                    }
                }
                _ = at(recheck_at) => self.recheck_interrupt(),
                _ = at(escalate_at) => {
                    if !self.escalate() {
                        let msg = "a command could not be interrupted; the shell was killed".to_owned();
                        break self.close(CloseReason::Stuck, msg, None).await;
                    }
                }
                _ = at(idle_at), if self.current.is_none() => {
                    let msg = "nothing ran for its idle TTL".to_owned();
                    break self.close(CloseReason::IdleTtl, msg, None).await;
                }
            }
        };
        tracing::info!(shell = %self.shared.name, reason = ?closed, "shell closed");
        // Keep the closed shell listed (with its history) for the TTL,
        // unless it was closed on request.
        if closed == CloseReason::Closed {
            return;
        }
        let ttl_at = self.ttl.map(|d| Instant::now() + d);
        loop {
            tokio::select! {
                _ = at(ttl_at) => return,
                _ = shutdown.cancelled() => return,
                ctl = self.ctl_rx.recv() => match ctl {
                    None => return,
                    Some(ShellCtl::Close { reply }) => {
                        let _ = reply.send(());
                        return;
                    }
                    Some(ShellCtl::Submit { reply, .. }) => {
                        let _ = reply.send(Err(self.closed_error()));
                    }
                    Some(ShellCtl::Signal { id, reply, .. }) => {
                        let _ = reply.send(Err(ExecError::NotRunning(id)));
                    }
                    Some(ShellCtl::Kill { .. }) => {}
                },
            }
        }
    }

    fn closed_error(&self) -> ExecError {
        let why = self
            .shared
            .status()
            .closed
            .as_ref()
            .map_or_else(|| "it has closed".to_owned(), |c| c.message.clone());
        ExecError::ShellClosed { name: self.shared.name.clone(), why }
    }

    fn queued(&mut self, job: QueuedJob) {
        let (script, script_truncated) = cut(&job.script, HISTORY_SCRIPT_BYTES);
        {
            let mut st = self.shared.status();
            st.commands += 1;
            st.last_used = SystemTime::now();
            st.queued = self.queue.len() + 1;
            if st.history.len() == HISTORY_ENTRIES {
                st.history.pop_front();
            }
            st.history.push_back(HistoryEntry {
                id: job.id.clone(),
                script,
                script_truncated,
                state: JobState::Queued,
                exit_code: None,
                reason: None,
                submitted_at: SystemTime::now(),
                started_at: None,
                ended_at: None,
                cwd: None,
            });
        }
        self.queue.push_back(job);
    }

    /// Hands the next command to the shell: its script file and FIFOs, then
    /// its control line.
    async fn begin(&mut self, job: QueuedJob) {
        let n = self.next_n;
        self.next_n += 1;
        {
            let mut st = self.shared.status();
            st.queued = self.queue.len();
            st.running = Some(job.id.clone());
            st.state = ShellState::Busy;
        }
        let files = match self.prepare(n, &job.script) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(shell = %self.shared.name, id = %job.id, "cannot hand the command to the shell: {e}");
                self.end_job(&job, None, None, None, Some(ExitReason::SpawnFailed));
                self.clean(n);
                self.idle();
                return;
            }
        };
        let line = format!(
            "\\__tether_s {n}; {{ \\__tether_b; \\. \"$__tether_D/run\" 3>&-; }} \
             <\"$__tether_D/{n}.in\" >\"$__tether_D/{n}.out\" 2>\"$__tether_D/{n}.err\"\n"
        )
        .into_bytes();
        // Taken before the shell can read the line, so every process the
        // command starts is new (taken at `S`, a fast command may already
        // have forked).
        let before = self.descendants(|_| true).into_iter().collect();
        if let Err(e) = self.control.write_all(&line).await {
            // The shell is gone; its status pipe reports that next.
            tracing::warn!(shell = %self.shared.name, "control pipe: {e}");
        }
        self.current = Some(Current { job, n, line, files: Some(files), before, kill: None, recheck: None });
    }

    /// Writes command `n`'s script and makes and opens its FIFOs: the
    /// readers non-blocking and stdin read-write, so that the shell's opens
    /// of the other ends never block.
    fn prepare(&self, n: u64, script: &str) -> io::Result<Fifos> {
        use std::os::unix::fs::OpenOptionsExt;
        let d = self.dir.path();
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(d.join(format!("{n}.sh")))?;
        io::Write::write_all(&mut f, script.as_bytes())?;
        drop(f);
        for x in ["in", "out", "err"] {
            process::mkfifo(&d.join(format!("{n}.{x}")), 0o600)?;
        }
        let stdout = pipe::OpenOptions::new().open_receiver(d.join(format!("{n}.out")))?;
        let stderr = pipe::OpenOptions::new().open_receiver(d.join(format!("{n}.err")))?;
        process::grow_pipe(&stdout, 1 << 20);
        process::grow_pipe(&stderr, 1 << 20);
        let stdin = pipe::OpenOptions::new().read_write(true).open_sender(d.join(format!("{n}.in")))?;
        Ok(Fifos { stdin, stdout, stderr })
    }

    /// Removes command `n`'s files (open FIFO ends keep working).
    fn clean(&self, n: u64) {
        let d = self.dir.path();
        for x in ["sh", "in", "out", "err"] {
            let _ = std::fs::remove_file(d.join(format!("{n}.{x}")));
        }
    }

    async fn record(&mut self, rec: Record) {
        match rec {
            Record::Started(n) => {
                let Some(cur) = self.current.as_mut().filter(|c| c.n == n) else { return };
                let Some(files) = cur.files.take() else { return };
                let _ = cur
                    .job
                    .events
                    .send(JobEvent::Started {
                        stdin: files.stdin,
                        stdout: files.stdout,
                        stderr: files.stderr,
                    })
                    .await;
                let id = cur.job.id.clone();
                self.shared.entry(&id, |e| {
                    e.state = JobState::Running;
                    e.started_at = Some(SystemTime::now());
                });
                let d = self.dir.path();
                for x in ["in", "out", "err"] {
                    let _ = std::fs::remove_file(d.join(format!("{n}.{x}")));
                }
                // Asked to die before it started: interrupt it now.
                if self.current.as_ref().is_some_and(|c| c.kill.is_some()) {
                    let _ = self.interrupt();
                }
            }
            Record::Ended { n, rc, cwd } => {
                let Some(cur) = self.current.take_if(|c| c.n == n) else { return };
                self.end_job(&cur.job, Some(rc), None, Some(cwd.clone()), None);
                self.shared.status().cwd = cwd;
                self.clean(n);
                self.idle();
            }
            Record::Ready => {
                let Some(cur) = &self.current else { return };
                if cur.files.is_some() {
                    if cur.kill.is_some() {
                        // Dropped by an interrupt before it ran: that is
                        // the kill done.
                        let cur = self.current.take().expect("checked");
                        self.end_job(&cur.job, None, None, None, None);
                        self.clean(cur.n);
                        self.idle();
                    } else {
                        // A stray SIGINT made the shell drop the line
                        // before running it: nothing of it ran, send it
                        // again.
                        let line = cur.line.clone();
                        let _ = self.control.write_all(&line).await;
                    }
                } else {
                    // The command's bookkeeping was clobbered by user code.
                    let cur = self.current.take().expect("checked");
                    self.end_job(&cur.job, None, None, None, None);
                    self.clean(cur.n);
                    self.idle();
                }
            }
            Record::Unknown => tracing::warn!(shell = %self.shared.name, "unknown status record"),
        }
    }

    fn idle(&mut self) {
        let mut st = self.shared.status();
        st.running = None;
        st.state = ShellState::Idle;
        st.last_used = SystemTime::now();
    }

    /// Tells a command's actor that it ended and records it in the history.
    fn end_job(
        &self,
        job: &QueuedJob,
        code: Option<i32>,
        signal: Option<i32>,
        cwd: Option<String>,
        reason: Option<ExitReason>,
    ) {
        self.shared.entry(&job.id, |e| {
            e.state = JobState::Exited;
            e.exit_code = code;
            e.ended_at = Some(SystemTime::now());
            e.cwd = cwd.clone();
            e.reason = reason;
        });
        // The actor's channel has room: it holds at most a start and an end.
        let _ = job.events.try_send(JobEvent::Ended { code, signal, cwd, reason });
    }

    fn signal(&mut self, id: &str, sig: i32) -> Result<(), ExecError> {
        let Some(cur) = self.current.as_ref().filter(|c| c.job.id == id && c.files.is_none()) else {
            return Err(ExecError::NotRunning(id.to_owned()));
        };
        let os_err = |source| ExecError::Io { context: "kill(2)", source };
        if sig == libc::SIGINT {
            return self.interrupt().map_err(os_err);
        }
        if sig == libc::SIGQUIT {
            // What a terminal's Ctrl-\ does.
            return process::signal_group(self.pid, sig).map_err(os_err);
        }
        process::signal_pids(&self.own_processes(cur), sig);
        Ok(())
    }

    /// What a terminal's Ctrl-C does: SIGINT to the shell and its
    /// foreground processes (background jobs ignore it). Then a few looks
    /// for processes that missed it (see [`ShellActor::recheck_interrupt`]).
    fn interrupt(&mut self) -> io::Result<()> {
        if let Some(cur) = self.current.as_mut() {
            cur.recheck = Some((Instant::now() + RECHECK_EVERY, RECHECKS));
        }
        process::signal_group(self.pid, libc::SIGINT)
    }

    /// A SIGINT that reaches the shell while it is between forking a child
    /// and waiting for it can be lost for the child: the child is not yet
    /// in its own program (it handles the signal with the shell's handler
    /// and goes on to exec), and the shell, which noted it, waits for that
    /// child for ever (seen with `echo x; sleep 1000` interrupted at once).
    /// A process of the command's group that is still alive with SIGINT at
    /// its default action cannot have received it: send it again to those
    /// only. Programs that catch or ignore SIGINT are left alone.
    fn recheck_interrupt(&mut self) {
        let Some(cur) = self.current.as_ref() else { return };
        let missed: Vec<u32> = self
            .own_processes(cur)
            .into_iter()
            .filter(|&p| process::pgid_of(p) == Some(self.pid) && process::sigint_default(p))
            .collect();
        if !missed.is_empty() {
            tracing::debug!(shell = %self.shared.name, ?missed, "interrupt missed: sending SIGINT again");
            process::signal_pids(&missed, libc::SIGINT);
        }
        let Some(cur) = self.current.as_mut() else { return };
        cur.recheck = match cur.recheck {
            Some((_, n)) if n > 1 => Some((Instant::now() + RECHECK_EVERY, n - 1)),
            _ => None,
        };
    }

    /// The running command's processes: members of the session, other than
    /// the shell, started after it began, whose ancestry reaches the shell
    /// without passing through a process that existed before (a background
    /// job of an earlier command).
    fn own_processes(&self, cur: &Current) -> Vec<u32> {
        self.descendants(|p| !cur.before.contains(&p))
    }

    /// The shell's descendants, walking down from it into the processes
    /// `enter` accepts only. A few small reads per process of the tree,
    /// not a scan of every process on the host. A process reparented away
    /// from the shell (its parent died) is not found.
    fn descendants(&self, enter: impl Fn(u32) -> bool) -> Vec<u32> {
        let mut out = Vec::new();
        let mut stack = vec![self.pid];
        while let Some(p) = stack.pop() {
            for c in process::children(p) {
                if enter(c) && out.len() < MAX_TREE {
                    out.push(c);
                    stack.push(c);
                }
            }
        }
        out
    }

    fn kill(&mut self, id: &str, reason: ExitReason) {
        if let Some(i) = self.queue.iter().position(|j| j.id == id) {
            let job = self.queue.remove(i).expect("found");
            self.shared.status().queued = self.queue.len();
            self.end_job(&job, None, None, None, Some(reason));
            return;
        }
        let pid = self.pid;
        let Some(cur) = self.current.as_mut().filter(|c| c.job.id == id) else { return };
        if cur.kill.is_some() {
            return;
        }
        cur.kill = Some(Escalation { round: 0, next_at: Instant::now() + cur.job.kill_grace });
        if cur.files.is_none() {
            let _ = self.interrupt();
        } else {
            // Not started yet: the interrupt makes the shell drop the line
            // (an `R` follows), or stops the command as it begins.
            let _ = process::signal_group(pid, libc::SIGINT);
        }
    }

    /// One more escalation round; false when the command is stuck.
    fn escalate(&mut self) -> bool {
        let Some(cur) = self.current.as_ref() else { return true };
        let procs = self.own_processes(cur);
        let Some(cur) = self.current.as_mut() else { return true };
        let Some(k) = cur.kill.as_mut() else { return true };
        k.round += 1;
        if k.round > ESCALATION_ROUNDS {
            return false;
        }
        k.next_at = Instant::now() + cur.job.kill_grace;
        let sig = if k.round == 1 { libc::SIGTERM } else { libc::SIGKILL };
        process::signal_pids(&procs, sig);
        // Once a foreground program dies the shell goes on with the next
        // statement of the script: interrupt that too.
        let _ = self.interrupt();
        true
    }

    /// The shell exited by itself: its status pipe reached end of file.
    async fn exited(&mut self) -> CloseReason {
        let r = self.reap(Duration::from_secs(5)).await;
        let (code, signal) = r.map_or((None, None), |r| (r.code, r.signal));
        let message = match (code, signal) {
            (Some(c), _) => format!("the shell exited with code {c}"),
            (None, Some(s)) => format!("the shell was killed by signal {s}"),
            (None, None) => "the shell ended".to_owned(),
        };
        if let Some(cur) = self.current.take() {
            if cur.files.is_none() {
                // It ran and ended the shell (`exit 3`): its status is the
                // shell's.
                self.end_job(&cur.job, code, signal, None, None);
            } else {
                self.end_job(&cur.job, None, None, None, Some(ExitReason::ShellClosed));
            }
        }
        self.finish(ShellClosed { reason: CloseReason::Exited, code, signal, message });
        CloseReason::Exited
    }

    /// Kills every process of the shell's session and reaps the shell.
    async fn close(
        &mut self,
        reason: CloseReason,
        message: String,
        reply: Option<oneshot::Sender<()>>,
    ) -> CloseReason {
        kill_session(self.pid);
        let r = self.reap(Duration::from_secs(5)).await;
        if let Some(cur) = self.current.take() {
            self.end_job(&cur.job, None, None, None, Some(ExitReason::ShellClosed));
        }
        let (code, signal) = r.map_or((None, None), |r| (r.code, r.signal));
        self.finish(ShellClosed { reason, code, signal, message });
        if let Some(reply) = reply {
            let _ = reply.send(());
        }
        reason
    }

    /// After the shell is gone: ends queued commands, kills what is left of
    /// its session, frees the directory.
    fn finish(&mut self, closed: ShellClosed) {
        // Background jobs die with their shell (only `setsid` ones escape).
        kill_session(self.pid);
        for job in std::mem::take(&mut self.queue) {
            self.end_job(&job, None, None, None, Some(ExitReason::ShellClosed));
        }
        self.shared.linger.cancel();
        drop(std::mem::replace(&mut self.dir, DirGuard(None)));
        let mut st = self.shared.status();
        st.state = ShellState::Closed;
        st.queued = 0;
        st.running = None;
        st.closed = Some(closed);
    }

    /// Waits (bounded) for the shell process to exit and reaps it.
    async fn reap(&mut self, limit: Duration) -> Option<Reaped> {
        let deadline = Instant::now() + limit;
        loop {
            match process::try_reap(self.pid) {
                Ok(Some(r)) => return Some(r),
                Ok(None) => {}
                Err(_) => return None,
            }
            if tokio::time::timeout_at(deadline, self.exit_watch.ready()).await.is_err() {
                tracing::warn!(shell = %self.shared.name, "shell did not exit: killing it");
                kill_session(self.pid);
                process::signal_pids(&[self.pid], libc::SIGKILL);
                return tokio::task::spawn_blocking({
                    let pid = self.pid;
                    move || process::wait_blocking(pid)
                })
                .await
                .ok()
                .and_then(|r| r.ok())
                .map(|()| Reaped::unknown());
            }
        }
    }
}

/// SIGKILL to every process of the session (the shell, its jobs, their
/// children), twice, for one forked between the scan and the signals.
fn kill_session(sid: u32) {
    for _ in 0..2 {
        process::signal_pids(&process::session_members(sid), libc::SIGKILL);
    }
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn cut(s: &str, max: usize) -> (String, bool) {
    if s.len() <= max {
        return (s.to_owned(), false);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    (s[..end].to_owned(), true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_records() {
        assert_eq!(parse(b"R"), Record::Ready);
        assert_eq!(parse(b"S 12"), Record::Started(12));
        assert_eq!(parse(b"E 3 130 /tmp/a b\nc"), Record::Ended { n: 3, rc: 130, cwd: "/tmp/a b\nc".into() });
        assert_eq!(parse(b"E 3 0 "), Record::Ended { n: 3, rc: 0, cwd: String::new() });
        assert_eq!(parse(b"E x"), Record::Unknown);
        assert_eq!(parse(b"?"), Record::Unknown);
    }

    #[test]
    fn names() {
        assert!(valid_name("dev"));
        assert!(valid_name("a.b_c-1"));
        assert!(!valid_name(""));
        assert!(!valid_name(".."));
        assert!(!valid_name("a/b"));
        assert!(!valid_name(&"x".repeat(65)));
        assert!(valid_name(&new_name()));
    }

    #[test]
    fn cuts_at_char_boundary() {
        assert_eq!(cut("héllo", 2), ("h".to_owned(), true));
        assert_eq!(cut("abc", 3), ("abc".to_owned(), false));
    }
}
