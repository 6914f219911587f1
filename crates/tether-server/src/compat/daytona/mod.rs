//! The Daytona SDK's dialect (`protocol/compat/daytona.md`), under
//! `/compat/daytona`: the control-plane subset that hands the SDK this host
//! as a started sandbox (`/api`), and the toolbox (`/toolbox/{id}/...`).
//! Sessions are named shells, their commands and PTY sessions are normal
//! tether commands (listed, attachable natively, same limits, lifetimes and
//! restart behaviour).
//!
//! # Layout
//! - `api`: `GET /api/sandbox/{id}` and the toolbox proxy URL; every other
//!   control-plane call is a 501.
//! - `process`: one-shot `execute` and `code-run`.
//! - `sessions`: sessions (named shells), their commands, logs (JSON and
//!   the follow WebSocket) and input.
//! - `pty`: PTY sessions: the create-connect and connect WebSockets, list,
//!   info, resize, kill.
//! - `files`: the file routes (bulk multipart upload and download, list,
//!   info, folder, delete, move, find, search, replace, permissions) and
//!   the home and work dir.
//! - `ws`: the bounded peer both WebSockets are served on (sends bounded
//!   by the peer timeout, pings, the close handshake).
//! - `error`: the error envelope and tether's errors in it.

mod api;
mod error;
mod files;
mod process;
mod pty;
mod sessions;
mod ws;

use std::sync::Arc;

use axum::Router;
use axum::extract::{OriginalUri, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::de::DeserializeOwned;

pub(crate) use error::Refusal;

use crate::AppState;

/// Where the dialect lives.
pub(crate) const PREFIX: &str = "/compat/daytona";

/// The sandbox id every host answers to besides `--sandbox-id`.
pub(crate) const LOCAL: &str = "local";

/// The largest WebSocket message the SDK takes: its sync client (httpx-ws,
/// 0.10 and later) closes the socket with 1009 on a longer one, so every
/// message the dialect sends is at most this long.
const MAX_SDK_MESSAGE: usize = 64 * 1024;

/// The dialect's routes (auth is the caller's layer).
pub(crate) fn router(st: &Arc<AppState>) -> Router<Arc<AppState>> {
    let toolbox = Router::new()
        .route("/process/execute", post(process::execute))
        .route("/process/code-run", post(process::code_run))
        .route("/process/session", get(sessions::list).post(sessions::create))
        .route("/process/session/{session_id}", get(sessions::get).delete(sessions::delete))
        .route("/process/session/{session_id}/exec", post(sessions::exec))
        .route("/process/session/{session_id}/command/{command_id}", get(sessions::command))
        .route("/process/session/{session_id}/command/{command_id}/logs", get(sessions::logs))
        .route("/process/session/{session_id}/command/{command_id}/input", post(sessions::input))
        .route("/process/pty", get(pty::list))
        .route("/process/pty/create-connect", get(pty::create_connect))
        .route("/process/pty/{session_id}", get(pty::info).delete(pty::kill))
        .route("/process/pty/{session_id}/connect", get(pty::connect))
        .route("/process/pty/{session_id}/resize", post(pty::resize))
        .route("/user-home-dir", get(files::home_dir))
        .route("/work-dir", get(files::work_dir))
        .merge(files::routes())
        .fallback(toolbox_unserved)
        .layer(axum::middleware::from_fn_with_state(st.clone(), known_sandbox));
    let api = Router::new()
        .route("/sandbox/{sandbox_id}", get(api::sandbox))
        .route("/sandbox/{sandbox_id}/toolbox-proxy-url", get(api::toolbox_proxy_url))
        .fallback(api::unserved);
    Router::new()
        .nest(&format!("{PREFIX}/toolbox/{{sandbox}}"), toolbox)
        .nest(&format!("{PREFIX}/api"), api)
        .layer(axum::middleware::from_fn(envelope_layer))
}

/// Whether `id` names this host.
pub(crate) fn is_this_host(st: &AppState, id: &str) -> bool {
    id == LOCAL || st.cfg.sandbox_id.as_deref() == Some(id)
}

/// The canonical sandbox id: `--sandbox-id`, else `local`.
pub(crate) fn host_id(st: &AppState) -> &str {
    st.cfg.sandbox_id.as_deref().unwrap_or(LOCAL)
}

/// The toolbox answers only under this host's ids.
async fn known_sandbox(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    // Inside the nest the URI has lost its prefix: the original has it.
    let full = req.extensions().get::<OriginalUri>().map_or_else(|| req.uri().path(), |u| u.0.path());
    let rest = full.strip_prefix(PREFIX).and_then(|p| p.strip_prefix("/toolbox/")).unwrap_or("");
    let id = rest.split('/').next().unwrap_or("");
    if !is_this_host(&st, id) {
        return Refusal::not_found(format!("no sandbox {id:?} here: this host is {:?}", host_id(&st)))
            .into_response();
    }
    next.run(req).await
}

/// Fills the request's path (below the sandbox) and method into every
/// refusal's envelope; an error axum answered itself (a body over the
/// limit, a bad path parameter, a method the route does not take) is put
/// in the envelope too, so the SDK still raises its typed exception.
async fn envelope_layer(req: Request, next: Next) -> Response {
    let method = req.method().as_str().to_owned();
    let full = req.uri().path().to_owned();
    let resp = next.run(req).await;
    let refusal = match resp.extensions().get::<Refusal>() {
        Some(r) => r.clone(),
        None if is_plain_error(&resp) => {
            let status = resp.status().as_u16();
            let text = axum::body::to_bytes(resp.into_body(), 4096).await.unwrap_or_default();
            let code = match status {
                400 => Some("BAD_REQUEST"),
                404 => Some("NOT_FOUND"),
                _ => None,
            };
            let mut message = String::from_utf8_lossy(&text).trim().to_owned();
            if message.is_empty() {
                let reason = resp_reason(status);
                message = format!("{method} {full}: {reason}");
            }
            let mut r = Refusal::new(status, code, message);
            if !full.starts_with(&format!("{PREFIX}/toolbox/")) {
                r = r.by_api();
            }
            let json = [(axum::http::header::CONTENT_TYPE, "application/json")];
            return (r.status, json, envelope(&r, &full, &method)).into_response();
        }
        None => return resp,
    };
    let (mut parts, _) = resp.into_parts();
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    Response::from_parts(parts, envelope(&refusal, &full, &method))
}

/// The standard reason phrase of a status.
fn resp_reason(status: u16) -> &'static str {
    axum::http::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("refused")
}

