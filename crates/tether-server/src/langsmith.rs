//! The LangSmith sandbox client's command dialect, served at
//! `/compat/langsmith/execute/ws` (`protocol/compat/langsmith.md` §5, §12):
//! one command per WebSocket connection, JSON text frames, `execute`
//! (idempotent by the client's `command_id`) or `reconnect` from per-stream
//! byte offsets, `input`, `close_stdin`, `kill`; answered by `started`,
//! `stdout`/`stderr` with offsets, and `exit` or `error`. Commands are
//! normal tether commands (listed, attachable natively, same lifetimes).
//!
//! The client counts its position as `offset + len(utf8(data))`, so each
//! stream goes through a UTF-8 decoder that holds back an incomplete
//! character and anchors every frame on the raw offset just past it
//! (§12.3): reconnects land on exact bytes even around invalid UTF-8.
//!
//! The mapping onto the command manager (the `execute` body to a
//! `CommandSpec`, the idempotent lookup, clamped reconnects, refusals and
//! exit codes) is shared with the SSE transport (`langsmith_sse`) and the
//! legacy `POST /execute` (`langsmith_legacy`).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;
use tether_exec::{self as exec, CommandHandle, Event, ExecError, ExitReason, Stream, Subscription};
use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument;

use crate::AppState;
use crate::outbound::{OutTx, Outbound};
use crate::pump::{self, StdinOp, StdinPump};

/// The label that keeps the client's idempotency key on the command.
const ID_LABEL: &str = "langsmith.command_id";

/// Longest client `command_id` used as the command's request key.
const MAX_KEY: usize = 128;

/// Raw bytes per output frame: JSON escaping can grow text up to 6x and the
/// client refuses frames over 1 MiB; small frames also let a connection
/// that keeps dropping get some output through each time.
pub(crate) const FRAME_RAW_BYTES: usize = 64 * 1024;

/// How long a dialect client's attachment goes on holding its command back
/// after its connection is gone (`attach_lingering`): this client cannot
/// notice lost output, and reconnects within about 15.5 s of backoff (0.5,
/// 1, 2, 4, 8 s) or gives up. A fast writer then waits (half a ring of
/// unread output) instead of overwriting what the client has not read.
const LINGER: Duration = Duration::from_secs(20);

/// Largest client frame (`input` is never chunked by the client).
const MAX_CLIENT_FRAME: usize = 64 << 20;

/// A client frame.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum ClientFrame {
    Execute(Box<Execute>),
    Reconnect {
        command_id: String,
        #[serde(default)]
        stdout_offset: i64,
        #[serde(default)]
        stderr_offset: i64,
    },
    Input {
        data: String,
    },
    CloseStdin,
    Kill,
    #[serde(other)]
    Unknown,
}

/// What to run: the `execute` frame's fields (§5.4), also the body of the
/// SSE `start` (§6), which leaves out `close_stdin`, `pty` and
/// `kill_on_disconnect`.
#[derive(Debug, Deserialize)]
pub(crate) struct Execute {
    /// The command line, run as `shell -c command`.
    command: String,
    /// The shell (the client's default is `/bin/bash`).
    #[serde(default)]
    shell: Option<String>,
    /// Wall-clock limit; `0` (or less) means none.
    #[serde(default)]
    timeout_seconds: Option<i64>,
    /// Kill after this long with nobody attached; negative: never.
    #[serde(default)]
    idle_timeout_seconds: Option<i64>,
    /// Kill when the last client goes away.
    #[serde(default)]
    pub(crate) kill_on_disconnect: bool,
    /// How long a finished command stays reconnectable; negative: forever.
    #[serde(default)]
    ttl_seconds: Option<i64>,
    /// The client's idempotency key.
    #[serde(default)]
    command_id: Option<String>,
    /// Variables for this command (the deprecated spelling of
    /// `run_config.env_vars`).
    #[serde(default)]
    env: std::collections::BTreeMap<String, String>,
    /// Working directory (the deprecated spelling of `run_config.work_dir`).
    #[serde(default)]
    cwd: Option<String>,
    /// User, working directory and environment.
    #[serde(default)]
    run_config: Option<RunConfig>,
    /// Close stdin at spawn.
    #[serde(default)]
    pub(crate) close_stdin: bool,
    /// Run on a terminal.
    #[serde(default)]
    pub(crate) pty: bool,
}

