//! A byte ring addressed by absolute offsets.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

/// Bookkeeping cost charged per chunk on top of its bytes, so that a command
/// printing one byte per read cannot hold far more memory than its ring size.
pub(crate) const CHUNK_OVERHEAD: usize = 64;

/// A piece shorter than this is appended to the chunk before it when they
/// follow each other (no other stream's chunk between them), so a program
/// writing a line at a time is held at nearly the ring's size, not a
/// fraction of it lost to [`CHUNK_OVERHEAD`] per line.
const MERGE_BELOW: usize = 4 << 10;

/// A chunk grows by merging up to this size.
const MERGE_MAX: usize = 16 << 10;

/// One stream's retained output: the most recent bytes up to a capacity,
/// addressed by absolute offsets since the stream began.
///
/// Memory is allocated as output arrives (one exact-size `Bytes` per read,
/// small reads appended to the one before), never up front, so an idle
/// command costs nothing here.
#[derive(Debug)]
pub(crate) struct Ring {
    chunks: VecDeque<Chunk>,
    /// Offset of the first byte still held (== `end` when empty).
    first_held: u64,
    /// Offset one past the last byte ever pushed.
    end: u64,
    /// Bytes charged against `cap` (data plus per-chunk overhead).
    charged: usize,
    cap: usize,
}

#[derive(Debug)]
struct Chunk {
    offset: u64,
    /// Global arrival order across a command's streams, so readers can
    /// interleave stdout and stderr as they were produced: the first
    /// piece's. The pieces of a merged chunk have consecutive numbers, so
    /// no chunk of the other stream falls between them.
    seq: u64,
    /// The last piece's arrival order (past `seq` once pieces were
    /// appended: its buffer may have room to spare).
    last_seq: u64,
    data: Bytes,
}

/// What a reader at some offset can get right now.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    /// The offset is older than what is held; resume at `first_held`.
    Gap {
        /// First offset still held.
        first_held: u64,
    },
    /// Bytes starting exactly at the requested offset.
    Data {
        /// Arrival order of the chunk they come from.
        seq: u64,
        /// The bytes.
        data: Bytes,
    },
    /// Nothing new yet.
    Pending,
}

impl Ring {
    pub(crate) fn new(cap: usize) -> Ring {
        Ring { chunks: VecDeque::new(), first_held: 0, end: 0, charged: 0, cap }
    }

    /// Capacity in bytes (data plus per-chunk overhead).
    pub(crate) fn cap(&self) -> usize {
        self.cap
    }

    pub(crate) fn first_held(&self) -> u64 {
        self.first_held
    }

    pub(crate) fn end(&self) -> u64 {
        self.end
    }

    /// Bytes charged against the capacity right now.
    pub(crate) fn charged(&self) -> usize {
        self.charged
    }

    /// Appends bytes, evicting the oldest chunks to stay within capacity.
    pub(crate) fn push(&mut self, mut data: Bytes, seq: u64) {
        if data.is_empty() || self.append(&data, seq) {
            return;
        }
        self.settle_last();
        let offset = self.end;
        self.end += data.len() as u64;
        let room = self.cap.saturating_sub(CHUNK_OVERHEAD);
        if data.len() > room {
            // A single read larger than the whole ring: keep its tail.
            data = data.slice(data.len() - room..);
        }
        let offset = offset + (self.end - offset - data.len() as u64);
        let cost = data.len() + CHUNK_OVERHEAD;
        while self.charged + cost > self.cap {
            let Some(old) = self.chunks.pop_front() else {
                break;
            };
            self.charged -= old.data.len() + CHUNK_OVERHEAD;
        }
        self.charged += cost;
        self.chunks.push_back(Chunk { offset, seq, last_seq: seq, data });
        self.first_held = self.chunks.front().map_or(self.end, |c| c.offset);
    }

    /// Appends a small piece to the last chunk when it directly follows it
    /// in arrival order, the chunk stays small, the ring has room without
    /// evicting, and nobody holds a slice of the chunk (a reader's or the
    /// screen model's: bytes handed out are never changed). The append
    /// grows the chunk's buffer in place, amortised.
    fn append(&mut self, data: &Bytes, seq: u64) -> bool {
        let Some(last) = self.chunks.back_mut() else { return false };
        if data.len() >= MERGE_BELOW
            || last.last_seq.checked_add(1) != Some(seq)
            || last.data.len() + data.len() > MERGE_MAX
            || self.charged + data.len() > self.cap
        {
            return false;
        }
        let mut buf = match std::mem::take(&mut last.data).try_into_mut() {
            Ok(buf) => buf,
            Err(shared) => {
                last.data = shared;
                return false;
            }
        };
        buf.extend_from_slice(data);
        last.data = buf.freeze();
        last.last_seq = seq;
        self.end += data.len() as u64;
        self.charged += data.len();
        true
    }

