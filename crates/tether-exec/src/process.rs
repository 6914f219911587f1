//! Operating-system process plumbing: spawning into a new process group,
//! waiting through a pidfd, reaping with resource usage, signalling a
//! process group and its descendants.
//!
//! This is the only module with `unsafe` code: libc calls that std and tokio
//! do not expose (`pidfd_open`, `wait4`, `kill`, `fcntl`, and the two calls
//! a child makes to take a terminal as its controlling terminal).
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;

use tokio::io::unix::AsyncFd;

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

/// Waits for a child to exit without reaping it: a pidfd registered with
/// the runtime where the kernel has them (Linux 5.3+), else a poll timer.
pub(crate) enum ExitWatch {
    PidFd(AsyncFd<OwnedFd>),
    Poll(tokio::time::Interval),
}

impl ExitWatch {
    pub(crate) fn new(pid: u32) -> ExitWatch {
        register_leader(pid);
        match pidfd_open(pid) {
            // SAFETY: `fd` is an `OwnedFd` moved into the `AsyncFd`, so it
            // stays open exactly as long as it is registered.
            Ok(fd) => match unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) } {
                Ok(afd) => return ExitWatch::PidFd(afd),
                Err(e) => tracing::debug!("pidfd not pollable, polling instead: {e}"),
            },
            Err(e) => tracing::debug!("pidfd_open failed, polling instead: {e}"),
        }
        let mut iv = tokio::time::interval(Duration::from_millis(20));
        iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ExitWatch::Poll(iv)
    }

    /// Resolves when the child may have exited; the caller then tries
    /// [`try_reap`]. Cancel-safe.
    pub(crate) async fn ready(&mut self) {
        match self {
            ExitWatch::PidFd(afd) => {
                if let Ok(mut guard) = afd.readable().await {
                    // A pidfd stays readable once the process has exited;
                    // clear so a spurious wake does not spin.
                    guard.clear_ready();
                }
            }
            ExitWatch::Poll(iv) => {
                iv.tick().await;
            }
        }
    }
}

fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1;
    // it touches no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us and nothing else owns
    // it. pidfds are always close-on-exec.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Reaps the child if it has exited (`wait4` with `WNOHANG`).
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

/// Sends `sig` to the process group `pgid` and to every live descendant of
/// `pid` (found through `/proc`), so that a descendant that moved to its own
/// process group or session is reached too while its ancestry is intact.
pub(crate) fn signal_tree(pid: u32, pgid: u32, sig: i32) -> Vec<u32> {
    // Walk the tree before signalling: once the leader dies, its children
    // are reparented and can no longer be found from it.
    let tree = descendants(pid);
    // SAFETY: kill(2) with a negative pid signals a process group; no memory
    // is involved.
    unsafe {
        libc::kill(-(pgid as libc::pid_t), sig);
    }
    signal_pids(&tree, sig);
    tree
}

/// Sends `sig` to each of these processes.
pub(crate) fn signal_pids(pids: &[u32], sig: i32) {
    for &p in pids {
        // SAFETY: kill(2) on one process; no memory is involved.
        unsafe {
            libc::kill(p as libc::pid_t, sig);
        }
    }
}

