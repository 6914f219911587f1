//! Attachments: subscribing a connection to a command's output, and the
//! forwarder task per attachment that turns its events into frames on the
//! connection's queue, within the client's window when it acknowledges.

use tether_exec::{CommandHandle, Event, ExecError, Subscription};
use tether_proto::{self as proto, CommandId, Encoding, ReqId, ServerMsg};
use tokio::sync::watch;
use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument;

use super::requests::{client_name, window};
use super::{Attachment, Conn, OutTx, PACE_LINGER, encode};
use crate::{Error, map};

impl Conn {
    /// Answers a start with `started` and forwards the attachment made with
    /// it, if any. The subscription was made before the command's first
    /// byte was read (a pacing one must hold the command back from its
    /// first byte), but forwarding starts only after `started` is queued,
    /// so it precedes every output frame. (An earlier attachment of this
    /// connection to the command, from a first try of a repeated start, is
    /// replaced.)
    pub(super) async fn started(
        &mut self,
        id: ReqId,
        h: &CommandHandle,
        sub: Option<Subscription>,
        window: Option<u64>,
        client: Option<String>,
    ) -> Result<Option<ServerMsg>, Error> {
        if sub.is_some() {
            self.end(h.id());
        }
        self.send(ServerMsg::Started { id, command: CommandId(h.id().to_owned()), pid: h.pid() }).await;
        if let Some(sub) = sub {
            self.forward(sub, window, client);
        }
        Ok(None)
    }

    /// Ends this connection's attachment to a command on the client's
    /// request (detach, or a new attachment replacing it): it stops pacing
    /// at once, where a lost connection's attachment lingers.
    pub(super) fn end(&mut self, command: &str) {
        if let Some(a) = self.attachments.remove(command)
            && let Some(p) = a.pacer
        {
            p.release();
        }
    }

    /// Attaches (replacing an earlier attachment of this connection to the
    /// same command): queues `attached`, then the forwarder's frames; or
    /// queues an error. Returns whether it attached.
    pub(super) async fn attach(&mut self, id: ReqId, command: CommandId, from: [u64; 2], how: How) -> bool {
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
                self.send(Error::from(e).into_native(Some(id))).await;
                false
            }
        }
    }

    /// Spawns the forwarder of a new attachment, flow-controlled by
    /// `window` bytes of unacknowledged output if given.
    pub(super) fn forward(&mut self, mut sub: Subscription, window: Option<u64>, client: Option<String>) {
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

/// How an `attach` wants to be attached.
#[derive(Default)]
pub(super) struct How {
    /// Start each stream at most this many bytes before its end.
    pub(super) tail: Option<u64>,
    /// Hold the command back rather than let this client fall behind.
    pub(super) pace: bool,
    /// On a terminal: the screen first, then output from its offset.
    pub(super) screen: bool,
    /// Resize the terminal to this first.
    pub(super) size: Option<tether_exec::TermSize>,
    /// Flow control: at most this many unacknowledged bytes.
    pub(super) window: Option<u64>,
    /// The client's name, for a pacer that outlives the connection.
    pub(super) client: Option<String>,
}

impl How {
    /// An `attach` request's options, checked.
    pub(super) fn checked(
        tail: Option<u64>,
        pace: bool,
        screen: bool,
        size: Option<proto::TermSize>,
        window_bytes: Option<u64>,
        client: Option<String>,
    ) -> Result<How, Error> {
        let window = window(window_bytes)?;
        let client = client_name(client)?;
        let size = size.map(map::size_from_wire);
        Ok(How { tail, pace, screen, size, window, client })
    }
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
