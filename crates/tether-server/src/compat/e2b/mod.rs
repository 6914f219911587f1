//! The E2B SDKs' dialect (`protocol/compat/e2b.md`), under `/compat/e2b`:
//! the few control-plane routes `Sandbox.connect` and `Sandbox.create`
//! need, and envd, the in-sandbox daemon, over the Connect protocol (JSON
//! codec). Served so far: the control plane, `/health`, the Process
//! service, the Filesystem service (watches included) and `/files`. Its commands are normal tether commands (listed,
//! attachable natively, same limits and restart behaviour), addressed by
//! their pid as E2B does.
//!
//! # Layout
//! - `connect`: the Connect wire: envelopes, the end-of-stream frame,
//!   codes and unary errors.
//! - `api`: the control plane (`/v2/sandboxes...`, `/sandboxes/...`).
//! - `process`: `process.Process/*`.
//! - `fs`: `filesystem.Filesystem/*` and `GET`/`POST /files`.
//! - `watch`: `WatchDir` and the sync SDK's watchers, on inotify.

mod api;
mod connect;
mod fs;
mod process;
mod watch;

pub(crate) use watch::Watchers;

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};

use crate::AppState;

/// Where the dialect lives (both the SDK's `api_url` and `sandbox_url`).
pub(crate) const PREFIX: &str = "/compat/e2b";

/// The dialect's routes (auth is the caller's layer).
pub(crate) fn router() -> Router<Arc<AppState>> {
    let routes = Router::new()
        .route("/v2/sandboxes", post(api::create))
        .route("/v2/sandboxes/{sandbox_id}/connect", post(api::connect))
        .route("/sandboxes/{sandbox_id}", delete(api::kill))
        .route("/sandboxes/{sandbox_id}/timeout", post(api::set_timeout))
        .route("/health", get(health))
        .route("/process.Process/Start", post(process::start))
        .route("/process.Process/Connect", post(process::connect))
        .route("/process.Process/List", post(process::list))
        .route("/process.Process/SendInput", post(process::send_input))
        .route("/process.Process/SendSignal", post(process::send_signal))
        .route("/process.Process/CloseStdin", post(process::close_stdin))
        .route(
            "/process.Process/StreamInput",
            post(process::stream_input).layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route("/process.Process/Update", post(process::update))
        .route("/filesystem.Filesystem/Stat", post(fs::stat))
        .route("/filesystem.Filesystem/ListDir", post(fs::list_dir))
        .route("/filesystem.Filesystem/MakeDir", post(fs::make_dir))
        .route("/filesystem.Filesystem/Move", post(fs::move_entry))
        .route("/filesystem.Filesystem/Remove", post(fs::remove))
        .route("/filesystem.Filesystem/WatchDir", post(watch::watch_dir))
        .route("/filesystem.Filesystem/CreateWatcher", post(watch::create_watcher))
        .route("/filesystem.Filesystem/GetWatcherEvents", post(watch::get_watcher_events))
        .route("/filesystem.Filesystem/RemoveWatcher", post(watch::remove_watcher))
        .route("/files", get(fs::read).post(fs::write).layer(axum::extract::DefaultBodyLimit::disable()))
        .fallback(unserved);
    Router::new().nest(PREFIX, routes)
}

/// `GET /health`: envd is up (204).
async fn health() -> Response {
    axum::http::StatusCode::NO_CONTENT.into_response()
}

/// Anything else: an RPC (`/<package>.<Service>/<Method>`) gets 404
/// `unimplemented` (a JS stream reads only the status, and 404 is
/// `unimplemented` to it); a control-plane route 501 in its error shape.
async fn unserved(req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let rpc = path.trim_start_matches('/').split('/').next().is_some_and(|s| s.contains('.'));
    if rpc {
        let e = connect::RpcError::new(
            connect::Code::Unimplemented,
            format!("{path} is not served by tether's E2B dialect yet (protocol/compat/e2b.md)"),
        );
        let mut resp = e.into_response();
        *resp.status_mut() = axum::http::StatusCode::NOT_FOUND;
        return resp;
    }
    api::error(501, &format!("tether: {} {path} is not supported (protocol/compat/e2b.md §12)", req.method()))
}
