//! The daemon's children: waiting for them (a pidfd, `wait4` for resource
//! usage), signalling one it remembers without ever hitting a stranger that
//! got its pid, the registry of those it waits for itself, and the orphans
//! it adopts as a subreaper.

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rustix::process::{PidfdFlags, WaitId, WaitIdOptions, WaitOptions};
use tokio::io::unix::AsyncFd;

use super::proc::{children, proc_stat};
use super::signal::{to_pid, to_signal};

/// How a reaped child ended, with its resource usage.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Reaped {
    pub(crate) code: Option<i32>,
    pub(crate) signal: Option<i32>,
    pub(crate) core_dumped: bool,
    pub(crate) user_us: u64,
    pub(crate) sys_us: u64,
    pub(crate) max_rss_kb: u64,
}

/// A child the daemon waits for itself (a command's or a shell's leader),
/// held through a pidfd so that a signal never reaches another process that
/// got its pid after it was reaped.
///
/// Until the daemon reaps it, its pid (and so its process group and session
/// id, which are the same number) cannot be given to anyone else: the
/// kernel keeps a zombie's pid, and never hands out a number still in use
/// as a group or session id. A daemon that re-executes itself (the graceful
/// restart) stays the parent, so the next one re-opens its commands with
/// [`Process::open`] from the pid in the handover state, safely, as long as
/// it has not reaped them.
pub(crate) struct Process {
    pid: u32,
    /// `None` on a kernel without pidfds (before 5.3): the pid is used.
    pidfd: Option<PidFd>,
    /// Where the exit cannot be waited for through a pidfd: the timer
    /// [`Process::ready`] polls with.
    poll: Option<tokio::time::Interval>,
}

/// A pidfd, registered with the runtime once something waits on it: one
/// fd per process serves both signalling and waiting.
enum PidFd {
    Plain(OwnedFd),
    Watched(AsyncFd<OwnedFd>),
}

impl PidFd {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            PidFd::Plain(fd) => fd.as_fd(),
            PidFd::Watched(afd) => afd.get_ref().as_fd(),
        }
    }
}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process").field("pid", &self.pid).field("pidfd", &self.pidfd.is_some()).finish()
    }
}

impl Process {
    /// Takes hold of child `pid`, not yet reaped, and records it as one the
    /// daemon waits for itself (see [`is_leader`]). Call right after
    /// spawning it, or on resuming it after a handover.
    pub(crate) fn open(pid: u32) -> Process {
        register_leader(pid);
        Process::remember(pid)
    }

    /// Takes hold of process `pid` (any process, a descendant found on a
    /// walk) to signal it later: its pidfd, opened now, keeps naming it
    /// even once another process has its pid.
    pub(crate) fn remember(pid: u32) -> Process {
        let pidfd = pidfd_open(pid).map_err(|e| tracing::debug!(pid, "pidfd_open failed: {e}")).ok();
        Process { pid, pidfd: pidfd.map(PidFd::Plain), poll: None }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.pidfd.as_ref().map(PidFd::fd)
    }

    /// Sends `sig` to the process (through its pidfd: `ESRCH` once it is
    /// reaped, whoever has its pid by then).
    pub(crate) fn signal(&self, sig: i32) -> io::Result<()> {
        let sig = to_signal(sig)?;
        match self.fd() {
            Some(fd) => Ok(rustix::process::pidfd_send_signal(fd, sig)?),
            None => Ok(rustix::process::kill_process(to_pid(self.pid).ok_or_else(esrch)?, sig)?),
        }
    }

    /// Sends `sig` to the process group this process leads. Only while it
    /// is not reaped (checked through its pidfd, `ESRCH` otherwise): then
    /// the group id is certainly its group's. Once the leader is reaped the
    /// number stays reserved only as long as a member lives, and a process
    /// started after that may lead a new group of that number.
    pub(crate) fn signal_group(&self, sig: i32) -> io::Result<()> {
        let sig = to_signal(sig)?;
        if let Some(fd) = self.fd() {
            // WNOWAIT: look, leave it to be reaped. ECHILD: reaped already.
            let opts = WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT;
            rustix::process::waitid(WaitId::PidFd(fd), opts).map_err(|_| esrch())?;
        }
        Ok(rustix::process::kill_process_group(to_pid(self.pid).ok_or_else(esrch)?, sig)?)
    }

    /// Reaps the process if it has exited (see [`try_reap`]).
    pub(crate) fn try_reap(&self) -> io::Result<Option<Reaped>> {
        try_reap(self.pid)
    }