/// An error status whose body is not JSON (axum's own rejections).
fn is_plain_error(resp: &Response) -> bool {
    let json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    (resp.status().is_client_error() || resp.status().is_server_error()) && !json
}

/// The envelope's body for a request to `full` (its path below the
/// sandbox, for the toolbox).
fn envelope(r: &Refusal, full: &str, method: &str) -> axum::body::Body {
    let path = full
        .strip_prefix(PREFIX)
        .and_then(|p| p.strip_prefix("/toolbox/"))
        .map(|p| p.find('/').map_or("/", |i| &p[i..]))
        .unwrap_or(full);
    axum::body::Body::from(serde_json::to_vec(&r.body(path, method)).unwrap_or_default())
}

/// A toolbox route this dialect does not serve (git, LSP, computer use,
/// ports, the interpreter...).
async fn toolbox_unserved(req: Request) -> Response {
    Refusal::not_implemented(format!(
        "{} {} is not served by tether's Daytona dialect (see protocol/compat/daytona.md §14)",
        req.method(),
        req.uri().path()
    ))
    .into_response()
}

/// A JSON body, or 400 `INVALID_REQUEST_BODY`.
pub(crate) fn json<T: DeserializeOwned>(body: &[u8]) -> Result<T, Refusal> {
    serde_json::from_slice(body)
        .map_err(|e| Refusal::new(400, Some("INVALID_REQUEST_BODY"), format!("invalid request body: {e}")))
}

/// A query string, or 400 `BAD_REQUEST`.
pub(crate) fn query<T: DeserializeOwned>(uri: &axum::http::Uri) -> Result<T, Refusal> {
    axum::extract::Query::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|e| Refusal::bad_request(format!("invalid query: {}", e.body_text())))
}

/// Bytes as text, invalid UTF-8 replaced (§16 T5: the SDK's fields are
/// strings).
pub(crate) fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
