//! Resumable stdin: each writer numbers the bytes it sends to a command,
//! and the command's stdin writer keeps, per writer, how many it has taken.
//! A client that lost its connection resends everything it has not seen
//! acknowledged, with the same numbers; what the command already has is
//! dropped here, so nothing is lost or doubled, whichever of two copies (a
//! half-dead connection's and the resend) comes first.
//!
//! Only the command's stdin writer task changes the table (in the order it
//! takes messages, so admission is atomic); readers look at it to answer a
//! resend that comes after stdin has closed.

use std::collections::HashMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Where bytes sit in one writer's stream of stdin for one command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StdinSeq {
    /// The writer: a client-chosen name, 1..=[`StdinSeq::MAX_WRITER`] bytes.
    pub writer: String,
    /// The position of the first byte among this writer's bytes.
    pub offset: u64,
}

impl StdinSeq {
    /// Longest writer name.
    pub const MAX_WRITER: usize = 64;

    /// Whether the writer name is acceptable.
    pub fn is_valid(&self) -> bool {
        (1..=Self::MAX_WRITER).contains(&self.writer.len())
    }
}

/// Most writers remembered per command; past it the least recently used is
/// forgotten (a resend from it then starts a new count).
pub(crate) const MAX_WRITERS: usize = 256;

/// What one writer has given a command.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WriterPos {
    /// Bytes taken (the next offset expected).
    pub(crate) next: u64,
    /// A terminal's end-of-file typed by this writer, at this offset.
    pub(crate) eof_at: Option<u64>,
    /// Recency, for eviction.
    #[serde(skip)]
    used: u64,
}

/// Every writer's position for one command.
#[derive(Debug, Default)]
pub(crate) struct Writers {
    by_name: HashMap<String, WriterPos>,
    tick: u64,
}

/// What to do with bytes a writer sent.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Write these (possibly a tail of what was sent).
    Write(Bytes),
    /// The command has all of them already: acknowledge, write nothing.
    Duplicate,
    /// They start past what this writer has given: bytes before them are
    /// missing. `have` is how many the command has from this writer.
    Hole {
        /// Bytes taken from this writer so far.
        have: u64,
    },
}

impl Writers {
    /// Decides about `data` sent by `seq.writer` at `seq.offset`, and
    /// counts what is to be written as taken.
    pub(crate) fn admit(&mut self, seq: &StdinSeq, data: Bytes) -> Admit {
        // A writer is remembered only once it gives bytes that fit: frames
        // refused as holes do not evict anyone.
        let have = self.by_name.get(&seq.writer).map_or(0, |p| p.next);
        let Some(end) = seq.offset.checked_add(data.len() as u64) else {
            return Admit::Hole { have };
        };
        if seq.offset > have {
            return Admit::Hole { have };
        }
        if end <= have {
            self.entry(&seq.writer);
            return Admit::Duplicate;
        }
        self.entry(&seq.writer).next = end;
        Admit::Write(data.slice((have - seq.offset) as usize..))
    }

    /// Whether bytes sent at `seq` are all taken already.
    pub(crate) fn has(&self, seq: &StdinSeq, len: usize) -> bool {
        let end = seq.offset.saturating_add(len as u64);
        self.by_name.get(&seq.writer).is_some_and(|p| end <= p.next)
    }

    /// Takes back the last `len` bytes counted for `writer`: they were
    /// never written (the command closed its stdin), so a resend of them is
    /// not answered as if they had been.
    pub(crate) fn unwrite(&mut self, writer: &str, len: usize) {
        if let Some(p) = self.by_name.get_mut(writer) {
            p.next = p.next.saturating_sub(len as u64);
        }
    }

    /// What to do with this writer's end-of-file at `seq.offset`: type it
    /// (recorded now), or not, because it is a repeat (at or below one
    /// typed before), or a hole (bytes before it are missing).
    pub(crate) fn eof(&mut self, seq: &StdinSeq) -> Admit {
        let have = self.by_name.get(&seq.writer).map_or(0, |p| p.next);
        if seq.offset > have {
            return Admit::Hole { have };
        }
        let pos = self.entry(&seq.writer);
        if pos.eof_at.is_some_and(|at| seq.offset <= at) {
            return Admit::Duplicate;
        }
        pos.eof_at = Some(seq.offset);
        Admit::Write(Bytes::new())
    }

    /// Whether this writer's end-of-file at `seq.offset` was typed already.
    pub(crate) fn has_eof(&self, seq: &StdinSeq) -> bool {
        self.by_name.get(&seq.writer).and_then(|p| p.eof_at).is_some_and(|at| seq.offset <= at)
    }

