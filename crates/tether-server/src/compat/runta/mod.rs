//! The Runta SDK's dialect (`protocol/compat/runta.md`), under
//! `/compat/runta`: the runtime routes and the exec WebSocket that
//! `runta-sdk` needs.

use std::sync::Arc;

use axum::Router;

use crate::AppState;

/// Where the dialect lives (the SDK's `endpoint`).
pub(crate) const PREFIX: &str = "/compat/runta";

/// The dialect's routes (auth is the caller's layer).
pub(crate) fn router() -> Router<Arc<AppState>> {
    Router::new().nest(PREFIX, Router::new())
}
