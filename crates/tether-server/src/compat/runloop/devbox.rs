//! The devbox itself (`protocol/compat/runloop.md` §3): this host, always
//! `running`. `shutdown` does not stop it (the SDK calls it when a `with
//! devbox:` block ends); it answers the view, still running.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Refusal, check_devbox, json_body};
use crate::AppState;

/// A devbox `wait_for_status`'s hold when the request names none (the
/// SDK asks for 30 s and reads for 5 s more).
const DEFAULT_HOLD: Duration = Duration::from_secs(30);

/// `{devbox_id}` in the path.
#[derive(Debug, Deserialize)]
pub(super) struct DevboxPath {
    devbox_id: String,
}

/// `DevboxWaitForStatusParams`.
#[derive(Debug, Deserialize)]
struct WaitForStatus {
    statuses: Vec<String>,
    /// Seconds, a float on the wire (`30.0`).
    #[serde(default)]
    timeout_seconds: Option<f64>,
}

/// `GET /v1/devboxes/{id}`: the `DevboxView`.
pub(super) async fn get(State(st): State<Arc<AppState>>, Path(p): Path<DevboxPath>) -> Response {
    match check_devbox(&st, &p.devbox_id) {
        Ok(()) => axum::Json(view(&p.devbox_id)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `GET /v1/devboxes`: this one devbox (by its `--sandbox-id` name when
/// it has one), one page.
pub(super) async fn list(State(st): State<Arc<AppState>>) -> Response {
    let id = st.cfg.sandbox_id.as_deref().unwrap_or("local");
    axum::Json(json!({ "devboxes": [view(id)], "has_more": false, "total_count": 1, "remaining_count": 0 }))
        .into_response()
}

/// `POST /v1/devboxes/{id}/wait_for_status`: at once when `running` is
/// among the statuses; else it holds for the timeout and answers 408 (the
/// devbox never leaves `running`).
pub(super) async fn wait_for_status(
    State(st): State<Arc<AppState>>,
    Path(p): Path<DevboxPath>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let r = async {
        check_devbox(&st, &p.devbox_id)?;
        let req: WaitForStatus = json_body(&body)?;
        if req.statuses.iter().any(|s| s == "running") {
            return Ok(axum::Json(view(&p.devbox_id)).into_response());
        }
        let hold =
            super::exec::hold(req.timeout_seconds, DEFAULT_HOLD)?.min(super::exec::read_budget(&headers));
        tokio::select! {
            () = tokio::time::sleep(hold) => {}
            () = st.shutdown.cancelled() => {}
        }
        Err(Refusal::keep_waiting(format!(
            "devbox {:?} is running and stays so; it never reaches {:?}",
            p.devbox_id, req.statuses
        )))
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

/// `POST /v1/devboxes/{id}/shutdown`: not honoured (tether does not stop
/// its host); the view, still running.
pub(super) async fn shutdown(State(st): State<Arc<AppState>>, Path(p): Path<DevboxPath>) -> Response {
    match check_devbox(&st, &p.devbox_id) {
        Ok(()) => {
            tracing::info!(devbox = %p.devbox_id, "runloop shutdown asked: the host stays up");
            axum::Json(view(&p.devbox_id)).into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// The `DevboxView` (every field the SDK requires).
fn view(id: &str) -> Value {
    static SINCE: OnceLock<u64> = OnceLock::new();
    let since = *SINCE
        .get_or_init(|| SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64));
    json!({
        "id": id,
        "name": id,
        "status": "running",
        "capabilities": [],
        "create_time_ms": since,
        "launch_parameters": {},
        "metadata": {},
        "state_transitions": [{ "status": "running", "transition_time_ms": since }],
    })
}
