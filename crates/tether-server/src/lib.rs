//! The tether daemon's transport: HTTP routes, WebSocket connections, auth,
//! and the mapping between wire messages and the command manager.
//!
//! [`Server::run`] serves a listener until a shutdown future resolves, then
//! closes every WebSocket with 1001 (going away), ends every event stream
//! (the LangSmith dialect's `ServerShuttingDown`), kills and reaps commands
//! (unless configured to leave them) and returns. [`Server::serve`] can
//! also stop for a restart: the same, but the commands and the listening
//! socket are handed over ([`Ended::Restart`]) for the re-executed daemon,
//! which picks them up with [`Server::resume`].
//!
//! # Layout
//! - `config`: [`ServerConfig`].
//! - `accept`: the accept loop: hyper HTTP/1.1 connections, with a header
//!   timeout, a deadline to authenticate and a connection cap that keeps
//!   room for clients with the token.
//! - `auth`: bearer token ([`Tokens`], replaceable while serving, revoking
//!   what used the old one) and Origin checks (a middleware on every route
//!   but `/healthz`), the `Host` check (on every route).
//! - `conn/`: one native WebSocket connection: the read loop, one handler
//!   per request, attachments and their forwarders; and the pieces every
//!   WebSocket wire is built on, the dialects' too: the writer task with
//!   its bounded queue and send timeout, the stdin pump with its window,
//!   the keepalive. Generic over `Sink`/`Stream` so it can be tested
//!   without sockets.
//! - `error`: the server's one error type (a code and a message, from
//!   `tether-exec` and `tether-files` errors), shaped for each wire at its
//!   edge.
//! - `map`: wire types <-> `tether-exec` types.
//! - `metrics`: Prometheus `/metrics` (behind the token, or unauthenticated
//!   on a listener of its own: [`Server::metrics_router`]).
//! - `files`: the file routes (`/v1/files...`): streaming reads and atomic
//!   writes, stat, list, mkdir, remove, rename, tar streams, over
//!   `tether-files`.
//! - `oneshot`: `POST /v1/exec` and `POST /v1/code`: run to the end, answer
//!   with status and output in one response (JSON or MessagePack).
//! - `compat/<name>/`: other SDKs' dialects, on the same pieces; today
//!   `compat/langsmith/`, the LangSmith sandbox client's
//!   (`protocol/compat/langsmith.md`): its WebSocket, server-sent events,
//!   legacy `POST /execute`, file and search routes.
//! - `tls`: [`Tls`], the listener's certificate and key (rustls), read
//!   again on reload.
//! - `web`: the browser terminal page, built from `web/` by `build.rs` and
//!   embedded. Served without auth: it holds no data, and asks for the
//!   token, which it sends only inside the WebSocket subprotocol list.
#![forbid(unsafe_code)]

mod accept;
mod auth;
mod compat;
mod config;
mod conn;
mod error;
mod files;
#[doc(hidden)]
pub mod fuzzing;
mod map;
mod metrics;
mod oneshot;
mod shards;
mod tls;
mod web;
mod wire;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tether_exec::Manager;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use auth::{Token, Tokens};
pub use config::{ConfigError, ServerConfig, default_max_connections, normalize_host, normalize_origin};
pub use conn::AttachQuery;
pub use metrics::RESTARTS_ENV;
pub use oneshot::default_interpreters;
pub use tether_exec::Handover;
pub use tls::{Tls, TlsError};

pub(crate) use error::Error;

/// The daemon.
pub struct Server {
    state: Arc<AppState>,
}

struct AppState {
    cfg: ServerConfig,
    manager: Manager,
    /// Cancelled when shutdown begins; every connection watches it.
    shutdown: CancellationToken,
    /// Every upgraded WebSocket connection and every event-stream
    /// response, so shutdown can wait for them.
    conns: TaskTracker,
    /// The root of the file routes (`None`: it could not be opened).
    files: Option<Arc<tether_files::Files>>,
    /// The LangSmith dialect's stdin queue per command, shared by the
    /// command's connections one after another (see `compat::langsmith`).
    langsmith_stdin: compat::langsmith::StdinPumps,
    /// Held while a Daytona PTY session is looked up and started, so that
    /// two creates of one id cannot both start one.
    daytona_pty_create: tokio::sync::Mutex<()>,
    /// The E2B sync SDK's directory watchers, by id.
    e2b_watchers: compat::e2b::Watchers,
}

/// What stops [`Server::serve`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Close every connection, end the commands (see
    /// [`ServerConfig::kill_on_shutdown`]) and return.
    Shutdown,
    /// Close every connection and hand the commands and the listening
    /// socket over, for a re-executed daemon.
    Restart,
}

