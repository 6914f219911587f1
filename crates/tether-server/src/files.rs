//! The file routes: read, atomic write, stat, list, mkdir, remove, rename,
//! and directory trees as tar streams. Bodies stream both ways (a file of
//! any size is never held in memory). The work is `tether-files`', here
//! only HTTP: query parameters, streaming, statuses.

// The helpers' error is the finished response itself, returned once per
// request: its size does not matter.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Deserialize;
use tether_files::{
    FileError, Files, Kind, MAX_PSEUDO_BYTES, MAX_SPECIAL_READS, Source, SpecialSlot, Stat, read_pseudo,
};
use tether_proto::{Encoding, FileList, FileStat};
use tokio::io::AsyncWriteExt;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio_util::io::{ReaderStream, StreamReader, SyncIoBridge};

use crate::{AppState, Error};

/// Most bytes read from a special file (FIFO, device) when no `max_bytes`
/// is given.
const DEFAULT_SPECIAL_BYTES: u64 = 1 << 20;

/// How long a special read waits for a byte when no `idle_timeout` is
/// given; [`MAX_IDLE`] is the longest a client may ask for.
const DEFAULT_IDLE: Duration = Duration::from_secs(10);
const MAX_IDLE: Duration = Duration::from_secs(3600);

/// Query parameters of the file routes.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Q {
    path: Option<String>,
    /// Reads: allow FIFOs, sockets and devices (then bounded).
    special: bool,
    /// Reads: stop after this many bytes.
    max_bytes: Option<u64>,
    /// Special reads: end after this many seconds without a byte.
    idle_timeout: Option<f64>,
    /// Writes, mkdir: octal permission bits, e.g. `644`.
    mode: Option<String>,
    /// Writes, mkdir: create missing parent directories.
    parents: bool,
    /// Remove: a directory and everything in it.
    recursive: bool,
    /// Rename: source and destination; replace an existing destination.
    from: Option<String>,
    to: Option<String>,
    overwrite: bool,
}

impl Q {
    fn path(&self) -> Result<&str, Response> {
        self.path.as_deref().ok_or_else(|| bad("missing query parameter `path`"))
    }

    fn idle_timeout(&self) -> Result<Duration, Response> {
        match self.idle_timeout {
            None => Ok(DEFAULT_IDLE),
            Some(s) if s.is_finite() && s > 0.0 && s <= MAX_IDLE.as_secs_f64() => {
                Ok(Duration::from_secs_f64(s))
            }
            Some(_) => Err(bad(&format!("`idle_timeout` must be seconds in (0, {}]", MAX_IDLE.as_secs()))),
        }
    }

    fn mode(&self) -> Result<Option<u32>, Response> {
        match &self.mode {
            None => Ok(None),
            Some(m) => u32::from_str_radix(m.trim_start_matches("0o"), 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .map(Some)
                .ok_or_else(|| bad("`mode` must be octal permission bits, e.g. 644")),
        }
    }
}

/// The query of a file route. A malformed one (`parents=yes`, a
/// `max_bytes` that is not a number) is answered in the routes' own JSON
/// error shape, `400 bad_request`, rather than axum's plain text.
pub(crate) struct FilesQuery(Q);

impl<S: Send + Sync> FromRequestParts<S> for FilesQuery {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        match Query::<Q>::from_request_parts(parts, state).await {
            Ok(Query(q)) => Ok(FilesQuery(q)),
            Err(e) => Err(bad(&e.body_text())),
        }
    }
}

fn files(st: &AppState) -> Result<Arc<Files>, Response> {
    st.files.clone().ok_or_else(|| {
        let e = FileError::BadPath { path: String::new(), why: "the daemon has no usable files root" };
        error(e)
    })
}

/// Runs blocking file work off the runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, FileError> + Send + 'static,
) -> Result<T, Response> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(error),
        Err(e) => Err(internal(&format!("file task failed: {e}"))),
    }
}

