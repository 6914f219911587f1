//! Prometheus metrics (`GET /metrics`, text exposition format 0.0.4).
//!
//! Events are counted where they happen, through the `metrics` facade
//! (`tether-exec` counts spawns, output bytes, attaches and gaps; `accept`
//! connections; `auth` refusals). What is a state rather than an event
//! (commands by state, attached clients, memory committed against its
//! limit) is read from the manager at each scrape. The recorder is
//! process-wide and installed once, by the first server made.
//!
//! A restart in place execs the binary again, which starts the counters
//! from zero (Prometheus' `rate()` takes resets in its stride);
//! `tether_restarts_total` counts the restarts since the daemon was
//! started, through [`RESTARTS_ENV`].

use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::AppState;

/// The environment variable through which a daemon tells the binary it
/// execs for a restart how many restarts came before (removed from
/// commands' environments).
pub const RESTARTS_ENV: &str = "TETHER_RESTARTS";

/// Buckets of `tether_spawn_seconds`, from a fast fork+exec to a slow one.
const SPAWN_BUCKETS: &[f64] = &[0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0];

/// The process's recorder (`None` if another recorder was installed first).
static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the recorder (once per process) and describes the metrics.
pub(crate) fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full("tether_spawn_seconds".into()), SPAWN_BUCKETS)
                .ok()?;
            let handle =
                builder.install_recorder().map_err(|e| tracing::warn!("metrics disabled: {e}")).ok()?;
            describe();
            let restarts = std::env::var(RESTARTS_ENV).ok().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            metrics::counter!("tether_restarts_total").absolute(restarts);
            metrics::gauge!("tether_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            Some(handle)
        })
        .as_ref()
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "tether_commands_started_total",
        "Commands started (kind: process, or shell for a named shell's)"
    );
    describe_counter!("tether_spawn_failures_total", "Commands whose process could not be started");
    describe_histogram!("tether_spawn_seconds", Unit::Seconds, "Time to start a command's process");
    describe_counter!("tether_output_bytes_total", Unit::Bytes, "Output bytes read from commands, by stream");
    describe_counter!(
        "tether_attaches_total",
        "Attachments to commands (from: start, or offset for a resume or a tail)"
    );
    describe_counter!("tether_gaps_total", "Gaps served: a reader asked for bytes the ring no longer held");
    describe_counter!("tether_gap_bytes_total", Unit::Bytes, "Bytes skipped by the gaps served");
    describe_counter!("tether_connections_total", "Client connections accepted");
    describe_counter!("tether_connections_refused_total", "Connections closed at once: the connection cap");
    describe_gauge!(
        "tether_connections",
        "HTTP connections open (one upgraded to a WebSocket leaves it for tether_websockets)"
    );
    describe_gauge!("tether_websockets", "Native WebSocket connections open");
    describe_counter!("tether_auth_rejected_total", "Requests refused (reason: token, origin, host)");
    describe_counter!("tether_restarts_total", "Graceful restarts in place since the daemon started");
    describe_gauge!("tether_commands", "Commands held, by state (running, queued, exited)");
    describe_gauge!("tether_shells", "Named shells alive");
    describe_gauge!("tether_attached_clients", "Clients attached to commands");
    describe_gauge!(
        "tether_memory_committed_bytes",
        Unit::Bytes,
        "Ring and screen memory committed to held commands"
    );
    describe_gauge!(
        "tether_memory_limit_bytes",
        Unit::Bytes,
        "The limit on committed ring and screen memory"
    );
    describe_gauge!("tether_build_info", "The daemon's version (always 1)");
    // Counters of rare events exist from the start, at 0, so that a rate
    // over them is defined before the first one.
    for name in ["tether_spawn_failures_total", "tether_gaps_total", "tether_gap_bytes_total"] {
        metrics::counter!(name).absolute(0);
    }
    metrics::counter!("tether_connections_refused_total").absolute(0);
    metrics::gauge!("tether_websockets").set(0.0);
}

/// A gauge of things open: up by one while this lives.
pub(crate) struct Open(&'static str);

impl Open {
    pub(crate) fn new(gauge: &'static str) -> Open {
        metrics::gauge!(gauge).increment(1);
        Open(gauge)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        metrics::gauge!(self.0).decrement(1);
    }
}

/// `GET /metrics`.
pub(crate) async fn handler(State(st): State<Arc<AppState>>) -> Response {
    let Some(handle) = install() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "metrics are disabled in this process\n").into_response();
    };
    let m = &st.manager;
    let (mut running, mut queued, mut exited, mut attached) = (0usize, 0usize, 0usize, 0usize);
    for c in m.list() {
        attached += c.attached;
        match (&c.exit, c.queued) {
            (Some(_), _) => exited += 1,
            (None, true) => queued += 1,
            (None, false) => running += 1,
        }
    }
    for (state, n) in [("running", running), ("queued", queued), ("exited", exited)] {
        metrics::gauge!("tether_commands", "state" => state).set(n as f64);
    }
    let live_shells = m.shells().iter().filter(|s| s.closed.is_none()).count();
    metrics::gauge!("tether_shells").set(live_shells as f64);
    metrics::gauge!("tether_attached_clients").set(attached as f64);
    metrics::gauge!("tether_memory_committed_bytes").set(m.committed_ring_bytes() as f64);
    metrics::gauge!("tether_memory_limit_bytes").set(m.config().max_total_ring_bytes as f64);
    let body = handle.render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}
