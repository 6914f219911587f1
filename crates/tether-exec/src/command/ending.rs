//! How a command ends: its process reaped (or reported ended by its
//! shell), its deadlines (timeout, SIGKILL escalation, idle, drain), kills,
//! what it leaves running, and its exit record.

use std::sync::atomic::Ordering;

use tokio::time::Instant;

use crate::contain::{self, Leftovers};
use crate::shell::{JobEvent, ShellCtl};
use crate::sys::{self, Reaped};

use super::actor::{Actor, SWEEP_AGAIN};
use super::source::Source;
use super::stdin_writer::StdinPipe;
use super::{ExitReason, Stop};

impl Actor {
    /// What a shell command's shell reports: the command started, ended,
    /// or (`None`) the shell went away without a word.
    pub(super) fn on_job_event(&mut self, ev: Option<JobEvent>) {
        match ev {
            Some(JobEvent::Started { stdin, stdout, stderr }) => {
                self.state.on_started(&self.life);
                self.pipes = [Some(Source::Pipe(stdout)), Some(Source::Pipe(stderr))];
                if let Some(slot) = self.job.as_mut().and_then(|j| j.stdin.take()) {
                    let _ = slot.send(StdinPipe::Pipe(stdin));
                }
                self.shared.output().queued = false;
                self.shared.changed.send_modify(|v| *v += 1);
            }
            Some(JobEvent::Ended { code, signal, cwd, reason }) => {
                if let Some(why) = reason {
                    self.state.end_for(why);
                }
                if let Some(job) = &mut self.job {
                    job.cwd = cwd;
                }
                self.state.on_reaped(Reaped { code, signal, ..Reaped::unknown() }, &self.life);
            }
            None => {
                self.state.end_for(ExitReason::ShellClosed);
                self.state.on_reaped(Reaped::unknown(), &self.life);
            }
        }
    }

    /// The process's pidfd is readable: reap it.
    pub(super) fn on_exit_ready(&mut self) {
        let Some(leader) = &self.leader else { return };
        match leader.try_reap() {
            Ok(Some(r)) => self.state.on_reaped(r, &self.life),
            Ok(None) => {}
            Err(e) => {
                tracing::error!(command = %self.shared.ident.id, "wait4 failed: {e}");
                self.state.on_reaped(Reaped::unknown(), &self.life);
            }
        }
    }

    /// Whatever deadlines have come by `now`, in order: the timeout, the
    /// SIGKILL after it, the idle timeout, the drain deadline, and the
    /// lingering pacers that stop holding the command.
    pub(super) fn on_deadlines(&mut self, now: Instant) {
        let due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
        if due(self.state.timeout_at) {
            self.on_timeout();
        }
        if due(self.state.sigkill_at) {
            self.on_sigkill();
        }
        if due(self.state.idle_at) {
            self.on_idle();
        }
        if due(self.state.drain_until) {
            self.on_drain_deadline();
        }
        self.shared.output().pacing.expire(now);
    }

    /// The wall-clock timeout: a shell command is interrupted by its shell
    /// (which escalates); any other gets SIGTERM, and SIGKILL after the
    /// kill grace.
    fn on_timeout(&mut self) {
        if self.job.is_some() {
            self.state.timeout_at = None;
            self.kill(ExitReason::TimedOut);
            return;
        }
        let terminated = match &self.leader {
            Some(leader) => sys::signal_tree_remembered(leader, libc::SIGTERM),
            None => Vec::new(),
        };
        self.state.on_timeout(&self.life, terminated);
    }

    /// The kill grace after a timeout's SIGTERM is over.
    fn on_sigkill(&mut self) {
        self.state.sigkill_at = None;
        self.kill(ExitReason::TimedOut);
    }

    /// Nobody was attached for the idle timeout.
    fn on_idle(&mut self) {
        self.state.idle_at = None;
        self.kill(ExitReason::IdleTimeout);
    }

    /// The process is gone but a descendant holds a pipe open: take what
    /// the pipe buffers hold, then stop reading. A stream held back by a
    /// pacing reader stays open until it has caught up.
    fn on_drain_deadline(&mut self) {
        let mut again = false;
        for i in 0..2 {
            if self.drain(i, Ok(()), true) {
                again = true;
            } else if let (Some(Source::Pipe(p)), Some(job)) = (self.pipes[i].take(), &self.job) {
                // A background job of the shell still holds the pipe: keep
                // its reader open (closing it would kill the job with
                // SIGPIPE) for the shell's life.
                crate::shell::linger(p, job.link.linger.clone());
            }
        }
        self.state.rearm_drain(again, &self.life);
    }

