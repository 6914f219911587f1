//! Starting a command, on pipes or on a terminal, the way `posix_spawn`
//! does, plus the steps `posix_spawn` cannot take: starting it in its
//! cgroup, and making a terminal its controlling terminal.
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
//! process group (on a terminal: its own session), stdio onto 0/1/2 (and
//! the terminal as its controlling terminal), the cwd, default signal
//! actions and an empty mask, then `execve` of each candidate path. A failure before the
//! exec is written to memory the parent reads once the child is gone.
//!
//! A command with a cgroup is created in it (`clone3` with
//! `CLONE_INTO_CGROUP`, Linux 5.7) rather than moved into it by writing
//! its `cgroup.procs`: a move takes the cgroup hierarchy's thread-group
//! lock for writing, which waits for an RCU grace period, and that made up
//! about 480 µs of the 1.2 ms `run(["true"])` round trip on this machine
//! (`tether-bench --only core`, row 2). Where `clone3` is refused (a kernel
//! before 5.7, or a seccomp profile such as Docker's default one, which
//! answers ENOSYS), the child joins by writing, as before, and the daemon
//! stops trying `clone3`.
//!
//! The child shares the daemon's fd table (`CLONE_FILES`) and then takes a
//! copy of its lowest entries only (`close_range` with
//! `CLOSE_RANGE_UNSHARE`, Linux 5.9). Without that, the kernel copies the
//! whole table into the child and closes every close-on-exec entry again
//! at the exec: with 18,000 fds open (3,600 sessions) a spawn took 1.98 ms
//! instead of 0.48 (a C loop of vfork+exec of `true`), and `run(["true"])`
//! 5.8 ms with the bench's 3,795 sessions held (X1). So the child's stdio
//! goes through [`Slots`]: low fd numbers held open on `/dev/null`, onto
//! which the parent puts the child's three pipe ends for the length of the
//! clone. Where `close_range` is refused, the child copies the whole table
//! (`unshare(CLONE_FILES)`), as before.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Mutex, OnceLock};

/// What the child runs, prepared before the clone.
pub(crate) struct Plan {
    /// Paths to `execve`, in order (a bare name searched along `PATH`).
    programs: Vec<CString>,
    argv: Vec<CString>,
    envp: Vec<CString>,
    cwd: Option<CString>,
    /// The command's cgroup, which it starts in.
    cgroup: Option<CgroupPaths>,
}

