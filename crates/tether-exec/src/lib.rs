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
//!   `bootstrap` starts the bash and makes each command's files,
//!   `records` parses what it reports on fd 3, `actor` owns it and its
//!   queue, `kill` interrupts and escalates.
//! - `handover`: a daemon's commands (state and fds) handed to the daemon
//!   that re-executes it: [`Manager::handover`], [`Manager::resume`].
//! - `ring`: the offset-addressed ring buffer.
//! - `stdin`: resumable stdin: per-writer byte counts that make a resend
//!   after a reconnect drop what the command already has.
//! - `contain`: which processes are a command's (cgroup v2 leaf, process
//!   group and tree, environment marker), killing what it leaves, the
//!   crash sweep.
//! - `sys`: the operating system, and the only module with `unsafe` code:
//!   children held through pidfds (waiting, signalling without hitting a
//!   reused pid), the one `/proc` tree walker, fds, terminals, the
//!   handover mapping, what a child does before exec (new session, cgroup
//!   join), the subreaper and its orphan reaper, [`PrivateDir`].
//! - `error`: [`ExecError`].

// Only `sys` may use `unsafe` (the workspace denies it); every other
// module forbids it outright, so that no `allow` can creep in.
#[forbid(unsafe_code)]
mod command;
#[forbid(unsafe_code)]
mod contain;
#[forbid(unsafe_code)]
mod error;
#[doc(hidden)]
#[forbid(unsafe_code)]
pub mod fuzzing;
#[forbid(unsafe_code)]
mod handover;
#[forbid(unsafe_code)]
mod manager;
#[forbid(unsafe_code)]
mod pty;
#[forbid(unsafe_code)]
mod ring;
#[forbid(unsafe_code)]
mod shell;
#[forbid(unsafe_code)]
mod spec;
#[forbid(unsafe_code)]
mod stdin;
#[allow(unsafe_code)]
mod sys;

/// The name `command`, `manager` and `handover` use for `sys` until they
/// switch to it.
pub use command::{
    CommandHandle, CommandInfo, Event, ExitInfo, ExitReason, PaceRef, Screen, ScreenAttach, Stream,
    Subscription,
};
pub use contain::{COMMAND_ID_ENV, CgroupChoice, ContainConfig, Leftovers, SEAT_ENV, check_cgroup};
pub use error::ExecError;
pub use handover::{Handover, OLDEST_READ as HANDOVER_OLDEST_READ, VERSION as HANDOVER_VERSION};
pub use manager::{MIN_RING_BYTES, Manager};
pub use shell::{
    CloseReason, HISTORY_ENTRIES, HISTORY_SCRIPT_BYTES, HistoryEntry, JobState, ShellClosed, ShellHandle,
    ShellInfo, ShellSpec, ShellState,
};
pub use spec::{CommandSpec, Lifetime, ManagerConfig, OutputLimit, Program, PtyOptions, TermSize};
pub use stdin::StdinSeq;
pub use sys::{PrivateDir, socket_unacked};
