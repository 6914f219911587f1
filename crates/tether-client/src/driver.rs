//! The connection task: owns the WebSocket, routes frames to requests and
//! executions, and reconnects and resumes after a drop.
//!
//! It never waits for a caller: events go to each execution's queue
//! without blocking (the daemon sends at most a window of unacknowledged
//! output per attachment, so a queue holds at most about a window), and
//! acknowledgements come back through a shared table rather than the
//! request channel.
//!
//! After a drop it re-attaches every watched command from the offsets it
//! has delivered, then sends again the requests that were in flight and are
//! safe to repeat (keyed starts, numbered stdin, attaches, lookups, kills);
//! the others (a signal) fail with [`ClientError::Disconnected`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tether_proto::{self as proto, ClientMsg, CommandId, ErrorCode, ReqId, ServerMsg, Stream, TermSize};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode, header};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::client::{ClientOptions, Connection, ExecEvent};
use crate::error::ClientError;

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
pub(crate) type Reply = oneshot::Sender<Result<ServerMsg, ClientError>>;

/// One event for an execution, with the offsets delivered once the
/// execution has taken it (what it acknowledges).
pub(crate) struct Delivery {
    pub(crate) ev: Result<ExecEvent, ClientError>,
    pub(crate) at: [u64; 2],
}

pub(crate) type EventTx = mpsc::UnboundedSender<Delivery>;

/// Offsets executions have consumed, per command, for the driver to
/// acknowledge (flow control). A std mutex: held for an insert or a drain.
#[derive(Default)]
pub(crate) struct Acks {
    pending: Mutex<HashMap<CommandId, [u64; 2]>>,
    notify: Notify,
}

impl Acks {
    /// Records consumption up to `at` and wakes the driver.
    pub(crate) fn ack(&self, command: &CommandId, at: [u64; 2]) {
        let mut map = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let e = map.entry(command.clone()).or_insert(at);
        e[0] = e[0].max(at[0]);
        e[1] = e[1].max(at[1]);
        drop(map);
        self.notify.notify_one();
    }

    fn take(&self) -> Vec<(CommandId, [u64; 2])> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).drain().collect()
    }
}

/// A request from the public API to the driver.
pub(crate) struct Cmd {
    pub(crate) msg: ClientMsg,
    /// Where the reply goes; `None` for fire-and-forget (`detach`), whose
    /// errors are only logged.
    pub(crate) reply: Option<Reply>,
    /// For `start`/`attach`: the queue the execution's events go to,
    /// registered when the `started`/`attached` reply arrives so no output
    /// frame can overtake it.
    pub(crate) watch: Option<EventTx>,
}

struct Pending {
    reply: Option<Reply>,
    watch: Option<EventTx>,
    /// Set for the driver's own re-attach after a reconnect.
    resume: Option<CommandId>,
    /// How the request attaches.
    mode: Mode,
    /// The request, kept to send it again after a reconnect when that is
    /// safe (see [`retryable`]).
    again: Option<ClientMsg>,
    /// This is a repeat: a `kill` finding the command ended, or a `remove`
    /// (`shell_close`) finding it gone, did what was asked the first time.
    repeated: bool,
}

/// How an attachment is made, and remade after a reconnect.
#[derive(Clone, Copy, Debug, Default)]
struct Mode {
    /// The attachment paces the command.
    pace: bool,
    /// A terminal viewer of a PTY command: a resume asks for the screen
    /// (which the daemon sends only if the offset is no longer held) and
    /// re-asserts the viewer's size.
    terminal: bool,
    /// The viewer's latest terminal size.
    size: Option<TermSize>,
    /// Flow control window.
    window: Option<u64>,
}

struct Watch {
    tx: EventTx,
    /// Next offset to deliver per stream (stdout, stderr).
    next: [u64; 2],
    /// The caller killed it: do not re-attach after a drop.
    killed: bool,
    /// How to re-attach.
    mode: Mode,
    /// What the execution has acknowledged taking: between it and `next`
    /// is what waits in its queue.
    acked: [u64; 2],
}

