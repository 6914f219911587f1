//! The actor: the task that owns a command's process and is the only
//! writer of its output state.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::ExecError;
use crate::contain::{self, Containment, Leaf, Leftovers};
use crate::handover::{Frozen, FrozenStdin, Live, Phase};
use crate::process::{self, ExitWatch, Reaped};
use crate::pty::Pty;
use crate::shell::{JobEvent, JobLink, ShellCtl};
use crate::spec::{OutputLimit, TermSize};

use super::build::*;
use super::model::*;
use super::shared::*;
use super::source::*;
use super::stdin_writer::*;
use super::subscription::*;
use super::*;

/// When a command's processes are looked for a second time (see
/// `Actor::sweep`).
pub(super) const SWEEP_AGAIN: Duration = Duration::from_millis(200);

/// The task that owns a command's process and is the only writer of its
/// output state.
pub(crate) struct Actor {
    pub(super) shared: Arc<Shared>,
    pub(super) pid: u32,
    /// Where stdout and stderr come from; `None` once a stream has ended.
    pub(super) pipes: [Option<Source>; 2],
    /// A PTY command's terminal, until the process and its output end.
    pub(super) pty: Option<Pty>,
    /// A PTY command's screen model, fed with every stored byte of stdout.
    pub(super) model: Option<Model>,
    pub(super) ctl_rx: mpsc::Receiver<Control>,
    pub(super) stdin_writer: Option<StdinWriter>,
    /// Stops the stdin writer for a handover.
    pub(super) stdin_stop: CancellationToken,
    pub(super) life: Lifetimes,
    /// Set once the process is reaped: its pid may then be reused, so only
    /// its process group (kept alive by any remaining member) is signalled.
    pub(super) reaped: bool,
    /// Descendants that were sent SIGTERM by a timeout, to SIGKILL later.
    pub(super) terminated: Vec<u32>,
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
}

/// What the actor of a shell command holds.
pub(super) struct Job {
    pub(super) link: JobLink,
    /// Where the stdin pipe goes when the shell starts the command.
    pub(super) stdin: Option<oneshot::Sender<StdinPipe>>,
    /// The shell's cwd when the command ended.
    pub(super) cwd: Option<String>,
}

pub(super) async fn job_event(job: &mut Option<Job>) -> Option<JobEvent> {
    match job {
        Some(j) => j.link.events.recv().await,
        None => std::future::pending().await,
    }
}