    /// The last chunk takes no more pieces (a new one follows it): a grown
    /// one is copied to a buffer of its exact size, so its memory is what
    /// it is charged (growing leaves up to half a buffer spare).
    fn settle_last(&mut self) {
        if let Some(last) = self.chunks.back_mut().filter(|c| c.last_seq != c.seq)
            && last.data.is_unique()
        {
            last.data = Bytes::copy_from_slice(&last.data);
        }
    }

    /// Its held bytes, for a handover (shared, not copied).
    /// Replaces each chunk's bytes by the copy `to` gives, if any (the same
    /// bytes elsewhere; not compared here, which would read every page).
    pub(crate) fn rebase(&mut self, to: impl Fn(&Bytes) -> Option<Bytes>) {
        for c in &mut self.chunks {
            if let Some(copy) = to(&c.data).filter(|b| b.len() == c.data.len()) {
                c.data = copy;
            }
        }
    }

    /// The held chunks' bytes, oldest first.
    pub(crate) fn chunk_data(&self) -> impl Iterator<Item = &Bytes> {
        self.chunks.iter().map(|c| &c.data)
    }

    pub(crate) fn freeze(&self) -> crate::handover::FrozenRing {
        crate::handover::FrozenRing {
            cap: self.cap,
            end: self.end,
            chunks: self.chunks.iter().map(|c| (c.offset, c.seq, c.data.len() as u64)).collect(),
            data: self.chunks.iter().map(|c| c.data.clone()).collect(),
        }
    }

    /// A ring holding what [`Ring::freeze`] gave, offsets unchanged. Chunks
    /// that do not follow each other, or whose bytes are missing, are
    /// dropped with everything before them (never from a real ring).
    pub(crate) fn thaw(f: crate::handover::FrozenRing) -> Ring {
        let mut ring = Ring::new(f.cap);
        let mut kept: Vec<Chunk> = Vec::new();
        let mut data = f.data;
        for (i, &(offset, seq, len)) in f.chunks.iter().enumerate().rev() {
            let next = kept.last().map_or(f.end, |c| c.offset);
            let fits = offset.checked_add(len) == Some(next) && len > 0;
            match data.get_mut(i).map(std::mem::take) {
                Some(d) if fits && d.len() as u64 == len => {
                    kept.push(Chunk { offset, seq, last_seq: seq, data: d })
                }
                _ => break,
            }
        }
        kept.reverse();
        ring.charged = kept.iter().map(|c| c.data.len() + CHUNK_OVERHEAD).sum();
        ring.end = f.end;
        ring.first_held = kept.first().map_or(f.end, |c| c.offset);
        ring.chunks = kept.into();
        ring
    }

    /// Copies the held bytes into one buffer of the ring's own, so that
    /// they no longer keep a shared buffer alive (the handover's mapping).
    pub(crate) fn reown(&mut self) {
        let total: usize = self.chunks.iter().map(|c| c.data.len()).sum();
        let mut own = BytesMut::with_capacity(total);
        for c in &self.chunks {
            own.extend_from_slice(&c.data);
        }
        let mut own = own.freeze();
        for c in &mut self.chunks {
            c.data = own.split_to(c.data.len());
        }
    }

    /// Bytes charged for the chunks a reader at `from` still needs: the
    /// one it sits in (whole: a chunk is evicted whole, so the part before
    /// `from` keeps taking room until the reader leaves the chunk) and every
    /// later one, overhead included. Reading it all would free this much.
    pub(crate) fn charged_from(&self, from: u64) -> usize {
        let from = from.max(self.first_held);
        let idx = self.chunks.partition_point(|c| c.offset + c.data.len() as u64 <= from);
        let start = self.chunks.get(idx).map_or(self.end, |c| c.offset);
        (self.end - start) as usize + (self.chunks.len() - idx) * CHUNK_OVERHEAD
    }

    /// Reads up to `max` bytes starting at `from`. Never returns bytes from
    /// two chunks at once, so `seq` is exact.
    pub(crate) fn read(&self, from: u64, max: usize) -> Read {
        if from < self.first_held {
            return Read::Gap { first_held: self.first_held };
        }
        if from >= self.end {
            return Read::Pending;
        }
        // The chunk holding `from`: the last one starting at or before it.
        let idx = self.chunks.partition_point(|c| c.offset <= from) - 1;
        let c = &self.chunks[idx];
        let start = (from - c.offset) as usize;
        let stop = c.data.len().min(start + max);
        Read::Data { seq: c.seq, data: c.data.slice(start..stop) }
    }

