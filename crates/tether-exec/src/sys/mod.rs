//! Operating-system plumbing, and the only module of the crate allowed
//! `unsafe` code: waiting for and signalling processes (through pidfds where
//! the daemon remembers a process), walking `/proc`, file descriptors,
//! terminals, the handover mapping, what a child does between fork and exec.
//!
//! Most calls go through `rustix`, which wraps them safely. What stays
//! `unsafe` here has no safe wrapper: `wait4` (rustix has no resource
//! usage), `sigaction`, `mmap`, the `pre_exec` closures, taking ownership of
//! an fd number inherited across exec, and signal numbers rustix does not
//! name (real-time ones). Each such block says why it is sound.
//!
//! # Layout
//! - `child`: [`Process`] (a child the daemon waits for, held through a
//!   pidfd, waited on through the same fd), [`Reaped`], the leader registry, the subreaper
//!   and its orphan reaper.
//! - `signal`: sending signals, parsing their names, the daemon's own
//!   signal actions.
//! - `proc`: reading `/proc`: the one process-tree walker, sessions,
//!   environments.
//! - `fd`: descriptor flags, duplicates, fds inherited across exec, pipes,
//!   FIFOs, the memfd and its mapping, a socket's unacknowledged bytes.
//! - `tty`: window size, foreground group, end-of-file character.
//! - `spawn`: what a child does before it execs (new session, controlling
//!   terminal, fd 3, joining a cgroup).
//! - `dir`: [`PrivateDir`], a directory only the daemon's user can enter.

mod child;
mod dir;
mod fd;
mod proc;
mod signal;
mod spawn;
mod tty;
mod vspawn;

pub(crate) use child::{
    Process, Reaped, become_subreaper, is_leader, reap_orphans, wait_blocking, wait_exit_code,
};
pub use dir::PrivateDir;
pub use fd::socket_unacked;
pub(crate) use fd::{
    Mapped, cloexec_inherited_fds, close_on_exec, dup_fd, dup_nonblocking, grow_pipe, keep_on_exec, memfd,
    mkfifo, raise_fd_limit, register_file, release_free_memory, take_inherited_fd,
};
pub(crate) use proc::{
    all_pids, children, descendants_where, env_has, env_value, environ, pgid_of, running, session_members,
    sigint_default,
};
pub(crate) use signal::{
    catch_inherited_ignores, ignore_signals, kill_trees, parse_signal, restore_signals, signal_group,
    signal_pids, signal_tree, signal_tree_remembered,
};
pub(crate) use spawn::{is_cgroup2_fs, new_session_with_fd3};
pub(crate) use tty::{foreground_group, set_winsize, veof};
pub(crate) use vspawn::{CgroupPaths, Piped, Plan, reserve_spawn_slots, spawn_on_terminal, spawn_piped};