/// A command's cgroup v2 leaf, as the spawn needs it: its directory (to
/// start the child in it) and its `cgroup.procs` (to join it by writing
/// there, where a child cannot be started in it).
pub(crate) struct CgroupPaths {
    pub(crate) dir: CString,
    pub(crate) procs: CString,
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
    /// and cwd, in `cgroup` if given.
    pub(crate) fn of(
        cmd: &std::process::Command,
        env_clear: bool,
        cgroup: Option<CgroupPaths>,
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
        Ok(Plan { programs, argv, envp, cwd, cgroup })
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
    /// The `cgroup.procs` to join (null: the child was started in its
    /// cgroup, or has none).
    cgroup_procs: *const libc::c_char,
    /// The child's ends: stdin's read end, stdout's and stderr's write
    /// ends, each at 3 or above.
    fds: [RawFd; 3],
    /// With the fd table shared: the first fd the child does not copy
    /// (every one of its `fds` is below it). -1: not shared.
    unshare_from: RawFd,
    /// Set by the child when `close_range` was refused.
    no_close_range: AtomicBool,
    /// The child's stdio is a terminal: it leads a new session with that
    /// terminal as its controlling terminal (else: a new process group).
    terminal: bool,
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
    let ends = [child_ends[0].as_raw_fd(), child_ends[1].as_raw_fd(), child_ends[2].as_raw_fd()];
    let pid = spawn(plan, ends, false)?;
    Ok(Piped { pid, stdin: in_w, stdout: out_r, stderr: err_r })
}

/// Starts `plan` on the terminal whose slave is `slave` (its stdin, stdout
/// and stderr), as the leader of a new session whose controlling terminal
/// it is. Returns its pid.
pub(crate) fn spawn_on_terminal(plan: &Plan, slave: &OwnedFd) -> io::Result<u32> {
    let slave = above_stdio(slave.try_clone()?)?;
    spawn(plan, [slave.as_raw_fd(); 3], true)
}

/// Starts `plan` with `ends` as its stdin, stdout and stderr (each at 3 or
/// above, open until this returns).
fn spawn(plan: &Plan, ends: [RawFd; 3], terminal: bool) -> io::Result<u32> {
    let ptrs = |v: &[CString]| v.iter().map(|c| c.as_ptr()).chain([std::ptr::null()]).collect::<Vec<_>>();
    let (programs, argv, envp) = (ptrs(&plan.programs), ptrs(&plan.argv), ptrs(&plan.envp));
    let opt = |c: Option<&CString>| c.map_or(std::ptr::null(), |c| c.as_ptr());
    // On a slot if one is free (a vfork holds its thread until the child
    // execs, so as many are taken as threads spawn at once).
    let slots = Slots::get();
    let slot = slots.and_then(|s| s.take(ends));
    let mut args = ChildArgs {
        programs: programs.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        cwd: opt(plan.cwd.as_ref()),
        cgroup_procs: std::ptr::null(),
        fds: slot.as_ref().map_or(ends, |s| s.fds),
        unshare_from: match (&slot, slots) {
            (Some(_), Some(s)) => s.end,
            _ => -1,
        },
        no_close_range: AtomicBool::new(false),
        terminal,
        errno: AtomicI32::new(0),
    };
    let mut stack = vec![0u8; STACK_BYTES];
    let mut pid = None;
    if let Some(cg) = &plan.cgroup {
        pid = clone_into(&cg.dir, &args, &mut stack)?;
        if pid.is_none() {
            args.cgroup_procs = cg.procs.as_ptr();
        }
    }
    let pid = match pid {
        Some(pid) => pid,
        None => clone_vfork(&args, &mut stack)?,
    };
    // A child the daemon waits for itself, from its first moment: the
    // orphan reaper never takes it, not even a failed one before the
    // `waitpid` below.
    super::child::register_leader(pid as u32);
    drop(slot);
    if args.no_close_range.load(Ordering::Acquire) && !NO_CLOSE_RANGE.swap(true, Ordering::Relaxed) {
        tracing::info!("close_range refused: each command's start copies the daemon's whole fd table");
    }
    drop(stack);
    let errno = args.errno.load(Ordering::Acquire);
    if errno != 0 {
        // The child is gone (it called `_exit`): reap it.
        // SAFETY: waitpid on our own child, with a status we own.
        unsafe {
            let mut status = 0;
            libc::waitpid(pid, &mut status, 0);
        }
        super::child::unregister_leader(pid as u32);
        return Err(io::Error::from_raw_os_error(errno));
    }
    Ok(pid as u32)
}

/// Whether `close_range` with `CLOSE_RANGE_UNSHARE` was refused once:
/// then no child shares the fd table (each copies all of it).
static NO_CLOSE_RANGE: AtomicBool = AtomicBool::new(false);

/// How many children may be started on slots at once.
const SLOT_SETS: usize = 8;

/// Low fd numbers for children's stdio, each held open on `/dev/null`
/// (close-on-exec) between spawns: a spawn puts the child's three pipe
/// ends onto a free set, the child (sharing the fd table) copies the table
/// up to the highest slot only and moves its set onto 0, 1 and 2, and the
/// spawn puts `/dev/null` back.
struct Slots {
    free: Mutex<Vec<[RawFd; 3]>>,
    devnull: OwnedFd,
    /// One past the highest slot.
    end: RawFd,
}

/// A set of slots holding one child's ends; gives them back to `/dev/null`
/// and to the free list when dropped.
struct Slot {
    fds: [RawFd; 3],
}

impl Slots {
    /// The daemon's slots, made on first use: call it early (before the
    /// daemon holds many fds) so that they are low.
    fn get() -> Option<&'static Slots> {
        static SLOTS: OnceLock<Option<Slots>> = OnceLock::new();
        SLOTS.get_or_init(|| Slots::reserve().ok()).as_ref()
    }

    fn reserve() -> io::Result<Slots> {
        let devnull = rustix::fs::open(
            "/dev/null",
            rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )?;
        let mut fds = Vec::with_capacity(SLOT_SETS * 3);
        for _ in 0..SLOT_SETS * 3 {
            let fd = rustix::io::fcntl_dupfd_cloexec(&devnull, 3)?;
            // Held for the daemon's life (slots are never closed).
            fds.push(std::os::fd::IntoRawFd::into_raw_fd(fd));
        }
        let end = fds.iter().max().map_or(3, |m| m + 1);
        let free = fds.chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect();
        Ok(Slots { free: Mutex::new(free), devnull, end })
    }

