use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Payload;

/// A client-chosen request id. Every reply to a request (`started`,
/// `attached`, `ok`, `list`, `status`, `shell`, `shell_list`,
/// `shell_history`, `error`) echoes it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ReqId(pub u64);

/// A daemon-assigned command id, e.g. `c-5f0c9a7e21b34d08`. Opaque to clients.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CommandId(pub String);

impl fmt::Display for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for CommandId {
    fn from(s: &str) -> Self {
        CommandId(s.to_owned())
    }
}

/// An output stream of a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    /// Standard output (file descriptor 1).
    Stdout,
    /// Standard error (file descriptor 2).
    Stderr,
}

impl Stream {
    /// Both streams, stdout first.
    pub const ALL: [Stream; 2] = [Stream::Stdout, Stream::Stderr];

    /// 0 for stdout, 1 for stderr: an index into per-stream arrays.
    pub fn index(self) -> usize {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }
    }
}

/// Commands in a `list` page when the request gives no `limit`.
pub const LIST_DEFAULT_LIMIT: u32 = 100;

/// Most commands in one `list` page.
pub const LIST_MAX_LIMIT: u32 = 1000;

/// A `list` page ends early once its commands take about this many bytes
/// (at least one command per page): with names, labels and listed argv
/// bounded, no `list` frame is much larger.
pub const LIST_PAGE_BYTES: usize = 1 << 20;

/// Longest argv element shown in a listing (`list`, `status`): a longer one
/// is cut at a character boundary and `argv_truncated` is set.
pub const LIST_ARGV_ITEM_BYTES: usize = 4096;

/// Most bytes of argv shown in a listing for one command: past it the
/// remaining elements are left out and `argv_truncated` is set.
pub const LIST_ARGV_BYTES: usize = 16 * 1024;

