//! File operations for the daemon's file routes: reads, atomic writes,
//! stat, listings, bounded walks, mkdir, remove, rename, and directory
//! trees as tar streams in both directions.
//!
//! Every path is resolved against one root directory, held open as a file
//! descriptor. When the root **confines** (`tether serve --files-root`),
//! every lookup goes through `openat2(2)` with `RESOLVE_BENEATH`: the
//! kernel refuses any `..`, absolute symlink or symlink that would leave the
//! tree, at the moment of the lookup, so a symlink swapped in during an
//! operation cannot escape either (there are no string checks to race).
//! Operations below a directory hold that directory's fd and work with
//! single names (`openat`, `renameat`, `unlinkat` with `O_NOFOLLOW` where
//! it matters).
//!
//! A write goes to a new unnamed file in the target's directory and is
//! put in place of the target only when complete: a reader never sees a
//! half-written file, and a failed or interrupted upload leaves the old
//! file as it was and nothing else (see `upload`).
//!
//! Everything here blocks: callers on an async runtime use
//! `spawn_blocking` (or tokio's `File`, for the data).
//!
//! # Layout
//! - `error`: [`FileError`], one variant per way a request can be refused.
//! - `upload`: [`Upload`], an atomic write: an unnamed `O_TMPFILE` inode
//!   linked in place when complete, so a stopped or crashed daemon leaves
//!   nothing behind.
//! - `tree`: directory trees to and from tar streams.
//! - `walk`: [`Files::walk`], a bounded, sorted walk that never follows a
//!   symlink, for searches.

mod error;
mod tree;
mod upload;
mod walk;

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags, ResolveFlags};

pub use error::FileError;
pub use tree::Tar;
pub use upload::{Upload, remove_pending_uploads};
pub use walk::{Entry, Step, WalkEnd, WalkLimit, WalkLimits};

/// Most reads of special files (FIFOs, sockets, devices) one root serves
/// at once: each holds an fd and a place in the caller's bookkeeping for
/// as long as its peer keeps it open.
pub const MAX_SPECIAL_READS: usize = 64;

/// Most bytes [`read_pseudo`] reads from a file of a pseudo file system.
pub const MAX_PSEUDO_BYTES: u64 = 16 << 20;

/// The root every path is resolved against.
#[derive(Debug)]
pub struct Files {
    root: OwnedFd,
    root_path: PathBuf,
    confined: bool,
    /// Special reads under way (see [`Files::special_slot`]).
    special_reads: Arc<AtomicUsize>,
}

/// A file opened by [`Files::open_read`].
#[derive(Debug)]
pub struct Opened {
    /// The open file.
    pub file: File,
    /// What it is, from the open file.
    pub stat: Stat,
    /// How its bytes must be read.
    pub source: Source,
}

/// How an opened file's bytes must be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A regular file of an ordinary file system: `stat.size` bytes,
    /// blocking reads (which never wait for data).
    Regular,
    /// A "regular" file of a pseudo file system (`/proc`, `/sys`, debugfs,
    /// cgroupfs...): its size says nothing (0, or 4096) and its content is
    /// made at the read. Read it whole with [`read_pseudo`]. Non-blocking.
    Pseudo,
    /// A FIFO, socket or device: no size, no end, and a read may wait for
    /// ever. Non-blocking: poll it, with a deadline.
    Special,
}

/// A place among a root's special reads; given back on drop.
#[derive(Debug)]
pub struct SpecialSlot(Arc<AtomicUsize>);

impl Drop for SpecialSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a path is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (not followed).
    Symlink,
    /// A named pipe.
    Fifo,
    /// A Unix socket.
    Socket,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
}

/// What `stat` tells about a path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stat {
    /// Its name (the last component; the root's is empty).
    pub name: String,
    /// What it is.
    pub kind: Kind,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits (`0o755`), with setuid/setgid/sticky.
    pub mode: u32,
    /// Last modification, milliseconds since the Unix epoch.
    pub mtime_ms: i64,
    /// A symlink's target, as stored.
    pub target: Option<String>,
    /// The owner's user id.
    pub uid: u32,
    /// The owner's group id.
    pub gid: u32,
    /// Hard links to it.
    pub nlink: u64,
    /// Nanoseconds within the second of the last modification.
    pub mtime_nsec: u32,
}

