//! [`LiveState`]: everything a running command's actor mutates (its clock,
//! its status once reaped, why it ends, every deadline, pending kills),
//! with one method per transition. It is also the handover's form of a
//! running command: serialised as it is, deadlines as the time left.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::build::Lifetimes;
use super::{ExitInfo, ExitReason};
use crate::sys::{Process, Reaped};

/// What a running command's actor mutates. A new deadline is a field here
/// (with `#[serde(with = "deadline")]`) and the transitions that arm and
/// clear it: the handover carries it without more code.
///
/// The serialised names are those of the handover format's version 1.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct LiveState {
    /// When it started (a shell command: when its shell started it).
    #[serde(rename = "elapsed", with = "since")]
    pub(crate) started: Instant,
    /// Its status once reaped, and its wall time then.
    pub(crate) reaped: Option<(Reaped, Duration)>,
    /// Why it ends, once something ends it (the first reason wins).
    pub(crate) reason: Option<ExitReason>,
    /// Its wall-clock timeout.
    #[serde(rename = "timeout_left", with = "deadline")]
    pub(crate) timeout_at: Option<Instant>,
    /// After a timeout's SIGTERM: when SIGKILL follows.
    #[serde(rename = "sigkill_left", with = "deadline")]
    pub(crate) sigkill_at: Option<Instant>,
    /// Its idle timeout, while no client is attached.
    #[serde(rename = "idle_left", with = "deadline")]
    pub(crate) idle_at: Option<Instant>,
    /// Once reaped: when to stop waiting for descendants that hold its
    /// output pipes open.
    #[serde(rename = "drain_left", with = "deadline")]
    pub(crate) drain_until: Option<Instant>,
    /// Output past the limit was dropped.
    pub(crate) truncated: bool,
    /// Removed while running: no record is kept once it ends.
    pub(crate) remove_after_exit: bool,
    /// Descendants that were sent SIGTERM by a timeout, to SIGKILL later:
    /// held through pidfds, so the SIGKILL never reaches a process that got
    /// one's pid meanwhile (serialised as pids, and opened again from them).
    #[serde(with = "remembered")]
    pub(crate) terminated: Vec<Process>,
    /// The daemon's stop has been seen (it is acted on once).
    #[serde(skip)]
    pub(crate) stop_seen: bool,
}

impl LiveState {
    /// A command starting now. A shell command's clock (and timeout) starts
    /// when its shell starts it ([`LiveState::on_started`]).
    pub(crate) fn new(life: &Lifetimes, queued: bool) -> LiveState {
        let now = Instant::now();
        LiveState {
            started: now,
            reaped: None,
            reason: None,
            timeout_at: life.timeout.filter(|_| !queued).map(|d| now + d),
            sigkill_at: None,
            idle_at: None,
            drain_until: None,
            truncated: false,
            remove_after_exit: false,
            terminated: Vec::new(),
            stop_seen: false,
        }
    }