    /// Resolves when the child may have exited; the caller then tries
    /// [`Process::try_reap`]. Waits on the pidfd, registered with the
    /// runtime the first time (so it must be called inside one), else polls
    /// every 20 ms. Cancel-safe.
    pub(crate) async fn ready(&mut self) {
        if let Some(PidFd::Plain(_)) = &self.pidfd {
            self.register();
        }
        match (&self.pidfd, &mut self.poll) {
            (Some(PidFd::Watched(afd)), _) => {
                if let Ok(mut guard) = afd.readable().await {
                    // A pidfd stays readable once the process has exited;
                    // clear so a spurious wake does not spin.
                    guard.clear_ready();
                }
            }
            (_, Some(iv)) => {
                iv.tick().await;
            }
            (_, poll) => {
                let mut iv = tokio::time::interval(Duration::from_millis(20));
                iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                poll.insert(iv).tick().await;
            }
        }
    }

    /// Registers the pidfd with the runtime; where it is not pollable, it
    /// stays plain (for signals) and [`Process::ready`] polls.
    fn register(&mut self) {
        let Some(PidFd::Plain(fd)) = self.pidfd.take() else { return };
        // SAFETY: `fd` is an `OwnedFd` moved into the `AsyncFd`, so it stays
        // open, the same fd, exactly as long as it is registered.
        let registered = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) };
        self.pidfd = Some(match registered {
            Ok(afd) => PidFd::Watched(afd),
            Err(e) => {
                let (fd, e) = e.into_parts();
                tracing::debug!("pidfd not pollable, polling instead: {e}");
                PidFd::Plain(fd)
            }
        });
    }
}

impl Reaped {
    /// Status for a process whose end was not seen (its wait failed, or
    /// its shell went away).
    pub(crate) fn unknown() -> Reaped {
        Reaped { code: None, signal: None, core_dumped: false, user_us: 0, sys_us: 0, max_rss_kb: 0 }
    }
}

fn esrch() -> io::Error {
    io::Error::from_raw_os_error(libc::ESRCH)
}

fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid = to_pid(pid).ok_or_else(esrch)?;
    // pidfds are always close-on-exec.
    Ok(rustix::process::pidfd_open(pid, PidfdFlags::empty())?)
}

/// Reaps the child if it has exited (`wait4` with `WNOHANG`). A pid, not a
/// pidfd: `waitid` on a pidfd gives no resource usage. Sound for a child
/// not yet reaped, whose pid nobody else can have.
pub(crate) fn try_reap(pid: u32) -> io::Result<Option<Reaped>> {
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are to live locals of the right types.
    let r = unsafe { libc::wait4(pid as libc::pid_t, &mut status, libc::WNOHANG, &mut ru) };
    match r {
        0 => Ok(None),
        -1 => Err(io::Error::last_os_error()),
        _ => {
            unregister_leader(pid);
            let tv_us = |tv: libc::timeval| tv.tv_sec as u64 * 1_000_000 + tv.tv_usec as u64;
            let (code, signal, core_dumped) = if libc::WIFEXITED(status) {
                (Some(libc::WEXITSTATUS(status)), None, false)
            } else if libc::WIFSIGNALED(status) {
                (None, Some(libc::WTERMSIG(status)), libc::WCOREDUMP(status))
            } else {
                (None, None, false)
            };
            Ok(Some(Reaped {
                code,
                signal,
                core_dumped,
                user_us: tv_us(ru.ru_utime),
                sys_us: tv_us(ru.ru_stime),
                max_rss_kb: ru.ru_maxrss.max(0) as u64,
            }))
        }
    }
}

/// Waits for a child of our own, registered as a leader so that the orphan
/// reaper leaves it alone (see [`register_leader`]); its exit code (`None`:
/// killed by a signal).
pub(crate) fn wait_exit_code(pid: u32) -> io::Result<Option<i32>> {
    let status = rustix::process::waitpid(Some(to_pid(pid).ok_or_else(esrch)?), WaitOptions::empty());
    unregister_leader(pid);
    Ok(status?.and_then(|(_, s)| s.exit_status()))
}

/// Waits for a child that has been sent SIGKILL (failure paths only).
pub(crate) fn wait_blocking(pid: u32) -> io::Result<()> {
    rustix::process::waitpid(Some(to_pid(pid).ok_or_else(esrch)?), WaitOptions::empty())?;
    unregister_leader(pid);
    Ok(())
}

/// The processes the daemon waits for itself (commands' and shells'
/// leaders), which the orphan reaper must leave alone.
static LEADERS: LazyLock<Mutex<HashSet<u32>>> = LazyLock::new(Default::default);

