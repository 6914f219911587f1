//! File descriptors: close-on-exec and non-blocking flags, duplicates, the
//! fds a restarted daemon inherits, pipe sizes, FIFOs, the handover memfd
//! and its read-only mapping, the open-files limit.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use rustix::fs::OFlags;
use rustix::io::FdFlags;
use tokio::io::unix::AsyncFd;

/// Raises the soft open-files limit to the hard limit: every running
/// command holds four fds (three pipes and a pidfd).
pub(crate) fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    // `None` is unlimited.
    let below = match (lim.current, lim.maximum) {
        (Some(cur), Some(max)) => cur < max,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if below {
        lim.current = lim.maximum;
        let _ = setrlimit(Resource::Nofile, lim);
    }
}

/// A close-on-exec duplicate of `fd`, switched to non-blocking mode.
/// The flag is on the open file description, which the original shares.
pub(crate) fn dup_nonblocking(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let fd = fd.try_clone_to_owned()?;
    let flags = rustix::fs::fcntl_getfl(&fd)?;
    rustix::fs::fcntl_setfl(&fd, flags | OFlags::NONBLOCK)?;
    Ok(fd)
}

/// A close-on-exec duplicate of `raw`, an fd the caller keeps open (one
/// portable-pty hands out only as a number).
pub(crate) fn dup_fd(raw: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: the caller owns `raw` and keeps it open for this call; it is
    // only borrowed to duplicate it.
    unsafe { BorrowedFd::borrow_raw(raw) }.try_clone_to_owned()
}

/// Clears close-on-exec, so `fd` survives the daemon's re-exec (handover).
pub(crate) fn keep_on_exec(fd: BorrowedFd<'_>) -> io::Result<()> {
    let flags = rustix::io::fcntl_getfd(fd)?;
    Ok(rustix::io::fcntl_setfd(fd, flags - FdFlags::CLOEXEC)?)
}

/// Sets close-on-exec again (after an exec that failed).
pub(crate) fn close_on_exec(fd: BorrowedFd<'_>) {
    if let Ok(flags) = rustix::io::fcntl_getfd(fd) {
        let _ = rustix::io::fcntl_setfd(fd, flags | FdFlags::CLOEXEC);
    }
}

/// Takes ownership of an fd inherited across exec from the previous daemon
/// (its number came in the handover state), marking it close-on-exec
/// again. Fails for a number that is not an open fd, and for 0, 1 and 2,
/// which are never handed over and are left exactly as they are.
pub(crate) fn take_inherited_fd(raw: RawFd) -> io::Result<OwnedFd> {
    let refuse = || io::Error::new(io::ErrorKind::InvalidData, format!("handover fd {raw} is not open"));
    if raw <= 2 {
        return Err(refuse());
    }
    // SAFETY: F_GETFD only reads a flag; a number that is not open fails.
    // A raw number, since it is not known to be open yet.
    if unsafe { libc::fcntl(raw, libc::F_GETFD) } < 0 {
        return Err(refuse());
    }
    // SAFETY: the previous daemon handed this open fd to this process and
    // nothing else in this process owns it: it is taken exactly once, from
    // the handover state, before anything else can open a file there.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    close_on_exec(fd.as_fd());
    Ok(fd)
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
        // SAFETY: F_GETFD/F_SETFD only change a flag of the descriptor; a
        // number, not a `BorrowedFd`, because one in the list may have been
        // closed meanwhile (the directory's own), which just makes fcntl
        // fail.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
}

/// Asks for a larger pipe buffer (`F_SETPIPE_SZ`), so a fast writer fills
/// more per wake-up and the reader gets more per `read`. Best effort: the
/// kernel caps it at `/proc/sys/fs/pipe-max-size` for unprivileged users.
pub(crate) fn grow_pipe(fd: &impl AsFd, bytes: i32) {
    let _ = rustix::pipe::fcntl_setpipe_size(fd, usize::try_from(bytes).unwrap_or(0));
}

