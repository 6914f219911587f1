//! Pacing: the readers a command waits for (a pacing subscription, or a
//! lingering one whose client is away), and all the arithmetic of how far
//! the command may run ahead of them.

use std::time::Duration;

use tokio::time::Instant;

use crate::ring::Ring;

/// A paced stream is not read while less than this much room is left.
pub(crate) const MIN_PACED_READ: u64 = 1024;

/// Most bytes a terminal's screen model may be behind the ring before the
/// actor stops reading the terminal.
pub(crate) const MODEL_MAX_LAG: usize = 512 * 1024;

/// Charged per chunk handed to the screen model, so many tiny chunks count
/// too.
pub(crate) const MODEL_CHUNK_CHARGE: usize = 64;

/// The pacing readers of one command.
#[derive(Default)]
pub(crate) struct Pacing {
    pacers: Vec<Pacer>,
    /// The command is being killed: nothing holds its output back any
    /// more (see [`Pacing::release`]).
    released: bool,
}

/// A reader the command waits for.
struct Pacer {
    /// Its subscription's number.
    number: u64,
    /// The next offsets it will read (or, paced by acknowledgements, the
    /// offsets its client has taken).
    next: [u64; 2],
    /// A lingering pacer's subscription has gone: it holds the command back
    /// until then, for its client to come back (see
    /// [`CommandHandle::attach_lingering`](super::CommandHandle::attach_lingering)).
    until: Option<Instant>,
    /// The client's name: a newer pacer of the same name replaces it.
    name: Option<String>,
    /// How long it holds the command once its subscription has gone, and
    /// from where: a handover carries a live pacer as a lingering one for
    /// this long, since the restart is about to close its connection.
    linger: Option<Linger>,
}

/// How a pacer holds the command once its subscription has gone.
#[derive(Clone, Copy)]
struct Linger {
    /// For this long.
    time: Duration,
    /// From the oldest byte the rings hold (a client that cannot notice a
    /// gap: what was read may not have reached it), not from its `next`
    /// (paced by acknowledgements: what its client took).
    from_oldest: bool,
}

impl Pacing {
    /// Lingering pacers handed over by a previous daemon: their next
    /// offsets and how long each still holds the command. Numbered from
    /// the top, clear of the new subscriptions' numbers.
    pub(crate) fn thaw(lingering: Vec<([u64; 2], Duration)>, now: Instant) -> Pacing {
        let pacers = lingering
            .into_iter()
            .zip((0..u64::MAX).rev())
            .map(|((next, left), number)| Pacer {
                number,
                next,
                until: Some(now + left),
                name: None,
                linger: None,
            })
            .collect();
        Pacing { pacers, released: false }
    }

    /// The pacers to carry over a handover: next offsets and how long each
    /// still holds the command. A lingering one keeps its time left; a live
    /// one that lingers when its subscription goes (its connection is about
    /// to be closed by the restart) holds for its whole linger, from what
    /// its client acknowledged or from `oldest` (the rings' first held
    /// bytes), until its client re-attaches to the next daemon.
    pub(crate) fn freeze(&self, now: Instant, oldest: [u64; 2]) -> Vec<([u64; 2], Duration)> {
        self.pacers
            .iter()
            .filter_map(|p| match (p.until, p.linger) {
                (Some(until), _) => Some((p.next, until.saturating_duration_since(now))),
                (None, Some(l)) => Some((if l.from_oldest { oldest } else { p.next }, l.time)),
                (None, None) => None,
            })
            .collect()
    }

    /// A new pacing reader at `from`. It is the lingering ones' client back
    /// (or one that replaces them): they stop holding the command.
    pub(crate) fn add(&mut self, number: u64, from: [u64; 2]) {
        if self.released {
            return;
        }
        self.pacers.retain(|p| p.until.is_none());
        self.pacers.push(Pacer { number, next: from, until: None, name: None, linger: None });
    }

    /// Reader `number` has read up to `next`.
    pub(crate) fn advance(&mut self, number: u64, next: [u64; 2]) {
        if let Some(p) = self.get(number) {
            p.next = next;
        }
    }

    /// Reader `number`'s client has taken the output up to `offsets`
    /// (never past `ends`, never backwards).
    pub(crate) fn ack(&mut self, number: u64, offsets: [u64; 2], ends: [u64; 2]) {
        if let Some(p) = self.get(number) {
            p.next = [0, 1].map(|i| p.next[i].max(offsets[i].min(ends[i])));
        }
    }

    /// Reader `number` holds the command for `time` once its subscription
    /// has gone, from its own offsets (paced by acknowledgements) or from
    /// the oldest held byte (see [`Pacing::freeze`]).
    pub(crate) fn hold_when_gone(&mut self, number: u64, time: Duration, from_oldest: bool) {
        if let Some(p) = self.get(number) {
            p.linger = Some(Linger { time, from_oldest });
        }
    }

