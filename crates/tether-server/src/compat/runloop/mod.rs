//! The Runloop SDK's dialect (`protocol/compat/runloop.md`), under
//! `/compat/runloop`: the devbox routes `runloop-api-client` (2.0.0 and
//! 3.0.0) needs for executions, their long-poll waits and server-sent
//! output streams, named shells and files.

use std::sync::Arc;

use axum::Router;

use crate::AppState;

/// Where the dialect lives (the SDK's `base_url`).
pub(crate) const PREFIX: &str = "/compat/runloop";

/// The dialect's routes (auth is the caller's layer).
pub(crate) fn router() -> Router<Arc<AppState>> {
    Router::new().nest(PREFIX, Router::new())
}
