//! The control-plane subset (`protocol/compat/daytona.md` §5): this host as
//! the one started sandbox, and where its toolbox is. Everything else the
//! control plane does (create, delete, snapshots, volumes...) is a 501.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{PREFIX, Refusal, host_id, is_this_host};
use crate::AppState;

/// `GET /api/sandbox/{id}`: the sandbox, for `local` and `--sandbox-id`.
pub(super) async fn sandbox(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !is_this_host(&st, &id) {
        return no_such(&st, &id);
    }
    let id = host_id(&st);
    let created = crate::compat::rfc3339(started_ms());
    axum::Json(json!({
        "id": id,
        "organizationId": "local",
        "name": id,
        "user": user_name(),
        "env": {},
        "labels": {"code-toolbox-language": "python"},
        "public": false,
        "networkBlockAll": false,
        "kvm": false,
        "target": "local",
        "cpu": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "gpu": 0,
        "memory": memory_gib(),
        "disk": disk_gib(),
        "state": "started",
        "desiredState": "started",
        "createdAt": created,
        "updatedAt": created,
        "toolboxProxyUrl": toolbox_url(&headers),
        "daemonVersion": env!("CARGO_PKG_VERSION"),
    }))
    .into_response()
}

/// `GET /api/sandbox/{id}/toolbox-proxy-url`.
pub(super) async fn toolbox_proxy_url(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !is_this_host(&st, &id) {
        return no_such(&st, &id);
    }
    axum::Json(json!({ "url": toolbox_url(&headers) })).into_response()
}

/// Any other control-plane call: 501.
pub(super) async fn unserved(req: Request) -> Response {
    Refusal::not_implemented(format!(
        "{} {}: tether serves one existing sandbox (this host); creating, deleting, starting, \
         stopping sandboxes, snapshots and volumes are not supported",
        req.method(),
        req.uri().path()
    ))
    .by_api()
    .into_response()
}

fn no_such(st: &AppState, id: &str) -> Response {
    Refusal::not_found(format!("sandbox {id:?} not found: this host is {:?}", host_id(st)))
        .by_api()
        .into_response()
}

/// The toolbox's absolute URL as this client reaches the daemon (its
/// `Host`, `https` when a proxy in front says so, and the path prefix a
/// proxy routes this daemon under, `X-Forwarded-Prefix: /s/b`), no
/// trailing slash.
fn toolbox_url(headers: &HeaderMap) -> String {
    let host = headers.get(axum::http::header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("localhost");
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    let prefix = forwarded_prefix(headers).unwrap_or("");
    format!("{}://{host}{prefix}{PREFIX}/toolbox", if https { "https" } else { "http" })
}

/// `X-Forwarded-Prefix` without its trailing slash, if it is a plain path
/// (`/` then `[A-Za-z0-9._~-]` segments, no `..`, at most 256 bytes);
/// anything else is ignored.
fn forwarded_prefix(headers: &HeaderMap) -> Option<&str> {
    let p = headers.get("x-forwarded-prefix")?.to_str().ok()?.trim_end_matches('/');
    let plain = p.starts_with('/')
        && p.len() <= 256
        && p.split('/').skip(1).all(|s| {
            !s.is_empty() && s != ".." && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._~-".contains(&b))
        });
    plain.then_some(p)
}

/// The daemon's account name.
fn user_name() -> String {
    std::env::var("USER").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| {
        let uid = rustix::process::getuid().as_raw();
        if uid == 0 { "root".to_owned() } else { uid.to_string() }
    })
}

/// When this process started (the sandbox's creation time), in ms.
fn started_ms() -> i64 {
    static START: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *START.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0))
    })
}

/// Total memory in GiB (rounded), from `/proc/meminfo`.
fn memory_gib() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kib = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0);
    (kib + (1 << 19)) >> 20
}

/// Size of the root file system in GiB.
fn disk_gib() -> u64 {
    rustix::fs::statvfs("/").map_or(0, |s| s.f_blocks.saturating_mul(s.f_frsize) >> 30)
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue};

    #[test]
    fn the_toolbox_url_keeps_a_plain_forwarded_prefix_only() {
        let url = |prefix: Option<&str>| {
            let mut h = HeaderMap::new();
            h.insert("host", HeaderValue::from_static("proxy:8080"));
            if let Some(p) = prefix {
                h.insert(
                    "x-forwarded-prefix",
                    HeaderValue::from_str(p).unwrap_or(HeaderValue::from_static("")),
                );
            }
            super::toolbox_url(&h)
        };
        assert_eq!(url(None), "http://proxy:8080/compat/daytona/toolbox");
        assert_eq!(url(Some("/s/b")), "http://proxy:8080/s/b/compat/daytona/toolbox");
        assert_eq!(url(Some("/s/b/")), "http://proxy:8080/s/b/compat/daytona/toolbox");
        for bad in ["s/b", "/s/../x", "/s//b", "/s/b?x", "//evil.example", "/a b"] {
            assert_eq!(url(Some(bad)), "http://proxy:8080/compat/daytona/toolbox", "{bad}");
        }
    }
}
