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
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message};
use bytes::Bytes;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use serde::Deserialize;
use tether_exec::{CommandHandle, Event, ExecError, Manager, Subscription};
use tether_proto::{self as proto, ClientMsg, CommandId, Encoding, ErrorCode, ReqId, ServerMsg};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument;

use crate::ServerConfig;
use crate::map::{self, WireError};

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
    pub(crate) encoding: Encoding,
    pub(crate) peer: SocketAddr,
    pub(crate) attach: Option<AttachQuery>,
}

/// A frame for the writer task (at most `outbound_queue` exist at once, so
/// the size of the large variant does not matter).
#[allow(clippy::large_enum_variant)]
enum Out {
    Msg(ServerMsg),
    Ping,
    Close(u16, &'static str),
}

/// Unacknowledged stdin bytes one connection may queue for one command.
pub(crate) const STDIN_WINDOW_BYTES: usize = 4 << 20;

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
    let (out, out_rx) = mpsc::channel(ctx.cfg.outbound_queue.max(1));
    let writer = tokio::spawn(write_loop(sink, out_rx, ctx.encoding).in_current_span());
    let (done_tx, mut done_rx) = mpsc::channel(64);
    let mut conn = Conn {
        ctx,
        out,
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
    if let Some(q) = conn.ctx.attach.take() {
        let command = q.command.unwrap_or_default();
        let from = [q.stdout_offset, q.stderr_offset];
        let how = How { tail: q.tail_bytes, ..How::default() };
        if !conn.attach(ReqId(0), CommandId(command.clone()), from, how).await {
            conn.close(CLOSE_NORMAL, "attach failed").await;
        }
        single = Some(command);
    }

    let interval = conn.ctx.cfg.ping_interval;
    let mut ping = tokio::time::interval_at(Instant::now() + interval, interval);
    let mut last_seen = Instant::now();
    while !conn.dead {
        tokio::select! {
            _ = conn.ctx.shutdown.cancelled() => {
                conn.close(CLOSE_GOING_AWAY, "server shutting down").await;
                break;
            }
            Some((cmd, generation)) = done_rx.recv() => {
                if conn.attachments.get(&cmd).is_some_and(|a| a.generation == generation) {
                    conn.attachments.remove(&cmd);
                }
                if single.as_ref() == Some(&cmd) {
                    conn.close(CLOSE_NORMAL, "command exited").await;
                    break;
                }
            }
            _ = ping.tick() => {
                if last_seen.elapsed() > conn.ctx.cfg.peer_timeout {
                    tracing::warn!("peer silent for {:?}: dropping", last_seen.elapsed());
                    conn.close(CLOSE_POLICY, "ping timeout").await;
                    break;
                }
                // If the queue is full the peer is busy receiving; skip.
                let _ = conn.out.try_send(Out::Ping);
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
                                conn.close(code, reason).await;
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
    // queue senders, so the writer ends once it has flushed. A writer stuck
    // on a dead peer is aborted.
    drop(conn);
    let mut writer = AbortOnDropHandle::new(writer);
    if tokio::time::timeout(Duration::from_secs(2), &mut writer).await.is_err() {
        tracing::info!("peer not accepting data: dropping the socket");
    }
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
    _task: AbortOnDropHandle<()>,
}

/// Writes one command's stdin for one connection, in order, so that a
/// command that does not read its stdin stalls only its own stdin queue,
/// never the connection's other requests (signals, kills, other commands).
struct Pump {
    tx: mpsc::Sender<(ReqId, StdinOp)>,
    /// Bytes queued and not yet handed to the command.
    queued: Arc<AtomicUsize>,
    _task: AbortOnDropHandle<()>,
}

enum StdinOp {
    Data(Bytes),
    Close,
}

struct Conn {
    ctx: ConnCtx,
    out: mpsc::Sender<Out>,
    attachments: HashMap<String, Attachment>,
    pumps: HashMap<String, Pump>,
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
        let timeout = self.ctx.cfg.peer_timeout;
        match tokio::time::timeout(timeout, self.out.send(Out::Msg(msg))).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => self.dead = true,
            Err(_) => {
                tracing::warn!("peer took no frame for {timeout:?}: dropping it");
                self.dead = true;
            }
        }
    }

    async fn error(&mut self, id: Option<ReqId>, code: ErrorCode, message: &str) {
        self.send(ServerMsg::Error { id, code, message: message.to_owned(), errno: None }).await;
    }

    /// Queues a close frame, waiting at most a second: a peer that is not
    /// reading gets no close frame, just a closed socket.
    async fn close(&mut self, code: u16, reason: &'static str) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.out.send(Out::Close(code, reason))).await;
        self.dead = true;
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
            } => {
                let how = How { tail: tail_bytes, pace, screen, size: size.map(map::size_from_wire) };
                self.attach(id, command, [stdout_offset, stderr_offset], how).await;
                Ok(None)
            }
            ClientMsg::Resize { id, command, size } => match self.ctx.manager.get(&command.0) {
                Ok(h) => h
                    .resize(map::size_from_wire(size))
                    .await
                    .map(|()| Some(ServerMsg::Ok { id }))
                    .map_err(Into::into),
                Err(e) => Err(e.into()),
            },
            ClientMsg::Detach { id, command } => {
                self.attachments.remove(&command.0);
                Ok(Some(ServerMsg::Ok { id }))
            }
            ClientMsg::Stdin { id, command, data } => self.stdin(id, command, StdinOp::Data(data.0)),
            ClientMsg::CloseStdin { id, command } => self.stdin(id, command, StdinOp::Close),
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
            ClientMsg::List { id } => {
                let commands = self.ctx.manager.list().into_iter().map(map::info_to_wire).collect();
                Ok(Some(ServerMsg::List { id, commands }))
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
        if self.pumps.get(&command.0).is_none_or(|p| p.tx.is_closed()) {
            self.ctx.manager.get(&command.0)?;
            let (tx, mut rx) = mpsc::channel::<(ReqId, StdinOp)>(256);
            let queued = Arc::new(AtomicUsize::new(0));
            let (out, q) = (self.out.clone(), queued.clone());
            // The pump looks the command up per operation rather than holding
            // a handle, so it never keeps a finished command's memory alive.
            let (manager, cmd) = (self.ctx.manager.clone(), command.0.clone());
            let task = tokio::spawn(async move {
                while let Some((id, op)) = rx.recv().await {
                    let (last, n) = match &op {
                        StdinOp::Data(b) => (false, b.len()),
                        StdinOp::Close => (true, 0),
                    };
                    let r = match (manager.get(&cmd), op) {
                        (Err(e), _) => Err(e),
                        (Ok(h), StdinOp::Data(b)) => h.write_stdin(b).await,
                        (Ok(h), StdinOp::Close) => h.close_stdin().await,
                    };
                    q.fetch_sub(n, Ordering::SeqCst);
                    let msg = match r {
                        Ok(()) => ServerMsg::Ok { id },
                        Err(e) => WireError::from(e).into_msg(Some(id)),
                    };
                    if out.send(Out::Msg(msg)).await.is_err() {
                        return;
                    }
                    if last {
                        break;
                    }
                }
                // Stdin is closed: whatever was queued behind the close
                // still gets its one reply.
                while let Some((id, _)) = rx.recv().await {
                    let e = tether_exec::ExecError::StdinClosed(cmd.clone());
                    if out.send(Out::Msg(WireError::from(e).into_msg(Some(id)))).await.is_err() {
                        return;
                    }
                }
            });
            let pump = Pump { tx, queued, _task: AbortOnDropHandle::new(task) };
            self.pumps.insert(command.0.clone(), pump);
        }
        let Some(pump) = self.pumps.get(&command.0) else { unreachable!("inserted above") };
        let n = match &op {
            StdinOp::Data(b) => b.len(),
            StdinOp::Close => 0,
        };
        if pump.queued.fetch_add(n, Ordering::SeqCst) + n > STDIN_WINDOW_BYTES {
            pump.queued.fetch_sub(n, Ordering::SeqCst);
            return Err(WireError {
                code: ErrorCode::LimitExceeded,
                message: format!(
                    "stdin window exceeded: more than {STDIN_WINDOW_BYTES} unacknowledged bytes \
                     for {command}; wait for the ok of earlier stdin frames"
                ),
                errno: None,
            });
        }
        if pump.tx.try_send((id, op)).is_err() {
            pump.queued.fetch_sub(n, Ordering::SeqCst);
            return Err(WireError {
                code: ErrorCode::LimitExceeded,
                message: format!("too many unacknowledged stdin frames for {command}"),
                errno: None,
            });
        }
        Ok(None)
    }

    async fn start(&mut self, id: ReqId, spec: proto::StartSpec) -> Result<Option<ServerMsg>, WireError> {
        let (attach, pace) = (spec.attach, spec.pace);
        let spec = map::spec_from_wire(spec)?;
        let h = self.ctx.manager.start(spec)?;
        let command = CommandId(h.id().to_owned());
        tracing::info!(command = %command, pid = h.pid(), "started");
        // Subscribe at once (a pacing subscription must hold the command
        // back from its first byte), but start forwarding only after
        // `started` is queued, so it precedes every output frame.
        let sub = if attach { Some(h.attach_paced([0, 0], pace)?) } else { None };
        self.send(ServerMsg::Started { id, command: command.clone(), pid: h.pid() }).await;
        if let Some(sub) = sub {
            self.forward(sub);
        }
        Ok(None)
    }

    /// Queues a script in a shell; answered like `start`.
    async fn shell_run(
        &mut self,
        id: ReqId,
        shell: String,
        spec: proto::ShellRunSpec,
    ) -> Result<Option<ServerMsg>, WireError> {
        let (attach, pace) = (spec.attach, spec.pace);
        let spec = map::shell_run_from_wire(spec)?;
        let h = self.ctx.manager.shell_run(&shell, spec).await?;
        let command = CommandId(h.id().to_owned());
        tracing::info!(command = %command, %shell, "queued in shell");
        let sub = if attach { Some(h.attach_paced([0, 0], pace)?) } else { None };
        self.send(ServerMsg::Started { id, command, pid: h.pid() }).await;
        if let Some(sub) = sub {
            self.forward(sub);
        }
        Ok(None)
    }

    /// Attaches (replacing an earlier attachment of this connection to the
    /// same command): queues `attached`, then the forwarder's frames; or
    /// queues an error. Returns whether it attached.
    async fn attach(&mut self, id: ReqId, command: CommandId, from: [u64; 2], how: How) -> bool {
        // An earlier attachment to the same command ends first, so none of
        // its frames follow the new `attached`.
        self.attachments.remove(&command.0);
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
                self.forward(sub);
                true
            }
            Err(e) => {
                self.send(WireError::from(e).into_msg(Some(id))).await;
                false
            }
        }
    }

