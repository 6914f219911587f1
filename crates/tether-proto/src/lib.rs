//! The tether wire protocol.
//!
//! Every message that crosses a tether WebSocket is one of two enums, named
//! by direction: [`ClientMsg`] (client to daemon) and [`ServerMsg`] (daemon to
//! client). Both are internally tagged by a `type` field in `snake_case` and
//! are encoded either as MessagePack maps with named fields (the default,
//! subprotocol [`SUBPROTOCOL_MSGPACK`]) or as JSON text (subprotocol
//! [`SUBPROTOCOL_JSON`]). Byte payloads are MessagePack `bin` and base64
//! strings in JSON (see [`Payload`]).
//!
//! This crate does no I/O; `protocol/PROTOCOL.md` is the prose contract and
//! `protocol/vectors/` holds golden frames that every client decodes.
//!
//! # Layout
//! - `msg`: the message enums and the structures they carry.
//! - `codec`: [`Encoding`], [`encode`] and [`decode`].
//! - `payload`: [`Payload`], the byte-string type.
//! - `http`: bodies of the plain HTTP routes (`/v1/exec`, `/v1/code`).

mod codec;
mod http;
mod msg;
mod payload;

pub use codec::{DecodeError, Encoding, decode, encode, encode_sized};
pub use http::{
    CodeRequest, ExecRequest, ExecResponse, FileList, FileStat, HttpError, RunOptions, TextEncoding,
};
pub use msg::{
    ClientMsg, CommandId, CommandInfo, CommandState, ErrorCode, ExitReason, ExitStatus, HistoryEntry,
    LIST_ARGV_BYTES, LIST_ARGV_ITEM_BYTES, LIST_DEFAULT_LIMIT, LIST_MAX_LIMIT, LIST_PAGE_BYTES, Limits,
    OutputLimitAction, PtySpec, ReqId, ServerMsg, ShellCloseReason, ShellClosed, ShellInfo, ShellRunSpec,
    ShellSpec, ShellState, StartSpec, Stream, StreamInfo, TermSize,
};
pub use payload::Payload;

/// Major protocol version; carried in the subprotocol name and in `hello`.
pub const PROTOCOL_VERSION: u32 = 1;

/// WebSocket subprotocol for MessagePack frames (the default).
pub const SUBPROTOCOL_MSGPACK: &str = "tether.v1";

/// WebSocket subprotocol for JSON text frames (debugging, generic tools).
pub const SUBPROTOCOL_JSON: &str = "tether.v1.json";

/// Prefix of the subprotocol entry that carries the bearer token for
/// browsers, which cannot set an `Authorization` header on a WebSocket:
/// `new WebSocket(url, ["tether.v1", "tether.token.<TOKEN>"])`. The daemon
/// never selects (echoes) this entry.
pub const TOKEN_SUBPROTOCOL_PREFIX: &str = "tether.token.";