    fn entry(&mut self, writer: &str) -> &mut WriterPos {
        self.tick += 1;
        let tick = self.tick;
        if !self.by_name.contains_key(writer) && self.by_name.len() >= MAX_WRITERS {
            let oldest = self.by_name.iter().min_by_key(|(_, p)| p.used).map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.by_name.remove(&k);
            }
        }
        let pos = self.by_name.entry(writer.to_owned()).or_default();
        pos.used = tick;
        pos
    }

    /// The table for a handover.
    pub(crate) fn freeze(&self) -> Vec<(String, WriterPos)> {
        let mut v: Vec<_> = self.by_name.iter().map(|(k, p)| (k.clone(), p.clone())).collect();
        v.sort_by_key(|(_, p)| p.used);
        v
    }

    /// The table from a handover.
    pub(crate) fn thaw(frozen: Vec<(String, WriterPos)>) -> Writers {
        let mut w = Writers::default();
        for (name, pos) in frozen {
            w.tick += 1;
            w.by_name.insert(name, WriterPos { used: w.tick, ..pos });
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(writer: &str, offset: u64) -> StdinSeq {
        StdinSeq { writer: writer.to_owned(), offset }
    }

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn resent_bytes_are_trimmed_to_what_is_new() {
        let mut w = Writers::default();
        assert_eq!(w.admit(&seq("a", 0), b("hello ")), Admit::Write(b("hello ")));
        // A resend of everything, plus more.
        assert_eq!(w.admit(&seq("a", 0), b("hello world")), Admit::Write(b("world")));
        assert_eq!(w.admit(&seq("a", 6), b("world")), Admit::Duplicate);
        assert!(w.has(&seq("a", 6), 5));
        assert!(!w.has(&seq("a", 6), 6));
        // Past the end: a hole.
        assert_eq!(w.admit(&seq("a", 20), b("x")), Admit::Hole { have: 11 });
        assert_eq!(w.admit(&seq("b", 3), b("x")), Admit::Hole { have: 0 });
    }

    #[test]
    fn writers_count_separately() {
        let mut w = Writers::default();
        assert_eq!(w.admit(&seq("a", 0), b("ab")), Admit::Write(b("ab")));
        assert_eq!(w.admit(&seq("b", 0), b("cd")), Admit::Write(b("cd")));
        assert_eq!(w.admit(&seq("a", 2), b("e")), Admit::Write(b("e")));
    }

    #[test]
    fn an_eof_is_typed_once_and_a_repeat_of_an_older_one_never() {
        let mut w = Writers::default();
        assert_eq!(w.admit(&seq("a", 0), b("1234567")), Admit::Write(b("1234567")));
        assert_eq!(w.eof(&seq("a", 3)), Admit::Write(Bytes::new()));
        assert_eq!(w.eof(&seq("a", 3)), Admit::Duplicate);
        assert_eq!(w.eof(&seq("a", 7)), Admit::Write(Bytes::new()));
        // The first one resent after the second: still a repeat.
        assert_eq!(w.eof(&seq("a", 3)), Admit::Duplicate);
        assert!(w.has_eof(&seq("a", 7)));
        // Past the bytes given: a hole.
        assert_eq!(w.eof(&seq("a", 9)), Admit::Hole { have: 7 });
    }

    #[test]
    fn holes_and_overflows_are_refused_and_remember_nobody() {
        let mut w = Writers::default();
        assert_eq!(w.admit(&seq("ghost", 5), b("x")), Admit::Hole { have: 0 });
        assert!(w.by_name.is_empty(), "a refused writer is not remembered");
        assert_eq!(w.admit(&seq("a", u64::MAX), b("xy")), Admit::Hole { have: 0 });
        assert!(!w.has(&seq("a", u64::MAX), 2));
        w.admit(&seq("a", 0), b("abc"));
        w.unwrite("a", 2);
        assert_eq!(w.admit(&seq("a", 0), b("abc")), Admit::Write(b("bc")));
    }

    #[test]
    fn the_least_recently_used_writer_is_forgotten_past_the_limit() {
        let mut w = Writers::default();
        for i in 0..MAX_WRITERS {
            w.admit(&seq(&format!("w{i}"), 0), b("x"));
        }
        w.admit(&seq("w0", 1), b("y"));
        w.admit(&seq("new", 0), b("z"));
        assert!(w.has(&seq("w0", 0), 2), "recently used: kept");
        assert!(!w.has(&seq("w1", 0), 1), "least recently used: forgotten");
        let thawed = Writers::thaw(w.freeze());
        assert!(thawed.has(&seq("w0", 0), 2));
        assert_eq!(thawed.by_name.len(), MAX_WRITERS);
    }
}
