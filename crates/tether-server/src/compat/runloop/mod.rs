//! The Runloop SDK's dialect (`protocol/compat/runloop.md`), under
//! `/compat/runloop`: the devbox routes `runloop-api-client` needs (2.0.0
//! with its named shells, 3.0.0 with `shell_name` in `extra_body`) for
//! executions, their long-poll waits and server-sent output streams, and
//! files. This host is the devbox `local` (and `tether serve
//! --sandbox-id`'s name).
//!
//! An execution is a normal tether command whose id is the execution id
//! (listed, attachable natively, same limits, lifetimes and restart
//! behaviour); one with a `shell_name` is queued in the tether named shell
//! of that name. A retried `POST` (the SDK resends with the same
//! `x-request-id`) is recognised: an execute by the command's request key,
//! a stdin send by its numbered writer, so neither runs or writes twice.
//!
//! # Layout
//! - `devbox`: the devbox itself (get, wait for status, shutdown).
//! - `exec`: executions: start, view, long-poll wait, kill, stdin.
//! - `stream`: the stdout and stderr event streams, resumable by offset.
//! - `files`: read, write, upload and download.

mod devbox;
mod exec;
mod files;
mod stream;

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::{AppState, Error};

/// Where the dialect lives (the SDK's `base_url`).
pub(crate) const PREFIX: &str = "/compat/runloop";