/// Bytes a connected TCP socket holds that its peer has not acknowledged
/// yet: sent and unacknowledged, or not sent (`SIOCOUTQ`). What a writer
/// put into the socket less this is what reached the peer's TCP.
pub fn socket_unacked(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut n: libc::c_int = 0;
    // SAFETY: `fd` is open for the call (borrowed), and `SIOCOUTQ`
    // (`TIOCOUTQ`) writes one `int` into `n`, which lives across it.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Creates a FIFO at `path` with `mode`.
pub(crate) fn mkfifo(path: &std::path::Path, mode: u32) -> io::Result<()> {
    let mode = rustix::fs::Mode::from_raw_mode(mode as rustix::fs::RawMode);
    Ok(rustix::fs::mkfifoat(rustix::fs::CWD, path, mode)?)
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

/// An anonymous in-memory file that survives exec (the handover state).
pub(crate) fn memfd(name: &std::ffi::CStr) -> io::Result<OwnedFd> {
    Ok(rustix::fs::memfd_create(name, rustix::fs::MemfdFlags::empty())?)
}

/// Gives the memory the allocator holds free back to the system (glibc's
/// `malloc_trim`, every arena): what a process frees stays mapped and is
/// unmapped page by page by an `exec`, with the process stopped.
pub(crate) fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: `malloc_trim` only returns whole free pages of the
    // allocator's arenas to the kernel; it takes the arenas' locks itself.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A read-only private mapping of a whole file, unmapped on drop: the
/// handover state read without copying it (rings keep slices of it).
pub(crate) struct Mapped {
    ptr: *mut std::ffi::c_void,
    len: usize,
}

// SAFETY: the mapping is read-only and owned by this value alone; reading
// it from any thread is sound.
unsafe impl Send for Mapped {}
// SAFETY: as above: shared references only read.
unsafe impl Sync for Mapped {}

impl Mapped {
    pub(crate) fn new(file: &std::fs::File) -> io::Result<Mapped> {
        use rustix::mm::{MapFlags, ProtFlags};
        let len = usize::try_from(file.metadata()?.len()).map_err(io::Error::other)?;
        if len == 0 {
            return Ok(Mapped { ptr: std::ptr::null_mut(), len: 0 });
        }
        // SAFETY: a new private read-only mapping of an fd we hold open for
        // the call; nothing else aliases it, and it is unmapped only in
        // `drop`. The memfd is sealed by nobody, but no one else has it.
        let ptr = unsafe {
            rustix::mm::mmap(std::ptr::null_mut(), len, ProtFlags::READ, MapFlags::PRIVATE, file, 0)?
        };
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
            let _ = unsafe { rustix::mm::munmap(self.ptr, self.len) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standard_fds_are_refused_and_left_alone() {
        let stderr = std::io::stderr();
        let before = rustix::io::fcntl_getfd(stderr.as_fd()).expect("fd 2 is open");
        let r = take_inherited_fd(2);
        let after = rustix::io::fcntl_getfd(stderr.as_fd()).expect("fd 2 is open");
        // Put it back before asserting, so that a failure here does not
        // take stderr from the processes other tests spawn.
        let _ = rustix::io::fcntl_setfd(stderr.as_fd(), before);
        assert!(r.is_err(), "fd 2 is never a handover fd");
        assert_eq!(after, before, "a refused fd's flags are untouched");
        for raw in [0, 1] {
            assert!(take_inherited_fd(raw).is_err());
        }
    }

    #[test]
    fn an_inherited_fd_is_taken_close_on_exec() {
        let (r, w) = std::io::pipe().expect("pipe");
        keep_on_exec(r.as_fd()).expect("clear");
        let raw = std::os::fd::IntoRawFd::into_raw_fd(OwnedFd::from(r));
        let taken = take_inherited_fd(raw).expect("an open fd");
        assert!(rustix::io::fcntl_getfd(&taken).expect("open").contains(FdFlags::CLOEXEC));
        drop(taken);
        drop(w);
        // Far above any open-files limit: never open, whatever other tests
        // open meanwhile.
        assert!(take_inherited_fd(1 << 30).is_err(), "a closed number is refused");
    }
}
