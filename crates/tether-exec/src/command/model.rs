//! A terminal command's screen model, in a task of its own.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::ExecError;
use crate::pty::Term;
use crate::spec::TermSize;

use super::pacing::{MODEL_CHUNK_CHARGE, model_caught_up};

use super::shared::Shared;
use super::subscription::Subscription;
use super::{Screen, ScreenAttach};

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

/// A PTY command's screen model in a task of its own, so that parsing
/// (the costliest part of a terminal's output path) runs beside the actor's
/// reading rather than in it. Fed in order through a channel whose content
/// is bounded by [`MODEL_MAX_LAG`](super::pacing::MODEL_MAX_LAG) (the actor stops reading past it), so the
/// channel needs no bound of its own.
pub(super) struct Model {
    pub(super) tx: mpsc::UnboundedSender<ModelMsg>,
    pub(super) _task: tokio_util::task::AbortOnDropHandle<()>,
}

impl Model {
    pub(super) fn spawn(mut term: Term, shared: Arc<Shared>) -> Model {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                match msg {
                    ModelMsg::Feed(data) => {
                        term.feed(&data);
                        let charge = data.len() + MODEL_CHUNK_CHARGE;
                        let before = shared.model_lag.fetch_sub(charge, Ordering::SeqCst);
                        // Wake a stalled actor once the lag halves.
                        if model_caught_up(before, charge) {
                            shared.pacer_moved.notify_one();
                        }
                    }
                    ModelMsg::Resize(size) => term.resize(size),
                    ModelMsg::Render { offset, sub, reply } => {
                        let screen = Screen { offset, size: term.size(), data: Bytes::from(term.render()) };
                        let _ = reply.send(Ok((Some(screen), sub)));
                    }
                }
            }
        });
        Model { tx, _task: tokio_util::task::AbortOnDropHandle::new(task) }
    }

    pub(super) fn send(&self, msg: ModelMsg) {
        // The task lives as long as this handle.
        let _ = self.tx.send(msg);
    }
}