/// Why [`Server::serve`] returned.
#[derive(Debug)]
pub enum Ended {
    /// Shut down.
    Shutdown,
    /// Stopped for a restart: the commands, and the listening socket under
    /// the name [`LISTENER_FD`].
    Restart(Handover),
}

/// The listening socket's name in a [`Handover`].
pub const LISTENER_FD: &str = "listener";

/// The environment variable that carries the handover state's fd to a
/// re-executed daemon (removed from commands' environments).
pub const HANDOVER_ENV: &str = "TETHER_HANDOVER_FD";

/// In-flight HTTP requests and WebSocket connections get this long to end
/// once the daemon stops.
const STOP_GRACE: Duration = Duration::from_secs(5);

impl Server {
    /// A server with its own command manager.
    pub fn new(cfg: ServerConfig) -> Server {
        let manager = Manager::new(manager_config(&cfg), cfg.kill_on_shutdown);
        Server::with_manager(cfg, manager)
    }

    /// A server that takes over the commands of a previous daemon.
    pub fn resume(cfg: ServerConfig, handover: &mut Handover) -> Server {
        let manager = Manager::resume(manager_config(&cfg), cfg.kill_on_shutdown, handover);
        Server::with_manager(cfg, manager)
    }

    fn with_manager(cfg: ServerConfig, manager: Manager) -> Server {
        metrics::install();
        let root =
            cfg.files_root.clone().or_else(|| std::env::current_dir().ok()).unwrap_or_else(|| "/".into());
        let files = match tether_files::Files::new(&root, cfg.files_root.is_some()) {
            Ok(f) => Some(Arc::new(f)),
            Err(e) => {
                tracing::error!("file routes disabled: {e}");
                None
            }
        };
        Server {
            state: Arc::new(AppState {
                cfg,
                manager,
                shutdown: CancellationToken::new(),
                conns: TaskTracker::new(),
                files,
                langsmith_stdin: Default::default(),
                daytona_pty_create: Default::default(),
                e2b_watchers: Default::default(),
            }),
        }
    }

    /// The command manager behind this server.
    pub fn manager(&self) -> &Manager {
        &self.state.manager
    }

    /// The axum router (all routes, auth included).
    fn router(&self) -> Router {
        use compat::langsmith;
        let st = self.state.clone();
        let budget = oneshot::BodyBudget::new(st.cfg.max_body_memory);
        let oneshot = Router::new()
            .route("/v1/exec", post(oneshot::exec_handler))
            .route("/v1/code", post(oneshot::code_handler))
            .route("/compat/langsmith/execute", post(langsmith::legacy_execute))
            .route("/compat/langsmith/execute/stream/start", post(langsmith::sse_start))
            .route("/compat/langsmith/execute/stream/resume", post(langsmith::sse_resume))
            .layer(axum::extract::DefaultBodyLimit::max(oneshot::MAX_BODY))
            .layer(axum::middleware::from_fn_with_state(budget.clone(), oneshot::body_budget));
        // Uploads stream to disk: no body limit.
        let files = Router::new()
            .route("/v1/files", get(files::read).put(files::write).delete(files::remove))
            .route("/v1/files/stat", get(files::stat))
            .route("/v1/files/list", get(files::list))
            .route("/v1/files/mkdir", post(files::mkdir))
            .route("/v1/files/rename", post(files::rename))
            .route("/v1/files/tar", get(files::tar_out).put(files::tar_in))
            .route("/compat/langsmith/upload", post(langsmith::upload))
            .route("/compat/langsmith/download", get(langsmith::download))
            .route("/compat/langsmith/glob", post(langsmith::glob))
            .route("/compat/langsmith/grep", post(langsmith::grep))
            .layer(axum::extract::DefaultBodyLimit::disable());
        let authed = Router::new()
            .route("/v1/ws", get(ws_handler))
            .route("/v1/commands", get(list_handler))
            .route("/metrics", get(metrics::handler))
            .route("/compat/langsmith/execute/ws", get(langsmith::ws_handler))
            .merge(oneshot)
            .merge(files)
            .merge(compat::daytona::router(&st))
            .merge(compat::e2b::router())
            .merge(compat::runloop::router(budget.clone()))
            .merge(compat::runta::router())
            .merge(compat::contree::router(budget))
            .layer(axum::middleware::from_fn_with_state(st.clone(), auth::require));
        Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/", get(page_handler))
            .route("/index.html", get(page_handler))
            .route("/app.js", get(page_handler))
            .route("/app.css", get(page_handler))
            .merge(authed)
            .layer(axum::middleware::from_fn_with_state(st.clone(), auth::require_host))
            .with_state(st)
    }

