//! A connection's stdin queue for one command: operations are written in
//! order by a task of their own, so a command that does not read its stdin
//! stalls only this queue, never the connection's read loop (signals, kills,
//! other commands, acks). The queue is bounded in bytes (the stdin window)
//! and in operations; [`StdinPump::push`] never waits.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::ws::Message;
use bytes::Bytes;
use tether_exec::{ExecError, Manager, StdinSeq};
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;

use crate::outbound::OutTx;

/// Most operations queued per command per connection.
const MAX_OPS: usize = 256;

/// One stdin operation.
pub(crate) enum StdinOp {
    /// Bytes, from a numbered writer or not.
    Data(Bytes, Option<StdinSeq>),
    /// End of input (on a terminal: the end-of-file character).
    Close(Option<StdinSeq>),
}

impl StdinOp {
    fn len(&self) -> usize {
        match self {
            StdinOp::Data(b, _) => b.len(),
            StdinOp::Close(_) => 0,
        }
    }
}

/// Why [`StdinPump::push`] refused an operation.
#[derive(Debug)]
pub(crate) enum Refused {
    /// More than the window's bytes would be queued.
    Window(usize),
    /// Too many operations are queued.
    Ops,
}

/// How the outcome of an operation is told: a frame to queue, or nothing.
pub(crate) type Reply<T> = Box<dyn Fn(T, Result<(), ExecError>) -> Option<Message> + Send>;

/// A connection's stdin queue for one command.
pub(crate) struct StdinPump<T> {
    tx: mpsc::Sender<(T, StdinOp)>,
    /// Bytes queued and not yet taken by the command.
    queued: Arc<AtomicUsize>,
    window: usize,
    _task: AbortOnDropHandle<()>,
}

impl<T: Send + 'static> StdinPump<T> {
    /// A queue for `command` holding at most `window` bytes; each
    /// operation's outcome goes through `reply` to `out`.
    pub(crate) fn spawn(
        manager: Manager,
        command: String,
        window: usize,
        out: OutTx,
        reply: Reply<T>,
    ) -> Self {
        let (tx, mut rx) = mpsc::channel::<(T, StdinOp)>(MAX_OPS);
        let queued = Arc::new(AtomicUsize::new(0));
        let q = queued.clone();
        // The pump looks the command up per operation rather than holding a
        // handle, so it never keeps a finished command's memory alive. A
        // closed stdin is the command's business: later writes are answered
        // `stdin_closed` there (and a terminal's stays open).
        let task = tokio::spawn(async move {
            while let Some((tag, op)) = rx.recv().await {
                let n = op.len();
                let r = match (manager.get(&command), op) {
                    (Err(e), _) => Err(e),
                    (Ok(h), StdinOp::Data(b, seq)) => h.write_stdin_at(b, seq).await,
                    (Ok(h), StdinOp::Close(seq)) => h.close_stdin_at(seq).await,
                };
                q.fetch_sub(n, Ordering::SeqCst);
                if let Some(m) = reply(tag, r)
                    && out.send(m).await.is_err()
                {
                    return;
                }
            }
        });
        StdinPump { tx, queued, window, _task: AbortOnDropHandle::new(task) }
    }

    /// Queues an operation, or refuses it at once when the window or the
    /// operation count would be exceeded.
    pub(crate) fn push(&self, tag: T, op: StdinOp) -> Result<(), Refused> {
        let n = op.len();
        if self.queued.fetch_add(n, Ordering::SeqCst) + n > self.window {
            self.queued.fetch_sub(n, Ordering::SeqCst);
            return Err(Refused::Window(self.window));
        }
        if self.tx.try_send((tag, op)).is_err() {
            self.queued.fetch_sub(n, Ordering::SeqCst);
            return Err(Refused::Ops);
        }
        Ok(())
    }

    /// Whether the pump's task has ended (its connection's writer is gone).
    pub(crate) fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}
