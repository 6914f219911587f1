//! What the daemon reports about commands and named shells: how a command
//! ended ([`ExitStatus`]), listings ([`CommandInfo`], [`ShellInfo`]) and a
//! shell's history.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::defaults::is_false;
use crate::{CommandId, TermSize};

/// Why a command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitReason {
    /// It exited or was killed by a signal nobody at tether sent.
    Exited,
    /// The wall-clock `timeout_ms` fired.
    TimedOut,
    /// No client was attached for `idle_timeout_ms`.
    IdleTimeout,
    /// A client sent `kill` (or `remove`), or the daemon shut down.
    Killed,
    /// `kill_on_disconnect` and the last client went away.
    Disconnected,
    /// `max_output_bytes` was passed with action `kill`.
    OutputLimit,
    /// The process could not be started. Not sent by v1 daemons (a failed
    /// `start` is answered with an `error`); reserved for detached starts.
    SpawnFailed,
    /// A shell command that never ran, or was cut off, because its shell
    /// closed.
    ShellClosed,
    /// A reason this client does not know (sent by a newer daemon).
    #[serde(other)]
    Unknown,
}

/// How a command ended, with its resource usage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// Exit code, if it exited normally.
    pub code: Option<i32>,
    /// Terminating signal number, if a signal ended it.
    pub signal: Option<i32>,
    /// Whether it dumped core.
    pub core_dumped: bool,
    /// Why it ended.
    pub reason: ExitReason,
    /// Wall time from spawn to exit, in milliseconds.
    pub wall_ms: u64,
    /// User CPU time, in microseconds.
    pub user_us: u64,
    /// System CPU time, in microseconds.
    pub sys_us: u64,
    /// Peak resident set size, in KiB.
    pub max_rss_kb: u64,
    /// Total bytes written to stdout (its final end offset).
    pub stdout_bytes: u64,
    /// Total bytes written to stderr (its final end offset).
    pub stderr_bytes: u64,
    /// Whether output past `max_output_bytes` was dropped.
    pub truncated: bool,
    /// Shell commands: the working directory the shell was in when the
    /// command ended (lossy UTF-8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
}

impl ExitStatus {
    /// The conventional shell exit code: the code, or 128 + signal.
    pub fn shell_code(&self) -> i32 {
        shell_code(self.code, self.signal)
    }
}

/// The conventional shell exit code of a command that ended with `code` or
/// by `signal`: the code, else `128 + signal` (a kill gives 137), else 255.
pub fn shell_code(code: Option<i32>, signal: Option<i32>) -> i32 {
    match (code, signal) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        (None, None) => 255,
    }
}

/// Lifecycle state of a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandState {
    /// A shell command waiting for the commands before it in its shell.
    Queued,
    /// The process is alive (for a shell command: the shell runs it).
    Running,
    /// The process has ended; its output stays attachable until the TTL.
    Exited,
}

/// Offsets of one stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamInfo {
    /// First offset still held in the ring.
    pub first_held: u64,
    /// Offset one past the last byte produced so far.
    pub end: u64,
}

/// A command as shown by `list` and `status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandInfo {
    /// Its id.
    pub command: CommandId,
    /// Client-chosen name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Client-chosen labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The argv actually executed (for `shell`, the shell and its `-c`),
    /// each element at most [`LIST_ARGV_ITEM_BYTES`] and all of them at
    /// most [`LIST_ARGV_BYTES`].
    pub argv: Vec<String>,
    /// Whether `argv` was cut to those limits.
    #[serde(default, skip_serializing_if = "is_false")]
    pub argv_truncated: bool,
    /// Process id.
    pub pid: u32,
    /// Queued, running or exited.
    pub state: CommandState,
    /// Start time, milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    /// Exit status, once exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitStatus>,
    /// Stdout offsets.
    pub stdout: StreamInfo,
    /// Stderr offsets.
    pub stderr: StreamInfo,
    /// Number of attached clients.
    pub attached: u32,
    /// For a PTY command, its current terminal size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pty: Option<TermSize>,
    /// For a shell command, the name of the shell it was submitted to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<String>,
}

/// A named shell as shown by `shell` and `shell_list`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShellInfo {
    /// Its name.
    pub name: String,
    /// The shell program, e.g. `bash`.
    pub program: String,
    /// The shell's process id.
    pub pid: u32,
    /// Idle, busy or closed.
    pub state: ShellState,
    /// The working directory the last command ended in, or the initial one
    /// (lossy UTF-8).
    pub cwd: String,
    /// Number of commands waiting for the running one.
    pub queued: u32,
    /// The command the shell is running, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<CommandId>,
    /// Number of commands submitted to the shell so far.
    pub commands: u64,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// When the shell was last used (a command submitted or ended),
    /// milliseconds since the Unix epoch; `idle_ttl_ms` counts from it.
    pub last_used_ms: u64,
    /// Why and how the shell closed, once closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed: Option<ShellClosed>,
}

/// Lifecycle state of a named shell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShellState {
    /// Alive, running nothing.
    Idle,
    /// Alive, running a command.
    Busy,
    /// Gone; it accepts no more commands.
    Closed,
    /// A state this client does not know (sent by a newer daemon).
    #[serde(other)]
    Unknown,
}

/// How a named shell closed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShellClosed {
    /// Why it closed.
    pub reason: ShellCloseReason,
    /// The shell's exit code, if it exited normally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    /// The signal number that ended the shell, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// Human-readable explanation.
    pub message: String,
}

/// Why a named shell closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShellCloseReason {
    /// A client sent `shell_close`.
    Closed,
    /// The shell exited by itself (`exit 3`, a failure under `set -e`,
    /// `exec prog`); `code` or `signal` says how.
    Exited,
    /// Nothing was queued, running or submitted for `idle_ttl_ms`.
    IdleTtl,
    /// A command could not be interrupted, so the shell was killed.
    Stuck,
    /// The daemon shut down.
    Shutdown,
    /// A reason this client does not know (sent by a newer daemon).
    #[serde(other)]
    Unknown,
}

/// One command of a named shell's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The command's id (it answers `not_found` once its TTL has passed).
    pub command: CommandId,
    /// The script: at most its first 4096 bytes, cut at a char boundary.
    pub script: String,
    /// Whether `script` was cut.
    #[serde(default, skip_serializing_if = "is_false")]
    pub script_truncated: bool,
    /// Queued, running or exited.
    pub state: CommandState,
    /// The command's exit code (the shell's `$?` after the script), once it
    /// ended with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Why it ended, once it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<ExitReason>,
    /// Submission time, milliseconds since the Unix epoch.
    pub submitted_at_ms: u64,
    /// Start time, milliseconds since the Unix epoch, once it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at_ms: Option<u64>,
    /// End time, milliseconds since the Unix epoch, once it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at_ms: Option<u64>,
    /// The working directory the shell was in when the command ended
    /// (lossy UTF-8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_shell_states_and_reasons_decode_as_unknown() {
        let state: ShellState = serde_json::from_str(r#""starting""#).expect("decodes");
        assert_eq!(state, ShellState::Unknown);
        let reason: ShellCloseReason = serde_json::from_str(r#""oom""#).expect("decodes");
        assert_eq!(reason, ShellCloseReason::Unknown);
    }
}
