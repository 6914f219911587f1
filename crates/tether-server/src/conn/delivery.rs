//! [`Delivery`]: pacing a client that acknowledges nothing (the LangSmith
//! dialect) by what its connection's socket delivered, not by what its
//! subscription read.
//!
//! What an attachment reads goes into the writer's queue, then into the
//! socket's send buffer (autotuned to several MiB on loopback), then over
//! the network. A connection that drops loses all of that, and the client,
//! which cannot acknowledge, comes back from what it got: the ring must
//! still hold it. So the writer task marks each flush with the output
//! offsets of the last frame it carried and the socket's byte count then
//! ([`Delivery::flushed`]); [`Delivery::follow`] asks the socket how much
//! its peer's TCP acknowledged ([`Wire::delivered`]) and hands on the
//! offsets of the marks that covers, which the attachment's pacer follows.
//! What a proxy on the path holds is still unknown: the pacer keeps half
//! the ring behind it for that.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::wire::Wire;

/// Most marks held: past it the latest replaces the last (a coarser mark,
/// later, never early), so a client that takes nothing costs a bounded
/// amount however many small frames it is sent.
const MAX_MARKS: usize = 1024;

/// The first wait before asking the socket again while marks are pending,
/// doubled while nothing more is acknowledged, up to [`POLL_MAX`].
const POLL_FIRST: Duration = Duration::from_millis(1);

/// The longest wait between asks (a stalled peer).
const POLL_MAX: Duration = Duration::from_millis(50);

/// One connection's flushes not yet acknowledged, oldest first.
pub(crate) struct Delivery {
    wire: Arc<Wire>,
    /// A std lock: held for a few deque operations, never across `.await`.
    marks: Mutex<VecDeque<Mark>>,
    flushed: Notify,
}

/// A flush: the socket's byte count after it, and the output offsets of
/// the last frame it carried.
#[derive(Clone, Copy, Debug)]
struct Mark {
    end: u64,
    offsets: [u64; 2],
}

impl Delivery {
    pub(crate) fn new(wire: Arc<Wire>) -> Arc<Delivery> {
        Arc::new(Delivery { wire, marks: Mutex::default(), flushed: Notify::new() })
    }

    fn marks(&self) -> std::sync::MutexGuard<'_, VecDeque<Mark>> {
        self.marks.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The writer flushed: everything it wrote, up to the frame that ended
    /// at these output offsets, is in the socket.
    pub(crate) fn flushed(&self, offsets: [u64; 2]) {
        let mark = Mark { end: self.wire.written(), offsets };
        let mut marks = self.marks();
        if marks.len() >= MAX_MARKS {
            marks.pop_back();
        }
        marks.push_back(mark);
        drop(marks);
        self.flushed.notify_one();
    }

    /// The latest offsets whose frames the peer's TCP has acknowledged,
    /// if any more have been since the last call.
    fn take_delivered(&self, delivered: u64) -> Option<[u64; 2]> {
        let mut marks = self.marks();
        let mut last = None;
        while let Some(m) = marks.front().filter(|m| m.end <= delivered) {
            last = Some(m.offsets);
            marks.pop_front();
        }
        last
    }

    /// Calls `on` with the output offsets delivered, as the socket's peer
    /// acknowledges them; returns once the socket has closed (seen when a
    /// flush is pending; the attachment's end aborts it in any case). Asks
    /// the socket only while flushes are pending: soon after each, then
    /// less often while the peer takes nothing.
    pub(crate) async fn follow(&self, mut on: impl FnMut([u64; 2])) {
        let mut wait = POLL_FIRST;
        loop {
            if self.marks().is_empty() {
                self.flushed.notified().await;
                wait = POLL_FIRST;
            }
            let Some(delivered) = self.wire.delivered() else { return };
            match self.take_delivered(delivered) {
                Some(offsets) => {
                    on(offsets);
                    wait = POLL_FIRST;
                }
                None => wait = (wait * 2).min(POLL_MAX),
            }
            if !self.marks().is_empty() {
                tokio::time::sleep(wait).await;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::wire::Counted;

    async fn pair() -> (Counted, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        (Counted::new(listener.accept().await.unwrap().0), peer)
    }

    #[tokio::test]
    async fn a_mark_is_delivered_once_every_byte_before_it_is() {
        let (mut io, _peer) = pair().await;
        let d = Delivery::new(io.wire());
        io.write_all(&[1; 1000]).await.unwrap();
        d.flushed([10, 0]);
        io.write_all(&[1; 1000]).await.unwrap();
        d.flushed([20, 5]);
        assert_eq!(d.take_delivered(999), None);
        assert_eq!(d.take_delivered(1000), Some([10, 0]));
        assert_eq!(d.take_delivered(1000), None, "handed on once");
        assert_eq!(d.take_delivered(5000), Some([20, 5]));
    }

    #[tokio::test]
    async fn marks_past_the_bound_coarsen_never_early() {
        let (mut io, _peer) = pair().await;
        let d = Delivery::new(io.wire());
        for i in 0..MAX_MARKS as u64 + 10 {
            io.write_all(&[1; 10]).await.unwrap();
            d.flushed([i, 0]);
        }
        assert_eq!(d.marks().len(), MAX_MARKS);
        // The last mark carries the latest offsets at the latest end.
        let last = *d.marks().back().unwrap();
        assert_eq!((last.end, last.offsets), ((MAX_MARKS as u64 + 10) * 10, [MAX_MARKS as u64 + 9, 0]));
        // Marks before the merge are exact.
        assert_eq!(d.take_delivered(100), Some([9, 0]));
    }

    #[tokio::test]
    async fn follow_hands_on_what_the_peer_took_and_ends_with_the_socket() {
        let (mut io, mut peer) = pair().await;
        let d = Delivery::new(io.wire());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let follower = tokio::spawn({
            let d = d.clone();
            async move { d.follow(|at| tx.send(at).unwrap()).await }
        });
        io.write_all(&[1; 70_000]).await.unwrap();
        d.flushed([70_000, 0]);
        let mut got = vec![0; 70_000];
        peer.read_exact(&mut got).await.unwrap();
        let at = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap();
        assert_eq!(at, Some([70_000, 0]));
        // The socket gone, the next mark ends the follower.
        drop(io);
        d.flushed([70_010, 0]);
        tokio::time::timeout(Duration::from_secs(10), follower).await.unwrap().unwrap();
    }
}