/// `GET /v1/files?path=P[&special=true&max_bytes=N&idle_timeout=S]`: the
/// file's bytes. A regular file is sent with its length; a file of a
/// pseudo file system (`/proc`, `/sys`) is read whole first (bounded), so
/// its length is the real one; a special file streams (see
/// [`special_body`]).
pub(crate) async fn read(State(st): State<Arc<AppState>>, FilesQuery(q): FilesQuery) -> Response {
    let r = async {
        let f = files(&st)?;
        let path = q.path()?.to_owned();
        let special = q.special;
        let idle = q.idle_timeout()?;
        let (f2, p2) = (f.clone(), path.clone());
        let opened = blocking(move || f2.open_read(&p2, special)).await?;
        let mut resp = match opened.source {
            Source::Regular => {
                let limit = q.max_bytes.unwrap_or(u64::MAX);
                let len = opened.stat.size.min(limit);
                let file = tokio::fs::File::from_std(opened.file);
                let body = Body::from_stream(ReaderStream::with_capacity(
                    tokio::io::AsyncReadExt::take(file, len),
                    256 * 1024,
                ));
                let mut r = Response::new(body);
                r.headers_mut().insert(header::CONTENT_LENGTH, len.into());
                r
            }
            Source::Pseudo => {
                let (limit, truncate) = match q.max_bytes {
                    Some(n) => (n.min(MAX_PSEUDO_BYTES), true),
                    None => (MAX_PSEUDO_BYTES, false),
                };
                let data = blocking(move || read_pseudo(&opened.file, limit, truncate, &path)).await?;
                Response::new(Body::from(data))
            }
            Source::Special => {
                let slot = f.special_slot().ok_or_else(busy)?;
                let limit = q.max_bytes.unwrap_or(DEFAULT_SPECIAL_BYTES);
                Response::new(special_body(opened.file, limit, idle, slot))
            }
        };
        resp.headers_mut().insert(header::CONTENT_TYPE, "application/octet-stream".parse().expect("valid"));
        Ok::<_, Response>(resp)
    };
    r.await.unwrap_or_else(|e| e)
}

/// A special file's bytes as a body with no length: non-blocking reads
/// when the fd is ready (an fd that cannot be polled is read every
/// [`UNPOLLED_RETRY`] on the blocking pool, each read returning at once),
/// until EOF, `limit` bytes, or `idle` without a byte, which ends the body
/// cleanly. No thread waits on the file, and a client that goes away
/// drops the body: the fd and the `slot` go with it.
fn special_body(file: std::fs::File, limit: u64, idle: Duration, slot: SpecialSlot) -> Body {
    // Deprecated for inner types whose fd could change or close while
    // registered; a `File` owns its fd, which stays open and the same until
    // the `AsyncFd` drops it (the newer `register_with_interest` is the
    // same call marked `unsafe`, which this crate forbids).
    #[allow(deprecated)]
    let registered = AsyncFd::try_with_interest(file, Interest::READABLE);
    let src = match registered {
        Ok(fd) => SpecialSrc::Polled(fd),
        // EPERM: a file that does not support poll (many devices).
        Err(e) => SpecialSrc::Unpolled(Arc::new(e.into_parts().0)),
    };
    let read = SpecialRead { src, left: limit, idle, _slot: slot };
    let chunks = futures_util::stream::unfold(read, |mut r| async move {
        let chunk = r.next().await?;
        Some((chunk, r))
    });
    Body::from_stream(chunks)
}

/// How long an unpollable special file is left between reads that found
/// nothing.
const UNPOLLED_RETRY: Duration = Duration::from_millis(50);

/// A special read in progress.
struct SpecialRead {
    src: SpecialSrc,
    /// Bytes still allowed.
    left: u64,
    /// Longest wait for a byte.
    idle: Duration,
    /// The read's place among the root's special reads.
    _slot: SpecialSlot,
}

enum SpecialSrc {
    Polled(AsyncFd<std::fs::File>),
    Unpolled(Arc<std::fs::File>),
}

