//! envd's Process service (`protocol/compat/e2b.md` §7, §8): `Start` and
//! `Connect` stream a command's events (`start{pid}` first, `data`,
//! keepalives, one `end`, the end-of-stream frame); `List`, `SendInput`,
//! `SendSignal`, `CloseStdin` and `Update` are unary. Commands are tether
//! commands addressed by their pid; a stream that goes away never kills
//! its command.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};
use tether_exec::{self as exec, CommandHandle, Event, ExitInfo, Stream, Subscription, TermSize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::connect::{Code, EnvelopeReader, RpcError, STREAM_CONTENT_TYPE, end_stream, envelope, unary_ok};
use crate::AppState;

/// The label that marks a command as started by this dialect.
const LABEL: &str = "e2b";
/// The variables it was started with, as JSON (for `List`).
const ENVS_LABEL: &str = "e2b.envs";
/// Its working directory, as asked.
const CWD_LABEL: &str = "e2b.cwd";
/// Its tag, if the client gave one.
const TAG_LABEL: &str = "e2b.tag";

/// Largest request message.
const MAX_MESSAGE: usize = 4 << 20;

/// Raw output bytes per `data` event (base64 in JSON grows it by 4/3).
const CHUNK: usize = 64 * 1024;

/// Keepalive interval when the client names none (envd's).
const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(90);

/// Envelopes queued per stream before the pump waits for the client.
const QUEUE: usize = 8;

type Rpc<T> = Result<T, RpcError>;

/// `process.Process/Start`.
pub(super) async fn start(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let r = async {
        check_user(&headers)?;
        let req = stream_request(body).await?;
        let deadline = deadline(&headers)?;
        let process = req.get("process").ok_or_else(|| bad("StartRequest.process is missing"))?;
        let cmd = process.get("cmd").and_then(Value::as_str).unwrap_or_default().to_owned();
        if cmd.is_empty() {
            return Err(bad("ProcessConfig.cmd is empty"));
        }
        let mut argv = vec![cmd];
        argv.extend(strings(process.get("args"))?);
        let envs = string_map(process.get("envs"))?;
        let mut spec = exec::CommandSpec::new(exec::Program::Argv(argv));
        let cwd = process.get("cwd").and_then(Value::as_str).filter(|c| !c.is_empty()).map(expand_home);
        spec.cwd = cwd.clone().map(Into::into).or_else(|| st.cfg.files_root.clone());
        spec.env = envs.clone();
        // A dropped stream never kills it; nobody attached is no reason either.
        spec.idle_timeout = exec::Lifetime::Never;
        let pty = req.get("pty").filter(|p| !p.is_null());
        if let Some(pty) = pty {
            let size = pty_size(pty.get("size").unwrap_or(&Value::Null))?;
            spec.pty = Some(exec::PtyOptions { size, term: envs.get("TERM").cloned() });
        } else if req.get("stdin").and_then(Value::as_bool) == Some(false) {
            // envd: stdin stays open unless explicitly turned off.
            spec = spec.stdin(Bytes::new(), true);
        }
        // envd runs the process under the request's deadline (SIGKILL).
        spec.timeout = deadline;
        if deadline.is_some() {
            spec.kill_grace = Some(Duration::ZERO);
        }
        spec.labels.insert(LABEL.into(), "1".into());
        if !envs.is_empty() {
            spec.labels.insert(ENVS_LABEL.into(), serde_json::to_string(&envs).unwrap_or_default());
        }
        if let Some(cwd) = &cwd {
            spec.labels.insert(CWD_LABEL.into(), cwd.clone());
        }
        if let Some(tag) = req.get("tag").and_then(Value::as_str) {
            spec.labels.insert(TAG_LABEL.into(), tag.to_owned());
        }
        // Attached, paced, before the command's first byte is read.
        let (h, sub) = st.manager.start_then(spec, |h| h.attach_paced([0, 0], true)).map_err(from_exec)?;
        tracing::info!(command = %h.id(), pid = h.pid(), "e2b process started");
        let sub = sub.map_err(from_exec)?;
        Ok::<_, RpcError>(stream(&st, &headers, h, sub, None, Limit::Lifetime))
    };
    r.await.unwrap_or_else(stream_error)
}

/// `process.Process/Connect`: a running command's live output from now on
/// (a terminal's current screen first), or an ended one's `end`.
pub(super) async fn connect(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let r = async {
        let req = stream_request(body).await?;
        let limit = deadline(&headers)?;
        let h = by_pid(&st, &req, true)?;
        let (screen, sub) = if h.exit().is_some() {
            (None, h.attach_tail(0, false))
        } else if h.is_pty() {
            let (screen, sub) = h.attach_screen(0, None, true).await.map_err(from_exec)?;
            (screen.map(|s| s.data), sub)
        } else {
            (None, h.attach_tail(0, true))
        };
        Ok::<_, RpcError>(stream(&st, &headers, h, sub, screen, Limit::Stream(limit)))
    };
    r.await.unwrap_or_else(stream_error)
}

/// `process.Process/List`: running commands with a pid of their own.
pub(super) async fn list(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    if let Err(e) = unary_request(&body) {
        return e.into_response();
    }
    let processes: Vec<Value> = st
        .manager
        .list()
        .into_iter()
        .filter(|i| i.exit.is_none() && i.shell.is_none() && i.pid != 0)
        .map(|i| {
            let envs: Value = i
                .labels
                .get(ENVS_LABEL)
                .and_then(|e| serde_json::from_str(e).ok())
                .unwrap_or_else(|| json!({}));
            let mut config = json!({
                "cmd": i.argv.first().cloned().unwrap_or_default(),
                "args": i.argv.get(1..).unwrap_or_default(),
                "envs": envs,
            });
            if let (Some(cwd), Some(o)) = (i.labels.get(CWD_LABEL), config.as_object_mut()) {
                o.insert("cwd".into(), cwd.clone().into());
            }
            let mut p = json!({ "config": config, "pid": i.pid });
            if let (Some(tag), Some(o)) = (i.labels.get(TAG_LABEL), p.as_object_mut()) {
                o.insert("tag".into(), tag.clone().into());
            }
            p
        })
        .collect();
    unary_ok(json!({ "processes": processes }))
}

/// `process.Process/SendInput`: `stdin` bytes to a pipe command, `pty`
/// bytes to a terminal.
pub(super) async fn send_input(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    let r = async {
        let req = unary_request(&body)?;
        let h = by_pid(&st, &req, false)?;
        let input = req.get("input").unwrap_or(&Value::Null);
        let (data, pty) = match (input.get("stdin"), input.get("pty")) {
            (Some(d), None) => (d, false),
            (None, Some(d)) => (d, true),
            _ => return Err(bad("ProcessInput needs one of stdin or pty")),
        };
        if pty != h.is_pty() {
            let (want, got) = if h.is_pty() { ("pty", "stdin") } else { ("stdin", "pty") };
            return Err(RpcError::new(
                Code::FailedPrecondition,
                format!("process {} takes {want} input, not {got}", h.pid()),
            ));
        }
        let bytes = base64_field(data)?;
        h.write_stdin(Bytes::from(bytes)).await.map_err(from_exec)?;
        Ok(unary_ok(json!({})))
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

/// How long a SIGKILL's answer waits for the command's end.
const KILL_SETTLES_IN: Duration = Duration::from_secs(5);

/// `process.Process/SendSignal`: SIGKILL is tether's `kill` (the whole
/// tree), answered once the command has ended (at most
/// [`KILL_SETTLES_IN`]); SIGTERM a signal; an ended command is
/// `not_found`.
pub(super) async fn send_signal(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    let r = async {
        let req = unary_request(&body)?;
        let h = by_pid(&st, &req, false)?;
        let signal = req.get("signal").unwrap_or(&Value::Null);
        let sig = signal.as_str().map(str::to_owned).or_else(|| as_u64(signal).map(|n| n.to_string()));
        match sig.as_deref() {
            // `kill` returns `True` for "killed": answered with the signal,
            // a `list()` or second `kill()` right after could still find
            // it running.
            Some("SIGNAL_SIGKILL" | "9") => h.kill_and_wait(KILL_SETTLES_IN).await.map_err(from_exec)?,
            Some("SIGNAL_SIGTERM" | "15") => h.signal("TERM").await.map_err(from_exec)?,
            other => {
                return Err(RpcError::new(
                    Code::Unimplemented,
                    format!("invalid signal {:?}", other.unwrap_or("")),
                ));
            }
        }
        Ok(unary_ok(json!({})))
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

/// `process.Process/StreamInput` (a client stream): `start` names the
/// process, each `data` is written to its stdin in order, `keepalive` is
/// ignored; the answer (one `{}` message, then the end of stream) comes
/// once the request ends. An error ends the stream with no message.
pub(super) async fn stream_input(State(st): State<Arc<AppState>>, body: Body) -> Response {
    let r = async {
        let mut reader = EnvelopeReader::default();
        let mut target: Option<CommandHandle> = None;
        let mut chunks = body.into_data_stream();
        loop {
            while let Some(msg) = reader.next(MAX_MESSAGE)? {
                if let Some(start) = msg.get("start") {
                    target = Some(by_pid(&st, start, false)?);
                } else if let Some(data) = msg.get("data") {
                    let h = target.as_ref().ok_or_else(|| bad("a data event came before start"))?;
                    let input = data.get("input").unwrap_or(&Value::Null);
                    let (bytes, pty) = match (input.get("stdin"), input.get("pty")) {
                        (Some(d), None) => (d, false),
                        (None, Some(d)) => (d, true),
                        _ => return Err(bad("ProcessInput needs one of stdin or pty")),
                    };
                    if pty != h.is_pty() {
                        return Err(RpcError::new(
                            Code::FailedPrecondition,
                            format!(
                                "process {} takes {} input",
                                h.pid(),
                                if h.is_pty() { "pty" } else { "stdin" }
                            ),
                        ));
                    }
                    h.write_stdin(Bytes::from(base64_field(bytes)?)).await.map_err(from_exec)?;
                }
            }
            match futures_util::StreamExt::next(&mut chunks).await {
                Some(Ok(chunk)) => reader.feed(&chunk),
                Some(Err(e)) => {
                    return Err(RpcError::new(Code::InvalidArgument, format!("the request body: {e}")));
                }
                None => break,
            }
        }
        let mut out = envelope(&json!({})).to_vec();
        out.extend_from_slice(&end_stream(None));
        Ok::<_, RpcError>(
            (StatusCode::OK, [(header::CONTENT_TYPE, STREAM_CONTENT_TYPE)], out).into_response(),
        )
    };
    r.await.unwrap_or_else(stream_error)
}

/// `process.Process/CloseStdin`: closing twice is fine.
pub(super) async fn close_stdin(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    let r = async {
        let req = unary_request(&body)?;
        let h = by_pid(&st, &req, false)?;
        match h.close_stdin().await {
            Ok(()) | Err(exec::ExecError::StdinClosed(_)) => Ok(unary_ok(json!({}))),
            Err(e) => Err(from_exec(e)),
        }
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

/// `process.Process/Update`: a terminal's new size.
pub(super) async fn update(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    let r = async {
        let req = unary_request(&body)?;
        let h = by_pid(&st, &req, false)?;
        let Some(size) =
            req.get("pty").filter(|p| !p.is_null()).map(|p| p.get("size").unwrap_or(&Value::Null))
        else {
            return Ok(unary_ok(json!({})));
        };
        if !h.is_pty() {
            return Err(RpcError::new(
                Code::FailedPrecondition,
                format!("process {} has no terminal", h.pid()),
            ));
        }
        let size = pty_size(size)?;
        h.resize(size).await.map_err(from_exec)?;
        Ok(unary_ok(json!({})))
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

/// What a stream's deadline is.
#[derive(Clone, Copy, Debug)]
enum Limit {
    /// Start: the command's own timeout (it is killed at the deadline, and
    /// the stream ends with `deadline_exceeded` rather than its `end`, as
    /// envd's does: the client raises its timeout).
    Lifetime,
    /// Connect: the stream's alone (the command runs on).
    Stream(Option<Duration>),
}

/// The stream response: events pumped from `sub` by a task of their own
/// (tracked, so a stop waits for it); the body is its queue, so a client
/// that goes away ends the task (and its attachment) and nothing else.
fn stream(
    st: &Arc<AppState>,
    headers: &HeaderMap,
    h: CommandHandle,
    sub: Subscription,
    screen: Option<Bytes>,
    limit: Limit,
) -> Response {
    let every = keepalive_every(headers);
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(QUEUE);
    let shutdown = st.shutdown.clone();
    st.conns.spawn(pump(tx, h, sub, screen, every, limit, shutdown));
    let body = Body::from_stream(stream_body(rx));
    (StatusCode::OK, [(header::CONTENT_TYPE, STREAM_CONTENT_TYPE)], body).into_response()
}

/// The keepalive interval the client asks for (`Keepalive-Ping-Interval`,
/// seconds, clamped to 1..=90), else envd's 90 s.
pub(super) fn keepalive_every(headers: &HeaderMap) -> Duration {
    headers
        .get("keepalive-ping-interval")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(DEFAULT_KEEPALIVE, |s| Duration::from_secs(s.clamp(1, 90)))
}

/// An mpsc receiver as a body stream.
pub(super) fn stream_body(
    rx: mpsc::Receiver<Result<Bytes, Infallible>>,
) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })
}

/// One stream's events.
async fn pump(
    tx: mpsc::Sender<Result<Bytes, Infallible>>,
    h: CommandHandle,
    mut sub: Subscription,
    screen: Option<Bytes>,
    every: Duration,
    limit: Limit,
    shutdown: CancellationToken,
) {
    let send = |m: Bytes| {
        let tx = tx.clone();
        async move { tx.send(Ok(m)).await.is_ok() }
    };
    let pty = h.is_pty();
    if !send(envelope(&json!({"event": {"start": {"pid": h.pid()}}}))).await {
        return;
    }
    if let Some(screen) = screen.filter(|s| !s.is_empty())
        && !send(data_event("pty", &screen)).await
    {
        return;
    }
    let deadline = match limit {
        Limit::Stream(l) => l.map(|l| tokio::time::Instant::now() + l),
        Limit::Lifetime => None,
    };
    let timed_out = |x: &ExitInfo| matches!(limit, Limit::Lifetime) && x.reason == exec::ExitReason::TimedOut;
    let mut keepalive = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let error = loop {
        tokio::select! {
            ev = sub.next(CHUNK) => match ev {
                Some(Event::Output { stream, data, .. }) => {
                    let field = if pty { "pty" } else if stream == Stream::Stdout { "stdout" } else { "stderr" };
                    if !send(data_event(field, &data)).await {
                        return;
                    }
                    keepalive.reset();
                }
                Some(Event::Gap { .. }) => break Some(RpcError::new(
                    Code::DataLoss,
                    format!("output lost: the stream fell a ring behind; process {} keeps running", h.pid()),
                )),
                Some(Event::Resized(_)) => {}
                Some(Event::Exit(x)) if timed_out(&x) => {
                    break Some(RpcError::new(Code::DeadlineExceeded, "the request's deadline passed: the process was killed"));
                }
                Some(Event::Exit(x)) => {
                    if !send(end_event(&x)).await {
                        return;
                    }
                    break None;
                }
                None => {
                    let x = h.wait().await;
                    if !send(end_event(&x)).await {
                        return;
                    }
                    break None;
                }
            },
            _ = keepalive.tick() => {
                if !send(envelope(&json!({"event": {"keepalive": {}}}))).await {
                    return;
                }
            }
            () = at(deadline) => break Some(RpcError::new(Code::DeadlineExceeded, "the request's deadline passed")),
            () = shutdown.cancelled() => break Some(RpcError::new(
                Code::Unavailable,
                format!("tether is restarting; the command keeps running: reconnect with commands.connect({})", h.pid()),
            )),
            () = tx.closed() => return,
        }
    };
    let _ = send(end_stream(error.as_ref())).await;
}

pub(super) async fn at(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

fn data_event(field: &str, data: &[u8]) -> Bytes {
    let b64 = base64::engine::general_purpose::STANDARD.encode(data);
    envelope(&json!({"event": {"data": {field: b64}}}))
}

/// `end` as envd writes it (Go's `ProcessState`): `exitCode` -1 and
/// `"signal: <name>"` for a signal.
fn end_event(x: &ExitInfo) -> Bytes {
    let end = match (x.code, x.signal) {
        (Some(c), _) => {
            let status = format!("exit status {c}");
            let mut e = json!({"exitCode": c, "exited": true, "status": status});
            if c != 0
                && let Some(o) = e.as_object_mut()
            {
                o.insert("error".into(), status.into());
            }
            e
        }
        (None, Some(s)) => {
            let mut status = format!("signal: {}", signal_name(s));
            if x.core_dumped {
                status.push_str(" (core dumped)");
            }
            json!({"exitCode": -1, "exited": false, "status": status, "error": status})
        }
        (None, None) => {
            let status = "signal: killed".to_owned();
            json!({"exitCode": -1, "exited": false, "status": status, "error": status})
        }
    };
    envelope(&json!({"event": {"end": end}}))
}

/// Go's description of a signal (`syscall.Signal.String`).
fn signal_name(s: i32) -> String {
    match s {
        1 => "hangup".into(),
        2 => "interrupt".into(),
        3 => "quit".into(),
        6 => "aborted".into(),
        9 => "killed".into(),
        11 => "segmentation fault".into(),
        13 => "broken pipe".into(),
        14 => "alarm clock".into(),
        15 => "terminated".into(),
        n => format!("signal {n}"),
    }
}

/// A stream call's single request message.
pub(super) async fn stream_request(body: Body) -> Rpc<Value> {
    let bytes = axum::body::to_bytes(body, MAX_MESSAGE + 5)
        .await
        .map_err(|e| RpcError::new(Code::ResourceExhausted, format!("the request body: {e}")))?;
    let mut r = EnvelopeReader::default();
    r.feed(&bytes);
    r.next(MAX_MESSAGE)?.ok_or_else(|| bad("the request has no message envelope"))
}

/// A unary call's request message (a bare JSON object).
fn unary_request(body: &[u8]) -> Rpc<Value> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(body).map_err(|e| bad(format!("the request is not JSON: {e}")))
}

/// The command the selector (`{"process": {"pid": N}}`) names: running
/// (or, with `ended`, held after its end), with a pid of its own.
fn by_pid(st: &AppState, req: &Value, ended: bool) -> Rpc<CommandHandle> {
    let selector = req.get("process").unwrap_or(&Value::Null);
    if selector.get("tag").is_some() && selector.get("pid").is_none() {
        return Err(RpcError::new(Code::Unimplemented, "selecting a process by tag is not supported"));
    }
    let pid = selector.get("pid").and_then(as_u64).ok_or_else(|| bad("ProcessSelector needs a pid"))?;
    let not_found = || RpcError::new(Code::NotFound, format!("process with pid {pid} not found"));
    let pid = u32::try_from(pid).map_err(|_| not_found())?;
    let best = st
        .manager
        .list()
        .into_iter()
        .filter(|i| i.pid == pid && i.shell.is_none() && (ended || i.exit.is_none()))
        .max_by_key(|i| (i.exit.is_none(), i.started_at))
        .ok_or_else(not_found)?;
    st.manager.get(&best.id).map_err(|_| not_found())
}

/// The `Connect-Timeout-Ms` deadline (at most 10 digits).
pub(super) fn deadline(headers: &HeaderMap) -> Rpc<Option<Duration>> {
    let Some(v) = headers.get("connect-timeout-ms") else { return Ok(None) };
    let v = v.to_str().unwrap_or("").trim();
    if v.is_empty() || v.len() > 10 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(format!("connect-timeout-ms {v:?} is not a number of milliseconds")));
    }
    Ok(v.parse::<u64>().ok().filter(|&ms| ms > 0).map(Duration::from_millis))
}

/// `Authorization: Basic base64("<user>:")` names the Unix user; tether
/// runs everything as its own.
fn check_user(headers: &HeaderMap) -> Rpc<()> {
    let Some(basic) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic ").or_else(|| v.strip_prefix("basic ")))
    else {
        return Ok(());
    };
    let decoded = base64::engine::general_purpose::STANDARD.decode(basic.trim()).unwrap_or_default();
    let user = String::from_utf8_lossy(&decoded).split(':').next().unwrap_or_default().to_owned();
    let me = me();
    if user.is_empty() || user == me {
        return Ok(());
    }
    Err(RpcError::new(
        Code::PermissionDenied,
        format!("tether runs every command as the daemon's user {me:?}; user {user:?} is not supported"),
    ))
}

/// The daemon's user name.
fn me() -> String {
    std::env::var("USER").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| {
        let uid = rustix::process::getuid().as_raw();
        if uid == 0 { "root".to_owned() } else { uid.to_string() }
    })
}

/// A `PTY.size` (`{cols, rows}`), each side within tether's limit.
fn pty_size(size: &Value) -> Rpc<TermSize> {
    let side = |k: &str| size.get(k).and_then(as_u64).and_then(|v| u16::try_from(v).ok()).unwrap_or(0);
    let size = TermSize { cols: side("cols"), rows: side("rows") };
    if !size.is_valid() {
        return Err(bad(format!(
            "PTY size {}x{}: each side must be within 1..={}",
            size.cols,
            size.rows,
            TermSize::MAX
        )));
    }
    Ok(size)
}

/// `~` and `~/...` at the daemon user's home.
pub(super) fn expand_home(p: &str) -> String {
    match (p.strip_prefix('~'), std::env::var("HOME")) {
        (Some(rest), Ok(home)) if rest.is_empty() || rest.starts_with('/') => format!("{home}{rest}"),
        _ => p.to_owned(),
    }
}

fn strings(v: Option<&Value>) -> Rpc<Vec<String>> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|s| s.as_str().map(str::to_owned).ok_or_else(|| bad("ProcessConfig.args must be strings")))
            .collect(),
        Some(_) => Err(bad("ProcessConfig.args must be a list")),
    }
}

