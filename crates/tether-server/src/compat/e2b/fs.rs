//! envd's Filesystem service (`protocol/compat/e2b.md` §9: `Stat`,
//! `ListDir`, `MakeDir`, `Move`, `Remove`) and its plain HTTP file routes
//! (§10: `GET`/`POST /files`), over `tether-files`: the same
//! `--files-root` confinement and atomic writes as the native routes.
//! Relative paths start at the files root; `~` is the daemon user's home.
//! Watching a directory is not served yet.

// The `/files` helpers' error is the finished response itself.
#![allow(clippy::result_large_err)]

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tether_files::{FileError, Files, Kind, Source, Stat, Step, WalkEnd, WalkLimit, WalkLimits};
use tokio_util::io::ReaderStream;

use super::api::error as http_error;
use super::connect::{Code, RpcError, unary_ok};
use super::process::expand_home;
use crate::AppState;
use crate::compat::atomic::AtomicWrite;
use crate::compat::fileinfo::{Names, go_mode};
use crate::compat::rfc3339;

/// Most entries one `ListDir` answers (more is `invalid_argument`, never a
/// silently short list).
const MAX_LISTED: u64 = 100_000;

/// Deepest `ListDir`.
const MAX_DEPTH: usize = 64;

type Rpc<T> = Result<T, RpcError>;