    /// Names reader `number` after its client: the pacers of older
    /// attachments of that name stop holding the command.
    pub(crate) fn name(&mut self, number: u64, name: Option<String>) {
        if let Some(name) = &name {
            self.pacers.retain(|p| p.number == number || p.name.as_ref() != Some(name));
        }
        if let Some(p) = self.get(number) {
            p.name = name;
        }
    }

    /// Reader `number` stops pacing.
    pub(crate) fn remove(&mut self, number: u64) {
        self.pacers.retain(|p| p.number != number);
    }

    /// Reader `number` has gone, but holds the command until `until`,
    /// from `from` if given (else from where it was).
    pub(crate) fn linger(&mut self, number: u64, until: Instant, from: Option<[u64; 2]>) {
        if let Some(p) = self.get(number) {
            p.until = Some(until);
            if let Some(from) = from {
                p.next = from;
            }
        }
    }

    /// When the first lingering pacer stops holding the command.
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.pacers.iter().filter_map(|p| p.until).min()
    }

    /// The command is being killed: its pacers stop holding it, so that
    /// what its dead processes left in the pipes is read (and the exit
    /// sent) without waiting for a stalled or absent reader. A reader that
    /// far behind gets a gap, as for any unpaced command.
    pub(crate) fn release(&mut self) {
        self.released = true;
        self.pacers.clear();
    }

    /// Drops the lingering pacers whose time is up.
    pub(crate) fn expire(&mut self, now: Instant) {
        self.pacers.retain(|p| p.until.is_none_or(|u| u > now));
    }

    /// Bytes stream `i` may still take before a pacing reader's unread data
    /// would be evicted from `ring` (`None`: no pacer, no limit). Half the
    /// ring is kept as headroom for the per-chunk accounting.
    pub(crate) fn room(&self, ring: &Ring, i: usize, now: Instant) -> Option<u64> {
        if self.released {
            return None;
        }
        let live = self.pacers.iter().filter(|p| p.until.is_none_or(|u| u > now));
        let slowest = live.map(|p| p.next[i]).min()?;
        // Counted as the ring charges it (bytes plus per-chunk overhead),
        // so many tiny chunks cannot evict unread data either.
        let unread = ring.charged_from(slowest) as u64;
        Some((ring.cap() as u64 / 2).saturating_sub(unread))
    }

    fn get(&mut self, number: u64) -> Option<&mut Pacer> {
        self.pacers.iter_mut().find(|p| p.number == number)
    }
}

/// Bytes a terminal's stdout may still take while its screen model is
/// `lag` behind.
pub(crate) fn model_room(lag: usize) -> u64 {
    MODEL_MAX_LAG.saturating_sub(lag) as u64
}

