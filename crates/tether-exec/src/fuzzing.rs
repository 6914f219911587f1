//! Entry points for the fuzz targets in `fuzz/` (not part of the API).
//!
//! The ring is private to this crate; the fuzzer drives it through this thin
//! wrapper so that its offset logic is checked against a model without
//! making `Ring` itself public.

use bytes::Bytes;

use crate::ring::{self, Ring};

/// Bookkeeping cost charged per chunk on top of its bytes.
pub const CHUNK_OVERHEAD: usize = ring::CHUNK_OVERHEAD;

/// A [`Ring`] as the fuzzer sees it.
#[derive(Debug)]
pub struct FuzzRing(Ring);

/// What [`FuzzRing::read`] found: the ring's own [`Read`](ring::Read).
pub use crate::ring::Read as FuzzRead;

impl FuzzRing {
    /// An empty ring of `cap` bytes (data plus per-chunk overhead).
    pub fn new(cap: usize) -> FuzzRing {
        FuzzRing(Ring::new(cap))
    }

    /// Capacity in bytes.
    pub fn cap(&self) -> usize {
        self.0.cap()
    }

    /// Offset of the first byte still held.
    pub fn first_held(&self) -> u64 {
        self.0.first_held()
    }

    /// Offset one past the last byte ever pushed.
    pub fn end(&self) -> u64 {
        self.0.end()
    }

    /// Appends bytes produced with arrival number `seq`.
    pub fn push(&mut self, data: Bytes, seq: u64) {
        self.0.push(data, seq);
    }

    /// Reads up to `max` bytes from `from`.
    pub fn read(&self, from: u64, max: usize) -> FuzzRead {
        self.0.read(from, max)
    }

    /// Extends `first` (what `read(from, ..)` gave) with the chunks that
    /// follow and arrived before `before_seq`, up to `max` bytes.
    pub fn extend_read(&self, from: u64, first: Bytes, max: usize, before_seq: u64) -> Bytes {
        self.0.extend_read(from, first, max, before_seq)
    }

    /// Bytes a reader at `from` still holds in the ring.
    pub fn charged_from(&self, from: u64) -> usize {
        self.0.charged_from(from)
    }

    /// The ring after a handover: frozen, then thawed.
    pub fn handed_over(&self) -> FuzzRing {
        FuzzRing(Ring::thaw(self.0.freeze()))
    }

    /// Copies the held bytes into a buffer of the ring's own.
    pub fn reown(&mut self) {
        self.0.reown();
    }
}
