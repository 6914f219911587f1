//! Starting a piped command the way `posix_spawn` does, plus the one step
//! `posix_spawn` cannot take: joining the command's cgroup before exec.
//!
//! std starts a command with `posix_spawn` (a child that shares the
//! daemon's memory, the calling thread suspended until the child execs)
//! unless a `pre_exec` closure is set, and then it forks. Joining a cgroup
//! needs such a closure, and a fork copies the page tables of the whole
//! daemon, then write-protects every page the daemon touches until the
//! child has exec'd: with the daemon holding a few thousand sessions a
//! start took 14 ms instead of 1.7 (`tether-bench --only scale`, X1), and
//! a profile of 200 clients starting commands showed a fifth of the daemon's
//! CPU in `copy_page_range` alone.
//!
//! Here the child is made with `clone(CLONE_VM | CLONE_VFORK)` on a stack
//! of its own, as glibc's `posix_spawn` does. Between clone and exec it
//! makes only system calls through libc's thin wrappers on values prepared
//! before the clone (no allocation, no lock): join the cgroup, its own
//! process group, stdio onto 0/1/2, the cwd, default signal actions and an
//! empty mask, then `execve` of each candidate path. A failure before the
//! exec is written to memory the parent reads once the child is gone.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::atomic::{AtomicI32, Ordering};

/// What the child runs, prepared before the clone.
pub(crate) struct Plan {
    /// Paths to `execve`, in order (a bare name searched along `PATH`).
    programs: Vec<CString>,
    argv: Vec<CString>,
    envp: Vec<CString>,
    cwd: Option<CString>,
    /// The command's cgroup's `cgroup.procs`, joined before exec.
    cgroup_procs: Option<CString>,
}

/// A started child: its pid and the daemon's ends of its stdio pipes.
pub(crate) struct Piped {
    pub(crate) pid: u32,
    pub(crate) stdin: OwnedFd,
    pub(crate) stdout: OwnedFd,
    pub(crate) stderr: OwnedFd,
}

impl Plan {
    /// The plan of `cmd` as std would run it: its program, arguments,
    /// environment (the daemon's unless `env_clear`, with `cmd`'s changes)
    /// and cwd, joining `cgroup_procs` if given.
    pub(crate) fn of(
        cmd: &std::process::Command,
        env_clear: bool,
        cgroup_procs: Option<CString>,
    ) -> io::Result<Plan> {
        let cstr = |s: &OsStr| {
            CString::new(s.as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte"))
        };
        let mut env: std::collections::BTreeMap<OsString, OsString> =
            if env_clear { Default::default() } else { std::env::vars_os().collect() };
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => env.insert(k.to_owned(), v.to_owned()),
                None => env.remove(k),
            };
        }
        let program = cmd.get_program();
        let programs = if program.as_bytes().contains(&b'/') {
            vec![cstr(program)?]
        } else {
            // As execvp: the child's PATH, else the system's default.
            let path = env.get(OsStr::new("PATH")).map(|p| p.as_bytes().to_vec());
            let path = path.unwrap_or_else(|| b"/bin:/usr/bin".to_vec());
            path.split(|b| *b == b':')
                .map(|dir| {
                    let dir = if dir.is_empty() { &b"."[..] } else { dir };
                    let mut full = dir.to_vec();
                    full.push(b'/');
                    full.extend_from_slice(program.as_bytes());
                    cstr(OsStr::from_bytes(&full))
                })
                .collect::<io::Result<_>>()?
        };
        let argv = std::iter::once(program).chain(cmd.get_args()).map(cstr).collect::<io::Result<_>>()?;
        let envp = env
            .into_iter()
            .map(|(k, v)| {
                let mut kv = k.into_vec();
                kv.push(b'=');
                kv.extend_from_slice(v.as_bytes());
                CString::new(kv).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte"))
            })
            .collect::<io::Result<_>>()?;
        let cwd = cmd.get_current_dir().map(|d| cstr(d.as_os_str())).transpose()?;
        Ok(Plan { programs, argv, envp, cwd, cgroup_procs })
    }
}

/// What the child reads (pointers into the parent's memory, which it
/// shares) and where it reports a failure.
#[repr(C)]
struct ChildArgs {
    programs: *const *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    cwd: *const libc::c_char,
    cgroup_procs: *const libc::c_char,
    /// The child's ends: stdin's read end, stdout's and stderr's write
    /// ends, each at 3 or above.
    fds: [RawFd; 3],
    /// The errno of the step that failed (0: the child exec'd).
    errno: AtomicI32,
}

/// Stack of the child until it execs. It runs a few system calls and
/// libc's thin wrappers, which need little; glibc's posix_spawn gives its
/// child about as much.
const STACK_BYTES: usize = 64 * 1024;