pub(super) async fn exit_ready(w: &mut Option<ExitWatch>) {
    match w {
        Some(w) => w.ready().await,
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
    pub(crate) async fn run(mut self, stop: Stop) {
        let ttl_at = match self.resume.take() {
            Some(Resume::Held { ttl_left }) => ttl_left.map(|d| Instant::now() + d),
            resume => {
                let live = match resume {
                    Some(Resume::Live(l)) => Some(l),
                    _ => None,
                };
                if !self.live(&stop, live).await {
                    return;
                }
                self.life.ttl.map(|d| Instant::now() + d)
            }
        };
        self.hold(ttl_at, &stop).await;
    }

    /// The running phase: until the process is reaped and its output
    /// drained. Returns whether to keep the record for the TTL.
    pub(super) async fn live(&mut self, stop: &Stop, resumed: Option<Box<Live>>) -> bool {
        let mut stdin_task = self.stdin_writer.take().map(|w| tokio::spawn(w.run()));

        // A shell command's clock starts when its shell starts it.
        let mut started = Instant::now();
        let mut reaped: Option<(Reaped, Duration)> = None;
        let mut reason: Option<ExitReason> = None;
        let mut timeout_at = self.life.timeout.filter(|_| self.job.is_none()).map(|d| started + d);
        let mut sigkill_at: Option<Instant> = None;
        let mut idle_at: Option<Instant> = None;
        let mut drain_until: Option<Instant> = None;
        let mut truncated = false;
        let mut shutdown_seen = false;
        let mut remove_after_exit = false;
        if let Some(l) = resumed {
            let now = Instant::now();
            let at = |d: Option<Duration>| d.map(|d| now + d);
            started = now.checked_sub(l.elapsed).unwrap_or(now);
            reaped = l.reaped;
            self.reaped = reaped.is_some();
            reason = l.reason;
            timeout_at = at(l.timeout_left);
            sigkill_at = at(l.sigkill_left);
            idle_at = at(l.idle_left);
            drain_until = at(l.drain_left);
            truncated = l.truncated;
            remove_after_exit = l.remove_after_exit;
            self.terminated = l.terminated;
            self.resumed_cwd = l.cwd;
        }
        // Not for a process already reaped: its pid may belong to another.
        let mut exit_watch = (self.job.is_none() && !self.reaped).then(|| ExitWatch::new(self.pid));
        self.on_attach_change(&mut idle_at, &mut reason, reaped.is_some(), stop);

        while reaped.is_none() || self.pipes.iter().any(Option::is_some) {
            let paused = [0, 1].map(|i| self.paced_room(i) < MIN_PACED_READ);
            // When the first lingering pacer stops holding the command.
            let lingering = if paused[0] || paused[1] {
                self.shared.output().pacers.iter().filter_map(|p| p.until).min()
            } else {
                None
            };
            tokio::select! {
                biased;
                _ = stop.token.cancelled(), if !shutdown_seen => {
                    shutdown_seen = true;
                    if let Some(tx) = stop.handover.get() {
                        let left = match stdin_task.take() {
                            Some(t) => {
                                self.stdin_stop.cancel();
                                t.await.ok()
                            }
                            None => None,
                        };
                        let now = Instant::now();
                        let left_of = |t: Option<Instant>| t.map(|t| t.saturating_duration_since(now));
                        let live = Live {
                            elapsed: started.elapsed(),
                            reaped,
                            reason,
                            timeout_left: left_of(timeout_at),
                            sigkill_left: left_of(sigkill_at),
                            idle_left: left_of(idle_at),
                            drain_left: left_of(drain_until),
                            truncated,
                            remove_after_exit,
                            terminated: std::mem::take(&mut self.terminated),
                            cwd: None,
                            outputs: [None, None],
                            master: None,
                            stdin: FrozenStdin {
                                fd: None,
                                open: false,
                                pending: Default::default(),
                                close: true,
                                writers: Vec::new(),
                            },
                            lingering: self
                                .shared
                                .output()
                                .pacers
                                .iter()
                                .filter_map(|p| Some((p.next, p.until?.saturating_duration_since(now))))
                                .collect(),
                        };
                        let _ = tx.send(self.freeze_live(live, left));
                        return false;
                    }
                    if stop.kill {
                        self.kill(&mut reason, ExitReason::Killed);
                    } else {
                        // Leave the process running; the daemon is going.
                        return false;
                    }
                }
                Some(ctl) = self.ctl_rx.recv() => match ctl {
                    Control::Signal { sig, reply } => {
                        let r = if reaped.is_some() {
                            Err(ExecError::NotRunning(self.shared.id.clone()))
                        } else if let Some(job) = &self.job {
                            // The shell knows where the signal goes.
                            let msg = ShellCtl::Signal { id: self.shared.id.clone(), sig, reply };
                            if let Err(mpsc::error::SendError(ShellCtl::Signal { reply, .. })) =
                                job.link.shell.send(msg).await
                            {
                                let _ = reply.send(Err(ExecError::NotRunning(self.shared.id.clone())));
                            }
                            continue;
                        } else {
                            // On a terminal, signals go where a keyboard's
                            // would: to the foreground job.
                            let group = self.pty.as_ref().and_then(Pty::foreground_group).unwrap_or(self.pid);
                            process::signal_group(group, sig)
                                .map_err(|source| ExecError::Io { context: "kill(2)", source })
                        };
                        let _ = reply.send(r);
                    }
                    Control::Resize { size, reply } => {
                        let _ = reply.send(self.resize(size));
                    }
                    Control::AttachScreen { from, size, pace, reply } => {
                        if let Some(size) = size
                            && let Err(e @ ExecError::ScreenMemory { .. }) = self.resize(size)
                        {
                            let _ = reply.send(Err(e));
                            continue;
                        }
                        self.attach_screen(from, pace, reply);
                    }
                    Control::Kill { reason: why, reply } => {
                        let r = if reaped.is_some() && self.pipes.iter().all(Option::is_none) {
                            Err(ExecError::NotRunning(self.shared.id.clone()))
                        } else {
                            self.kill(&mut reason, why);
                            Ok(())
                        };
                        if let Some(reply) = reply {
                            let _ = reply.send(r);
                        }
                    }
                    Control::Remove => {
                        remove_after_exit = true;
                        self.kill(&mut reason, ExitReason::Killed);
                    }
                },
                ev = job_event(&mut self.job), if reaped.is_none() => match ev {
                    Some(JobEvent::Started { stdin, stdout, stderr }) => {
                        started = Instant::now();
                        timeout_at = self.life.timeout.map(|d| started + d);
                        self.pipes = [Some(Source::Pipe(stdout)), Some(Source::Pipe(stderr))];
                        if let Some(slot) = self.job.as_mut().and_then(|j| j.stdin.take()) {
                            let _ = slot.send(StdinPipe::Pipe(stdin));
                        }
                        self.shared.output().queued = false;
                        self.shared.changed.send_modify(|v| *v += 1);
                    }
                    Some(JobEvent::Ended { code, signal, cwd, reason: why }) => {
                        if let Some(why) = why {
                            reason.get_or_insert(why);
                        }
                        if let Some(job) = &mut self.job {
                            job.cwd = cwd;
                        }
                        let r = Reaped { code, signal, ..Reaped::unknown() };
                        self.reaped = true;
                        reaped = Some((r, started.elapsed()));
                        drain_until = Some(Instant::now() + self.life.drain_grace);
                        timeout_at = None;
                        idle_at = None;
                    }
                    None => {
                        // The shell went away without a word.
                        reason.get_or_insert(ExitReason::ShellClosed);
                        self.reaped = true;
                        reaped = Some((Reaped::unknown(), started.elapsed()));
                        drain_until = Some(Instant::now() + self.life.drain_grace);
                    }
                },
                _ = exit_ready(&mut exit_watch), if reaped.is_none() => {
                    match process::try_reap(self.pid) {
                        Ok(Some(r)) => {
                            self.reaped = true;
                            reaped = Some((r, started.elapsed()));
                            drain_until = Some(Instant::now() + self.life.drain_grace);
                            timeout_at = None;
                            idle_at = None;
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::error!("wait4 failed: {e}");
                            self.reaped = true;
                            reaped = Some((Reaped::unknown(), started.elapsed()));
                        }
                    }
                }
                r = readable(&self.pipes[0]), if !paused[0] => {
                    self.drain(0, r, &mut reason, &mut truncated, false);
                }
                r = readable(&self.pipes[1]), if !paused[1] => {
                    self.drain(1, r, &mut reason, &mut truncated, false);
                }
                // A pacing reader advanced or left: re-check the pause.
                _ = self.shared.pacer_moved.notified(), if paused[0] || paused[1] => {}
                _ = at(lingering) => {
                    let now = Instant::now();
                    self.shared.output().pacers.retain(|p| p.until.is_none_or(|u| u > now));
                }
                _ = self.shared.attach_changed.notified() => {
                    self.on_attach_change(&mut idle_at, &mut reason, reaped.is_some(), stop);
                }
                _ = at(timeout_at) => {
                    timeout_at = None;
                    if self.job.is_some() {
                        // The shell interrupts, then escalates.
                        self.kill(&mut reason, ExitReason::TimedOut);
                        continue;
                    }
                    reason.get_or_insert(ExitReason::TimedOut);
                    self.terminated = process::signal_tree(self.pid, self.pid, libc::SIGTERM);
                    sigkill_at = Some(Instant::now() + self.life.kill_grace);
                }
                _ = at(sigkill_at) => {
                    sigkill_at = None;
                    self.kill(&mut reason, ExitReason::TimedOut);
                }
                _ = at(idle_at) => {
                    idle_at = None;
                    self.kill(&mut reason, ExitReason::IdleTimeout);
                }
                _ = at(drain_until) => {
                    // The process is gone but a descendant holds a pipe open:
                    // take what the pipe buffers hold, then stop reading.
                    // A stream held back by a pacing reader stays open until
                    // it has caught up.
                    drain_until = None;
                    for i in 0..2 {
                        if self.drain(i, Ok(()), &mut reason, &mut truncated, true) {
                            drain_until = Some(Instant::now() + self.life.drain_grace);
                        } else if let (Some(Source::Pipe(p)), Some(job)) = (self.pipes[i].take(), &self.job) {
                            // A background job of the shell still holds the
                            // pipe: keep its reader open (closing it would
                            // kill the job with SIGPIPE) for the shell's life.
                            crate::shell::linger(p, job.link.linger.clone());
                        }
                    }
                }
            }
        }
        // The pidfd and the terminal are not needed for the TTL phase: give
        // the fds back. The screen model stays, for viewers of the end.
        drop(exit_watch);
        self.pty = None;
        if let Some(t) = stdin_task {
            t.abort();
        }
        let cwd = self.job.as_mut().and_then(|j| j.cwd.take()).or(self.resumed_cwd.take());
        if reason.is_some() && self.job.is_none() {
            // We killed it: make sure no member of its group outlives it,
            // even one that ignored SIGTERM after the leader died.
            let _ = process::signal_group(self.pid, libc::SIGKILL);
            process::signal_pids(&std::mem::take(&mut self.terminated), libc::SIGKILL);
            self.sweep(true);
        } else if self.job.is_none() && self.containment.leftovers() == Leftovers::Kill {
            // It ended by itself: what it left running (background jobs,
            // daemons it started) ends with it. Not by process group: the
            // leader is reaped, so its pid may be a new group's by now
            // (pid_max is 32768 on many hosts).
            self.sweep(!self.containment.subreaper());
        }

        let (r, wall) = reaped.unwrap_or((Reaped::unknown(), started.elapsed()));
        let exit = {
            let mut out = self.shared.output();
            let exit = ExitInfo {
                code: r.code,
                signal: r.signal,
                core_dumped: r.core_dumped,
                reason: reason.unwrap_or(ExitReason::Exited),
                wall,
                user_us: r.user_us,
                sys_us: r.sys_us,
                max_rss_kb: r.max_rss_kb,
                ends: [out.rings[0].end(), out.rings[1].end()],
                truncated,
                cwd,
            };
            out.exit = Some(exit.clone());
            exit
        };
        self.shared.changed.send_modify(|v| *v += 1);
        tracing::info!(
            code = ?exit.code,
            signal = ?exit.signal,
            reason = ?exit.reason,
            wall_ms = exit.wall.as_millis() as u64,
            "command finished"
        );

        // Keep the record attachable for the TTL.
        !remove_after_exit
    }

    /// The finished phase: the record stays attachable until `ttl_at`.
    pub(super) async fn hold(&mut self, ttl_at: Option<Instant>, stop: &Stop) {
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
                    Some(Control::Remove) | None => return,
                    Some(Control::Signal { reply, .. }) => {
                        let _ = reply.send(Err(ExecError::NotRunning(self.shared.id.clone())));
                    }
                    Some(Control::Resize { reply, .. }) => {
                        let _ = reply.send(Err(ExecError::NotRunning(self.shared.id.clone())));
                    }
                    Some(Control::AttachScreen { from, size, pace, reply }) => {
                        // Rendered for the viewer's size; there is no
                        // process left to tell.
                        if let (Some(size), Some(model)) = (size, &self.model) {
                            if let Err(e) = self.shared.reservation.charge_screen(size) {
                                let _ = reply.send(Err(e));
                                continue;
                            }
                            model.send(ModelMsg::Resize(size));
                        }
                        self.attach_screen(from, pace, reply);
                    }
                    Some(Control::Kill { reply, .. }) => {
                        // Ended, but what it left may run (leftovers kept):
                        // a kill ends that.
                        let left = if self.job.is_none() { self.sweep(true) } else { 0 };
                        if let Some(reply) = reply {
                            let r = if left > 0 { Ok(()) } else { Err(ExecError::NotRunning(self.shared.id.clone())) };
                            let _ = reply.send(r);
                        }
                    }
                },
            }
        }
    }

    /// The command's record for a handover, in `phase`.
    pub(super) fn freeze(&self, phase: Phase) -> Frozen {
        let s = &self.shared;
        let out = s.output();
        Frozen {
            id: s.id.clone(),
            name: s.name.clone(),
            labels: s.labels.clone(),
            argv: s.argv.clone(),
            pid: s.pid,
            started_at: s.started_at,
            shell: s.shell.clone(),
            request_key: s.request_key.clone(),
            rings: [out.rings[0].freeze(), out.rings[1].freeze()],
            seq: out.seq,
            size: out.size,
            ever_attached: s.ever_attached.load(Ordering::SeqCst),
            life: self.life.clone(),
            phase,
        }
    }

    /// A running command's record and fds for a handover. A shell
    /// command cannot outlive its shell, which is not handed over: one
    /// still running counts as ended (`shell_closed`).
    pub(super) fn freeze_live(&mut self, mut live: Live, stdin: Option<StdinLeft>) -> (Frozen, Vec<OwnedFd>) {
        let mut fds = Vec::new();
        let mut keep = |fd: io::Result<OwnedFd>, what: &str| match fd {
            Ok(fd) => {
                let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
                fds.push(fd);
                Some(raw)
            }
            Err(e) => {
                tracing::warn!(id = %self.shared.id, "{what} not handed over: {e}");
                None
            }
        };
        if let Some(job) = &mut self.job {
            live.cwd = job.cwd.take();
            if live.reaped.is_none() {
                live.reaped = Some((Reaped::unknown(), live.elapsed));
                live.reason.get_or_insert(ExitReason::ShellClosed);
            }
        }
        live.master = self.pty.take().map(Pty::into_master).and_then(|fd| keep(Ok(fd), "terminal"));
        for i in 0..2 {
            live.outputs[i] = match self.pipes[i].take() {
                Some(Source::Pipe(p)) => keep(p.into_blocking_fd(), "output pipe"),
                Some(Source::Pty(_)) => live.master,
                None => None,
            };
        }
        if let Some(left) = stdin {
            live.stdin.open = self.shared.stdin_open.load(Ordering::SeqCst);
            live.stdin.pending = serde_bytes::ByteBuf::from(left.pending.to_vec());
            live.stdin.close = left.close;
            live.stdin.fd = match left.pipe {
                Some(StdinPipe::Pipe(p)) => keep(p.into_blocking_fd(), "stdin pipe"),
                _ => None,
            };
        }
        live.stdin.writers = self.shared.writers().freeze();
        (self.freeze(Phase::Live(Box::new(live))), fds)
    }

    /// Sets the terminal size (the newest request wins) and tells every
    /// subscription.
    pub(super) fn resize(&mut self, size: TermSize) -> Result<(), ExecError> {
        let (Some(pty), Some(model)) = (&self.pty, &self.model) else {
            return Err(ExecError::NotRunning(self.shared.id.clone()));
        };
        // The same size again: nothing changes, nobody is told.
        if self.shared.output().size.is_some_and(|(s, _)| s == size) {
            return Ok(());
        }
        self.shared.reservation.charge_screen(size)?;
        if let Err(e) = pty.resize(size) {
            // Charged for a size the terminal did not take: charge back.
            if let Some((old, _)) = self.shared.output().size {
                let _ = self.shared.reservation.charge_screen(old);
            }
            return Err(e);
        }
        model.send(ModelMsg::Resize(size));
        {
            let mut out = self.shared.output();
            let n = out.size.map_or(0, |(_, n)| n);
            out.size = Some((size, n + 1));
        }
        self.shared.changed.send_modify(|v| *v += 1);
        Ok(())
    }

    /// Replies with the screen and a subscription from the offset it
    /// reflects, or, for a non-zero offset still held, a subscription from
    /// there. The screen is rendered by the model task after it has parsed
    /// every byte stored so far (its channel is in order), i.e. exactly at
    /// the ring's end now, where the subscription starts.
    pub(super) fn attach_screen(
        &mut self,
        from: u64,
        pace: bool,
        reply: oneshot::Sender<Result<ScreenAttach, ExecError>>,
    ) {
        let Some(model) = &self.model else {
            let _ = reply.send(Err(ExecError::NotAPty(self.shared.id.clone())));
            return;
        };
        let (first_held, end) = {
            let out = self.shared.output();
            (out.rings[0].first_held(), out.rings[0].end())
        };
        if from > end {
            let _ = reply.send(Err(ExecError::OffsetBeyondEnd { asked: from, end }));
        } else if from != 0 && from >= first_held {
            let _ = reply.send(Ok((None, subscribe(&self.shared, [from, 0], pace))));
        } else {
            let sub = subscribe(&self.shared, [end, 0], pace);
            model.send(ModelMsg::Render { offset: end, sub, reply });
        }
    }

    /// Kills what is left of the command (see [`contain::sweep`]); returns
    /// how many processes (or populated cgroups) were found.
    pub(super) fn sweep(&self, thorough: bool) -> usize {
        let found = contain::sweep(&self.shared.id, self.leaf.as_ref(), thorough);
        if self.leaf.is_none() {
            // A process caught inside execve shows no environment (so no
            // marker) for a moment: look once more, shortly.
            let id = self.shared.id.clone();
            tokio::spawn(async move {
                tokio::time::sleep(SWEEP_AGAIN).await;
                let _ = tokio::task::spawn_blocking(move || contain::sweep(&id, None, thorough)).await;
            });
        }
        found
    }

    pub(super) fn kill(&mut self, reason: &mut Option<ExitReason>, why: ExitReason) {
        reason.get_or_insert(why);
        if let Some(job) = &self.job {
            if !self.reaped {
                let msg = ShellCtl::Kill { id: self.shared.id.clone(), reason: why };
                if let Err(mpsc::error::TrySendError::Full(msg)) = job.link.shell.try_send(msg) {
                    // Never lose a kill: wait for room in a task of its own.
                    let tx = job.link.shell.clone();
                    tokio::spawn(async move {
                        let _ = tx.send(msg).await;
                    });
                }
            }
            return;
        }
        if self.reaped {
            let _ = process::signal_group(self.pid, libc::SIGKILL);
        } else {
            process::signal_tree(self.pid, self.pid, libc::SIGKILL);
        }
        // Descendants found when SIGTERM went out: one that left the group
        // and outlived the leader can no longer be found from it.
        process::signal_pids(&std::mem::take(&mut self.terminated), libc::SIGKILL);
        // And those that left the tree as well (a double-forked daemon).
        self.sweep(true);
    }

    pub(super) fn on_attach_change(
        &mut self,
        idle_at: &mut Option<Instant>,
        reason: &mut Option<ExitReason>,
        exited: bool,
        stop: &Stop,
    ) {
        if exited {
            return;
        }
        if self.shared.attached.load(Ordering::SeqCst) > 0 {
            *idle_at = None;
            return;
        }
        // A restart closes every connection: that is not the client leaving.
        let restarting = stop.restarting.load(Ordering::SeqCst);
        if self.life.kill_on_disconnect && self.shared.ever_attached.load(Ordering::SeqCst) && !restarting {
            tracing::info!(id = %self.shared.id, "last client gone: killing (kill_on_disconnect)");
            self.kill(reason, ExitReason::Disconnected);
            return;
        }
        if idle_at.is_none() {
            *idle_at = self.life.idle_timeout.map(|d| Instant::now() + d);
        }
    }

    /// Room stream `i` has before a pacing reader would lose data
    /// (`u64::MAX` without pacing readers).
    pub(super) fn paced_room(&self, i: usize) -> u64 {
        if self.pipes[i].is_none() {
            return u64::MAX;
        }
        let room = self.shared.output().pace_room(i).unwrap_or(u64::MAX);
        if i == 0 && self.model.is_some() {
            // The screen model may lag this far behind; past it, reading
            // waits for it (and the command for us).
            let lag = self.shared.model_lag.load(Ordering::SeqCst);
            return room.min(MODEL_MAX_LAG.saturating_sub(lag) as u64);
        }
        room
    }

    /// Reads what pipe `i` has into its ring: a bounded number of reads (or,
    /// with `to_empty`, until the pipe is empty), so one busy stream cannot
    /// starve the actor's other duties, and never past a pacing reader's
    /// room. Returns whether it stopped for a pacing reader.
    pub(super) fn drain(
        &mut self,
        i: usize,
        ready: io::Result<()>,
        reason: &mut Option<ExitReason>,
        truncated: &mut bool,
        to_empty: bool,
    ) -> bool {
        if let Err(e) = ready {
            tracing::warn!(id = %self.shared.id, "pipe poll failed: {e}");
            self.pipes[i] = None;
            return false;
        }
        let mut pushed = false;
        let mut stalled = false;
        // Even "to empty" is bounded (a full 1 MiB pipe and then some), so
        // a descendant that writes without pause cannot pin this thread.
        let max_reads = if to_empty { 16 } else { 8 };
        for _ in 0..max_reads {
            let room = self.paced_room(i);
            if room < MIN_PACED_READ {
                stalled = true;
                break;
            }
            let Some(p) = &self.pipes[i] else { break };
            let want = room.min(READ_BYTES as u64) as usize;
            match p.try_read(want) {
                Ok(Some(data)) => {
                    if self.store(i, data, reason, truncated) {
                        pushed = true;
                    }
                }
                Ok(None) => {
                    self.pipes[i] = None;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(id = %self.shared.id, "pipe read failed: {e}");
                    self.pipes[i] = None;
                    break;
                }
            }
        }
        if pushed {
            self.shared.changed.send_modify(|v| *v += 1);
        }
        stalled
    }

    /// Stores a chunk, applying the output limit. Returns whether anything
    /// was stored.
    pub(super) fn store(
        &mut self,
        i: usize,
        mut data: Bytes,
        reason: &mut Option<ExitReason>,
        truncated: &mut bool,
    ) -> bool {
        let mut out = self.shared.output();
        if let Some(max) = self.life.max_output_bytes {
            let total = out.rings[0].end() + out.rings[1].end();
            let room = max.saturating_sub(total);
            if (data.len() as u64) > room {
                data.truncate(room as usize);
                *truncated = true;
                if self.life.output_limit == OutputLimit::Kill && reason.is_none() {
                    drop(out);
                    tracing::info!(id = %self.shared.id, "output limit reached: killing");
                    self.kill(reason, ExitReason::OutputLimit);
                    out = self.shared.output();
                }
            }
        }
        if data.is_empty() {
            return false;
        }
        let seq = out.seq;
        out.seq += 1;
        out.rings[i].push(data.clone(), seq);
        drop(out);
        if let Some(model) = self.model.as_ref().filter(|_| i == 0) {
            self.shared.model_lag.fetch_add(data.len() + MODEL_CHUNK_CHARGE, Ordering::SeqCst);
            model.send(ModelMsg::Feed(data));
        }
        true
    }
}

impl Reaped {
    /// Status for a child whose wait failed (should not happen).
    pub(crate) fn unknown() -> Reaped {
        Reaped { code: None, signal: None, core_dumped: false, user_us: 0, sys_us: 0, max_rss_kb: 0 }
    }
}
