//! A connection's stdin queue for one command: operations are written in
//! order by a task of their own, so a command that does not read its stdin
//! stalls only this queue, never the connection's read loop (signals, kills,
//! other commands, acks). The queue is bounded in bytes (the stdin window)
//! and in operations; [`StdinPump::push`] never waits.
//!
//! What the connection has taken it writes: when the pump is dropped (its
//! connection ended), its task goes on until the queue is written, or the
//! command's stdin is gone (it ended, it closed its stdin, a handover), so
//! bytes a client saw accepted are not lost with the connection. Numbered
//! bytes are the exception: their client keeps them until acknowledged and
//! sends them again on its next connection, so a dropped pump lets go of
//! them at once (a command that never reads would otherwise hold a queue
//! per reconnect).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::extract::ws::Message;
use bytes::{Bytes, BytesMut};
use tether_exec::{ExecError, Manager, StdinSeq};
use tokio::sync::Notify;
use tokio_util::task::AbortOnDropHandle;

use super::outbound::OutTx;

/// Most operations queued per command per connection.
const MAX_OPS: usize = 256;

/// [`StdinPump::push_merging`] appends to the last queued write only while
/// it is shorter than this; a longer one is left as it is.
const MERGE_BELOW: usize = 64 << 10;

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

/// The queue, shared by the connection (pushing) and the task (taking).
/// A std mutex: held to push or pop one entry, never across an `.await`.
struct Queue<T> {
    ops: Mutex<Ops<T>>,
    /// Signalled on every push and when the connection lets go.
    pushed: Notify,
    /// Signalled whenever the command has taken an operation's bytes (for
    /// [`StdinPump::room`]).
    taken: Notify,
}

struct Ops<T> {
    ops: VecDeque<(T, StdinOp)>,
    /// Bytes queued and not yet taken by the command.
    bytes: usize,
    /// The connection has let go: write what is queued, then end.
    draining: bool,
}

/// A connection's stdin queue for one command.
pub(crate) struct StdinPump<T> {
    queue: Arc<Queue<T>>,
    window: usize,
    task: Option<AbortOnDropHandle<()>>,
}

impl<T: Send + 'static> StdinPump<T> {
    /// A queue for `command` holding at most `window` bytes; each
    /// operation's outcome goes through `reply` to `out`.
    pub(crate) fn spawn(
        manager: Manager,
        command: String,
        window: usize,
        out: Option<OutTx>,
        reply: Reply<T>,
    ) -> Self {
        let queue = Arc::new(Queue {
            ops: Mutex::new(Ops { ops: VecDeque::new(), bytes: 0, draining: false }),
            pushed: Notify::new(),
            taken: Notify::new(),
        });
        let q = queue.clone();
        // The pump looks the command up per operation rather than holding a
        // handle, so it never keeps a finished command's memory alive. A
        // closed stdin is the command's business: later writes are answered
        // `stdin_closed` there (and a terminal's stays open).
        let task = tokio::spawn(async move {
            let mut out = out;
            loop {
                let (next, draining) = {
                    let mut ops = q.lock();
                    let draining = ops.draining;
                    match ops.ops.pop_front() {
                        Some(op) => (Some(op), draining),
                        None if draining => return,
                        None => (None, draining),
                    }
                };
                if draining {
                    // Nobody to tell: the connection's writer may finish.
                    out = None;
                }
                let Some((tag, op)) = next else {
                    q.pushed.notified().await;
                    continue;
                };
                if draining && matches!(&op, StdinOp::Data(_, Some(_)) | StdinOp::Close(Some(_))) {
                    // Numbered: its client sends it again.
                    q.lock().bytes -= op.len();
                    continue;
                }
                let n = op.len();
                let r = match (manager.get(&command), op) {
                    (Err(e), _) => Err(e),
                    (Ok(h), StdinOp::Data(b, seq)) => h.write_stdin_at(b, seq).await,
                    (Ok(h), StdinOp::Close(seq)) => h.close_stdin_at(seq).await,
                };
                q.lock().bytes -= n;
                q.taken.notify_waiters();
                if let Err(e) = &r
                    && q.lock().draining
                    && !matches!(e, ExecError::StdinHole { .. })
                {
                    // Stdin is gone for good (the command ended or closed
                    // it): nothing queued can be written any more.
                    tracing::debug!(%command, "stdin queue of a closed connection dropped: {e}");
                    return;
                }
                // The connection may be gone: the rest is still written.
                if let Some(o) = &out
                    && let Some(m) = reply(tag, r)
                    && o.send(m).await.is_err()
                {
                    out = None;
                }
            }
        });
        StdinPump { queue, window, task: Some(AbortOnDropHandle::new(task)) }
    }

    /// Queues an operation, or refuses it at once when the window or the
    /// operation count would be exceeded.
    pub(crate) fn push(&self, tag: T, op: StdinOp) -> Result<(), Refused> {
        self.push_inner(tag, op, |_, _| false)
    }

    /// [`StdinPump::push`], appending unnumbered bytes to unnumbered bytes
    /// queued last (for a dialect whose input frames get no reply: many
    /// small ones then take one operation, not one each).
    pub(crate) fn push_merging(&self, op: StdinOp) -> Result<(), Refused>
    where
        T: Default,
    {
        self.push_inner(T::default(), op, merge)
    }

    fn push_inner(
        &self,
        tag: T,
        op: StdinOp,
        merge: impl Fn(&mut StdinOp, &StdinOp) -> bool,
    ) -> Result<(), Refused> {
        let n = op.len();
        {
            let mut ops = self.queue.lock();
            if ops.bytes + n > self.window {
                return Err(Refused::Window(self.window));
            }
            let merged = ops.ops.back_mut().is_some_and(|(_, last)| merge(last, &op));
            if !merged {
                if ops.ops.len() >= MAX_OPS {
                    return Err(Refused::Ops);
                }
                ops.ops.push_back((tag, op));
            }
            ops.bytes += n;
        }
        self.queue.pushed.notify_one();
        Ok(())
    }

    /// Waits until `n` more bytes fit in the window (or nothing is queued,
    /// for an operation larger than the window), or the pump's task has
    /// ended. For a dialect whose input has no acknowledgement: its read
    /// loop waits here instead of dropping input, so the peer's sends are
    /// held back by TCP.
    pub(crate) async fn room(&self, n: usize) {
        loop {
            let taken = self.queue.taken.notified();
            tokio::pin!(taken);
            taken.as_mut().enable();
            {
                let ops = self.queue.lock();
                if ops.bytes == 0 || ops.bytes + n <= self.window {
                    return;
                }
            }
            if self.is_closed() {
                return;
            }
            taken.await;
        }
    }

    /// Whether the pump's task has ended.
    pub(crate) fn is_closed(&self) -> bool {
        self.task.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Whether nothing is queued.
    pub(crate) fn is_idle(&self) -> bool {
        self.queue.lock().ops.is_empty()
    }
}