/// Messages from a client to the daemon.
// `start` is larger than the rest; messages are short-lived, so no box.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMsg {
    /// Start a command. Answered by `started` (and, unless `spec.attach` is
    /// false, the command's output on this connection) or `error`.
    Start {
        /// Request id, echoed in the reply.
        id: ReqId,
        /// What to run and how.
        spec: StartSpec,
    },
    /// Attach this connection to a command from the given per-stream
    /// offsets. Answered by `attached`, then `gap`/`output` frames and a
    /// final `exit`, or by `error`.
    Attach {
        /// Request id, echoed in the reply.
        id: ReqId,
        /// The command to attach to.
        command: CommandId,
        /// Absolute stdout offset of the first byte wanted.
        #[serde(default)]
        stdout_offset: u64,
        /// Absolute stderr offset of the first byte wanted.
        #[serde(default)]
        stderr_offset: u64,
        /// If set, start each stream at most this many bytes before its end
        /// instead of at the given offset (`tether attach --tail N`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tail_bytes: Option<u64>,
        /// This attachment paces the command (see [`StartSpec::pace`]).
        #[serde(default, skip_serializing_if = "is_false")]
        pace: bool,
        /// PTY commands: restore the screen. The daemon sends a `screen`
        /// frame (the terminal as it is now) and output from its offset,
        /// unless `stdout_offset` is non-zero and still held, in which case
        /// output resumes from it exactly as without `screen` (a client
        /// whose terminal already shows everything before that offset).
        /// Ignored for pipe commands.
        #[serde(default, skip_serializing_if = "is_false")]
        screen: bool,
        /// PTY commands: this viewer's terminal size. It becomes the PTY's
        /// size (the newest viewer's size wins) before the screen is
        /// rendered.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size: Option<TermSize>,
        /// Flow control for this attachment: the daemon sends at most this
        /// many output bytes beyond what the client has acknowledged with
        /// `ack`. Absent: no window (the connection's queue is the only
        /// bound).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        window_bytes: Option<u64>,
        /// The attaching client's name (1..=64 bytes): with `pace`, a newer
        /// pacing attachment of the same client replaces its older ones.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client: Option<String>,
    },
    /// Set a PTY command's terminal size (the program gets SIGWINCH).
    /// Every attachment is told with `resized`. Answered by `ok`; a pipe
    /// command answers `bad_request`.
    Resize {
        /// Request id, echoed in the reply.
        id: ReqId,
        /// Target command.
        command: CommandId,
        /// The new size.
        size: TermSize,
    },
    /// Stop receiving a command's output on this connection. Answered by `ok`.
    Detach {
        /// Request id, echoed in the reply.
        id: ReqId,
        /// The command to detach from.
        command: CommandId,
    },
    /// Bytes for the command's stdin. Answered by `ok` once the bytes are
    /// written to the command's stdin (see `Limits::stdin_window_bytes`).
    Stdin {
        /// Request id, echoed in the reply.
        id: ReqId,
        /// Target command.
        command: CommandId,
        /// The bytes.
        data: Payload,
        /// Resumable stdin: who sends these bytes (a client-chosen name,
        /// 1..=64 bytes, the same for all of one client's stdin to this
        /// command). With `offset`, the daemon drops bytes it already has
        /// from this writer, so a client may resend after a reconnect.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        writer: Option<String>,
        /// Resumable stdin: the position of `data[0]` among the bytes this
        /// writer has sent to this command (0 for its first byte).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
    },
    /// Close the command's stdin (EOF), after all earlier `stdin` bytes.
    /// Answered by `ok`.
    CloseStdin {
        /// Request id, echoed in the reply.
        id: ReqId,
        /// Target command.
        command: CommandId,
        /// Resumable stdin: the writer that closes (see `stdin.writer`). A
        /// close repeated by the same writer at the same offset is answered
        /// `ok` and does nothing (on a terminal: types no second EOF).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        writer: Option<String>,
        /// Resumable stdin: how many bytes this writer had sent when it
        /// closed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
    },
    /// Flow control: the client has consumed a command's output up to these
    /// offsets. Only for attachments with `window_bytes`; never answered.
    Ack {
        /// Unused (0): `ack` is never answered.
        #[serde(default, skip_serializing_if = "is_zero_id")]
        id: ReqId,
        /// The command.
        command: CommandId,
        /// Stdout consumed up to here (exclusive).
        stdout_offset: u64,
        /// Stderr consumed up to here (exclusive).
        stderr_offset: u64,
    },
    /// Send a signal to the command's process group. Answered by `ok`.
    Signal {
        /// Request id, echoed in the reply.
        id: ReqId,
        /// Target command.
        command: CommandId,
        /// A name (`TERM`, `SIGINT`) or a number (`"9"`).
        signal: String,
    },
    /// Kill the command: SIGKILL to its process group and every descendant.
    /// Answered by `ok`; the `exit` (reason `killed`) follows on attachments.
    Kill {
        /// Request id, echoed in the reply.
        id: ReqId,
        /// Target command.
        command: CommandId,
    },
    /// List the commands, oldest first, one page at a time. Answered by
    /// `list`, whose `next` (when not null) is the `cursor` of the next
    /// page.
    List {
        /// Request id, echoed in the reply.
        id: ReqId,
        /// Most commands in the reply (1..=[`LIST_MAX_LIMIT`]). Absent:
        /// [`LIST_DEFAULT_LIMIT`]. The daemon may return fewer (a page is
        /// also bounded in bytes, see [`LIST_PAGE_BYTES`]), and `next` says
        /// whether more follow.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
        /// Where the page starts: the `next` of the previous page. Absent:
        /// the oldest command.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cursor: Option<String>,
    },
    /// One command's status. Answered by `status`.
    Status {
        /// Request id, echoed in the reply.
        id: ReqId,
        /// Target command.
        command: CommandId,
    },
    /// Forget a command (killing it first if it runs) and free its buffers.
    /// Answered by `ok`.
    Remove {
        /// Request id, echoed in the reply.
        id: ReqId,
        /// Target command.
        command: CommandId,
    },
    /// Create a named shell, or get the live shell of that name if there is
    /// one. Answered by `shell` or `error`.
    ShellCreate {
        /// Request id, echoed in the reply.
        id: ReqId,
        /// The shell's name and how to start it.
        spec: ShellSpec,
    },
    /// Queue a script in a named shell. Answered by `started` (the new
    /// command's id, `pid` = the shell's pid), then, unless `spec.attach` is
    /// false, the command's output on this connection exactly as for
    /// `start`; or by `error`.
    ShellRun {
        /// Request id, echoed in the reply.
        id: ReqId,
        /// The shell's name.
        shell: String,
        /// The script and the command's lifetimes and limits.
        spec: ShellRunSpec,
    },
    /// List the named shells. Answered by `shell_list`.
    ShellList {
        /// Request id, echoed in the reply.
        id: ReqId,
    },
    /// A named shell's recent commands. Answered by `shell_history`.
    ShellHistory {
        /// Request id, echoed in the reply.
        id: ReqId,
        /// The shell's name.
        shell: String,
    },
    /// Close a named shell: kill what it runs and its background jobs
    /// (except those started detached with `setsid`), and forget the shell
    /// and its commands. Answered by `ok`.
    ShellClose {
        /// Request id, echoed in the reply.
        id: ReqId,
        /// The shell's name.
        shell: String,
    },
}

