//! The LangSmith sandbox client's dialect (`protocol/compat/langsmith.md`),
//! under `/compat/langsmith`. Its commands are normal tether commands
//! (listed, attachable natively, same lifetimes and limits).
//!
//! # Layout
//! - `mapping`: the `execute` body to a `CommandSpec`, the idempotent
//!   lookup by the client's `command_id`, clamped reconnects, exit codes;
//!   shared by the three command transports below.
//! - `ws`: the WebSocket (`/execute/ws`), on the native connection's
//!   writer task, stdin pump and keepalive.
//! - `utf8`: the WebSocket's per-stream UTF-8 decoding with byte-exact
//!   offsets.
//! - `sse`: server-sent events (`/execute/stream/start` and `/resume`).
//! - `legacy`: the legacy one-shot `POST /execute`.
//! - `files`: `/upload` and `/download` (with ranges).
//! - `search`: `/glob` and `/grep`: bounded, sorted walks below the files
//!   root (the engine is shared with the Daytona dialect's find and
//!   search).
//! - `glob`: the glob matcher of the search routes (and Daytona's).
//! - `error`: the dialect's `error_type`s and tether's errors in its shapes.

mod error;
mod files;
pub(crate) mod glob;
mod legacy;
mod mapping;
pub(crate) mod search;
mod sse;
mod utf8;
mod ws;

pub(crate) use error::{ErrorType, Refused, detail, file_error};
pub(crate) use files::{download, upload};
pub(crate) use legacy::execute as legacy_execute;
pub(crate) use search::{glob, grep};
pub(crate) use sse::{resume as sse_resume, start as sse_start};
pub(crate) use utf8::Writer;
pub(crate) use ws::{ClientFrame, StdinPumps, parse, ws_handler};