impl Files {
    /// A root at `path` (it must be a directory). With `confine`, no
    /// operation can reach outside it; without, absolute paths go anywhere
    /// and relative ones start at `path`.
    pub fn new(path: &Path, confine: bool) -> Result<Files, FileError> {
        let root_path = std::fs::canonicalize(path).map_err(|e| FileError::from_io(e, path))?;
        let root =
            rustix::fs::open(&root_path, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
                .map_err(|e| FileError::from_errno(e, path))?;
        Ok(Files { root, root_path, confined: confine, special_reads: Arc::default() })
    }

    /// The root's path.
    pub fn root(&self) -> &Path {
        &self.root_path
    }

    /// Whether paths are confined to the root.
    pub fn is_confined(&self) -> bool {
        self.confined
    }

    /// A client's path as one relative to the root (or, unconfined, an
    /// absolute one). Confined, an absolute path must name something under
    /// the root; the kernel checks the rest at lookup.
    fn rel(&self, path: &str) -> Result<PathBuf, FileError> {
        if path.contains('\0') {
            return Err(FileError::BadPath { path: path.to_owned(), why: "contains a NUL byte" });
        }
        let p = Path::new(path);
        if !p.is_absolute() {
            return Ok(p.to_owned());
        }
        if !self.confined {
            return Ok(p.to_owned());
        }
        match p.strip_prefix(&self.root_path) {
            Ok(rest) => Ok(rest.to_owned()),
            Err(_) => Err(FileError::Outside { path: path.to_owned() }),
        }
    }

    fn resolve(&self) -> ResolveFlags {
        if self.confined {
            ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS
        } else {
            ResolveFlags::empty()
        }
    }

    /// `openat2` of `rel` below `dir` (the root when `None`).
    fn open_at(
        &self,
        dir: Option<&OwnedFd>,
        rel: &Path,
        flags: OFlags,
        mode: Mode,
    ) -> Result<OwnedFd, FileError> {
        let rel = if rel.as_os_str().is_empty() { Path::new(".") } else { rel };
        let dir = dir.unwrap_or(&self.root);
        rustix::fs::openat2(dir, rel, flags | OFlags::CLOEXEC, mode, self.resolve())
            .map_err(|e| FileError::from_errno(e, rel))
    }

    /// The directory holding `rel` (opened) and `rel`'s last name.
    fn parent(&self, path: &str) -> Result<(OwnedFd, OsString), FileError> {
        let rel = self.rel(path)?;
        let name = match rel.components().next_back() {
            Some(Component::Normal(n)) => n.to_owned(),
            _ => return Err(FileError::BadPath { path: path.to_owned(), why: "does not end in a name" }),
        };
        let parent = rel.parent().unwrap_or(Path::new(""));
        let dir = self.open_at(None, parent, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())?;
        Ok((dir, name))
    }

    /// Opens a file for reading. FIFOs, sockets and devices are refused
    /// unless `special` (they can block for ever or never end); the caller
    /// bounds what it reads from them, and from files of pseudo file
    /// systems (see [`Source`]). Only a [`Source::Regular`] file is
    /// blocking; the others stay `O_NONBLOCK`, so no read of them can
    /// wait for data.
    pub fn open_read(&self, path: &str, special: bool) -> Result<Opened, FileError> {
        let rel = self.rel(path)?;
        // Non-blocking open: a FIFO without a writer must not hang us.
        let fd =
            self.open_at(None, &rel, OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY, Mode::empty())?;
        let stat = stat_fd(&fd, name_of(&rel))?;
        let source = match stat.kind {
            Kind::File if is_pseudo(&fd) => Source::Pseudo,
            Kind::File => {
                let flags = rustix::fs::fcntl_getfl(&fd).map_err(|e| FileError::from_errno(e, &rel))?;
                rustix::fs::fcntl_setfl(&fd, flags - OFlags::NONBLOCK)
                    .map_err(|e| FileError::from_errno(e, &rel))?;
                Source::Regular
            }
            Kind::Dir => return Err(FileError::IsADirectory { path: path.to_owned() }),
            _ if !special => return Err(FileError::Special { path: path.to_owned() }),
            _ => Source::Special,
        };
        Ok(Opened { file: File::from(fd), stat, source })
    }

    /// A place among the [`MAX_SPECIAL_READS`] reads of special files this
    /// root serves at once (`None`: all taken). The place is given back
    /// when the returned guard drops.
    pub fn special_slot(&self) -> Option<SpecialSlot> {
        let n = &self.special_reads;
        n.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| (v < MAX_SPECIAL_READS).then_some(v + 1))
            .ok()
            .map(|_| SpecialSlot(n.clone()))
    }

