//! Signals: sending them to processes and groups, their names, and the
//! daemon's own signal actions (what commands inherit, what survives the
//! re-exec of a restart).

use std::io;

use rustix::process::{Pid, Signal};

use super::child::Process;

use super::proc::{descendants_where, trees};

/// A signal number as rustix's type, for any number `kill -N` accepts.
pub(super) fn to_signal(sig: i32) -> io::Result<Signal> {
    if let Some(s) = Signal::from_named_raw(sig) {
        return Ok(s);
    }
    if !(1..=64).contains(&sig) {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: a non-zero number the kernel accepts as a signal. rustix asks
    // that a number the C library reserves for itself (the real-time ones)
    // not be used to send, block or handle signals in this process; this
    // one is only ever sent to other processes (the commands), whose own C
    // library decides what it means, as `kill -N` does.
    Ok(unsafe { Signal::from_raw_unchecked(sig) })
}

/// A pid as rustix's type; `None` for 0 (which `kill` would take as "my own
/// group") and for numbers past `pid_t`.
pub(super) fn to_pid(pid: u32) -> Option<Pid> {
    Pid::from_raw(i32::try_from(pid).ok()?)
}

fn no_such_process() -> io::Error {
    io::Error::from_raw_os_error(libc::ESRCH)
}

/// Sends `sig` to one process group.
pub(crate) fn signal_group(pgid: u32, sig: i32) -> io::Result<()> {
    let pgid = to_pid(pgid).ok_or_else(no_such_process)?;
    Ok(rustix::process::kill_process_group(pgid, to_signal(sig)?)?)
}

/// Sends `sig` to each of these processes.
pub(crate) fn signal_pids(pids: &[u32], sig: i32) {
    let Ok(sig) = to_signal(sig) else { return };
    for pid in pids.iter().filter_map(|&p| to_pid(p)) {
        let _ = rustix::process::kill_process(pid, sig);
    }
}

/// Sends `sig` to the process group that `pid` leads and to every live
/// descendant of it (found through `/proc`), so that a descendant that
/// moved to its own process group or session is reached too while its
/// ancestry is intact. For a leader not yet reaped (its pid is its own).
pub(crate) fn signal_tree(pid: u32, sig: i32) {
    // Walk the tree before signalling: once the leader dies, its children
    // are reparented and can no longer be found from it.
    let tree = tree_below(pid);
    let _ = signal_group(pid, sig);
    signal_pids(&tree, sig);
}

/// Every descendant of `pid`, walked down through its processes' children
/// files: a few reads per process of the tree. (A pass over all of `/proc`
/// read every process on the host for each kill: with 2000 processes, a
/// daemon ending 1000 commands at once spent about 10 s of CPU on it.)
fn tree_below(pid: u32) -> Vec<u32> {
    descendants_where(pid, |_| true, usize::MAX)
}

/// Sends `sig` to `leader`'s process group and to every live descendant
/// of it, like [`signal_tree`], and returns the descendants held through
/// pidfds (opened before any signal goes out), so that signalling them
/// again later never reaches a process that got one's pid meanwhile.
pub(crate) fn signal_tree_remembered(leader: &Process, sig: i32) -> Vec<Process> {
    let pid = leader.pid();
    let tree: Vec<Process> = tree_below(pid).into_iter().map(Process::remember).collect();
    let _ = leader.signal_group(sig);
    for p in &tree {
        let _ = p.signal(sig);
    }
    tree
}

/// SIGKILLs these processes and all their descendants (the tree is walked
/// before anything is killed).
pub(crate) fn kill_trees(roots: &[u32]) {
    signal_pids(&trees(roots), libc::SIGKILL);
}

/// Parses a signal given as a name (`TERM`, `SIGTERM`, `term`) or a number.
pub(crate) fn parse_signal(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let n = match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "ILL" => libc::SIGILL,
        "TRAP" => libc::SIGTRAP,
        "ABRT" => libc::SIGABRT,
        "BUS" => libc::SIGBUS,
        "FPE" => libc::SIGFPE,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "SEGV" => libc::SIGSEGV,
        "USR2" => libc::SIGUSR2,
        "PIPE" => libc::SIGPIPE,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        "CHLD" => libc::SIGCHLD,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "TSTP" => libc::SIGTSTP,
        "TTIN" => libc::SIGTTIN,
        "TTOU" => libc::SIGTTOU,
        "URG" => libc::SIGURG,
        "XCPU" => libc::SIGXCPU,
        "XFSZ" => libc::SIGXFSZ,
        "VTALRM" => libc::SIGVTALRM,
        "PROF" => libc::SIGPROF,
        "WINCH" => libc::SIGWINCH,
        "IO" => libc::SIGIO,
        "PWR" => libc::SIGPWR,
        "SYS" => libc::SIGSYS,
        _ => return None,
    };
    Some(n)
}

