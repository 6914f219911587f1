//! One command: the public types, the handle, the subscriptions through
//! which clients read its output, and the actor task that owns its process.
//!
//! # Layout
//! - `handle`: [`CommandHandle`], what the manager and connections hold.
//! - `shared`: the state the actor shares with handles and subscriptions.
//! - `subscription`: [`Subscription`] and [`PaceRef`].
//! - `build`: a command's parts from a spawned process or a frozen record.
//! - `actor`: the task that owns the process: its two phases' loops.
//! - `control`: the actor's answers to signals, kills, resizes, screens.
//! - `ending`: reaping, deadlines, kills, leftovers, the exit record.
//! - `drain`: reading output into the rings (pacing, output limit).
//! - `freeze`: a command's record and fds for a handover.
//! - `stdin_writer`: the task that writes clients' bytes to stdin.
//! - `source`: reading the output pipes or terminal master.
//! - `pacing`: the readers a command waits for, and how far it may run
//!   ahead of them.
//! - `state`: [`LiveState`](state::LiveState), everything the actor's loop
//!   mutates, with a method per transition.
//! - `model`: a terminal command's screen model task.

mod actor;
mod build;
mod control;
mod drain;
mod ending;
mod freeze;
mod handle;
mod model;
mod pacing;
mod shared;
mod source;
mod state;
mod stdin_writer;
mod subscription;

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::ExecError;
use crate::handover::Frozen;
use crate::spec::TermSize;

pub(crate) use actor::Actor;
pub(crate) use build::{Lifetimes, Meta, Spawned, SpawnedIo, new_command, thaw};
pub use handle::CommandHandle;
pub(crate) use shared::Identity;
pub(crate) use state::LiveState;
pub use subscription::{PaceRef, Subscription};

/// An output stream of a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stream {
    /// File descriptor 1.
    Stdout,
    /// File descriptor 2.
    Stderr,
}

impl Stream {
    /// The stream of ring `i` (0: stdout, 1: stderr).
    pub(crate) fn from_index(i: usize) -> Stream {
        if i == 0 { Stream::Stdout } else { Stream::Stderr }
    }

    /// `"stdout"` or `"stderr"`.
    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
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

impl ExitInfo {
    /// The exit code a shell would report: the code, else `128 + signal`
    /// (a kill gives 137), else 255.
    pub fn shell_code(&self) -> i32 {
        match (self.code, self.signal) {
            (Some(c), _) => c,
            (None, Some(s)) => 128 + s,
            (None, None) => 255,
        }
    }
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
    /// Kill it if it runs and end its actor; the sender is dropped once
    /// the command's slot and memory are given back.
    Remove(oneshot::Sender<()>),
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
    /// Start the stdin writer if it has not started. Boxed: a runtime
    /// handle would make every message (and every command's channel block
    /// of 32 of them) 8 bytes larger.
    OpenStdin(Box<OpenStdin>),
}

/// Start the stdin writer if it has not started, on `on` (the first
/// writer's runtime); the reply is its queue (`None`: stdin is gone, the
/// command has ended).
pub(crate) struct OpenStdin {
    pub(crate) on: tokio::runtime::Handle,
    pub(crate) reply: oneshot::Sender<Option<mpsc::Sender<stdin_writer::StdinMsg>>>,
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
