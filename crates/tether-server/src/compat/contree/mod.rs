//! The ConTree SDK's dialect (`protocol/compat/contree.md`), under
//! `/compat/contree`: instances (runs) as operations, content-addressed
//! file uploads and image inspection, with this host as the image `local`.
//!
//! ConTree's images are immutable filesystem states; this host is one live
//! filesystem. It is served as one image (tag `local`, a stable UUID) that
//! every non-disposable run returns as its result, so sessions and linear
//! chains work; what needs other states (an older or branched image, a
//! disposable run's discarded changes) is refused or answered as "no
//! image", never as a state the host does not have.
//!
//! A run is an ordinary tether command (listed, attachable, same limits,
//! lifetimes and restart behaviour). Its operation id is the command's
//! request key and a label, so the operations table is the command
//! registry itself: bounded by `--max-commands`, evicted with the
//! command's TTL, carried across a graceful restart. Its output is read
//! from the command's rings (sized for `truncate_output_at`) once it ends.
//!
//! # Layout
//! - `error`: the vendor's error body `{"status", "error"}` and the
//!   mapping of tether's errors onto it.
//! - `image`: the host image's UUID and the image routes (`inspect`,
//!   `images`, tags, import refused).
//! - `blobs`: `POST /v1/files` and `GET /v1/files/{sha256}`: the bounded,
//!   content-addressed store of uploads; reading bodies within their
//!   limits and the daemon's body budget.
//! - `instances`: `POST /v1/instances`: a run, its files put in place.
//! - `operations`: `GET`/`DELETE /v1/operations/{id}`.

mod blobs;
mod error;
mod image;
mod instances;
mod operations;

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::response::Response;
use axum::routing::{get, patch, post};

use crate::AppState;
use crate::oneshot::BodyBudget;
use error::Refusal;

/// Where the dialect lives (the SDK's `base_url`).
pub(crate) const PREFIX: &str = "/compat/contree";

/// The dialect's routes (auth is the caller's layer). The big bodies
/// (spawns, uploads) are charged to `budget`, the daemon's budget of
/// request-body memory that the one-shot routes share.
pub(crate) fn router(budget: BodyBudget) -> Router<Arc<AppState>> {
    let routes = Router::new()
        .route("/v1/instances", post(instances::spawn))
        .route("/v1/operations/{id}", get(operations::get).delete(operations::cancel))
        .route("/v1/files", post(blobs::upload))
        .route("/v1/files/{sha256}", get(blobs::by_sha256))
        .route("/v1/inspect/", get(image::by_tag))
        .route("/v1/inspect/{image}/", get(image::by_uuid))
        .route("/v1/inspect/{image}/list", get(image::list))
        .route("/v1/inspect/{image}/download", get(image::download))
        .route("/v1/images", get(image::images))
        .route("/v1/images/import", post(image::import))
        .route("/v1/images/{image}/tag", patch(image::tag).delete(image::untag))
        .route("/v1/whoami", get(image::whoami))
        .fallback(unserved)
        // Bodies are read with the routes' own limits, refused in the
        // vendor's shape.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(axum::Extension(budget));
    Router::new().nest(PREFIX, routes)
}

/// Anything else: 404 in the vendor's shape.
async fn unserved(req: Request) -> Response {
    let msg = format!(
        "{} {} is not served by tether's ConTree dialect (protocol/compat/contree.md)",
        req.method(),
        req.uri().path()
    );
    axum::response::IntoResponse::into_response(Refusal::new(404, msg))
}

/// The auth layer's refusal (401, 403) as `{"status", "error"}`, so the
/// SDK's error carries both.
pub(crate) fn auth_refusal(status: axum::http::StatusCode, message: &str) -> Response {
    use axum::response::IntoResponse;
    Refusal::new(status.as_u16(), message).into_response()
}
