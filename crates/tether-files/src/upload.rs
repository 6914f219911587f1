//! Atomic writes. The data goes to an unnamed inode made with `O_TMPFILE`
//! in the target's directory, linked in place only when complete: until
//! then it has no name, so an upload cut by a stop, a restart (`exec`
//! closes its fd) or a crash (`kill -9`) leaves nothing behind; the kernel
//! frees the inode with its last fd.
//!
//! A file system without `O_TMPFILE` (or a host without `/proc`, which the
//! link goes through) gets the older way: a named temporary file
//! `.NAME.tether-XXXXXXXXXXXXXXXX` renamed over the target. Those are kept
//! in a process-wide registry so that [`remove_pending_uploads`] can remove
//! them before the daemon exits or re-executes itself; a crash leaves them
//! (they are recognisable by their name).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::{Mutex, OnceLock};
use std::time::UNIX_EPOCH;

use rustix::fs::{AtFlags, CWD, Mode, OFlags};
use rustix::io::Errno;

use crate::FileError;

/// An atomic write in progress; dropped without [`Upload::commit`], it
/// leaves the target untouched and nothing else behind.
#[derive(Debug)]
pub struct Upload {
    dir: OwnedFd,
    name: OsString,
    /// The new inode: the caller's [`Upload::file`] may be dropped before
    /// the commit, this keeps it alive (an unnamed inode dies with its
    /// last fd).
    inode: OwnedFd,
    temp: Temp,
    file: Option<File>,
    done: bool,
    path: String,
}

/// Where an upload's data lives until the commit.
#[derive(Debug)]
enum Temp {
    /// An `O_TMPFILE` inode with no name.
    Unnamed,
    /// A named temporary file, registered under this id.
    Named { tmp: OsString, id: u64 },
}

/// Named temporary files being written, by id: their directory (a
/// duplicate fd) and name. A std mutex: held for an insert, a remove or a
/// drain, never across I/O that can wait.
static PENDING: Mutex<BTreeMap<u64, (OwnedFd, OsString)>> = Mutex::new(BTreeMap::new());

/// Removes the named temporary files of every upload still in progress
/// (the unnamed ones need nothing). For a daemon about to exit or
/// re-execute itself: those uploads cannot complete any more (their
/// commits fail). Returns how many were removed.
pub fn remove_pending_uploads() -> usize {
    let pending = std::mem::take(&mut *PENDING.lock().unwrap_or_else(|e| e.into_inner()));
    pending
        .into_values()
        .filter(|(dir, tmp)| rustix::fs::unlinkat(dir, tmp, AtFlags::empty()).is_ok())
        .count()
}

/// Whether unnamed temporary files can be linked in place on this host.
fn can_link_unnamed() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| std::path::Path::new("/proc/self/fd").is_dir())
}

impl Upload {
    /// A new write of `name` in `dir`, with permission bits `mode`.
    pub(crate) fn new(dir: OwnedFd, name: OsString, mode: u32, path: &str) -> Result<Upload, FileError> {
        Upload::with(dir, name, mode, path, can_link_unnamed())
    }

    /// [`Upload::new`], unnamed only if `unnamed` (and the file system can).
    fn with(dir: OwnedFd, name: OsString, mode: u32, path: &str, unnamed: bool) -> Result<Upload, FileError> {
        let err = |e| FileError::from_errno(e, path);
        let unnamed = if unnamed {
            let flags = OFlags::WRONLY | OFlags::TMPFILE | OFlags::CLOEXEC;
            match rustix::fs::openat(&dir, ".", flags, Mode::from_raw_mode(0o600)) {
                Ok(fd) => Some(fd),
                // No O_TMPFILE on this file system (EISDIR: a kernel
                // before it).
                Err(Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL | Errno::NOSYS) => None,
                Err(e) => return Err(err(e)),
            }
        } else {
            None
        };
        let (fd, temp) = match unnamed {
            Some(fd) => (fd, Temp::Unnamed),
            None => {
                let tmp = temp_name(&name);
                let flags =
                    OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                let fd = rustix::fs::openat(&dir, &tmp, flags, Mode::from_raw_mode(0o600)).map_err(err)?;
                let id = random();
                match dir.try_clone() {
                    Ok(d) => {
                        PENDING.lock().unwrap_or_else(|e| e.into_inner()).insert(id, (d, tmp.clone()));
                    }
                    Err(e) => {
                        let _ = rustix::fs::unlinkat(&dir, &tmp, AtFlags::empty());
                        return Err(FileError::from_io(e, path));
                    }
                }
                (fd, Temp::Named { tmp, id })
            }
        };
        let inode = fd.try_clone().map_err(|e| FileError::from_io(e, path))?;
        let up =
            Upload { dir, name, inode, temp, file: Some(File::from(fd)), done: false, path: path.to_owned() };
        // The mode is set on the new file before any byte is written, so
        // the umask does not apply and nobody sees other permissions.
        rustix::fs::fchmod(&up.inode, Mode::from_raw_mode(mode)).map_err(err)?;
        Ok(up)
    }

