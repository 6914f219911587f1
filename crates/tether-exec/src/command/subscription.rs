//! [`Subscription`]: one reader's offsets into a command's rings, and the
//! pacing reference of a client that acknowledges what it takes.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::ring::Read;

use super::shared::{Output, Shared};
use super::{Event, Stream};

/// One client's view of a command's output: its own offsets into the
/// command's rings. Holding one counts as "attached"; dropping it detaches.
/// It holds no buffered data of its own: a reader that falls behind the ring
/// gets a [`Event::Gap`], so its memory is bounded by nothing but offsets.
pub struct Subscription {
    pub(super) shared: Arc<Shared>,
    pub(super) next: [u64; 2],
    pub(super) rx: watch::Receiver<u64>,
    pub(super) done: bool,
    /// Whether this subscription paces the command.
    pub(super) pace: bool,
    /// Its number among the command's subscriptions (pacer bookkeeping).
    pub(super) number: u64,
    /// How many terminal size changes it has reported.
    pub(super) sizes_seen: u64,
    /// Pacing goes on this long after it is dropped.
    pub(super) linger: Option<Duration>,
    /// What its pacer follows.
    pub(super) follows: Follows,
}

/// What a pacing subscription's pacer follows.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Follows {
    /// What it reads. Once dropped, a lingering one holds from the oldest
    /// byte the rings have: what it read may not have reached its client.
    Reads,
    /// What its client acknowledged ([`PaceRef::ack`]), and from there
    /// once dropped.
    Acks,
    /// What its connection delivered ([`PaceRef::ack`] from the socket):
    /// once dropped, from the oldest byte, as for `Reads` (delivered to a
    /// proxy is not delivered to the client).
    Delivery,
}

/// A pacing subscription's pacer, advanced by its client's
/// acknowledgements (see [`Subscription::pace_by_acks`]).
#[derive(Clone, Debug)]
pub struct PaceRef {
    pub(super) shared: std::sync::Weak<Shared>,
    pub(super) number: u64,
}

impl PaceRef {
    /// The client has taken the output up to these offsets: the command may
    /// run half a ring past them.
    pub fn ack(&self, offsets: [u64; 2]) {
        let Some(shared) = self.shared.upgrade() else { return };
        let mut out = shared.output();
        let ends = out.ends();
        out.pacing.ack(self.number, offsets, ends);
        drop(out);
        shared.pacer_moved.notify_one();
    }

    /// Stops pacing at once (the client detached: it will not come back
    /// for these bytes).
    pub fn release(&self) {
        let Some(shared) = self.shared.upgrade() else { return };
        shared.output().pacing.remove(self.number);
        shared.pacer_moved.notify_one();
    }
}

pub(super) fn subscribe(shared: &Arc<Shared>, from: [u64; 2], pace: bool) -> Subscription {
    let shared = shared.clone();
    let number = shared.next_subscription.fetch_add(1, Ordering::Relaxed);
    if pace {
        shared.output().pacing.add(number, from);
        shared.pacer_moved.notify_one();
    }
    shared.attached.fetch_add(1, Ordering::SeqCst);
    shared.ever_attached.store(true, Ordering::SeqCst);
    shared.attach_changed.notify_one();
    let rx = shared.changed.subscribe();
    Subscription {
        rx,
        shared,
        next: from,
        done: false,
        pace,
        number,
        sizes_seen: 0,
        linger: None,
        follows: Follows::Reads,
    }
}

impl Subscription {
    /// The command id.
    pub fn id(&self) -> &str {
        &self.shared.ident.id
    }

    /// The next offset this subscription will deliver, per stream.
    pub fn offsets(&self) -> [u64; 2] {
        self.next
    }

    /// For a client that acknowledges what it takes (flow control): from
    /// now on this pacing subscription holds the command back to the
    /// offsets the returned [`PaceRef`] is told, not to what it reads, so
    /// the bytes in flight to the client stay in the ring; when dropped it
    /// goes on pacing from there for `linger` (its client reconnects and
    /// attaches again), unless [`PaceRef::release`]d first. A `name` (the
    /// client's) replaces the pacers of older attachments of that name, on
    /// any connection (one that died without the daemon knowing yet).
    /// `None` for a subscription that does not pace.
    pub fn pace_by_acks(&mut self, name: Option<String>, linger: Duration) -> Option<PaceRef> {
        if !self.pace {
            return None;
        }
        let number = self.number;
        let mut out = self.shared.output();
        out.pacing.name(number, name);
        out.pacing.hold_when_gone(number, linger, false);
        drop(out);
        self.shared.pacer_moved.notify_one();
        self.follows = Follows::Acks;
        self.linger = Some(linger);
        Some(PaceRef { shared: Arc::downgrade(&self.shared), number })
    }

