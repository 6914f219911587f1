//! The memory budget: what each held command commits (rings and a
//! terminal's screen model) and its command slot, given back when the
//! command's actor ends (or on drop).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::{Inner, Manager};
use crate::ExecError;
use crate::spec::TermSize;

/// Committed memory (rings, and a terminal's screen model) and a command
/// slot, given back on drop.
pub(crate) struct Reservation {
    /// Ring bytes (all the rings may hold while the command runs; what
    /// they hold once it has ended).
    bytes: AtomicUsize,
    /// The part held for the screen model (changes with the terminal's
    /// size).
    screen: AtomicUsize,
    /// Where both are counted, with the command slot.
    inner: Arc<Inner>,
    /// Given back already ([`Reservation::release`]).
    released: AtomicBool,
}

impl Reservation {
    pub(super) fn new(bytes: usize, screen: usize, inner: &Arc<Inner>) -> Reservation {
        Reservation {
            bytes: AtomicUsize::new(bytes),
            screen: AtomicUsize::new(screen),
            inner: inner.clone(),
            released: AtomicBool::new(false),
        }
    }

    /// Gives the slot and the memory back (once; dropping does it too):
    /// when the command's actor ends, which is when the command stops being
    /// held, even if a handle or a lagging subscriber keeps its record in
    /// memory a moment longer.
    pub(crate) fn release(&self) {
        if self.released.swap(true, Ordering::SeqCst) {
            return;
        }
        let held = self.bytes.swap(0, Ordering::SeqCst) + self.screen.swap(0, Ordering::SeqCst);
        self.inner.committed.fetch_sub(held, Ordering::SeqCst);
        self.inner.count.fetch_sub(1, Ordering::SeqCst);
    }

    /// Once the command has ended its rings never grow: the reservation
    /// comes down to the `used` bytes they hold (it never grows here), so
    /// ended commands kept for their TTL hold only what they hold.
    pub(crate) fn settle_rings(&self, used: usize) {
        let old = self.bytes.load(Ordering::SeqCst);
        if used < old {
            self.bytes.store(used, Ordering::SeqCst);
            self.inner.committed.fetch_sub(old - used, Ordering::SeqCst);
        }
    }

    /// Charges the screen model for a terminal of `size` instead of its
    /// previous size; refused (nothing changes) if that exceeds the budget.
    pub(crate) fn charge_screen(&self, size: TermSize) -> Result<(), ExecError> {
        if self.released.load(Ordering::SeqCst) {
            return Ok(());
        }
        let new = screen_bytes(size);
        let old = self.screen.load(Ordering::SeqCst);
        if new > old {
            let grow = new - old;
            let limit = self.inner.cfg.max_total_ring_bytes;
            self.inner
                .committed
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| (c + grow <= limit).then_some(c + grow))
                .map_err(|c| ExecError::ScreenMemory {
                    rows: size.rows,
                    cols: size.cols,
                    asked: new,
                    available: limit.saturating_sub(c) + old,
                    limit,
                })?;
        } else {
            self.inner.committed.fetch_sub(old - new, Ordering::SeqCst);
        }
        self.screen.store(new, Ordering::SeqCst);
        Ok(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.release();
    }
}

/// What a screen model of this size costs: vt100 keeps two grids (the
/// normal and the alternate screen) of `rows x cols` cells, plus a row
/// header each.
pub(crate) fn screen_bytes(size: TermSize) -> usize {
    let cells = usize::from(size.rows) * usize::from(size.cols);
    2 * (cells * std::mem::size_of::<vt100::Cell>() + usize::from(size.rows) * 64)
}

impl Manager {
    /// A command slot and `bytes` of rings, plus the screen model of a
    /// terminal of `screen` size.
    pub(super) fn reserve(&self, bytes: usize, screen: Option<TermSize>) -> Result<Reservation, ExecError> {
        let inner = &self.inner;
        let max = inner.cfg.max_commands;
        inner
            .count
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < max).then_some(n + 1))
            .map_err(|_| ExecError::TooManyCommands(max))?;
        let limit = inner.cfg.max_total_ring_bytes;
        let screen_cost = screen.map_or(0, screen_bytes);
        let total = bytes + screen_cost;
        let committed = inner
            .committed
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| (c + total <= limit).then_some(c + total));
        match committed {
            Ok(_) => Ok(Reservation::new(bytes, screen_cost, inner)),
            Err(c) => {
                inner.count.fetch_sub(1, Ordering::SeqCst);
                let available = limit.saturating_sub(c);
                Err(match screen {
                    // The rings alone fit: the screen is what does not.
                    Some(size) if bytes <= available => ExecError::ScreenMemory {
                        rows: size.rows,
                        cols: size.cols,
                        asked: screen_cost,
                        available: available - bytes,
                        limit,
                    },
                    _ => ExecError::RingMemory { asked: total, available, limit },
                })
            }
        }
    }
}