fn string_map(v: Option<&Value>) -> Rpc<BTreeMap<String, String>> {
    match v {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(o)) => o
            .iter()
            .map(|(k, v)| {
                v.as_str()
                    .map(|s| (k.clone(), s.to_owned()))
                    .ok_or_else(|| bad("ProcessConfig.envs must be strings"))
            })
            .collect(),
        Some(_) => Err(bad("ProcessConfig.envs must be an object")),
    }
}

/// A number, or a number in a string (proto3 JSON's 64-bit form).
fn as_u64(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

fn base64_field(v: &Value) -> Rpc<Vec<u8>> {
    let s = v.as_str().ok_or_else(|| bad("input bytes must be a base64 string"))?;
    let e = &base64::engine::general_purpose::STANDARD;
    e.decode(s)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(s.trim_end_matches('=')))
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')))
        .map_err(|e| bad(format!("input bytes are not base64: {e}")))
}

fn bad(message: impl Into<String>) -> RpcError {
    RpcError::new(Code::InvalidArgument, message)
}

/// tether's errors in Connect codes.
fn from_exec(e: exec::ExecError) -> RpcError {
    use exec::ExecError as E;
    let code = match &e {
        E::NotFound(_) | E::NotRunning(_) => Code::NotFound,
        E::StdinClosed(_) => Code::FailedPrecondition,
        E::TooManyCommands(_) | E::RingMemory { .. } | E::ScreenMemory { .. } | E::TooManyShells(_) => {
            Code::ResourceExhausted
        }
        E::ShuttingDown => Code::Unavailable,
        E::Io { .. } => Code::Internal,
        _ => Code::InvalidArgument,
    };
    let message = match &e {
        E::StdinClosed(_) => format!("stdin is closed: {e}"),
        _ => e.to_string(),
    };
    RpcError::new(code, message)
}