    /// Extends `first`, the data [`Ring::read`] returned for `from`, with
    /// the chunks that follow it and arrived before `before_seq` (the other
    /// stream's next chunk), copying, up to `max` bytes in all. Many small
    /// reads (a terminal's 4 KiB) then go out as few frames, in the order
    /// they were produced.
    pub(crate) fn extend_read(&self, from: u64, first: Bytes, max: usize, before_seq: u64) -> Bytes {
        let mut at = from + first.len() as u64;
        let mut idx = self.chunks.partition_point(|c| c.offset < at);
        let mut merged: Option<BytesMut> = None;
        let mut len = first.len();
        while len < max && idx < self.chunks.len() {
            let c = &self.chunks[idx];
            if c.seq >= before_seq || c.offset != at {
                break;
            }
            let take = c.data.len().min(max - len);
            let buf = merged.get_or_insert_with(|| {
                let mut b = BytesMut::with_capacity(max.min((self.end - from) as usize));
                b.extend_from_slice(&first);
                b
            });
            buf.extend_from_slice(&c.data[..take]);
            len += take;
            at += take as u64;
            idx += 1;
        }
        merged.map_or(first, BytesMut::freeze)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn a_thawed_ring_reads_like_the_original() {
        let mut r = Ring::new(4096);
        for i in 0..100u64 {
            r.push(bytes(&format!("chunk {i:03}\n")), i * 2);
        }
        let t = Ring::thaw(r.freeze());
        assert_eq!(
            (t.first_held(), t.end(), t.charged(), t.cap()),
            (r.first_held(), r.end(), r.charged(), r.cap())
        );
        for at in [t.first_held(), t.first_held() + 5, t.end() - 1, t.end()] {
            assert_eq!(t.read(at, 1000), r.read(at, 1000));
        }
        assert_eq!(t.read(0, 10), Read::Gap { first_held: r.first_held() });
    }

    #[test]
    fn reads_by_absolute_offset_across_chunks() {
        let mut r = Ring::new(1 << 20);
        r.push(bytes("hello "), 0);
        r.push(bytes("world"), 2);
        assert_eq!(r.read(0, 100), Read::Data { seq: 0, data: bytes("hello ") });
        assert_eq!(r.read(3, 2), Read::Data { seq: 0, data: bytes("lo") });
        assert_eq!(r.read(6, 100), Read::Data { seq: 2, data: bytes("world") });
        assert_eq!(r.read(8, 100), Read::Data { seq: 2, data: bytes("rld") });
        assert_eq!(r.read(11, 100), Read::Pending);
        assert_eq!(r.end(), 11);
    }

    #[test]
    fn merged_reads_join_chunks_in_arrival_order_up_to_max() {
        let mut r = Ring::new(1 << 20);
        r.push(bytes("ab"), 0);
        r.push(bytes("cd"), 1);
        r.push(bytes("ef"), 3); // seq 2 went to the other stream
        let merged = |from, max, before| match r.read(from, max) {
            Read::Data { data, .. } => r.extend_read(from, data, max, before),
            other => panic!("{other:?}"),
        };
        assert_eq!(merged(0, 100, 2), bytes("abcd"));
        assert_eq!(merged(0, 100, u64::MAX), bytes("abcdef"));
        assert_eq!(merged(1, 4, u64::MAX), bytes("bcde"));
        assert_eq!(merged(4, 100, u64::MAX), bytes("ef"));
        assert_eq!(r.read(6, 100), Read::Pending);
    }

    #[test]
    fn evicts_oldest_and_reports_gap() {
        let cap = 2 * (100 + CHUNK_OVERHEAD);
        let mut r = Ring::new(cap);
        for i in 0..5 {
            r.push(Bytes::from(vec![i as u8; 100]), 2 * i);
        }
        assert_eq!(r.first_held(), 300);
        assert_eq!(r.end(), 500);
        assert_eq!(r.read(0, 10), Read::Gap { first_held: 300 });
        assert_eq!(r.read(299, 10), Read::Gap { first_held: 300 });
        assert_eq!(r.read(300, 1), Read::Data { seq: 6, data: Bytes::from(vec![3u8]) });
        assert!(r.charged() <= cap);
    }

    #[test]
    fn a_reader_inside_a_chunk_is_charged_the_whole_chunk() {
        let mut r = Ring::new(1 << 20);
        r.push(Bytes::from(vec![1u8; 100]), 0);
        r.push(Bytes::from(vec![2u8; 100]), 2);
        let two = 2 * (100 + CHUNK_OVERHEAD);
        assert_eq!(r.charged_from(0), two);
        // Half-way through the first chunk: evicting it would still take
        // the 50 bytes not yet read, so all of it counts.
        assert_eq!(r.charged_from(50), two);
        assert_eq!(r.charged_from(100), 100 + CHUNK_OVERHEAD);
        assert_eq!(r.charged_from(150), 100 + CHUNK_OVERHEAD);
        assert_eq!(r.charged_from(200), 0);
        assert_eq!(r.charged(), two);
    }

    #[test]
    fn lines_written_one_at_a_time_fill_the_ring() {
        let cap = 64 << 10;
        let mut r = Ring::new(cap);
        let mut all = Vec::new();
        for i in 0..20_000u64 {
            let line = format!("line {i}\n");
            all.extend_from_slice(line.as_bytes());
            r.push(bytes(&line), i);
        }
        assert!(r.charged() <= cap);
        // Chunks of up to MERGE_MAX bytes: at most one chunk's worth plus
        // the overheads is not held.
        let held = (r.end() - r.first_held()) as usize;
        assert!(held >= cap - MERGE_MAX - cap / MERGE_MAX * CHUNK_OVERHEAD, "held {held} of {cap}");
        let mut at = r.first_held();
        let mut got = Vec::new();
        while let Read::Data { data, .. } = r.read(at, usize::MAX) {
            at += data.len() as u64;
            got.extend_from_slice(&data);
        }
        assert_eq!(got, all[all.len() - held..]);
    }

    #[test]
    fn pieces_merge_only_in_arrival_order_and_below_the_limits() {
        let mut r = Ring::new(1 << 20);
        r.push(bytes("a"), 0);
        r.push(bytes("b"), 1);
        // Seq 2 went to the other stream: "c" must stay a chunk of its own
        // so that a reader puts the other stream's piece before it.
        r.push(bytes("c"), 3);
        r.push(Bytes::from(vec![b'x'; MERGE_BELOW]), 4);
        r.push(Bytes::from(vec![b'y'; MERGE_MAX]), 5);
        r.push(bytes("z"), 6);
        assert_eq!(r.read(0, 100), Read::Data { seq: 0, data: bytes("ab") });
        assert_eq!(r.read(2, 100), Read::Data { seq: 3, data: bytes("c") });
        assert!(matches!(r.read(3, usize::MAX), Read::Data { seq: 4, data } if data.len() == MERGE_BELOW));
        let y = 3 + MERGE_BELOW as u64;
        assert!(matches!(r.read(y, usize::MAX), Read::Data { seq: 5, data } if data.len() == MERGE_MAX));
        assert_eq!(r.read(y + MERGE_MAX as u64, 100), Read::Data { seq: 6, data: bytes("z") });
        assert_eq!(r.charged(), r.end() as usize + 5 * CHUNK_OVERHEAD);
    }

    #[test]
    fn bytes_handed_out_never_change() {
        let mut r = Ring::new(1 << 20);
        r.push(bytes("one "), 0);
        // A reader holds the whole chunk, and a slice of it.
        let Read::Data { data: held, .. } = r.read(0, 100) else { panic!() };
        let Read::Data { data: part, .. } = r.read(1, 2) else { panic!() };
        r.push(bytes("two "), 1);
        r.push(bytes("three"), 2);
        assert_eq!((held, part), (bytes("one "), bytes("ne")));
        let merged = |from| match r.read(from, 100) {
            Read::Data { data, .. } => r.extend_read(from, data, 100, u64::MAX),
            other => panic!("{other:?}"),
        };
        assert_eq!(merged(0), bytes("one two three"));
        // Once nobody holds it, a chunk takes pieces again.
        r.push(bytes("!"), 3);
        assert_eq!(r.read(4, 100), Read::Data { seq: 1, data: bytes("two three!") });
    }

    #[test]
    fn a_merge_never_evicts() {
        let cap = 100 + CHUNK_OVERHEAD;
        let mut r = Ring::new(cap);
        r.push(Bytes::from(vec![1u8; 60]), 0);
        r.push(Bytes::from(vec![2u8; 40]), 1);
        assert_eq!((r.first_held(), r.charged()), (0, cap));
        // No room: a chunk of its own, the merged one evicted.
        r.push(Bytes::from(vec![3u8; 10]), 2);
        assert_eq!((r.first_held(), r.end()), (100, 110));
        assert!(r.charged() <= cap);
    }

    #[test]
    fn oversize_push_keeps_the_tail() {
        let mut r = Ring::new(CHUNK_OVERHEAD + 10);
        r.push(bytes("0123456789abcdef"), 0);
        assert_eq!(r.end(), 16);
        assert_eq!(r.first_held(), 6);
        assert_eq!(r.read(6, 100), Read::Data { seq: 0, data: bytes("6789abcdef") });
    }
}