/// `run_config` (§5.4): `user` is accepted only when it names the daemon's
/// own account (§12.5).
#[derive(Debug, Default, Deserialize)]
struct RunConfig {
    /// `name`, `uid`, `name:group` or `uid:gid`.
    #[serde(default)]
    user: Option<String>,
    /// Absolute working directory.
    #[serde(default)]
    work_dir: Option<String>,
    /// Variables for this command.
    #[serde(default)]
    env_vars: std::collections::BTreeMap<String, String>,
}

/// The dialect's `error_type`s that tether sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ErrorType {
    /// The command could not be started (bad request, spawn failure).
    CommandError,
    /// A daemon limit (commands, ring memory) refused the start.
    QuotaExceeded,
    /// No such command (never existed, or its TTL ran out).
    CommandNotFound,
    /// The command's wall-clock timeout fired.
    CommandTimeout,
    /// The daemon is going away; the client resumes (SSE only).
    ServerShuttingDown,
}

impl ErrorType {
    /// The name on the wire.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ErrorType::CommandError => "CommandError",
            ErrorType::QuotaExceeded => "QuotaExceeded",
            ErrorType::CommandNotFound => "CommandNotFound",
            ErrorType::CommandTimeout => "CommandTimeout",
            ErrorType::ServerShuttingDown => "ServerShuttingDown",
        }
    }
}

pub(crate) async fn ws_handler(
    State(st): State<Arc<AppState>>,
    axum::Extension(revoked): axum::Extension<crate::auth::Revocation>,
    ws: WebSocketUpgrade,
) -> Response {
    // No subprotocol is selected: the client rejects a handshake that
    // names one.
    let st2 = st.clone();
    ws.max_message_size(MAX_CLIENT_FRAME)
        .max_frame_size(MAX_CLIENT_FRAME)
        .on_upgrade(move |socket| st2.conns.track_future(serve(socket, st, revoked.0)))
}

/// Unwritten stdin bytes one connection may queue (before `execute`, and
/// for its command after): input past it is dropped with a warning, since
/// the dialect has no way to refuse it (no reply to `input`) and blocking
/// the read loop would hold up a `kill` behind it.
const INPUT_WINDOW: usize = 4 << 20;

/// Control frames held before the connection is bound to a command.
const MAX_EARLY_FRAMES: usize = 256;

