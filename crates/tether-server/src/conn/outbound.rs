//! The sending half of a WebSocket: one writer task that owns the sink and
//! drains one bounded queue of frames, for every kind of connection (the
//! native protocol and the dialects).
//!
//! - **Bounded**: at most `queue` frames wait; a producer that finds the
//!   queue full waits for room, at most the send timeout, then the peer
//!   counts as gone ([`OutTx::send`] fails and [`Outbound::dead`] fires).
//! - **Pings jump the queue**: a ping is a flag the writer checks before
//!   every frame, so a peer that is busy receiving a flood still gets pinged
//!   (and its pongs keep it alive) instead of being dropped as silent.
//! - **Send timeout**: a write or flush that does not complete within the
//!   send timeout (a half-open peer whose socket buffers are full) ends the
//!   writer; [`Outbound::dead`] fires, so the connection's read loop ends
//!   too and its attachments detach.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message};
use futures_util::{Sink, SinkExt};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument;

use super::Delivery;

/// What the writer sends.
enum Out {
    /// A frame, and for output tracked by a [`Delivery`], the output
    /// offsets it ends at.
    Frame(Message, Option<[u64; 2]>),
    Close(u16, &'static str),
}

/// Bytes of tracked output the writer sends before it flushes (and marks)
/// even with more queued, so that a [`Delivery`] hears of a busy stream.
const MARK_EVERY: usize = 256 << 10;

/// The peer took no frame within the send timeout, or the socket failed.
#[derive(Debug)]
pub(crate) struct Gone;

/// A connection's writer task and its queue.
pub(crate) struct Outbound {
    tx: OutTx,
    ping: Arc<Notify>,
    task: JoinHandle<()>,
}

/// A cloneable producer handle to a connection's queue.
#[derive(Clone)]
pub(crate) struct OutTx {
    tx: mpsc::Sender<Out>,
    dead: CancellationToken,
    send_timeout: Duration,
}

impl Outbound {
    /// Spawns the writer task on `sink`, with room for `queue` frames.
    pub(crate) fn spawn<K>(sink: K, queue: usize, send_timeout: Duration) -> Outbound
    where
        K: Sink<Message, Error = axum::Error> + Send + Unpin + 'static,
    {
        Outbound::spawn_delivering(sink, queue, send_timeout, None)
    }

    /// [`Outbound::spawn`], telling `delivery` of each flush of frames
    /// sent with [`OutTx::send_marked`].
    pub(crate) fn spawn_delivering<K>(
        sink: K,
        queue: usize,
        send_timeout: Duration,
        delivery: Option<Arc<Delivery>>,
    ) -> Outbound
    where
        K: Sink<Message, Error = axum::Error> + Send + Unpin + 'static,
    {
        let (tx, rx) = mpsc::channel(queue.max(1));
        let ping = Arc::new(Notify::new());
        let dead = CancellationToken::new();
        let writer = Writer { ping: ping.clone(), dead: dead.clone(), send_timeout, delivery };
        let task = tokio::spawn(write_loop(sink, rx, writer).in_current_span());
        Outbound { tx: OutTx { tx, dead, send_timeout }, ping, task }
    }

    /// A producer handle.
    pub(crate) fn tx(&self) -> OutTx {
        self.tx.clone()
    }

    /// Sends a ping before the next queued frame.
    pub(crate) fn ping(&self) {
        self.ping.notify_one();
    }

    /// Cancelled once the writer has given up on the peer.
    pub(crate) fn dead(&self) -> CancellationToken {
        self.tx.dead.clone()
    }

    /// Queues a close frame after what is queued, waiting at most a second
    /// for room: a peer that is not reading gets no close frame, just a
    /// closed socket.
    pub(crate) async fn close(&self, code: u16, reason: &'static str) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.tx.tx.send(Out::Close(code, reason))).await;
    }

    /// Ends the writer once every producer is gone and the queue is
    /// flushed, or after two seconds (a peer that takes nothing).
    pub(crate) async fn finish(self) {
        let Outbound { tx, task, .. } = self;
        drop(tx);
        let mut task = AbortOnDropHandle::new(task);
        if tokio::time::timeout(Duration::from_secs(2), &mut task).await.is_err() {
            tracing::info!("peer not accepting data: dropping the socket");
        }
    }
}

impl OutTx {
    /// Queues a frame, waiting for room at most the send timeout.
    pub(crate) async fn send(&self, m: Message) -> Result<(), Gone> {
        self.queue(Out::Frame(m, None)).await
    }

    /// [`OutTx::send`] for a frame of output that ends at `offsets`: the
    /// writer's [`Delivery`], if it has one, hears of it once flushed.
    pub(crate) async fn send_marked(&self, m: Message, offsets: [u64; 2]) -> Result<(), Gone> {
        self.queue(Out::Frame(m, Some(offsets))).await
    }

    async fn queue(&self, out: Out) -> Result<(), Gone> {
        match tokio::time::timeout(self.send_timeout, self.tx.send(out)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Gone),
            Err(_) => {
                tracing::warn!("peer took no frame for {:?}: dropping it", self.send_timeout);
                self.dead.cancel();
                Err(Gone)
            }
        }
    }
}

/// What the writer task works with besides its sink and queue.
struct Writer {
    ping: Arc<Notify>,
    dead: CancellationToken,
    send_timeout: Duration,
    delivery: Option<Arc<Delivery>>,
}

async fn write_loop<K>(mut sink: K, mut rx: mpsc::Receiver<Out>, w: Writer)
where
    K: Sink<Message, Error = axum::Error> + Unpin,
{
    let Writer { ping, dead, send_timeout, delivery } = w;
    // The last tracked frame's offsets since the last flush, and the
    // tracked bytes fed since.
    let (mut mark, mut unflushed) = (None, 0);
    // Every socket operation is bounded by the send timeout: past it the
    // peer is half-open or not reading, and nothing more is sent.
    macro_rules! within {
        ($op:expr) => {
            match tokio::time::timeout(send_timeout, $op).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::debug!("send failed: {e}");
                    dead.cancel();
                    return;
                }
                Err(_) => {
                    tracing::warn!("a send took over {send_timeout:?}: dropping the peer");
                    dead.cancel();
                    return;
                }
            }
        };
    }
    loop {
        let out = tokio::select! {
            biased;
            () = ping.notified() => {
                within!(sink.send(Message::Ping(Default::default())));
                continue;
            }
            o = rx.recv() => o,
        };
        match out {
            None => break,
            Some(Out::Frame(m, offsets)) => {
                if offsets.is_some() && delivery.is_some() {
                    unflushed += match &m {
                        Message::Text(t) => t.len(),
                        Message::Binary(b) => b.len(),
                        _ => 0,
                    };
                    mark = offsets;
                }
                within!(sink.feed(m));
            }
            Some(Out::Close(code, reason)) => {
                let close = Message::Close(Some(CloseFrame { code, reason: reason.into() }));
                let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(close)).await;
                return;
            }
        }
        // Flush when the queue runs dry, so bursts go out in few syscalls.
        if rx.is_empty() || unflushed >= MARK_EVERY {
            within!(sink.flush());
            unflushed = 0;
            // Everything fed is in the socket now.
            if let (Some(d), Some(offsets)) = (&delivery, mark.take()) {
                d.flushed(offsets);
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
}