impl SpecialRead {
    /// The next chunk; `None` at EOF, at the limit or after `idle`
    /// without data.
    async fn next(&mut self) -> Option<std::io::Result<Bytes>> {
        if self.left == 0 {
            return None;
        }
        let want = self.left.min(64 * 1024) as usize;
        match tokio::time::timeout(self.idle, self.read(want)).await {
            Err(_idle) => None,
            Ok(Ok(b)) if b.is_empty() => None,
            Ok(Ok(b)) => {
                self.left -= b.len() as u64;
                Some(Ok(b))
            }
            Ok(Err(e)) => Some(Err(e)),
        }
    }

    async fn read(&self, want: usize) -> std::io::Result<Bytes> {
        use std::io::Read;
        let read_now = move |f: &std::fs::File| -> std::io::Result<Bytes> {
            let mut buf = vec![0; want];
            loop {
                match (&*f).read(&mut buf) {
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                    Ok(n) => {
                        buf.truncate(n);
                        return Ok(buf.into());
                    }
                }
            }
        };
        match &self.src {
            SpecialSrc::Polled(fd) => loop {
                let mut ready = fd.readable().await?;
                match ready.try_io(|fd| read_now(fd.get_ref())) {
                    Ok(r) => return r,
                    Err(_would_block) => continue,
                }
            },
            SpecialSrc::Unpolled(f) => loop {
                let f = f.clone();
                match tokio::task::spawn_blocking(move || read_now(&f))
                    .await
                    .map_err(std::io::Error::other)?
                {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        tokio::time::sleep(UNPOLLED_RETRY).await;
                    }
                    r => return r,
                }
            },
        }
    }
}

fn busy() -> Response {
    let message = format!(
        "too many special-file reads at once (at most {MAX_SPECIAL_READS} per daemon); try again later"
    );
    let mut r = Error::files("busy", 503, message).into_http(Encoding::Json);
    r.headers_mut().insert(header::RETRY_AFTER, 1.into());
    r
}

/// `PUT /v1/files?path=P[&mode=644&parents=true]`: writes the body to a
/// temporary file next to P and renames it over P once complete.
pub(crate) async fn write(
    State(st): State<Arc<AppState>>,
    FilesQuery(q): FilesQuery,
    body: Body,
) -> Response {
    let mut stream = body.into_data_stream();
    let r = async {
        let f = files(&st)?;
        let path = q.path()?.to_owned();
        let (mode, parents) = (q.mode()?, q.parents);
        let (f2, p2) = (f.clone(), path.clone());
        let mut upload = blocking(move || f2.create(&p2, mode, parents)).await?;
        let file = upload.file().map_err(error)?;
        let mut out = tokio::fs::File::from_std(file);
        while let Some(chunk) = stream.next().await {
            // A broken request drops `upload`: its temporary file goes and
            // the old file stays.
            let chunk = chunk.map_err(|e| bad(&format!("the upload was cut: {e}")))?;
            out.write_all(&chunk).await.map_err(|e| error(FileError::from_io(e, &path)))?;
        }
        out.flush().await.map_err(|e| error(FileError::from_io(e, &path)))?;
        drop(out);
        let p2 = path.clone();
        let stat = blocking(move || {
            upload.commit()?;
            f.stat(&p2)
        })
        .await?;
        Ok::<_, Response>(axum::Json(stat_to_wire(stat)).into_response())
    };
    match r.await {
        Ok(ok) => ok,
        Err(refused) => {
            drain(&mut stream).await;
            refused
        }
    }
}

/// The most of a refused upload's body read and dropped before the answer.
const DRAIN_MAX: u64 = 64 << 20;

/// How long a refused upload's body is read and dropped, at most.
const DRAIN_TIME: Duration = Duration::from_secs(10);

/// Reads and drops what is left of a refused upload's body (up to
/// [`DRAIN_MAX`] bytes within [`DRAIN_TIME`]) before the answer goes out.
/// A connection closed with unread data is reset by the kernel, and a
/// client that sends its whole body before it reads (Python's httpx, curl
/// without `Expect`) then sees the reset instead of the answer.
pub(crate) async fn drain<S, E>(stream: &mut S)
where
    S: futures_util::Stream<Item = Result<Bytes, E>> + Unpin,
{
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        let mut n = 0u64;
        while let Some(Ok(chunk)) = stream.next().await {
            n += chunk.len() as u64;
            if n > DRAIN_MAX {
                break;
            }
        }
    })
    .await;
}

