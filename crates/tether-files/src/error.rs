use std::io;
use std::path::Path;

use rustix::io::Errno;

/// Why a file operation was refused. Each variant maps to one HTTP status
/// (see [`FileError::status`]).
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Nothing at that path.
    #[error("{path}: no such file or directory")]
    NotFound {
        /// The path asked for.
        path: String,
    },
    /// The path leads outside the confined root (`..`, an absolute path
    /// elsewhere, or a symlink out of the tree).
    #[error("{path}: outside the files root")]
    Outside {
        /// The path asked for.
        path: String,
    },
    /// The OS refused (permissions, read-only file system).
    #[error("{path}: permission denied")]
    PermissionDenied {
        /// The path asked for.
        path: String,
    },
    /// Something is already there (or a directory is not empty).
    #[error("{path}: already exists (or is a directory that is not empty)")]
    Exists {
        /// The path asked for.
        path: String,
    },
    /// A FIFO, socket or device, read without asking for special files.
    #[error("{path}: not a regular file (ask for special files explicitly)")]
    Special {
        /// The path asked for.
        path: String,
    },
    /// A directory where a file was needed.
    #[error("{path}: is a directory")]
    IsADirectory {
        /// The path asked for.
        path: String,
    },
    /// A file where a directory was needed.
    #[error("{path}: not a directory")]
    NotADirectory {
        /// The path asked for.
        path: String,
    },
    /// A path that cannot be used.
    #[error("{path}: {why}")]
    BadPath {
        /// The path asked for.
        path: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A tar stream that cannot be unpacked.
    #[error("bad archive: {0}")]
    BadArchive(String),
    /// The file system is full (or a quota is reached).
    #[error("{path}: no space left on device")]
    NoSpace {
        /// The path being written.
        path: String,
    },
    /// Too large for the file system or a limit.
    #[error("{path}: too large")]
    TooLarge {
        /// The path.
        path: String,
    },
    /// Any other OS error.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl FileError {
    /// From an OS error number for `path`.
    pub fn from_errno(e: Errno, path: impl AsRef<Path>) -> FileError {
        FileError::from_io(io::Error::from(e), path)
    }

    /// From an I/O error for `path`.
    pub fn from_io(e: io::Error, path: impl AsRef<Path>) -> FileError {
        let path = path.as_ref().display().to_string();
        match e.raw_os_error().map(Errno::from_raw_os_error) {
            Some(Errno::NOENT) => FileError::NotFound { path },
            Some(Errno::XDEV) | Some(Errno::LOOP) => FileError::Outside { path },
            Some(Errno::ACCESS) | Some(Errno::PERM) | Some(Errno::ROFS) => {
                FileError::PermissionDenied { path }
            }
            Some(Errno::EXIST) | Some(Errno::NOTEMPTY) => FileError::Exists { path },
            Some(Errno::ISDIR) => FileError::IsADirectory { path },
            Some(Errno::NOTDIR) => FileError::NotADirectory { path },
            Some(Errno::NOSPC) | Some(Errno::DQUOT) => FileError::NoSpace { path },
            Some(Errno::FBIG) | Some(Errno::NAMETOOLONG) => FileError::TooLarge { path },
            _ => FileError::Io { path, source: e },
        }
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> u16 {
        match self {
            FileError::NotFound { .. } => 404,
            FileError::Outside { .. } | FileError::PermissionDenied { .. } | FileError::Special { .. } => 403,
            FileError::Exists { .. } => 409,
            FileError::IsADirectory { .. }
            | FileError::NotADirectory { .. }
            | FileError::BadPath { .. }
            | FileError::BadArchive(_) => 400,
            FileError::TooLarge { .. } => 413,
            FileError::NoSpace { .. } => 507,
            FileError::Io { .. } => 500,
        }
    }

    /// A stable machine-readable name for the error.
    pub fn code(&self) -> &'static str {
        match self {
            FileError::NotFound { .. } => "not_found",
            FileError::Outside { .. } => "outside_root",
            FileError::PermissionDenied { .. } => "permission_denied",
            FileError::Exists { .. } => "exists",
            FileError::Special { .. } => "special_file",
            FileError::IsADirectory { .. } => "is_a_directory",
            FileError::NotADirectory { .. } => "not_a_directory",
            FileError::BadPath { .. } => "bad_path",
            FileError::BadArchive(_) => "bad_archive",
            FileError::NoSpace { .. } => "no_space",
            FileError::TooLarge { .. } => "too_large",
            FileError::Io { .. } => "io",
        }
    }

    /// The OS error number, if one is behind it.
    pub fn errno(&self) -> Option<i32> {
        match self {
            FileError::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}
