//! Ending a shell's command: signals the way a terminal sends them
//! (Ctrl-C is SIGINT to the shell's process group), the re-sends for
//! processes that missed an interrupt, and the escalation to SIGTERM and
//! SIGKILL of the command's own processes until the shell reports it ended
//! (or is declared stuck and killed).

use std::io;

use tokio::time::{Duration, Instant};

use super::actor::{Current, ShellActor};
use crate::ExecError;
use crate::command::ExitReason;
use crate::sys;

/// After an interrupt, how often and how many times to look for processes
/// that missed it.
const RECHECK_EVERY: Duration = Duration::from_millis(100);
const RECHECKS: u32 = 5;

/// Escalation rounds (one per kill grace) before a command that does not
/// end is declared stuck and its shell killed.
const ESCALATION_ROUNDS: u32 = 5;

/// Most processes of a shell's tree looked at (bounds a fork bomb's cost).
const MAX_TREE: usize = 100_000;

/// Interrupt first, then signals to the command's processes, until the
/// shell reports the command ended.
pub(super) struct Escalation {
    round: u32,
    pub(super) next_at: Instant,
}

impl ShellActor {
    /// A signal for the running command, from its actor.
    pub(super) fn signal(&mut self, id: &str, sig: i32) -> Result<(), ExecError> {
        let Some(cur) = self.current.as_ref().filter(|c| c.job.id == id && c.files.is_none()) else {
            return Err(ExecError::NotRunning(id.to_owned()));
        };
        let os_err = |source| ExecError::Io { context: "kill(2)", source };
        if sig == libc::SIGINT {
            return self.interrupt().map_err(os_err);
        }
        if sig == libc::SIGQUIT {
            // What a terminal's Ctrl-\ does.
            return self.shell.signal_group(sig).map_err(os_err);
        }
        sys::signal_pids(&self.own_processes(cur), sig);
        Ok(())
    }

    /// What a terminal's Ctrl-C does: SIGINT to the shell and its
    /// foreground processes (background jobs ignore it). Then a few looks
    /// for processes that missed it (see [`ShellActor::recheck_interrupt`]).
    pub(super) fn interrupt(&mut self) -> io::Result<()> {
        if let Some(cur) = self.current.as_mut() {
            cur.recheck = Some((Instant::now() + RECHECK_EVERY, RECHECKS));
        }
        self.shell.signal_group(libc::SIGINT)
    }

    /// A SIGINT that reaches the shell while it is between forking a child
    /// and waiting for it can be lost for the child: the child is not yet
    /// in its own program (it handles the signal with the shell's handler
    /// and goes on to exec), and the shell, which noted it, waits for that
    /// child for ever (seen with `echo x; sleep 1000` interrupted at once).
    /// A process of the command's group that is still alive with SIGINT at
    /// its default action cannot have received it: send it again to those
    /// only. Programs that catch or ignore SIGINT are left alone.
    pub(super) fn recheck_interrupt(&mut self) {
        let Some(cur) = self.current.as_ref() else { return };
        let missed: Vec<u32> = self
            .own_processes(cur)
            .into_iter()
            .filter(|&p| sys::pgid_of(p) == Some(self.shell.pid()) && sys::sigint_default(p))
            .collect();
        if !missed.is_empty() {
            tracing::debug!(shell = %self.shared.name, ?missed, "interrupt missed: sending SIGINT again");
            sys::signal_pids(&missed, libc::SIGINT);
        }
        let Some(cur) = self.current.as_mut() else { return };
        cur.recheck = match cur.recheck {
            Some((_, n)) if n > 1 => Some((Instant::now() + RECHECK_EVERY, n - 1)),
            _ => None,
        };
    }

    /// The running command's processes: members of the session, other than
    /// the shell, started after it began, whose ancestry reaches the shell
    /// without passing through a process that existed before (a background
    /// job of an earlier command).
    fn own_processes(&self, cur: &Current) -> Vec<u32> {
        self.descendants(|p| !cur.before.contains(&p))
    }

    /// The shell's descendants, walking down into the processes `enter`
    /// accepts only (see [`sys::descendants_where`]).
    pub(super) fn descendants(&self, enter: impl Fn(u32) -> bool) -> Vec<u32> {
        sys::descendants_where(self.shell.pid(), enter, MAX_TREE)
    }

    /// Ends a command: drops it from the queue, or interrupts it and starts
    /// the escalation (from its actor).
    pub(super) fn kill(&mut self, id: &str, reason: ExitReason) {
        if let Some(i) = self.queue.iter().position(|j| j.id == id) {
            let job = self.queue.remove(i).expect("found");
            self.shared.status().queued = self.queue.len();
            self.end_job(&job, None, None, None, Some(reason));
            return;
        }
        let Some(cur) = self.current.as_mut().filter(|c| c.job.id == id) else { return };
        if cur.kill.is_some() {
            return;
        }
        cur.kill = Some(Escalation { round: 0, next_at: Instant::now() + cur.job.kill_grace });
        if cur.files.is_none() {
            let _ = self.interrupt();
        } else {
            // Not started yet: the interrupt makes the shell drop the line
            // (an `R` follows), or stops the command as it begins.
            let _ = self.shell.signal_group(libc::SIGINT);
        }
    }

    /// One more escalation round; false when the command is stuck.
    pub(super) fn escalate(&mut self) -> bool {
        let Some(cur) = self.current.as_ref() else { return true };
        let procs = self.own_processes(cur);
        let Some(cur) = self.current.as_mut() else { return true };
        let Some(k) = cur.kill.as_mut() else { return true };
        k.round += 1;
        if k.round > ESCALATION_ROUNDS {
            return false;
        }
        k.next_at = Instant::now() + cur.job.kill_grace;
        let sig = if k.round == 1 { libc::SIGTERM } else { libc::SIGKILL };
        sys::signal_pids(&procs, sig);
        // Once a foreground program dies the shell goes on with the next
        // statement of the script: interrupt that too.
        let _ = self.interrupt();
        true
    }
}

/// SIGKILL to every process of the session (the shell, its jobs, their
/// children), twice, for one forked between the scan and the signals.
pub(crate) fn kill_session(sid: u32) {
    for _ in 0..2 {
        sys::signal_pids(&sys::session_members(sid), libc::SIGKILL);
    }
}