/// Ids the driver uses for its own requests, far above the caller's.
const INTERNAL_IDS: u64 = 1 << 52;

pub(crate) struct Driver {
    url: String,
    token: String,
    opts: ClientOptions,
    /// The client's name, given with every pacing attachment, so that a
    /// re-attach replaces the pacing of the old connection's attachment.
    name: Arc<str>,
    rx: mpsc::Receiver<Cmd>,
    acks: Arc<Acks>,
    pending: HashMap<ReqId, Pending>,
    /// Requests in flight at a drop, to send again once reconnected.
    again: Vec<(ReqId, Pending)>,
    watches: HashMap<CommandId, Watch>,
    next_internal: u64,
    /// Published for callers that show the connection's state.
    state: watch::Sender<Connection>,
}

enum Lost {
    /// The daemon closed with 1001: it is restarting; retry at once.
    GoingAway,
    /// Anything else.
    Error,
}

impl Driver {
    pub(crate) fn new(
        url: String,
        token: String,
        opts: ClientOptions,
        name: Arc<str>,
        rx: mpsc::Receiver<Cmd>,
        acks: Arc<Acks>,
        state: watch::Sender<Connection>,
    ) -> Driver {
        Driver {
            state,
            url,
            token,
            opts,
            name,
            rx,
            acks,
            pending: HashMap::new(),
            again: Vec::new(),
            watches: HashMap::new(),
            next_internal: INTERNAL_IDS,
        }
    }