/// Reads and drops what is left of a refused multipart form, as
/// [`drain`] does for a body (the same bounds, counted over every part).
pub(crate) async fn drain_form(form: &mut axum::extract::Multipart) {
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        let mut n = 0u64;
        while let Ok(Some(mut field)) = form.next_field().await {
            while let Ok(Some(chunk)) = field.chunk().await {
                n += chunk.len() as u64;
                if n > DRAIN_MAX {
                    return;
                }
            }
        }
    })
    .await;
}

/// `GET /v1/files/stat?path=P`.
pub(crate) async fn stat(State(st): State<Arc<AppState>>, FilesQuery(q): FilesQuery) -> Response {
    let r = async {
        let f = files(&st)?;
        let path = q.path()?.to_owned();
        let s = blocking(move || f.stat(&path)).await?;
        Ok::<_, Response>(axum::Json(stat_to_wire(s)).into_response())
    };
    r.await.unwrap_or_else(|e| e)
}

/// `GET /v1/files/list?path=P`.
pub(crate) async fn list(State(st): State<Arc<AppState>>, FilesQuery(q): FilesQuery) -> Response {
    let r = async {
        let f = files(&st)?;
        let path = q.path()?.to_owned();
        let entries = blocking(move || f.list(&path)).await?;
        let list = FileList { entries: entries.into_iter().map(stat_to_wire).collect() };
        Ok::<_, Response>(axum::Json(list).into_response())
    };
    r.await.unwrap_or_else(|e| e)
}

/// `POST /v1/files/mkdir?path=P[&parents=true&mode=755]`.
pub(crate) async fn mkdir(State(st): State<Arc<AppState>>, FilesQuery(q): FilesQuery) -> Response {
    let r = async {
        let f = files(&st)?;
        let path = q.path()?.to_owned();
        let (mode, parents) = (q.mode()?.unwrap_or(0o755), q.parents);
        let (f2, p2) = (f.clone(), path.clone());
        blocking(move || f2.mkdir(&p2, parents, mode)).await?;
        let s = blocking(move || f.stat(&path)).await?;
        Ok::<_, Response>(axum::Json(stat_to_wire(s)).into_response())
    };
    r.await.unwrap_or_else(|e| e)
}

/// `DELETE /v1/files?path=P[&recursive=true]`.
pub(crate) async fn remove(State(st): State<Arc<AppState>>, FilesQuery(q): FilesQuery) -> Response {
    let r = async {
        let f = files(&st)?;
        let path = q.path()?.to_owned();
        let recursive = q.recursive;
        blocking(move || f.remove(&path, recursive)).await?;
        Ok::<_, Response>(StatusCode::NO_CONTENT.into_response())
    };
    r.await.unwrap_or_else(|e| e)
}

/// `POST /v1/files/rename?from=A&to=B[&overwrite=true]`.
pub(crate) async fn rename(State(st): State<Arc<AppState>>, FilesQuery(q): FilesQuery) -> Response {
    let r = async {
        let f = files(&st)?;
        let (Some(from), Some(to)) = (q.from.clone(), q.to.clone()) else {
            return Err(bad("missing query parameter `from` or `to`"));
        };
        let overwrite = q.overwrite;
        blocking(move || f.rename(&from, &to, overwrite)).await?;
        Ok::<_, Response>(StatusCode::NO_CONTENT.into_response())
    };
    r.await.unwrap_or_else(|e| e)
}

