//! The toolbox's file routes (`protocol/compat/daytona.md` §11, §12).
// A stub until the routes land.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};

use crate::AppState;

/// The file routes, relative to the toolbox root.
pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
}

/// `GET /user-home-dir`: the daemon user's `$HOME`.
pub(super) async fn home_dir() -> Response {
    let dir = std::env::var("HOME").unwrap_or_else(|_| "/".to_owned());
    axum::Json(serde_json::json!({ "dir": dir })).into_response()
}

/// `GET /work-dir`: the files root (where relative paths start).
pub(super) async fn work_dir(State(st): State<Arc<AppState>>) -> Response {
    let dir = st.files.as_ref().map_or_else(|| "/".to_owned(), |f| f.root().to_string_lossy().into_owned());
    axum::Json(serde_json::json!({ "dir": dir })).into_response()
}