    pub(crate) async fn run(mut self, ws: Ws) {
        let mut conn = Some(ws);
        let mut lost = Lost::Error;
        let mut queued: Option<Cmd> = None;
        // Keepalive: a connection that dies without a reset (NAT timeout,
        // Wi-Fi switch) is noticed by silence, not by an error.
        let every = self.opts.keepalive;
        let mut ping = tokio::time::interval_at(Instant::now() + every, every);
        let mut last_rx = Instant::now();
        let acks = self.acks.clone();
        loop {
            let ws = match &mut conn {
                Some(ws) => ws,
                None => {
                    // Reconnect only when someone needs the connection.
                    if self.watches.is_empty() && self.again.is_empty() && queued.is_none() {
                        match self.rx.recv().await {
                            None => return,
                            Some(c) => queued = Some(c),
                        }
                    }
                    match self.reconnect(&lost).await {
                        Ok(mut ws) => {
                            last_rx = Instant::now();
                            if self.resume(&mut ws).await.is_ok() {
                                conn = Some(ws);
                            } else {
                                self.lose(Lost::Error, &mut lost);
                            }
                            continue;
                        }
                        Err(e) => {
                            tracing::warn!("giving up reconnecting: {e}");
                            self.state.send_replace(Connection::Failed);
                            for (_, w) in self.watches.drain() {
                                let _ = w.tx.send(Delivery { ev: Err(e.clone()), at: w.next });
                            }
                            for (_, p) in self.again.drain(..) {
                                fail(p, &e);
                            }
                            if let Some(c) = queued.take()
                                && let Some(r) = c.reply
                            {
                                let _ = r.send(Err(e.clone()));
                            }
                            continue;
                        }
                    }
                }
            };
            if let Some(c) = queued.take()
                && self.send_cmd(ws, c).await.is_err()
            {
                conn = self.lose(Lost::Error, &mut lost);
                continue;
            }
            tokio::select! {
                cmd = self.rx.recv() => match cmd {
                    None => {
                        let _ = ws.close(None).await;
                        return;
                    }
                    Some(c) => {
                        if self.send_cmd(ws, c).await.is_err() {
                            conn = self.lose(Lost::Error, &mut lost);
                        }
                    }
                },
                () = acks.notify.notified() => {
                    for (command, at) in acks.take() {
                        if let Some(w) = self.watches.get_mut(&command) {
                            w.acked = [0, 1].map(|i| w.acked[i].max(at[i]));
                        }
                        let msg = ClientMsg::Ack { id: ReqId(0), command, stdout_offset: at[0], stderr_offset: at[1] };
                        if send(ws, &msg).await.is_err() {
                            conn = self.lose(Lost::Error, &mut lost);
                            break;
                        }
                    }
                }
                _ = ping.tick() => {
                    if last_rx.elapsed() > self.opts.peer_timeout {
                        tracing::info!("daemon silent for {:?}: reconnecting", last_rx.elapsed());
                        conn = self.lose(Lost::Error, &mut lost);
                    } else if ws.send(Message::Ping(Default::default())).await.is_err() {
                        conn = self.lose(Lost::Error, &mut lost);
                    }
                }
                frame = ws.next() => {
                    last_rx = Instant::now();
                    match frame {
                        Some(Ok(Message::Binary(b))) => {
                            if self.on_frame(ws, &b).await.is_err() {
                                conn = self.lose(Lost::Error, &mut lost);
                            }
                        }
                        Some(Ok(Message::Close(cf))) => {
                            let going_away = cf.as_ref().is_some_and(|c| u16::from(c.code) == 1001);
                            tracing::info!(?cf, "daemon closed the connection");
                            conn = self.lose(if going_away { Lost::GoingAway } else { Lost::Error }, &mut lost);
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => {
                            tracing::info!("connection lost: {e}");
                            conn = self.lose(Lost::Error, &mut lost);
                        }
                        None => conn = self.lose(Lost::Error, &mut lost),
                    }
                }
            }
        }
    }

    /// Keeps the requests in flight that are safe to repeat, fails the
    /// others, and forgets killed commands.
    fn lose(&mut self, why: Lost, lost: &mut Lost) -> Option<Ws> {
        self.state.send_replace(Connection::Reconnecting);
        for (id, mut p) in self.pending.drain() {
            if p.resume.is_some() {
                // The driver's own re-attach: the next resume makes another.
                continue;
            }
            if p.again.is_some() {
                p.repeated = true;
                self.again.push((id, p));
            } else {
                fail(p, &ClientError::Disconnected);
            }
        }
        // In the order they were first sent (ids grow), so numbered stdin
        // goes out again in order.
        self.again.sort_by_key(|(id, _)| *id);
        self.watches.retain(|_, w| {
            if w.killed {
                let _ = w.tx.send(Delivery { ev: Err(ClientError::Disconnected), at: w.next });
            }
            !w.killed
        });
        *lost = why;
        None
    }

    async fn reconnect(&mut self, lost: &Lost) -> Result<Ws, ClientError> {
        let started = Instant::now();
        let mut delay = self.opts.initial_backoff;
        let mut first = true;
        loop {
            if !(first && matches!(lost, Lost::GoingAway)) {
                let jitter = 0.8 + rand::random::<f64>() * 0.4;
                tokio::time::sleep(delay.mul_f64(jitter)).await;
                delay = (delay * 2).min(self.opts.max_backoff);
            }
            first = false;
            match connect(&self.url, &self.token, &self.opts).await {
                Ok(ws) => {
                    tracing::info!("reconnected after {:?}", started.elapsed());
                    self.state.send_replace(Connection::Connected);
                    return Ok(ws);
                }
                Err(
                    e @ (ClientError::Unauthorized | ClientError::Forbidden | ClientError::BadUrl { .. }),
                ) => {
                    return Err(e);
                }
                Err(e) => {
                    tracing::debug!("reconnect attempt failed: {e}");
                    if started.elapsed() > self.opts.reconnect_for {
                        return Err(ClientError::Disconnected);
                    }
                }
            }
        }
    }

    /// Re-attaches every watched command from the offsets delivered so far,
    /// then repeats the requests that were in flight.
    async fn resume(&mut self, ws: &mut Ws) -> Result<(), tungstenite::Error> {
        // What an execution still has queued counts against its new
        // window: a stalled reader's queue does not grow by a window per
        // reconnect.
        let targets: Vec<(CommandId, [u64; 2], Mode)> = self
            .watches
            .iter()
            .map(|(c, w)| {
                let queued: u64 = (0..2).map(|i| w.next[i].saturating_sub(w.acked[i])).sum();
                let window = w.mode.window.map(|win| win.saturating_sub(queued).max(4096));
                (c.clone(), w.next, Mode { window, ..w.mode })
            })
            .collect();
        for (command, next, mode) in targets {
            let id = ReqId(self.next_internal);
            self.next_internal += 1;
            let p = Pending {
                reply: None,
                watch: None,
                resume: Some(command.clone()),
                mode,
                again: None,
                repeated: false,
            };
            self.pending.insert(id, p);
            let msg = ClientMsg::Attach {
                id,
                command,
                stdout_offset: next[0],
                stderr_offset: next[1],
                tail_bytes: None,
                pace: mode.pace,
                // At offset 0 the viewer has shown nothing: the raw bytes
                // from 0 are exactly what it lacks (a screen is for a
                // viewer whose offset is gone).
                screen: mode.terminal && next[0] > 0,
                size: mode.size.filter(|_| mode.terminal),
                window_bytes: mode.window,
                client: mode.pace.then(|| self.name.to_string()),
            };
            send(ws, &msg).await?;
        }
        // Every repeat is pending before the first goes out: if this
        // connection fails too, `lose` keeps them all for the next one
        // (none is dropped half-way through the list).
        let again = std::mem::take(&mut self.again);
        let msgs: Vec<ClientMsg> = again.iter().filter_map(|(_, p)| p.again.clone()).collect();
        for (id, p) in again {
            self.pending.insert(id, p);
        }
        for msg in &msgs {
            send(ws, msg).await?;
        }
        Ok(())
    }

    async fn send_cmd(&mut self, ws: &mut Ws, c: Cmd) -> Result<(), tungstenite::Error> {
        match &c.msg {
            ClientMsg::Kill { command, .. } | ClientMsg::Remove { command, .. } => {
                if let Some(w) = self.watches.get_mut(command) {
                    w.killed = true;
                }
            }
            // Sent when an `Execution` is dropped. Another, live execution
            // of the same command (a later attach) keeps the attachment.
            ClientMsg::Detach { command, .. } => match self.watches.get(command) {
                Some(w) if w.tx.is_closed() => {
                    self.watches.remove(command);
                }
                _ => return Ok(()),
            },
            ClientMsg::Resize { command, size, .. } => {
                if let Some(w) = self.watches.get_mut(command) {
                    w.mode.size = Some(*size);
                }
            }
            // A redraw of a watched terminal: its size is the viewer's now.
            ClientMsg::Attach { command, size: Some(size), .. } if c.watch.is_none() => {
                if let Some(w) = self.watches.get_mut(command) {
                    w.mode.size = Some(*size);
                }
            }
            _ => {}
        }
        let id = c.msg.id();
        let mode = match &c.msg {
            ClientMsg::Start { spec, .. } => Mode {
                pace: spec.pace,
                terminal: spec.pty.is_some(),
                size: spec.pty.as_ref().map(|p| TermSize { rows: p.rows, cols: p.cols }),
                window: spec.window_bytes,
            },
            ClientMsg::ShellRun { spec, .. } => {
                Mode { pace: spec.pace, window: spec.window_bytes, ..Mode::default() }
            }
            ClientMsg::Attach { pace, screen, size, window_bytes, .. } => {
                Mode { pace: *pace, terminal: *screen, size: *size, window: *window_bytes }
            }
            _ => Mode::default(),
        };
        if c.reply.is_some() || c.watch.is_some() {
            let again = retryable(&c.msg).then(|| c.msg.clone());
            let p = Pending { reply: c.reply, watch: c.watch, resume: None, mode, again, repeated: false };
            self.pending.insert(id, p);
        }
        send(ws, &c.msg).await
    }

    /// Registers an execution's watch. One connection has one attachment
    /// per command, so an earlier execution of it ends with an error.
    fn watch(&mut self, command: CommandId, w: Watch) {
        if let Some(old) = self.watches.insert(command, w) {
            let err = ClientError::Protocol(
                "superseded by a newer attach to the same command on this client".into(),
            );
            let _ = old.tx.send(Delivery { ev: Err(err), at: old.next });
        }
    }

    /// Hands an event to a watched command's execution; an execution that
    /// is gone is detached.
    async fn deliver(
        &mut self,
        ws: &mut Ws,
        command: &CommandId,
        ev: ExecEvent,
    ) -> Result<(), tungstenite::Error> {
        let Some(w) = self.watches.get(command) else { return Ok(()) };
        if w.tx.send(Delivery { ev: Ok(ev), at: w.next }).is_err() {
            self.unwatch(ws, command.clone()).await?;
        }
        Ok(())
    }

    async fn on_frame(&mut self, ws: &mut Ws, bytes: &[u8]) -> Result<(), tungstenite::Error> {
        let msg: ServerMsg = match proto::decode(bytes, proto::Encoding::MsgPack) {
            Ok(m) => m,
            Err(e) => {
                // A newer daemon may send messages this client does not know.
                tracing::debug!("ignoring undecodable frame: {e}");
                return Ok(());
            }
        };
        match msg {
            ServerMsg::Hello { .. } => {}
            ServerMsg::Screen { command, offset, size, data } => {
                if let Some(w) = self.watches.get_mut(&command) {
                    // The screen replaces whatever the viewer showed; output
                    // continues at its offset.
                    w.next[0] = offset;
                    self.deliver(ws, &command, ExecEvent::Screen { size, data: data.0 }).await?;
                }
            }
            ServerMsg::Resized { command, size } => {
                self.deliver(ws, &command, ExecEvent::Resized(size)).await?;
            }
            ServerMsg::Started { id, ref command, .. } => {
                if let Some(p) = self.pending.remove(&id) {
                    if let Some(tx) = p.watch {
                        let w = Watch { tx, next: [0, 0], killed: false, mode: p.mode, acked: [0, 0] };
                        self.watch(command.clone(), w);
                    }
                    reply(p.reply, Ok(msg));
                }
            }
            ServerMsg::Attached { id, ref command, stdout_offset, stderr_offset } => {
                if let Some(p) = self.pending.remove(&id) {
                    if let Some(tx) = p.watch {
                        let next = [stdout_offset, stderr_offset];
                        let w = Watch { tx, next, killed: false, mode: p.mode, acked: next };
                        self.watch(command.clone(), w);
                    }
                    if p.resume.is_some() {
                        tracing::debug!(%command, stdout_offset, stderr_offset, "resumed");
                    }
                    reply(p.reply, Ok(msg));
                }
            }
            ServerMsg::Output { command, stream, offset, data } => {
                self.deliver_output(ws, command, stream, offset, data.0).await?;
            }
            ServerMsg::Gap { command, stream, requested, first_held } => {
                if let Some(w) = self.watches.get_mut(&command) {
                    let i = stream.index();
                    let from = w.next[i].max(requested);
                    if first_held > w.next[i] {
                        w.next[i] = first_held;
                        let ev = ExecEvent::Gap { stream, from, to: first_held };
                        self.deliver(ws, &command, ev).await?;
                    }
                }
            }
            ServerMsg::Exit { command, status } => {
                if let Some(w) = self.watches.remove(&command) {
                    let _ = w.tx.send(Delivery { ev: Ok(ExecEvent::Exit(status)), at: w.next });
                }
            }
            ServerMsg::Ok { id }
            | ServerMsg::List { id, .. }
            | ServerMsg::Status { id, .. }
            | ServerMsg::Shell { id, .. }
            | ServerMsg::ShellList { id, .. }
            | ServerMsg::ShellHistory { id, .. } => {
                if let Some(p) = self.pending.remove(&id) {
                    reply(p.reply, Ok(msg));
                }
            }
            ServerMsg::Error { id, code, message, errno } => {
                let err = ClientError::Server { code, message, errno };
                match id.and_then(|id| self.pending.remove(&id)) {
                    Some(p) => {
                        if let Some(command) = p.resume {
                            // The command is gone (removed, TTL expired).
                            tracing::warn!(%command, "cannot resume: {err}");
                            if let Some(w) = self.watches.remove(&command) {
                                let _ = w.tx.send(Delivery { ev: Err(err.clone()), at: w.next });
                            }
                        }
                        // A repeated kill or remove that finds its work done.
                        let done_before = p.repeated
                            && matches!(
                                (&p.again, code),
                                (Some(ClientMsg::Kill { .. }), ErrorCode::NotRunning)
                                    | (
                                        Some(ClientMsg::Remove { .. } | ClientMsg::ShellClose { .. }),
                                        ErrorCode::NotFound
                                    )
                            );
                        if done_before {
                            let id = id.unwrap_or_default();
                            reply(p.reply, Ok(ServerMsg::Ok { id }));
                            return Ok(());
                        }
                        if let Some(tx) = p.watch {
                            let _ = tx.send(Delivery { ev: Err(err.clone()), at: [0, 0] });
                        }
                        reply(p.reply, Err(err));
                    }
                    None => {
                        if code != ErrorCode::NotFound {
                            tracing::warn!("daemon error: {err}");
                        }
                    }
                }
            }
        }
        Ok(())
    }

    async fn deliver_output(
        &mut self,
        ws: &mut Ws,
        command: CommandId,
        stream: Stream,
        offset: u64,
        mut data: Bytes,
    ) -> Result<(), tungstenite::Error> {
        let Some(w) = self.watches.get_mut(&command) else {
            return Ok(());
        };
        let i = stream.index();
        let end = offset + data.len() as u64;
        if end <= w.next[i] {
            return Ok(()); // already delivered before a reconnect
        }
        if offset > w.next[i] {
            // Bytes missing without a gap frame: say so rather than hide it.
            let ev = ExecEvent::Gap { stream, from: w.next[i], to: offset };
            w.next[i] = offset;
            self.deliver(ws, &command, ev).await?;
        } else {
            data = data.slice((w.next[i] - offset) as usize..);
        }
        let Some(w) = self.watches.get_mut(&command) else {
            return Ok(());
        };
        w.next[i] = end;
        let ev = match stream {
            Stream::Stdout => ExecEvent::Stdout(data),
            Stream::Stderr => ExecEvent::Stderr(data),
        };
        self.deliver(ws, &command, ev).await
    }

    /// The caller dropped its execution: detach from the command.
    async fn unwatch(&mut self, ws: &mut Ws, command: CommandId) -> Result<(), tungstenite::Error> {
        self.watches.remove(&command);
        let id = ReqId(self.next_internal);
        self.next_internal += 1;
        send(ws, &ClientMsg::Detach { id, command }).await
    }
}

/// Whether a request can be sent again after a drop without doing twice
/// what it asks: keyed starts and numbered stdin (the daemon recognises the
/// repeat), and requests that mean the same the second time. A signal, an
/// unkeyed start or an unnamed shell would happen twice: they fail instead.
fn retryable(msg: &ClientMsg) -> bool {
    match msg {
        ClientMsg::Start { spec, .. } => spec.request_key.is_some(),
        ClientMsg::ShellRun { spec, .. } => spec.request_key.is_some(),
        ClientMsg::ShellCreate { spec, .. } => spec.name.is_some(),
        ClientMsg::Stdin { writer, offset, .. } | ClientMsg::CloseStdin { writer, offset, .. } => {
            writer.is_some() && offset.is_some()
        }
        ClientMsg::Attach { .. }
        | ClientMsg::Detach { .. }
        | ClientMsg::Resize { .. }
        | ClientMsg::Kill { .. }
        | ClientMsg::Remove { .. }
        | ClientMsg::List { .. }
        | ClientMsg::Status { .. }
        | ClientMsg::ShellList { .. }
        | ClientMsg::ShellHistory { .. }
        | ClientMsg::ShellClose { .. } => true,
        ClientMsg::Signal { .. } | ClientMsg::Ack { .. } => false,
    }
}

fn fail(p: Pending, e: &ClientError) {
    if let Some(tx) = p.watch {
        let _ = tx.send(Delivery { ev: Err(e.clone()), at: [0, 0] });
    }
    reply(p.reply, Err(e.clone()));
}

fn reply(r: Option<Reply>, v: Result<ServerMsg, ClientError>) {
    if let Some(r) = r {
        let _ = r.send(v);
    }
}

async fn send(ws: &mut Ws, msg: &ClientMsg) -> Result<(), tungstenite::Error> {
    ws.send(Message::Binary(proto::encode(msg, proto::Encoding::MsgPack).into())).await
}

/// The WebSocket URL for a daemon URL: `http://h:p` -> `ws://h:p/v1/ws`.
pub(crate) fn ws_url(url: &str) -> Result<String, ClientError> {
    let bad = |why: &str| ClientError::BadUrl { url: url.to_owned(), why: why.to_owned() };
    let mut u = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    let scheme = match u.scheme() {
        "http" | "ws" => "ws",
        "https" | "wss" => "wss",
        _ => return Err(bad("scheme must be http, https, ws or wss")),
    };
    u.set_scheme(scheme).map_err(|()| bad("cannot set scheme"))?;
    if u.path() == "/" || u.path().is_empty() {
        u.set_path("/v1/ws");
    }
    Ok(u.to_string())
}

/// Opens a connection and waits for the daemon's `hello`.
pub(crate) async fn connect(url: &str, token: &str, opts: &ClientOptions) -> Result<Ws, ClientError> {
    let conn_err = |why: String| ClientError::Connect { url: url.to_owned(), why };
    let mut req = url.into_client_request().map_err(|e| conn_err(e.to_string()))?;
    let auth = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| ClientError::BadUrl { url: url.to_owned(), why: "token is not header-safe".into() })?;
    req.headers_mut().insert(header::AUTHORIZATION, auth);
    req.headers_mut()
        .insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(proto::SUBPROTOCOL_MSGPACK));
    let mut cfg = WebSocketConfig::default();
    cfg.max_message_size = Some(64 << 20);
    cfg.max_frame_size = Some(64 << 20);
    let fut = tokio_tungstenite::connect_async_with_config(req, Some(cfg), true);
    let (mut ws, _) = match tokio::time::timeout(opts.connect_timeout, fut).await {
        Err(_) => return Err(conn_err("timed out".into())),
        Ok(Err(tungstenite::Error::Http(resp))) => {
            return Err(match resp.status() {
                StatusCode::UNAUTHORIZED => ClientError::Unauthorized,
                StatusCode::FORBIDDEN => ClientError::Forbidden,
                s => conn_err(format!("HTTP {s}")),
            });
        }
        Ok(Err(e)) => return Err(conn_err(e.to_string())),
        Ok(Ok(x)) => x,
    };
    let hello = tokio::time::timeout(opts.connect_timeout, ws.next()).await;
    match hello {
        Ok(Some(Ok(Message::Binary(b)))) => match proto::decode::<ServerMsg>(&b, proto::Encoding::MsgPack) {
            Ok(ServerMsg::Hello { version, .. }) if version == proto::PROTOCOL_VERSION => Ok(ws),
            Ok(ServerMsg::Hello { version, .. }) => {
                Err(ClientError::Protocol(format!("daemon speaks protocol v{version}")))
            }
            _ => Err(ClientError::Protocol("first frame is not hello".into())),
        },
        Err(_) => Err(conn_err("no hello from the daemon".into())),
        Ok(_) => Err(conn_err("connection closed before hello".into())),
    }
}

/// A default `Duration` for options.
pub(crate) const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}
