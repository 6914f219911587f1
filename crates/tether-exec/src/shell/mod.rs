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
//!
//! # Layout
//! - this file: the public types, [`ShellHandle`], the messages between a
//!   shell's actor and its commands' actors.
//! - `bootstrap`: spawning bash with its pipes and fd 3, the bootstrap
//!   script, each command's script file and FIFOs.
//! - `records`: the status records bash writes on fd 3, read and parsed.
//! - `actor`: `ShellActor`, the task that owns the shell and its queue.
//! - `kill`: signals, interrupt re-sends, escalation to SIGTERM and SIGKILL.

mod actor;
mod bootstrap;
mod freeze;
mod kill;
mod records;

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::net::unix::pipe;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::ExecError;
use crate::command::ExitReason;
use crate::spec::Lifetime;

pub(crate) use bootstrap::{Started, start};
pub(crate) use freeze::{FrozenShell, thaw};
pub(crate) use kill::kill_session;

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
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum JobState {
    /// Waiting for the commands before it.
    Queued,
    /// Running.
    Running,
    /// Ended (or dropped before it ran).
    Exited,
}

/// One command in a shell's history.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
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

    /// Stops an idle shell's actor without touching its process, for the
    /// next daemon: its state and the fds it owned. `None` when it is not
    /// idle (a command running or queued, a background job left): it is
    /// closed instead.
    pub(crate) async fn freeze(&self) -> Option<(FrozenShell, Vec<std::os::fd::OwnedFd>)> {
        let (reply, rx) = oneshot::channel();
        self.shared.ctl.send(ShellCtl::Freeze { reply }).await.ok()?;
        rx.await.ok().flatten()
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
    /// Hand an idle shell over to the next daemon (see [`ShellHandle::freeze`]).
    Freeze { reply: oneshot::Sender<Option<(FrozenShell, Vec<std::os::fd::OwnedFd>)>> },
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
