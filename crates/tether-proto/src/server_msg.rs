//! [`ServerMsg`], every message the daemon sends a client, and the
//! [`Limits`] it announces in `hello`.

use serde::{Deserialize, Serialize};

use crate::{
    CommandId, CommandInfo, ErrorCode, ExitStatus, HistoryEntry, Payload, ReqId, ShellInfo, Stream, TermSize,
};

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
