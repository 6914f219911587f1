//! The output ring against a model: any sequence of pushes, reads, merged
//! reads, handovers and re-owning. Byte `o` of a stream is a fixed function
//! of `o`, so the model needs no copy of the data: every read must return
//! exactly the bytes written at its offset, from pushes that followed each
//! other in arrival order (a small push may join the one before it when
//! the other stream took no sequence number between them; the read carries
//! the first one's `seq`), or an explicit gap at the first offset held, or
//! nothing yet at the end; a merged read stops at the other stream's next
//! chunk; offsets only grow; the newest bytes are always held; the ring
//! never holds more than its capacity.
#![no_main]

use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tether_exec::fuzzing::{CHUNK_OVERHEAD, FuzzRead, FuzzRing};

#[derive(Arbitrary, Debug)]
struct Input {
    cap: u16,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// Push `len` bytes; the other stream took `skip` sequence numbers.
    Push { len: u16, skip: u8 },
    /// Read from `end + at` (negative: behind the end).
    Read { at: i32, max: u16 },
    /// A merged read, stopping at the other stream's chunk `before` from
    /// its newest.
    Extend { at: i32, max: u16, before: u8 },
    /// Freeze and thaw, as a graceful restart does.
    HandOver,
    /// Copy the held bytes into a buffer of the ring's own.
    Reown,
}

/// The byte at absolute offset `o`.
fn byte(o: u64) -> u8 {
    ((o ^ (o >> 7) ^ (o >> 17)).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8
}

fn expect_bytes(from: u64, data: &[u8]) {
    for (i, &b) in data.iter().enumerate() {
        assert_eq!(b, byte(from + i as u64), "wrong byte at offset {}", from + i as u64);
    }
}

/// `(start, end, seq)` of each push, in order.
struct Model {
    pushes: Vec<(u64, u64, u64)>,
    end: u64,
    seq: u64,
    /// The sequence numbers the other stream took.
    others: Vec<u64>,
}

impl Model {
    fn index_at(&self, o: u64) -> usize {
        self.pushes.partition_point(|p| p.1 <= o)
    }

    fn push_at(&self, o: u64) -> (u64, u64, u64) {
        self.pushes[self.index_at(o)]
    }

    /// Whether pushes `a..=b` (indices) followed each other in arrival
    /// order, none of the other stream's between them.
    fn consecutive(&self, a: usize, b: usize) -> bool {
        (a..b).all(|k| self.pushes[k + 1].2 == self.pushes[k].2 + 1)
    }
}

fuzz_target!(|input: Input| {
    // Rings are at least a chunk's overhead plus a byte (the daemon's
    // smallest is far larger).
    let cap = CHUNK_OVERHEAD + 1 + usize::from(input.cap) % 8192;
    let mut ring = FuzzRing::new(cap);
    let mut m = Model { pushes: Vec::new(), end: 0, seq: 0, others: Vec::new() };
    let mut first_held = 0;
    for op in input.ops.into_iter().take(512) {
        match op {
            Op::Push { len, skip } => {
                let len = u64::from(len) % 20_000;
                let data: Vec<u8> = (m.end..m.end + len).map(byte).collect();
                m.others.extend(m.seq + 1..=m.seq + u64::from(skip));
                m.seq += 1 + u64::from(skip);
                ring.push(Bytes::from(data), m.seq);
                if len > 0 {
                    m.pushes.push((m.end, m.end + len, m.seq));
                    m.end += len;
                }
            }
            Op::Read { at, max } => {
                let from = m.end.saturating_add_signed(i64::from(at));
                check_read(&ring, &m, from, usize::from(max).max(1));
            }
            Op::Extend { at, max, before } => {
                let from = m.end.saturating_add_signed(i64::from(at));
                let max = usize::from(max).max(1);
                let before_seq = match m.others.len() {
                    0 => u64::MAX,
                    n => m.others[n - 1 - usize::from(before) % n],
                };
                if let FuzzRead::Data { data, .. } = ring.read(from, max) {
                    let first = data.clone();
                    let merged = ring.extend_read(from, data, max, before_seq);
                    assert!(merged.starts_with(&first), "a merged read changed its first part");
                    assert!(merged.len() <= max, "merged {} bytes past max {max}", merged.len());
                    expect_bytes(from, &merged);
                    if merged.len() > first.len() {
                        let last = from + merged.len() as u64 - 1;
                        let seq = m.push_at(last).2;
                        assert!(seq < before_seq, "merged a chunk of seq {seq} >= {before_seq}");
                    }
                }
            }
            Op::HandOver => {
                let thawed = ring.handed_over();
                assert_eq!(thawed.first_held(), ring.first_held(), "a handover moved the first offset");
                assert_eq!(thawed.end(), ring.end(), "a handover moved the end");
                assert_eq!(thawed.cap(), ring.cap());
                assert_eq!(thawed.charged_from(0), ring.charged_from(0));
                ring = thawed;
            }
            Op::Reown => ring.reown(),
        }
        // The invariants that hold after every step.
        assert_eq!(ring.end(), m.end, "end is not what was pushed");
        assert!(ring.first_held() >= first_held, "first_held went back");
        first_held = ring.first_held();
        assert!(first_held <= m.end);
        let held = m.end - first_held;
        let charged = ring.charged_from(first_held);
        assert!(charged <= cap, "charged {charged} bytes in a ring of {cap}");
        assert!(held as usize <= charged || held == 0, "held {held} bytes but charged {charged}");
        if let Some(&(start, end, _)) = m.pushes.last() {
            let room = (cap - CHUNK_OVERHEAD) as u64;
            assert!(first_held <= end - (end - start).min(room), "the newest bytes were evicted");
        }
        check_read(&ring, &m, first_held, 1 << 20);
    }
});

fn check_read(ring: &FuzzRing, m: &Model, from: u64, max: usize) {
    let first_held = ring.first_held();
    match ring.read(from, max) {
        FuzzRead::Gap { first_held: f } => {
            assert!(from < first_held, "gap at {from}, which is held (first {first_held})");
            assert_eq!(f, first_held, "gap names the wrong first offset");
        }
        FuzzRead::Pending => assert!(from >= m.end, "nothing at {from}, before the end {}", m.end),
        FuzzRead::Data { seq, data } => {
            assert!(from >= first_held && from < m.end, "data at {from}, outside [{first_held}, {})", m.end);
            assert!(!data.is_empty() && data.len() <= max, "read {} bytes for max {max}", data.len());
            expect_bytes(from, &data);
            let (first, last) = (m.index_at(from), m.index_at(from + data.len() as u64 - 1));
            assert!(m.consecutive(first, last), "a read joins pushes with the other stream's between them");
            // The seq of the chunk's first push, which followed each push
            // up to the one at `from`.
            let back = m.pushes[first].2.checked_sub(seq).expect("a read carries a later push's seq") as usize;
            assert!(back <= first && m.consecutive(first - back, first), "bytes at {from} carry seq {seq}");
            assert_eq!(m.pushes[first - back].2, seq, "bytes at {from} carry seq {seq}");
        }
    }
}