/// `GET /v1/files/tar?path=P`: P (a directory or a file) as a tar stream,
/// written by a blocking task while the response streams. P is looked up
/// by that task before the status goes out, so a missing P is a 404;
/// entries that vanish later are left out of the archive; any other
/// failure mid-stream aborts the body (no end-of-archive marker, and the
/// chunked encoding is not terminated: the client sees a broken transfer).
pub(crate) async fn tar_out(State(st): State<Arc<AppState>>, FilesQuery(q): FilesQuery) -> Response {
    let r = async {
        let f = files(&st)?;
        let path = q.path()?.to_owned();
        let (w, r) = tokio::io::duplex(256 * 1024);
        let (found_tx, found) = tokio::sync::oneshot::channel::<Result<(), FileError>>();
        let (failed_tx, failed) = tokio::sync::oneshot::channel::<std::io::Error>();
        tokio::task::spawn_blocking(move || {
            let tar = match f.tar_begin(&path) {
                Ok(t) => t,
                Err(e) => {
                    let _ = found_tx.send(Err(e));
                    return;
                }
            };
            if found_tx.send(Ok(())).is_err() {
                return;
            }
            let mut bridge = SyncIoBridge::new(w);
            let r = tar.write_to(&mut bridge).map(drop).map_err(|e| {
                tracing::warn!(%path, "tar download failed: {e}");
                std::io::Error::other(e.to_string())
            });
            match r.and_then(|()| std::io::Write::flush(&mut bridge)) {
                Ok(()) => drop(failed_tx),
                Err(e) => {
                    let _ = failed_tx.send(e);
                }
            }
        });
        match found.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(error(e)),
            Err(_) => return Err(internal("the tar task ended early")),
        }
        // The status is sent by then: a failure aborts the body, so the
        // client sees a broken transfer rather than a short archive.
        let tail = futures_util::stream::once(async move { failed.await.ok() })
            .filter_map(|e| async move { e.map(Err) });
        let body = ReaderStream::with_capacity(r, 256 * 1024).chain(tail);
        let mut resp = Response::new(Body::from_stream(body));
        resp.headers_mut().insert(header::CONTENT_TYPE, "application/x-tar".parse().expect("valid"));
        Ok::<_, Response>(resp)
    };
    r.await.unwrap_or_else(|e| e)
}

/// `PUT /v1/files/tar?path=P`: unpacks the body (a tar stream) into
/// directory P.
pub(crate) async fn tar_in(
    State(st): State<Arc<AppState>>,
    FilesQuery(q): FilesQuery,
    body: Body,
) -> Response {
    let (f, path) = match files(&st).and_then(|f| Ok((f, q.path()?.to_owned()))) {
        Ok(v) => v,
        Err(refused) => {
            drain(&mut body.into_data_stream()).await;
            return refused;
        }
    };
    let stream = body.into_data_stream().map(|r| r.map_err(std::io::Error::other));
    let mut reader = SyncIoBridge::new(StreamReader::new(stream));
    // The reader comes back, so that what a refused archive left unread
    // can be drained before the answer (see [`drain`]).
    let (r, reader) = match blocking(move || Ok((f.untar_from(&path, &mut reader), reader))).await {
        Ok(v) => v,
        Err(e) => return e,
    };
    match r {
        Ok(n) => axum::Json(serde_json::json!({ "entries": n })).into_response(),
        Err(e) => {
            drain(&mut reader.into_inner().into_inner()).await;
            error(e)
        }
    }
}

pub(crate) fn stat_to_wire(s: Stat) -> FileStat {
    let kind = match s.kind {
        Kind::File => "file",
        Kind::Dir => "dir",
        Kind::Symlink => "symlink",
        Kind::Fifo => "fifo",
        Kind::Socket => "socket",
        Kind::CharDevice => "char_device",
        Kind::BlockDevice => "block_device",
    };
    FileStat {
        name: s.name,
        kind: kind.to_owned(),
        size: s.size,
        mode: s.mode,
        mtime_ms: s.mtime_ms,
        target: s.target,
    }
}

/// A file error as its status and `{code, message}`.
fn error(e: FileError) -> Response {
    Error::from(e).into_http(Encoding::Json)
}

fn bad(message: &str) -> Response {
    Error::files("bad_request", 400, message).into_http(Encoding::Json)
}

fn internal(message: &str) -> Response {
    Error::files("internal", 500, message).into_http(Encoding::Json)
}
