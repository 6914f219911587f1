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

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ws::Message;
use futures_util::{Sink, Stream, StreamExt};
use serde::Deserialize;
use tether_exec::{CommandHandle, Event, ExecError, Manager, PaceRef, StdinSeq, Subscription};
use tether_proto::{self as proto, ClientMsg, CommandId, Encoding, ErrorCode, ReqId, ServerMsg};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument;

use crate::ServerConfig;
use crate::map::{self, WireError};
use crate::outbound::{OutTx, Outbound};
use crate::pump::{self, StdinOp, StdinPump};

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
    pub(crate) manager: Manager,
    pub(crate) cfg: ServerConfig,
    pub(crate) shutdown: CancellationToken,
    /// Cancelled when the token this connection authenticated with is
    /// replaced: the connection closes with 1008.
    pub(crate) revoked: CancellationToken,
    pub(crate) encoding: Encoding,
    pub(crate) peer: SocketAddr,
    pub(crate) attach: Option<AttachQuery>,
}

/// Unacknowledged stdin bytes one connection may queue for one command.
pub(crate) const STDIN_WINDOW_BYTES: usize = 4 << 20;

/// How long a lost connection's pacing attachment (with flow control)
/// goes on holding its command back, for its client to reconnect: clients
/// notice a dead connection within their silence timeout and then retry
/// with a backoff of a few seconds at most.
const PACE_LINGER: Duration = Duration::from_secs(20);

/// Smallest and largest `window_bytes` an attachment may ask for.
const WINDOW_RANGE: std::ops::RangeInclusive<u64> = 4096..=(1 << 30);

/// Close codes (RFC 6455 section 7.4.1).
const CLOSE_NORMAL: u16 = 1000;
const CLOSE_GOING_AWAY: u16 = 1001;
const CLOSE_PROTOCOL: u16 = 1002;
const CLOSE_POLICY: u16 = 1008;
const CLOSE_TOO_BIG: u16 = 1009;

/// Serves one upgraded WebSocket until either side closes it.
pub(crate) async fn serve<S>(socket: S, ctx: ConnCtx)
where
    S: Stream<Item = Result<Message, axum::Error>> + Sink<Message, Error = axum::Error> + Send + 'static,
{
    let span = tracing::info_span!("conn", peer = %ctx.peer);
    run(socket, ctx).instrument(span).await
}