/// Raises the soft open-files limit to the hard limit: every running
/// command holds four fds (three pipes and a pidfd).
pub(crate) fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit read and write a plain struct we own.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Makes the child of `cmd` the leader of a new session whose controlling
/// terminal is the terminal on its stdin (`setsid` + `TIOCSCTTY`).
pub(crate) fn new_session_on_stdin_tty(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec. It calls
    // only async-signal-safe functions (setsid, ioctl) and allocates nothing
    // (`last_os_error` holds a plain errno).
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(io::Error::last_os_error());
            }
            if libc::ioctl(0, libc::TIOCSCTTY as _, 0) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Makes the child of `cmd` the leader of a new session (its own process
/// group too) that finds `status` as its file descriptor 3, not
/// close-on-exec: a named shell writes its status records there.
pub(crate) fn new_session_with_fd3(cmd: &mut std::process::Command, status: std::os::fd::RawFd) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec. It calls
    // only async-signal-safe functions (setsid, dup2, fcntl) and allocates
    // nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() == -1 {
                return Err(io::Error::last_os_error());
            }
            if status == 3 {
                // dup2 onto itself keeps close-on-exec: clear it instead.
                if libc::fcntl(3, libc::F_SETFD, 0) == -1 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(status, 3) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Creates a FIFO at `path` with `mode`.
pub(crate) fn mkfifo(path: &std::path::Path, mode: u32) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    let r = unsafe { libc::mkfifo(c.as_ptr(), mode as libc::mode_t) };
    if r == -1 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Whether `pid` has SIGINT at its default action (neither caught nor
/// ignored): such a process dies of a SIGINT it receives.
pub(crate) fn sigint_default(pid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    let mask = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(u64::MAX)
    };
    let bit = 1u64 << (libc::SIGINT - 1);
    (mask("SigCgt:") | mask("SigIgn:")) & bit == 0
}

/// The process group of `pid`.
pub(crate) fn pgid_of(pid: u32) -> Option<u32> {
    // SAFETY: getpgid(2) takes a pid and touches no memory of ours.
    let r = unsafe { libc::getpgid(pid as libc::pid_t) };
    (r >= 0).then_some(r as u32)
}

/// The children of `pid`, from `/proc/PID/task/*/children` (a few small
/// reads), or, on a kernel without those files, from a scan of `/proc`.
pub(crate) fn children(pid: u32) -> Vec<u32> {
    static HAVE_CHILDREN_FILES: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let have = *HAVE_CHILDREN_FILES.get_or_init(|| {
        let me = std::process::id();
        std::path::Path::new(&format!("/proc/{me}/task/{me}/children")).exists()
    });
    if !have {
        return children_by_scan(pid);
    }
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for t in tasks.flatten() {
        if let Ok(list) = std::fs::read_to_string(t.path().join("children")) {
            out.extend(list.split_whitespace().filter_map(|x| x.parse::<u32>().ok()));
        }
    }
    out
}

fn children_by_scan(pid: u32) -> Vec<u32> {
    all_pids().filter(|&p| proc_stat(p).is_some_and(|s| s.ppid == pid)).collect()
}

/// Every live (not zombie) process of session `sid`, from `/proc`.
pub(crate) fn session_members(sid: u32) -> Vec<u32> {
    all_pids().filter(|&p| proc_stat(p).is_some_and(|s| s.session == sid && !s.zombie)).collect()
}

/// Every pid in `/proc`.
pub(crate) fn all_pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
}

/// The fields of `/proc/PID/stat` tether looks at.
struct ProcStat {
    zombie: bool,
    ppid: u32,
    session: u32,
}

fn proc_stat(pid: u32) -> Option<ProcStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces
    // or parentheses itself: parse from the last ')'. Then: state ppid
    // pgrp session ...
    let mut f = stat[stat.rfind(')')? + 1..].split_whitespace();
    let zombie = f.next()? == "Z";
    let ppid = f.next()?.parse().ok()?;
    let session = f.nth(1)?.parse().ok()?;
    Some(ProcStat { zombie, ppid, session })
}

/// A close-on-exec duplicate of `raw`, switched to non-blocking mode.
/// The flag is on the open file description, which the original shares.
pub(crate) fn dup_nonblocking(raw: std::os::fd::RawFd) -> io::Result<OwnedFd> {
    // SAFETY: `raw` is an fd the caller owns and keeps open for the duration
    // of this call; it is only borrowed to duplicate it.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(raw) }.try_clone_to_owned()?;
    // SAFETY: F_GETFL/F_SETFL only change the file status flags of an fd we
    // own; no memory is involved.
    let r = unsafe {
        let flags = libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&fd), libc::F_GETFL);
        if flags < 0 {
            flags
        } else {
            libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&fd), libc::F_SETFL, flags | libc::O_NONBLOCK)
        }
    };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(fd) }
}

