//! The LangSmith sandbox dialect's legacy one-shot `POST /execute`
//! (`protocol/compat/langsmith.md` §7), which older clients used when the
//! WebSocket failed: `{command, timeout, shell, env, cwd}` in, and when the
//! command has ended `{stdout, stderr, exit_code}` out, the output as lossy
//! UTF-8. The command is a normal one-shot command (`oneshot::run_to_end`:
//! listed while it runs, read paced, forgotten at exit).
//!
//! Errors have the dialect's shape `{"detail": {"error", "message"}}`:
//! a refused start is 400 `CommandError` (the client raises
//! `SandboxOperationError`), a daemon limit 429 `QuotaExceeded` (as
//! `/v1/exec`), a timeout 422 `CommandError` with a message saying so (the
//! client has no timeout error on this route, and never retries a 422), and
//! a daemon that shuts down 503 `ServiceUnavailable` before the start or
//! 500 `CommandError` during the run.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use tether_exec::{self as exec, ExitReason};

use super::mapping;
use super::{ErrorType, Refused};
use crate::AppState;
use crate::{Error, oneshot};

/// The request body.
#[derive(Debug, Deserialize)]
struct Request {
    /// The command line, run as `shell -c command`.
    command: String,
    /// Wall-clock limit in seconds (the old client's default is 60); `0`
    /// or less: none.
    #[serde(default)]
    timeout: Option<i64>,
    /// The shell (default `/bin/bash`).
    #[serde(default)]
    shell: Option<String>,
    /// Variables for the command.
    #[serde(default)]
    env: Option<BTreeMap<String, String>>,
    /// Working directory.
    #[serde(default)]
    cwd: Option<String>,
}

/// `POST /execute`.
pub(crate) async fn execute(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    let req: Request = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return detail(StatusCode::BAD_REQUEST, "CommandError", &format!("not a valid request: {e}"));
        }
    };
    let mut spec = exec::CommandSpec::new(exec::Program::Shell { shell: req.shell, script: req.command });
    spec.cwd = req.cwd.map(Into::into);
    spec.env = req.env.unwrap_or_default();
    let limit = req.timeout.filter(|s| *s > 0);
    spec.timeout = match mapping::timeout(limit) {
        Ok(t) => t,
        Err(msg) => return detail(StatusCode::BAD_REQUEST, ErrorType::CommandError.as_str(), msg.as_str()),
    };
    spec = spec.stdin(Bytes::new(), true);
    let run = oneshot::run_to_end(&st, spec, oneshot::DEFAULT_MAX_OUTPUT);
    // The request ends at shutdown; dropping the run detaches, and the
    // manager's shutdown ends the command.
    let r = tokio::select! {
        r = run => r,
        _ = st.shutdown.cancelled() => {
            let msg = "the daemon shut down while the command ran";
            return detail(StatusCode::INTERNAL_SERVER_ERROR, "CommandError", msg);
        }
    };
    match r {
        Ok(f) if f.exit.reason == ExitReason::TimedOut => {
            let msg = format!("Command timed out after {} seconds", limit.unwrap_or_default());
            detail(StatusCode::UNPROCESSABLE_ENTITY, ErrorType::CommandError.as_str(), &msg)
        }
        Ok(f) => axum::Json(json!({
            "stdout": String::from_utf8_lossy(&f.stdout),
            "stderr": String::from_utf8_lossy(&f.stderr),
            "exit_code": f.exit.shell_code(),
        }))
        .into_response(),
        Err(e) => match Error::from(e).into_langsmith() {
            Refused::Error(ErrorType::QuotaExceeded, msg) => {
                detail(StatusCode::TOO_MANY_REQUESTS, ErrorType::QuotaExceeded.as_str(), &msg)
            }
            Refused::Error(kind, msg) => detail(StatusCode::BAD_REQUEST, kind.as_str(), &msg),
            // Nothing started: the client's transport retries a 503.
            Refused::Restarting => {
                detail(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", "the daemon is shutting down")
            }
        },
    }
}

/// The dialect's error shape.
fn detail(status: StatusCode, error: &str, message: &str) -> Response {
    super::detail(status.as_u16(), error, message)
}
