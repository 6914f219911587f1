//! What a client asks to run: [`StartSpec`] for a command, [`ShellSpec`]
//! for a named shell and [`ShellRunSpec`] for a script in one, with the
//! terminal and output-limit settings they share.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Payload;
use crate::defaults::{is_false, is_true, yes};

/// What to run and with which lifetimes and limits. Every field but one of
/// `argv`/`shell` is optional; absent fields take the daemon's defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StartSpec {
    /// Program and arguments, run without a shell. Exclusive with `shell`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub argv: Vec<String>,
    /// A shell command line, run as `<shell_program> -c <shell>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shell: Option<String>,
    /// The shell for `shell` (default `/bin/bash`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shell_program: Option<String>,
    /// Working directory (default: the daemon's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Environment variables added to the daemon's environment.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Start from an empty environment instead of the daemon's.
    #[serde(skip_serializing_if = "is_false")]
    pub env_clear: bool,
    /// Bytes written to stdin first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdin: Option<Payload>,
    /// Close stdin after the initial bytes (the command sees EOF).
    #[serde(skip_serializing_if = "is_false")]
    pub close_stdin: bool,
    /// A client-chosen name, shown in listings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Client-chosen labels, shown in listings.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Wall-clock limit; past it the group gets SIGTERM, then SIGKILL after
    /// `kill_grace_ms`. Absent: no limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Kill the command after this long with no client attached; -1 never.
    /// Absent: the daemon default (300 s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_timeout_ms: Option<i64>,
    /// How long a finished command stays attachable; -1 until removed.
    /// Absent: the daemon default (600 s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<i64>,
    /// Kill the command when its last attached client detaches or vanishes.
    #[serde(skip_serializing_if = "is_false")]
    pub kill_on_disconnect: bool,
    /// Limit on stdout+stderr bytes; see `output_limit`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_output_bytes: Option<u64>,
    /// What happens past `max_output_bytes` (default `kill`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_limit: Option<OutputLimitAction>,
    /// Ring buffer size per stream (default: the daemon's, 1 MiB).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ring_bytes: Option<u64>,
    /// Time between SIGTERM and SIGKILL when a timeout fires (default 2 s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kill_grace_ms: Option<u64>,
    /// Attach the starting connection from offset 0 (default true).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub attach: bool,
    /// Pace the command to the starting connection's attachment: when that
    /// attachment falls half a ring behind, the daemon stops reading the
    /// command's output (the command blocks on its pipe) instead of letting
    /// the attachment miss bytes. For captured output (`tether exec`, SDK
    /// one-shot runs). Only this attachment paces; it stops pacing when it
    /// detaches or its connection goes.
    #[serde(skip_serializing_if = "is_false")]
    pub pace: bool,
    /// Run the command on a pseudo-terminal instead of pipes: stdin, stdout
    /// and stderr are the terminal; its output is the `stdout` stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pty: Option<PtySpec>,
    /// After the command's process exits, how long to keep reading output
    /// that a background process still writes (default: the daemon's,
    /// 250 ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain_grace_ms: Option<u64>,
    /// An idempotency key (1..=128 bytes): while a command started with the
    /// same key is held, the daemon answers with that command (`started`
    /// again, attached as asked) instead of starting a second one. A client
    /// that lost its connection with a `start` in flight sends it again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_key: Option<String>,
    /// Flow control for the starting attachment (see `attach.window_bytes`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_bytes: Option<u64>,
    /// The starting client's name (see `attach.client`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
}

/// A terminal size in character cells.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TermSize {
    /// Lines (1..=500).
    pub rows: u16,
    /// Columns (1..=500).
    pub cols: u16,
}

/// How to set up a command's pseudo-terminal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PtySpec {
    /// Lines (1..=500; default 24).
    #[serde(default = "default_rows")]
    pub rows: u16,
    /// Columns (1..=500; default 80).
    #[serde(default = "default_cols")]
    pub cols: u16,
    /// `TERM` for the command (default `xterm-256color`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<String>,
}

impl Default for PtySpec {
    fn default() -> Self {
        PtySpec { rows: default_rows(), cols: default_cols(), term: None }
    }
}

fn default_rows() -> u16 {
    24
}

fn default_cols() -> u16 {
    80
}