    /// Starts an atomic write of `path`: a temporary file next to it that
    /// [`Upload::commit`] puts in its place. `mode` (default: the existing
    /// file's when it is a regular file, else 0644: never a symlink's own
    /// 0777); `parents` creates missing directories.
    pub fn create(&self, path: &str, mode: Option<u32>, parents: bool) -> Result<Upload, FileError> {
        if parents {
            let rel = self.rel(path)?;
            if let Some(p) = rel.parent().filter(|p| !p.as_os_str().is_empty()) {
                self.mkdir_all(p, 0o755)?;
            }
        }
        let (dir, name) = self.parent(path)?;
        let existing = rustix::fs::statat(&dir, &name, AtFlags::SYMLINK_NOFOLLOW).ok();
        if existing.as_ref().is_some_and(|s| file_kind(s.st_mode) == Kind::Dir) {
            return Err(FileError::IsADirectory { path: path.to_owned() });
        }
        // Only a regular file's mode carries over: a symlink's own is
        // 0777, and a new file must not become world-writable through it.
        let kept = existing.filter(|s| file_kind(s.st_mode) == Kind::File).map(|s| s.st_mode & 0o7777);
        let mode = mode.or(kept).unwrap_or(0o644);
        Upload::new(dir, name, mode, path)
    }

    /// What `path` is (a final symlink is not followed).
    pub fn stat(&self, path: &str) -> Result<Stat, FileError> {
        let rel = self.rel(path)?;
        // A path that ends in no name (the root, `.`, `sub/..`) names a
        // directory that is never a symlink itself: stat it through an fd.
        if matches!(
            rel.components().next_back(),
            None | Some(Component::RootDir | Component::CurDir | Component::ParentDir)
        ) {
            let fd = self.open_at(None, &rel, OFlags::PATH, Mode::empty())?;
            return stat_fd(&fd, String::new());
        }
        let (dir, name) = self.parent(path)?;
        stat_at(&dir, &name)
    }