/// The dialect's routes (auth is the caller's layer). `budget` is the
/// daemon's budget of buffered request bodies, which the one large JSON
/// body (`write_file_contents`, up to 64 MiB) is charged to.
pub(crate) fn router(budget: crate::oneshot::BodyBudget) -> Router<Arc<AppState>> {
    let exe = "/v1/devboxes/{devbox_id}/executions/{execution_id}";
    let routes = Router::new()
        .route("/v1/devboxes", get(devbox::list))
        .route("/v1/devboxes/{devbox_id}", get(devbox::get))
        .route("/v1/devboxes/{devbox_id}/wait_for_status", post(devbox::wait_for_status))
        .route("/v1/devboxes/{devbox_id}/shutdown", post(devbox::shutdown))
        .route("/v1/devboxes/{devbox_id}/execute_async", post(exec::execute_async))
        .route("/v1/devboxes/{devbox_id}/execute", post(exec::execute))
        .route("/v1/devboxes/{devbox_id}/execute_sync", post(exec::execute_sync))
        .route(exe, get(exec::retrieve))
        .route(&format!("{exe}/wait_for_status"), post(exec::wait_for_status))
        .route(&format!("{exe}/kill"), post(exec::kill))
        .route(&format!("{exe}/send_std_in"), post(exec::send_std_in))
        .route(&format!("{exe}/stream_stdout_updates"), get(stream::stdout))
        .route(&format!("{exe}/stream_stderr_updates"), get(stream::stderr))
        .route("/v1/devboxes/{devbox_id}/read_file_contents", post(files::read_contents))
        .route(
            "/v1/devboxes/{devbox_id}/write_file_contents",
            post(files::write_contents)
                .layer(axum::extract::DefaultBodyLimit::max(files::MAX_CONTENTS))
                .layer(axum::middleware::from_fn_with_state(budget, crate::oneshot::body_budget)),
        )
        .route(
            "/v1/devboxes/{devbox_id}/upload_file",
            post(files::upload).layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route("/v1/devboxes/{devbox_id}/download_file", post(files::download))
        .fallback(unserved)
        .method_not_allowed_fallback(unserved)
        .layer(axum::middleware::from_fn(plain_errors));
    Router::new().nest(PREFIX, routes)
}

/// An error axum answered itself (a body over the limit, a bad query or
/// path parameter) in the dialect's shape, so the SDK raises its class
/// with the reason as its body.
async fn plain_errors(req: Request, next: axum::middleware::Next) -> Response {
    let resp = next.run(req).await;
    let json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if resp.status().as_u16() < 400 || json {
        return resp;
    }
    let status = resp.status();
    let text = axum::body::to_bytes(resp.into_body(), 4096).await.unwrap_or_default();
    let mut message = String::from_utf8_lossy(&text).trim().to_owned();
    if message.is_empty() {
        message = status.canonical_reason().unwrap_or("refused").to_owned();
    }
    let code = match status.as_u16() {
        400 => "bad_request",
        404 => "not_found",
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        _ => "refused",
    };
    Refusal::new(status, code, message).into_response()
}

/// Anything else (devbox lifecycle, snapshots, blueprints, tunnels, PTY...),
/// and a method a served path does not take (`POST /v1/devboxes`: create).
async fn unserved(req: Request) -> Response {
    Refusal::new(
        StatusCode::NOT_IMPLEMENTED,
        "not_implemented",
        format!(
            "{} {} is not served by tether's Runloop dialect (protocol/compat/runloop.md)",
            req.method(),
            req.uri().path()
        ),
    )
    .into_response()
}

/// The devbox id this host answers to: `local`, or the daemon's
/// `--sandbox-id`.
fn check_devbox(st: &AppState, id: &str) -> Result<(), Refusal> {
    if id == "local" || st.cfg.sandbox_id.as_deref() == Some(id) {
        return Ok(());
    }
    Err(Refusal::not_found(format!(
        "no devbox {id:?}: this tether daemon is the devbox `local`{}",
        st.cfg.sandbox_id.as_deref().map(|s| format!(" (also {s:?})")).unwrap_or_default()
    )))
}

/// The request's idempotency key: the SDK's `x-request-id` (kept across
/// its retries) or the caller's `Idempotency-Key`.
fn request_id(headers: &HeaderMap) -> Option<String> {
    ["x-request-id", "idempotency-key"]
        .iter()
        .find_map(|h| headers.get(*h))
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// A JSON body; an empty one is `{}` (the SDK's `kill` may send none).
fn json_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, Refusal> {
    let body = if body.iter().all(u8::is_ascii_whitespace) { b"{}".as_slice() } else { body };
    serde_json::from_slice(body).map_err(|e| Refusal::bad_request(format!("the request body: {e}")))
}

/// An error in the dialect's shape: `{"error": {"code", "message"}}`.
/// The SDK raises its class for the status (`NotFoundError`,
/// `BadRequestError`...) with the body as `e.body`. It retries 408, 409,
/// 429 and 5xx by default; `retry` says whether this one is worth it
/// (`x-should-retry`).
#[derive(Debug)]
pub(super) struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry: bool,
}

impl Refusal {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Refusal {
        Refusal { status, code, message: message.into(), retry: false }
    }

    fn bad_request(message: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    fn not_found(message: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 408: a long poll's hold ran out, or the daemon is restarting; the
    /// SDK asks again.
    fn keep_waiting(message: impl Into<String>) -> Refusal {
        Refusal { retry: true, ..Refusal::new(StatusCode::REQUEST_TIMEOUT, "timeout", message) }
    }
}

impl From<Error> for Refusal {
    fn from(e: Error) -> Refusal {
        let status = e.status();
        let code = match status.as_u16() {
            400 => "bad_request",
            403 => "forbidden",
            404 => "not_found",
            409 => "conflict",
            422 => "unprocessable_entity",
            429 => "limit_exceeded",
            503 => "shutting_down",
            _ => "internal",
        };
        // Limits and a restart pass; a retry can help.
        let retry = matches!(status.as_u16(), 429 | 503);
        Refusal { status, code, message: e.message, retry }
    }
}

impl From<tether_exec::ExecError> for Refusal {
    fn from(e: tether_exec::ExecError) -> Refusal {
        Error::from(e).into()
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        let retry = HeaderValue::from_static(if self.retry { "true" } else { "false" });
        (self.status, [(HeaderName::from_static("x-should-retry"), retry)], axum::Json(body)).into_response()
    }
}

/// The body budget's refusal (429, `Retry-After: 1`): the SDK retries.
pub(crate) fn budget_refusal(message: String) -> Response {
    let mut r =
        Refusal { retry: true, ..Refusal::new(StatusCode::TOO_MANY_REQUESTS, "limit_exceeded", message) }
            .into_response();
    r.headers_mut().insert(axum::http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// The auth layer's refusal (401, 403) in the dialect's shape (the SDK
/// raises `AuthenticationError` / `PermissionDeniedError`, not retried).
pub(crate) fn auth_refusal(status: StatusCode, message: &str) -> Response {
    let code = if status == StatusCode::UNAUTHORIZED { "unauthorized" } else { "forbidden" };
    Refusal::new(status, code, message).into_response()
}