/// The connection, as built on the native protocol's pieces: a writer task
/// with a bounded queue and a send timeout, a forwarder task per
/// attachment, a stdin pump with a window, and a read loop that never
/// waits for either, so that a `kill` always gets through.
/// `revoked`: the token the connection authenticated with was replaced
/// (closed with 1008).
async fn serve(ws: WebSocket, st: Arc<AppState>, revoked: tokio_util::sync::CancellationToken) {
    let (sink, mut stream) = ws.split();
    let outbound = Outbound::spawn(sink, st.cfg.outbound_queue, st.cfg.peer_timeout);
    let (out, dead) = (outbound.tx(), outbound.dead());
    let interval = st.cfg.ping_interval;
    let mut ping = tokio::time::interval_at(Instant::now() + interval, interval);
    let mut last_seen = Instant::now();
    let opened = last_seen;
    let mut closing: Option<(u16, &'static str)> = None;

    // Control frames that come before the connection is bound to a command
    // (a queued `close_stdin` precedes `reconnect`) are applied after.
    let mut early = Vec::new();
    let mut early_bytes = 0;
    let mut bound = None;
    while bound.is_none() && closing.is_none() {
        tokio::select! {
            _ = st.shutdown.cancelled() => closing = Some((1001, "server restarting")),
            _ = revoked.cancelled() => closing = Some((1008, "token revoked")),
            _ = dead.cancelled() => break,
            _ = ping.tick() => {
                if last_seen.elapsed() > st.cfg.peer_timeout {
                    closing = Some((1008, "ping timeout"));
                } else if opened.elapsed() > st.cfg.peer_timeout {
                    // Answering pings is not enough: a connection holds
                    // its early frames only until it names a command.
                    let message = format!(
                        "no execute or reconnect within {} s of connecting",
                        st.cfg.peer_timeout.as_secs_f64()
                    );
                    bound = Some(Err(Refused::Error(ErrorType::CommandError, message)));
                } else {
                    outbound.ping();
                }
            }
            frame = stream.next() => {
                let Some(Ok(msg)) = frame else { break };
                last_seen = Instant::now();
                let frame = match parse(&msg) {
                    Ok(Some(f)) => f,
                    Ok(None) => continue,
                    // Answered, or the client would wait for `started`
                    // for ever.
                    Err(message) => {
                        bound = Some(Err(Refused::Error(ErrorType::CommandError, message)));
                        continue;
                    }
                };
                match frame {
                    ClientFrame::Execute(e) => bound = Some(execute(&st, *e)),
                    ClientFrame::Reconnect { command_id, stdout_offset, stderr_offset } => {
                        bound = Some(reconnect(&st, &command_id, [stdout_offset, stderr_offset]));
                    }
                    ClientFrame::Unknown => {}
                    // The client sends `execute` (or `reconnect`) first:
                    // a flood before it is refused, not held.
                    ClientFrame::Input { data } if early_bytes + data.len() > INPUT_WINDOW
                        || early.len() >= MAX_EARLY_FRAMES =>
                    {
                        tracing::warn!(bytes = data.len(), "compat input before execute past the window: refused");
                        early.clear();
                        let message = format!(
                            "input before execute past the window of {INPUT_WINDOW} bytes or {MAX_EARLY_FRAMES} frames"
                        );
                        bound = Some(Err(Refused::Error(ErrorType::CommandError, message)));
                    }
                    other => {
                        if let ClientFrame::Input { data } = &other {
                            early_bytes += data.len();
                        }
                        if early.len() < MAX_EARLY_FRAMES {
                            early.push(other);
                        }
                    }
                }
            }
        }
    }
    let b = match bound {
        Some(Ok(b)) => Some(b),
        Some(Err(Refused::Error(kind, message))) => {
            let _ = out.send(error_frame(kind, &message)).await;
            closing = Some((1000, ""));
            None
        }
        // Let the client send the same `execute` to the restarted daemon.
        Some(Err(Refused::Restarting)) => {
            closing = Some((1001, "server restarting"));
            None
        }
        None => None,
    };
    if let Some(b) = b {
        closing = run(b, early, &st, &outbound, &mut stream, &mut ping, last_seen, &revoked).await;
    }
    if let Some((code, reason)) = closing {
        outbound.close(code, reason).await;
    }
    drop(out);
    outbound.finish().await;
}

/// A bound connection: forwards the attachment and applies control frames
/// until the command's end, the client's going or the daemon's. Returns the
/// close frame to send, if any.
#[allow(clippy::too_many_arguments)]
async fn run(
    b: Bound,
    early: Vec<ClientFrame>,
    st: &AppState,
    outbound: &Outbound,
    stream: &mut futures_util::stream::SplitStream<WebSocket>,
    ping: &mut tokio::time::Interval,
    mut last_seen: Instant,
    revoked: &tokio_util::sync::CancellationToken,
) -> Option<(u16, &'static str)> {
    let Bound { h, sub, echo } = b;
    let out = outbound.tx();
    if out.send(text(&json!({"type": "started", "command_id": echo, "pid": h.pid()}))).await.is_err() {
        return None;
    }
    // Stdin goes through the command's queue, in order, so a command that
    // does not read never stalls this loop; nothing is answered.
    let stdin = stdin_pump(st, &h);
    for f in early {
        control(&h, &stdin, f).await;
    }
    let (done_tx, mut done) = tokio::sync::oneshot::channel();
    let forwarder = {
        let out = out.clone();
        let id = h.id().to_owned();
        AbortOnDropHandle::new(tokio::spawn(
            async move {
                forward(sub, &out).await;
                let _ = done_tx.send(());
            }
            .instrument(tracing::info_span!("compat attach", command = %id)),
        ))
    };
    let dead = outbound.dead();
    let closing = loop {
        tokio::select! {
            biased;
            _ = st.shutdown.cancelled() => break Some((1001, "server restarting")),
            _ = revoked.cancelled() => break Some((1008, "token revoked")),
            _ = dead.cancelled() => break None,
            // The last frame (exit or error) is queued.
            _ = &mut done => break Some((1000, "")),
            _ = ping.tick() => {
                if last_seen.elapsed() > st.cfg.peer_timeout {
                    tracing::warn!(command = %h.id(), "compat peer silent: dropping");
                    break Some((1008, "ping timeout"));
                }
                outbound.ping();
            }
            frame = stream.next() => match frame {
                Some(Ok(msg)) => {
                    last_seen = Instant::now();
                    match parse(&msg) {
                        Ok(Some(f)) => control(&h, &stdin, f).await,
                        Ok(None) => {}
                        // The client is told, and the connection ends; the
                        // command goes on (reconnectable) as after a drop.
                        Err(message) => {
                            tracing::warn!(command = %h.id(), "compat {message}");
                            let _ = out.send(error_frame(ErrorType::CommandError, &message)).await;
                            break Some((1000, ""));
                        }
                    }
                }
                // The client went away: dropping the subscription detaches.
                _ => break None,
            },
        }
    };
    drop(forwarder);
    if h.exit().is_some() {
        // The command has ended: its stdin queue goes.
        let mut pumps = st.langsmith_stdin.lock().unwrap_or_else(|p| p.into_inner());
        if pumps.get(h.id()).is_some_and(|p| Arc::ptr_eq(p, &stdin)) {
            pumps.remove(h.id());
        }
    }
    closing
}

/// The dialect's stdin queues, one per command: input has no numbers and
/// gets no reply, so only one queue for all of a command's connections, one
/// after another, keeps it in order (a `close_stdin` sent on a reconnect
/// comes after the input still queued from the connection before).
/// A std mutex: held to look up, insert or sweep, never across an `.await`.
pub(crate) type StdinPumps = std::sync::Mutex<std::collections::HashMap<String, Arc<StdinPump<()>>>>;

/// The command's stdin queue, made on first use.
fn stdin_pump(st: &AppState, h: &CommandHandle) -> Arc<StdinPump<()>> {
    let mut pumps = st.langsmith_stdin.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(p) = pumps.get(h.id()) {
        return p.clone();
    }
    // Forget the idle queues of commands that have ended.
    pumps.retain(|id, p| !p.is_idle() || st.manager.get(id).is_ok_and(|h| h.exit().is_none()));
    let quiet: pump::Reply<()> = Box::new(|(), r| {
        if let Err(e) = r {
            tracing::debug!("compat stdin dropped: {e}");
        }
        None
    });
    let p = Arc::new(StdinPump::spawn(st.manager.clone(), h.id().to_owned(), INPUT_WINDOW, None, quiet));
    pumps.insert(h.id().to_owned(), p.clone());
    p
}

/// Pushes the attachment's events as the dialect's frames until the end.
async fn forward(mut sub: Subscription, out: &OutTx) {
    let mut w = Writer::new(sub.offsets());
    while let Some(ev) = sub.next(FRAME_RAW_BYTES).await {
        let frames = match ev {
            Event::Output { stream, offset, data } => w.output(stream, offset, &data),
            Event::Gap { stream, requested, first_held } => {
                tracing::warn!(?stream, requested, first_held, "compat client missed output");
                w.gap(stream, first_held);
                Vec::new()
            }
            Event::Resized(_) => Vec::new(),
            Event::Exit(e) => {
                let mut frames = w.flush();
                let (kind, mut msg) = ending(&e);
                msg["type"] = kind.into();
                frames.push(msg);
                for f in frames {
                    if out.send(text(&f)).await.is_err() {
                        return;
                    }
                }
                return;
            }
        };
        for f in frames {
            if out.send(text(&f)).await.is_err() {
                return;
            }
        }
    }
}

fn text(v: &serde_json::Value) -> Message {
    Message::Text(v.to_string().into())
}

/// A command the connection is bound to, and the id `started` names.
pub(crate) struct Bound {
    /// The command.
    pub(crate) h: CommandHandle,
    /// The paced, lingering attachment.
    pub(crate) sub: Subscription,
    /// The id the client knows it by: its own `command_id` when it gave
    /// one (the real dataplane echoes it), else tether's.
    pub(crate) echo: String,
}

/// Why a command was not started or attached.
#[derive(Debug)]
pub(crate) enum Refused {
    /// An `error` (`error_type`, message): the client raises it.
    Error(ErrorType, String),
    /// The daemon is shutting down: the client should try again (on the
    /// WebSocket a close with 1001 before `started`).
    Restarting,
}

/// The dialect's view of a manager error.
pub(crate) fn refused(e: ExecError) -> Refused {
    match e {
        ExecError::ShuttingDown => Refused::Restarting,
        ExecError::TooManyCommands(_) | ExecError::RingMemory { .. } => {
            Refused::Error(ErrorType::QuotaExceeded, e.to_string())
        }
        e => Refused::Error(ErrorType::CommandError, e.to_string()),
    }
}

/// Starts the command, or finds the one this `command_id` started before,
/// and attaches paced from the start.
pub(crate) fn execute(st: &AppState, e: Execute) -> Result<Bound, Refused> {
    // An id that cannot be a request key (too long, a NUL) is still found
    // by its label (not atomically: two such starts at once make two).
    let key = e.command_id.clone().filter(|k| k.len() <= MAX_KEY && !k.contains('\0'));
    if let Some(id) = e.command_id.as_deref().filter(|_| key.is_none())
        && let Some(h) = find(st, id)
    {
        let sub = h.attach_lingering([0, 0], LINGER).map_err(refused)?;
        return Ok(Bound { h, sub, echo: id.to_owned() });
    }
    let rc = e.run_config.unwrap_or_default();
    if let Some(user) = rc.user.filter(|u| !is_me(u)) {
        return Err(Refused::Error(
            ErrorType::CommandError,
            format!("run_config.user {user:?} is not supported by this daemon"),
        ));
    }
    let mut spec = exec::CommandSpec::new(exec::Program::Shell { shell: e.shell, script: e.command });
    spec.cwd = rc.work_dir.or(e.cwd).map(Into::into);
    spec.env = if rc.env_vars.is_empty() { e.env } else { rc.env_vars };
    spec.timeout = timeout(e.timeout_seconds).map_err(|m| Refused::Error(ErrorType::CommandError, m))?;
    spec.idle_timeout = exec::Lifetime::from_millis(e.idle_timeout_seconds.map(|s| s.saturating_mul(1000)));
    spec.ttl = exec::Lifetime::from_millis(e.ttl_seconds.map(|s| s.saturating_mul(1000)));
    spec.ring_bytes = st.cfg.langsmith_ring_bytes;
    spec.kill_on_disconnect = e.kill_on_disconnect;
    spec.close_stdin = e.close_stdin && !e.pty;
    if e.pty {
        spec = spec.pty(24, 80);
    }
    if let Some(id) = &e.command_id {
        spec.labels.insert(ID_LABEL.to_owned(), id.clone());
        // The client's id is the request key: a repeated `execute` finds
        // the command, and the native API takes the client's id too.
        spec.request_key = key;
    }
    let (h, new) = st.manager.start_keyed(spec).map_err(refused)?;
    let sub = h.attach_lingering([0, 0], LINGER).map_err(refused)?;
    if new {
        tracing::info!(command = %h.id(), "started through the LangSmith dialect");
    }
    let echo = e.command_id.unwrap_or_else(|| h.id().to_owned());
    Ok(Bound { h, sub, echo })
}

/// A `timeout_seconds` as a limit: `0` or less means none (as upstream's
/// `timeout=0`); past what milliseconds in a `u64` hold (about 584 million
/// years) it is refused, since a deadline that far would overflow the
/// clock. Non-integers (`1.5`, `1e300`, `NaN`) never get here: the frame
/// is malformed.
pub(crate) fn timeout(seconds: Option<i64>) -> Result<Option<Duration>, String> {
    match seconds {
        Some(s) if s > 0 => match s.checked_mul(1000) {
            Some(ms) => Ok(Some(Duration::from_millis(ms as u64))),
            None => Err(format!("timeout_seconds {s} is too large")),
        },
        _ => Ok(None),
    }
}

/// Attaches paced from the client's offsets (clamped to what the stream
/// has). `id` is tether's id or the client's `command_id`.
pub(crate) fn reconnect(st: &AppState, id: &str, from: [i64; 2]) -> Result<Bound, Refused> {
    let Some(h) = st.manager.get(id).ok().or_else(|| find(st, id)) else {
        return Err(Refused::Error(ErrorType::CommandNotFound, format!("Command not found: {id}")));
    };
    let info = h.info();
    let at = [0, 1].map(|i| (from[i].max(0) as u64).min(info.offsets[i].1));
    let sub = h.attach_lingering(at, LINGER).map_err(refused)?;
    Ok(Bound { h, sub, echo: id.to_owned() })
}

/// The command started with this client `command_id`, if still held.
fn find(st: &AppState, client_id: &str) -> Option<CommandHandle> {
    st.manager.find_by_label(ID_LABEL, client_id)
}

/// Whether a `run_config.user` names the daemon's own user: its uid, or
/// its name in `/etc/passwd` (`$USER` only when the uid has no entry there,
/// as in a container run with an arbitrary uid; `$USER` is often unset, for
/// a service or root, and can name someone else after `su`).
fn is_me(user: &str) -> bool {
    let uid = my_uid();
    let first = user.split(':').next().unwrap_or("");
    if first == uid.to_string() {
        return true;
    }
    let name = passwd_name(uid).or_else(|| std::env::var("USER").ok()).unwrap_or_default();
    !name.is_empty() && first == name
}

/// The name of `uid` in `/etc/passwd`.
fn passwd_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let entry_uid: u32 = fields.nth(1)?.parse().ok()?;
        (entry_uid == uid).then(|| name.to_owned())
    })
}