impl ClientMsg {
    /// The request id every client message carries.
    pub fn id(&self) -> ReqId {
        match self {
            ClientMsg::Start { id, .. }
            | ClientMsg::Attach { id, .. }
            | ClientMsg::Detach { id, .. }
            | ClientMsg::Resize { id, .. }
            | ClientMsg::Stdin { id, .. }
            | ClientMsg::CloseStdin { id, .. }
            | ClientMsg::Ack { id, .. }
            | ClientMsg::Signal { id, .. }
            | ClientMsg::Kill { id, .. }
            | ClientMsg::List { id, .. }
            | ClientMsg::Status { id, .. }
            | ClientMsg::Remove { id, .. }
            | ClientMsg::ShellCreate { id, .. }
            | ClientMsg::ShellRun { id, .. }
            | ClientMsg::ShellList { id }
            | ClientMsg::ShellHistory { id, .. }
            | ClientMsg::ShellClose { id, .. } => *id,
        }
    }
}

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

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero_id(id: &ReqId) -> bool {
    id.0 == 0
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

/// Messages from the daemon to a client.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    /// First frame on every connection.
    Hello {
        /// [`crate::PROTOCOL_VERSION`].
        version: u32,
        /// Server software and version, e.g. `tether/0.1.0`.
        server: String,
        /// The limits this daemon enforces.
        limits: Limits,
    },
    /// A command started.
    Started {
        /// Echo of the `start` request id.
        id: ReqId,
        /// The new command's id.
        command: CommandId,
        /// Its process id (also its process group id).
        pid: u32,
    },
    /// An attachment is in place; output follows from these offsets.
    Attached {
        /// Echo of the `attach` request id.
        id: ReqId,
        /// The command.
        command: CommandId,
        /// The stdout offset the attachment starts from (before any gap).
        stdout_offset: u64,
        /// The stderr offset the attachment starts from (before any gap).
        stderr_offset: u64,
    },
    /// A PTY command's screen as it is at `offset`: `data` written to a
    /// freshly reset terminal of `size` reproduces it (contents, colours,
    /// cursor, alternate screen, input modes). Sent after `attached` when
    /// the attach asked for `screen`; output continues from `offset`.
    Screen {
        /// The command.
        command: CommandId,
        /// The stdout offset the screen reflects; the next `output` starts
        /// here.
        offset: u64,
        /// The terminal size the screen is rendered for.
        size: TermSize,
        /// Bytes to write to a reset terminal.
        data: Payload,
    },
    /// A PTY command's terminal size changed (a `resize` or an attach with
    /// a size, from any client). Sent to every attachment.
    Resized {
        /// The command.
        command: CommandId,
        /// The new size.
        size: TermSize,
    },
    /// A chunk of output.
    Output {
        /// The command.
        command: CommandId,
        /// Which stream.
        stream: Stream,
        /// Absolute offset of the first byte of `data` in the stream.
        offset: u64,
        /// The bytes.
        data: Payload,
    },
    /// The bytes `[requested, first_held)` of a stream are gone from the ring;
    /// output continues from `first_held`.
    Gap {
        /// The command.
        command: CommandId,
        /// Which stream.
        stream: Stream,
        /// The offset the client was at.
        requested: u64,
        /// The first offset still held, where output resumes.
        first_held: u64,
    },
    /// The command finished; the last frame of an attachment, sent after all
    /// of its output.
    Exit {
        /// The command.
        command: CommandId,
        /// How it ended.
        status: ExitStatus,
    },
    /// A request without a more specific reply succeeded.
    Ok {
        /// Echo of the request id.
        id: ReqId,
    },
    /// Reply to `list`: one page.
    List {
        /// Echo of the request id.
        id: ReqId,
        /// Commands the daemon holds, oldest first, from the request's
        /// cursor.
        commands: Vec<CommandInfo>,
        /// The cursor of the next page, or null when this page is the last.
        /// An opaque string; a page asked for with it starts after the last
        /// command of this page (a command removed meanwhile does not shift
        /// it).
        #[serde(default)]
        next: Option<String>,
    },
    /// Reply to `status`.
    Status {
        /// Echo of the request id.
        id: ReqId,
        /// The command.
        info: CommandInfo,
    },
    /// Reply to `shell_create`.
    Shell {
        /// Echo of the request id.
        id: ReqId,
        /// The shell.
        info: ShellInfo,
        /// True if the shell was created by this request; false if a live
        /// shell of that name already existed and is returned unchanged.
        created: bool,
    },
    /// Reply to `shell_list`.
    ShellList {
        /// Echo of the request id.
        id: ReqId,
        /// All shells the daemon holds, oldest first.
        shells: Vec<ShellInfo>,
    },
    /// Reply to `shell_history`.
    ShellHistory {
        /// Echo of the request id.
        id: ReqId,
        /// The shell's name.
        shell: String,
        /// Its last 1000 commands, in submission order.
        entries: Vec<HistoryEntry>,
    },
    /// A request failed, or a frame could not be understood.
    Error {
        /// Echo of the request id, when one could be read.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<ReqId>,
        /// Machine-readable code.
        code: ErrorCode,
        /// Human-readable explanation.
        message: String,
        /// The OS error number behind it, if any (e.g. 2 for ENOENT).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        errno: Option<i32>,
    },
}