    /// Clients came or went: no idle timeout while one is attached; when
    /// the last one leaves, kill-on-disconnect or the idle timeout.
    pub(super) fn on_attach_change(&mut self, stop: &Stop) {
        if self.state.is_reaped() {
            return;
        }
        if self.shared.attached.load(Ordering::SeqCst) > 0 {
            self.state.disarm_idle();
            return;
        }
        // A restart closes every connection: that is not the client leaving.
        let restarting = stop.restarting.load(Ordering::SeqCst);
        if self.life.kill_on_disconnect && self.shared.ever_attached.load(Ordering::SeqCst) && !restarting {
            tracing::info!(command = %self.shared.ident.id, "last client gone: killing (kill_on_disconnect)");
            self.kill(ExitReason::Disconnected);
            return;
        }
        self.state.arm_idle(&self.life);
    }

    /// Kills the command (the first reason given is the one reported): a
    /// shell command through its shell, any other with every descendant.
    pub(super) fn kill(&mut self, why: ExitReason) {
        self.state.end_for(why);
        // A killed command is not held back by its readers any more.
        self.shared.output().pacing.release();
        if self.job.is_some() {
            if !self.state.is_reaped() {
                self.to_shell(ShellCtl::Kill { id: self.shared.ident.id.clone(), reason: why });
            }
            return;
        }
        if self.state.is_reaped() {
            // Its pid may be reused now: only its process group (kept
            // alive by any remaining member) is signalled.
            let _ = sys::signal_group(self.pid, libc::SIGKILL);
        } else {
            sys::signal_tree(self.pid, libc::SIGKILL);
        }
        // Descendants found when SIGTERM went out: one that left the group
        // and outlived the leader can no longer be found from it.
        self.kill_terminated();
        // And those that left the tree as well (a double-forked daemon).
        self.sweep(true);
    }

    /// SIGKILLs the descendants a timeout sent SIGTERM (through their
    /// pidfds: one that ended meanwhile is not mistaken for a stranger
    /// with its pid).
    fn kill_terminated(&mut self) {
        for p in std::mem::take(&mut self.state.terminated) {
            let _ = p.signal(libc::SIGKILL);
        }
    }

    /// Kills what is left of the command (see [`contain::sweep`]); returns
    /// how many processes (or populated cgroups) were found.
    pub(super) fn sweep(&self, thorough: bool) -> usize {
        let found = contain::sweep(&self.shared.ident.id, self.leaf.as_ref(), thorough);
        if self.leaf.is_none() {
            // A process caught inside execve shows no environment (so no
            // marker) for a moment: look once more, shortly.
            let id = self.shared.ident.id.clone();
            tokio::spawn(async move {
                tokio::time::sleep(SWEEP_AGAIN).await;
                let _ = tokio::task::spawn_blocking(move || contain::sweep(&id, None, thorough)).await;
            });
        }
        found
    }

    /// The process is reaped and its output drained: end what it left
    /// running and publish its exit. Returns whether to keep the record
    /// for the TTL.
    pub(super) fn finish(&mut self) -> bool {
        let cwd = self.job.as_mut().and_then(|j| j.cwd.take()).or(self.resumed_cwd.take());
        if self.state.reason.is_some() && self.job.is_none() {
            // We killed it: make sure no member of its group outlives it,
            // even one that ignored SIGTERM after the leader died.
            let _ = sys::signal_group(self.pid, libc::SIGKILL);
            self.kill_terminated();
            self.sweep(true);
        } else if self.job.is_none() && self.containment.leftovers() == Leftovers::Kill {
            // It ended by itself: what it left running (background jobs,
            // daemons it started) ends with it. Not by process group: the
            // leader is reaped, so its pid may be a new group's by now
            // (pid_max is 32768 on many hosts).
            self.sweep(!self.containment.subreaper());
        }
        let exit = {
            let mut out = self.shared.output();
            let exit = self.state.exit_info(out.ends(), cwd);
            out.exit = Some(exit.clone());
            exit
        };
        self.shared.settle_reservation();
        self.shared.changed.send_modify(|v| *v += 1);
        tracing::info!(
            code = ?exit.code,
            signal = ?exit.signal,
            reason = ?exit.reason,
            wall_ms = exit.wall.as_millis() as u64,
            "command finished"
        );
        // Keep the record attachable for the TTL.
        !self.state.remove_after_exit
    }
}