/// Starts `plan` with three new pipes as its stdin, stdout and stderr, in
/// its own process group.
pub(crate) fn spawn_piped(plan: &Plan) -> io::Result<Piped> {
    let (in_r, in_w) = pipe()?;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    // The child's ends above 2, so that putting one onto 0, 1 or 2 never
    // replaces another not yet moved.
    let child_ends = [above_stdio(in_r)?, above_stdio(out_w)?, above_stdio(err_w)?];

    let ptrs = |v: &[CString]| v.iter().map(|c| c.as_ptr()).chain([std::ptr::null()]).collect::<Vec<_>>();
    let (programs, argv, envp) = (ptrs(&plan.programs), ptrs(&plan.argv), ptrs(&plan.envp));
    let opt = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    let args = ChildArgs {
        programs: programs.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        cwd: opt(&plan.cwd),
        cgroup_procs: opt(&plan.cgroup_procs),
        fds: [child_ends[0].as_raw_fd(), child_ends[1].as_raw_fd(), child_ends[2].as_raw_fd()],
        errno: AtomicI32::new(0),
    };
    let mut stack = vec![0u8; STACK_BYTES];
    // SAFETY: the stack grows down from its end, 16-byte aligned; the child
    // (which shares this memory) uses it only until exec or `_exit`, and
    // CLONE_VFORK suspends this thread until then, so `stack`, `args` and
    // the vectors it points into outlive the child's use of them. Every
    // signal is blocked across the clone, so no handler of the daemon runs
    // on the child's stack before the child has set default actions.
    let pid = unsafe {
        let top = stack.as_mut_ptr().add(STACK_BYTES);
        let top = top.sub(top as usize % 16);
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::clone(
            child,
            top.cast(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            std::ptr::from_ref(&args).cast_mut().cast(),
        );
        let clone_err = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if pid == -1 {
            return Err(clone_err);
        }
        pid
    };
    drop(stack);
    drop(child_ends);
    let errno = args.errno.load(Ordering::Acquire);
    if errno != 0 {
        // The child is gone (it called `_exit`): reap it.
        // SAFETY: waitpid on our own child, with a status we own.
        unsafe {
            let mut status = 0;
            libc::waitpid(pid, &mut status, 0);
        }
        return Err(io::Error::from_raw_os_error(errno));
    }
    Ok(Piped { pid: pid as u32, stdin: in_w, stdout: out_r, stderr: err_r })
}

/// A close-on-exec pipe: (read end, write end).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    Ok((r, w))
}

/// `fd`, or a close-on-exec copy of it at 3 or above if it is 0, 1 or 2
/// (a daemon started with a closed stdio gets such numbers for its pipes).
fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: F_DUPFD_CLOEXEC returns a new fd, which the OwnedFd takes.
    let n = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if n == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `n` is a new fd nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

/// The kernel's `struct sigaction` (not libc's, whose mask is 128 bytes):
/// all zero is the default action, no flags, nothing blocked.
#[repr(C)]
#[derive(Default)]
struct KernelSigaction {
    handler: libc::sighandler_t,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}

/// `rt_sigaction` as a bare system call.
fn rt_sigaction(sig: i32, new: Option<&KernelSigaction>, old: Option<&mut KernelSigaction>) -> libc::c_long {
    let new = new.map_or(std::ptr::null(), std::ptr::from_ref);
    let old = old.map_or(std::ptr::null_mut(), std::ptr::from_mut);
    // SAFETY: both pointers are null or point to a live KernelSigaction,
    // the layout the kernel reads and writes, with the mask size it wants.
    unsafe { libc::syscall(libc::SYS_rt_sigaction, sig, new, old, std::mem::size_of::<u64>()) }
}

/// The child, between clone and exec. Only system calls through libc's
/// thin wrappers; it returns nothing (it execs or calls `_exit`).
extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's `ChildArgs`, alive while this runs
    // (the parent is suspended until this execs or exits).
    let args = unsafe { &*(arg as *const ChildArgs) };
    let fail = |errno: i32| -> ! {
        args.errno.store(if errno == 0 { libc::EIO } else { errno }, Ordering::Release);
        // SAFETY: `_exit` ends the child without running anything of the
        // parent's (no atexit handlers, no flushing of shared buffers).
        unsafe { libc::_exit(127) }
    };
    let errno = || io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO);
    // SAFETY: each call below is a system call on fds and C strings the
    // parent prepared and keeps alive; none allocates or takes a lock.
    unsafe {
        if !args.cgroup_procs.is_null() {
            // Writing "0" moves the writer itself: everything it runs is in
            // the cgroup from its first instruction.
            let fd = libc::open(args.cgroup_procs, libc::O_WRONLY | libc::O_CLOEXEC);
            if fd == -1 {
                fail(errno());
            }
            if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                fail(errno());
            }
            libc::close(fd);
        }
        if libc::setpgid(0, 0) == -1 {
            fail(errno());
        }
        for (i, fd) in args.fds.iter().enumerate() {
            if libc::dup2(*fd, i as libc::c_int) == -1 {
                fail(errno());
            }
        }
        if !args.cwd.is_null() && libc::chdir(args.cwd) == -1 {
            fail(errno());
        }
        // Default actions for what the daemon catches (exec would reset
        // them, but a signal arriving before the exec must not run the
        // daemon's handler here), for SIGPIPE, which Rust ignores and std
        // resets in children, and for libc's own signals (32 and 33, which
        // libc's `sigaction` refuses to touch, hence the raw system call),
        // as glibc's posix_spawn does; any other ignored signal stays
        // ignored.
        for sig in 1..=64 {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            let mut old = KernelSigaction::default();
            if rt_sigaction(sig, None, Some(&mut old)) != 0 {
                continue;
            }
            let libc_own = sig == 32 || sig == 33;
            let ignored = old.handler == libc::SIG_IGN;
            if old.handler != libc::SIG_DFL && (!ignored || sig == libc::SIGPIPE || libc_own) {
                rt_sigaction(sig, Some(&KernelSigaction::default()), None);
            }
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        // As execvp: the first path that runs; a permission refusal is
        // reported over a later "not found".
        let mut denied = false;
        let mut last = libc::ENOENT;
        let mut p = args.programs;
        while !(*p).is_null() {
            libc::execve(*p, args.argv, args.envp);
            match errno() {
                libc::EACCES => denied = true,
                libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT => {}
                e => {
                    last = e;
                    break;
                }
            }
            p = p.add(1);
        }
        fail(if denied && last == libc::ENOENT { libc::EACCES } else { last })
    }
}