/// Sets `sigs` to be ignored and returns their previous actions, for
/// [`restore_signals`]. An ignored signal stays ignored across exec, so a
/// signal that arrives while the next daemon starts cannot kill it; that
/// daemon's own handlers replace the setting.
pub(crate) fn ignore_signals(sigs: &[i32]) -> Vec<(i32, libc::sigaction)> {
    sigs.iter().filter_map(|&sig| Some((sig, set_action(sig, libc::SIG_IGN, 0)?))).collect()
}

/// Sets the action of `sig` to `handler` (`SIG_IGN`, `SIG_DFL` or an
/// async-signal-safe function) with `flags`; returns the previous action,
/// or `None` if the signal cannot be set. rustix has no safe `sigaction`.
fn set_action(sig: i32, handler: libc::sighandler_t, flags: i32) -> Option<libc::sigaction> {
    // SAFETY: sigaction reads `new` and fills `prev`, both ours; the caller
    // vouches for the handler.
    unsafe {
        let mut new: libc::sigaction = std::mem::zeroed();
        new.sa_sigaction = handler;
        new.sa_flags = flags;
        libc::sigemptyset(&mut new.sa_mask);
        let mut prev: libc::sigaction = std::mem::zeroed();
        (libc::sigaction(sig, &new, &mut prev) == 0).then_some(prev)
    }
}

/// Puts back what [`ignore_signals`] replaced.
pub(crate) fn restore_signals(old: Vec<(i32, libc::sigaction)>) {
    for (sig, prev) in old {
        // SAFETY: `prev` is the action sigaction returned for this signal.
        unsafe {
            libc::sigaction(sig, &prev, std::ptr::null_mut());
        }
    }
}

/// Signals this process was started with ignored (`nohup` ignores SIGHUP;
/// a script's `tether serve &` ignores SIGINT and SIGQUIT) are caught from
/// here on by a handler that does nothing: the same to the daemon, but exec
/// resets a caught signal to its default action and keeps an ignored one
/// ignored, so without this every command would inherit them (Ctrl-C would
/// not interrupt a command; Python would not even install its handler).
/// Every spawn path gets defaults this way, `posix_spawn` included, with no
/// `pre_exec` (which would make std fork). Not SIGPIPE (Rust's own; std
/// resets it in children), nor SIGTTIN/SIGTTOU: caught, a background read
/// or write on a terminal would be restarted forever, so those two stay as
/// inherited. (An ignored SIGCHLD would even have the kernel reap commands
/// before their exit could be read.) Returns the signals it caught (the
/// first call does the work): a restart ignores them again across its exec,
/// SIGCHLD excepted.
pub(crate) fn catch_inherited_ignores() -> &'static [i32] {
    static CAUGHT: std::sync::OnceLock<Vec<i32>> = std::sync::OnceLock::new();
    CAUGHT.get_or_init(|| {
        extern "C" fn nothing(_: libc::c_int) {}
        let skip = [libc::SIGKILL, libc::SIGSTOP, libc::SIGPIPE, libc::SIGTTIN, libc::SIGTTOU];
        // SAFETY: sigaction with no new action only fills `now`, ours.
        let ignored = |sig: i32| unsafe {
            let mut now: libc::sigaction = std::mem::zeroed();
            libc::sigaction(sig, std::ptr::null(), &mut now) == 0 && now.sa_sigaction == libc::SIG_IGN
        };
        let handler = nothing as extern "C" fn(libc::c_int) as libc::sighandler_t;
        let caught: Vec<i32> = (1..32)
            .chain(libc::SIGRTMIN()..=libc::SIGRTMAX())
            .filter(|&sig| !skip.contains(&sig) && ignored(sig))
            .filter(|&sig| set_action(sig, handler, libc::SA_RESTART).is_some())
            .collect();
        if !caught.is_empty() {
            tracing::debug!(
                ?caught,
                "signals inherited as ignored: caught, so that commands start with defaults"
            );
        }
        caught
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_signal_names_and_numbers() {
        assert_eq!(parse_signal("TERM"), Some(libc::SIGTERM));
        assert_eq!(parse_signal("sigint"), Some(libc::SIGINT));
        assert_eq!(parse_signal("9"), Some(9));
        assert_eq!(parse_signal("0"), None);
        assert_eq!(parse_signal("NOPE"), None);
    }

    #[test]
    fn every_number_kill_accepts_is_a_signal_and_no_other() {
        for n in 1..=64 {
            assert_eq!(to_signal(n).map(Signal::as_raw).ok(), Some(n));
        }
        assert!(to_signal(0).is_err());
        assert!(to_signal(65).is_err());
        assert!(signal_group(0, libc::SIGTERM).is_err(), "group 0 would be the daemon's own");
    }
}