    /// `/metrics` alone, without auth, for a listener of its own
    /// (`--metrics-listen`): for a scraper on a private address that has
    /// no token. Nothing else is served there.
    pub fn metrics_router(&self) -> Router {
        Router::new().route("/metrics", get(metrics::handler)).with_state(self.state.clone())
    }

    /// Serves `listener` until `shutdown` resolves, then shuts down
    /// gracefully: WebSocket clients get close code 1001, commands are
    /// killed (unless configured otherwise) and reaped.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        self.serve(
            listener,
            async move {
                shutdown.await;
                Stop::Shutdown
            },
            |_| {},
        )
        .await
        .map(drop)
    }

    /// Serves `listener` until `stop` resolves. Then every WebSocket gets
    /// close code 1001, in-flight requests get [`STOP_GRACE`], and the
    /// commands are ended ([`Stop::Shutdown`]) or handed over with the
    /// listening socket ([`Stop::Restart`]). Connections that arrive
    /// meanwhile wait in the socket's backlog for the next daemon.
    ///
    /// `ready` is called once everything the server holds for the whole
    /// time it serves is in place (the listener's duplicate for a restart
    /// included), just before it accepts: a "listening" line printed from
    /// it means the process's open files are as they stay while it serves.
    pub async fn serve(
        self,
        listener: TcpListener,
        stop: impl Future<Output = Stop> + Send + 'static,
        ready: impl FnOnce(SocketAddr),
    ) -> std::io::Result<Ended> {
        let st = self.state.clone();
        let token = st.shutdown.clone();
        // Kept open across the stop for a restart (close-on-exec until then).
        let kept = std::os::fd::AsFd::as_fd(&listener).try_clone_to_owned()?;
        let addr = listener.local_addr()?;
        let app = self.router();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let manager = st.manager.clone();
        let signal = async move {
            let why = stop.await;
            if why == Stop::Restart {
                // Still serving: the rings' bytes as they are now are
                // written for the next daemon, so that the stop writes only
                // what comes meanwhile.
                manager.precopy().await;
            }
            tracing::info!(?why, "stopping");
            if why == Stop::Restart {
                // Before the connections close: their going is the
                // restart's doing, not the clients'.
                manager.begin_handover();
            }
            let _ = stop_tx.send(why);
            token.cancel();
        };
        // Starts the connection threads and their accept loops now: their
        // epoll and wake-up fds and the listener's duplicates are among
        // what it holds from `ready` on.
        let serving = accept::serve(listener, app, accept::Limits::of(&st.cfg), st.cfg.tls.clone(), signal);
        tokio::pin!(serving);
        ready(addr);
        let grace_over = async {
            st.shutdown.cancelled().await;
            tokio::time::sleep(STOP_GRACE).await;
        };
        tokio::select! {
            () = &mut serving => {}
            () = grace_over => tracing::warn!("requests still running {STOP_GRACE:?} after the stop: dropped"),
        }
        let why = stop_rx.await.unwrap_or(Stop::Shutdown);
        st.conns.close();
        if tokio::time::timeout(STOP_GRACE, st.conns.wait()).await.is_err() {
            tracing::warn!("connections did not close within {STOP_GRACE:?}");
        }
        // Uploads still running cannot finish: no temporary file outlives us.
        tether_files::remove_pending_uploads();
        match why {
            Stop::Shutdown => {
                drop(kept);
                st.manager.shutdown().await;
                tracing::info!("shutdown complete");
                Ok(Ended::Shutdown)
            }
            Stop::Restart => {
                let mut handover = st.manager.handover().await;
                handover.add_fd(LISTENER_FD, kept);
                Ok(Ended::Restart(handover))
            }
        }
    }
}

/// Replaces this process with `exe args` (the daemon's own binary and
/// arguments), handing it `handover` through [`HANDOVER_ENV`]; SIGUSR2 (the
/// restart signal) is ignored across the exec so a second one cannot kill
/// the new daemon before it listens for it. Returns only if the exec
/// failed; `handover` is then intact (resume it in this process).
pub fn exec_restart(
    handover: &Handover,
    exe: &std::path::Path,
    args: &[std::ffi::OsString],
) -> std::io::Error {
    let mut cmd = std::process::Command::new(exe);
    cmd.args(args);
    let restarts = std::env::var(RESTARTS_ENV).ok().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    cmd.env(RESTARTS_ENV, (restarts + 1).to_string());
    handover.exec(cmd, HANDOVER_ENV, &[libc::SIGUSR2])
}

