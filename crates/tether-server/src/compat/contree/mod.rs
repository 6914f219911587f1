//! The ConTree SDK's dialect (`protocol/compat/contree.md`), under
//! `/compat/contree`: instances (runs) as operations, content-addressed
//! file uploads and image inspection, with this host as the image `local`.

use std::sync::Arc;

use axum::Router;

use crate::AppState;

/// Where the dialect lives (the SDK's `base_url`).
pub(crate) const PREFIX: &str = "/compat/contree";

/// The dialect's routes (auth is the caller's layer).
pub(crate) fn router() -> Router<Arc<AppState>> {
    Router::new().nest(PREFIX, Router::new())
}
