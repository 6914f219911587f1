//! Directory trees as tar streams: [`Files::tar_to`] packs, [`Files::untar_from`]
//! unpacks. Modes are kept, symlinks stay symlinks (never followed either
//! way), regular files are written atomically one by one.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags};

use crate::{FileError, Files, Kind, Upload, read_dir, stat_at};

/// Most entries an archive may unpack (bounds the work one request does).
const MAX_ENTRIES: u64 = 1_000_000;

impl Files {
    /// Writes `path` (a directory, or a single file) as a tar stream to
    /// `out`; entry names are relative to `path`'s parent, so the archive
    /// unpacks to a directory of the same name. Returns the number of
    /// entries. FIFOs, sockets and devices are left out. The same as
    /// [`Files::tar_begin`] then [`Tar::write_to`].
    pub fn tar_to(&self, path: &str, out: impl Write) -> Result<u64, FileError> {
        self.tar_begin(path)?.write_to(out)
    }

    /// Finds `path` for a tar stream: an error here (it does not exist)
    /// comes before any byte of the archive. Below it, entries that vanish
    /// while the archive is written are left out.
    pub fn tar_begin(&self, path: &str) -> Result<Tar, FileError> {
        let (dir, name) = self.parent_or_root(path)?;
        stat_at(&dir, &name)?;
        Ok(Tar { dir, name, path: path.to_owned() })
    }
    /// The directory holding `path` and its name; for the root itself, the
    /// root and `.`.
    fn parent_or_root(&self, path: &str) -> Result<(OwnedFd, std::ffi::OsString), FileError> {
        match self.parent(path) {
            Err(FileError::BadPath { .. }) => {
                let rel = self.rel(path)?;
                let fd = self.open_at(None, &rel, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())?;
                Ok((fd, ".".into()))
            }
            other => other,
        }
    }

    /// Unpacks a tar stream into directory `path` (created if missing).
    /// Entry names must be relative and stay inside (no `..`); symlinks are
    /// created as they are, and never followed by a later entry. Returns
    /// the number of entries.
    pub fn untar_from(&self, path: &str, input: impl Read) -> Result<u64, FileError> {
        let rel = self.rel(path)?;
        let top = self.mkdir_all(&rel, 0o755)?;
        let mut archive = tar::Archive::new(input);
        let mut n = 0u64;
        let entries = archive.entries().map_err(|e| FileError::BadArchive(e.to_string()))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| FileError::BadArchive(e.to_string()))?;
            n += 1;
            if n > MAX_ENTRIES {
                return Err(FileError::BadArchive(format!("more than {MAX_ENTRIES} entries")));
            }
            let name = entry.path().map_err(|e| FileError::BadArchive(e.to_string()))?.into_owned();
            let parts = clean(&name)?;
            let Some((last, dirs)) = parts.split_last() else { continue };
            let shown = name.display().to_string();
            let dir = self.dirs_below(&top, dirs, &shown)?;
            let mode = entry.header().mode().unwrap_or(0o644) & 0o7777;
            match entry.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    // Like an upload: a temporary file renamed into place.
                    let existing = rustix::fs::statat(&dir, last.as_os_str(), AtFlags::SYMLINK_NOFOLLOW).ok();
                    if existing.is_some_and(|s| crate::file_kind(s.st_mode) == Kind::Dir) {
                        return Err(FileError::IsADirectory { path: shown });
                    }
                    let mut up = Upload::new(dir, last.clone(), mode, &shown)?;
                    let mut f = up.file()?;
                    std::io::copy(&mut entry, &mut f).map_err(|e| FileError::from_io(e, &name))?;
                    drop(f);
                    up.commit()?;
                }
                tar::EntryType::Directory => {
                    match rustix::fs::mkdirat(&dir, last.as_os_str(), Mode::from_raw_mode(0o700)) {
                        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                        Err(e) => return Err(FileError::from_errno(e, &name)),
                    }
                    let d = self.open_at(
                        Some(&dir),
                        Path::new(last),
                        OFlags::RDONLY | OFlags::DIRECTORY,
                        Mode::empty(),
                    )?;
                    rustix::fs::fchmod(&d, Mode::from_raw_mode(mode))
                        .map_err(|e| FileError::from_errno(e, &name))?;
                }
                tar::EntryType::Symlink => {
                    let target = entry
                        .link_name()
                        .map_err(|e| FileError::BadArchive(e.to_string()))?
                        .ok_or_else(|| FileError::BadArchive(format!("{shown}: symlink without a target")))?;
                    // Replace whatever is there (a file, an older link).
                    match rustix::fs::unlinkat(&dir, last.as_os_str(), AtFlags::empty()) {
                        Ok(()) | Err(rustix::io::Errno::NOENT) => {}
                        Err(e) => return Err(FileError::from_errno(e, &name)),
                    }
                    rustix::fs::symlinkat(target.as_os_str(), &dir, last.as_os_str())
                        .map_err(|e| FileError::from_errno(e, &name))?;
                }
                tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => {}
                other => {
                    return Err(FileError::BadArchive(format!(
                        "{shown}: entries of type {other:?} are not supported"
                    )));
                }
            }
        }
        Ok(n)
    }

    /// Opens (creating as needed) the directories `dirs` below `top`, one
    /// name at a time, never through a symlink out of the tree.
    fn dirs_below(
        &self,
        top: &OwnedFd,
        dirs: &[std::ffi::OsString],
        shown: &str,
    ) -> Result<OwnedFd, FileError> {
        let mut cur =
            self.open_at(Some(top), Path::new("."), OFlags::PATH | OFlags::DIRECTORY, Mode::empty())?;
        for d in dirs {
            match rustix::fs::mkdirat(&cur, d.as_os_str(), Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(FileError::from_errno(e, shown)),
            }
            // Beneath the current directory even when not confined: an
            // archive must not write through a symlink it planted.
            cur = rustix::fs::openat2(
                &cur,
                d.as_os_str(),
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
                rustix::fs::ResolveFlags::BENEATH | rustix::fs::ResolveFlags::NO_SYMLINKS,
            )
            .map_err(|e| FileError::from_errno(e, shown))?;
        }
        Ok(cur)
    }
}