/// A close-on-exec duplicate of `raw`, an fd the caller keeps open.
pub(crate) fn dup_fd(raw: std::os::fd::RawFd) -> io::Result<OwnedFd> {
    // SAFETY: the caller owns `raw` and keeps it open for this call; it is
    // only borrowed to duplicate it.
    unsafe { std::os::fd::BorrowedFd::borrow_raw(raw) }.try_clone_to_owned()
}

/// Sets a terminal's window size (TIOCSWINSZ).
pub(crate) fn set_winsize(fd: std::os::fd::BorrowedFd<'_>, rows: u16, cols: u16) -> io::Result<()> {
    let ws = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads the `winsize` we own for the duration of the
    // call, on a borrowed open fd.
    let r = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&fd), libc::TIOCSWINSZ, &ws) };
    if r == -1 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// A terminal's foreground process group, if it has one.
pub(crate) fn foreground_group(fd: std::os::fd::BorrowedFd<'_>) -> Option<u32> {
    // SAFETY: tcgetpgrp only reads the terminal's state.
    let pgrp = unsafe { libc::tcgetpgrp(std::os::fd::AsRawFd::as_raw_fd(&fd)) };
    u32::try_from(pgrp).ok().filter(|p| *p > 0)
}

/// A terminal's end-of-file character (VEOF).
pub(crate) fn veof(fd: std::os::fd::BorrowedFd<'_>) -> Option<u8> {
    // SAFETY: zeroed is a valid value of this plain C struct, which
    // tcgetattr fills; both are ours for the duration of the call.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::tcgetattr(std::os::fd::AsRawFd::as_raw_fd(&fd), &mut t) };
    (r == 0).then_some(t.c_cc[libc::VEOF])
}

/// Clears close-on-exec, so `fd` survives the daemon's re-exec (handover).
pub(crate) fn keep_on_exec(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<()> {
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    // SAFETY: F_GETFD/F_SETFD only change a flag of a borrowed open fd.
    let r = unsafe {
        let flags = libc::fcntl(raw, libc::F_GETFD);
        if flags < 0 { flags } else { libc::fcntl(raw, libc::F_SETFD, flags & !libc::FD_CLOEXEC) }
    };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Sets close-on-exec again (after an exec that failed).
pub(crate) fn close_on_exec(fd: std::os::fd::BorrowedFd<'_>) {
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    // SAFETY: F_GETFD/F_SETFD only change a flag of a borrowed open fd.
    unsafe {
        let flags = libc::fcntl(raw, libc::F_GETFD);
        if flags >= 0 {
            libc::fcntl(raw, libc::F_SETFD, flags | libc::FD_CLOEXEC);
        }
    }
}

/// Takes ownership of an fd inherited across exec from the previous daemon
/// (its number came in the handover state), marking it close-on-exec
/// again. Fails for a number that is not an open fd.
pub(crate) fn take_inherited_fd(raw: std::os::fd::RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_GETFD/F_SETFD only read and set a flag; a closed number fails.
    let r = unsafe {
        let flags = libc::fcntl(raw, libc::F_GETFD);
        if flags < 0 { flags } else { libc::fcntl(raw, libc::F_SETFD, flags | libc::FD_CLOEXEC) }
    };
    if r < 0 || raw <= 2 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("handover fd {raw} is not open")));
    }
    // SAFETY: the previous daemon handed this open fd to this process and
    // nothing else in this process owns it: it is taken exactly once, from
    // the handover state, before anything else can open a file there.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(raw) })
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
/// or `None` if the signal cannot be set.
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

/// A read-only private mapping of a whole file, unmapped on drop: the
/// handover state read without copying it (rings keep slices of it).
pub(crate) struct Mapped {
    ptr: *mut libc::c_void,
    len: usize,
}

// SAFETY: the mapping is read-only and owned by this value alone; reading
// it from any thread is sound.
unsafe impl Send for Mapped {}
// SAFETY: as above: shared references only read.
unsafe impl Sync for Mapped {}

