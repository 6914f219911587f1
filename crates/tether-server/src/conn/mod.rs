//! One WebSocket connection.
//!
//! The connection task reads frames, decodes them and dispatches requests;
//! a writer task owns the socket's sending half and drains one bounded
//! queue of outbound frames; each attachment is a forwarder task that pulls
//! events from its [`Subscription`] and pushes frames into that queue. A
//! slow peer therefore fills the queue, its forwarders wait, and its
//! subscriptions fall behind the command's ring (getting a gap when they
//! fall out of it): the command and other clients never wait for it, and
//! the connection's memory is bounded by the queue.
//!
//! The pieces every WebSocket wire is built on live here and are used by
//! the dialects in `compat/` too: the writer task ([`Outbound`]), the
//! stdin pump ([`StdinPump`]), and the keepalive and outside ends
//! ([`Keepalive`], [`Lifeline`]).
//!
//! - `requests`: one handler per request (`start`, `attach`, `stdin`,
//!   `kill`, `list`, `shell_run`...), each taking the connection and the
//!   request and returning the reply or an [`Error`](crate::Error).
//! - `attach`: attachments: subscribing, and the forwarder task that turns
//!   a subscription's events into frames, with its flow control.
//! - `outbound`: the writer task and its bounded queue.
//! - `delivery`: pacing a client that acknowledges nothing by what its
//!   socket delivered.
//! - `pump`: the stdin pump.
//! - `keepalive`: pings, the peer timeout, shutdown and revocation.

mod attach;
mod delivery;
mod keepalive;
mod outbound;
mod pump;
mod requests;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ws::Message;
use futures_util::{Sink, Stream, StreamExt};
use serde::Deserialize;
use tether_exec::{Manager, PaceRef};
use tether_proto::{self as proto, ClientMsg, CommandId, Encoding, ErrorCode, ReqId, ServerMsg};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument;

pub(crate) use delivery::Delivery;
pub(crate) use keepalive::{
    CLOSE_GOING_AWAY, CLOSE_NORMAL, CLOSE_POLICY, CLOSE_PROTOCOL, CLOSE_TOO_BIG, Keepalive, Lifeline, Tick,
};
pub(crate) use outbound::{OutTx, Outbound};
pub(crate) use pump::{Refused as PumpRefused, Reply as PumpReply, StdinOp, StdinPump};

use crate::ServerConfig;

/// Query parameters of a single-command connection
/// (`/v1/ws?attach=ID&stdout_offset=N&stderr_offset=M` or `&tail_bytes=N`).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct AttachQuery {
    /// The command to attach to on connect.
    #[serde(rename = "attach")]
    pub command: Option<String>,
    /// Stdout offset to start from.
    #[serde(default)]
    pub stdout_offset: u64,
    /// Stderr offset to start from.
    #[serde(default)]
    pub stderr_offset: u64,
    /// Start each stream at most this many bytes before its end instead.
    pub tail_bytes: Option<u64>,
}

/// What a connection needs from the server.
pub(crate) struct ConnCtx {
    /// The command manager.
    pub(crate) manager: Manager,
    /// The daemon's configuration (limits, timeouts).
    pub(crate) cfg: ServerConfig,
    /// Cancelled when the daemon stops: the connection closes with 1001.
    pub(crate) shutdown: CancellationToken,
    /// Cancelled when the token this connection authenticated with is
    /// replaced: the connection closes with 1008.
    pub(crate) revoked: CancellationToken,
    /// The negotiated subprotocol's encoding.
    pub(crate) encoding: Encoding,
    /// The peer's address, for log lines.
    pub(crate) peer: SocketAddr,
    /// A single-command connection's attachment, made on connect.
    pub(crate) attach: Option<AttachQuery>,
}

/// Unacknowledged stdin bytes one connection may queue for one command.
pub(crate) const STDIN_WINDOW_BYTES: usize = 4 << 20;

