//! The dialect's error envelope (`protocol/compat/runta.md` §Errors):
//! `{"error": {"code", "message"}, "request_id"}`, with a `code` from the
//! SDK's `PublicErrorCode` and a status its generated client parses (401,
//! 403, 404, 409, 422, 429, 501, 503, 504), so `runta.ApiError` carries
//! `status_code` and `code`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tether_files::FileError;
use tether_proto::ErrorCode;

use crate::Error;
use crate::error::Code;

/// A refusal in the SDK's shape.
#[derive(Clone, Debug)]
pub(crate) struct Refusal {
    /// The HTTP status.
    pub(crate) status: StatusCode,
    /// The SDK's `PublicErrorCode` value.
    pub(crate) code: &'static str,
    /// For people.
    pub(crate) message: String,
}

impl Refusal {
    /// A refusal with this status, code and message.
    pub(crate) fn new(status: u16, code: &'static str, message: impl Into<String>) -> Refusal {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Refusal { status, code, message: message.into() }
    }

    /// 404 `not_found`.
    pub(crate) fn not_found(message: impl Into<String>) -> Refusal {
        Refusal::new(404, "not_found", message)
    }

    /// 422 `invalid_argument` (the SDK's client parses no 400).
    pub(crate) fn invalid(message: impl Into<String>) -> Refusal {
        Refusal::new(422, "invalid_argument", message)
    }

    /// 501 `unimplemented`: a call this dialect does not serve.
    pub(crate) fn unimplemented(message: impl Into<String>) -> Refusal {
        Refusal::new(501, "unimplemented", message)
    }

    /// The JSON body.
    pub(crate) fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "error": { "code": self.code, "message": self.message },
            "request_id": request_id(),
        })
    }
}

/// A request id for the envelope: unique within the daemon's life, enough
/// for someone matching a client's error to the daemon's log.
fn request_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("tether-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(code = self.code, "runta dialect: {}", self.message);
        }
        (self.status, axum::Json(self.body())).into_response()
    }
}

impl From<Error> for Refusal {
    /// tether's errors in the SDK's codes: files by kind, commands by the
    /// native code.
    fn from(e: Error) -> Refusal {
        let (status, code) = match e.code {
            Code::Files { name, .. } => match name {
                "not_found" => (404, "not_found"),
                "outside_root" | "permission_denied" | "special_file" => (403, "permission_denied"),
                "exists" => (409, "already_exists"),
                "too_large" => (422, "invalid_argument"),
                "no_space" => (503, "unavailable"),
                "io" => (500, "internal"),
                _ => (422, "invalid_argument"),
            },
            Code::Proto(c) => match c {
                ErrorCode::BadFrame | ErrorCode::BadRequest => (422, "invalid_argument"),
                ErrorCode::NotFound => (404, "not_found"),
                ErrorCode::NotRunning | ErrorCode::StdinClosed | ErrorCode::ShellClosed => {
                    (409, "failed_precondition")
                }
                ErrorCode::SpawnFailed => (422, "command_failed"),
                ErrorCode::LimitExceeded => (429, "rate_limited"),
                ErrorCode::ShuttingDown => (503, "unavailable"),
                ErrorCode::Internal | ErrorCode::Unknown => (500, "internal"),
            },
        };
        Refusal::new(status, code, e.message)
    }
}

impl From<FileError> for Refusal {
    fn from(e: FileError) -> Refusal {
        Refusal::from(Error::from(e))
    }
}

impl From<tether_exec::ExecError> for Refusal {
    fn from(e: tether_exec::ExecError) -> Refusal {
        Refusal::from(Error::from(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tether_errors_take_the_sdks_codes_and_parsed_statuses() {
        let cases: [(Refusal, u16, &str); 4] = [
            (FileError::NotFound { path: "/x".into() }.into(), 404, "not_found"),
            (FileError::IsADirectory { path: "/x".into() }.into(), 422, "invalid_argument"),
            (tether_exec::ExecError::ShuttingDown.into(), 503, "unavailable"),
            (tether_exec::ExecError::EmptyArgv.into(), 422, "invalid_argument"),
        ];
        for (r, status, code) in cases {
            assert_eq!((r.status.as_u16(), r.code), (status, code), "{}", r.message);
        }
    }

    #[test]
    fn the_envelope_has_the_sdks_keys() {
        let v = Refusal::not_found("no runtime").body();
        assert_eq!(v["error"]["code"], "not_found");
        assert_eq!(v["error"]["message"], "no runtime");
        assert!(v["request_id"].is_string());
    }
}