fn my_uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(u32::MAX)
}

/// The exit code the client gets: the code, else `128 + signal` (a kill
/// gives 137), else 255.
pub(crate) fn shell_code(e: &exec::ExitInfo) -> i32 {
    match (e.code, e.signal) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        (None, None) => 255,
    }
}

/// The last message for a command that ended: its name (`exit`, or
/// `error` with `CommandTimeout` for a timeout) and its fields.
pub(crate) fn ending(e: &exec::ExitInfo) -> (&'static str, serde_json::Value) {
    match e.reason {
        ExitReason::TimedOut => {
            ("error", json!({"error_type": ErrorType::CommandTimeout.as_str(), "error": "Command timed out"}))
        }
        _ => ("exit", json!({"exit_code": shell_code(e)})),
    }
}

/// `input`, `close_stdin` and `kill`. Nothing is answered: the client
/// expects no reply, and an error frame would end its stream. Never waits
/// for stdin: input past the window is dropped (logged); consecutive input
/// frames queue as one operation, however small each is.
async fn control(h: &CommandHandle, stdin: &StdinPump<()>, f: ClientFrame) {
    let op = match f {
        ClientFrame::Input { data } => StdinOp::Data(Bytes::from(data), None),
        ClientFrame::CloseStdin => StdinOp::Close(None),
        ClientFrame::Kill => {
            tracing::info!(command = %h.id(), "kill through the LangSmith dialect");
            let _ = h.kill().await;
            return;
        }
        ClientFrame::Execute(_) | ClientFrame::Reconnect { .. } | ClientFrame::Unknown => return,
    };
    if let Err(e) = stdin.push_merging(op) {
        tracing::warn!(command = %h.id(), "compat input dropped: {e:?} (the command is not reading it)");
    }
}

