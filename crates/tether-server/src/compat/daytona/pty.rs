//! PTY sessions (`protocol/compat/daytona.md` §10): a Daytona PTY session
//! is a tether PTY command running the default shell, labelled
//! `daytona.pty=<id>`. The create-connect and connect WebSockets carry
//! keystrokes in and terminal output out as binary frames, with the SDK's
//! JSON control frames (`connected` first, `exited` last when the client
//! offered the exit-control subprotocol) and a 1000 close whose reason
//! holds the exit code. Resize and kill are REST calls.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};
use tether_exec::{self as exec, CommandHandle, CommandInfo, Event, ExitInfo, Subscription, TermSize};
use tokio_util::sync::CancellationToken;

use super::ws::Peer;
use super::{Refusal, json, query};
use crate::AppState;

/// The label that names a command as a Daytona PTY session.
const LABEL: &str = "daytona.pty";
/// Its working directory, as asked (for `PtySessionInfo.cwd`).
const CWD_LABEL: &str = "daytona.pty.cwd";
/// Its variables from the envs subprotocol, as JSON.
const ENVS_LABEL: &str = "daytona.pty.envs";

/// The subprotocol that asks for the `exited` control frame.
const EXIT_CONTROL: &str = "X-Daytona-Pty-Exit-Control";
/// The prefix of the subprotocol that carries the variables.
const ENVS_PREFIX: &str = "X-Daytona-Pty-Envs~";

/// Longest session id (it is a label value).
const MAX_ID: usize = 128;

/// Most bytes per output message (see `MAX_SDK_MESSAGE`).
const CHUNK: usize = super::MAX_SDK_MESSAGE;

#[derive(Debug, Deserialize)]
pub(super) struct PtyPath {
    session_id: String,
}

#[derive(Debug, Deserialize)]
struct CreateQuery {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    cols: Option<String>,
    #[serde(default)]
    rows: Option<String>,
    #[serde(default)]
    cwd: Option<String>,
}

/// `PtyResizeRequest`.
#[derive(Debug, Deserialize)]
struct Resize {
    cols: i64,
    rows: i64,
}

