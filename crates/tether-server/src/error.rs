//! The server's one error: a code, a human message and the OS error number
//! behind it, built from the command manager's and the file layer's errors
//! (or by a route for a bad request). It takes a wire's shape only at the
//! edge: [`Error::into_native`] (a native `error` frame),
//! [`Error::into_http`] (a status and a typed body), and each dialect's own
//! mapping in `compat/<name>/`.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use tether_exec::ExecError;
use tether_files::FileError;
use tether_proto::{self as proto, Encoding, ErrorCode, HttpError};

/// What went wrong, for whichever wire asked.
#[derive(Debug)]
pub(crate) struct Error {
    /// What kind of failure it is.
    pub(crate) code: Code,
    /// The human-readable explanation.
    pub(crate) message: String,
    /// The OS error number behind it, if any.
    pub(crate) errno: Option<i32>,
}

/// An [`Error`]'s code: the native protocol's for commands, shells and
/// requests; the file routes' own names for files (they have a larger
/// vocabulary than the command protocol, with an HTTP status each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Code {
    /// A command, shell or request error, as the native protocol names it.
    Proto(ErrorCode),
    /// A file-route error: its stable name (`not_found`, `bad_request`,
    /// `busy`...) and its HTTP status.
    Files {
        /// The name in the body's `code`.
        name: &'static str,
        /// The response's status.
        status: u16,
    },
}

impl Error {
    /// An error with this code and message.
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Error {
        Error { code: Code::Proto(code), message: message.into(), errno: None }
    }

    /// A well-formed request with invalid content.
    pub(crate) fn bad_request(message: impl Into<String>) -> Error {
        Error::new(ErrorCode::BadRequest, message)
    }

    /// A file-route error that has no [`FileError`] behind it.
    pub(crate) fn files(name: &'static str, status: u16, message: impl Into<String>) -> Error {
        Error { code: Code::Files { name, status }, message: message.into(), errno: None }
    }

    /// The native protocol's code (a file error has none of its own: it
    /// never reaches a WebSocket, and would be `internal` there).
    pub(crate) fn proto_code(&self) -> ErrorCode {
        match self.code {
            Code::Proto(c) => c,
            Code::Files { .. } => ErrorCode::Internal,
        }
    }

    /// The HTTP status of this error on tether's own routes.
    pub(crate) fn status(&self) -> StatusCode {
        match self.code {
            Code::Proto(ErrorCode::BadFrame | ErrorCode::BadRequest) => StatusCode::BAD_REQUEST,
            Code::Proto(ErrorCode::NotFound) => StatusCode::NOT_FOUND,
            Code::Proto(ErrorCode::SpawnFailed) => StatusCode::UNPROCESSABLE_ENTITY,
            Code::Proto(ErrorCode::LimitExceeded) => StatusCode::TOO_MANY_REQUESTS,
            Code::Proto(ErrorCode::ShuttingDown) => StatusCode::SERVICE_UNAVAILABLE,
            Code::Proto(ErrorCode::NotRunning | ErrorCode::StdinClosed | ErrorCode::ShellClosed) => {
                StatusCode::CONFLICT
            }
            Code::Proto(ErrorCode::Internal | ErrorCode::Unknown) => StatusCode::INTERNAL_SERVER_ERROR,
            Code::Files { status, .. } => {
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            }
        }
    }

    /// The native protocol's `error` frame, answering request `id`.
    pub(crate) fn into_native(self, id: Option<proto::ReqId>) -> proto::ServerMsg {
        let code = self.proto_code();
        proto::ServerMsg::Error { id, code, message: self.message, errno: self.errno }
    }

    /// tether's HTTP shape: the status and a typed body. A command error's
    /// body is an [`HttpError`] in `enc`; a file route's is JSON
    /// `{code, message, errno}` with its own names.
    pub(crate) fn into_http(self, enc: Encoding) -> Response {
        let status = self.status();
        match self.code {
            Code::Proto(code) => {
                let body = HttpError { code, message: self.message, errno: self.errno };
                (status, [(header::CONTENT_TYPE, content_type(enc))], proto::encode(&body, enc))
                    .into_response()
            }
            Code::Files { name, .. } => {
                let mut body = serde_json::json!({ "code": name, "message": self.message });
                if let Some(n) = self.errno {
                    body["errno"] = n.into();
                }
                (status, axum::Json(body)).into_response()
            }
        }
    }
}

/// The `Content-Type` of a body in `enc`.
pub(crate) fn content_type(enc: Encoding) -> &'static str {
    match enc {
        Encoding::Json => "application/json",
        Encoding::MsgPack => "application/msgpack",
    }
}

impl From<ExecError> for Error {
    fn from(e: ExecError) -> Error {
        use ErrorCode as C;
        use ExecError as E;
        let code = match &e {
            E::EmptyArgv
            | E::NulByte { .. }
            | E::BadEnvName(_)
            | E::BadSignal(_)
            | E::BadRingSize { .. }
            | E::BadSize { .. }
            | E::NotAPty(_)
            | E::OffsetBeyondEnd { .. }
            | E::BadShellName(_)
            | E::NotForShell(_)
            | E::StdinHole { .. }
            | E::BadWriter(_)
            | E::BadRequestKey
            | E::BadDrainGrace { .. }
            | E::Metadata { .. } => C::BadRequest,
            E::BadCwd { .. } | E::Spawn { .. } | E::ShellStart { .. } => C::SpawnFailed,
            E::NotFound(_) | E::ShellNotFound(_) => C::NotFound,
            E::ShellClosed { .. } => C::ShellClosed,
            E::NotRunning(_) => C::NotRunning,
            E::StdinClosed(_) => C::StdinClosed,
            E::TooManyCommands(_) | E::RingMemory { .. } | E::ScreenMemory { .. } | E::TooManyShells(_) => {
                C::LimitExceeded
            }
            E::ShuttingDown => C::ShuttingDown,
            E::Io { .. } => C::Internal,
        };
        Error { code: Code::Proto(code), errno: e.errno(), message: e.to_string() }
    }
}

impl From<FileError> for Error {
    fn from(e: FileError) -> Error {
        Error {
            code: Code::Files { name: e.code(), status: e.status() },
            errno: e.errno(),
            message: e.to_string(),
        }
    }
}
