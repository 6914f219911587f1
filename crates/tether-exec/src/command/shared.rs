//! The state a command's actor shares with its handles and subscriptions:
//! the rings, the exit, the terminal size, attachment counts.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;

use crate::ring::Ring;
use crate::spec::TermSize;
use crate::stdin::Writers;

use super::stdin_writer::*;
use super::*;

/// State shared by the actor (the only writer) and subscriptions (readers).
pub(crate) struct Shared {
    pub(crate) id: String,
    pub(crate) name: Option<String>,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) argv: Vec<String>,
    pub(crate) pid: u32,
    pub(crate) started_at: SystemTime,
    /// A shell command: the shell's name.
    pub(crate) shell: Option<String>,
    /// The idempotency key it was started with.
    pub(crate) request_key: Option<String>,
    /// For a PTY command, its end-of-file character: `close_stdin` types it
    /// instead of closing anything.
    pub(super) eof_char: Option<u8>,
    /// A std mutex, not an async one: it is held only to push or slice
    /// `Bytes` (no I/O, no `.await`), by one writer and a few readers.
    pub(super) output: Mutex<Output>,
    /// Bumped after every change to `output`; subscribers wait on it.
    pub(super) changed: watch::Sender<u64>,
    pub(super) attached: AtomicUsize,
    pub(super) ever_attached: AtomicBool,
    pub(super) attach_changed: Notify,
    pub(super) stdin_open: AtomicBool,
    /// How many bytes each numbered stdin writer has given (resumable
    /// stdin). A std mutex held only for a lookup or an update; only the
    /// stdin writer task updates it.
    pub(super) writers: Mutex<Writers>,
    /// Signalled when a pacing subscription advances or goes away, and when
    /// the screen model catches up.
    pub(super) pacer_moved: Notify,
    /// Bytes (plus a per-chunk charge) handed to the screen model and not
    /// yet parsed by it.
    pub(super) model_lag: AtomicUsize,
    pub(super) next_subscription: std::sync::atomic::AtomicU64,
    pub(crate) ctl: mpsc::Sender<Control>,
    pub(super) stdin_tx: mpsc::Sender<StdinMsg>,
    /// Returns this command's committed memory to the manager on drop; a
    /// resize charges the new screen size to it first.
    pub(super) reservation: crate::manager::Reservation,
}

pub(super) struct Output {
    pub(super) rings: [Ring; 2],
    pub(super) seq: u64,
    pub(super) exit: Option<ExitInfo>,
    /// The pacing subscriptions, and lingering ones that have gone.
    pub(super) pacers: Vec<Pacer>,
    /// A PTY command's terminal size, and how many times it was set.
    pub(super) size: Option<(TermSize, u64)>,
    /// A shell command that its shell has not started yet.
    pub(super) queued: bool,
}

/// A reader the command waits for.
pub(super) struct Pacer {
    /// Its subscription's number.
    pub(super) number: u64,
    /// The next offsets it will read (or, paced by acknowledgements, the
    /// offsets its client has taken).
    pub(super) next: [u64; 2],
    /// A lingering pacer's subscription has gone: it holds the command back
    /// until then, for its client to come back (see
    /// [`CommandHandle::attach_lingering`]).
    pub(super) until: Option<Instant>,
    /// The client's name: a newer pacer of the same name replaces it.
    pub(super) name: Option<String>,
}

impl Output {
    /// Bytes stream `i` may still take before a pacing subscriber's unread
    /// data would be evicted (`None`: no pacer, no limit). Half the ring is
    /// kept as headroom for the per-chunk accounting.
    pub(super) fn pace_room(&self, i: usize) -> Option<u64> {
        let now = Instant::now();
        let live = self.pacers.iter().filter(|p| p.until.is_none_or(|u| u > now));
        let slowest = live.map(|p| p.next[i]).min()?;
        // Counted as the ring charges it (bytes plus per-chunk overhead),
        // so many tiny chunks cannot evict unread data either.
        let unread = self.rings[i].charged_from(slowest) as u64;
        Some((self.rings[i].cap() as u64 / 2).saturating_sub(unread))
    }
}

impl Shared {
    pub(super) fn output(&self) -> MutexGuard<'_, Output> {
        // A poisoned lock means a panic while pushing bytes; the data is
        // still consistent enough to read, so keep serving it.
        self.output.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn writers(&self) -> MutexGuard<'_, Writers> {
        self.writers.lock().unwrap_or_else(|p| p.into_inner())
    }
}