/// `GET /process/pty/create-connect?id=&cols=&rows=[&cwd=]`: starts the
/// session and connects to it. A bad or duplicate id is refused before the
/// upgrade (400, 409).
pub(super) async fn create_connect(State(st): State<Arc<AppState>>, req: Request) -> Response {
    let r = async {
        let (mut parts, _) = req.into_parts();
        let q: CreateQuery = query(&parts.uri)?;
        let id =
            q.id.filter(|i| !i.is_empty())
                .ok_or_else(|| Refusal::bad_request("missing query parameter `id`"))?;
        if id.len() > MAX_ID || id.chars().any(|c| c.is_control() || c == '/') {
            return Err(Refusal::bad_request(format!(
                "PTY session id {id:?}: at most {MAX_ID} bytes, no control characters or `/`"
            )));
        }
        let size = TermSize {
            cols: dimension("cols", q.cols.as_deref(), 80)?,
            rows: dimension("rows", q.rows.as_deref(), 24)?,
        };
        if !size.is_valid() {
            return Err(Refusal::bad_request(format!(
                "PTY size {}x{}: each side must be within 1..={}",
                size.cols,
                size.rows,
                TermSize::MAX
            )));
        }
        let ws = upgrade(&mut parts).await?;
        let offered: Vec<String> =
            ws.requested_protocols().filter_map(|p| p.to_str().ok()).map(str::to_owned).collect();
        let mut envs = BTreeMap::new();
        for token in offered.iter().filter_map(|p| p.strip_prefix(ENVS_PREFIX)) {
            envs.extend(decode_envs(token)?);
        }
        let _one_at_a_time = st.daytona_pty_create.lock().await;
        if live(&st, &id).is_some() {
            return Err(Refusal::new(409, Some("CONFLICT"), format!("PTY session {id:?} already exists")));
        }
        let shell = st.cfg.manager.default_shell.clone();
        let mut spec = exec::CommandSpec::new(exec::Program::Argv(vec![shell]));
        let cwd = q
            .cwd
            .filter(|c| !c.is_empty())
            .or_else(|| st.cfg.files_root.as_ref().map(|r| r.to_string_lossy().into_owned()));
        spec.cwd = cwd.clone().map(Into::into);
        spec.env = envs.clone();
        spec.pty = Some(exec::PtyOptions { size, term: None });
        spec.labels.insert(LABEL.into(), id.clone());
        if let Some(cwd) = cwd {
            spec.labels.insert(CWD_LABEL.into(), cwd);
        }
        if !envs.is_empty() {
            spec.labels.insert(ENVS_LABEL.into(), serde_json::to_string(&envs).unwrap_or_default());
        }
        // Attached before the terminal's first byte is read.
        let (h, sub) = st.manager.start_then(spec, |h| h.attach([0, 0]))?;
        tracing::info!(command = %h.id(), pty = %id, "daytona PTY session started");
        let sub = sub?;
        Ok::<_, Refusal>(serve(&st, ws, h, sub, None))
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /process/pty/{id}/connect`: the current screen, then live output.
pub(super) async fn connect(
    State(st): State<Arc<AppState>>,
    Path(p): Path<PtyPath>,
    req: Request,
) -> Response {
    let r = async {
        let (mut parts, _) = req.into_parts();
        let h = live(&st, &p.session_id).ok_or_else(|| not_found(&p.session_id))?;
        let ws = upgrade(&mut parts).await?;
        let (screen, sub) = h.attach_screen(0, None, false).await?;
        Ok::<_, Refusal>(serve(&st, ws, h, sub, screen.map(|s| s.data)))
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /process/pty`: `{"sessions": [PtySessionInfo]}`, ended ones too
/// (until their TTL).
pub(super) async fn list(State(st): State<Arc<AppState>>) -> Response {
    let mut newest: BTreeMap<String, CommandInfo> = BTreeMap::new();
    for info in st.manager.list() {
        let Some(id) = info.labels.get(LABEL).cloned() else { continue };
        match newest.get(&id) {
            Some(old) if rank(old) >= rank(&info) => {}
            _ => {
                newest.insert(id, info);
            }
        }
    }
    let sessions: Vec<Value> = newest.values().map(info_json).collect();
    axum::Json(json!({ "sessions": sessions })).into_response()
}

/// `GET /process/pty/{id}`.
pub(super) async fn info(State(st): State<Arc<AppState>>, Path(p): Path<PtyPath>) -> Response {
    match find(&st, &p.session_id) {
        Some(h) => axum::Json(info_json(&h.info())).into_response(),
        None => not_found(&p.session_id).into_response(),
    }
}

/// `POST /process/pty/{id}/resize`: every attachment sees the new size.
pub(super) async fn resize(State(st): State<Arc<AppState>>, Path(p): Path<PtyPath>, body: Bytes) -> Response {
    let r = async {
        let req: Resize = json(&body)?;
        let h = find(&st, &p.session_id).ok_or_else(|| not_found(&p.session_id))?;
        if h.exit().is_some() {
            return Err(Refusal::new(
                410,
                Some("GONE"),
                format!("PTY session {:?} has exited", p.session_id),
            ));
        }
        let side = |v: i64| u16::try_from(v).ok().filter(|&v| (1..=TermSize::MAX).contains(&v));
        let (Some(cols), Some(rows)) = (side(req.cols), side(req.rows)) else {
            return Err(Refusal::bad_request(format!(
                "PTY size {}x{}: each side must be within 1..={}",
                req.cols,
                req.rows,
                TermSize::MAX
            )));
        };
        h.resize(TermSize { rows, cols }).await?;
        let mut info = info_json(&h.info());
        // The listing may not have seen the change yet: it is this size.
        if let Some(o) = info.as_object_mut() {
            o.insert("cols".into(), cols.into());
            o.insert("rows".into(), rows.into());
        }
        Ok(axum::Json(info).into_response())
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

/// `DELETE /process/pty/{id}`: kills it; answers a JSON object.
pub(super) async fn kill(State(st): State<Arc<AppState>>, Path(p): Path<PtyPath>) -> Response {
    let r = async {
        let h = find(&st, &p.session_id).ok_or_else(|| not_found(&p.session_id))?;
        if h.exit().is_none() {
            match h.kill().await {
                Ok(()) | Err(exec::ExecError::NotRunning(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok::<_, Refusal>(axum::Json(json!({})).into_response())
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

/// Upgrades with the exit-control subprotocol if it was offered (never
/// one that was not).
async fn upgrade(parts: &mut axum::http::request::Parts) -> Result<WebSocketUpgrade, Refusal> {
    WebSocketUpgrade::from_request_parts(parts, &()).await.map_err(|e| {
        Refusal::bad_request(format!("a PTY session needs a WebSocket upgrade: {}", e.body_text()))
    })
}

/// The WebSocket for `h`, after the optional screen.
fn serve(
    st: &Arc<AppState>,
    ws: WebSocketUpgrade,
    h: CommandHandle,
    sub: Subscription,
    screen: Option<Bytes>,
) -> Response {
    let ws = crate::conn::sized(ws).protocols([EXIT_CONTROL]);
    let exit_control = ws.selected_protocol().is_some();
    let st2 = st.clone();
    let shutdown = st.shutdown.clone();
    ws.on_upgrade(move |socket| {
        st2.conns.track_future(pump(Peer::new(socket, &st2.cfg), h, sub, screen, exit_control, shutdown))
    })
}

/// One PTY WebSocket: `connected`, output, input, `exited` and the close.
async fn pump(
    mut peer: Peer,
    h: CommandHandle,
    mut sub: Subscription,
    screen: Option<Bytes>,
    exit_control: bool,
    shutdown: CancellationToken,
) {
    let connected = json!({"type": "control", "status": "connected"}).to_string();
    if !peer.send(Message::Text(connected.into())).await {
        return;
    }
    // A big terminal's screen (colours, attributes) can pass the SDK's
    // limit: it is terminal bytes, so it goes in pieces like any output.
    if let Some(screen) = screen {
        for at in (0..screen.len()).step_by(CHUNK) {
            if !peer.send(Message::Binary(screen.slice(at..(at + CHUNK).min(screen.len())))).await {
                return;
            }
        }
    }
    let exit = loop {
        tokio::select! {
            ev = sub.next(CHUNK) => match ev {
                Some(Event::Output { data, .. }) => {
                    if !peer.send(Message::Binary(data)).await {
                        return;
                    }
                }
                Some(Event::Gap { .. } | Event::Resized(_)) => {}
                Some(Event::Exit(x)) => break x,
                None => break h.wait().await,
            },
            msg = peer.recv() => match msg {
                Some(Message::Binary(b)) => {
                    if let Err(e) = h.write_stdin(b).await {
                        tracing::debug!(command = %h.id(), "PTY input refused: {e}");
                    }
                }
                Some(Message::Text(t)) => {
                    if let Err(e) = h.write_stdin(Bytes::copy_from_slice(t.as_bytes())).await {
                        tracing::debug!(command = %h.id(), "PTY input refused: {e}");
                    }
                }
                Some(_) => {}
                None => return,
            },
            () = shutdown.cancelled() => {
                peer.close(1001, "the daemon is restarting or stopping").await;
                return;
            }
        }
    };
    let code = exit.shell_code();
    let reason = exit_reason(&exit);
    let mut end = json!({ "exitCode": code });
    if let (Some(r), Some(o)) = (&reason, end.as_object_mut()) {
        o.insert("exitReason".into(), r.clone().into());
    }
    if exit_control {
        let mut frame = json!({"type": "control", "status": "exited", "exitCode": code});
        if let (Some(r), Some(o)) = (&reason, frame.as_object_mut()) {
            o.insert("exitReason".into(), r.clone().into());
        }
        if !peer.send(Message::Text(frame.to_string().into())).await {
            return;
        }
    }
    peer.close(1000, &end.to_string()).await;
}

/// Why it ended, when a signal ended it.
fn exit_reason(x: &ExitInfo) -> Option<String> {
    x.signal.map(|s| format!("terminated by signal {s}"))
}

/// A side of the terminal from the query (default `d`).
fn dimension(name: &str, v: Option<&str>, d: u16) -> Result<u16, Refusal> {
    match v {
        None | Some("") => Ok(d),
        Some(v) => v.trim().parse().map_err(|_| Refusal::bad_request(format!("{name} {v:?} is not a size"))),
    }
}

/// The envs subprotocol's token: unpadded base64url of a JSON object of
/// strings.
fn decode_envs(token: &str) -> Result<BTreeMap<String, String>, Refusal> {
    let bad = |why: String| Refusal::bad_request(format!("the {ENVS_PREFIX}... subprotocol: {why}"));
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .map_err(|e| bad(e.to_string()))?;
    serde_json::from_slice(&raw).map_err(|e| bad(format!("not a JSON object of strings: {e}")))
}

/// The live PTY session of this id.
fn live(st: &AppState, id: &str) -> Option<CommandHandle> {
    find(st, id).filter(|h| h.exit().is_none())
}

/// The PTY session of this id: the live one, else the newest ended one.
fn find(st: &AppState, id: &str) -> Option<CommandHandle> {
    let best = st
        .manager
        .list()
        .into_iter()
        .filter(|i| i.labels.get(LABEL).is_some_and(|v| v == id))
        .max_by_key(rank)?;
    st.manager.get(&best.id).ok()
}

/// Live before ended, then newer before older.
fn rank(i: &CommandInfo) -> (bool, std::time::SystemTime) {
    (i.exit.is_none(), i.started_at)
}

fn not_found(id: &str) -> Refusal {
    Refusal::new(404, Some("PROCESS_NOT_FOUND"), format!("no PTY session {id:?}"))
}

/// `PtySessionInfo`: every field present.
fn info_json(i: &CommandInfo) -> Value {
    let size = i.pty.unwrap_or(TermSize { rows: 24, cols: 80 });
    let envs: Value =
        i.labels.get(ENVS_LABEL).and_then(|e| serde_json::from_str(e).ok()).unwrap_or_else(|| json!({}));
    let cwd = i.labels.get(CWD_LABEL).cloned().unwrap_or_else(|| {
        std::env::current_dir().map(|d| d.to_string_lossy().into_owned()).unwrap_or_else(|_| "/".into())
    });
    let ms = i
        .started_at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0));
    json!({
        "id": i.labels.get(LABEL).cloned().unwrap_or_default(),
        "active": i.exit.is_none(),
        "cols": size.cols,
        "rows": size.rows,
        "cwd": cwd,
        "envs": envs,
        "createdAt": crate::compat::rfc3339(ms),
        "lazyStart": false,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn envs_token_is_unpadded_base64url_json() {
        // What the SDK sends for {"A": "1", "B": "x y"} (json.dumps, default separators).
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"A": "1", "B": "x y"}"#);
        let envs = decode_envs(&token).unwrap();
        assert_eq!(envs.get("A").map(String::as_str), Some("1"));
        assert_eq!(envs.get("B").map(String::as_str), Some("x y"));
        assert!(decode_envs(&format!("{token}==")).is_ok(), "padding is tolerated");
        assert!(decode_envs("!!!").is_err());
        let not_strings = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"A": 1}"#);
        assert!(decode_envs(&not_strings).is_err());
    }
}
