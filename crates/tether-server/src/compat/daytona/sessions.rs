//! Sessions (`protocol/compat/daytona.md` §8, §9): a Daytona session is a
//! named shell, its commands are the shell's commands (normal tether
//! commands, with ids the SDK calls `cmdId`). Logs come from the command's
//! rings: as JSON, or streamed on the follow WebSocket with the SDK's
//! stream markers and a 1000 close after the exit.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use serde::Deserialize;
use serde_json::{Value, json};
use tether_exec::{self as exec, CommandHandle, Event, ShellHandle, ShellSpec, Stream, Subscription};
use tokio_util::sync::CancellationToken;

use super::process::MAX_RESULT;
use super::ws::Peer;
use super::{MAX_SDK_MESSAGE, Refusal, json, query, text};
use crate::AppState;

/// The marker that says stdout follows on the follow WebSocket.
const STDOUT_MARKER: &[u8] = &[1, 1, 1];
/// The marker that says stderr follows.
const STDERR_MARKER: &[u8] = &[2, 2, 2];

/// The label that names a command's session (it outlives the shell).
const SESSION_LABEL: &str = "daytona.session";

#[derive(Debug, Deserialize)]
pub(super) struct SessionPath {
    session_id: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct CommandPath {
    session_id: String,
    command_id: String,
}

/// `CreateSessionRequest`.
#[derive(Debug, Deserialize)]
struct CreateSession {
    #[serde(rename = "sessionId")]
    session_id: String,
}

/// `SessionExecuteRequest`.
#[derive(Debug, Deserialize)]
struct SessionExecute {
    command: String,
    #[serde(default, rename = "runAsync")]
    run_async: Option<bool>,
    /// The deprecated spelling of `runAsync`.
    #[serde(default, rename = "async")]
    var_async: Option<bool>,
    /// tether never echoes input (stdin is a pipe): accepted, ignored.
    #[serde(default, rename = "suppressInputEcho")]
    _suppress_input_echo: Option<bool>,
}

/// `SessionSendInputRequest`.
#[derive(Debug, Deserialize)]
struct SendInput {
    data: String,
}

#[derive(Debug, Default, Deserialize)]
struct LogsQuery {
    #[serde(default)]
    follow: Option<bool>,
}

/// `POST /process/session`: a named shell; 409 when a live one has the name.
pub(super) async fn create(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    let r = async {
        let req: CreateSession = json(&body)?;
        let mut spec = ShellSpec::named(req.session_id.clone());
        spec.cwd = st.cfg.files_root.clone();
        let (_, created) = st.manager.create_shell(spec).await.map_err(session_error)?;
        if !created {
            return Err(Refusal::new(
                409,
                Some("CONFLICT"),
                format!("session {:?} already exists", req.session_id),
            ));
        }
        Ok(StatusCode::CREATED.into_response())
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /process/session`: the live sessions, a bare array.
pub(super) async fn list(State(st): State<Arc<AppState>>) -> Response {
    let sessions: Vec<Value> = st
        .manager
        .shells()
        .into_iter()
        .filter(|i| i.closed.is_none())
        .filter_map(|i| st.manager.shell(&i.name).ok())
        .map(|h| session_json(&st, &h))
        .collect();
    axum::Json(sessions).into_response()
}

/// `GET /process/session/{id}`.
pub(super) async fn get(State(st): State<Arc<AppState>>, Path(p): Path<SessionPath>) -> Response {
    match st.manager.shell(&p.session_id) {
        Ok(h) => axum::Json(session_json(&st, &h)).into_response(),
        Err(e) => session_error(e).into_response(),
    }
}

/// `DELETE /process/session/{id}`: closes the shell, killing what it runs.
pub(super) async fn delete(State(st): State<Arc<AppState>>, Path(p): Path<SessionPath>) -> Response {
    match st.manager.close_shell(&p.session_id).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => session_error(e).into_response(),
    }
}

/// `POST /process/session/{id}/exec`: queued in the shell; `runAsync`
/// answers 202 `{cmdId}` at once, else 200 with the output and exit code
/// once it ends.
pub(super) async fn exec(
    State(st): State<Arc<AppState>>,
    Path(p): Path<SessionPath>,
    body: Bytes,
) -> Response {
    let r = async {
        let req: SessionExecute = json(&body)?;
        let mut spec = exec::CommandSpec::shell(req.command);
        spec.labels.insert(SESSION_LABEL.into(), p.session_id.clone());
        let run_async = req.run_async.or(req.var_async).unwrap_or(false);
        // A run waited for is attached, paced, before its first byte is read.
        let (h, sub, _) = st
            .manager
            .shell_run_keyed_then(&p.session_id, spec, |h| (!run_async).then(|| h.attach_paced([0, 0], true)))
            .await
            .map_err(session_error)?;
        let Some(sub) = sub else {
            return Ok::<_, Refusal>(
                (StatusCode::ACCEPTED, axum::Json(json!({ "cmdId": h.id() }))).into_response(),
            );
        };
        let sub = sub?;
        let logs = collect(sub, Some(&st.shutdown)).await?;
        let code = logs.exit.as_ref().map_or(-1, exec::ExitInfo::shell_code);
        Ok(axum::Json(json!({
            "cmdId": h.id(),
            "output": text(&logs.output),
            "stdout": text(&logs.stdout),
            "stderr": text(&logs.stderr),
            "exitCode": code,
        }))
        .into_response())
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /process/session/{id}/command/{cmd}`: from the shell's history
/// (which outlives the command's TTL).
pub(super) async fn command(State(st): State<Arc<AppState>>, Path(p): Path<CommandPath>) -> Response {
    let r = async {
        let sh = match st.manager.shell(&p.session_id) {
            Ok(sh) => sh,
            // A restart closes shells but hands their commands over.
            Err(e) => {
                let h = orphan(&st, &p).ok_or_else(|| session_error(e))?;
                let info = h.info();
                let mut v =
                    json!({ "id": info.id, "command": info.argv.first().cloned().unwrap_or_default() });
                if let (Some(x), Some(o)) = (info.exit, v.as_object_mut()) {
                    o.insert("exitCode".into(), x.shell_code().into());
                }
                return Ok(axum::Json(v).into_response());
            }
        };
        let entry = sh.history().into_iter().find(|e| e.id == p.command_id).ok_or_else(|| no_command(&p))?;
        Ok::<_, Refusal>(axum::Json(command_json(&st, &entry)).into_response())
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /process/session/{id}/command/{cmd}/logs`: what the rings hold
/// as JSON, or with `follow=true` the follow WebSocket.
pub(super) async fn logs(
    State(st): State<Arc<AppState>>,
    Path(p): Path<CommandPath>,
    req: Request,
) -> Response {
    let r = async {
        let (mut parts, _) = req.into_parts();
        let q: LogsQuery = query(&parts.uri)?;
        let h = session_command(&st, &p)?;
        if q.follow.unwrap_or(false) {
            let ws = WebSocketUpgrade::from_request_parts(&mut parts, &()).await.map_err(|e| {
                Refusal::bad_request(format!("follow=true needs a WebSocket upgrade: {}", e.body_text()))
            })?;
            let sub = h.attach_paced([0, 0], true)?;
            let shutdown = st.shutdown.clone();
            let st2 = st.clone();
            return Ok::<_, Refusal>(crate::conn::sized(ws).on_upgrade(move |socket| {
                st2.conns.track_future(follow(Peer::new(socket, &st2.cfg), sub, shutdown))
            }));
        }
        let logs = collect(h.attach([0, 0])?, None).await?;
        Ok(axum::Json(json!({
            "output": text(&logs.output),
            "stdout": text(&logs.stdout),
            "stderr": text(&logs.stderr),
        }))
        .into_response())
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

/// `POST /process/session/{id}/command/{cmd}/input`: stdin for the
/// command; 410 once it has ended.
pub(super) async fn input(
    State(st): State<Arc<AppState>>,
    Path(p): Path<CommandPath>,
    body: Bytes,
) -> Response {
    let r = async {
        let req: SendInput = json(&body)?;
        let h = session_command(&st, &p)?;
        if h.exit().is_some() {
            return Err(completed(&p));
        }
        match h.write_stdin(Bytes::from(req.data)).await {
            Ok(()) => Ok(StatusCode::NO_CONTENT.into_response()),
            Err(exec::ExecError::NotRunning(_) | exec::ExecError::StdinClosed(_)) => Err(completed(&p)),
            Err(e) => Err(e.into()),
        }
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

/// The session's command `p.command_id`, still held.
fn session_command(st: &AppState, p: &CommandPath) -> Result<CommandHandle, Refusal> {
    let sh = match st.manager.shell(&p.session_id) {
        Ok(sh) => sh,
        Err(e) => return orphan(st, p).ok_or_else(|| session_error(e)),
    };
    match st.manager.get(&p.command_id) {
        Ok(h) if h.info().shell.as_deref() == Some(sh.name()) => Ok(h),
        _ if sh.history().iter().any(|e| e.id == p.command_id) => Err(Refusal::not_found(format!(
            "command {:?} of session {:?} has ended and its output is no longer held (its TTL ran out)",
            p.command_id, p.session_id
        ))),
        _ => Err(no_command(p)),
    }
}

/// A held command of a session that is gone (a restart closes named
/// shells and hands their commands over): found by its label.
fn orphan(st: &AppState, p: &CommandPath) -> Option<CommandHandle> {
    let h = st.manager.get(&p.command_id).ok()?;
    let info = h.info();
    (info.labels.get(SESSION_LABEL) == Some(&p.session_id)).then_some(h)
}

/// A shell error in the session's words (the SDK's user knows no shells).
fn session_error(e: exec::ExecError) -> Refusal {
    match e {
        exec::ExecError::ShellNotFound(name) => Refusal::not_found(format!("no session {name:?}")),
        exec::ExecError::ShellClosed { name, why } => {
            Refusal::new(410, Some("SESSION_ENDED"), format!("session {name:?} has ended: {why}"))
        }
        exec::ExecError::BadShellName(name) => {
            Refusal::bad_request(format!("session id {name:?}: 1 to 64 letters, digits, `.`, `_` or `-`"))
        }
        e => e.into(),
    }
}

fn no_command(p: &CommandPath) -> Refusal {
    Refusal::not_found(format!("no command {:?} in session {:?}", p.command_id, p.session_id))
}

fn completed(p: &CommandPath) -> Refusal {
    Refusal::new(
        410,
        Some("COMMAND_ALREADY_COMPLETED"),
        format!("command {:?} has already completed", p.command_id),
    )
}

/// `Session`: `commands` always a list.
fn session_json(st: &AppState, h: &ShellHandle) -> Value {
    let commands: Vec<Value> = h.history().iter().map(|e| command_json(st, e)).collect();
    json!({ "sessionId": h.name(), "commands": commands })
}

/// `Command`: `exitCode` only once it ended (the command's exit status
/// while it is held, else the shell's record).
fn command_json(st: &AppState, e: &exec::HistoryEntry) -> Value {
    let held = st.manager.get(&e.id).ok().and_then(|h| h.exit()).map(|x| x.shell_code());
    let code =
        held.or(if e.state == exec::JobState::Exited { Some(e.exit_code.unwrap_or(-1)) } else { None });
    let mut v = json!({ "id": e.id, "command": e.script });
    if let (Some(code), Some(o)) = (code, v.as_object_mut()) {
        o.insert("exitCode".into(), code.into());
    }
    v
}

/// A command's output read from a subscription: both streams, and both
/// joined in the order they were read.
struct Logs {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    output: Vec<u8>,
    /// `Some` once the command ended (always, when waited for).
    exit: Option<exec::ExitInfo>,
}

/// With `wait` (the daemon's shutdown token), reads to the command's end;
/// without, only what is held now. Each stream keeps at most
/// [`MAX_RESULT`] bytes.
async fn collect(mut sub: Subscription, wait: Option<&CancellationToken>) -> Result<Logs, Refusal> {
    let cap = usize::try_from(MAX_RESULT).unwrap_or(usize::MAX);
    let mut logs = Logs { stdout: Vec::new(), stderr: Vec::new(), output: Vec::new(), exit: None };
    loop {
        let ev = match wait {
            Some(shutdown) => tokio::select! {
                ev = sub.next(256 * 1024) => ev,
                () = shutdown.cancelled() => return Err(exec::ExecError::ShuttingDown.into()),
            },
            None => match sub.next(256 * 1024).now_or_never() {
                Some(ev) => ev,
                None => return Ok(logs),
            },
        };
        match ev {
            Some(Event::Output { stream, data, .. }) => {
                let own = if stream == Stream::Stdout { &mut logs.stdout } else { &mut logs.stderr };
                let room = cap.saturating_sub(own.len()).min(data.len());
                own.extend_from_slice(&data[..room]);
                let room = (2 * cap).saturating_sub(logs.output.len()).min(data.len());
                logs.output.extend_from_slice(&data[..room]);
            }
            Some(Event::Gap { .. } | Event::Resized(_)) => {}
            Some(Event::Exit(x)) => {
                logs.exit = Some(x);
                return Ok(logs);
            }
            None => return Ok(logs),
        }
    }
}

/// The follow WebSocket: every byte from offset 0, a marker before each
/// change of stream, a 1000 close after the exit (1011 if output was lost,
/// 1001 when the daemon stops).
async fn follow(mut peer: Peer, mut sub: Subscription, shutdown: CancellationToken) {
    let mut current: Option<Stream> = None;
    let (code, reason) = loop {
        tokio::select! {
            // A message, its marker included, within the SDK's limit.
            ev = sub.next(MAX_SDK_MESSAGE - STDOUT_MARKER.len()) => match ev {
                Some(Event::Output { stream, data, .. }) => {
                    let mut frame = Vec::with_capacity(data.len() + 3);
                    if current != Some(stream) {
                        frame.extend_from_slice(if stream == Stream::Stdout { STDOUT_MARKER } else { STDERR_MARKER });
                        current = Some(stream);
                    }
                    frame.extend_from_slice(&data);
                    if !peer.send(Message::Binary(frame.into())).await {
                        return;
                    }
                }
                Some(Event::Gap { .. }) => break (1011, "output lost: the ring no longer holds it"),
                Some(Event::Resized(_)) => {}
                Some(Event::Exit(_)) | None => break (1000, ""),
            },
            msg = peer.recv() => if msg.is_none() {
                return;
            },
            () = shutdown.cancelled() => break (1001, "the daemon is restarting or stopping"),
        }
    };
    peer.close(code, reason).await;
}