/// A data frame as a client frame: `Ok(None)` for pings, pongs and the
/// close; `Err` with a message for a frame that is not one (not JSON, a
/// known `type` with missing or mistyped fields, `NaN` or `1e300` for an
/// integer). A frame of an unknown `type` is `Unknown`, ignored.
pub(crate) fn parse(msg: &Message) -> Result<Option<ClientFrame>, String> {
    let text = match msg {
        Message::Text(t) => t.as_bytes(),
        Message::Binary(b) => b,
        _ => return Ok(None),
    };
    serde_json::from_slice::<ClientFrame>(text).map(Some).map_err(|e| format!("malformed frame: {e}"))
}

/// The dialect's error frame: the client raises it as its exception.
fn error_frame(kind: ErrorType, message: &str) -> Message {
    text(&json!({"type": "error", "error_type": kind.as_str(), "error": message}))
}

/// Per-stream text decoding with byte-exact offsets for the client.
pub(crate) struct Writer {
    streams: [Decoder; 2],
}

/// One stream: the raw offset of `pending[0]` (or of the next byte) and an
/// incomplete UTF-8 sequence held back.
struct Decoder {
    at: u64,
    pending: Vec<u8>,
}

impl Writer {
    pub(crate) fn new(from: [u64; 2]) -> Writer {
        Writer { streams: from.map(|at| Decoder { at, pending: Vec::new() }) }
    }

