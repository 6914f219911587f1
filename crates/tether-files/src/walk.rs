//! Walking a directory tree, for searches (the LangSmith `glob` and
//! `grep`): one directory fd per level, every step a single name opened
//! with `O_NOFOLLOW` below the previous one, so a walk never follows a
//! symlink and never leaves the directory it started in, whatever is
//! renamed or swapped during it.
//!
//! The order is deterministic: a directory's entries sorted by name (bytes)
//! and each directory's contents right after it (pre-order), which is
//! [`Path`]'s own order (component by component). A walk that stops at a
//! limit has therefore visited a prefix of what a complete walk visits.

use std::ffi::OsString;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rustix::fs::{Mode, OFlags};

use crate::{FileError, Files, Kind, Stat, file_kind, stat_at};

/// Bounds on one [`Files::walk`].
#[derive(Clone, Copy, Debug)]
pub struct WalkLimits {
    /// Most names read from directories over the whole walk; a directory
    /// that cannot be read in full within it ends the walk before any of
    /// its entries is visited.
    pub max_entries: u64,
    /// Deepest level descended into (the start directory's entries are at
    /// depth 1). Each level holds one open fd.
    pub max_depth: usize,
    /// When to give up (checked before each entry).
    pub deadline: Option<Instant>,
}

/// What a visitor wants after seeing an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Go on (into the entry, if it is a directory).
    Continue,
    /// Go on, but not into this directory.
    Prune,
    /// End the walk.
    Stop,
}

/// Which limit ended a walk early.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkLimit {
    /// [`WalkLimits::max_entries`].
    Entries,
    /// [`WalkLimits::max_depth`] (the walk went on elsewhere).
    Depth,
    /// [`WalkLimits::deadline`].
    Deadline,
}

/// How a walk ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkEnd {
    /// Every entry was visited (or pruned by the visitor).
    Complete,
    /// The visitor returned [`Step::Stop`].
    Stopped,
    /// A limit was hit: some entries were not visited.
    Truncated(WalkLimit),
}

/// One entry met by [`Files::walk`].
#[derive(Debug)]
pub struct Entry<'a> {
    /// Its path below the start directory (`a/b/c`).
    pub rel: &'a Path,
    /// What it is (a symlink is not followed).
    pub stat: Stat,
    /// 1 for the start directory's own entries.
    pub depth: usize,
    dir: &'a OwnedFd,
}

impl Entry<'_> {
    /// Opens the entry for reading, if it is (still) a regular file; never
    /// through a symlink, never blocking on a FIFO swapped in meanwhile.
    /// The file stays `O_NONBLOCK`: no change for ordinary files, and a
    /// "regular" file of procfs that would block (`/proc/kmsg`) fails its
    /// read with `EAGAIN` instead.
    pub fn open(&self) -> Result<File, FileError> {
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
        let name = self.rel.file_name().unwrap_or_default();
        let fd = rustix::fs::openat(self.dir, name, flags, Mode::empty())
            .map_err(|e| FileError::from_errno(e, self.rel))?;
        let st = rustix::fs::fstat(&fd).map_err(|e| FileError::from_errno(e, self.rel))?;
        if file_kind(st.st_mode) != Kind::File {
            return Err(FileError::Special { path: self.rel.display().to_string() });
        }
        Ok(File::from(fd))
    }
}

/// One directory being walked: its fd, the names still to visit (in
/// reverse, popped from the end) and its path below the start.
struct Level {
    fd: OwnedFd,
    names: Vec<OsString>,
    rel: PathBuf,
}

impl Files {
    /// Visits everything below directory `path` (not `path` itself) in
    /// path order, without following symlinks (a symlink is visited as
    /// itself). Only `path` is resolved like any other path (confined to
    /// the root when the root confines); an error there is returned.
    /// Below it, an entry that vanishes or a directory that cannot be read
    /// is skipped.
    pub fn walk(
        &self,
        path: &str,
        limits: WalkLimits,
        mut visit: impl FnMut(&Entry<'_>) -> Step,
    ) -> Result<WalkEnd, FileError> {
        let rel = self.rel(path)?;
        let fd = self.open_at(None, &rel, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())?;
        let mut budget = limits.max_entries;
        let Some(names) = sorted_names(&fd, &mut budget) else {
            return Ok(WalkEnd::Truncated(WalkLimit::Entries));
        };
        let mut stack = vec![Level { fd, names, rel: PathBuf::new() }];
        let mut end = WalkEnd::Complete;
        loop {
            let depth = stack.len();
            let Some(top) = stack.last_mut() else { break };
            let Some(name) = top.names.pop() else {
                stack.pop();
                continue;
            };
            if limits.deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(WalkEnd::Truncated(WalkLimit::Deadline));
            }
            let Ok(stat) = stat_at(&top.fd, &name) else { continue };
            let rel = top.rel.join(&name);
            let kind = stat.kind;
            match visit(&Entry { rel: &rel, stat, depth, dir: &top.fd }) {
                Step::Stop => return Ok(WalkEnd::Stopped),
                Step::Prune => continue,
                Step::Continue if kind != Kind::Dir => continue,
                Step::Continue => {}
            }
            if depth >= limits.max_depth {
                end = WalkEnd::Truncated(WalkLimit::Depth);
                continue;
            }
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let Ok(sub) = rustix::fs::openat(&top.fd, &name, flags, Mode::empty()) else { continue };
            let Some(names) = sorted_names(&sub, &mut budget) else {
                return Ok(WalkEnd::Truncated(WalkLimit::Entries));
            };
            stack.push(Level { fd: sub, names, rel });
        }
        Ok(end)
    }

    /// The absolute form of a client's path, for showing it: a relative
    /// path starts at the root, `.` components are dropped. Not for
    /// lookups (`..` and symlinks are left as they are).
    pub fn absolute(&self, path: &str) -> PathBuf {
        let mut out = self.root_path.clone();
        for c in Path::new(path).components() {
            match c {
                std::path::Component::CurDir => {}
                other => out.push(other),
            }
        }
        out
    }
}

/// The names in `fd`, sorted in reverse (for popping), charged to
/// `budget`; `None` when the directory holds more names than are left.
/// An unreadable directory counts as empty.
fn sorted_names(fd: &OwnedFd, budget: &mut u64) -> Option<Vec<OsString>> {
    let Ok(mut dir) = rustix::fs::Dir::read_from(fd) else { return Some(Vec::new()) };
    let mut names = Vec::new();
    while let Some(entry) = dir.read() {
        let Ok(entry) = entry else { break };
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        *budget = budget.checked_sub(1)?;
        names.push(std::ffi::OsStr::from_bytes(name).to_owned());
    }
    names.sort_unstable_by(|a, b| b.cmp(a));
    Some(names)
}
