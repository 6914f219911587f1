//! A terminal command's screen model: parsed in a task of its own on the
//! actors' threads, or, for a little output while that task is idle, by
//! the actor itself.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::ExecError;
use crate::pty::Term;
use crate::spec::TermSize;

use super::pacing::{MODEL_CHUNK_CHARGE, model_caught_up};

use super::shared::Shared;
use super::subscription::Subscription;
use super::{Screen, ScreenAttach};

/// Most bytes of one drain the actor parses itself (a keystroke's echo, a
/// prompt, a short line: a few µs at most); more go to the model's task.
const INLINE_BYTES: usize = 1024;

/// The model's task lets the other tasks of its thread run after parsing
/// this much (about 1 ms of `vt100`).
const YIELD_AFTER: usize = 128 * 1024;

pub(super) enum ModelMsg {
    Feed(Bytes),
    Resize(TermSize),
    /// Render the screen (at `offset`: everything fed so far) and reply
    /// with it and the subscription that starts there.
    Render {
        offset: u64,
        sub: Subscription,
        reply: oneshot::Sender<Result<ScreenAttach, ExecError>>,
    },
}

impl ModelMsg {
    /// What the message counts in the model's lag until it is handled.
    fn charge(&self) -> usize {
        match self {
            ModelMsg::Feed(data) => data.len() + MODEL_CHUNK_CHARGE,
            ModelMsg::Resize(_) | ModelMsg::Render { .. } => MODEL_CHUNK_CHARGE,
        }
    }
}

/// A PTY command's screen model.
///
/// Parsing is the costliest part of a terminal's output path, so bulk
/// output is parsed in a task of its own on the actors' threads: beside the
/// actor's reading rather than in it, and never holding one of the few
/// threads that serve the terminal's reads, frames and sockets for a long
/// parse (P2, `cat` on a terminal, went from 74-80% of the PTY floor, while
/// it shared them, to above the floor). A little output found with nothing
/// queued for the task is parsed by the actor at once instead, so a
/// keystroke's echo wakes no other thread.
///
/// Messages are handled in order, and every message counts in
/// `Shared::model_lag` until it has been handled. So a lag of exactly what
/// the actor has just charged means the task is idle with nothing queued,
/// and the actor may parse in its place without reordering anything. The
/// lag is bounded by [`MODEL_MAX_LAG`](super::pacing::MODEL_MAX_LAG) (the
/// actor stops reading past it), so the channel needs no bound of its own.
pub(super) struct Model {
    term: Arc<Mutex<Term>>,
    tx: mpsc::UnboundedSender<ModelMsg>,
    _task: tokio_util::task::AbortOnDropHandle<()>,
}

fn lock(term: &Mutex<Term>) -> MutexGuard<'_, Term> {
    term.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Model {
    pub(super) fn spawn(term: Term, shared: Arc<Shared>) -> Model {
        let term = Arc::new(Mutex::new(term));
        let (tx, mut rx) = mpsc::unbounded_channel::<ModelMsg>();
        let task = crate::manager::actors_handle().spawn({
            let term = term.clone();
            async move {
                // Bytes parsed since this task last let others run.
                let mut parsed = 0;
                while let Some(msg) = rx.recv().await {
                    let charge = msg.charge();
                    if let ModelMsg::Feed(data) = &msg {
                        parsed += data.len();
                    }
                    match msg {
                        ModelMsg::Feed(data) => lock(&term).feed(&data),
                        ModelMsg::Resize(size) => lock(&term).resize(size),
                        ModelMsg::Render { offset, sub, reply } => {
                            let screen = {
                                let term = lock(&term);
                                Screen { offset, size: term.size(), data: Bytes::from(term.render()) }
                            };
                            let _ = reply.send(Ok((Some(screen), sub)));
                        }
                    }
                    // Only once handled (and the terminal unlocked): the
                    // actor takes a lag of its own charges alone as the
                    // task being idle.
                    let before = shared.model_lag.fetch_sub(charge, Ordering::SeqCst);
                    // Wake a stalled actor once the lag halves.
                    if model_caught_up(before, charge) {
                        shared.pacer_moved.notify_one();
                    }
                    // These threads drain the piped commands: a terminal's
                    // parse holds one of them for about 1 ms at a time
                    // (128 KiB), not for the whole queue (up to 512 KiB).
                    // (A yield after every feed cost `cat` 10-15%.)
                    if parsed >= YIELD_AFTER {
                        parsed = 0;
                        tokio::task::yield_now().await;
                    }
                }
            }
        });
        Model { term, tx, _task: tokio_util::task::AbortOnDropHandle::new(task) }
    }

    /// Feeds what one drain stored, already charged to the lag (by
    /// `Actor::store`, so that the reads were bounded by it): parsed here
    /// when it is little and the task is idle, else queued for the task.
    pub(super) fn feed(&self, shared: &Shared, chunks: Vec<Bytes>) {
        let bytes: usize = chunks.iter().map(Bytes::len).sum();
        let charged = bytes + chunks.len() * MODEL_CHUNK_CHARGE;
        if bytes <= INLINE_BYTES && shared.model_lag.load(Ordering::SeqCst) == charged {
            let mut term = lock(&self.term);
            for data in &chunks {
                term.feed(data);
            }
            drop(term);
            shared.model_lag.fetch_sub(charged, Ordering::SeqCst);
            return;
        }
        for data in chunks {
            // The task lives as long as this handle.
            let _ = self.tx.send(ModelMsg::Feed(data));
        }
    }

    /// Queues a resize or a render, behind every feed before it.
    pub(super) fn send(&self, shared: &Shared, msg: ModelMsg) {
        shared.model_lag.fetch_add(msg.charge(), Ordering::SeqCst);
        // The task lives as long as this handle.
        let _ = self.tx.send(msg);
    }
}