    /// The earliest deadline, if any is armed.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        [self.timeout_at, self.sigkill_at, self.idle_at, self.drain_until].into_iter().flatten().min()
    }

    /// Whether the process has been reaped (its pid may then be reused).
    pub(crate) fn is_reaped(&self) -> bool {
        self.reaped.is_some()
    }

    /// Records why it ends, unless something ended it first.
    pub(crate) fn end_for(&mut self, why: ExitReason) {
        self.reason.get_or_insert(why);
    }

    /// A shell command's shell has started it: its clock starts.
    pub(crate) fn on_started(&mut self, life: &Lifetimes) {
        self.started = Instant::now();
        self.timeout_at = life.timeout.map(|d| self.started + d);
    }

    /// The process has ended (reaped, reported by its shell, or lost with
    /// it): its status is kept, what is left of its output drains for the
    /// drain grace, and the deadlines that end a running process are
    /// disarmed. Every way a process ends comes through here.
    pub(crate) fn on_reaped(&mut self, status: Reaped, life: &Lifetimes) {
        self.reaped = Some((status, self.started.elapsed()));
        self.drain_until = Some(Instant::now() + life.drain_grace);
        self.timeout_at = None;
        self.idle_at = None;
    }

    /// The timeout fired and `terminated` were sent SIGTERM: SIGKILL
    /// follows after the kill grace.
    pub(crate) fn on_timeout(&mut self, life: &Lifetimes, terminated: Vec<Process>) {
        self.timeout_at = None;
        self.end_for(ExitReason::TimedOut);
        self.terminated = terminated;
        self.sigkill_at = Some(Instant::now() + life.kill_grace);
    }

    /// Nobody is attached: the idle timeout runs (if it was not already).
    pub(crate) fn arm_idle(&mut self, life: &Lifetimes) {
        if self.idle_at.is_none() {
            self.idle_at = life.idle_timeout.map(|d| Instant::now() + d);
        }
    }

    /// A client is attached: no idle timeout.
    pub(crate) fn disarm_idle(&mut self) {
        self.idle_at = None;
    }

    /// The drain deadline, again from now (a stream still held back by a
    /// pacing reader), or none.
    pub(crate) fn rearm_drain(&mut self, again: bool, life: &Lifetimes) {
        self.drain_until = again.then(|| Instant::now() + life.drain_grace);
    }

    /// How it ended, with its streams' final `ends` and (a shell command)
    /// the shell's final `cwd`.
    pub(crate) fn exit_info(&self, ends: [u64; 2], cwd: Option<String>) -> ExitInfo {
        let (r, wall) = self.reaped.unwrap_or((Reaped::unknown(), self.started.elapsed()));
        ExitInfo {
            code: r.code,
            signal: r.signal,
            core_dumped: r.core_dumped,
            reason: self.reason.unwrap_or(ExitReason::Exited),
            wall,
            user_us: r.user_us,
            sys_us: r.sys_us,
            max_rss_kb: r.max_rss_kb,
            ends,
            truncated: self.truncated,
            cwd,
        }
    }
}

/// Processes held through pidfds, serialised as their pids (the next
/// daemon opens them again: as safe as a pid, for what is in flight across
/// the exec).
mod remembered {
    use super::*;

    pub(super) fn serialize<S: serde::Serializer>(ps: &[Process], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(ps.iter().map(Process::pid))
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Process>, D::Error> {
        Ok(Vec::<u32>::deserialize(d)?.into_iter().map(Process::remember).collect())
    }
}

/// A start time, serialised as the time since.
mod since {
    use super::*;

    pub(super) fn serialize<S: serde::Serializer>(t: &Instant, s: S) -> Result<S::Ok, S::Error> {
        t.elapsed().serialize(s)
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Instant, D::Error> {
        let elapsed = Duration::deserialize(d)?;
        let now = Instant::now();
        Ok(now.checked_sub(elapsed).unwrap_or(now))
    }
}

/// A deadline, serialised as the time left (none past it: it fires at
/// once). One too far to represent never fires.
mod deadline {
    use super::*;

