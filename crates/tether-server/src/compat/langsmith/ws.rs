//! The dialect's WebSocket, `/compat/langsmith/execute/ws`
//! (`protocol/compat/langsmith.md` §5, §12): one command per connection,
//! JSON text frames, `execute` (idempotent by the client's `command_id`) or
//! `reconnect` from per-stream byte offsets, `input`, `close_stdin`,
//! `kill`; answered by `started`, `stdout`/`stderr` with offsets (through
//! the `utf8` decoder), and `exit` or `error`.
//!
//! The connection is built on the native protocol's pieces (`conn`): its
//! writer task with the bounded queue and send timeout, its stdin pump with
//! a window, its keepalive and outside ends. What is the dialect's own is
//! the translation: frames in, frames out, and the wait for a command.

use std::sync::Arc;

use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::SplitStream;
use serde::Deserialize;
use serde_json::json;
use tether_exec::{CommandHandle, Event, Subscription};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument;

use super::mapping::{self, Bound, Execute, FRAME_RAW_BYTES, ending};
use super::utf8::Writer;
use super::{ErrorType, Refused};
use crate::conn::{
    CLOSE_GOING_AWAY, CLOSE_NORMAL, CLOSE_POLICY, Delivery, Keepalive, Lifeline, OutTx, Outbound, PumpReply,
    StdinOp, StdinPump, Tick,
};
use crate::wire::Wire;
use crate::{AppState, Error};

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

/// `GET /compat/langsmith/execute/ws`: upgrades to the dialect's
/// connection.
pub(crate) async fn ws_handler(
    State(st): State<Arc<AppState>>,
    axum::Extension(revoked): axum::Extension<crate::auth::Revocation>,
    wire: Option<axum::Extension<Arc<Wire>>>,
    ws: WebSocketUpgrade,
) -> Response {
    let delivery = wire.map(|w| Delivery::new(w.0));
    // No subprotocol is selected: the client rejects a handshake that
    // names one.
    let st2 = st.clone();
    crate::conn::sized(ws)
        .max_message_size(MAX_CLIENT_FRAME)
        .max_frame_size(MAX_CLIENT_FRAME)
        .on_upgrade(move |socket| st2.conns.track_future(serve(socket, st, revoked.0, delivery)))
}

/// Unwritten stdin bytes one connection may queue (before `execute`, and
/// for its command after): input past it is dropped with a warning, since
/// the dialect has no way to refuse it (no reply to `input`) and blocking
/// the read loop would hold up a `kill` behind it.
const INPUT_WINDOW: usize = 4 << 20;

/// Control frames held before the connection is bound to a command.
const MAX_EARLY_FRAMES: usize = 256;

/// The reason of the close frame when the daemon stops.
const GOING_AWAY: &str = "server restarting";

/// The connection, as built on the native protocol's pieces: a writer task
/// with a bounded queue and a send timeout, a forwarder task per
/// attachment, a stdin pump with a window, and a read loop that never
/// waits for either, so that a `kill` always gets through.
/// `revoked`: the token the connection authenticated with was replaced
/// (closed with 1008). `delivery`: the socket can tell what its peer took,
/// and the attachment is paced by that (see `conn::Delivery`).
async fn serve(
    ws: WebSocket,
    st: Arc<AppState>,
    revoked: CancellationToken,
    delivery: Option<Arc<Delivery>>,
) {
    let (sink, stream) = ws.split();
    let outbound =
        Outbound::spawn_delivering(sink, st.cfg.outbound_queue, st.cfg.peer_timeout, delivery.clone());
    let out = outbound.tx();
    let mut link = Link {
        st: &st,
        outbound: &outbound,
        delivery,
        lifeline: Lifeline::new(st.shutdown.clone(), revoked, &outbound),
        keepalive: Keepalive::new(st.cfg.ping_interval, st.cfg.peer_timeout),
        stream,
    };
    let closing = match bind(&mut link).await {
        Ok((b, early)) => run(b, early, &mut link).await,
        Err(Unbound::Close(closing)) => closing,
        Err(Unbound::Refused(e)) => match e.into_langsmith() {
            Refused::Error(kind, message) => {
                let _ = out.send(error_frame(kind, &message)).await;
                Some((CLOSE_NORMAL, ""))
            }
            // Let the client send the same `execute` to the restarted daemon.
            Refused::Restarting => Some((CLOSE_GOING_AWAY, GOING_AWAY)),
        },
    };
    if let Some((code, reason)) = closing {
        outbound.close(code, reason).await;
    }
    drop(out);
    outbound.finish().await;
}

/// A connection's parts, for the two phases of its read loop.
struct Link<'a> {
    /// The daemon.
    st: &'a AppState,
    /// The writer task (frames out, pings).
    outbound: &'a Outbound,
    /// What the socket delivered, if it can tell.
    delivery: Option<Arc<Delivery>>,
    /// The daemon's stop, the token's revocation, the writer's giving up.
    lifeline: Lifeline,
    /// Pings and the peer's silence, across both phases.
    keepalive: Keepalive,
    /// Frames in.
    stream: SplitStream<WebSocket>,
}

