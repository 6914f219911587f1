//! The LangSmith sandbox client's file routes under `/compat/langsmith`
//! (`protocol/compat/langsmith.md` §8): `POST /upload` (one multipart part
//! `file`, parents created, written atomically) and `GET`/`HEAD /download`
//! (whole file, or one range, with `ETag`/`Last-Modified` validators,
//! `If-Range`, `If-None-Match`, 416). Errors have the client's shape,
//! `{"detail": {"error", "message"}}`, and never a status it would retry
//! (429, 502, 503, 504) for a permanent failure.

// The helpers' error is the finished response itself.
#![allow(clippy::result_large_err)]

use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Multipart, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use tether_files::{FileError, MAX_PSEUDO_BYTES, Source, read_pseudo};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};
use tokio_util::io::ReaderStream;

use super::{detail, file_error};
use crate::AppState;

#[derive(Debug, Deserialize)]
pub(crate) struct PathQ {
    path: Option<String>,
}

/// `POST /upload?path=P`: the part named `file` becomes P.
pub(crate) async fn upload(
    State(st): State<Arc<AppState>>,
    Query(q): Query<PathQ>,
    mut form: Multipart,
) -> Response {
    let r = async {
        let files = st.files.clone().ok_or_else(|| detail(500, "WriteError", "no usable files root"))?;
        let path = q.path.ok_or_else(|| detail(400, "WriteError", "missing query parameter `path`"))?;
        let (f2, p2) = (files.clone(), path.clone());
        let mut up = tokio::task::spawn_blocking(move || f2.create(&p2, None, true))
            .await
            .map_err(|e| detail(500, "WriteError", &e.to_string()))?
            .map_err(|e| file_error(e, "WriteError"))?;
        let mut out = tokio::fs::File::from_std(up.file().map_err(|e| file_error(e, "WriteError"))?);
        let mut found = false;
        while let Some(mut field) =
            form.next_field().await.map_err(|e| detail(400, "WriteError", &e.to_string()))?
        {
            if field.name() != Some("file") {
                continue;
            }
            found = true;
            while let Some(chunk) =
                field.chunk().await.map_err(|e| detail(400, "WriteError", &e.to_string()))?
            {
                out.write_all(&chunk)
                    .await
                    .map_err(|e| file_error(FileError::from_io(e, &path), "WriteError"))?;
            }
            break;
        }
        if !found {
            return Err(detail(400, "WriteError", "no multipart part named `file`"));
        }
        out.flush().await.map_err(|e| file_error(FileError::from_io(e, &path), "WriteError"))?;
        drop(out);
        let p2 = path.clone();
        let stat = tokio::task::spawn_blocking(move || {
            up.commit()?;
            files.stat(&p2)
        })
        .await
        .map_err(|e| detail(500, "WriteError", &e.to_string()))?
        .map_err(|e| file_error(e, "WriteError"))?;
        Ok::<_, Response>(axum::Json(crate::files::stat_to_wire(stat)).into_response())
    };
    r.await.unwrap_or_else(|e| e)
}