impl Mapped {
    pub(crate) fn new(file: &std::fs::File) -> io::Result<Mapped> {
        let len = usize::try_from(file.metadata()?.len()).map_err(io::Error::other)?;
        if len == 0 {
            return Ok(Mapped { ptr: std::ptr::null_mut(), len: 0 });
        }
        // SAFETY: a new private read-only mapping of an fd we hold open for
        // the call; nothing else aliases it, and it is unmapped only in
        // `drop`. The memfd is sealed by nobody, but no one else has it.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                std::os::fd::AsRawFd::as_raw_fd(file),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapped { ptr, len })
    }
}

impl AsRef<[u8]> for Mapped {
    fn as_ref(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: `ptr` maps `len` readable bytes for as long as `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.len) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: the mapping made in `new`, unmapped once.
            unsafe {
                libc::munmap(self.ptr, self.len);
            }
        }
    }
}

/// An anonymous in-memory file that survives exec (the handover state).
pub(crate) fn memfd(name: &std::ffi::CStr) -> io::Result<OwnedFd> {
    // SAFETY: memfd_create takes a NUL-terminated name and flags and
    // returns a new fd or -1.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd that nothing else owns.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
}

/// Registers a non-blocking file with the runtime for reading and writing.
pub(crate) fn register_file(file: std::fs::File) -> io::Result<AsyncFd<std::fs::File>> {
    // SAFETY: the `File` owns its fd and moves into the `AsyncFd`, so the fd
    // stays open exactly as long as it is registered.
    unsafe {
        AsyncFd::register_with_interest(file, tokio::io::Interest::READABLE | tokio::io::Interest::WRITABLE)
            .map_err(|e| e.into_parts().1)
    }
}

/// Waits for a child that has been sent SIGKILL (failure paths only).
pub(crate) fn wait_blocking(pid: u32) -> io::Result<()> {
    // SAFETY: waitpid with a null status pointer; no memory of ours.
    let r = unsafe { libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), 0) };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    unregister_leader(pid);
    Ok(())
}

/// Sends `sig` to one process group.
pub(crate) fn signal_group(pgid: u32, sig: i32) -> io::Result<()> {
    // SAFETY: kill(2) with a negative pid; no memory is involved.
    let r = unsafe { libc::kill(-(pgid as libc::pid_t), sig) };
    if r == -1 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// All processes whose parent chain leads to `root` (excluding `root`).
fn descendants(root: u32) -> Vec<u32> {
    let mut all = trees(&[root]);
    all.retain(|&p| p != root);
    all
}

/// These processes and every process whose parent chain leads to one of
/// them, from one pass over `/proc` (each once).
fn trees(roots: &[u32]) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for pid in all_pids() {
        if let Some(s) = proc_stat(pid) {
            children.entry(s.ppid).or_default().push(pid);
        }
    }
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut stack = roots.to_vec();
    while let Some(p) = stack.pop() {
        if seen.insert(p) {
            out.push(p);
            stack.extend(children.get(&p).into_iter().flatten());
        }
    }
    out
}

/// Asks for a larger pipe buffer (`F_SETPIPE_SZ`), so a fast writer fills
/// more per wake-up and the reader gets more per `read`. Best effort: the
/// kernel caps it at `/proc/sys/fs/pipe-max-size` for unprivileged users.
pub(crate) fn grow_pipe(fd: &impl std::os::fd::AsRawFd, bytes: i32) {
    // SAFETY: F_SETPIPE_SZ takes an int and touches no memory of ours.
    unsafe {
        libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, bytes);
    }
}

/// Marks every open fd above 2 close-on-exec. Everything tether opens is
/// close-on-exec already; this catches fds the daemon inherited from its
/// own parent (a shell, a CI runner), which children must not see.
pub(crate) fn cloexec_inherited_fds() {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .filter(|&fd| fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: F_GETFD/F_SETFD only change a flag of the descriptor;
        // an fd that was closed meanwhile just makes fcntl fail.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
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

/// The processes the daemon waits for itself (commands' and shells'
/// leaders), which the orphan reaper must leave alone.
static LEADERS: std::sync::LazyLock<std::sync::Mutex<std::collections::HashSet<u32>>> =
    std::sync::LazyLock::new(Default::default);

/// Records a child the daemon waits for itself (call right after spawning).
pub(crate) fn register_leader(pid: u32) {
    LEADERS.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(pid);
}

fn unregister_leader(pid: u32) {
    LEADERS.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&pid);
}

/// Whether the daemon waits for `pid` itself.
pub(crate) fn is_leader(pid: u32) -> bool {
    LEADERS.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains(&pid)
}

/// Makes this process a child subreaper: orphaned descendants become its
/// children instead of init's. Kept across exec (the graceful restart).
pub(crate) fn become_subreaper() -> io::Result<()> {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) takes integers only.
    let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) };
    if r == -1 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Reaps the daemon's zombie children that are not leaders it waits for
/// (orphans it adopted as a subreaper) and that have been zombies for at
/// least `AGE` since first `seen`, so that a child some other code is about
/// to register and wait for (spawned, not yet recorded) is left to it.
/// Returns the zombies to look at again, with when each was first seen.
pub(crate) fn reap_orphans(mut seen: HashMap<u32, std::time::Instant>) -> HashMap<u32, std::time::Instant> {
    const AGE: Duration = Duration::from_secs(1);
    let now = std::time::Instant::now();
    let mut next = HashMap::new();
    for pid in children(std::process::id()) {
        if is_leader(pid) || !proc_stat(pid).is_some_and(|s| s.zombie) {
            continue;
        }
        let first = seen.remove(&pid).unwrap_or(now);
        if now.duration_since(first) >= AGE {
            let mut status = 0;
            // SAFETY: waitpid on one pid with WNOHANG, status into a local.
            unsafe {
                libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG);
            }
        } else {
            next.insert(pid, first);
        }
    }
    next
}

/// Makes the child of `cmd` join the cgroup whose `cgroup.procs` is
/// `procs` before it execs (writing "0" moves the writer itself), so that
/// nothing it runs is ever outside it. A failure fails the spawn.
pub(crate) fn join_cgroup_on_exec(cmd: &mut std::process::Command, procs: std::ffi::CString) {
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec the closure calls only open, write and
    // close (async-signal-safe) on a path prepared before the fork, and
    // allocates nothing (`last_os_error` reads errno).
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd == -1 {
                return Err(io::Error::last_os_error());
            }
            let n = libc::write(fd, b"0".as_ptr().cast(), 1);
            let err = io::Error::last_os_error();
            libc::close(fd);
            if n != 1 {
                return Err(err);
            }
            Ok(())
        });
    }
}

/// Whether `path` is on a cgroup v2 file system.
pub(crate) fn is_cgroup2_fs(path: &std::path::Path) -> io::Result<bool> {
    const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
    let st = rustix::fs::statfs(path)?;
    Ok(st.f_type as i64 == CGROUP2_SUPER_MAGIC)
}

/// Whether `pid` exists and is not a zombie.
pub(crate) fn running(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|s| !s.zombie)
}

/// `/proc/PID/environ` (empty if it cannot be read: another user's process,
/// or gone).
pub(crate) fn environ(pid: u32) -> Vec<u8> {
    std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default()
}

/// Whether an environment block (as read by [`environ`]) holds exactly
/// `entry` (`NAME=value`).
pub(crate) fn env_has(env: &[u8], entry: &str) -> bool {
    env.split(|&b| b == 0).any(|e| e == entry.as_bytes())
}

/// SIGKILLs these processes and all their descendants (the tree is walked
/// before anything is killed).
pub(crate) fn kill_trees(roots: &[u32]) {
    signal_pids(&trees(roots), libc::SIGKILL);
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
    fn ppid_of_self_is_parent() {
        let me = std::process::id();
        let s = proc_stat(me).expect("our own stat");
        assert_eq!(s.ppid, std::os::unix::process::parent_id());
        assert!(!s.zombie);
    }
}