/// Records a child the daemon waits for itself (`spawn` does, for every
/// child it starts; a handover's resume does, for the commands it takes).
pub(super) fn register_leader(pid: u32) {
    LEADERS.lock().unwrap_or_else(PoisonError::into_inner).insert(pid);
}

pub(super) fn unregister_leader(pid: u32) {
    LEADERS.lock().unwrap_or_else(PoisonError::into_inner).remove(&pid);
}

/// Whether the daemon waits for `pid` itself.
pub(crate) fn is_leader(pid: u32) -> bool {
    LEADERS.lock().unwrap_or_else(PoisonError::into_inner).contains(&pid)
}

/// Makes this process a child subreaper: orphaned descendants become its
/// children instead of init's. Kept across exec (the graceful restart).
pub(crate) fn become_subreaper() -> io::Result<()> {
    // The argument is a flag passed as a pid: any non-zero one sets it.
    Ok(rustix::process::set_child_subreaper(Some(rustix::process::Pid::INIT))?)
}

/// A zombie child the orphan reaper has seen: when first, and a pidfd on
/// it, so that a pid reaped by someone else and given to a new child in
/// the meantime is not taken for the same zombie.
#[derive(Debug)]
pub(crate) struct Orphan {
    first: Instant,
    pidfd: Option<OwnedFd>,
}

impl Orphan {
    /// Whether this is still the zombie first seen (not reaped since).
    fn same(&self) -> bool {
        let Some(fd) = &self.pidfd else { return true };
        let opts = WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT;
        matches!(rustix::process::waitid(WaitId::PidFd(fd.as_fd()), opts), Ok(Some(_)))
    }

    fn reap(&self, pid: u32) {
        match &self.pidfd {
            Some(fd) => {
                let opts = WaitIdOptions::EXITED | WaitIdOptions::NOHANG;
                let _ = rustix::process::waitid(WaitId::PidFd(fd.as_fd()), opts);
            }
            None => {
                if let Some(pid) = to_pid(pid) {
                    let _ = rustix::process::waitpid(Some(pid), WaitOptions::NOHANG);
                }
            }
        }
    }
}

/// Reaps the daemon's zombie children that are not leaders it waits for
/// (orphans it adopted as a subreaper) and that have been zombies for at
/// least `AGE` since first `seen`, so that a child some other code is about
/// to register and wait for (spawned, not yet recorded) is left to it.
/// Returns the zombies to look at again, with when each was first seen.
pub(crate) fn reap_orphans(mut seen: HashMap<u32, Orphan>) -> HashMap<u32, Orphan> {
    const AGE: Duration = Duration::from_secs(1);
    let now = Instant::now();
    let mut next = HashMap::new();
    for pid in children(std::process::id()) {
        if is_leader(pid) || !proc_stat(pid).is_some_and(|s| s.zombie) {
            continue;
        }
        let orphan = match seen.remove(&pid) {
            Some(o) if o.same() => o,
            _ => Orphan { first: now, pidfd: pidfd_open(pid).ok() },
        };
        if now.duration_since(orphan.first) >= AGE {
            orphan.reap(pid);
        } else {
            next.insert(pid, orphan);
        }
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reaped_process_is_never_signalled_again() {
        let child = std::process::Command::new("/bin/sh").args(["-c", "exit 3"]).spawn().expect("sh");
        let p = Process::open(child.id());
        drop(child);
        assert!(is_leader(p.pid()));
        let deadline = Instant::now() + Duration::from_secs(10);
        let reaped = loop {
            // Exited but not reaped: its group is still its own.
            if let Some(r) = p.try_reap().expect("our child") {
                break r;
            }
            assert!(Instant::now() < deadline, "sh did not exit");
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(reaped.code, Some(3));
        assert!(!is_leader(p.pid()), "a reaped leader is forgotten");
        let esrch = |r: io::Result<()>| r.expect_err("reaped").raw_os_error();
        assert_eq!(esrch(p.signal(libc::SIGTERM)), Some(libc::ESRCH));
        assert_eq!(esrch(p.signal_group(libc::SIGTERM)), Some(libc::ESRCH));
    }

    #[test]
    fn a_live_process_and_its_group_are_signalled() {
        let mut cmd = std::process::Command::new("/bin/sleep");
        cmd.arg("30");
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().expect("sleep");
        let p = Process::open(child.id());
        drop(child);
        p.signal_group(libc::SIGKILL).expect("its own group");
        wait_blocking(p.pid()).expect("reaped");
    }
}