    /// A free set with `ends` put onto it, if sharing the fd table works
    /// and a set is free.
    fn take(&'static self, ends: [RawFd; 3]) -> Option<Slot> {
        if NO_CLOSE_RANGE.load(Ordering::Relaxed) {
            return None;
        }
        let fds = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop()?;
        let slot = Slot { fds };
        for (end, fd) in ends.into_iter().zip(fds) {
            // SAFETY: dup3 onto a slot this set owns (open on /dev/null),
            // replacing it atomically; `end` is open (the caller's).
            if unsafe { libc::dup3(end, fd, libc::O_CLOEXEC) } == -1 {
                return None; // dropping `slot` puts /dev/null back
            }
        }
        Some(slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some(slots) = Slots::get() else { return };
        for fd in self.fds {
            // SAFETY: as in `take`: /dev/null onto a slot of this set,
            // closing the dup of the child's end it held, so that the
            // daemon holds no copy of a pipe's far end (stdout's EOF).
            unsafe { libc::dup3(slots.devnull.as_raw_fd(), fd, libc::O_CLOEXEC) };
        }
        slots.free.lock().unwrap_or_else(|e| e.into_inner()).push(self.fds);
    }
}

/// Takes the children's fd slots now (they are made on first use
/// otherwise), while the daemon holds few fds, so that their numbers are
/// low.
pub(crate) fn reserve_spawn_slots() {
    Slots::get();
}

/// `CLONE_FILES` when the child is to share the fd table.
fn files_flag(args: &ChildArgs) -> libc::c_int {
    if args.unshare_from >= 0 { libc::CLONE_FILES } else { 0 }
}

/// Whether `clone3` with `CLONE_INTO_CGROUP` was refused once for good
/// (no such system call, or a flag or argument size this kernel does not
/// know): then every child joins its cgroup by writing.
static NO_CLONE_INTO: AtomicBool = AtomicBool::new(false);

/// The stack's top, 16-byte aligned, as the ABI wants it at a call.
fn stack_top(stack: &mut [u8]) -> *mut u8 {
    let top = stack.as_mut_ptr_range().end;
    top.wrapping_sub(top as usize % 16)
}

/// Runs `f` with every signal blocked in the calling thread, so that no
/// handler of the daemon runs on the child's stack (or in the child) before
/// the child has set default actions.
fn signals_blocked<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: sigset_t is plain data; pthread_sigmask only reads and
    // writes the two sets.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let r = f();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        r
    }
}

