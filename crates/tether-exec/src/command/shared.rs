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

use super::pacing::Pacing;

use super::stdin_writer::StdinMsg;
use super::{Control, ExitInfo};

/// What a command is: set when it starts, kept across a handover (its
/// fields are the handover record's first ones).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Identity {
    pub(crate) id: String,
    /// Client-chosen name.
    pub(crate) name: Option<String>,
    /// Client-chosen labels.
    pub(crate) labels: BTreeMap<String, String>,
    /// The argv executed (a shell command: its script).
    pub(crate) argv: Vec<String>,
    /// Its process (a shell command: its shell's).
    pub(crate) pid: u32,
    pub(crate) started_at: SystemTime,
    /// A shell command: the shell's name.
    pub(crate) shell: Option<String>,
    /// The idempotency key it was started with.
    #[serde(default)]
    pub(crate) request_key: Option<String>,
}

/// State shared by the actor (the only writer) and subscriptions (readers).
pub(crate) struct Shared {
    pub(crate) ident: Identity,
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
    /// The stdin writer's queue, once its writer has started: on the first
    /// write or close (the actor starts it, see [`Control::OpenStdin`]), or
    /// at once when the command has bytes to write or a close from the
    /// start. A command nobody writes to holds neither the queue nor the
    /// writer's task (about 1.6 KiB).
    pub(super) stdin_tx: std::sync::OnceLock<mpsc::Sender<StdinMsg>>,
    /// Returns this command's committed memory to the manager on drop; a
    /// resize charges the new screen size to it first.
    pub(super) reservation: crate::manager::Reservation,
}

pub(super) struct Output {
    pub(super) rings: [Ring; 2],
    pub(super) seq: u64,
    pub(super) exit: Option<ExitInfo>,
    /// The pacing subscriptions, and lingering ones that have gone.
    pub(super) pacing: Pacing,
    /// A PTY command's terminal size, and how many times it was set.
    pub(super) size: Option<(TermSize, u64)>,
    /// A shell command that its shell has not started yet.
    pub(super) queued: bool,
}

impl Output {
    /// Bytes stream `i` may still take before a pacing reader's unread
    /// data would be evicted (`None`: no pacer, no limit).
    pub(super) fn pace_room(&self, i: usize) -> Option<u64> {
        self.pacing.room(&self.rings[i], i, Instant::now())
    }

    /// Both streams' end offsets.
    pub(super) fn ends(&self) -> [u64; 2] {
        [self.rings[0].end(), self.rings[1].end()]
    }
}

impl Shared {
    /// An ended command's reservation down to what its rings hold.
    pub(crate) fn settle_reservation(&self) {
        let used = self.output().rings.iter().map(|r| r.charged()).sum();
        self.reservation.settle_rings(used);
    }

    pub(super) fn output(&self) -> MutexGuard<'_, Output> {
        // A poisoned lock means a panic while pushing bytes; the data is
        // still consistent enough to read, so keep serving it.
        self.output.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn writers(&self) -> MutexGuard<'_, Writers> {
        self.writers.lock().unwrap_or_else(|p| p.into_inner())
    }
}