/// Limits the daemon announces in `hello`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Largest frame the daemon accepts.
    pub max_frame_bytes: u64,
    /// Largest `data` in one `output` frame the daemon sends.
    pub max_chunk_bytes: u64,
    /// Most commands held at once (running or finished).
    pub max_commands: u64,
    /// Default ring buffer size per stream.
    pub default_ring_bytes: u64,
    /// Largest ring buffer size a `start` may ask for.
    pub max_ring_bytes: u64,
    /// Most unacknowledged `stdin` bytes per command per connection; past
    /// it a `stdin` is refused with `limit_exceeded`. Clients wait for the
    /// `ok` of earlier `stdin` frames to stay under it.
    #[serde(default)]
    pub stdin_window_bytes: u64,
}

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
        match (self.code, self.signal) {
            (Some(c), _) => c,
            (None, Some(s)) => 128 + s,
            (None, None) => 255,
        }
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

/// Error codes. New codes may be added in a minor version; clients treat an
/// unknown code as `internal`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame is not a valid message (bad encoding, unknown type, missing
    /// or mistyped field).
    BadFrame,
    /// The message is well-formed but its content is invalid (empty argv,
    /// NUL in a string, unknown signal, out-of-range option).
    BadRequest,
    /// No such command (never existed, removed, or its TTL expired).
    NotFound,
    /// The process could not be started; `errno` holds the OS reason.
    SpawnFailed,
    /// The command has already exited.
    NotRunning,
    /// The command's stdin is closed.
    StdinClosed,
    /// A daemon limit was reached (max commands, ring memory).
    LimitExceeded,
    /// The daemon is shutting down.
    ShuttingDown,
    /// A bug or an unexpected OS failure.
    Internal,
    /// The named shell has closed; `message` says why.
    ShellClosed,
    /// A code this client does not know (sent by a newer daemon); treat as
    /// `internal`.
    #[serde(other)]
    Unknown,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_shell_run_takes_the_defaults_and_omits_them() {
        let frame = r#"{"type":"shell_run","id":3,"shell":"build","spec":{"script":"make"}}"#;
        let msg: ClientMsg = serde_json::from_str(frame).expect("decodes");
        let spec = ShellRunSpec { script: "make".to_owned(), ..ShellRunSpec::default() };
        assert!(spec.attach, "attach defaults to true");
        assert_eq!(msg, ClientMsg::ShellRun { id: ReqId(3), shell: "build".to_owned(), spec });
        assert_eq!(msg.id(), ReqId(3));
        assert_eq!(serde_json::to_string(&msg).expect("encodes"), frame);
    }

    #[test]
    fn an_empty_shell_spec_is_the_default() {
        let msg: ClientMsg =
            serde_json::from_str(r#"{"type":"shell_create","id":1,"spec":{}}"#).expect("decodes");
        assert_eq!(msg, ClientMsg::ShellCreate { id: ReqId(1), spec: ShellSpec::default() });
    }

    #[test]
    fn unknown_shell_states_and_reasons_decode_as_unknown() {
        let state: ShellState = serde_json::from_str(r#""starting""#).expect("decodes");
        assert_eq!(state, ShellState::Unknown);
        let reason: ShellCloseReason = serde_json::from_str(r#""oom""#).expect("decodes");
        assert_eq!(reason, ShellCloseReason::Unknown);
    }
}