/// How long a lost connection's pacing attachment (with flow control)
/// goes on holding its command back, for its client to reconnect: clients
/// notice a dead connection within their silence timeout and then retry
/// with a backoff of a few seconds at most.
const PACE_LINGER: Duration = Duration::from_secs(20);

/// The first read buffer of every WebSocket, in bytes. tungstenite
/// zero-fills its whole read buffer before the first read (128 KiB by
/// default), which made that buffer most of what an idle connection costs
/// (about 147 KiB each, `tether-bench --only memory`). A larger frame still
/// arrives whole: the buffer is reserved for it when its header is read.
pub(crate) const WS_READ_BUFFER: usize = 4096;

/// An upgrade with tether's socket sizes (see [`WS_READ_BUFFER`]); every
/// WebSocket route, native or dialect, upgrades through it.
pub(crate) fn sized(ws: axum::extract::ws::WebSocketUpgrade) -> axum::extract::ws::WebSocketUpgrade {
    ws.read_buffer_size(WS_READ_BUFFER)
}

/// Smallest and largest `window_bytes` an attachment may ask for.
const WINDOW_RANGE: std::ops::RangeInclusive<u64> = 4096..=(1 << 30);

/// Serves one upgraded WebSocket until either side closes it.
///
/// The connection's pieces are made here, outside the future, and the
/// future owns each once: an async fn would hold its arguments (the socket,
/// the context) beside the values made from them, for the whole life of
/// the connection (4.8 KiB per connection's task instead of 1.5; see
/// `tether-bench --only memory`).
pub(crate) fn serve<S>(socket: S, ctx: ConnCtx) -> impl Future<Output = ()> + Send + 'static
where
    S: Stream<Item = Result<Message, axum::Error>> + Sink<Message, Error = axum::Error> + Send + 'static,
{
    let span = tracing::info_span!("conn", peer = %ctx.peer);
    let open = crate::metrics::Open::new("tether_websockets");
    let entered = span.enter();
    tracing::info!(encoding = ?ctx.encoding, "connected");
    let (sink, stream) = socket.split();
    // A peer that takes no frame for the peer timeout is as good as gone.
    let outbound = Outbound::spawn(sink, ctx.cfg.outbound_queue, ctx.cfg.peer_timeout);
    let lifeline = Lifeline::new(ctx.shutdown.clone(), ctx.revoked.clone(), &outbound);
    let (done_tx, done_rx) = mpsc::channel(64);
    let mut conn = Conn {
        ctx,
        out: outbound.tx(),
        attachments: HashMap::new(),
        pumps: HashMap::new(),
        done_tx,
        generation: 0,
        dead: false,
    };
    drop(entered);
    let (mut stream, mut done_rx) = (stream, done_rx);
    async move {
        let closing = run(&mut conn, &mut stream, &outbound, &lifeline, &mut done_rx).await;
        // Dropping the attachments and pumps aborts their tasks, which
        // drops their subscriptions (the commands see this client detach)
        // and their queue senders, so the writer ends once it has flushed
        // (a writer stuck on a dead peer is aborted).
        drop(conn);
        if let Some((code, reason)) = closing {
            Box::pin(outbound.close(code, reason)).await;
        }
        Box::pin(outbound.finish()).await;
        drop(open);
        tracing::info!("disconnected");
    }
    .instrument(span)
}