/// A tree found by [`Files::tar_begin`], to be written.
#[derive(Debug)]
pub struct Tar {
    dir: OwnedFd,
    name: std::ffi::OsString,
    path: String,
}

impl Tar {
    /// Writes the tree as a tar stream to `out` and returns the number of
    /// entries. An error ends the stream where it happened, without the
    /// end-of-archive marker: a reader sees a truncated archive.
    pub fn write_to(self, out: impl Write) -> Result<u64, FileError> {
        let mut b = tar::Builder::new(out);
        b.follow_symlinks(false);
        let mut n = 0;
        // Gone since `tar_begin` found it: an archive of what is there
        // now, which is nothing.
        add(&mut b, &self.dir, &self.name, Path::new(&self.name), &mut n)?;
        b.into_inner()
            .map_err(|e| FileError::from_io(e, &self.path))?
            .flush()
            .map_err(|e| FileError::from_io(e, &self.path))?;
        Ok(n)
    }
}

/// An entry name as plain names: relative, no `..`.
fn clean(name: &Path) -> Result<Vec<std::ffi::OsString>, FileError> {
    let mut out = Vec::new();
    for c in name.components() {
        match c {
            Component::Normal(n) => out.push(n.to_owned()),
            Component::CurDir => {}
            _ => {
                return Err(FileError::BadArchive(format!(
                    "{}: entry names must be relative, without `..`",
                    name.display()
                )));
            }
        }
    }
    Ok(out)
}

/// Appends `name` in `dir` (and, for a directory, everything below it) as
/// `as_path`. An entry gone by the time it is reached is left out (the
/// tree changed while it was being read).
fn add<W: Write>(
    b: &mut tar::Builder<W>,
    dir: &OwnedFd,
    name: &OsStr,
    as_path: &Path,
    n: &mut u64,
) -> Result<(), FileError> {
    match add_one(b, dir, name, as_path, n) {
        Err(FileError::NotFound { .. }) => Ok(()),
        other => other,
    }
}

fn add_one<W: Write>(
    b: &mut tar::Builder<W>,
    dir: &OwnedFd,
    name: &OsStr,
    as_path: &Path,
    n: &mut u64,
) -> Result<(), FileError> {
    let st = stat_at(dir, name)?;
    let mut h = tar::Header::new_gnu();
    h.set_mode(st.mode);
    h.set_mtime(st.mtime_ms.max(0) as u64 / 1000);
    let err = |e: std::io::Error| FileError::from_io(e, as_path);
    match st.kind {
        Kind::Dir => {
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let sub = rustix::fs::openat(dir, name, flags, Mode::empty())
                .map_err(|e| FileError::from_errno(e, as_path))?;
            if name != "." {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                b.append_data(&mut h, as_path, std::io::empty()).map_err(err)?;
                *n += 1;
            }
            // A directory removed since it was opened reads as ENOENT:
            // it has no entries any more.
            let mut children = match read_dir(&sub, as_path) {
                Err(FileError::NotFound { .. }) => Vec::new(),
                other => other?,
            };
            children.sort();
            for c in children {
                let child_path: PathBuf = if name == "." { PathBuf::from(&c) } else { as_path.join(&c) };
                add(b, &sub, &c, &child_path, n)?;
            }
        }
        Kind::File => {
            let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let fd = rustix::fs::openat(dir, name, flags, Mode::empty())
                .map_err(|e| FileError::from_errno(e, as_path))?;
            let file = std::fs::File::from(fd);
            // The size in the header must be what is appended: take it
            // from the open file, never append more than it says, and pad
            // a file that shrank meanwhile with zeros (as GNU tar does),
            // so the entries after it stay where the headers say.
            let size = file.metadata().map_err(err)?.len();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(size);
            let data = file.take(size).chain(std::io::repeat(0)).take(size);
            b.append_data(&mut h, as_path, data).map_err(err)?;
            *n += 1;
        }
        Kind::Symlink => {
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            let target = st.target.unwrap_or_default();
            b.append_link(&mut h, as_path, target).map_err(err)?;
            *n += 1;
        }
        // FIFOs, sockets, devices: not part of a copied tree.
        _ => {}
    }
    Ok(())
}