/// The manager's configuration: the server's, minus the daemon's own
/// variables in commands' environments.
fn manager_config(cfg: &ServerConfig) -> tether_exec::ManagerConfig {
    let mut mcfg = cfg.manager.clone();
    mcfg.env_remove.push("TETHER_TOKEN".to_owned());
    mcfg.env_remove.push(HANDOVER_ENV.to_owned());
    mcfg.env_remove.push(RESTARTS_ENV.to_owned());
    mcfg
}

async fn ws_handler(
    State(st): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    axum::Extension(revoked): axum::Extension<auth::Revocation>,
    Query(attach): Query<AttachQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    // Offering only subprotocols we do not speak (the token entry aside) is
    // a client for something else: refuse before upgrading.
    let offered: Vec<String> = ws
        .requested_protocols()
        .filter_map(|p| p.to_str().ok())
        .filter(|p| !p.starts_with(tether_proto::TOKEN_SUBPROTOCOL_PREFIX))
        .map(str::to_owned)
        .collect();
    if !offered.is_empty() && !offered.iter().any(|p| tether_proto::Encoding::from_subprotocol(p).is_some()) {
        let msg = format!("none of the offered subprotocols {offered:?} is tether.v1 or tether.v1.json");
        return (axum::http::StatusCode::BAD_REQUEST, msg).into_response();
    }
    let ws = conn::sized(ws)
        .protocols([tether_proto::SUBPROTOCOL_MSGPACK, tether_proto::SUBPROTOCOL_JSON])
        .max_message_size(st.cfg.max_frame_bytes)
        .max_frame_size(st.cfg.max_frame_bytes);
    let encoding = ws
        .selected_protocol()
        .and_then(|p| p.to_str().ok())
        .and_then(tether_proto::Encoding::from_subprotocol)
        .unwrap_or_default();
    let st2 = st.clone();
    ws.on_failed_upgrade(move |e| tracing::warn!(%peer, "websocket upgrade failed: {e}")).on_upgrade(
        move |socket| {
            let ctx = conn::ConnCtx {
                manager: st2.manager.clone(),
                cfg: st2.cfg.clone(),
                shutdown: st2.shutdown.clone(),
                revoked: revoked.0,
                encoding,
                peer,
                attach: attach.command.is_some().then_some(attach),
            };
            st2.conns.track_future(conn::serve(socket, ctx))
        },
    )
}

/// The terminal page's files, with headers that keep the page to itself:
/// no framing (clickjacking), no inline scripts, no referrer, connections
/// only back to this daemon.
async fn page_handler(uri: axum::http::Uri) -> Response {
    use axum::http::{StatusCode, header};
    let Some((content_type, body)) = web::asset(uri.path()) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    // xterm.js inserts <style> elements, hence inline styles (never scripts).
    let csp = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
               connect-src 'self'; img-src 'self' data:; font-src 'self'; frame-ancestors 'none'; \
               base-uri 'none'; form-action 'none'";
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, csp),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
            (axum::http::HeaderName::from_static("cross-origin-opener-policy"), "same-origin"),
            (axum::http::HeaderName::from_static("cross-origin-resource-policy"), "same-origin"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `GET /v1/commands?limit=&cursor=`: one page of the listing as a JSON
/// array (as before paging), the next page in a `Link` header
/// (`rel="next"`) and its cursor in `Tether-Next-Cursor`; a bad `limit` or
/// `cursor` is a 400 with a typed body.
async fn list_handler(
    State(st): State<Arc<AppState>>,
    Query(q): Query<std::collections::BTreeMap<String, String>>,
) -> Response {
    let enc = tether_proto::Encoding::Json;
    let limit = match q.get("limit").map(|l| l.parse::<u32>()) {
        None => None,
        Some(Ok(l)) => Some(l),
        Some(Err(_)) => {
            let e = Error::bad_request(format!(
                "list limit must be a number in 1..={}",
                tether_proto::LIST_MAX_LIMIT
            ));
            return e.into_http(enc);
        }
    };
    let (page, next) = match map::list_page(&st.manager, limit, q.get("cursor").map(String::as_str)) {
        Ok(p) => p,
        Err(e) => return e.into_http(enc),
    };
    let mut resp = axum::Json(page).into_response();
    if let Some(next) = next {
        let limit = limit.unwrap_or(tether_proto::LIST_DEFAULT_LIMIT);
        let link = format!("</v1/commands?limit={limit}&cursor={next}>; rel=\"next\"");
        for (name, value) in [("link", link), ("tether-next-cursor", next)] {
            if let Ok(v) = axum::http::HeaderValue::from_str(&value) {
                resp.headers_mut().insert(name, v);
            }
        }
    }
    resp
}
