//! Async Rust client for the tether daemon.
//!
//! A [`Client`] is one multiplexed WebSocket connection driven by a
//! background task. Commands started or attached through it are
//! [`Execution`]s whose events (stdout, stderr, gap, exit) arrive in order.
//!
//! **Reconnect and resume.** When the connection drops unexpectedly (network
//! error, daemon restart with close code 1001), the driver reconnects with
//! exponential backoff (at once after a 1001), re-attaches every watched
//! command from the offsets it has delivered, drops any byte it already
//! delivered and trims partial overlaps. The caller sees one continuous
//! stream with no duplicate and no missing byte, or an explicit
//! [`ExecEvent::Gap`] when the daemon no longer holds the bytes. Requests in
//! flight when the connection drops fail with [`ClientError::Disconnected`]
//! (a `start` is not idempotent, so it is never replayed). A command the
//! caller killed is not re-attached.
//!
//! # Layout
//! - `client`: [`Client`]: connecting and the requests about commands;
//!   beside it `execution` ([`Execution`], [`ExecEvent`], [`Output`]),
//!   `shells` (the named-shell requests), `stdin` (windowed, numbered
//!   stdin) and `options` ([`ClientOptions`], [`Connection`]).
//! - `driver`: the connection task: its loop, reconnect and resume; beside
//!   it `requests` (request bookkeeping), `frames` (routing the daemon's
//!   frames) and `connect` (opening a connection).
//! - `error`: [`ClientError`].
//! - `tls`: [`client_config`] (system roots plus a CA file) and
//!   [`token_may_travel`] (no token in clear text to another host).
#![forbid(unsafe_code)]

mod client;
mod driver;
mod error;
mod tls;

pub use client::{Client, ClientOptions, Connection, ExecEvent, Execution, Output};
pub use error::ClientError;
pub use tether_proto::{
    CommandId, CommandInfo, CommandState, ExitReason, ExitStatus, HistoryEntry, PtySpec, ShellCloseReason,
    ShellClosed, ShellInfo, ShellRunSpec, ShellSpec, ShellState, StartSpec, Stream, TermSize,
};
pub use tls::{client_config, token_may_travel};