/// An error before a stream began: still 200 with the end-of-stream frame
/// (a JS stream reads only the status), except what the status alone says.
pub(super) fn stream_error(e: RpcError) -> Response {
    let body = end_stream(Some(&e));
    (StatusCode::OK, [(header::CONTENT_TYPE, STREAM_CONTENT_TYPE)], body).into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn end_json(x: &ExitInfo) -> Value {
        serde_json::from_slice(&end_event(x)[5..]).unwrap()
    }

    #[test]
    fn end_events_are_gos_process_state() {
        let mut x = ExitInfo {
            code: Some(3),
            signal: None,
            core_dumped: false,
            reason: exec::ExitReason::Exited,
            wall: Duration::ZERO,
            user_us: 0,
            sys_us: 0,
            max_rss_kb: 0,
            ends: [0, 0],
            truncated: false,
            cwd: None,
        };
        assert_eq!(
            end_json(&x),
            json!({"event": {"end": {"exitCode": 3, "exited": true, "status": "exit status 3", "error": "exit status 3"}}})
        );
        x.code = Some(0);
        assert_eq!(
            end_json(&x),
            json!({"event": {"end": {"exitCode": 0, "exited": true, "status": "exit status 0"}}})
        );
        x.code = None;
        x.signal = Some(9);
        assert_eq!(
            end_json(&x),
            json!({"event": {"end": {"exitCode": -1, "exited": false, "status": "signal: killed", "error": "signal: killed"}}})
        );
    }

    #[test]
    fn deadlines_are_milliseconds_of_at_most_ten_digits() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert("connect-timeout-ms", v.parse().unwrap());
            m
        };
        assert_eq!(deadline(&h("60000")).unwrap(), Some(Duration::from_secs(60)));
        assert_eq!(deadline(&h("0")).unwrap(), None);
        assert_eq!(deadline(&HeaderMap::new()).unwrap(), None);
        assert!(deadline(&h("12345678901")).is_err());
        assert!(deadline(&h("1s")).is_err());
    }

    #[test]
    fn the_basic_user_must_be_the_daemons() {
        let h = |user: &str| {
            let mut m = HeaderMap::new();
            let v = base64::engine::general_purpose::STANDARD.encode(format!("{user}:"));
            m.insert(header::AUTHORIZATION, format!("Basic {v}").parse().unwrap());
            m
        };
        assert!(check_user(&HeaderMap::new()).is_ok());
        assert!(check_user(&h(&me())).is_ok());
        let e = check_user(&h("someone-else-entirely")).unwrap_err();
        assert_eq!(e.code, Code::PermissionDenied);
    }
}
