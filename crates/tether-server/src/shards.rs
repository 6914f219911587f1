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
//! thread's queue. Connections are placed on the shards in turn; what a
//! connection does in the
//! background keeps running where it started (a terminal's actor, started
//! by it, stays on its shard after it closes).
//!
//! The accepted socket is moved into its shard's reactor
//! (`TcpStream::into_std`, then `from_std` on the shard): left on the
//! accepting runtime's reactor, every readiness event would be delivered by
//! another thread.
//!
//! Like the actors' runtime (`tether_exec`), the shards belong to the
//! process, start on first use and are never stopped: servers come and go
//! in tests, and a daemon has one.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::{Builder, Handle};

fn shards() -> &'static [Handle] {
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

/// The shard for the next connection, in turn; `None` if no shard could
/// be started (the caller serves on its own runtime).
///
/// In turn rather than to the shard with the fewest connections: a
/// WebSocket leaves its HTTP connection's task when it upgrades (hyper
/// hands the socket to a task of its own), so a count kept by the accept
/// loop would not see the long-lived connections, the ones that matter.
pub(crate) fn next() -> Option<&'static Handle> {
    static TURN: AtomicUsize = AtomicUsize::new(0);
    let shards = shards();
    if shards.is_empty() {
        return None;
    }
    Some(&shards[TURN.fetch_add(1, Ordering::Relaxed) % shards.len()])
}

/// Starts the shards now, so the first connection does not pay for it.
pub(crate) fn start_all() {
    let _ = shards();
}