async fn run<S>(socket: S, ctx: ConnCtx)
where
    S: Stream<Item = Result<Message, axum::Error>> + Sink<Message, Error = axum::Error> + Send + 'static,
{
    tracing::info!(encoding = ?ctx.encoding, "connected");
    let (sink, mut stream) = socket.split();
    // A peer that takes no frame for the peer timeout is as good as gone.
    let outbound = Outbound::spawn(sink, ctx.cfg.outbound_queue, ctx.cfg.peer_timeout);
    let dead = outbound.dead();
    let (done_tx, mut done_rx) = mpsc::channel(64);
    let mut conn = Conn {
        ctx,
        out: outbound.tx(),
        attachments: HashMap::new(),
        pumps: HashMap::new(),
        done_tx,
        generation: 0,
        dead: false,
    };

    let hello = ServerMsg::Hello {
        version: proto::PROTOCOL_VERSION,
        server: format!("tether/{}", env!("CARGO_PKG_VERSION")),
        limits: proto::Limits {
            max_frame_bytes: conn.ctx.cfg.max_frame_bytes as u64,
            max_chunk_bytes: conn.ctx.cfg.max_chunk_bytes as u64,
            max_commands: conn.ctx.manager.config().max_commands as u64,
            default_ring_bytes: conn.ctx.manager.config().ring_bytes as u64,
            max_ring_bytes: conn.ctx.manager.config().max_ring_bytes as u64,
            stdin_window_bytes: STDIN_WINDOW_BYTES as u64,
        },
    };
    conn.send(hello).await;

    // A single-command connection attaches at once and ends with the exit.
    let mut single = None;
    let mut closing: Option<(u16, &'static str)> = None;
    if let Some(q) = conn.ctx.attach.take() {
        let command = conn.name(CommandId(q.command.unwrap_or_default()));
        let from = [q.stdout_offset, q.stderr_offset];
        let how = How { tail: q.tail_bytes, ..How::default() };
        if !conn.attach(ReqId(0), command.clone(), from, how).await {
            closing = Some((CLOSE_NORMAL, "attach failed"));
        }
        single = Some(command.0);
    }

    let interval = conn.ctx.cfg.ping_interval;
    let mut ping = tokio::time::interval_at(Instant::now() + interval, interval);
    let mut last_seen = Instant::now();
    while !conn.dead && closing.is_none() {
        tokio::select! {
            _ = conn.ctx.shutdown.cancelled() => {
                closing = Some((CLOSE_GOING_AWAY, "server shutting down"));
            }
            _ = conn.ctx.revoked.cancelled() => {
                tracing::info!("token revoked: closing");
                closing = Some((CLOSE_POLICY, "token revoked"));
            }
            // The writer gave up on the peer (send timeout or error).
            _ = dead.cancelled() => break,
            Some((cmd, generation)) = done_rx.recv() => {
                if conn.attachments.get(&cmd).is_some_and(|a| a.generation == generation) {
                    conn.attachments.remove(&cmd);
                }
                if single.as_ref() == Some(&cmd) {
                    closing = Some((CLOSE_NORMAL, "command exited"));
                }
            }
            _ = ping.tick() => {
                if last_seen.elapsed() > conn.ctx.cfg.peer_timeout {
                    tracing::warn!("peer silent for {:?}: dropping", last_seen.elapsed());
                    closing = Some((CLOSE_POLICY, "ping timeout"));
                } else {
                    // Ahead of queued frames: a peer busy receiving a flood
                    // is pinged all the same, and its pongs keep it alive.
                    outbound.ping();
                }
            }
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
                last_seen = Instant::now();
                match (msg, conn.ctx.encoding) {
                    (Message::Binary(b), Encoding::MsgPack) => conn.frame(&b).await,
                    (Message::Text(t), Encoding::Json) => conn.frame(t.as_bytes()).await,
                    (Message::Binary(_), Encoding::Json) => {
                        conn.error(None, ErrorCode::BadFrame, "binary frame on a JSON (tether.v1.json) connection").await;
                    }
                    (Message::Text(_), Encoding::MsgPack) => {
                        conn.error(None, ErrorCode::BadFrame, "text frame on a MessagePack (tether.v1) connection").await;
                    }
                    (Message::Close(_), _) => break,
                    (Message::Ping(_) | Message::Pong(_), _) => {}
                }
            }
        }
    }
    // Dropping the attachments and pumps aborts their tasks, which drops
    // their subscriptions (the commands see this client detach) and their
    // queue senders, so the writer ends once it has flushed (a writer
    // stuck on a dead peer is aborted).
    drop(conn);
    if let Some((code, reason)) = closing {
        outbound.close(code, reason).await;
    }
    outbound.finish().await;
    tracing::info!("disconnected");
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

    async fn dispatch(&mut self, msg: ClientMsg) {
        let id = msg.id();
        let reply = match msg {
            ClientMsg::Start { id, spec } => self.start(id, spec).await,
            ClientMsg::Attach {
                id,
                command,
                stdout_offset,
                stderr_offset,
                tail_bytes,
                pace,
                screen,
                size,
                window_bytes,
                client,
            } => match window(window_bytes).and_then(|w| Ok((w, client_name(client)?))) {
                Ok((window, client)) => {
                    let size = size.map(map::size_from_wire);
                    let how = How { tail: tail_bytes, pace, screen, size, window, client };
                    self.attach(id, command, [stdout_offset, stderr_offset], how).await;
                    Ok(None)
                }
                Err(e) => Err(e),
            },
            ClientMsg::Resize { id, command, size } => match self.ctx.manager.get(&command.0) {
                Ok(h) => h
                    .resize(map::size_from_wire(size))
                    .await
                    .map(|()| Some(ServerMsg::Ok { id }))
                    .map_err(Into::into),
                Err(e) => Err(e.into()),
            },
            ClientMsg::Detach { id, command } => {
                let command = self.name(command);
                self.end(&command.0);
                Ok(Some(ServerMsg::Ok { id }))
            }
            ClientMsg::Stdin { id, command, data, writer, offset } => match seq(writer, offset) {
                Ok(seq) => self.stdin(id, command, StdinOp::Data(data.0, seq)),
                Err(e) => Err(e),
            },
            ClientMsg::CloseStdin { id, command, writer, offset } => match seq(writer, offset) {
                Ok(seq) => self.stdin(id, command, StdinOp::Close(seq)),
                Err(e) => Err(e),
            },
            ClientMsg::Ack { command, stdout_offset, stderr_offset, .. } => {
                // Never answered; an ack for an attachment without a window
                // (or none at all) is ignored.
                let command = self.name(command);
                if let Some(a) = self.attachments.get(&command.0) {
                    if let Some(acked) = &a.acked {
                        acked.send_modify(|a| {
                            a[0] = a[0].max(stdout_offset);
                            a[1] = a[1].max(stderr_offset);
                        });
                    }
                    if let Some(p) = &a.pacer {
                        p.ack([stdout_offset, stderr_offset]);
                    }
                }
                Ok(None)
            }
            ClientMsg::Signal { id, command, signal } => match self.ctx.manager.get(&command.0) {
                Ok(h) => h.signal(&signal).await.map(|()| Some(ServerMsg::Ok { id })).map_err(Into::into),
                Err(e) => Err(e.into()),
            },
            ClientMsg::Kill { id, command } => match self.ctx.manager.get(&command.0) {
                Ok(h) => {
                    tracing::info!(command = %command, "kill requested");
                    h.kill().await.map(|()| Some(ServerMsg::Ok { id })).map_err(Into::into)
                }
                Err(e) => Err(e.into()),
            },
            ClientMsg::List { id, limit, cursor } => {
                map::list_page(&self.ctx.manager, limit, cursor.as_deref())
                    .map(|(commands, next)| Some(ServerMsg::List { id, commands, next }))
            }
            ClientMsg::Status { id, command } => self
                .ctx
                .manager
                .get(&command.0)
                .map(|h| Some(ServerMsg::Status { id, info: map::info_to_wire(h.info()) }))
                .map_err(Into::into),
            // The attachment stays: it delivers the exit (reason `killed`).
            ClientMsg::Remove { id, command } => self
                .ctx
                .manager
                .remove(&command.0)
                .await
                .map(|()| Some(ServerMsg::Ok { id }))
                .map_err(Into::into),
            ClientMsg::ShellCreate { id, spec } => {
                match self.ctx.manager.create_shell(map::shell_spec_from_wire(spec)).await {
                    Ok((h, created)) => {
                        tracing::info!(shell = %h.name(), created, "shell");
                        Ok(Some(ServerMsg::Shell { id, info: map::shell_to_wire(h.info()), created }))
                    }
                    Err(e) => Err(e.into()),
                }
            }
            ClientMsg::ShellRun { id, shell, spec } => self.shell_run(id, shell, spec).await,
            ClientMsg::ShellList { id } => {
                let shells = self.ctx.manager.shells().into_iter().map(map::shell_to_wire).collect();
                Ok(Some(ServerMsg::ShellList { id, shells }))
            }
            ClientMsg::ShellHistory { id, shell } => self
                .ctx
                .manager
                .shell(&shell)
                .map(|h| {
                    let entries = h.history().into_iter().map(map::history_to_wire).collect();
                    Some(ServerMsg::ShellHistory { id, shell, entries })
                })
                .map_err(Into::into),
            ClientMsg::ShellClose { id, shell } => {
                tracing::info!(%shell, "shell close requested");
                self.ctx
                    .manager
                    .close_shell(&shell)
                    .await
                    .map(|()| Some(ServerMsg::Ok { id }))
                    .map_err(Into::into)
            }
        };
        match reply {
            Ok(Some(msg)) => self.send(msg).await,
            Ok(None) => {}
            Err(e) => self.send(e.into_msg(Some(id))).await,
        }
    }

    /// Queues a stdin operation on the command's pump (created on first
    /// use); its `ok` or error is sent when the command's stdin took it.
    fn stdin(&mut self, id: ReqId, command: CommandId, op: StdinOp) -> Result<Option<ServerMsg>, WireError> {
        // One pump per command, whichever name (id or key) is used.
        let command = self.name(command);
        if self.pumps.get(&command.0).is_none_or(StdinPump::is_closed) {
            self.ctx.manager.get(&command.0)?;
            let enc = self.ctx.encoding;
            let reply: pump::Reply<ReqId> = Box::new(move |id, r| {
                let msg = match r {
                    Ok(()) => ServerMsg::Ok { id },
                    Err(e) => WireError::from(e).into_msg(Some(id)),
                };
                Some(encode(&msg, enc))
            });
            let p = StdinPump::spawn(
                self.ctx.manager.clone(),
                command.0.clone(),
                STDIN_WINDOW_BYTES,
                Some(self.out.clone()),
                reply,
            );
            // Forget the idle pumps of commands that are gone.
            let manager = &self.ctx.manager;
            self.pumps.retain(|id, p| !p.is_idle() || manager.get(id).is_ok());
            self.pumps.insert(command.0.clone(), p);
        }
        let Some(p) = self.pumps.get(&command.0) else { unreachable!("inserted above") };
        match p.push(id, op) {
            Ok(()) => Ok(None),
            Err(pump::Refused::Window(w)) => Err(WireError {
                code: ErrorCode::LimitExceeded,
                message: format!(
                    "stdin window exceeded: more than {w} unacknowledged bytes for {command}; \
                     wait for the ok of earlier stdin frames"
                ),
                errno: None,
            }),
            Err(pump::Refused::Ops) => Err(WireError {
                code: ErrorCode::LimitExceeded,
                message: format!("too many unacknowledged stdin frames for {command}"),
                errno: None,
            }),
        }
    }

    async fn start(&mut self, id: ReqId, spec: proto::StartSpec) -> Result<Option<ServerMsg>, WireError> {
        let (attach, pace, window) = (spec.attach, spec.pace, window(spec.window_bytes)?);
        let client = client_name(spec.client.clone())?;
        let spec = map::spec_from_wire(spec)?;
        let (h, new) = self.ctx.manager.start_keyed(spec)?;
        let command = CommandId(h.id().to_owned());
        if new {
            tracing::info!(command = %command, pid = h.pid(), "started");
        } else {
            tracing::info!(command = %command, "start repeated (same request key): the command it started");
        }
        self.started(id, &h, attach, pace, window, client).await
    }

    /// Answers a start with `started` and attaches from the first byte if
    /// asked. The subscription is made at once (a pacing one must hold the
    /// command back from its first byte), but forwarding starts only after
    /// `started` is queued, so it precedes every output frame. (An earlier
    /// attachment of this connection to the command, from a first try of a
    /// repeated start, is replaced.)
    async fn started(
        &mut self,
        id: ReqId,
        h: &CommandHandle,
        attach: bool,
        pace: bool,
        window: Option<u64>,
        client: Option<String>,
    ) -> Result<Option<ServerMsg>, WireError> {
        let sub = if attach {
            self.end(h.id());
            Some(h.attach_paced([0, 0], pace)?)
        } else {
            None
        };
        self.send(ServerMsg::Started { id, command: CommandId(h.id().to_owned()), pid: h.pid() }).await;
        if let Some(sub) = sub {
            self.forward(sub, window, client);
        }
        Ok(None)
    }

    /// Ends this connection's attachment to a command on the client's
    /// request (detach, or a new attachment replacing it): it stops pacing
    /// at once, where a lost connection's attachment lingers.
    fn end(&mut self, command: &str) {
        if let Some(a) = self.attachments.remove(command)
            && let Some(p) = a.pacer
        {
            p.release();
        }
    }

    /// Queues a script in a shell; answered like `start`.
    async fn shell_run(
        &mut self,
        id: ReqId,
        shell: String,
        spec: proto::ShellRunSpec,
    ) -> Result<Option<ServerMsg>, WireError> {
        let (attach, pace, window) = (spec.attach, spec.pace, window(spec.window_bytes)?);
        let client = client_name(spec.client.clone())?;
        let spec = map::shell_run_from_wire(spec)?;
        let (h, new) = self.ctx.manager.shell_run_keyed(&shell, spec).await?;
        if new {
            tracing::info!(command = h.id(), %shell, "queued in shell");
        } else {
            tracing::info!(command = h.id(), %shell, "shell_run repeated (same request key): the command it queued");
        }
        self.started(id, &h, attach, pace, window, client).await
    }

    /// Attaches (replacing an earlier attachment of this connection to the
    /// same command): queues `attached`, then the forwarder's frames; or
    /// queues an error. Returns whether it attached.
    async fn attach(&mut self, id: ReqId, command: CommandId, from: [u64; 2], how: How) -> bool {
        let (window, client) = (how.window, how.client.clone());
        // `attached` and every frame after it name the command by its id,
        // also when the client named it by its request key.
        let command = self.name(command);
        // An earlier attachment to the same command ends first, so none of
        // its frames follow the new `attached`.
        self.end(&command.0);
        let sub = match self.ctx.manager.get(&command.0) {
            Ok(h) => subscribe(&h, from, how).await,
            Err(e) => Err(e),
        };
        match sub {
            Ok((screen, sub)) => {
                let [stdout_offset, stderr_offset] = sub.offsets();
                self.send(ServerMsg::Attached { id, command: command.clone(), stdout_offset, stderr_offset })
                    .await;
                if let Some(s) = screen {
                    let size = map::size_to_wire(s.size);
                    self.send(ServerMsg::Screen { command, offset: s.offset, size, data: s.data.into() })
                        .await;
                }
                self.forward(sub, window, client);
                true
            }
            Err(e) => {
                self.send(WireError::from(e).into_msg(Some(id))).await;
                false
            }
        }
    }

    /// Spawns the forwarder of a new attachment, flow-controlled by
    /// `window` bytes of unacknowledged output if given.
    fn forward(&mut self, mut sub: Subscription, window: Option<u64>, client: Option<String>) {
        let out = self.out.clone();
        self.generation += 1;
        let generation = self.generation;
        let cmd = sub.id().to_owned();
        let done = self.done_tx.clone();
        let max = self.ctx.cfg.max_chunk_bytes;
        let enc = self.ctx.encoding;
        let (acked, credit) = match window {
            Some(w) => {
                let (tx, rx) = watch::channel(sub.offsets());
                (Some(tx), Some(Credit { window: w, acked: rx, floor: sub.offsets() }))
            }
            None => (None, None),
        };
        // A client that acknowledges paces by what it took, not by what
        // was sent: the bytes in flight when its connection drops are
        // still in the ring when it comes back.
        let pacer = window.and_then(|_| sub.pace_by_acks(client, PACE_LINGER));
        let span = tracing::info_span!("attach", command = %cmd);
        let task = tokio::spawn(
            async move {
                let id = sub.id().to_owned();
                forward(sub, &out, enc, max, credit).await;
                let _ = done.send((id, generation)).await;
            }
            .instrument(span),
        );
        self.attachments
            .insert(cmd, Attachment { generation, acked, pacer, _task: AbortOnDropHandle::new(task) });
    }
}

