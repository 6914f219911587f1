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
//! - `client_msg`: [`ClientMsg`], client to daemon, and the `list` bounds.
//! - `server_msg`: [`ServerMsg`], daemon to client, and [`Limits`].
//! - `spec`: what a client asks to run ([`StartSpec`], [`ShellSpec`],
//!   [`ShellRunSpec`], [`TermSize`], [`PtySpec`]).
//! - `info`: what the daemon reports ([`ExitStatus`], [`CommandInfo`],
//!   [`ShellInfo`], [`HistoryEntry`]).
//! - `ids`: [`ReqId`], [`CommandId`] and [`Stream`].
//! - `error_code`: [`ErrorCode`], the code of every error on the wire.
//! - `defaults`: serde defaults and skip predicates the messages share.
//! - `codec`: [`Encoding`], [`encode`] and [`decode`].
//! - `payload`: [`Payload`], the byte-string type.
//! - `http`: bodies of the plain HTTP routes (`/v1/exec`, `/v1/code`).

mod client_msg;
mod codec;
mod defaults;
mod error_code;
mod http;
mod ids;
mod info;
mod payload;
mod server_msg;
mod spec;

pub use client_msg::{
    ClientMsg, LIST_ARGV_BYTES, LIST_ARGV_ITEM_BYTES, LIST_DEFAULT_LIMIT, LIST_MAX_LIMIT, LIST_PAGE_BYTES,
};
pub use codec::{DecodeError, Encoding, decode, encode, encode_sized};
pub use error_code::ErrorCode;
pub use http::{
    CodeRequest, ExecRequest, ExecResponse, FileList, FileStat, HttpError, RunOptions, TextEncoding,
};
pub use ids::{CommandId, ReqId, Stream};
pub use info::{
    CommandInfo, CommandState, ExitReason, ExitStatus, HistoryEntry, ShellCloseReason, ShellClosed,
    ShellInfo, ShellState, StreamInfo, shell_code,
};
pub use payload::Payload;
pub use server_msg::{Limits, ServerMsg};
pub use spec::{OutputLimitAction, PtySpec, ShellRunSpec, ShellSpec, StartSpec, TermSize};

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