    /// Spawns the forwarder of a new attachment.
    fn forward(&mut self, sub: Subscription) {
        let out = self.out.clone();
        self.generation += 1;
        let generation = self.generation;
        let cmd = sub.id().to_owned();
        let done = self.done_tx.clone();
        let max = self.ctx.cfg.max_chunk_bytes;
        let span = tracing::info_span!("attach", command = %cmd);
        let task = tokio::spawn(
            async move {
                let id = sub.id().to_owned();
                forward(sub, &out, max).await;
                let _ = done.send((id, generation)).await;
            }
            .instrument(span),
        );
        self.attachments.insert(cmd, Attachment { generation, _task: AbortOnDropHandle::new(task) });
    }
}

/// How an `attach` wants to be attached.
#[derive(Default)]
struct How {
    tail: Option<u64>,
    pace: bool,
    screen: bool,
    size: Option<tether_exec::TermSize>,
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

/// Pushes a subscription's events as frames until its exit.
async fn forward(mut sub: Subscription, out: &mpsc::Sender<Out>, max: usize) {
    let command = CommandId(sub.id().to_owned());
    while let Some(ev) = sub.next(max).await {
        let msg = match ev {
            Event::Output { stream, offset, data } => ServerMsg::Output {
                command: command.clone(),
                stream: map::stream_to_wire(stream),
                offset,
                data: data.into(),
            },
            Event::Gap { stream, requested, first_held } => {
                tracing::info!(?stream, requested, first_held, "client fell behind the ring: gap");
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
        if out.send(Out::Msg(msg)).await.is_err() {
            return;
        }
    }
}

/// Owns the sending half: encodes and writes queued frames, flushing when
/// the queue runs dry so bursts go out in few syscalls.
async fn write_loop<K>(mut sink: K, mut rx: mpsc::Receiver<Out>, enc: Encoding)
where
    K: Sink<Message, Error = axum::Error> + Unpin,
{
    while let Some(o) = rx.recv().await {
        let m = match o {
            Out::Msg(m) => {
                let hint = match &m {
                    // base64 in JSON is 4/3 of the bytes.
                    ServerMsg::Output { data, .. } => data.len() * 4 / 3,
                    _ => 0,
                };
                let bytes = proto::encode_sized(&m, enc, hint);
                match enc {
                    Encoding::MsgPack => Message::Binary(bytes.into()),
                    // serde_json output is always UTF-8.
                    Encoding::Json => Message::Text(String::from_utf8_lossy(&bytes).into_owned().into()),
                }
            }
            Out::Ping => Message::Ping(Default::default()),
            Out::Close(code, reason) => {
                let _ = sink.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
                return;
            }
        };
        if sink.feed(m).await.is_err() {
            return;
        }
        if rx.is_empty() && sink.flush().await.is_err() {
            return;
        }
    }
    let _ = sink.close().await;
}
