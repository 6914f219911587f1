//! The dialect's error envelope (`protocol/compat/daytona.md` §6): every
//! refusal is JSON `{statusCode, message, code?, source, path, method,
//! timestamp}`, so the SDK's `intercept_errors` picks its typed exception
//! from (`source`, `code`) or, failing that, from the status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tether_files::FileError;
use tether_proto::ErrorCode;

use crate::Error;
use crate::error::Code;

/// Where a refusal comes from: the control plane or the toolbox daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// `/compat/daytona/api`.
    Api,
    /// `/compat/daytona/toolbox/{id}`.
    Daemon,
}

/// A refusal in the dialect's shape. The request's path and method are
/// filled in on the way out ([`super::envelope_layer`]).
#[derive(Clone, Debug)]
pub(crate) struct Refusal {
    /// The HTTP status.
    pub(crate) status: StatusCode,
    /// The daemon error code (`FILE_NOT_FOUND`...), if one fits.
    pub(crate) code: Option<&'static str>,
    /// For people.
    pub(crate) message: String,
    /// Control plane or toolbox.
    pub(crate) source: Source,
}

impl Refusal {
    /// A toolbox refusal.
    pub(crate) fn new(status: u16, code: Option<&'static str>, message: impl Into<String>) -> Refusal {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Refusal { status, code, message: message.into(), source: Source::Daemon }
    }

    /// 400 `BAD_REQUEST`.
    pub(crate) fn bad_request(message: impl Into<String>) -> Refusal {
        Refusal::new(400, Some("BAD_REQUEST"), message)
    }

    /// 404 `NOT_FOUND`.
    pub(crate) fn not_found(message: impl Into<String>) -> Refusal {
        Refusal::new(404, Some("NOT_FOUND"), message)
    }

    /// 501 `NOT_IMPLEMENTED`: a feature this dialect does not serve.
    pub(crate) fn not_implemented(message: impl Into<String>) -> Refusal {
        Refusal::new(501, Some("NOT_IMPLEMENTED"), message)
    }

    /// The same refusal from the control plane.
    pub(crate) fn by_api(mut self) -> Refusal {
        self.source = Source::Api;
        self
    }

    /// The JSON body for a request to `path` with `method`.
    pub(crate) fn body(&self, path: &str, method: &str) -> serde_json::Value {
        let source = match self.source {
            Source::Api => "DAYTONA_API",
            Source::Daemon => "DAYTONA_DAEMON",
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let mut v = serde_json::json!({
            "statusCode": self.status.as_u16(),
            "message": self.message,
            "source": source,
            "path": path,
            "method": method,
            "timestamp": crate::compat::rfc3339(now),
        });
        if let (Some(code), Some(o)) = (self.code, v.as_object_mut()) {
            o.insert("code".into(), code.into());
        }
        v
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = self.body("", "");
        let mut resp = (self.status, axum::Json(body)).into_response();
        resp.extensions_mut().insert(self);
        resp
    }
}

impl From<Error> for Refusal {
    /// tether's errors as the toolbox names them (§6): files by kind,
    /// commands and shells by the native code.
    fn from(e: Error) -> Refusal {
        let (status, code) = match e.code {
            Code::Files { name, status } => match name {
                "not_found" => (404, Some("FILE_NOT_FOUND")),
                "outside_root" | "permission_denied" | "special_file" => (403, Some("FILE_ACCESS_DENIED")),
                "exists" => (409, Some("CONFLICT")),
                "bad_path" | "not_a_directory" | "is_a_directory" | "bad_request" => {
                    (400, Some("INVALID_FILE_PATH"))
                }
                "io" => (500, Some("FILE_READ_FAILED")),
                _ => (status, None),
            },
            Code::Proto(c) => match c {
                ErrorCode::BadFrame | ErrorCode::BadRequest => (400, Some("BAD_REQUEST")),
                ErrorCode::NotFound => (404, Some("NOT_FOUND")),
                ErrorCode::ShellClosed => (410, Some("SESSION_ENDED")),
                ErrorCode::NotRunning | ErrorCode::StdinClosed => (410, Some("COMMAND_ALREADY_COMPLETED")),
                ErrorCode::LimitExceeded => (429, None),
                ErrorCode::ShuttingDown => (503, None),
                ErrorCode::SpawnFailed | ErrorCode::Internal | ErrorCode::Unknown => {
                    (500, Some("INTERNAL_SERVER_ERROR"))
                }
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
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn tether_errors_take_the_sdks_codes() {
        let cases: [(Refusal, u16, Option<&str>); 5] = [
            (FileError::NotFound { path: "/x".into() }.into(), 404, Some("FILE_NOT_FOUND")),
            (FileError::Outside { path: "/x".into() }.into(), 403, Some("FILE_ACCESS_DENIED")),
            (
                tether_exec::ExecError::ShellClosed { name: "s".into(), why: "gone".into() }.into(),
                410,
                Some("SESSION_ENDED"),
            ),
            (tether_exec::ExecError::ShellNotFound("s".into()).into(), 404, Some("NOT_FOUND")),
            (tether_exec::ExecError::ShuttingDown.into(), 503, None),
        ];
        for (r, status, code) in cases {
            assert_eq!((r.status.as_u16(), r.code), (status, code), "{}", r.message);
        }
    }

    #[test]
    fn the_envelope_has_every_required_key() {
        let v = Refusal::not_found("no such thing").body("/files/info", "GET");
        for key in ["statusCode", "message", "code", "source", "path", "method", "timestamp"] {
            assert!(v.get(key).is_some(), "{key} missing from {v}");
        }
        assert_eq!(v["source"], "DAYTONA_DAEMON");
        assert_eq!(Refusal::not_implemented("x").by_api().body("/", "GET")["source"], "DAYTONA_API");
    }
}
