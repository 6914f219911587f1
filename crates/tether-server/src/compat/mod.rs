//! Other SDKs' wire dialects, one folder each (`compat/<name>/`): routes,
//! the mapping onto the command manager, the vendor's wire types and its
//! error shapes. A dialect translates; it is built on the same pieces as
//! the native protocol and never re-implements them: the connection's
//! writer task, stdin pump and keepalive (`crate::conn`), the one error
//! type (`crate::Error`, mapped to the vendor's shape by the dialect), the
//! auth and Origin checks (a layer on every route) and the limits.
//!
//! - `langsmith`: the LangSmith sandbox client (`protocol/compat/langsmith.md`).
//! - `daytona`: the Daytona SDK's control-plane subset and toolbox
//!   (`protocol/compat/daytona.md`).
//! - `e2b`: the E2B SDKs' control plane and envd (`protocol/compat/e2b.md`).
//! - `runloop`: the Runloop SDK's devbox routes (`protocol/compat/runloop.md`).
//! - `runta`: the Runta SDK's runtime routes and exec WebSocket
//!   (`protocol/compat/runta.md`).
//! - `contree`: the ConTree SDK's instances, operations, files and images
//!   (`protocol/compat/contree.md`).

pub(crate) mod atomic;
pub(crate) mod contree;
pub(crate) mod daytona;
pub(crate) mod e2b;
pub(crate) mod fileinfo;
pub(crate) mod langsmith;
pub(crate) mod runloop;
pub(crate) mod runta;
pub(crate) mod utf8;

/// An auth refusal (401, 403) in the shape of the dialect `path` belongs
/// to, for the dialects whose SDKs type errors by their body; `None`:
/// tether's own shape.
pub(crate) fn refusal(
    path: &str,
    status: axum::http::StatusCode,
    message: &str,
) -> Option<axum::response::Response> {
    let under = |prefix: &str| path.strip_prefix(prefix).is_some_and(|r| r.is_empty() || r.starts_with('/'));
    if under(runloop::PREFIX) {
        Some(runloop::auth_refusal(status, message))
    } else if under(runta::PREFIX) {
        Some(runta::auth_refusal(status, message))
    } else if under(contree::PREFIX) {
        Some(contree::auth_refusal(status, message))
    } else {
        None
    }
}

/// Milliseconds since the epoch as RFC 3339 in UTC, to the second
/// (`2025-01-01T00:00:00Z`). The date is Howard Hinnant's
/// `civil_from_days`.
pub(crate) fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem / 60 % 60, rem % 60)
}
