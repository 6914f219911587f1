//! The control plane (`protocol/compat/e2b.md` §5): this host is the one
//! sandbox. `connect` and `create` answer it (create makes nothing new),
//! with the token the client presented as the envd access token; `kill`
//! and `set_timeout` change nothing (the host cannot be deleted, and never
//! times out). Errors are `{"code": <int>, "message"}`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::AppState;
use crate::compat::daytona::{host_id, is_this_host};

/// The envd version announced: the highest feature gate both SDKs know,
/// so every feature they have is enabled.
const ENVD_VERSION: &str = "0.6.4";

/// `POST /v2/sandboxes/{id}/connect`: 200 with the sandbox.
pub(super) async fn connect(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !is_this_host(&st, &id) {
        return not_found(&st, &id);
    }
    (StatusCode::OK, axum::Json(sandbox(&st, &headers))).into_response()
}

/// `POST /v2/sandboxes`: 201 with the same sandbox (Python types only 201),
/// or 400 for an option the host cannot honour.
pub(super) async fn create(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let req: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return error(400, &format!("the request body is not JSON: {e}")),
        }
    };
    let set = |k: &str| req.get(k).is_some_and(|v| !v.is_null());
    let non_empty = |k: &str| req.get(k).and_then(Value::as_object).is_some_and(|o| !o.is_empty());
    let refused = if non_empty("envVars") {
        Some("envVars")
    } else {
        ["mcp", "network", "iam", "volumeMounts", "autoResume"].into_iter().find(|k| set(k)).or_else(|| {
            if req.get("autoPause").and_then(Value::as_bool) == Some(true) {
                Some("autoPause")
            } else if req.get("allow_internet_access").and_then(Value::as_bool) == Some(false) {
                Some("allow_internet_access: false")
            } else {
                None
            }
        })
    };
    if let Some(field) = refused {
        return error(400, &format!("tether: {field} is not supported: the sandbox is the daemon's host"));
    }
    (StatusCode::CREATED, axum::Json(sandbox(&st, &headers))).into_response()
}

/// `DELETE /sandboxes/{id}`: 204, nothing killed.
pub(super) async fn kill(State(st): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    if !is_this_host(&st, &id) {
        return not_found(&st, &id);
    }
    StatusCode::NO_CONTENT.into_response()
}

/// `POST /sandboxes/{id}/timeout`: 204, nothing changes.
pub(super) async fn set_timeout(State(st): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    if !is_this_host(&st, &id) {
        return not_found(&st, &id);
    }
    StatusCode::NO_CONTENT.into_response()
}

/// The control plane's error shape (both keys are required by the SDK).
pub(super) fn error(status: u16, message: &str) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, axum::Json(json!({ "code": status, "message": message }))).into_response()
}

fn not_found(st: &AppState, id: &str) -> Response {
    error(404, &format!("sandbox {id:?} not found: this host is {:?}", host_id(st)))
}

/// The `Sandbox` model: the required keys, and the token the client
/// authenticated with as the envd access token (`X-Access-Token` from then
/// on; revoked with the daemon token).
fn sandbox(st: &AppState, headers: &HeaderMap) -> Value {
    let token = headers.get("x-api-key").and_then(|v| v.to_str().ok()).unwrap_or_default().trim();
    json!({
        "templateID": "tether",
        "sandboxID": host_id(st),
        "clientID": "tether",
        "envdVersion": ENVD_VERSION,
        "envdAccessToken": token,
    })
}
