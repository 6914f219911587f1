//! [`ErrorCode`], the code every error that crosses the wire carries next
//! to its human message.

use serde::{Deserialize, Serialize};

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