/// Why a connection was never bound to a command.
enum Unbound {
    /// It ends with this close frame, if any.
    Close(Option<(u16, &'static str)>),
    /// The client is told with an `error` frame.
    Refused(Error),
}

/// Reads until the client names its command (`execute` or `reconnect`),
/// and binds the connection to it. Control frames that come before (a
/// queued `close_stdin` precedes `reconnect`) are returned, to be applied
/// after.
async fn bind(link: &mut Link<'_>) -> Result<(Bound, Vec<ClientFrame>), Unbound> {
    let st = link.st;
    let opened = Instant::now();
    let mut early = Vec::new();
    let mut early_bytes = 0;
    loop {
        let frame = tokio::select! {
            ending = link.lifeline.ended() => return Err(Unbound::Close(ending.close(GOING_AWAY))),
            tick = link.keepalive.tick() => {
                match tick {
                    Tick::Silent(_) => return Err(Unbound::Close(Some((CLOSE_POLICY, "ping timeout")))),
                    // Answering pings is not enough: a connection holds
                    // its early frames only until it names a command.
                    Tick::Ping if opened.elapsed() > st.cfg.peer_timeout => {
                        let message = format!(
                            "no execute or reconnect within {} s of connecting",
                            st.cfg.peer_timeout.as_secs_f64()
                        );
                        return Err(Unbound::Refused(Error::bad_request(message)));
                    }
                    Tick::Ping => link.outbound.ping(),
                }
                continue;
            }
            frame = link.stream.next() => frame,
        };
        let Some(Ok(msg)) = frame else { return Err(Unbound::Close(None)) };
        link.keepalive.seen();
        let frame = match parse(&msg) {
            Ok(Some(f)) => f,
            Ok(None) => continue,
            // Answered, or the client would wait for `started` for ever.
            Err(message) => return Err(Unbound::Refused(Error::bad_request(message))),
        };
        let bound = match frame {
            ClientFrame::Execute(e) => mapping::execute(st, *e),
            ClientFrame::Reconnect { command_id, stdout_offset, stderr_offset } => {
                mapping::reconnect(st, &command_id, [stdout_offset, stderr_offset])
            }
            ClientFrame::Unknown => continue,
            // The client sends `execute` (or `reconnect`) first: a flood
            // before it is refused, not held.
            ClientFrame::Input { data }
                if early_bytes + data.len() > INPUT_WINDOW || early.len() >= MAX_EARLY_FRAMES =>
            {
                tracing::warn!(bytes = data.len(), "compat input before execute past the window: refused");
                let message = format!(
                    "input before execute past the window of {INPUT_WINDOW} bytes or {MAX_EARLY_FRAMES} frames"
                );
                return Err(Unbound::Refused(Error::bad_request(message)));
            }
            other => {
                if let ClientFrame::Input { data } = &other {
                    early_bytes += data.len();
                }
                if early.len() < MAX_EARLY_FRAMES {
                    early.push(other);
                }
                continue;
            }
        };
        return bound.map(|b| (b, early)).map_err(Unbound::Refused);
    }
}

/// A bound connection: forwards the attachment and applies control frames
/// until the command's end, the client's going or the daemon's. Returns the
/// close frame to send, if any.
async fn run(b: Bound, early: Vec<ClientFrame>, link: &mut Link<'_>) -> Option<(u16, &'static str)> {
    let st = link.st;
    let Bound { h, mut sub, echo } = b;
    let out = link.outbound.tx();
    // Paced by what the socket delivered, where it can tell: what sits in
    // the queue and the socket's buffers is lost if the connection drops.
    let _follower = link.delivery.clone().and_then(|d| {
        let pacer = sub.pace_by_delivery()?;
        Some(AbortOnDropHandle::new(tokio::spawn(async move { d.follow(|at| pacer.ack(at)).await })))
    });
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
    let closing = loop {
        tokio::select! {
            biased;
            ending = link.lifeline.ended() => break ending.close(GOING_AWAY),
            // The last frame (exit or error) is queued.
            _ = &mut done => break Some((CLOSE_NORMAL, "")),
            tick = link.keepalive.tick() => match tick {
                Tick::Silent(_) => {
                    tracing::warn!(command = %h.id(), "compat peer silent: dropping");
                    break Some((CLOSE_POLICY, "ping timeout"));
                }
                Tick::Ping => link.outbound.ping(),
            },
            frame = link.stream.next() => match frame {
                Some(Ok(msg)) => {
                    link.keepalive.seen();
                    match parse(&msg) {
                        Ok(Some(f)) => control(&h, &stdin, f).await,
                        Ok(None) => {}
                        // The client is told, and the connection ends; the
                        // command goes on (reconnectable) as after a drop.
                        Err(message) => {
                            tracing::warn!(command = %h.id(), "compat {message}");
                            let _ = out.send(error_frame(ErrorType::CommandError, &message)).await;
                            break Some((CLOSE_NORMAL, ""));
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
    let quiet: PumpReply<()> = Box::new(|(), r| {
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
        // The last frame is marked with where the output stands, for the
        // writer's `Delivery`.
        let n = frames.len();
        for (i, f) in frames.into_iter().enumerate() {
            let sent =
                if i + 1 == n { out.send_marked(text(&f), w.at()).await } else { out.send(text(&f)).await };
            if sent.is_err() {
                return;
            }
        }
    }
}

fn text(v: &serde_json::Value) -> Message {
    Message::Text(v.to_string().into())
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
