//! Private directories: made with mode 0700 under an unguessable name, so
//! that no other user can enter them or plant a file where one is expected,
//! and removed with everything in them on drop.

use std::io;
use std::path::{Path, PathBuf};

/// A new directory only this user can enter, removed (with its contents)
/// when dropped: where the daemon puts files a command reads (a named
/// shell's scripts and FIFOs, a one-shot's code).
#[derive(Debug)]
pub struct PrivateDir {
    path: PathBuf,
}

impl PrivateDir {
    /// Creates `<base>/<prefix>-<16 random hex digits>` with mode 0700,
    /// where `base` is `$XDG_RUNTIME_DIR` if it names a directory (a
    /// per-user tmpfs), else the system's temporary directory. Fails
    /// rather than reuse a directory that exists.
    pub fn new(prefix: &str) -> io::Result<PrivateDir> {
        let base = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|p| p.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        PrivateDir::new_in(&base, prefix)
    }

    /// Creates `<base>/<prefix>-<16 random hex digits>` with mode 0700.
    /// Fails rather than reuse a directory that exists.
    pub fn new_in(base: &Path, prefix: &str) -> io::Result<PrivateDir> {
        use std::os::unix::fs::DirBuilderExt;
        let path = base.join(format!("{prefix}-{:016x}", rand::random::<u64>()));
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok(PrivateDir { path })
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Gives the directory up without removing it (a named shell handed
    /// to the next daemon goes on using it: [`PrivateDir::adopt`]).
    pub(crate) fn keep(mut self) -> PathBuf {
        let path = std::mem::take(&mut self.path);
        std::mem::forget(self);
        path
    }

    /// Takes charge of a private directory a previous daemon made.
    pub(crate) fn adopt(path: PathBuf) -> PrivateDir {
        PrivateDir { path }
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_dir_is_new_private_unguessable_and_removed_on_drop() {
        use std::os::unix::fs::PermissionsExt;
        let base = std::env::temp_dir();
        let a = PrivateDir::new_in(&base, "tether-test").expect("create");
        let b = PrivateDir::new_in(&base, "tether-test").expect("create");
        assert_ne!(a.path(), b.path());
        let name = a.path().file_name().and_then(|n| n.to_str()).expect("a name").to_owned();
        let hex = name.strip_prefix("tether-test-").expect("the prefix");
        assert!(hex.len() == 16 && hex.bytes().all(|c| c.is_ascii_hexdigit()), "{name}");
        let mode = std::fs::metadata(a.path()).expect("exists").permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        std::fs::write(a.path().join("f"), "x").expect("write inside");
        let path = a.path().to_owned();
        drop(a);
        assert!(!path.exists(), "removed with its contents");
        assert!(PrivateDir::new("tether-test").is_ok());
    }
}
