//! The exec WebSocket, `/v2/runtimes/{id}/exec/stream`
//! (`protocol/compat/runta.md` §Exec stream): one command per connection,
//! JSON text frames. In: `start` (first), `stdin` (base64), `close_stdin`,
//! `signal`, `heartbeat`. Out: `stdout`/`stderr` (base64), `exit` and a
//! 1000 close, `error`, `heartbeat`.
//!
//! Built on the native protocol's pieces (`conn`): the writer task with its
//! bounded queue and send timeout, the stdin pump with its window, the
//! keepalive and the outside ends (stop, token revocation, a dead peer).
//! What is the dialect's own is the translation, and two choices the SDK
//! needs:
//! - Output is read by a pacing attachment from offset 0: the SDK cannot
//!   notice a gap, so a slow client holds the command back rather than lose
//!   a byte.
//! - Input has no acknowledgement, so the read loop waits for room in the
//!   stdin window instead of dropping input (TCP holds the client back).
//!
//! A connection that goes away (a cut, a restart) never kills its command:
//! the SDK's durable execution keeps running in a `setsid` supervisor that
//! belongs to the command's containment, and the SDK reconnects with
//! `control.sh watch`. The command gets end of input (as on a real host
//! when the exec connection drops) and goes on as any detached tether
//! command (TTL, `tether ls`, `attach`), with no idle timeout: nobody
//! attaches to it again, and the guest's own timeout bounds the run.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::SplitStream;
use serde::Deserialize;
use serde_json::json;
use tether_exec::{self as exec, CommandHandle, Event, Stream, Subscription};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument;

use super::{Refusal, host_id, known_runtime};
use crate::AppState;
use crate::conn::{
    CLOSE_NORMAL, CLOSE_POLICY, Keepalive, Lifeline, OutTx, Outbound, PumpReply, StdinOp, StdinPump, Tick,
};

/// Largest client frame: a `start` carries the SDK's whole bootstrap
/// script (the supervisor, the command, its variables), `stdin` at most
/// 256 KiB of base64.
const MAX_CLIENT_FRAME: usize = 16 << 20;

/// Raw bytes per output frame (before base64).
const FRAME_RAW_BYTES: usize = 64 * 1024;

/// Unwritten stdin bytes one connection may queue; past it the read loop
/// waits for the command to take some.
const STDIN_WINDOW: usize = 4 << 20;

/// The label every dialect command carries (value: the runtime id).
pub(crate) const LABEL: &str = "runta.exec";

/// The reason of the close frame when the daemon stops or restarts.
const GOING_AWAY: &str = "server restarting";

/// A client frame.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientFrame {
    Start(Start),
    Stdin {
        data_base64: String,
    },
    CloseStdin,
    Signal {
        signal: String,
    },
    Heartbeat,
    #[serde(other)]
    Unknown,
}

/// `start`: what to run.
#[derive(Debug, Deserialize)]
struct Start {
    command: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: Option<BTreeMap<String, String>>,
    #[serde(default)]
    tty: bool,
}

/// `GET .../exec/stream`: the runtime is checked before the upgrade (404
/// `not_found` for another id).
pub(super) async fn upgrade(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    axum::Extension(revoked): axum::Extension<crate::auth::Revocation>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if let Err(r) = known_runtime(&st, &id) {
        return r.into_response();
    }
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => {
            return Refusal::invalid(format!("the exec stream needs a WebSocket upgrade: {}", e.body_text()))
                .into_response();
        }
    };
    let st2 = st.clone();
    crate::conn::sized(ws)
        .max_message_size(MAX_CLIENT_FRAME)
        .max_frame_size(MAX_CLIENT_FRAME)
        .on_upgrade(move |socket| st2.conns.track_future(serve(socket, st, revoked.0)))
}