/// `filesystem.Filesystem/Stat`: the entry itself (a final symlink not
/// followed).
pub(super) async fn stat(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    let r = async {
        let (files, path) = (root(&st)?, path_of(&body, "path")?);
        let entry = blocking(move || entry(&files, &path)).await?;
        Ok::<_, RpcError>(unary_ok(json!({ "entry": entry })))
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

/// `filesystem.Filesystem/ListDir`: pre-order to `depth` (0 is 1).
pub(super) async fn list_dir(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    let r = async {
        let req = request(&body)?;
        let path = expand_home(req.get("path").and_then(Value::as_str).unwrap_or(""));
        let depth =
            req.get("depth").and_then(|d| d.as_u64().or_else(|| d.as_str()?.parse().ok())).unwrap_or(0);
        let depth = usize::try_from(depth).unwrap_or(MAX_DEPTH).clamp(1, MAX_DEPTH);
        let files = root(&st)?;
        let entries = blocking(move || {
            let top = files.stat(&path).map_err(from_file)?;
            if top.kind != Kind::Dir && !(top.kind == Kind::Symlink && files.absolute(&path).is_dir()) {
                return Err(RpcError::new(Code::InvalidArgument, format!("{path} is not a directory")));
            }
            let base = files.absolute(&path);
            let names = Names::load();
            let mut out = Vec::new();
            let limits = WalkLimits { max_entries: MAX_LISTED, max_depth: depth, deadline: None };
            let end = files
                .walk(&path, limits, |e| {
                    if let Ok(v) = entry_json(&e.stat, &base.join(e.rel), &names) {
                        out.push(v);
                    }
                    Step::Continue
                })
                .map_err(from_file)?;
            if matches!(end, WalkEnd::Truncated(WalkLimit::Entries)) {
                return Err(RpcError::new(
                    Code::InvalidArgument,
                    format!("more than {MAX_LISTED} entries below {path}: list a smaller depth"),
                ));
            }
            Ok(out)
        })
        .await?;
        Ok::<_, RpcError>(unary_ok(json!({ "entries": entries })))
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

/// `filesystem.Filesystem/MakeDir`: with its parents; `already_exists`
/// when a directory is there.
pub(super) async fn make_dir(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    let r = async {
        let (files, path) = (root(&st)?, path_of(&body, "path")?);
        let entry = blocking(move || {
            match files.stat(&path) {
                Ok(s) if s.kind == Kind::Dir => {
                    return Err(RpcError::new(
                        Code::AlreadyExists,
                        format!("directory {path} already exists"),
                    ));
                }
                Ok(_) => {
                    return Err(RpcError::new(
                        Code::InvalidArgument,
                        format!("{path} exists and is not a directory"),
                    ));
                }
                Err(_) => {}
            }
            files.mkdir(&path, true, 0o755).map_err(from_file)?;
            entry(&files, &path)
        })
        .await?;
        Ok::<_, RpcError>(unary_ok(json!({ "entry": entry })))
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

/// `filesystem.Filesystem/Move`: the destination's parents made, an
/// existing file replaced.
pub(super) async fn move_entry(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    let r = async {
        let files = root(&st)?;
        let (from, to) = (path_of(&body, "source")?, path_of(&body, "destination")?);
        let entry = blocking(move || {
            if let Some(parent) = Path::new(&to).parent().filter(|p| !p.as_os_str().is_empty()) {
                let parent = parent.to_string_lossy().into_owned();
                if files.stat(&parent).is_err() {
                    files.mkdir(&parent, true, 0o755).map_err(from_file)?;
                }
            }
            files.rename(&from, &to, true).map_err(from_file)?;
            entry(&files, &to)
        })
        .await?;
        Ok::<_, RpcError>(unary_ok(json!({ "entry": entry })))
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

/// `filesystem.Filesystem/Remove`: recursive; a missing path is fine.
pub(super) async fn remove(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    let r = async {
        let (files, path) = (root(&st)?, path_of(&body, "path")?);
        blocking(move || match files.remove(&path, true) {
            Ok(()) | Err(FileError::NotFound { .. }) => Ok(()),
            Err(e) => Err(from_file(e)),
        })
        .await?;
        Ok::<_, RpcError>(unary_ok(json!({})))
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /files?path=P`: the bytes, with their length.
pub(super) async fn read(State(st): State<Arc<AppState>>, uri: axum::http::Uri) -> Response {
    let r = async {
        let q: std::collections::BTreeMap<String, String> = axum::extract::Query::try_from_uri(&uri)
            .map(|q| q.0)
            .map_err(|e| http_error(400, &e.body_text()))?;
        let path = expand_home(q.get("path").map_or("", String::as_str));
        if path.is_empty() {
            return Err(http_error(400, "missing query parameter `path`"));
        }
        let files = st.files.clone().ok_or_else(|| http_error(500, "the daemon has no usable files root"))?;
        let p2 = path.clone();
        let opened = tokio::task::spawn_blocking(move || files.open_read(&p2, false))
            .await
            .map_err(|e| http_error(500, &e.to_string()))?
            .map_err(file_status)?;
        if opened.stat.kind == Kind::Dir {
            return Err(http_error(400, &format!("{path} is a directory")));
        }
        if opened.source != Source::Regular {
            return Err(http_error(
                400,
                &format!("{path} is not a regular file (tether's E2B reads only those)"),
            ));
        }
        let (file, len) = (opened.file, opened.stat.size);
        let body =
            Body::from_stream(ReaderStream::with_capacity(tokio::fs::File::from_std(file), 256 * 1024));
        Ok((
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
                (header::CONTENT_LENGTH, len.to_string()),
            ],
            body,
        )
            .into_response())
    };
    r.await.unwrap_or_else(|e| e)
}

/// `POST /files[?path=P]`: multipart parts named `file` (the destination
/// is `path`, else the part's file name as a path), or one octet-stream
/// body to `path`; each written atomically, parents made. 200 with one
/// `{name, type, path}` per file.
pub(super) async fn write(State(st): State<Arc<AppState>>, req: Request) -> Response {
    let r = async {
        let query: std::collections::BTreeMap<String, String> = axum::extract::Query::try_from_uri(req.uri())
            .map(|q| q.0)
            .map_err(|e| http_error(400, &e.body_text()))?;
        let headers = req.headers().clone();
        refuse_unsupported(&headers)?;
        let files = st.files.clone().ok_or_else(|| http_error(500, "the daemon has no usable files root"))?;
        let fixed = query.get("path").map(|p| expand_home(p)).filter(|p| !p.is_empty());
        let is_multipart = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("multipart/form-data"));
        // A refusal reads and drops what is left of the body before it goes
        // out: a connection closed with unread data is reset, and a client
        // still sending (the E2B SDK's httpx) then gets a broken pipe
        // instead of the answer.
        let mut written = if is_multipart {
            let mut form =
                Multipart::from_request(req, &st).await.map_err(|e| http_error(400, &e.body_text()))?;
            match write_parts(&files, fixed.as_deref(), &mut form).await {
                Ok(w) => w,
                Err(e) => {
                    crate::files::drain_form(&mut form).await;
                    return Err(e);
                }
            }
        } else {
            let mut body = req.into_body().into_data_stream();
            match write_body(&files, fixed.as_deref(), &mut body).await {
                Ok(w) => vec![w],
                Err(e) => {
                    crate::files::drain(&mut body).await;
                    return Err(e);
                }
            }
        };
        if written.is_empty() {
            return Err(http_error(400, "no file part named `file` in the request"));
        }
        for w in &mut written {
            if let Some(o) = w.as_object_mut() {
                o.remove("request");
            }
        }
        Ok(axum::Json(written).into_response())
    };
    r.await.unwrap_or_else(|e| e)
}

/// Writes each part named `file` of `form` to `fixed`, or else to its file
/// name; returns what was written.
async fn write_parts(
    files: &Arc<Files>,
    fixed: Option<&str>,
    form: &mut Multipart,
) -> Result<Vec<Value>, Response> {
    let mut written = Vec::new();
    while let Some(mut field) = form.next_field().await.map_err(|e| http_error(400, &e.body_text()))? {
        if field.name() != Some("file") {
            continue;
        }
        let dest = match (fixed, field.file_name()) {
            (Some(p), _) => p.to_owned(),
            (None, Some(name)) if !name.is_empty() => expand_home(name),
            _ => {
                return Err(http_error(400, "a file part names no destination (no path, no file name)"));
            }
        };
        if written.iter().any(|w: &Value| w["request"] == dest.as_str()) {
            return Err(http_error(400, &format!("{dest} is written twice in one request")));
        }
        let mut out = open_sink(files, &dest).await?;
        while let Some(chunk) = field.chunk().await.map_err(|e| http_error(400, &e.body_text()))? {
            out.write(&chunk).await.map_err(error_status)?;
        }
        written.push(commit(out, files, &dest).await?);
    }
    Ok(written)
}

/// Writes a raw body to `fixed`; returns what was written.
async fn write_body<S>(files: &Arc<Files>, fixed: Option<&str>, body: &mut S) -> Result<Value, Response>
where
    S: futures_util::Stream<Item = Result<Bytes, axum::Error>> + Unpin,
{
    let dest = fixed.ok_or_else(|| http_error(400, "an octet-stream upload needs `path`"))?;
    let mut out = open_sink(files, dest).await?;
    while let Some(chunk) = futures_util::StreamExt::next(body).await {
        out.write(&chunk.map_err(|e| http_error(400, &e.to_string()))?).await.map_err(error_status)?;
    }
    commit(out, files, dest).await
}

/// Compressed bodies and file metadata are not supported.
fn refuse_unsupported(headers: &HeaderMap) -> Result<(), Response> {
    if headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| !v.eq_ignore_ascii_case("identity"))
    {
        return Err(http_error(400, "compressed uploads are not supported by tether"));
    }
    if headers.keys().any(|k| k.as_str().starts_with("x-metadata-")) {
        return Err(http_error(400, "file metadata is not supported by tether"));
    }
    Ok(())
}

/// Starts an atomic write of `dest`.
async fn open_sink(files: &Arc<Files>, dest: &str) -> Result<AtomicWrite, Response> {
    AtomicWrite::open(files, dest).await.map_err(error_status)
}

/// Puts `out` in place; its `WriteInfo` (plus the requested path, for the
/// duplicate check).
async fn commit(out: AtomicWrite, files: &Files, dest: &str) -> Result<Value, Response> {
    out.commit().await.map_err(error_status)?;
    let abs = files.absolute(dest);
    let name = abs.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    Ok(json!({ "name": name, "type": "file", "path": abs.to_string_lossy(), "request": dest }))
}

/// A file-route error as this dialect's HTTP error.
fn error_status(e: crate::Error) -> Response {
    http_error(e.status().as_u16(), &e.message)
}

/// A path's `EntryInfo`.
fn entry(files: &Files, path: &str) -> Rpc<Value> {
    let stat = files.stat(path).map_err(from_file)?;
    entry_json(&stat, &files.absolute(path), &Names::load())
        .map_err(|e| RpcError::new(Code::Internal, e.to_string()))
}

/// `EntryInfo` from the file layer's `lstat` (owner included: no second
/// lookup by path, which could follow a component swapped meanwhile for a
/// symlink out of the root).
fn entry_json(stat: &Stat, abs: &Path, names: &Names) -> std::io::Result<Value> {
    let name = if stat.name.is_empty() {
        abs.file_name().map_or_else(|| "/".to_owned(), |n| n.to_string_lossy().into_owned())
    } else {
        stat.name.clone()
    };
    let symlink = stat.kind == Kind::Symlink;
    let kind = match stat.kind {
        Kind::File => "FILE_TYPE_FILE",
        Kind::Dir => "FILE_TYPE_DIRECTORY",
        Kind::Symlink => "FILE_TYPE_SYMLINK",
        _ => "FILE_TYPE_UNSPECIFIED",
    };
    // A symlink's mode is its target's, when there is one (envd's).
    let mode = if symlink {
        std::fs::metadata(abs).map_or(stat.mode, |m| m.mode()) & 0o777
    } else {
        stat.mode & 0o777
    };
    let nanos = stat.mtime_nsec;
    let stamp = rfc3339(stat.mtime_ms);
    let modified = format!("{}.{nanos:09}Z", stamp.trim_end_matches('Z'));
    let mut v = json!({
        "name": name,
        "type": kind,
        "path": abs.to_string_lossy(),
        "size": stat.size.to_string(),
        "mode": mode,
        "permissions": go_mode(stat.kind, stat.mode),
        "owner": names.users.name(stat.uid),
        "group": names.groups.name(stat.gid),
        "modifiedTime": modified,
        "isSymlink": symlink,
    });
    if symlink && let (Ok(target), Some(o)) = (std::fs::canonicalize(abs), v.as_object_mut()) {
        o.insert("symlinkTarget".into(), target.to_string_lossy().into_owned().into());
    }
    Ok(v)
}

fn root(st: &AppState) -> Rpc<Arc<Files>> {
    st.files.clone().ok_or_else(|| RpcError::new(Code::Internal, "the daemon has no usable files root"))
}

fn request(body: &[u8]) -> Rpc<Value> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(body)
        .map_err(|e| RpcError::new(Code::InvalidArgument, format!("the request is not JSON: {e}")))
}

/// A path field of the request, `~` expanded; empty is refused.
fn path_of(body: &[u8], field: &str) -> Rpc<String> {
    let req = request(body)?;
    let p = expand_home(req.get(field).and_then(Value::as_str).unwrap_or(""));
    if p.is_empty() {
        return Err(RpcError::new(Code::InvalidArgument, format!("{field} is empty")));
    }
    Ok(p)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Rpc<T> + Send + 'static) -> Rpc<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| RpcError::new(Code::Internal, e.to_string()))?
}

/// A file error as a Connect code.
fn from_file(e: FileError) -> RpcError {
    let code = match &e {
        FileError::NotFound { .. } => Code::NotFound,
        FileError::Outside { .. } | FileError::PermissionDenied { .. } | FileError::Special { .. } => {
            Code::PermissionDenied
        }
        FileError::Exists { .. } => Code::AlreadyExists,
        FileError::NoSpace { .. } | FileError::Io { .. } => Code::Internal,
        _ => Code::InvalidArgument,
    };
    RpcError::new(code, e.to_string())
}

/// A file error on `/files`: the native status in envd's body shape.
fn file_status(e: FileError) -> Response {
    http_error(e.status(), &e.to_string())
}
