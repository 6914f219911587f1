//! The actor's answers to control messages: signals, kills, resizes and
//! screen attachments, while the command runs and once it has ended; and
//! the one way the actor talks to a shell command's shell.

use tokio::sync::mpsc::error::{SendError, TrySendError};
use tokio::sync::oneshot;

use crate::ExecError;
use crate::pty::Pty;
use crate::shell::ShellCtl;
use crate::spec::TermSize;
use crate::sys;

use super::actor::Actor;
use super::model::ModelMsg;
use super::subscription::subscribe;
use super::{Control, ExitReason, ScreenAttach};

impl Actor {
    /// A control message while the command runs.
    pub(super) fn on_control(&mut self, ctl: Control) {
        match ctl {
            Control::Signal { sig, reply } => self.signal(sig, reply),
            Control::Resize { size, reply } => {
                let _ = reply.send(self.resize(size));
            }
            Control::AttachScreen { from, size, pace, reply } => {
                if let Some(size) = size
                    && let Err(e @ ExecError::ScreenMemory { .. }) = self.resize(size)
                {
                    let _ = reply.send(Err(e));
                    return;
                }
                self.attach_screen(from, pace, reply);
            }
            Control::Kill { reason: why, reply } => {
                let r = if self.state.is_reaped() && self.pipes.iter().all(Option::is_none) {
                    Err(self.not_running())
                } else {
                    self.kill(why);
                    Ok(())
                };
                if let Some(reply) = reply {
                    let _ = reply.send(r);
                }
            }
            Control::Remove(done) => {
                self.state.remove_after_exit = true;
                self.removed = Some(done);
                self.kill(ExitReason::Killed);
            }
            Control::OpenStdin(open) => {
                let _ = open.reply.send(self.open_stdin(&open.on));
            }
        }
    }

    /// A control message once the command has ended (but for `Remove`,
    /// which ends the actor).
    pub(super) fn on_control_held(&mut self, ctl: Control) {
        match ctl {
            Control::Remove(_) => {}
            Control::OpenStdin(open) => {
                let _ = open.reply.send(None);
            }
            Control::Signal { reply, .. } | Control::Resize { reply, .. } => {
                let _ = reply.send(Err(self.not_running()));
            }
            Control::AttachScreen { from, size, pace, reply } => {
                // Rendered for the viewer's size; there is no process left
                // to tell.
                if let (Some(size), Some(model)) = (size, &self.model) {
                    if let Err(e) = self.shared.reservation.charge_screen(size) {
                        let _ = reply.send(Err(e));
                        return;
                    }
                    model.send(&self.shared, ModelMsg::Resize(size));
                }
                self.attach_screen(from, pace, reply);
            }
            Control::Kill { reply, .. } => {
                // Ended, but what it left may run (leftovers kept): a kill
                // ends that.
                let left = if self.job.is_none() { self.sweep(true) } else { 0 };
                if let Some(reply) = reply {
                    let _ = reply.send(if left > 0 { Ok(()) } else { Err(self.not_running()) });
                }
            }
        }
    }

    /// Sends a signal: a shell command's through its shell (which knows
    /// where it goes), on a terminal to the foreground job (where a
    /// keyboard's would go), else to the command's process group.
    fn signal(&mut self, sig: i32, reply: oneshot::Sender<Result<(), ExecError>>) {
        if self.state.is_reaped() {
            let _ = reply.send(Err(self.not_running()));
        } else if self.job.is_some() {
            self.to_shell(ShellCtl::Signal { id: self.shared.ident.id.clone(), sig, reply });
        } else {
            let group = self.pty.as_ref().and_then(Pty::foreground_group).unwrap_or(self.pid);
            // The command's own group through its leader's pidfd (never a
            // group that took the number after it was reaped).
            let r = match self.leader.as_ref().filter(|l| l.pid() == group) {
                Some(leader) => leader.signal_group(sig),
                None => sys::signal_group(group, sig),
            };
            let r = r.map_err(|source| ExecError::Io { context: "kill(2)", source });
            let _ = reply.send(r);
        }
    }

    /// Sends a message to a shell command's shell without ever waiting:
    /// the actor must go on draining output whatever the shell does. A
    /// message that finds the shell's queue full is sent from a task of its
    /// own (none is lost); one the shell can no longer take is answered
    /// "not running".
    pub(super) fn to_shell(&self, msg: ShellCtl) {
        let Some(job) = &self.job else { return };
        let id = self.shared.ident.id.clone();
        match job.link.shell.try_send(msg) {
            Ok(()) => {}
            Err(TrySendError::Full(msg)) => {
                let tx = job.link.shell.clone();
                tokio::spawn(async move {
                    if let Err(SendError(msg)) = tx.send(msg).await {
                        shell_gone(msg, id);
                    }
                });
            }
            Err(TrySendError::Closed(msg)) => shell_gone(msg, id),
        }
    }

    pub(super) fn not_running(&self) -> ExecError {
        ExecError::NotRunning(self.shared.ident.id.clone())
    }

    /// Sets the terminal size (the newest request wins) and tells every
    /// subscription.
    pub(super) fn resize(&mut self, size: TermSize) -> Result<(), ExecError> {
        let (Some(pty), Some(model)) = (&self.pty, &self.model) else {
            return Err(ExecError::NotRunning(self.shared.ident.id.clone()));
        };
        // The same size again: nobody is told. The terminal still gets it
        // (the kernel ignores a size it has): it may have lost it since, to
        // readline, which reads the size and writes it back as it starts a
        // line (`set_winsize` in rltty.c) and so undoes a resize landing in
        // between, or to an `stty rows`. The client's size is the screen's.
        if self.shared.output().size.is_some_and(|(s, _)| s == size) {
            return pty.resize(size);
        }
        self.shared.reservation.charge_screen(size)?;
        if let Err(e) = pty.resize(size) {
            // Charged for a size the terminal did not take: charge back.
            if let Some((old, _)) = self.shared.output().size {
                let _ = self.shared.reservation.charge_screen(old);
            }
            return Err(e);
        }
        model.send(&self.shared, ModelMsg::Resize(size));
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
            let _ = reply.send(Err(ExecError::NotAPty(self.shared.ident.id.clone())));
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
            model.send(&self.shared, ModelMsg::Render { offset: end, sub, reply });
        }
    }
}

/// Answers a message that its shell will never see.
fn shell_gone(msg: ShellCtl, id: String) {
    if let ShellCtl::Signal { reply, .. } = msg {
        let _ = reply.send(Err(ExecError::NotRunning(id)));
    }
}
