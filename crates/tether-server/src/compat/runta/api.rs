//! The control plane: this host as the one runtime, always `running`
//! (`GET /v2/runtimes/{id}` with every key the SDK's strict `Runtime`
//! model requires, and the list the SDK falls back to), `/healthz`, and a
//! 501 `unimplemented` (or 404 for another runtime) for every call tether
//! does not serve: create, boot, pause, resume, shutdown, delete, patch
//! (resources, egress), checkpoints, secrets and the rest.

use std::sync::Arc;
use std::sync::OnceLock;

use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{PREFIX, Refusal, host_id, is_this_host, known_runtime, query};
use crate::AppState;

/// When this daemon built its routes (ms since the epoch): the runtime's
/// `created_at` and `updated_at`.
static STARTED_MS: OnceLock<i64> = OnceLock::new();

/// Notes the start time (once).
pub(super) fn note_start() {
    STARTED_MS.get_or_init(now_ms);
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0))
}

/// `GET /healthz` (below the prefix; the SDK sends its token).
pub(super) async fn healthz() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

/// `GET /v2/runtimes/{id}`: `{"data": Runtime}`.
pub(super) async fn runtime(State(st): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    match known_runtime(&st, &id) {
        Ok(()) => axum::Json(json!({ "data": runtime_json(&st) })).into_response(),
        Err(r) => r.into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    after: Option<String>,
}

/// `GET /v2/runtimes[?status=][&limit=][&after=]`: this runtime, unless
/// the status filter leaves it out or the cursor is past it.
pub(super) async fn list(State(st): State<Arc<AppState>>, req: Request) -> Response {
    let q: ListQuery = match query(req.uri()) {
        Ok(q) => q,
        Err(r) => return r.into_response(),
    };
    let wanted = q.status.as_deref().is_none_or(|s| s.split(',').any(|s| s.trim() == "running"));
    let data: Vec<Value> = if wanted && q.after.is_none() { vec![runtime_json(&st)] } else { Vec::new() };
    axum::Json(json!({ "data": data, "pagination": { "has_more": false, "next_cursor": null } }))
        .into_response()
}

/// Every call not served: 404 for another runtime's, else 501 naming it.
pub(super) async fn unserved(State(st): State<Arc<AppState>>, req: Request) -> Response {
    let full = req.uri().path();
    let path = full.strip_prefix(PREFIX).unwrap_or(full);
    if let Some(id) = path.strip_prefix("/v2/runtimes/").and_then(|r| r.split('/').next())
        && !id.is_empty()
        && !is_this_host(&st, &percent_decode(id))
    {
        return Refusal::not_found(format!(
            "runtime {:?} not found: this host is the runtime {:?}",
            percent_decode(id),
            host_id(&st)
        ))
        .into_response();
    }
    Refusal::unimplemented(format!(
        "{} {path} is not served by tether's Runta dialect: this host is one runtime, always running; \
         its lifecycle (create, boot, pause, resume, shutdown, delete), resources, egress, checkpoints, \
         secrets and the rest of the control plane are not tether's (protocol/compat/runta.md)",
        req.method()
    ))
    .into_response()
}

/// A path segment with `%XX` escapes decoded (ids as the SDK quotes them).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(h) = s.get(i + 1..i + 3)
            && let Ok(v) = u8::from_str_radix(h, 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `Runtime` model: its 23 required keys (and nothing the SDK would
/// misread). Resources are the host's: CPUs, memory from `/proc/meminfo`.
fn runtime_json(st: &AppState) -> Value {
    let id = host_id(st);
    let started = crate::compat::rfc3339(*STARTED_MS.get_or_init(now_ms));
    let (total_mib, used_mib) = memory_mib();
    let vcpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    json!({
        "id": id,
        "display_name": id,
        "status": "running",
        "desired_status": "running",
        "created_at": started,
        "updated_at": started,
        "image_id": "tether-host",
        "egress_policy": { "mode": "denylist", "denied_hosts": [] },
        "idle_policy": { "mode": "disabled" },
        "llm_tool_io_capture_enabled": false,
        "llm_session_content_capture_enabled": false,
        "llm_token_saving_policy": {
            "json_array_enabled": false,
            "log_enabled": false,
            "search_results_enabled": false,
            "git_diff_enabled": false,
        },
        "ingress_specs": [],
        "resources": {
            "requests": { "memory_mib": total_mib, "vcpus": vcpus, "disk_gib": 0 },
            "limits": { "memory_mib": total_mib },
            "current": { "memory_mib": used_mib, "observed_disk_gib": 0 },
        },
        "degraded": false,
        "ssh_enabled": false,
        "vnc_enabled": false,
        "vnc_ready": false,
        "vnc_connection": { "hostname": "", "port": 0, "username": "runta", "security_type": "X509Plain" },
        "owner_user_id": "tether",
        "can_manage": false,
        "revision": 1,
        "secret_configuration": [],
    })
}

/// The host's memory in MiB: total and in use (0, 0 when unknown).
fn memory_mib() -> (u64, u64) {
    let Ok(text) = std::fs::read_to_string("/proc/meminfo") else { return (0, 0) };
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|r| r.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let (total, available) = (field("MemTotal:"), field("MemAvailable:"));
    (total / 1024, total.saturating_sub(available) / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_percent_decoded() {
        assert_eq!(percent_decode("a%20b"), "a b");
        assert_eq!(percent_decode("local"), "local");
        assert_eq!(percent_decode("bad%zz"), "bad%zz");
    }
}
