//! The actor: the task that owns a command's process and is the only
//! writer of its output state. This file holds its two phases' loops; each
//! arm is a call to a method in `ending`, `control`, `drain` or `freeze`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::contain::{Containment, Leaf};
use crate::handover::Phase;
use crate::pty::Pty;
use crate::shell::{JobEvent, JobLink};
use crate::sys::Process;

use super::build::{Lifetimes, Resume};
use super::model::Model;
use super::pacing::MIN_PACED_READ;
use super::shared::Shared;
use super::source::{Source, readable};
use super::state::LiveState;
use super::stdin_writer::{StdinLeft, StdinMsg, StdinPipe, StdinWriter};
use super::{Control, ExitReason, Stop};

/// The task that owns a command's process and is the only writer of its
/// output state.
pub(crate) struct Actor {
    pub(super) shared: Arc<Shared>,
    pub(super) pid: u32,
    /// The process while it is not reaped, held through a pidfd (`None`
    /// for a shell command, whose process is its shell's).
    pub(super) leader: Option<Process>,
    /// Where stdout and stderr come from; `None` once a stream has ended.
    pub(super) pipes: [Option<Source>; 2],
    /// A PTY command's terminal, until the process and its output end.
    pub(super) pty: Option<Pty>,
    /// A PTY command's screen model, fed with every stored byte of stdout.
    pub(super) model: Option<Model>,
    pub(super) ctl_rx: mpsc::Receiver<Control>,
    /// The stdin writer until it starts (see [`Shared::stdin_tx`]).
    pub(super) stdin_writer: Option<StdinWriter>,
    /// The stdin writer's task, once it has started.
    pub(super) stdin_task: Option<JoinHandle<StdinLeft>>,
    /// Stops the stdin writer for a handover.
    pub(super) stdin_stop: CancellationToken,
    pub(super) life: Lifetimes,
    /// Everything the running phase mutates.
    pub(super) state: LiveState,
    /// A shell command: its link to the shell, which starts it, signals and
    /// kills it, and reports its end. `pid` is then the shell's.
    pub(super) job: Option<Job>,
    /// A command handed over by a previous daemon: where it was.
    pub(super) resume: Option<Resume>,
    /// A handed-over shell command's final cwd.
    pub(super) resumed_cwd: Option<String>,
    /// How the command's processes are found and ended.
    pub(super) containment: Arc<Containment>,
    /// The command's cgroup, if it has one.
    pub(super) leaf: Option<Leaf>,
    /// A `remove` waiting for the actor's end (see [`Actor::end`]).
    pub(super) removed: Option<oneshot::Sender<()>>,
}

/// What the actor of a shell command holds.
pub(super) struct Job {
    pub(super) link: JobLink,
    /// Where the stdin pipe goes when the shell starts the command.
    pub(super) stdin: Option<oneshot::Sender<StdinPipe>>,
    /// The shell's cwd when the command ended.
    pub(super) cwd: Option<String>,
}

async fn job_event(job: &mut Option<Job>) -> Option<JobEvent> {
    match job {
        Some(j) => j.link.events.recv().await,
        None => std::future::pending().await,
    }
}

async fn exit_ready(leader: &mut Option<Process>) {
    match leader {
        Some(p) => p.ready().await,
        None => std::future::pending().await,
    }
}