/// A `stdin`/`close_stdin`'s writer and offset: both or neither.
fn seq(writer: Option<String>, offset: Option<u64>) -> Result<Option<StdinSeq>, WireError> {
    match (writer, offset) {
        (None, None) => Ok(None),
        (Some(writer), Some(offset)) => {
            let seq = StdinSeq { writer, offset };
            if !seq.is_valid() {
                return Err(WireError::bad_request(format!(
                    "stdin writer {:?}: 1 to {} bytes",
                    seq.writer,
                    StdinSeq::MAX_WRITER
                )));
            }
            Ok(Some(seq))
        }
        _ => Err(WireError::bad_request("give both writer and offset, or neither")),
    }
}

/// A client name (`attach.client`), checked.
fn client_name(c: Option<String>) -> Result<Option<String>, WireError> {
    match c {
        Some(c) if c.is_empty() || c.len() > 64 => {
            Err(WireError::bad_request(format!("client name {c:?}: 1 to 64 bytes")))
        }
        c => Ok(c),
    }
}

/// A `window_bytes`, checked.
fn window(w: Option<u64>) -> Result<Option<u64>, WireError> {
    match w {
        Some(w) if !WINDOW_RANGE.contains(&w) => Err(WireError::bad_request(format!(
            "window_bytes {w} is outside {}..={}",
            WINDOW_RANGE.start(),
            WINDOW_RANGE.end()
        ))),
        w => Ok(w),
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

/// How an `attach` wants to be attached.
#[derive(Default)]
struct How {
    tail: Option<u64>,
    pace: bool,
    screen: bool,
    size: Option<tether_exec::TermSize>,
    window: Option<u64>,
    client: Option<String>,
}

/// An attachment's flow control: at most `window` bytes beyond what the
/// client acknowledged.
struct Credit {
    window: u64,
    acked: watch::Receiver<[u64; 2]>,
    /// Per stream, where the last gap ended: bytes it skipped need no ack.
    floor: [u64; 2],
}

impl Credit {
    /// Waits until at least a useful amount of the window is free (a
    /// quarter of it, or a whole chunk), then returns how much is.
    async fn room(&mut self, sent: [u64; 2], chunk: usize) -> Option<usize> {
        let want = (self.window / 4).min(chunk as u64).max(1);
        loop {
            let acked = *self.acked.borrow_and_update();
            let in_flight: u64 = (0..2).map(|i| sent[i].saturating_sub(acked[i].max(self.floor[i]))).sum();
            let room = self.window.saturating_sub(in_flight);
            if room >= want {
                return Some(room.min(chunk as u64) as usize);
            }
            self.acked.changed().await.ok()?;
        }
    }

    /// Bytes skipped by a gap need no acknowledgement.
    fn skip(&mut self, stream: usize, to: u64) {
        self.floor[stream] = self.floor[stream].max(to);
    }
}

/// The subscription an `attach` asks for, with the screen to send first.
async fn subscribe(
    h: &CommandHandle,
    from: [u64; 2],
    how: How,
) -> Result<(Option<tether_exec::Screen>, Subscription), ExecError> {
    if h.is_pty() && how.screen && how.tail.is_none() {
        return h.attach_screen(from[0], how.size, how.pace).await;
    }
    if let Some(size) = how.size.filter(|_| h.is_pty()) {
        // A finished command has no terminal to resize; its output is
        // still there to read.
        match h.resize(size).await {
            Ok(()) | Err(ExecError::NotRunning(_)) => {}
            Err(e) => return Err(e),
        }
    }
    let sub = match how.tail {
        Some(t) => h.attach_tail(t, how.pace),
        None => h.attach_paced(from, how.pace)?,
    };
    Ok((None, sub))
}

/// Pushes a subscription's events as frames until its exit; with a
/// credit, never more than its window beyond what the client acknowledged
/// (meanwhile the subscription is not read: a pacing one holds the command
/// back, another falls behind and gets a gap, as for any slow client).
async fn forward(mut sub: Subscription, out: &OutTx, enc: Encoding, max: usize, mut credit: Option<Credit>) {
    let command = CommandId(sub.id().to_owned());
    let mut sent = sub.offsets();
    loop {
        let limit = match credit.as_mut() {
            Some(c) => match c.room(sent, max).await {
                Some(n) => n,
                None => return,
            },
            None => max,
        };
        let Some(ev) = sub.next(limit).await else { return };
        let msg = match ev {
            Event::Output { stream, offset, data } => {
                let i = if stream == tether_exec::Stream::Stdout { 0 } else { 1 };
                sent[i] = offset + data.len() as u64;
                ServerMsg::Output {
                    command: command.clone(),
                    stream: map::stream_to_wire(stream),
                    offset,
                    data: data.into(),
                }
            }
            Event::Gap { stream, requested, first_held } => {
                tracing::info!(?stream, requested, first_held, "client fell behind the ring: gap");
                let i = if stream == tether_exec::Stream::Stdout { 0 } else { 1 };
                sent[i] = first_held;
                if let Some(c) = credit.as_mut() {
                    c.skip(i, first_held);
                }
                ServerMsg::Gap {
                    command: command.clone(),
                    stream: map::stream_to_wire(stream),
                    requested,
                    first_held,
                }
            }
            Event::Resized(size) => {
                ServerMsg::Resized { command: command.clone(), size: map::size_to_wire(size) }
            }
            Event::Exit(e) => ServerMsg::Exit { command: command.clone(), status: map::exit_to_wire(&e) },
        };
        if out.send(encode(&msg, enc)).await.is_err() {
            return;
        }
    }
}
