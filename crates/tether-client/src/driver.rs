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
//!
//! # Layout
//! - this file: the driver's state and its loop: reconnect and resume.
//! - `requests`: sending requests and the bookkeeping of their replies.
//! - `frames`: routing the daemon's frames to requests and executions.
//! - `connect`: opening a connection and sending a frame.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use tether_proto::{ClientMsg, CommandId, ReqId, ServerMsg, TermSize};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::client::{ClientOptions, Connection, ExecEvent};
use crate::error::ClientError;

mod connect;
mod frames;
mod requests;

use connect::send;
pub(crate) use connect::{connect, secs, ws_url};
use requests::fail;

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
                None => match self.reopen(&mut lost, &mut queued, &mut last_rx).await {
                    ControlFlow::Break(()) => return,
                    ControlFlow::Continue(ws) => {
                        conn = ws;
                        continue;
                    }
                },
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

    /// Without a connection: reconnects and resumes, but only when someone
    /// needs the connection (a watch, a request to repeat or a new one).
    /// `Break` when every client is gone; `Continue` with the resumed
    /// connection, or `None` to go round again (the resume failed, or
    /// reconnecting gave up and everyone waiting was told).
    async fn reopen(
        &mut self,
        lost: &mut Lost,
        queued: &mut Option<Cmd>,
        last_rx: &mut Instant,
    ) -> ControlFlow<(), Option<Ws>> {
        if self.watches.is_empty() && self.again.is_empty() && queued.is_none() {
            match self.rx.recv().await {
                None => return ControlFlow::Break(()),
                Some(c) => *queued = Some(c),
            }
        }
        match self.reconnect(lost).await {
            Ok(mut ws) => {
                *last_rx = Instant::now();
                if self.resume(&mut ws).await.is_ok() {
                    return ControlFlow::Continue(Some(ws));
                }
                ControlFlow::Continue(self.lose(Lost::Error, lost))
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
                ControlFlow::Continue(None)
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
}
