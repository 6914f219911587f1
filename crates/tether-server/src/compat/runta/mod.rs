//! The Runta SDK's dialect (`protocol/compat/runta.md`), under
//! `/compat/runta`: the runtime routes and the exec WebSocket that
//! `runta-sdk` 0.2.5 needs. This host is the one runtime, `local` (or
//! `--sandbox-id`), always running. Every exec (the SDK's durable
//! executions, its uploads and downloads, `chmod`) is a normal tether
//! command started by the WebSocket's `start` frame: listed, attachable
//! natively, same limits, lifetimes and restart behaviour.
//!
//! # Layout
//! - `api`: `/healthz`, `GET /v2/runtimes/{id}` and the list; the
//!   lifecycle, checkpoints, egress and every other call are 501s.
//! - `files`: `GET`/`PUT /v2/runtimes/{id}/files?path=`.
//! - `stream`: the exec WebSocket `/v2/runtimes/{id}/exec/stream`.
//! - `error`: the SDK's error envelope and tether's errors in it.

mod api;
mod error;
mod files;
mod stream;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;

pub(crate) use error::Refusal;

use crate::AppState;

/// Where the dialect lives (the SDK's `endpoint`).
pub(crate) const PREFIX: &str = "/compat/runta";

/// The runtime id every host answers to besides `--sandbox-id`.
pub(crate) const LOCAL: &str = "local";

/// The dialect's routes (auth is the caller's layer). Uploads stream to
/// disk: no body limit.
pub(crate) fn router() -> Router<Arc<AppState>> {
    api::note_start();
    let dialect = Router::new()
        .route("/healthz", get(api::healthz))
        .route("/v2/runtimes", get(api::list).fallback(api::unserved))
        .route("/v2/runtimes/{runtime}", get(api::runtime).fallback(api::unserved))
        .route("/v2/runtimes/{runtime}/files", get(files::read).put(files::write).fallback(api::unserved))
        .route("/v2/runtimes/{runtime}/exec/stream", get(stream::upgrade).fallback(api::unserved))
        .fallback(api::unserved)
        .layer(axum::extract::DefaultBodyLimit::disable());
    Router::new().nest(PREFIX, dialect)
}

/// Whether `id` names this host.
pub(crate) fn is_this_host(st: &AppState, id: &str) -> bool {
    id == LOCAL || st.cfg.sandbox_id.as_deref() == Some(id)
}

/// The canonical runtime id: `--sandbox-id`, else `local`.
pub(crate) fn host_id(st: &AppState) -> &str {
    st.cfg.sandbox_id.as_deref().unwrap_or(LOCAL)
}

/// Every `/v2/runtimes/{id}...` route answers only under this host's ids:
/// another id is 404 `not_found` (before any upgrade).
pub(crate) fn known_runtime(st: &AppState, id: &str) -> Result<(), Refusal> {
    if is_this_host(st, id) {
        return Ok(());
    }
    Err(Refusal::not_found(format!("runtime {id:?} not found: this host is the runtime {:?}", host_id(st))))
}

/// A query string, or 422 `invalid_argument`.
pub(crate) fn query<T: serde::de::DeserializeOwned>(uri: &axum::http::Uri) -> Result<T, Refusal> {
    axum::extract::Query::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|e| Refusal::invalid(format!("invalid query: {}", e.body_text())))
}

/// The auth layer's refusal (401, 403) in the SDK's envelope, so it raises
/// `ApiError` with its `code`.
pub(crate) fn auth_refusal(status: axum::http::StatusCode, message: &str) -> axum::response::Response {
    use axum::response::IntoResponse;
    let code =
        if status == axum::http::StatusCode::UNAUTHORIZED { "unauthenticated" } else { "permission_denied" };
    Refusal::new(status.as_u16(), code, message).into_response()
}