/// Whether the screen model, having parsed `charge` more of the `before`
/// it lagged, has just come back under half its allowance (the actor,
/// stalled on it, is woken then).
pub(crate) fn model_caught_up(before: usize, charge: usize) -> bool {
    before > MODEL_MAX_LAG / 2 && before - charge <= MODEL_MAX_LAG / 2
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn ring_with(cap: usize, bytes: usize) -> Ring {
        let mut r = Ring::new(cap);
        r.push(Bytes::from(vec![b'x'; bytes]), 0);
        r
    }

    #[test]
    fn without_pacers_there_is_no_limit() {
        let p = Pacing::default();
        assert_eq!(p.room(&ring_with(4096, 100), 0, Instant::now()), None);
    }

    #[test]
    fn room_is_half_the_ring_less_the_slowest_readers_unread_bytes() {
        let ring = ring_with(1 << 16, 10_000);
        let mut p = Pacing::default();
        p.add(1, [0, 0]);
        p.add(2, [4_000, 0]);
        let room = p.room(&ring, 0, Instant::now()).expect("a pacer limits");
        // The slowest reader has not read anything: all 10,000 bytes (plus
        // the chunk's charge) are unread.
        let unread = ring.charged_from(0) as u64;
        assert!(unread >= 10_000);
        assert_eq!(room, (1 << 15) - unread);
        p.advance(1, [10_000, 0]);
        // Now the other one is the slowest.
        assert_eq!(p.room(&ring, 0, Instant::now()), Some((1 << 15) - ring.charged_from(4_000) as u64));
        p.remove(2);
        assert_eq!(p.room(&ring, 0, Instant::now()), Some(1 << 15));
    }

    #[test]
    fn a_reader_far_behind_leaves_no_room() {
        let ring = ring_with(4096, 3000);
        let mut p = Pacing::default();
        p.add(1, [0, 0]);
        assert_eq!(p.room(&ring, 0, Instant::now()), Some(0));
    }

    #[test]
    fn acknowledgements_never_go_backwards_or_past_the_end() {
        let mut p = Pacing::default();
        p.add(1, [10, 10]);
        p.ack(1, [5, 500], [100, 100]);
        assert_eq!(p.pacers[0].next, [10, 100]);
    }

    #[test]
    fn a_handover_carries_live_lingering_pacers_as_lingering_ones() {
        let now = Instant::now();
        let mut p = Pacing::default();
        p.add(1, [10, 0]);
        p.add(2, [20, 0]);
        p.hold_when_gone(2, Duration::from_secs(20), false);
        p.add(3, [30, 0]);
        p.hold_when_gone(3, Duration::from_secs(20), false);
        p.add(4, [40, 0]);
        p.hold_when_gone(4, Duration::from_secs(20), true);
        // (A new pacer ends the lingering ones: 3 lingers from here on.)
        p.linger(3, now + Duration::from_secs(5), None);
        // 1 paces by what it read (its subscription ends with it); 2 is
        // live, paced by acknowledgements; 3 already lingers; 4 is live and
        // cannot notice a gap: it holds from the oldest byte.
        let frozen = p.freeze(now, [7, 0]);
        assert_eq!(
            frozen,
            vec![
                ([20, 0], Duration::from_secs(20)),
                ([30, 0], Duration::from_secs(5)),
                ([7, 0], Duration::from_secs(20))
            ]
        );
    }

    #[test]
    fn lingering_pacers_hold_until_they_expire_or_their_client_returns() {
        let now = Instant::now();
        let mut p = Pacing::default();
        p.add(1, [50, 0]);
        p.linger(1, now + Duration::from_secs(5), Some([0, 0]));
        assert_eq!(p.pacers[0].next, [0, 0], "held from the oldest byte");
        assert_eq!(p.next_expiry(), Some(now + Duration::from_secs(5)));
        let ring = ring_with(1 << 16, 1000);
        assert!(p.room(&ring, 0, now).is_some());
        // Past its time it no longer counts, and `expire` drops it.
        assert_eq!(p.room(&ring, 0, now + Duration::from_secs(6)), None);
        p.expire(now + Duration::from_secs(6));
        assert!(p.pacers.is_empty());
        // A new pacing reader ends the lingering ones.
        p.add(2, [0, 0]);
        p.linger(2, now + Duration::from_secs(5), None);
        p.add(3, [0, 0]);
        assert_eq!(p.pacers.iter().map(|p| p.number).collect::<Vec<_>>(), [3]);
    }

    #[test]
    fn a_named_pacer_replaces_older_ones_of_that_name() {
        let mut p = Pacing::default();
        p.add(1, [0, 0]);
        p.name(1, Some("cli".into()));
        let now = Instant::now();
        p.linger(1, now + Duration::from_secs(5), None);
        // A reconnect on another connection, before the old one is known
        // dead: `add` drops lingering pacers, but a live one of the same
        // name goes only when the new one is named.
        p.pacers.push(Pacer { number: 7, next: [0, 0], until: None, name: Some("cli".into()), linger: None });
        p.add(2, [0, 0]);
        p.name(2, Some("cli".into()));
        assert_eq!(p.pacers.iter().map(|p| p.number).collect::<Vec<_>>(), [2]);
    }

    #[test]
    fn freeze_and_thaw_keep_offsets_and_time_left() {
        let now = Instant::now();
        let mut p = Pacing::default();
        p.add(1, [3, 4]);
        p.linger(1, now + Duration::from_secs(5), None);
        p.add(2, [0, 0]); // ends the lingering one
        p.linger(2, now + Duration::from_secs(7), Some([9, 9]));
        let frozen = p.freeze(now, [0, 0]);
        assert_eq!(frozen, [([9, 9], Duration::from_secs(7))]);
        let thawed = Pacing::thaw(frozen, now);
        assert_eq!(thawed.next_expiry(), Some(now + Duration::from_secs(7)));
        assert_eq!(thawed.pacers[0].number, u64::MAX - 1);
    }

    #[test]
    fn the_model_allowance() {
        assert_eq!(model_room(0), MODEL_MAX_LAG as u64);
        assert_eq!(model_room(MODEL_MAX_LAG + 1), 0);
        assert!(model_caught_up(MODEL_MAX_LAG / 2 + 10, 20));
        assert!(!model_caught_up(MODEL_MAX_LAG / 2 + 10, 5));
        assert!(!model_caught_up(MODEL_MAX_LAG / 2, 5));
    }
}