/// The read loop; returns the close frame the connection ends with, if any.
async fn run<S>(
    conn: &mut Conn,
    stream: &mut S,
    outbound: &Outbound,
    lifeline: &Lifeline,
    done_rx: &mut mpsc::Receiver<(String, u64)>,
) -> Option<(u16, &'static str)>
where
    S: Stream<Item = Result<Message, axum::Error>> + Unpin,
{
    // The handlers are boxed: a request's state (a start, an attach, a
    // shell command) is only alive while it is handled, and inline it would
    // sit in every connection's task for its whole life (9.7 KiB instead of
    // about 4.8; `tether-bench --only memory`).
    Box::pin(conn.hello()).await;

    // A single-command connection attaches at once and ends with the exit.
    let mut single = None;
    let mut closing: Option<(u16, &'static str)> = None;
    if let Some(q) = conn.ctx.attach.take() {
        let command = conn.name(CommandId(q.command.unwrap_or_default()));
        let from = [q.stdout_offset, q.stderr_offset];
        let how = attach::How { tail: q.tail_bytes, ..attach::How::default() };
        if !Box::pin(conn.attach(ReqId(0), command.clone(), from, how)).await {
            closing = Some((CLOSE_NORMAL, "attach failed"));
        }
        single = Some(command.0);
    }

    let mut keepalive = Keepalive::new(conn.ctx.cfg.ping_interval, conn.ctx.cfg.peer_timeout);
    while !conn.dead && closing.is_none() {
        tokio::select! {
            ending = lifeline.ended() => match ending.close("server shutting down") {
                Some(close) => closing = Some(close),
                None => break,
            },
            Some((cmd, generation)) = done_rx.recv() => {
                if conn.attachments.get(&cmd).is_some_and(|a| a.generation == generation) {
                    conn.attachments.remove(&cmd);
                }
                if single.as_ref() == Some(&cmd) {
                    closing = Some((CLOSE_NORMAL, "command exited"));
                }
            }
            tick = keepalive.tick() => match tick {
                Tick::Silent(silent) => {
                    tracing::warn!("peer silent for {silent:?}: dropping");
                    closing = Some((CLOSE_POLICY, "ping timeout"));
                }
                // Ahead of queued frames: a peer busy receiving a flood
                // is pinged all the same, and its pongs keep it alive.
                Tick::Ping => outbound.ping(),
            },
            frame = stream.next() => {
                let msg = match frame {
                    None => break,
                    Some(Ok(msg)) => msg,
                    Some(Err(e)) => {
                        match classify(&e) {
                            None => tracing::debug!("peer went away: {e}"),
                            Some((code, reason)) => {
                                tracing::info!("closing on a bad frame: {e}");
                                closing = Some((code, reason));
                                continue;
                            }
                        }
                        break;
                    }
                };
                keepalive.seen();
                if !Box::pin(conn.received(msg)).await {
                    break;
                }
            }
        }
    }
    closing
}

/// The close frame a read error deserves; `None` when the peer is simply
/// gone (reset, EOF, I/O error), so there is nobody to send one to.
fn classify(e: &axum::Error) -> Option<(u16, &'static str)> {
    use tokio_tungstenite::tungstenite::Error as WsError;
    use tokio_tungstenite::tungstenite::error::ProtocolError;
    // axum wraps tungstenite's error; size limits are capacity errors.
    let inner = std::error::Error::source(e).and_then(|s| s.downcast_ref::<WsError>());
    match inner {
        Some(WsError::Capacity(_)) => Some((CLOSE_TOO_BIG, "frame too large")),
        Some(
            WsError::ConnectionClosed
            | WsError::AlreadyClosed
            | WsError::Io(_)
            | WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake),
        ) => None,
        _ => Some((CLOSE_PROTOCOL, "websocket protocol error")),
    }
}

struct Attachment {
    generation: u64,
    /// Flow control: the client's acknowledged offsets, for the forwarder.
    acked: Option<watch::Sender<[u64; 2]>>,
    /// A pacing attachment with flow control: its pacer, which the acks
    /// move (so the bytes in flight stay in the ring) and which lingers if
    /// the connection is lost (its client comes back for them).
    pacer: Option<PaceRef>,
    _task: AbortOnDropHandle<()>,
}

struct Conn {
    ctx: ConnCtx,
    out: OutTx,
    attachments: HashMap<String, Attachment>,
    /// Per command, the stdin queue (see [`pump`]).
    pumps: HashMap<String, StdinPump<ReqId>>,
    done_tx: mpsc::Sender<(String, u64)>,
    generation: u64,
    /// The peer is gone or unresponsive: leave the read loop.
    dead: bool,
}

/// Only the `id` of a frame that did not decode as a message, to echo it.
#[derive(Deserialize)]
struct Peek {
    id: Option<ReqId>,
}

impl Conn {
    /// Sends `hello` with the daemon's limits, the connection's first frame.
    async fn hello(&mut self) {
        let manager = self.ctx.manager.config();
        let hello = ServerMsg::Hello {
            version: proto::PROTOCOL_VERSION,
            server: format!("tether/{}", env!("CARGO_PKG_VERSION")),
            limits: proto::Limits {
                max_frame_bytes: self.ctx.cfg.max_frame_bytes as u64,
                max_chunk_bytes: self.ctx.cfg.max_chunk_bytes as u64,
                max_commands: manager.max_commands as u64,
                default_ring_bytes: manager.ring_bytes as u64,
                max_ring_bytes: manager.max_ring_bytes as u64,
                stdin_window_bytes: STDIN_WINDOW_BYTES as u64,
            },
        };
        self.send(hello).await;
    }

    /// Handles one frame from the peer; false when it closed.
    async fn received(&mut self, msg: Message) -> bool {
        match (msg, self.ctx.encoding) {
            (Message::Binary(b), Encoding::MsgPack) => self.frame(&b).await,
            (Message::Text(t), Encoding::Json) => self.frame(t.as_bytes()).await,
            (Message::Binary(_), Encoding::Json) => {
                self.error(None, ErrorCode::BadFrame, "binary frame on a JSON (tether.v1.json) connection")
                    .await;
            }
            (Message::Text(_), Encoding::MsgPack) => {
                self.error(None, ErrorCode::BadFrame, "text frame on a MessagePack (tether.v1) connection")
                    .await;
            }
            (Message::Close(_), _) => return false,
            (Message::Ping(_) | Message::Pong(_), _) => {}
        }
        true
    }

    /// Queues a frame. A peer that does not take a frame within the peer
    /// timeout is dead (or half-open): the connection ends.
    async fn send(&mut self, msg: ServerMsg) {
        if self.out.send(encode(&msg, self.ctx.encoding)).await.is_err() {
            self.dead = true;
        }
    }

    /// A command's id for a name that may be its request key (unchanged if
    /// no command has that name).
    fn name(&self, c: CommandId) -> CommandId {
        // The common case, every stdin frame and ack: an id this
        // connection uses already (no registry lookup on that path).
        if self.attachments.contains_key(&c.0) || self.pumps.contains_key(&c.0) {
            return c;
        }
        match self.ctx.manager.get(&c.0) {
            Ok(h) if h.id() != c.0 => CommandId(h.id().to_owned()),
            _ => c,
        }
    }

    async fn error(&mut self, id: Option<ReqId>, code: ErrorCode, message: &str) {
        self.send(ServerMsg::Error { id, code, message: message.to_owned(), errno: None }).await;
    }

    async fn frame(&mut self, bytes: &[u8]) {
        match proto::decode::<ClientMsg>(bytes, self.ctx.encoding) {
            Ok(msg) => self.dispatch(msg).await,
            Err(e) => {
                let id = proto::decode::<Peek>(bytes, self.ctx.encoding).ok().and_then(|p| p.id);
                tracing::info!("bad frame: {e}");
                self.error(id, ErrorCode::BadFrame, &e.to_string()).await;
            }
        }
    }
}

/// One frame, encoded.
pub(crate) fn encode(m: &ServerMsg, enc: Encoding) -> Message {
    let hint = match m {
        // base64 in JSON is 4/3 of the bytes.
        ServerMsg::Output { data, .. } => data.len() * 4 / 3,
        _ => 0,
    };
    let bytes = proto::encode_sized(m, enc, hint);
    match enc {
        Encoding::MsgPack => Message::Binary(bytes.into()),
        // serde_json output is always UTF-8.
        Encoding::Json => Message::Text(String::from_utf8_lossy(&bytes).into_owned().into()),
    }
}