    /// For a client that acknowledges nothing, whose connection can tell
    /// what its peer took: from now on this pacing subscription holds the
    /// command back to the offsets the returned [`PaceRef`] is told (what
    /// the socket delivered), not to what it reads, so that what sits in
    /// the daemon's queues and socket buffers stays in the ring. Lingering
    /// ([`CommandHandle::attach_lingering`](super::CommandHandle::attach_lingering))
    /// still holds from the oldest byte once dropped. `None` for a
    /// subscription that does not pace.
    pub fn pace_by_delivery(&mut self) -> Option<PaceRef> {
        if !self.pace {
            return None;
        }
        self.follows = Follows::Delivery;
        Some(PaceRef { shared: Arc::downgrade(&self.shared), number: self.number })
    }

    /// The next event: output (at most `max` bytes), a gap, or the exit;
    /// `None` after the exit. Cancel-safe.
    pub async fn next(&mut self, max: usize) -> Option<Event> {
        loop {
            if self.done {
                return None;
            }
            self.rx.borrow_and_update();
            if let Some(ev) = self.poll_once(max.max(1)) {
                return Some(ev);
            }
            if self.rx.changed().await.is_err() {
                return None;
            }
        }
    }

    pub(super) fn poll_once(&mut self, max: usize) -> Option<Event> {
        let mut out = self.shared.output();
        if let Some((size, n)) = out.size.filter(|&(_, n)| n != self.sizes_seen && !self.done) {
            self.sizes_seen = n;
            return Some(Event::Resized(size));
        }
        let ev = read_locked(&mut self.next, &mut self.done, &out, max);
        if let Some(Event::Gap { requested, first_held, .. }) = &ev {
            metrics::counter!("tether_gaps_total").increment(1);
            metrics::counter!("tether_gap_bytes_total").increment(first_held - requested);
        }
        if self.pace
            && self.follows == Follows::Reads
            && matches!(ev, Some(Event::Output { .. } | Event::Gap { .. }))
        {
            out.pacing.advance(self.number, self.next);
            drop(out);
            self.shared.pacer_moved.notify_one();
        }
        ev
    }
}

/// One event for a reader at `next` (advanced past it), under the lock.
pub(super) fn read_locked(next: &mut [u64; 2], done: &mut bool, out: &Output, max: usize) -> Option<Event> {
    let mut best: Option<(u64, usize, Bytes)> = None;
    let mut seqs = [u64::MAX; 2];
    #[allow(clippy::needless_range_loop)] // `i` names the stream too
    for i in 0..2 {
        match out.rings[i].read(next[i], max) {
            Read::Gap { first_held } => {
                let requested = next[i];
                next[i] = first_held;
                return Some(Event::Gap { stream: Stream::from_index(i), requested, first_held });
            }
            Read::Data { seq, data } => {
                seqs[i] = seq;
                if best.as_ref().is_none_or(|b| seq < b.0) {
                    best = Some((seq, i, data));
                }
            }
            Read::Pending => {}
        }
    }
    if let Some((_, i, mut data)) = best {
        // Join what follows in the same stream, up to the other stream's
        // next chunk: fewer, larger frames, same order.
        if data.len() < max {
            data = out.rings[i].extend_read(next[i], data, max, seqs[1 - i]);
        }
        let offset = next[i];
        next[i] += data.len() as u64;
        return Some(Event::Output { stream: Stream::from_index(i), offset, data });
    }
    if let Some(exit) = &out.exit {
        *done = true;
        return Some(Event::Exit(exit.clone()));
    }
    None
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if self.pace {
            let mut out = self.shared.output();
            match self.linger {
                Some(d) => {
                    // What this subscription read (or its socket delivered)
                    // may not have reached its client (socket buffers, a
                    // proxy): hold everything the rings still have, not
                    // just what follows; or, paced by acknowledgements,
                    // hold from what the client took.
                    let held = [out.rings[0].first_held(), out.rings[1].first_held()];
                    let from = (self.follows != Follows::Acks).then_some(held);
                    out.pacing.linger(self.number, Instant::now() + d, from);
                }
                None => out.pacing.remove(self.number),
            }
            drop(out);
            self.shared.pacer_moved.notify_one();
        }
        self.shared.attached.fetch_sub(1, Ordering::SeqCst);
        self.shared.attach_changed.notify_one();
    }
}