impl Default for StartSpec {
    fn default() -> Self {
        StartSpec {
            argv: Vec::new(),
            shell: None,
            shell_program: None,
            cwd: None,
            env: BTreeMap::new(),
            env_clear: false,
            stdin: None,
            close_stdin: false,
            name: None,
            labels: BTreeMap::new(),
            timeout_ms: None,
            idle_timeout_ms: None,
            ttl_ms: None,
            kill_on_disconnect: false,
            max_output_bytes: None,
            output_limit: None,
            ring_bytes: None,
            kill_grace_ms: None,
            attach: true,
            pace: false,
            pty: None,
            drain_grace_ms: None,
            request_key: None,
            window_bytes: None,
            client: None,
        }
    }
}

/// What the daemon does when a command's output passes `max_output_bytes`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputLimitAction {
    /// Kill the command; its exit reason is `output_limit`.
    #[default]
    Kill,
    /// Keep the command running, keep draining its pipes, store nothing more.
    Truncate,
}

/// How to create a named shell. Every field is optional; absent fields take
/// the daemon's defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ShellSpec {
    /// The shell's name: 1..=64 characters of `[A-Za-z0-9._-]`. Absent: the
    /// daemon generates an unguessable one (`sh-` and 16 hex digits).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The shell's initial working directory (default: the daemon's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Environment variables added to the daemon's environment.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// The shell program (default `bash`). It must be bash-compatible.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
    /// Close the shell after this long with nothing queued or running and no
    /// submission; -1 never. Absent: the daemon default (3600 s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_ttl_ms: Option<i64>,
}

/// A script to run in a named shell, with the command's lifetimes and
/// limits. The other fields mean what the [`StartSpec`] fields of the same
/// names mean, except that killing a running shell command starts with an
/// interrupt (see `timeout_ms` and `kill_grace_ms`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ShellRunSpec {
    /// The script: any text without NUL, possibly several lines (heredocs
    /// included). The shell runs it in its current state (working
    /// directory, variables, functions, options).
    pub script: String,
    /// Bytes written to the command's stdin first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdin: Option<Payload>,
    /// Close stdin after the initial bytes (the command sees EOF).
    #[serde(skip_serializing_if = "is_false")]
    pub close_stdin: bool,
    /// Client-chosen labels, shown in listings.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Wall-clock limit; past it the command is interrupted, then its
    /// processes killed (reason `timed_out`). The shell survives. Absent: no
    /// limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Kill the command after this long with no client attached; -1 never.
    /// Absent: the daemon default (300 s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_timeout_ms: Option<i64>,
    /// How long a finished command stays attachable; -1 until removed.
    /// Absent: the daemon default (600 s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<i64>,
    /// Kill the command when its last attached client detaches or vanishes.
    #[serde(skip_serializing_if = "is_false")]
    pub kill_on_disconnect: bool,
    /// Limit on stdout+stderr bytes; see `output_limit`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_output_bytes: Option<u64>,
    /// What happens past `max_output_bytes` (default `kill`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_limit: Option<OutputLimitAction>,
    /// Ring buffer size per stream (default: the daemon's, 1 MiB).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ring_bytes: Option<u64>,
    /// When the command is killed or times out: how long after the
    /// interrupt its processes get SIGTERM, then SIGKILL (default 2 s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kill_grace_ms: Option<u64>,
    /// Attach the submitting connection from offset 0 (default true).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub attach: bool,
    /// Pace the command to the submitting connection's attachment (see
    /// [`StartSpec::pace`]).
    #[serde(skip_serializing_if = "is_false")]
    pub pace: bool,
    /// After the shell reports the script's end, how long to keep reading
    /// what is still in its pipes (default: the daemon's, 250 ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain_grace_ms: Option<u64>,
    /// An idempotency key (see [`StartSpec::request_key`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_key: Option<String>,
    /// Flow control for the submitting attachment (see
    /// `attach.window_bytes`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_bytes: Option<u64>,
    /// The submitting client's name (see `attach.client`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
}

impl Default for ShellRunSpec {
    fn default() -> Self {
        ShellRunSpec {
            script: String::new(),
            stdin: None,
            close_stdin: false,
            labels: BTreeMap::new(),
            timeout_ms: None,
            idle_timeout_ms: None,
            ttl_ms: None,
            kill_on_disconnect: false,
            max_output_bytes: None,
            output_limit: None,
            ring_bytes: None,
            kill_grace_ms: None,
            attach: true,
            pace: false,
            drain_grace_ms: None,
            request_key: None,
            window_bytes: None,
            client: None,
        }
    }
}
