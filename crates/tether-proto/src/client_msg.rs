//! [`ClientMsg`], every message a client sends the daemon, and the bounds
//! of a `list` page it asks for.

use serde::{Deserialize, Serialize};

use crate::defaults::{is_false, is_zero_id};
use crate::{CommandId, Payload, ReqId, ShellRunSpec, ShellSpec, StartSpec, TermSize};

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
}
