//! Where a command's output comes from (a pipe or a terminal master), and
//! reading it without holding a buffer per idle command.

use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;

use crate::pty::{self};

/// Largest single read from a pipe.
pub(super) const READ_BYTES: usize = 256 * 1024;

thread_local! {
    /// Read scratch space shared by all actors on a worker thread, so an
    /// idle command holds no read buffer.
    static SCRATCH: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// An output stream's source.
pub(super) enum Source {
    Pipe(pipe::Receiver),
    /// A terminal master (non-blocking, registered with the runtime).
    Pty(Arc<AsyncFd<File>>),
}

/// Largest single read from a terminal (they rarely hold more than 4 KiB).
pub(super) const PTY_READ_BYTES: usize = 64 * 1024;

thread_local! {
    /// Terminal read space shared by all actors on a worker thread.
    static PTY_SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; PTY_READ_BYTES].into_boxed_slice());
}

impl Source {
    /// Reads at most `want` bytes as one chunk; `Ok(None)` is the end.
    pub(super) fn try_read(&self, want: usize) -> io::Result<Option<Bytes>> {
        match self {
            Source::Pipe(p) => SCRATCH.with_borrow_mut(|buf| {
                // Read into spare capacity (never zeroed). A large read
                // becomes the chunk itself (no copy; the thread's next read
                // allocates afresh); a small one is copied out at its exact
                // size and the scratch space is reused.
                buf.clear();
                buf.reserve(READ_BYTES);
                match p.try_read_buf(&mut (&mut *buf).limit(want))? {
                    0 => Ok(None),
                    n if n >= READ_BYTES / 2 => Ok(Some(buf.split().freeze())),
                    _ => Ok(Some(Bytes::copy_from_slice(buf))),
                }
            }),
            // A terminal read is small (about 4 KiB): read into a scratch
            // array zeroed once, then copy out exactly what came.
            Source::Pty(fd) => PTY_SCRATCH.with_borrow_mut(|scratch| {
                let want = want.min(scratch.len());
                match pty::try_read(fd, &mut scratch[..want])? {
                    0 => Ok(None),
                    n => Ok(Some(Bytes::copy_from_slice(&scratch[..n]))),
                }
            }),
        }
    }
}

pub(super) async fn readable(p: &Option<Source>) -> io::Result<()> {
    match p {
        Some(Source::Pipe(p)) => p.readable().await,
        // The guard is dropped without clearing: the next `try_read` clears
        // readiness when it finds nothing.
        Some(Source::Pty(fd)) => fd.readable().await.map(drop),
        None => std::future::pending().await,
    }
}