    /// The temporary file, to write the data into.
    pub fn file(&mut self) -> Result<File, FileError> {
        self.file.take().ok_or(FileError::BadPath { path: self.path.clone(), why: "already taken" })
    }

    /// Puts the complete file in place of the target (atomically: a
    /// reader sees the old file or the new one).
    pub fn commit(mut self) -> Result<(), FileError> {
        let err = |e| FileError::from_errno(e, &self.path);
        match &self.temp {
            Temp::Named { tmp, .. } => {
                rustix::fs::renameat(&self.dir, tmp, &self.dir, &self.name).map_err(err)?;
            }
            Temp::Unnamed => {
                // `linkat` cannot replace: link straight to the name when
                // there is none, else to a temporary name renamed over it.
                let me = format!("/proc/self/fd/{}", self.inode.as_raw_fd());
                let link = |to: &OsString| {
                    rustix::fs::linkat(CWD, me.as_str(), &self.dir, to, AtFlags::SYMLINK_FOLLOW)
                };
                match link(&self.name) {
                    Ok(()) => {}
                    Err(Errno::EXIST) => {
                        let tmp = temp_name(&self.name);
                        link(&tmp).map_err(err)?;
                        if let Err(e) = rustix::fs::renameat(&self.dir, &tmp, &self.dir, &self.name) {
                            let _ = rustix::fs::unlinkat(&self.dir, &tmp, AtFlags::empty());
                            return Err(err(e));
                        }
                    }
                    Err(e) => return Err(err(e)),
                }
            }
        }
        self.done = true;
        Ok(())
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if let Temp::Named { tmp, id } = &self.temp {
            let registered = PENDING.lock().unwrap_or_else(|e| e.into_inner()).remove(id).is_some();
            // Not registered any more: `remove_pending_uploads` took it.
            if registered && !self.done {
                let _ = rustix::fs::unlinkat(self.dir.as_fd(), tmp, AtFlags::empty());
            }
        }
    }
}

/// `.NAME.tether-XXXXXXXXXXXXXXXX`.
fn temp_name(name: &OsString) -> OsString {
    let mut tmp = OsString::from(".");
    tmp.push(name);
    tmp.push(format!(".tether-{:016x}", random()));
    tmp
}

fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos());
    h.finish()
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// The named fallback: the temporary file is registered while the
    /// upload runs, [`remove_pending_uploads`] removes it (a stop), and
    /// the upload's own drop or commit afterwards does no harm.
    #[test]
    fn named_temporary_files_are_removed_by_remove_pending_uploads() {
        let base = std::env::temp_dir().join(format!("tether-upload-unit-{:016x}", random()));
        std::fs::create_dir(&base).expect("a test directory");
        let open = || rustix::fs::open(&base, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).expect("dir");
        let names = || -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(&base)
                .expect("readable")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        let mut a = Upload::with(open(), "a".into(), 0o644, "a", false).expect("upload a");
        a.file().expect("file").write_all(b"partial").expect("write");
        let mut b = Upload::with(open(), "b".into(), 0o644, "b", false).expect("upload b");
        b.file().expect("file").write_all(b"whole").expect("write");
        let seen = names();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(seen.iter().all(|n| n.starts_with(".a.tether-") || n.starts_with(".b.tether-")), "{seen:?}");
        // Other tests' uploads may be pending too: at least ours.
        assert!(remove_pending_uploads() >= 2);
        assert!(names().is_empty());
        drop(a);
        assert!(matches!(b.commit(), Err(FileError::NotFound { .. })));
        assert!(names().is_empty());
        std::fs::remove_dir(&base).expect("empty at the end");
    }
}