pub(super) async fn at(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

impl Actor {
    /// Runs the command to its end, then keeps its record for the TTL.
    /// Returns when the record should be removed from the registry.
    ///
    /// It borrows the actor: its owner's task holds it once. An async fn
    /// taking `mut self` would hold it twice (the argument and its mutable
    /// binding), 736 bytes more in every command's task.
    pub(crate) async fn run(&mut self, stop: &Stop) {
        let ttl_at = match self.resume.take() {
            Some(Resume::Held { ttl_left }) => ttl_left.map(|d| Instant::now() + d),
            Some(Resume::Live) | None => {
                if !self.live(stop).await {
                    return;
                }
                self.life.ttl.map(|d| Instant::now() + d)
            }
        };
        self.hold(ttl_at, stop).await;
    }

    /// The running phase: until the process is reaped and its output
    /// drained. Returns whether to keep the record for the TTL.
    async fn live(&mut self, stop: &Stop) -> bool {
        if self.stdin_writer.as_ref().is_some_and(StdinWriter::needed_now) {
            self.open_stdin(&tokio::runtime::Handle::current());
        }
        self.on_attach_change(stop);

        while !self.state.is_reaped() || self.pipes.iter().any(Option::is_some) {
            let paused = [0, 1].map(|i| self.paced_room(i) < MIN_PACED_READ);
            // When the first lingering pacer stops holding the command.
            let lingering =
                if paused[0] || paused[1] { self.shared.output().pacing.next_expiry() } else { None };
            let running = !self.state.is_reaped();
            // One timer for every deadline (a tokio `Sleep` each would cost
            // every running command a few hundred bytes more).
            let next = self.state.next_deadline().into_iter().chain(lingering).min();
            tokio::select! {
                biased;
                _ = stop.token.cancelled(), if !self.state.stop_seen => {
                    if !self.on_stop(stop).await {
                        return false;
                    }
                }
                Some(ctl) = self.ctl_rx.recv() => self.on_control(ctl),
                ev = job_event(&mut self.job), if running => self.on_job_event(ev),
                _ = exit_ready(&mut self.leader), if running => self.on_exit_ready(),
                r = readable(&self.pipes[0]), if !paused[0] => {
                    self.drain(0, r, false);
                }
                r = readable(&self.pipes[1]), if !paused[1] => {
                    self.drain(1, r, false);
                }
                // A pacing reader advanced or left: re-check the pause.
                _ = self.shared.pacer_moved.notified(), if paused[0] || paused[1] => {}
                _ = self.shared.attach_changed.notified() => self.on_attach_change(stop),
                _ = at(next) => self.on_deadlines(Instant::now()),
            }
        }
        // The pidfd and the terminal are not needed for the TTL phase: give
        // the fds back. The screen model stays, for viewers of the end.
        self.leader = None;
        self.pty = None;
        self.stdin_writer = None;
        if let Some(t) = self.stdin_task.take() {
            t.abort();
        }
        self.finish()
    }

    /// The daemon stops: hand the command over (its state and fds go to
    /// the handover slot), kill it, or leave it running. Returns whether
    /// the actor goes on (to see its command end).
    async fn on_stop(&mut self, stop: &Stop) -> bool {
        self.state.stop_seen = true;
        if let Some(tx) = stop.handover.get() {
            let left = match self.stdin_task.take() {
                Some(t) => {
                    self.stdin_stop.cancel();
                    t.await.ok()
                }
                None => self.stdin_writer.take().map(StdinWriter::unstarted),
            };
            let _ = tx.send(self.freeze_live(left));
            return false;
        }
        if !stop.kill {
            // Leave the process running; the daemon is going.
            return false;
        }
        self.kill(ExitReason::Killed);
        true
    }

    /// Starts the stdin writer on `on` if it has not started (while the
    /// command runs); returns its queue, `None` once stdin is gone.
    pub(super) fn open_stdin(&mut self, on: &tokio::runtime::Handle) -> Option<mpsc::Sender<StdinMsg>> {
        if let Some(tx) = self.shared.stdin_tx.get() {
            return Some(tx.clone());
        }
        let w = self.stdin_writer.take()?;
        self.stdin_task = Some(w.start(&self.shared, on));
        self.shared.stdin_tx.get().cloned()
    }

    /// After [`Actor::run`]: the command is no longer held, so its slot and
    /// memory go back now (a handle or a lagging subscriber may keep the
    /// record alive a moment longer), and then a waiting `remove` hears of
    /// it.
    pub(crate) fn end(&mut self) {
        self.shared.reservation.release();
        self.removed = None;
    }

    /// The finished phase: the record stays attachable until `ttl_at`.
    async fn hold(&mut self, ttl_at: Option<Instant>, stop: &Stop) {
        loop {
            tokio::select! {
                _ = at(ttl_at) => return,
                _ = stop.token.cancelled() => {
                    if let Some(tx) = stop.handover.get() {
                        let ttl_left = ttl_at.map(|t| t.saturating_duration_since(Instant::now()));
                        let exit = self.shared.output().exit.clone();
                        if let Some(exit) = exit {
                            let _ = tx.send((self.freeze(Phase::Held { exit, ttl_left }), Vec::new()));
                        }
                    }
                    return;
                }
                ctl = self.ctl_rx.recv() => match ctl {
                    Some(Control::Remove(done)) => {
                        self.removed = Some(done);
                        return;
                    }
                    None => return,
                    Some(ctl) => self.on_control_held(ctl),
                },
            }
        }
    }
}

/// When a command's processes are looked for a second time (see
/// `Actor::sweep`).
pub(super) const SWEEP_AGAIN: Duration = Duration::from_millis(200);