/// One connection: the `start`, then the command until its exit, the
/// client's going or the daemon's.
async fn serve(ws: WebSocket, st: Arc<AppState>, revoked: CancellationToken) {
    let (sink, stream) = ws.split();
    let outbound = Outbound::spawn(sink, st.cfg.outbound_queue, st.cfg.peer_timeout);
    let out = outbound.tx();
    let mut link = Link {
        st: &st,
        outbound: &outbound,
        lifeline: Lifeline::new(st.shutdown.clone(), revoked, &outbound),
        keepalive: Keepalive::new(st.cfg.ping_interval, st.cfg.peer_timeout),
        stream,
    };
    let closing = match started(&mut link).await {
        Ok((h, sub)) => run(h, sub, &mut link).await,
        Err(Unstarted::Close(closing)) => closing,
        Err(Unstarted::Refused(message)) => {
            let _ = out.send(error_frame(&message)).await;
            Some((CLOSE_NORMAL, ""))
        }
    };
    if let Some((code, reason)) = closing {
        outbound.close(code, reason).await;
    }
    drop(out);
    outbound.finish().await;
}

/// A connection's parts.
struct Link<'a> {
    /// The daemon.
    st: &'a AppState,
    /// The writer task (frames out, pings).
    outbound: &'a Outbound,
    /// The daemon's stop, the token's revocation, the writer's giving up.
    lifeline: Lifeline,
    /// Pings and the peer's silence.
    keepalive: Keepalive,
    /// Frames in.
    stream: SplitStream<WebSocket>,
}

