//! The threads connections are served on: one single-threaded runtime per
//! core, each connection wholly on one of them.
//!
//! On the daemon's work-stealing runtime a keystroke's way through the
//! daemon (the connection's reader, its stdin pump, the terminal's writer
//! and actor, the forwarder, the connection's writer) was a chain of task
//! wake-ups, and about a third of them woke the other worker thread to
//! steal the next task: a futex wake of a parked thread, on this kind of
//! VM an idle vCPU's exit and entry, about 30 µs of the echo (BENCHMARKS.md,
//! issue 20, eighth and ninth passes). A connection on a runtime of its own
//! thread runs that chain on one thread: a wake-up is a push onto the
//! thread's queue. Each shard accepts connections itself, on a duplicate
//! of the listening socket registered with its own reactor
//! (`accept::serve`): whichever shard's `accept` gets a connection serves
//! it, so a connection never crosses threads to start, and the shards
//! share connections as their `accept`s race for them; a shard that has
//! more than a few connections' worth of tasks beyond another hands what it
//! accepts to that one (`lighter_than`). What a connection
//! does in the background keeps running where it started (a terminal's
//! actor, started by it, stays on its shard after it closes).
//!
//! Like the actors' runtime (`tether_exec`), the shards belong to the
//! process, start on first use and are never stopped: servers come and go
//! in tests, and a daemon has one.

use std::sync::OnceLock;

use tokio::runtime::{Builder, Handle};

/// Every shard's runtime, started on first use (none if none could be
/// started: the caller then serves on its own runtime).
pub(crate) fn all() -> &'static [Handle] {
    static SHARDS: OnceLock<Vec<Handle>> = OnceLock::new();
    SHARDS.get_or_init(|| {
        let n = std::thread::available_parallelism().map_or(2, |n| n.get());
        (0..n).filter_map(start).collect()
    })
}

/// Starts shard `i`'s thread and returns its runtime's handle; `None` (and
/// a warning) if the thread or its runtime cannot be made.
fn start(i: usize) -> Option<Handle> {
    let rt = match Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::warn!("connection thread {i}: cannot start its runtime: {e}");
            return None;
        }
    };
    let handle = rt.handle().clone();
    let spawned = std::thread::Builder::new()
        .name(format!("tether-conn-{i}"))
        .spawn(move || rt.block_on(std::future::pending::<()>()));
    match spawned {
        Ok(_) => Some(handle),
        Err(e) => {
            tracing::warn!("connection thread {i}: cannot start: {e}");
            None
        }
    }
}

/// Tasks a shard may hold beyond the least busy one and still serve a
/// connection it accepted itself: about one connection's worth (an HTTP
/// connection is one task; a WebSocket three to five: its reader, writer,
/// forwarders, pumps). With 16 the 16 keep-alive clients of a one-shot
/// exec bench could all land on one shard (`tether-bench --only files`:
/// 1387-1459 requests/s against 1512-1535 with the shared runtime).
const SLACK: usize = 2;

/// The least busy shard, if shard `i` holds more than [`SLACK`] tasks
/// beyond it: where a connection that `i` accepted is served instead. The
/// shards' `accept`s race for each connection, and in a burst the first
/// thread awake could take them all.
pub(crate) fn lighter_than(i: usize) -> Option<&'static Handle> {
    let shards = all();
    let mine = shards.get(i)?.metrics().num_alive_tasks();
    let (j, least) =
        shards.iter().enumerate().map(|(j, h)| (j, h.metrics().num_alive_tasks())).min_by_key(|&(_, n)| n)?;
    (j != i && least + SLACK < mine).then(|| &shards[j])
}