    /// The frames for a chunk of output (none while a character is
    /// incomplete).
    pub(crate) fn output(&mut self, stream: Stream, offset: u64, data: &[u8]) -> Vec<serde_json::Value> {
        let i = if stream == Stream::Stdout { 0 } else { 1 };
        let d = &mut self.streams[i];
        if offset != d.at + d.pending.len() as u64 {
            // Cannot happen for an in-order subscription; keep offsets true.
            d.pending.clear();
            d.at = offset;
        }
        let mut bytes = std::mem::take(&mut d.pending);
        bytes.extend_from_slice(data);
        let (text, used) = decode(&bytes, false);
        d.pending = bytes[used..].to_vec();
        let start = d.at;
        d.at += used as u64;
        if text.is_empty() {
            return Vec::new();
        }
        vec![text_frame(stream, start, d.at, text)]
    }

    fn gap(&mut self, stream: Stream, first_held: u64) {
        let d = &mut self.streams[if stream == Stream::Stdout { 0 } else { 1 }];
        d.pending.clear();
        d.at = first_held;
    }

    /// At the end: a held-back incomplete sequence becomes U+FFFD.
    pub(crate) fn flush(&mut self) -> Vec<serde_json::Value> {
        let mut frames = Vec::new();
        for (i, stream) in [Stream::Stdout, Stream::Stderr].into_iter().enumerate() {
            let d = &mut self.streams[i];
            if d.pending.is_empty() {
                continue;
            }
            let (text, used) = decode(&std::mem::take(&mut d.pending), true);
            let start = d.at;
            d.at += used as u64;
            frames.push(text_frame(stream, start, d.at, text));
        }
        frames
    }
}