/// Appends `op` to `last` when both are unnumbered bytes and `last` is
/// still under [`MERGE_BELOW`]; whether it did. The bytes are appended in
/// place when `last` is the only owner of its buffer (it grows by
/// doubling), so many tiny frames cost linear, not quadratic, copying; a
/// shared buffer is copied, at most [`MERGE_BELOW`] bytes of it.
fn merge(last: &mut StdinOp, op: &StdinOp) -> bool {
    match (last, op) {
        (StdinOp::Data(a, None), StdinOp::Data(b, None)) if a.len() < MERGE_BELOW => {
            let mut joined = std::mem::take(a).try_into_mut().unwrap_or_else(|shared| {
                let mut m = BytesMut::with_capacity(shared.len() + b.len());
                m.extend_from_slice(&shared);
                m
            });
            joined.extend_from_slice(b);
            *a = joined.freeze();
            true
        }
        _ => false,
    }
}

impl<T> Queue<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Ops<T>> {
        self.ops.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<T> Drop for StdinPump<T> {
    /// The connection lets go: the task writes what is queued, then ends
    /// (bounded by the window, and by the command's stdin).
    fn drop(&mut self) {
        self.queue.lock().draining = true;
        self.queue.pushed.notify_one();
        if let Some(t) = self.task.take() {
            drop(t.detach());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(op: &StdinOp) -> &Bytes {
        match op {
            StdinOp::Data(b, _) => b,
            StdinOp::Close(_) => panic!("not data"),
        }
    }

    #[test]
    fn merging_appends_in_place_and_stops_at_the_cap() {
        let mut last = StdinOp::Data(Bytes::from_static(b"a"), None);
        assert!(merge(&mut last, &StdinOp::Data(Bytes::from_static(b"b"), None)));
        let first = data(&last).as_ptr();
        // Tiny frames go into the same buffer: no copy of what is queued.
        for _ in 0..1000 {
            assert!(merge(&mut last, &StdinOp::Data(Bytes::from_static(b"c"), None)));
        }
        assert_eq!(data(&last).len(), 1002);
        assert_eq!(&data(&last)[..3], b"abc");
        let moved = data(&last).as_ptr() != first;
        // Growth by doubling moves it a few times at most, never per frame.
        let mut moves = usize::from(moved);
        while data(&last).len() < MERGE_BELOW {
            let before = data(&last).as_ptr();
            assert!(merge(&mut last, &StdinOp::Data(Bytes::from(vec![7u8; 100]), None)));
            moves += usize::from(data(&last).as_ptr() != before);
        }
        assert!(moves <= 16, "{moves} copies");
        // Past the cap, a new write is queued on its own.
        assert!(!merge(&mut last, &StdinOp::Data(Bytes::from_static(b"d"), None)));
        // Numbered bytes and closes never merge.
        let mut small = StdinOp::Data(Bytes::from_static(b"a"), None);
        assert!(!merge(&mut small, &StdinOp::Close(None)));
    }
}
