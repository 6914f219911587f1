//! What a forked child does before exec (a new session with fd 3 for a
//! shell's status, joining a cgroup), and telling a cgroup v2 file system.
//! Commands, piped or on a terminal, are not forked: see `vspawn`.
//!
//! `pre_exec` is `unsafe` by nature: the closure runs in the forked child,
//! where only async-signal-safe calls are allowed. Each closure here makes
//! raw system calls through rustix (no allocation, no locks) on values
//! prepared before the fork.

use std::io;
use std::os::fd::{BorrowedFd, RawFd};
use std::os::unix::process::CommandExt;

/// Makes the child of `cmd` the leader of a new session (its own process
/// group too) that finds `status` as its file descriptor 3, not
/// close-on-exec: a named shell writes its status records there.
pub(crate) fn new_session_with_fd3(cmd: &mut std::process::Command, status: RawFd) {
    // SAFETY: the closure runs in the forked child before exec. It makes
    // only system calls (setsid, dup2, fcntl) and allocates nothing. The
    // caller keeps `status` open until the spawn returns. fd 3 is a number
    // to dup2 onto (rustix's dup2 wants an `OwnedFd` there), replacing
    // whatever this child had there, close-on-exec anyway.
    unsafe {
        cmd.pre_exec(move || {
            rustix::process::setsid()?;
            let status = BorrowedFd::borrow_raw(status);
            if std::os::fd::AsRawFd::as_raw_fd(&status) == 3 {
                // dup2 onto itself keeps close-on-exec: clear it instead.
                rustix::io::fcntl_setfd(status, rustix::io::FdFlags::empty())?;
            } else {
                if libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&status), 3) == -1 {
                    return Err(io::Error::last_os_error());
                }
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
