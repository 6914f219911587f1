//! The file routes: read, atomic write, stat, list, mkdir, remove, rename,
//! and directory trees as tar streams. Bodies stream both ways (a file of
//! any size is never held in memory). The work is `tether-files`', here
//! only HTTP: query parameters, streaming, statuses.

// The helpers' error is the finished response itself, returned once per
// request: its size does not matter.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::Deserialize;
use tether_files::{FileError, Files, Kind, Stat};
use tether_proto::{FileList, FileStat};
use tokio::io::AsyncWriteExt;
use tokio_util::io::{ReaderStream, StreamReader, SyncIoBridge};

use crate::AppState;

/// Most bytes read from a special file (FIFO, device) when no `max_bytes`
/// is given.
const DEFAULT_SPECIAL_BYTES: u64 = 1 << 20;

/// Query parameters of the file routes.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Q {
    path: Option<String>,
    /// Reads: allow FIFOs, sockets and devices (then bounded).
    special: bool,
    /// Reads: stop after this many bytes.
    max_bytes: Option<u64>,
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

/// `GET /v1/files?path=P[&special=true&max_bytes=N]`: the file's bytes.
pub(crate) async fn read(State(st): State<Arc<AppState>>, Query(q): Query<Q>) -> Response {
    let r = async {
        let f = files(&st)?;
        let path = q.path()?.to_owned();
        let special = q.special;
        let (file, stat) = blocking(move || f.open_read(&path, special)).await?;
        let file = tokio::fs::File::from_std(file);
        let mut resp = if stat.kind == Kind::File {
            let limit = q.max_bytes.unwrap_or(u64::MAX);
            let len = stat.size.min(limit);
            let body = Body::from_stream(ReaderStream::with_capacity(
                tokio::io::AsyncReadExt::take(file, len),
                256 * 1024,
            ));
            let mut r = Response::new(body);
            r.headers_mut().insert(header::CONTENT_LENGTH, len.into());
            r
        } else {
            let limit = q.max_bytes.unwrap_or(DEFAULT_SPECIAL_BYTES);
            Response::new(Body::from_stream(ReaderStream::new(tokio::io::AsyncReadExt::take(file, limit))))
        };
        resp.headers_mut().insert(header::CONTENT_TYPE, "application/octet-stream".parse().expect("valid"));
        Ok::<_, Response>(resp)
    };
    r.await.unwrap_or_else(|e| e)
}

/// `PUT /v1/files?path=P[&mode=644&parents=true]`: writes the body to a
/// temporary file next to P and renames it over P once complete.
pub(crate) async fn write(State(st): State<Arc<AppState>>, Query(q): Query<Q>, body: Body) -> Response {
    let r = async {
        let f = files(&st)?;
        let path = q.path()?.to_owned();
        let (mode, parents) = (q.mode()?, q.parents);
        let (f2, p2) = (f.clone(), path.clone());
        let mut upload = blocking(move || f2.create(&p2, mode, parents)).await?;
        let file = upload.file().map_err(error)?;
        let mut out = tokio::fs::File::from_std(file);
        let mut stream = body.into_data_stream();
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
    r.await.unwrap_or_else(|e| e)
}

/// `GET /v1/files/stat?path=P`.
pub(crate) async fn stat(State(st): State<Arc<AppState>>, Query(q): Query<Q>) -> Response {
    let r = async {
        let f = files(&st)?;
        let path = q.path()?.to_owned();
        let s = blocking(move || f.stat(&path)).await?;
        Ok::<_, Response>(axum::Json(stat_to_wire(s)).into_response())
    };
    r.await.unwrap_or_else(|e| e)
}

/// `GET /v1/files/list?path=P`.
pub(crate) async fn list(State(st): State<Arc<AppState>>, Query(q): Query<Q>) -> Response {
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
pub(crate) async fn mkdir(State(st): State<Arc<AppState>>, Query(q): Query<Q>) -> Response {
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
pub(crate) async fn remove(State(st): State<Arc<AppState>>, Query(q): Query<Q>) -> Response {
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
pub(crate) async fn rename(State(st): State<Arc<AppState>>, Query(q): Query<Q>) -> Response {
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
/// written by a blocking task while the response streams.
pub(crate) async fn tar_out(State(st): State<Arc<AppState>>, Query(q): Query<Q>) -> Response {
    let r = async {
        let f = files(&st)?;
        let path = q.path()?.to_owned();
        // Refuse a missing path with a status, before the 200 goes out.
        let (f2, p2) = (f.clone(), path.clone());
        blocking(move || f2.stat(&p2)).await?;
        let (w, r) = tokio::io::duplex(256 * 1024);
        let (failed_tx, failed) = tokio::sync::oneshot::channel::<std::io::Error>();
        tokio::task::spawn_blocking(move || {
            let mut bridge = SyncIoBridge::new(w);
            let r = f.tar_to(&path, &mut bridge).map(drop).map_err(|e| {
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
pub(crate) async fn tar_in(State(st): State<Arc<AppState>>, Query(q): Query<Q>, body: Body) -> Response {
    let r = async {
        let f = files(&st)?;
        let path = q.path()?.to_owned();
        let stream = body.into_data_stream().map(|r| r.map_err(std::io::Error::other));
        let reader = SyncIoBridge::new(StreamReader::new(stream));
        let n = blocking(move || f.untar_from(&path, reader)).await?;
        Ok::<_, Response>(axum::Json(serde_json::json!({ "entries": n })).into_response())
    };
    r.await.unwrap_or_else(|e| e)
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
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut body = serde_json::json!({ "code": e.code(), "message": e.to_string() });
    if let Some(n) = e.errno() {
        body["errno"] = n.into();
    }
    (status, axum::Json(body)).into_response()
}

fn bad(message: &str) -> Response {
    (StatusCode::BAD_REQUEST, axum::Json(serde_json::json!({ "code": "bad_request", "message": message })))
        .into_response()
}

fn internal(message: &str) -> Response {
    let body = serde_json::json!({ "code": "internal", "message": message });
    (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(body)).into_response()
}