/// `GET /download?path=P` (and `HEAD`, which axum answers from it).
pub(crate) async fn download(
    State(st): State<Arc<AppState>>,
    Query(q): Query<PathQ>,
    headers: HeaderMap,
) -> Response {
    let r = async {
        let files = st.files.clone().ok_or_else(|| detail(500, "ReadError", "no usable files root"))?;
        let path = q.path.ok_or_else(|| detail(400, "ReadError", "missing query parameter `path`"))?;
        let p2 = path.clone();
        // A file of `/proc` or `/sys` is read whole first (bounded): its
        // stat size (0, 4096) is not its length.
        let (file, meta, pseudo) = tokio::task::spawn_blocking(move || {
            let opened = files.open_read(&p2, false)?;
            let meta = opened.file.metadata().map_err(|e| FileError::from_io(e, &p2))?;
            if opened.source == Source::Pseudo {
                let data = read_pseudo(&opened.file, MAX_PSEUDO_BYTES, false, &p2)?;
                return Ok((opened.file, meta, Some(Bytes::from(data))));
            }
            Ok((opened.file, meta, None))
        })
        .await
        .map_err(|e| detail(500, "ReadError", &e.to_string()))?
        .map_err(|e| file_error(e, "ReadError"))?;
        let size = pseudo.as_ref().map_or(meta.len(), |d| d.len() as u64);
        // A strong validator: the same inode, size and modification time.
        let etag = format!("\"{:x}-{:x}-{:x}.{:x}\"", meta.ino(), size, meta.mtime(), meta.mtime_nsec());
        let modified = UNIX_EPOCH + Duration::new(meta.mtime().max(0) as u64, meta.mtime_nsec() as u32);
        let last_modified = httpdate::fmt_http_date(modified);
        let validators = [(header::ETAG, etag.clone()), (header::LAST_MODIFIED, last_modified)];
        let hv = |h: header::HeaderName| headers.get(h).and_then(|v| v.to_str().ok()).map(str::trim);
        if hv(header::IF_NONE_MATCH)
            .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
        {
            return Ok((StatusCode::NOT_MODIFIED, validators).into_response());
        }
        // A stale `If-Range` means: the whole file.
        let range = hv(header::RANGE).filter(|_| hv(header::IF_RANGE).is_none_or(|v| v == etag));
        let mut file = tokio::fs::File::from_std(file);
        let (status, start, len) = match range.map(|r| parse_range(r, size)) {
            None | Some(Range::Whole) => (StatusCode::OK, 0, size),
            Some(Range::Part(a, b)) => (StatusCode::PARTIAL_CONTENT, a, b - a + 1),
            Some(Range::Unsatisfiable) => {
                let mut r = (StatusCode::RANGE_NOT_SATISFIABLE, validators).into_response();
                r.headers_mut()
                    .insert(header::CONTENT_RANGE, format!("bytes */{size}").parse().expect("valid"));
                let msg = format!("range starts past the end of the file ({size} bytes)");
                *r.body_mut() = Body::from(
                    serde_json::json!({"detail": {"error": "ReadError", "message": msg}}).to_string(),
                );
                return Ok(r);
            }
        };
        if start > 0 && pseudo.is_none() {
            file.seek(std::io::SeekFrom::Start(start))
                .await
                .map_err(|e| file_error(FileError::from_io(e, &path), "ReadError"))?;
        }
        let body = match pseudo {
            Some(data) => Body::from(data.slice(start as usize..(start + len) as usize)),
            None => Body::from_stream(ReaderStream::with_capacity(
                tokio::io::AsyncReadExt::take(file, len),
                256 * 1024,
            )),
        };
        let mut r = (status, validators, body).into_response();
        let h = r.headers_mut();
        h.insert(header::CONTENT_LENGTH, len.into());
        h.insert(header::CONTENT_TYPE, "application/octet-stream".parse().expect("valid"));
        h.insert(header::ACCEPT_RANGES, "bytes".parse().expect("valid"));
        if status == StatusCode::PARTIAL_CONTENT {
            let cr = format!("bytes {start}-{}/{size}", start + len - 1);
            h.insert(header::CONTENT_RANGE, cr.parse().expect("valid"));
        }
        Ok::<_, Response>(r)
    };
    r.await.unwrap_or_else(|e| e)
}

#[derive(Debug, PartialEq, Eq)]
enum Range {
    /// Not a single byte range we serve: answer the whole file.
    Whole,
    /// Inclusive, clamped to the file.
    Part(u64, u64),
    Unsatisfiable,
}

/// `bytes=A-B`, `bytes=A-` or `bytes=-N`; anything else (several ranges,
/// other units) is answered with the whole file, which HTTP allows.
fn parse_range(v: &str, size: u64) -> Range {
    let Some(spec) = v.strip_prefix("bytes=") else { return Range::Whole };
    if spec.contains(',') {
        return Range::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else { return Range::Whole };
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(s), Ok(e)) if e >= s => (s, e.min(size.saturating_sub(1))),
        (Ok(s), Err(_)) if b.is_empty() => (s, size.saturating_sub(1)),
        (Err(_), Ok(n)) if a.is_empty() && n > 0 => (size.saturating_sub(n), size.saturating_sub(1)),
        (Err(_), Ok(_)) if a.is_empty() => return Range::Unsatisfiable,
        _ => return Range::Whole,
    };
    if start >= size { Range::Unsatisfiable } else { Range::Part(start, end) }
}

#[cfg(test)]
mod tests {
    use super::{Range, parse_range};

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Range::Part(0, 9));
        assert_eq!(parse_range("bytes=90-200", 100), Range::Part(90, 99));
        assert_eq!(parse_range("bytes=95-", 100), Range::Part(95, 99));
        assert_eq!(parse_range("bytes=-10", 100), Range::Part(90, 99));
        assert_eq!(parse_range("bytes=-500", 100), Range::Part(0, 99));
        assert_eq!(parse_range("bytes=100-", 100), Range::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Range::Whole);
        assert_eq!(parse_range("items=0-1", 100), Range::Whole);
    }
}