    /// The entries of a directory (without `.` and `..`), sorted by name.
    /// An entry removed between the directory's read and its stat is left
    /// out, as if the read had come a moment later.
    pub fn list(&self, path: &str) -> Result<Vec<Stat>, FileError> {
        let rel = self.rel(path)?;
        let fd = self.open_at(None, &rel, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())?;
        let mut out = Vec::new();
        for name in read_dir(&fd, &rel)? {
            match stat_at(&fd, &name) {
                Ok(s) => out.push(s),
                Err(FileError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Makes a directory; with `parents`, also the missing ones above it,
    /// and an existing directory is fine.
    pub fn mkdir(&self, path: &str, parents: bool, mode: u32) -> Result<(), FileError> {
        if parents {
            let rel = self.rel(path)?;
            return self.mkdir_all(&rel, mode).map(drop);
        }
        let (dir, name) = self.parent(path)?;
        rustix::fs::mkdirat(&dir, &name, Mode::from_raw_mode(mode))
            .map_err(|e| FileError::from_errno(e, path))
    }

    /// Creates every missing directory of `rel`, each looked up again from
    /// the root (so the kernel checks every step, `..` included, against
    /// the root), and returns the last one.
    fn mkdir_all(&self, rel: &Path, mode: u32) -> Result<OwnedFd, FileError> {
        let mut prefix = PathBuf::new();
        for c in rel.components() {
            match c {
                Component::RootDir => prefix.push("/"),
                Component::CurDir | Component::Prefix(_) => {}
                Component::ParentDir => prefix.push(".."),
                Component::Normal(name) => {
                    let parent =
                        self.open_at(None, &prefix, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())?;
                    match rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(mode)) {
                        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                        Err(e) => return Err(FileError::from_errno(e, rel)),
                    }
                    prefix.push(name);
                }
            }
        }
        self.open_at(None, &prefix, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())
    }

    /// Removes a file, symlink or empty directory; with `recursive`, a
    /// directory and everything in it (symlinks are removed, never
    /// followed).
    pub fn remove(&self, path: &str, recursive: bool) -> Result<(), FileError> {
        let (dir, name) = self.parent(path)?;
        let st = stat_at(&dir, &name)?;
        if st.kind != Kind::Dir {
            return rustix::fs::unlinkat(&dir, &name, AtFlags::empty())
                .map_err(|e| FileError::from_errno(e, path));
        }
        if recursive {
            remove_tree(&dir, &name)
        } else {
            rustix::fs::unlinkat(&dir, &name, AtFlags::REMOVEDIR).map_err(|e| FileError::from_errno(e, path))
        }
    }

    /// Renames `from` to `to`; without `overwrite`, an existing `to` is an
    /// error.
    pub fn rename(&self, from: &str, to: &str, overwrite: bool) -> Result<(), FileError> {
        let (fdir, fname) = self.parent(from)?;
        let (tdir, tname) = self.parent(to)?;
        let flags = if overwrite { RenameFlags::empty() } else { RenameFlags::NOREPLACE };
        rustix::fs::renameat_with(&fdir, &fname, &tdir, &tname, flags)
            .map_err(|e| FileError::from_errno(e, to))
    }

    /// Sets `path`'s permission bits (`0o7777` at most), as `chmod(1)`
    /// does: a final symlink is followed (within the root when it
    /// confines).
    pub fn set_mode(&self, path: &str, mode: u32) -> Result<(), FileError> {
        if mode > 0o7777 {
            return Err(FileError::BadPath { path: path.to_owned(), why: "mode has bits above 0o7777" });
        }
        let rel = self.rel(path)?;
        // An `O_PATH` fd opens anything (no read permission needed, no
        // side effect on a device); `fchmod` refuses it, its `/proc` link
        // does not.
        let fd = self.open_at(None, &rel, OFlags::PATH, Mode::empty())?;
        let mode = Mode::from_raw_mode(mode);
        let link = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
        match rustix::fs::chmodat(rustix::fs::CWD, link.as_str(), mode, AtFlags::empty()) {
            Err(rustix::io::Errno::NOENT) if !Path::new("/proc/self/fd").is_dir() => {
                // No `/proc`: an fd that `fchmod` takes, without blocking
                // on a FIFO or taking a terminal.
                let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY;
                let fd = self.open_at(None, &rel, flags, Mode::empty())?;
                rustix::fs::fchmod(&fd, mode).map_err(|e| FileError::from_errno(e, path))
            }
            r => r.map_err(|e| FileError::from_errno(e, path)),
        }
    }

    /// Sets `path`'s owner and/or group, as `chown(1)` does: a final
    /// symlink is followed (within the root when it confines). `None`
    /// leaves that id as it is.
    pub fn set_owner(&self, path: &str, uid: Option<u32>, gid: Option<u32>) -> Result<(), FileError> {
        let rel = self.rel(path)?;
        let fd = self.open_at(None, &rel, OFlags::PATH, Mode::empty())?;
        // `-1` means "leave it" to the kernel: never pass it as an id.
        let uid = uid.filter(|&u| u != u32::MAX).map(rustix::fs::Uid::from_raw);
        let gid = gid.filter(|&g| g != u32::MAX).map(rustix::fs::Gid::from_raw);
        rustix::fs::chownat(&fd, "", uid, gid, AtFlags::EMPTY_PATH)
            .map_err(|e| FileError::from_errno(e, path))
    }
}

fn name_of(rel: &Path) -> String {
    rel.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Reads a [`Source::Pseudo`] file whole, up to `limit` bytes (more is
/// [`FileError::TooLarge`] unless `truncate`). A read that would wait for
/// data (`/proc/kmsg`) ends it: what was there at once is the content.
pub fn read_pseudo(file: &File, limit: u64, truncate: bool, path: &str) -> Result<Vec<u8>, FileError> {
    use std::io::Read;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let room = (limit + 1).saturating_sub(out.len() as u64).min(buf.len() as u64) as usize;
        if room == 0 {
            break;
        }
        match (&*file).read(&mut buf[..room]) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(FileError::from_io(e, path)),
        }
    }
    if out.len() as u64 > limit {
        if !truncate {
            return Err(FileError::TooLarge { path: path.to_owned() });
        }
        out.truncate(limit as usize);
    }
    Ok(out)
}

/// Whether `fd` is on a file system whose files' sizes say nothing about
/// their content.
fn is_pseudo(fd: &OwnedFd) -> bool {
    use rustix::fs::{PROC_SUPER_MAGIC, StatFs};
    // Linux's magic numbers (linux/magic.h) beyond the two rustix names.
    const SYSFS: u64 = 0x6265_6572;
    const DEBUGFS: u64 = 0x6462_6720;
    const TRACEFS: u64 = 0x7472_6163;
    const SECURITYFS: u64 = 0x7363_6673;
    const CGROUP: u64 = 0x0027_e0eb;
    const CGROUP2: u64 = 0x6367_7270;
    const CONFIGFS: u64 = 0x6265_6570;
    const BPF: u64 = 0xcafe_4a11;
    const EFIVARFS: u64 = 0xde5e_81e4;
    let Ok(st): Result<StatFs, _> = rustix::fs::fstatfs(fd) else { return false };
    let t = st.f_type as u64;
    t == PROC_SUPER_MAGIC as u64
        || [SYSFS, DEBUGFS, TRACEFS, SECURITYFS, CGROUP, CGROUP2, CONFIGFS, BPF, EFIVARFS].contains(&t)
}

fn file_kind(mode: u32) -> Kind {
    match rustix::fs::FileType::from_raw_mode(mode) {
        rustix::fs::FileType::Directory => Kind::Dir,
        rustix::fs::FileType::Symlink => Kind::Symlink,
        rustix::fs::FileType::Fifo => Kind::Fifo,
        rustix::fs::FileType::Socket => Kind::Socket,
        rustix::fs::FileType::CharacterDevice => Kind::CharDevice,
        rustix::fs::FileType::BlockDevice => Kind::BlockDevice,
        _ => Kind::File,
    }
}

// `nlink_t` is 64 bits here but 32 on other targets.
#[allow(clippy::unnecessary_cast)]
fn to_stat(st: &rustix::fs::Stat, name: String, target: Option<String>) -> Stat {
    Stat {
        name,
        kind: file_kind(st.st_mode),
        size: st.st_size as u64,
        mode: st.st_mode & 0o7777,
        mtime_ms: st.st_mtime * 1000 + (st.st_mtime_nsec / 1_000_000) as i64,
        target,
        uid: st.st_uid,
        gid: st.st_gid,
        nlink: st.st_nlink as u64,
        mtime_nsec: st.st_mtime_nsec as u32,
    }
}

fn stat_fd(fd: &OwnedFd, name: String) -> Result<Stat, FileError> {
    let st = rustix::fs::fstat(fd).map_err(|e| FileError::from_errno(e, Path::new(&name)))?;
    Ok(to_stat(&st, name, None))
}

/// `name` in `dir`, not following a final symlink.
fn stat_at(dir: &impl AsFd, name: &OsStr) -> Result<Stat, FileError> {
    let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| FileError::from_errno(e, Path::new(name)))?;
    let target = (file_kind(st.st_mode) == Kind::Symlink)
        .then(|| rustix::fs::readlinkat(dir, name, Vec::new()).ok())
        .flatten()
        .map(|t| t.to_string_lossy().into_owned());
    Ok(to_stat(&st, name.to_string_lossy().into_owned(), target))
}

/// The names in a directory, without `.` and `..`.
fn read_dir(fd: &OwnedFd, rel: &Path) -> Result<Vec<OsString>, FileError> {
    let mut dir = rustix::fs::Dir::read_from(fd).map_err(|e| FileError::from_errno(e, rel))?;
    let mut out = Vec::new();
    while let Some(entry) = dir.read() {
        let entry = entry.map_err(|e| FileError::from_errno(e, rel))?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            out.push(OsStr::from_bytes(name).to_owned());
        }
    }
    Ok(out)
}

/// Removes directory `name` in `dir` and everything below it.
fn remove_tree(dir: &OwnedFd, name: &OsStr) -> Result<(), FileError> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let sub = rustix::fs::openat(dir, name, flags, Mode::empty())
        .map_err(|e| FileError::from_errno(e, Path::new(name)))?;
    for child in read_dir(&sub, Path::new(name))? {
        let st = stat_at(&sub, &child)?;
        if st.kind == Kind::Dir {
            remove_tree(&sub, &child)?;
        } else {
            rustix::fs::unlinkat(&sub, &child, AtFlags::empty())
                .map_err(|e| FileError::from_errno(e, Path::new(&child)))?;
        }
    }
    rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR).map_err(|e| FileError::from_errno(e, Path::new(name)))
}
