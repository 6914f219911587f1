//! The runtime piped commands' actors run on: worker threads of their
//! own, apart from the daemon's (which serve connections). A terminal's
//! actor runs on the runtime that starts it, in the daemon the thread of
//! the connection that started it (`tether-server`'s shards; see
//! `Manager::launch`): a keystroke's echo then crosses no thread.
//!
//! An actor drains its command's pipes; while it waits for its turn, the
//! pipe fills and the command blocks in `write`. On the daemon's runtime an
//! actor was one task among every connection's forwarders and writers: with
//! 1000 viewers of one command on two worker threads it got a turn once per
//! round of them, and the command ran a hundred times slower than with one
//! viewer. On threads of their own the actors' turns come from the kernel's
//! scheduler, which shares the cores between these threads and the daemon's
//! workers however many tasks each side holds. Actors do little per turn
//! (a pipe read into the ring, a notification), so a few threads serve any
//! number of commands.
//!
//! The runtime is the process's, started on first use and never stopped,
//! like a global allocator: managers come and go in tests, commands may
//! outlive the manager that started them, and a daemon has one manager.
//! What an actor creates (its pipes' and pidfd's registrations, its timers,
//! the tasks it spawns) belongs to this runtime: [`enter`] makes it the
//! current one while a command's resources are made.

use std::sync::OnceLock;

use tokio::runtime::{Builder, EnterGuard, Handle, Runtime};

/// The actors' runtime, started on first use.
fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        // As many threads as the daemon's own runtime has (one per core):
        // draining and the terminal screen models use every core when many
        // commands are busy at once.
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("tether-actor")
            .enable_all()
            .build()
            // Creating a runtime fails only when the process cannot make a
            // thread or an epoll fd: nothing could run a command then.
            .expect("the command actors' runtime starts")
    })
}

/// Starts the actors' runtime if it has not started.
pub(crate) fn start() {
    runtime();
}

/// The actors' runtime, to spawn on.
pub(crate) fn handle() -> &'static Handle {
    runtime().handle()
}

/// Makes the actors' runtime the current one until the guard drops: the fds
/// registered meanwhile (pipes, pidfds, terminal masters) are polled by its
/// reactor, and tasks spawned meanwhile run on it.
pub(crate) fn enter() -> EnterGuard<'static> {
    handle().enter()
}
