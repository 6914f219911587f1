//! Draining a command's output into its rings: bounded reads, never past a
//! pacing reader's room, the output limit, the screen model's feed.

use std::io;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use crate::spec::OutputLimit;

use super::ExitReason;
use super::actor::Actor;
use super::pacing::{MIN_PACED_READ, MODEL_CHUNK_CHARGE, model_room};
use super::source::READ_BYTES;

impl Actor {
    /// Room stream `i` has before a pacing reader would lose data
    /// (`u64::MAX` without pacing readers).
    pub(super) fn paced_room(&self, i: usize) -> u64 {
        if self.pipes[i].is_none() {
            return u64::MAX;
        }
        let room = self.shared.output().pace_room(i).unwrap_or(u64::MAX);
        if i == 0 && self.model.is_some() {
            // The screen model may lag this far behind; past it, reading
            // waits for it (and the command for us).
            return room.min(model_room(self.shared.model_lag.load(Ordering::SeqCst)));
        }
        room
    }

    /// Reads what pipe `i` has into its ring: a bounded number of reads (or,
    /// with `to_empty`, until the pipe is empty), so one busy stream cannot
    /// starve the actor's other duties, and never past a pacing reader's
    /// room. Returns whether it stopped for a pacing reader.
    pub(super) fn drain(&mut self, i: usize, ready: io::Result<()>, to_empty: bool) -> bool {
        if let Err(e) = ready {
            tracing::warn!(command = %self.shared.ident.id, "pipe poll failed: {e}");
            self.pipes[i] = None;
            return false;
        }
        let mut pushed = false;
        let mut stalled = false;
        // What the screen model is to be fed, once the readers are told.
        let mut feeds: Vec<Bytes> = Vec::new();
        // Even "to empty" is bounded (a full 1 MiB pipe and then some), so
        // a descendant that writes without pause cannot pin this thread.
        let max_reads = if to_empty { 16 } else { 8 };
        for _ in 0..max_reads {
            let room = self.paced_room(i);
            if room < MIN_PACED_READ {
                stalled = true;
                break;
            }
            let Some(p) = &self.pipes[i] else { break };
            let want = room.min(READ_BYTES as u64) as usize;
            match p.try_read(want) {
                Ok(Some(data)) => {
                    if let Some(stored) = self.store(i, data) {
                        pushed = true;
                        if i == 0 && self.model.is_some() {
                            feeds.push(stored);
                        }
                    }
                }
                Ok(None) => {
                    self.pipes[i] = None;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(command = %self.shared.ident.id, "pipe read failed: {e}");
                    self.pipes[i] = None;
                    break;
                }
            }
        }
        if pushed {
            self.shared.changed.send_modify(|v| *v += 1);
        }
        // After the readers are told, so parsing (or waking the model's
        // task) is never on a keystroke's way to its echo. A screen is
        // asked for in this actor's turn (`AttachScreen`), so never between
        // a byte stored and its feed.
        if let Some(model) = self.model.as_ref().filter(|_| !feeds.is_empty()) {
            model.feed(&self.shared, feeds);
        }
        stalled
    }

    /// Stores a chunk, applying the output limit. Returns what was stored,
    /// if anything; stdout's is charged to the screen model's lag, for the
    /// caller to feed it.
    pub(super) fn store(&mut self, i: usize, mut data: Bytes) -> Option<Bytes> {
        let mut out = self.shared.output();
        if let Some(max) = self.life.max_output_bytes {
            let total = out.ends().iter().sum::<u64>();
            let room = max.saturating_sub(total);
            if (data.len() as u64) > room {
                data.truncate(room as usize);
                self.state.truncated = true;
                if self.life.output_limit == OutputLimit::Kill && self.state.reason.is_none() {
                    drop(out);
                    tracing::info!(command = %self.shared.ident.id, "output limit reached: killing");
                    self.kill(ExitReason::OutputLimit);
                    out = self.shared.output();
                }
            }
        }
        if data.is_empty() {
            return None;
        }
        let seq = out.seq;
        out.seq += 1;
        out.rings[i].push(data.clone(), seq);
        drop(out);
        let stream = if i == 0 { "stdout" } else { "stderr" };
        metrics::counter!("tether_output_bytes_total", "stream" => stream).increment(data.len() as u64);
        if i == 0 && self.model.is_some() {
            self.shared.model_lag.fetch_add(data.len() + MODEL_CHUNK_CHARGE, Ordering::SeqCst);
        }
        Some(data)
    }
}
