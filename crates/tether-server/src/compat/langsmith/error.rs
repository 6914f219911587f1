//! The dialect's errors: the `error_type`s tether sends, and tether's
//! [`Error`] in the dialect's shapes: an `error` frame or event
//! ([`Error::into_langsmith`]) and the HTTP body
//! `{"detail": {"error", "message"}}` ([`detail`], [`file_error`]).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tether_files::FileError;
use tether_proto::ErrorCode;

use crate::Error;
use crate::error::Code;

/// The dialect's `error_type`s that tether sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ErrorType {
    /// The command could not be started (bad request, spawn failure).
    CommandError,
    /// A daemon limit (commands, ring memory) refused the start.
    QuotaExceeded,
    /// No such command (never existed, or its TTL ran out).
    CommandNotFound,
    /// The command's wall-clock timeout fired.
    CommandTimeout,
    /// The daemon is going away; the client resumes (SSE only).
    ServerShuttingDown,
}

impl ErrorType {
    /// The name on the wire.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ErrorType::CommandError => "CommandError",
            ErrorType::QuotaExceeded => "QuotaExceeded",
            ErrorType::CommandNotFound => "CommandNotFound",
            ErrorType::CommandTimeout => "CommandTimeout",
            ErrorType::ServerShuttingDown => "ServerShuttingDown",
        }
    }
}

/// tether's error as the dialect's clients take it.
#[derive(Debug)]
pub(crate) enum Refused {
    /// An `error` (`error_type`, message): the client raises it.
    Error(ErrorType, String),
    /// The daemon is shutting down: the client should try again (on the
    /// WebSocket a close with 1001 before `started`).
    Restarting,
}

impl Error {
    /// The dialect's view: a stopping daemon is a retry, a limit is
    /// `QuotaExceeded`, an unknown command `CommandNotFound`, anything
    /// else (a bad request, a spawn failure) `CommandError`.
    pub(crate) fn into_langsmith(self) -> Refused {
        let kind = match self.code {
            Code::Proto(ErrorCode::ShuttingDown) => return Refused::Restarting,
            Code::Proto(ErrorCode::LimitExceeded) => ErrorType::QuotaExceeded,
            Code::Proto(ErrorCode::NotFound) => ErrorType::CommandNotFound,
            _ => ErrorType::CommandError,
        };
        Refused::Error(kind, self.message)
    }
}

/// The client's HTTP error shape.
pub(crate) fn detail(status: u16, error: &str, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(serde_json::json!({"detail": {"error": error, "message": message}}))).into_response()
}

/// A file error as the client expects it: 404 `FileNotFound`, 403
/// `PermissionDenied`, else the route's `ReadError`/`WriteError` with the
/// status of tether's own file routes.
pub(crate) fn file_error(e: FileError, route_error: &str) -> Response {
    let e = Error::from(e);
    let status = e.status().as_u16();
    let kind = match status {
        404 => "FileNotFound",
        403 => "PermissionDenied",
        _ => route_error,
    };
    detail(status, kind, &e.message)
}