/// One frame: `offset` is anchored so that `offset + len(utf8(data))` is
/// the raw end (equal to the raw start whenever the bytes were valid).
fn text_frame(stream: Stream, start: u64, end: u64, text: String) -> serde_json::Value {
    let offset = end as i64 - text.len() as i64;
    debug_assert!(text.len() as u64 != end - start || offset == start as i64);
    let kind = if stream == Stream::Stdout { "stdout" } else { "stderr" };
    json!({"type": kind, "data": text, "offset": offset})
}

/// Decodes `bytes` with each invalid sequence as U+FFFD. Unless `at_end`, a
/// trailing incomplete sequence is left out. Returns the text and how many
/// bytes it stands for.
fn decode(bytes: &[u8], at_end: bool) -> (String, usize) {
    let mut out = String::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match std::str::from_utf8(&bytes[i..]) {
            Ok(s) => {
                out.push_str(s);
                i = bytes.len();
            }
            Err(e) => {
                let good = e.valid_up_to();
                out.push_str(std::str::from_utf8(&bytes[i..i + good]).unwrap_or_default());
                i += good;
                match e.error_len() {
                    Some(n) => {
                        out.push('\u{FFFD}');
                        i += n;
                    }
                    None if at_end => {
                        out.push('\u{FFFD}');
                        i = bytes.len();
                    }
                    None => break,
                }
            }
        }
    }
    (out, i)
}

#[cfg(test)]
mod tests {
    use super::{decode, is_me, my_uid, passwd_name};

    #[test]
    fn run_config_user_must_name_the_daemons_own_account() {
        let uid = my_uid();
        assert!(is_me(&uid.to_string()));
        assert!(is_me(&format!("{uid}:12345")), "the group part is not checked");
        // By name too, whether or not `$USER` is set.
        if let Some(name) = passwd_name(uid) {
            assert!(is_me(&name));
        }
        assert!(!is_me("no-such-user-for-tether"));
        assert!(!is_me(&uid.wrapping_add(1).to_string()));
        assert_eq!(passwd_name(0).as_deref(), Some("root"));
    }

    #[test]
    fn decodes_holding_back_an_incomplete_character() {
        assert_eq!(decode(b"caf\xc3", false), ("caf".to_owned(), 3));
        assert_eq!(decode(b"\xc3\xa9!", false), ("é!".to_owned(), 3));
        assert_eq!(decode(b"a\xffb", false), ("a\u{FFFD}b".to_owned(), 3));
        assert_eq!(decode(b"x\xe2\x82", true), ("x\u{FFFD}".to_owned(), 3));
    }
}
