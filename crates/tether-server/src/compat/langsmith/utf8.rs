//! Per-stream UTF-8 decoding for the WebSocket's text frames. The client
//! counts its position as `offset + len(utf8(data))`, so each stream goes
//! through a decoder that holds back an incomplete character and anchors
//! every frame on the raw offset just past it (§12.3): reconnects land on
//! exact bytes even around invalid UTF-8.

use serde_json::json;
use tether_exec::Stream;

use crate::compat::utf8::decode;

/// Per-stream text decoding with byte-exact offsets for the client.
pub(crate) struct Writer {
    streams: [Decoder; 2],
}

/// One stream: the raw offset of `pending[0]` (or of the next byte) and an
/// incomplete UTF-8 sequence held back.
struct Decoder {
    at: u64,
    pending: Vec<u8>,
}

impl Writer {
    pub(crate) fn new(from: [u64; 2]) -> Writer {
        Writer { streams: from.map(|at| Decoder { at, pending: Vec::new() }) }
    }

    /// The frames for a chunk of output (none while a character is
    /// incomplete).
    pub(crate) fn output(&mut self, stream: Stream, offset: u64, data: &[u8]) -> Vec<serde_json::Value> {
        let i = if stream == Stream::Stdout { 0 } else { 1 };
        let d = &mut self.streams[i];
        if offset != d.at + d.pending.len() as u64 {
            // Cannot happen for an in-order subscription; keep offsets true.
            d.pending.clear();
            d.at = offset;
        }
        let mut bytes = std::mem::take(&mut d.pending);
        bytes.extend_from_slice(data);
        let (text, used) = decode(&bytes, false);
        d.pending = bytes[used..].to_vec();
        let start = d.at;
        d.at += used as u64;
        if text.is_empty() {
            return Vec::new();
        }
        vec![text_frame(stream, start, d.at, text)]
    }

    /// The raw offsets the frames so far end at, per stream (an
    /// incomplete character held back is not in them).
    pub(crate) fn at(&self) -> [u64; 2] {
        [self.streams[0].at, self.streams[1].at]
    }

    pub(super) fn gap(&mut self, stream: Stream, first_held: u64) {
        let d = &mut self.streams[if stream == Stream::Stdout { 0 } else { 1 }];
        d.pending.clear();
        d.at = first_held;
    }

    /// At the end: a held-back incomplete sequence becomes U+FFFD.
    pub(crate) fn flush(&mut self) -> Vec<serde_json::Value> {
        let mut frames = Vec::new();
        for (i, stream) in [Stream::Stdout, Stream::Stderr].into_iter().enumerate() {
            let d = &mut self.streams[i];
            if d.pending.is_empty() {
                continue;
            }
            let (text, used) = decode(&std::mem::take(&mut d.pending), true);
            let start = d.at;
            d.at += used as u64;
            frames.push(text_frame(stream, start, d.at, text));
        }
        frames
    }
}

/// One frame: `offset` is anchored so that `offset + len(utf8(data))` is
/// the raw end (equal to the raw start whenever the bytes were valid).
fn text_frame(stream: Stream, start: u64, end: u64, text: String) -> serde_json::Value {
    let offset = end as i64 - text.len() as i64;
    debug_assert!(text.len() as u64 != end - start || offset == start as i64);
    json!({"type": stream.name(), "data": text, "offset": offset})
}
