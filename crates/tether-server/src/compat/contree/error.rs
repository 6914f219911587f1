//! The dialect's error body (`protocol/compat/contree.md` §Errors): JSON
//! `{"status": int, "error": str}` with that status, from which the SDK
//! picks its exception (404 `NotFoundError`, 403 `ForbiddenError`, 422
//! `UnprocessableEntityError`, 429 `TooManyRequestsError`, any other
//! `ApiStatusCodeError`).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tether_proto::ErrorCode;

use crate::Error;
use crate::error::Code;

/// A refusal in the vendor's shape.
#[derive(Debug)]
pub(super) struct Refusal {
    /// The HTTP status (and the body's `status`).
    pub(super) status: StatusCode,
    /// The body's `error`, for people.
    pub(super) error: String,
}

impl Refusal {
    /// A refusal with this status.
    pub(super) fn new(status: u16, error: impl Into<String>) -> Refusal {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Refusal { status, error: error.into() }
    }

    /// 400: the body is not the JSON the route takes.
    pub(super) fn bad_body(e: impl std::fmt::Display) -> Refusal {
        Refusal::new(400, format!("the request body is not valid: {e}"))
    }

    /// 422: well-formed, but a value this host cannot take.
    pub(super) fn invalid(error: impl Into<String>) -> Refusal {
        Refusal::new(422, error)
    }

    /// 404.
    pub(super) fn not_found(error: impl Into<String>) -> Refusal {
        Refusal::new(404, error)
    }

    /// 500.
    pub(super) fn internal(error: impl Into<String>) -> Refusal {
        Refusal::new(500, error)
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "status": self.status.as_u16(), "error": self.error });
        let mut resp = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

impl From<Error> for Refusal {
    /// tether's errors by kind: an invalid request or a command that cannot
    /// start is 422, a missing thing 404, a denied path 403, a limit 429
    /// (the SDK retries a spawn on it), a stopping daemon 503.
    fn from(e: Error) -> Refusal {
        let status = match e.code {
            Code::Files { name, status } => match name {
                "not_found" => 404,
                "outside_root" | "permission_denied" => 403,
                "io" => 500,
                _ if status < 500 => 422,
                _ => status,
            },
            Code::Proto(c) => match c {
                ErrorCode::BadFrame | ErrorCode::BadRequest | ErrorCode::SpawnFailed => 422,
                ErrorCode::NotFound => 404,
                ErrorCode::NotRunning | ErrorCode::StdinClosed | ErrorCode::ShellClosed => 409,
                ErrorCode::LimitExceeded => 429,
                ErrorCode::ShuttingDown => 503,
                ErrorCode::Internal | ErrorCode::Unknown => 500,
            },
        };
        Refusal::new(status, e.message)
    }
}

impl From<tether_exec::ExecError> for Refusal {
    fn from(e: tether_exec::ExecError) -> Refusal {
        Refusal::from(Error::from(e))
    }
}

impl From<tether_files::FileError> for Refusal {
    fn from(e: tether_files::FileError) -> Refusal {
        Refusal::from(Error::from(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tether_errors_take_the_sdks_statuses() {
        let cases: [(Refusal, u16); 5] = [
            (tether_files::FileError::NotFound { path: "/x".into() }.into(), 404),
            (tether_files::FileError::Outside { path: "/x".into() }.into(), 403),
            (tether_exec::ExecError::NotFound("c".into()).into(), 404),
            (tether_exec::ExecError::TooManyCommands(1).into(), 429),
            (tether_exec::ExecError::ShuttingDown.into(), 503),
        ];
        for (r, status) in cases {
            assert_eq!(r.status.as_u16(), status, "{}", r.error);
        }
    }
}