    pub(super) fn serialize<S: serde::Serializer>(t: &Option<Instant>, s: S) -> Result<S::Ok, S::Error> {
        t.map(|t| t.saturating_duration_since(Instant::now())).serialize(s)
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Instant>, D::Error> {
        let left = Option::<Duration>::deserialize(d)?;
        Ok(left.and_then(|left| Instant::now().checked_add(left)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::OutputLimit;

    fn life() -> Lifetimes {
        Lifetimes {
            timeout: Some(Duration::from_secs(10)),
            idle_timeout: Some(Duration::from_secs(5)),
            ttl: None,
            kill_on_disconnect: false,
            max_output_bytes: None,
            output_limit: OutputLimit::Kill,
            kill_grace: Duration::from_secs(2),
            drain_grace: Duration::from_millis(300),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_queued_shell_commands_clock_starts_when_its_shell_starts_it() {
        let life = life();
        let mut s = LiveState::new(&life, true);
        assert_eq!(s.timeout_at, None);
        tokio::time::advance(Duration::from_secs(3)).await;
        s.on_started(&life);
        assert_eq!(s.timeout_at, Some(Instant::now() + Duration::from_secs(10)));
        assert_eq!(s.started.elapsed(), Duration::ZERO);
        let s = LiveState::new(&life, false);
        assert_eq!(s.timeout_at, Some(s.started + Duration::from_secs(10)));
    }

    /// Every way a process ends (reaped, its wait failing, its shell
    /// reporting it, its shell gone) arms the drain deadline and disarms
    /// the timeout and the idle timeout: the actor calls `on_reaped` for
    /// each (before, the wait-failure path armed no drain deadline and the
    /// shell-gone path left the timeouts armed).
    #[tokio::test(start_paused = true)]
    async fn ending_arms_the_drain_and_disarms_the_timeouts() {
        let life = life();
        let mut s = LiveState::new(&life, false);
        s.arm_idle(&life);
        assert!(s.idle_at.is_some() && s.timeout_at.is_some());
        tokio::time::advance(Duration::from_secs(1)).await;
        s.on_reaped(Reaped::unknown(), &life);
        assert!(s.is_reaped());
        assert_eq!(s.reaped.map(|r| r.1), Some(Duration::from_secs(1)));
        assert_eq!(s.drain_until, Some(Instant::now() + life.drain_grace));
        assert_eq!((s.timeout_at, s.idle_at), (None, None));
    }

    #[tokio::test(start_paused = true)]
    async fn a_timeout_terminates_then_escalates_and_the_first_reason_wins() {
        let life = life();
        let mut s = LiveState::new(&life, false);
        s.end_for(ExitReason::OutputLimit);
        s.on_timeout(&life, vec![Process::remember(7), Process::remember(8)]);
        assert_eq!(s.timeout_at, None);
        assert_eq!(s.sigkill_at, Some(Instant::now() + life.kill_grace));
        assert_eq!(s.terminated.iter().map(Process::pid).collect::<Vec<_>>(), [7, 8]);
        assert_eq!(s.reason, Some(ExitReason::OutputLimit));
        let e = s.exit_info([1, 2], None);
        assert_eq!((e.reason, e.ends, e.code), (ExitReason::OutputLimit, [1, 2], None));
    }

    #[tokio::test(start_paused = true)]
    async fn the_next_deadline_is_the_earliest_armed_one() {
        let life = life();
        let mut s = LiveState::new(&life, true);
        assert_eq!(s.next_deadline(), None);
        s.on_started(&life);
        assert_eq!(s.next_deadline(), s.timeout_at);
        s.arm_idle(&life);
        assert_eq!(s.next_deadline(), s.idle_at, "5 s idle comes before the 10 s timeout");
        s.on_reaped(Reaped::unknown(), &life);
        assert_eq!(s.next_deadline(), s.drain_until);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_is_armed_once_and_disarmed_by_an_attach() {
        let life = life();
        let mut s = LiveState::new(&life, false);
        s.arm_idle(&life);
        let first = s.idle_at;
        tokio::time::advance(Duration::from_secs(1)).await;
        s.arm_idle(&life);
        assert_eq!(s.idle_at, first, "a second detach does not restart the idle clock");
        s.disarm_idle();
        assert_eq!(s.idle_at, None);
    }

    /// Deadlines cross a handover as the time left, and come back as the
    /// same deadlines (the clock is paused, so "now" does not move).
    #[tokio::test(start_paused = true)]
    async fn serialised_deadlines_are_time_left() {
        let life = life();
        let mut s = LiveState::new(&life, false);
        tokio::time::advance(Duration::from_millis(1500)).await;
        s.on_timeout(&life, vec![]);
        s.arm_idle(&life);
        let bytes = rmp_serde::to_vec_named(&s).expect("encodes");
        let back: LiveState = rmp_serde::from_slice(&bytes).expect("decodes");
        assert_eq!(back.started, s.started);
        assert_eq!(back.sigkill_at, s.sigkill_at);
        assert_eq!(back.idle_at, s.idle_at);
        assert_eq!(back.timeout_at, None);
        #[derive(Deserialize)]
        struct Left {
            elapsed: Duration,
            sigkill_left: Option<Duration>,
        }
        let left: Left = rmp_serde::from_slice(&bytes).expect("decodes as time left");
        assert_eq!(left.elapsed, Duration::from_millis(1500));
        assert_eq!(left.sigkill_left, Some(life.kill_grace));
    }
}
