//! The tether command manager.
//!
//! Every command is a live process in its own process group whose stdout
//! and stderr are drained at all times, attached or not, into per-stream
//! ring buffers addressed by absolute byte offsets. Any number of
//! [`Subscription`]s read those rings from their own offsets; a reader that
//! falls behind gets an explicit [`Event::Gap`], never slows the process,
//! and holds no buffered data of its own.
//!
//! Each command is an actor task that owns its child, its pipes and the
//! writing side of its rings, and `select!`s over control messages, child
//! exit (a pidfd), pipe readiness, deadlines (timeout, idle timeout, kill
//! grace, drain grace) and manager shutdown. The [`Manager`] maps ids to
//! cheap [`CommandHandle`]s.
//!
//! This crate knows nothing of WebSocket or of the wire types.
//!
//! # Layout
//! - `spec`: [`CommandSpec`], [`ManagerConfig`] and their option types.
//! - `manager`: [`Manager`]: validation, spawning, the registry, limits.
//! - `command`: the actor, [`CommandHandle`], [`Subscription`], [`Event`].
//! - `pty`: pseudo-terminals: spawning a session on one, the non-blocking
//!   master, the screen model that restores a viewer's screen.
//! - `shell`: named shells: one long-lived bash per name running queued
//!   scripts one at a time; each script is a command like any other.
//! - `handover`: a daemon's commands (state and fds) handed to the daemon
//!   that re-executes it: [`Manager::handover`], [`Manager::resume`].
//! - `ring`: the offset-addressed ring buffer.
//! - `stdin`: resumable stdin: per-writer byte counts that make a resend
//!   after a reconnect drop what the command already has.
//! - `contain`: which processes are a command's (cgroup v2 leaf, process
//!   group and tree, environment marker), killing what it leaves, the
//!   crash sweep.
//! - `process`: pidfd, `wait4`, signalling a process tree, the subreaper
//!   and its orphan reaper, joining a cgroup (the only `unsafe` code in
//!   the workspace).
//! - `error`: [`ExecError`].

mod command;
mod contain;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod handover;
mod manager;
mod process;
mod pty;
mod ring;
mod shell;
mod spec;
mod stdin;

pub use command::{
    CommandHandle, CommandInfo, Event, ExitInfo, ExitReason, PaceRef, Screen, ScreenAttach, Stream,
    Subscription,
};
pub use contain::{COMMAND_ID_ENV, CgroupChoice, ContainConfig, Leftovers, SEAT_ENV, check_cgroup};
pub use error::ExecError;
pub use handover::Handover;
pub use manager::{MIN_RING_BYTES, Manager};
pub use shell::{
    CloseReason, HISTORY_ENTRIES, HISTORY_SCRIPT_BYTES, HistoryEntry, JobState, ShellClosed, ShellHandle,
    ShellInfo, ShellSpec, ShellState,
};
pub use spec::{CommandSpec, Lifetime, ManagerConfig, OutputLimit, Program, PtyOptions, TermSize};
pub use stdin::StdinSeq;