/// `clone(CLONE_VM | CLONE_VFORK)` of [`child`] on `stack`: the child's
/// pid once it has exec'd (or exited, having reported why in `args`).
fn clone_vfork(args: &ChildArgs, stack: &mut [u8]) -> io::Result<libc::pid_t> {
    let top = stack_top(stack);
    // SAFETY: the stack grows down from `top`; the child (which shares
    // this memory) uses it only until exec or `_exit`, and CLONE_VFORK
    // suspends this thread until then, so `stack`, `args` and what it
    // points into outlive the child's use of them.
    let (pid, err) = signals_blocked(|| unsafe {
        let pid = libc::clone(
            child,
            top.cast(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD | files_flag(args),
            std::ptr::from_ref(args).cast_mut().cast(),
        );
        (pid, io::Error::last_os_error())
    });
    if pid == -1 {
        return Err(err);
    }
    Ok(pid)
}

/// The kernel's `struct clone_args` up to `cgroup` (`CLONE_ARGS_SIZE_VER2`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// As [`clone_vfork`], the child started in the cgroup at `dir`
/// (`clone3` with `CLONE_INTO_CGROUP`). `None` where that cannot be done,
/// for the caller to start the child otherwise and have it join by writing
/// `cgroup.procs` (which reports its own error, if any).
fn clone_into(dir: &CString, args: &ChildArgs, stack: &mut [u8]) -> io::Result<Option<libc::pid_t>> {
    if NO_CLONE_INTO.load(Ordering::Relaxed) || !cfg!(target_arch = "x86_64") {
        return Ok(None);
    }
    let cgroup = match rustix::fs::open(
        dir.as_c_str(),
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(_) => return Ok(None),
    };
    let base = stack.as_mut_ptr();
    let top = stack_top(stack);
    let cl = CloneArgs {
        flags: (libc::CLONE_VM | libc::CLONE_VFORK | files_flag(args)) as u64 | CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        stack: base as u64,
        stack_size: top as u64 - base as u64,
        cgroup: cgroup.as_raw_fd() as u64,
        ..CloneArgs::default()
    };
    // SAFETY: as in `clone_vfork`: the child runs on `stack` until it
    // execs or exits, while this thread is suspended (CLONE_VFORK), and
    // `args`, `cl` and `cgroup` outlive that.
    let r = signals_blocked(|| unsafe { clone3(&cl, std::ptr::from_ref(args).cast_mut().cast()) });
    drop(cgroup);
    match r {
        Ok(pid) => Ok(Some(pid)),
        Err(e) => match e.raw_os_error() {
            Some(libc::EAGAIN | libc::ENOMEM) => Err(e),
            Some(errno @ (libc::ENOSYS | libc::EPERM | libc::E2BIG | libc::EINVAL)) => {
                if !NO_CLONE_INTO.swap(true, Ordering::Relaxed) {
                    tracing::info!(
                        "clone3 into a cgroup refused (errno {errno}): commands join their cgroups \
                         by writing cgroup.procs"
                    );
                }
                Ok(None)
            }
            // Something about this cgroup: joining by writing says what.
            _ => Ok(None),
        },
    }
}

/// `CLOSE_RANGE_UNSHARE` (Linux 5.9).
const CLOSE_RANGE_UNSHARE: libc::c_uint = 1 << 1;

/// `CLONE_INTO_CGROUP` (Linux 5.7), which the libc crate does not name.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// The `clone3` system call, the child running `f(arg)` on the stack `cl`
/// gives it and ending with `_exit` should `f` return. A C `clone3`
/// wrapper does the same; glibc does not export one.
///
/// # Safety
///
/// `cl` must ask for a stack (the child cannot go on on the caller's), and
/// `f` must be safe to run in the child that `cl` describes.
#[cfg(target_arch = "x86_64")]
unsafe fn clone3(cl: &CloneArgs, arg: *mut libc::c_void) -> io::Result<libc::pid_t> {
    let f: extern "C" fn(*mut libc::c_void) -> libc::c_int = child;
    let ret: i64;
    // SAFETY: the system call's registers as the kernel's x86-64 ABI has
    // them (rcx and r11 clobbered). In the child (rax 0), on its new stack
    // (16-byte aligned, so aligned as the ABI wants after the call pushes
    // its return address), it calls `f(arg)` and then `exit`; it never
    // comes back into the Rust code around this block.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "mov rdi, r12",
            "call r13",
            "mov edi, eax",
            "mov eax, {exit}",
            "syscall",
            "ud2",
            "2:",
            exit = const libc::SYS_exit,
            inlateout("rax") libc::SYS_clone3 => ret,
            in("rdi") std::ptr::from_ref(cl),
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") arg,
            in("r13") f,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    if ret < 0 { Err(io::Error::from_raw_os_error(-ret as i32)) } else { Ok(ret as libc::pid_t) }
}

/// Elsewhere `clone_into` never calls this.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn clone3(_: &CloneArgs, _: *mut libc::c_void) -> io::Result<libc::pid_t> {
    Err(io::Error::from_raw_os_error(libc::ENOSYS))
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
        if args.unshare_from >= 0 {
            // A table of our own before anything opens or moves an fd (the
            // daemon's threads use the shared one): a copy of the entries
            // below `unshare_from` only, the rest closed.
            let r = libc::syscall(
                libc::SYS_close_range,
                args.unshare_from as libc::c_uint,
                libc::c_uint::MAX,
                CLOSE_RANGE_UNSHARE,
            );
            if r != 0 {
                args.no_close_range.store(true, Ordering::Release);
                if libc::unshare(libc::CLONE_FILES) != 0 {
                    fail(errno());
                }
            }
        }
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
        if args.terminal {
            if libc::setsid() == -1 {
                fail(errno());
            }
        } else if libc::setpgid(0, 0) == -1 {
            fail(errno());
        }
        for (i, fd) in args.fds.iter().enumerate() {
            if libc::dup2(*fd, i as libc::c_int) == -1 {
                fail(errno());
            }
        }
        if args.terminal && libc::ioctl(0, libc::TIOCSCTTY, 0) == -1 {
            fail(errno());
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