/// Why a connection never started a command.
enum Unstarted {
    /// It ends with this close frame, if any.
    Close(Option<(u16, &'static str)>),
    /// The client is told with an `error` frame (the SDK's `ApiError`).
    Refused(String),
}

/// Reads up to the `start` frame and starts its command.
async fn started(link: &mut Link<'_>) -> Result<(CommandHandle, Subscription), Unstarted> {
    let st = link.st;
    let opened = Instant::now();
    loop {
        let frame = tokio::select! {
            ending = link.lifeline.ended() => return Err(Unstarted::Close(ending.close(GOING_AWAY))),
            tick = link.keepalive.tick() => {
                match tick {
                    Tick::Silent(_) => return Err(Unstarted::Close(Some((CLOSE_POLICY, "ping timeout")))),
                    Tick::Ping if opened.elapsed() > st.cfg.peer_timeout => {
                        return Err(Unstarted::Refused(format!(
                            "no start frame within {} s of connecting",
                            st.cfg.peer_timeout.as_secs()
                        )));
                    }
                    Tick::Ping => link.outbound.ping(),
                }
                continue;
            }
            frame = link.stream.next() => frame,
        };
        let Some(Ok(msg)) = frame else { return Err(Unstarted::Close(None)) };
        link.keepalive.seen();
        match parse(&msg).map_err(Unstarted::Refused)? {
            None | Some(ClientFrame::Heartbeat | ClientFrame::Unknown) => {}
            Some(ClientFrame::Start(s)) => return start(st, s).map_err(Unstarted::Refused),
            Some(_) => return Err(Unstarted::Refused("the first frame must be start".into())),
        }
    }
}

/// The `start` frame as a tether command: argv without a shell, the
/// variables added to the daemon's environment, in the files root.
fn start(st: &AppState, s: Start) -> Result<(CommandHandle, Subscription), String> {
    if s.tty {
        return Err("tty is not supported by tether's Runta dialect (the SDK never asks for one)".into());
    }
    if s.command.is_empty() {
        return Err("start: command is empty".into());
    }
    let mut argv = Vec::with_capacity(s.args.len() + 1);
    argv.push(s.command);
    argv.extend(s.args);
    let mut spec = exec::CommandSpec::new(exec::Program::Argv(argv));
    spec.env = s.env.unwrap_or_default();
    spec.cwd = st.files.as_ref().map(|f| f.root().to_path_buf());
    // After a cut or a restart nobody attaches to this command again (the
    // SDK watches the result with a new one), and killing it would kill
    // the durable execution under it: the guest's own timeout bounds it.
    spec.idle_timeout = exec::Lifetime::Never;
    spec.labels.insert(LABEL.into(), host_id(st).to_owned());
    // Attached, paced, before the command's first byte is read.
    let (h, sub) =
        st.manager.start_then(spec, |h| h.attach_paced([0, 0], true)).map_err(|e| format!("start: {e}"))?;
    tracing::debug!(command = %h.id(), "runta exec started");
    Ok((h, sub.map_err(|e| format!("attach: {e}"))?))
}

/// A started connection: forwards the command's output and applies the
/// client's frames until the exit, the client's going or the daemon's.
/// Returns the close frame to send, if any.
async fn run(h: CommandHandle, sub: Subscription, link: &mut Link<'_>) -> Option<(u16, &'static str)> {
    let st = link.st;
    let out = link.outbound.tx();
    let quiet: PumpReply<()> = Box::new(|(), r| {
        if let Err(e) = r {
            tracing::debug!("runta stdin not written: {e}");
        }
        None
    });
    let stdin = StdinPump::spawn(st.manager.clone(), h.id().to_owned(), STDIN_WINDOW, None, quiet);
    let (done_tx, mut done) = tokio::sync::oneshot::channel();
    let forwarder = {
        let (out, h2) = (out.clone(), h.clone());
        AbortOnDropHandle::new(tokio::spawn(
            async move {
                forward(sub, &h2, &out).await;
                let _ = done_tx.send(());
            }
            .instrument(tracing::info_span!("runta exec", command = %h.id())),
        ))
    };
    let closing = loop {
        let frame = tokio::select! {
            biased;
            ending = link.lifeline.ended() => break ending.close(GOING_AWAY),
            // The last frame (exit or error) is queued.
            _ = &mut done => break Some((CLOSE_NORMAL, "")),
            tick = link.keepalive.tick() => match tick {
                Tick::Silent(_) => {
                    tracing::info!(command = %h.id(), "runta peer silent: dropping it");
                    break Some((CLOSE_POLICY, "ping timeout"));
                }
                Tick::Ping => {
                    link.outbound.ping();
                    // The SDK answers it, and counts it as progress.
                    let _ = out.send(text(&json!({"type": "heartbeat"}))).await;
                    continue;
                }
            },
            frame = link.stream.next() => frame,
        };
        let Some(Ok(msg)) = frame else { break None };
        link.keepalive.seen();
        let op = match parse(&msg) {
            Ok(None | Some(ClientFrame::Heartbeat | ClientFrame::Unknown)) => continue,
            Ok(Some(ClientFrame::Stdin { data_base64 })) => match B64.decode(data_base64.as_bytes()) {
                Ok(b) => StdinOp::Data(Bytes::from(b), None),
                Err(e) => {
                    let _ = out.send(error_frame(&format!("stdin: data_base64 is not base64: {e}"))).await;
                    break Some((CLOSE_NORMAL, ""));
                }
            },
            Ok(Some(ClientFrame::CloseStdin)) => StdinOp::Close(None),
            Ok(Some(ClientFrame::Signal { signal })) => {
                if let Err(e) = h.signal(&signal).await {
                    tracing::debug!(command = %h.id(), "runta signal {signal:?}: {e}");
                }
                continue;
            }
            Ok(Some(ClientFrame::Start(_))) => {
                let _ = out.send(error_frame("one start per connection")).await;
                break Some((CLOSE_NORMAL, ""));
            }
            Err(message) => {
                let _ = out.send(error_frame(&message)).await;
                break Some((CLOSE_NORMAL, ""));
            }
        };
        // Wait for room rather than drop input the client cannot resend.
        let n = match &op {
            StdinOp::Data(b, _) => b.len(),
            StdinOp::Close(_) => 0,
        };
        let room = stdin.room(n);
        tokio::pin!(room);
        let ended = loop {
            tokio::select! {
                biased;
                ending = link.lifeline.ended() => break Some(ending.close(GOING_AWAY)),
                _ = &mut done => break Some(Some((CLOSE_NORMAL, ""))),
                () = &mut room => break None,
                // Frames are not read meanwhile (TCP holds the client
                // back), so its pongs go unseen: ping only, never judge
                // it silent. A dead client is noticed by the writer, which
                // gives up on a ping it cannot send in time.
                _ = link.keepalive.tick() => link.outbound.ping(),
            }
        };
        if let Some(closing) = ended {
            break closing;
        }
        // The client's silence while we did not read was ours.
        link.keepalive.seen();
        if let Err(e) = stdin.push_merging(op) {
            // Only the operation count can refuse here (the window has
            // room): the command is far behind on tiny frames.
            tracing::warn!(command = %h.id(), "runta stdin refused: {e:?}");
            let _ = out.send(error_frame("stdin: too many queued writes; the command is not reading")).await;
            break Some((CLOSE_NORMAL, ""));
        }
    };
    drop(forwarder);
    if h.exit().is_none() {
        // The connection has gone before the command: end of input after
        // what is queued, as when a host's exec connection drops.
        let _ = stdin.push_merging(StdinOp::Close(None));
        tracing::debug!(command = %h.id(), "runta exec detached; the command goes on");
    }
    closing
}

/// Pushes the command's output, then its exit, as the dialect's frames.
async fn forward(mut sub: Subscription, h: &CommandHandle, out: &OutTx) {
    let exit = loop {
        match sub.next(FRAME_RAW_BYTES).await {
            Some(Event::Output { stream, data, .. }) => {
                let kind = match stream {
                    Stream::Stdout => "stdout",
                    Stream::Stderr => "stderr",
                };
                let frame = json!({"type": kind, "data_base64": B64.encode(&data)});
                if out.send(text(&frame)).await.is_err() {
                    return;
                }
            }
            Some(Event::Gap { stream, requested, first_held }) => {
                // Not with a pacing attachment from 0; if ever, say so
                // rather than hand the SDK output with a hole in it.
                tracing::warn!(command = %h.id(), ?stream, requested, first_held, "runta output lost");
                let message = format!(
                    "output of command {} lost: {stream:?} bytes {requested}..{first_held} are no longer held",
                    h.id()
                );
                let _ = out.send(error_frame(&message)).await;
                return;
            }
            Some(Event::Resized(_)) => {}
            Some(Event::Exit(x)) => break x,
            None => break h.wait().await,
        }
    };
    let _ = out.send(text(&json!({"type": "exit", "code": exit.shell_code()}))).await;
}

fn text(v: &serde_json::Value) -> Message {
    Message::Text(v.to_string().into())
}

/// The dialect's error frame: the SDK raises `ApiError(message)`.
fn error_frame(message: &str) -> Message {
    text(&json!({"type": "error", "message": message}))
}

/// A data frame as a client frame: `Ok(None)` for pings, pongs and the
/// close; `Err` with a message for one that is not a frame (not JSON, a
/// known `type` with missing or mistyped fields). An unknown `type` is
/// `Unknown`, ignored.
fn parse(msg: &Message) -> Result<Option<ClientFrame>, String> {
    let raw = match msg {
        Message::Text(t) => t.as_bytes(),
        Message::Binary(b) => b,
        _ => return Ok(None),
    };
    serde_json::from_slice::<ClientFrame>(raw).map(Some).map_err(|e| format!("malformed frame: {e}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_sdks_frames_parse() {
        let start = r#"{"type": "start", "command": "sh", "args": ["-c", "true"], "env": {}, "tty": false}"#;
        match parse(&Message::Text(start.into())).unwrap() {
            Some(ClientFrame::Start(s)) => assert_eq!((s.command.as_str(), s.args.len()), ("sh", 2)),
            other => panic!("{other:?}"),
        }
        let stdin = r#"{"type": "stdin", "data_base64": "aGk="}"#;
        assert!(matches!(parse(&Message::Text(stdin.into())).unwrap(), Some(ClientFrame::Stdin { .. })));
        let close = r#"{"type":"close_stdin"}"#;
        assert!(matches!(parse(&Message::Text(close.into())).unwrap(), Some(ClientFrame::CloseStdin)));
        let other = r#"{"type":"resize","cols":1}"#;
        assert!(matches!(parse(&Message::Text(other.into())).unwrap(), Some(ClientFrame::Unknown)));
        assert!(parse(&Message::Text("not json".into())).is_err());
        assert!(parse(&Message::Text(r#"{"type":"stdin"}"#.into())).is_err());
    }
}
