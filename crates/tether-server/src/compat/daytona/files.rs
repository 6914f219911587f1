//! The toolbox's file routes (`protocol/compat/daytona.md` §11, §12): bulk
//! multipart upload and download, list, info, folder, delete, move, find
//! (content), search (names), replace, permissions, and the home and work
//! dir. The work is `tether-files`' (the `--files-root` confinement, atomic
//! uploads, bounded walks) and the LangSmith dialect's search engine
//! (`compat::langsmith::search`: bounded sorted walks, the glob matcher,
//! the line scanner); here only the dialect: query strings, multipart
//! framing, the SDK's models and error shapes.
//!
//! Choices where the SDK leaves the server free (§15):
//! - `list`: `depth` ≥ 1 (above [`MAX_LIST_DEPTH`] it is that), every
//!   entry with its absolute `path`; more than [`MAX_LISTED`] entries or
//!   [`LIST_DEADLINE`] is a 400, never a silently short list. Owner and
//!   group names come from `/etc/passwd` and `/etc/group` (else numbers).
//! - `folder` on an existing directory: 201, nothing changed (`mkdir -p`);
//!   on an existing file: 409 `CONFLICT`. A new directory gets exactly
//!   `mode` (the umask does not apply to it); missing parents get 0755
//!   less the umask (`mkdir -p -m`).
//! - `delete` of a directory that is not empty, without `recursive`: 409.
//! - `move` onto an existing file or empty directory replaces it, like
//!   `mv`; onto a non-empty directory: 409. The destination's parent must
//!   exist. No copy across file systems (400).
//! - `find`: a literal pattern, recursive below a directory (or in one
//!   file), binary files (a NUL in the first 8 KiB) and symlinks skipped,
//!   lines cut at 4 KiB; `search`: files and directories whose names match
//!   the glob at any depth (it is matched as `**/G`). Both answer at most
//!   [`MAX_MATCHES`] / [`MAX_NAMES`] entries within 10 s, in path order,
//!   and say `x-tether-truncated: true` when cut.
//! - `replace`: a literal pattern; a file is rewritten atomically (a new
//!   inode: hard links part, owner kept when the daemon may), and only
//!   when the pattern occurs; a symlink is refused (name its target).
//! - `bulk-upload`: a file part that comes before its path part is spooled
//!   to an unnamed temporary file (in the files root, else the temp dir)
//!   and copied in place when the path arrives ([`MAX_SPOOLED`] at once).
//!   The answer to a partial failure has the first failure's status. An
//!   empty body (`upload_files([])`) is 200.
//! - `bulk-download`: no paths is a 400.

use std::collections::BTreeMap;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::multipart::{Field, MultipartError};
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Request, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::stream::{self, BoxStream, StreamExt};
use serde::{Deserialize, Serialize};
use tether_files::{
    FileError, Files, Kind, MAX_PSEUDO_BYTES, Source, Stat, Step, WalkEnd, WalkLimit, WalkLimits, read_pseudo,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Refusal, json, query};
use crate::AppState;
use crate::compat::fileinfo::{Names, go_mode};
use crate::compat::langsmith::glob::Pattern;
use crate::compat::langsmith::search::{
    self, Bounds, Found, GrepMatch, LineScan, Scan, find_glob, find_grep,
};
use crate::compat::rfc3339;

/// The file routes, relative to the toolbox root.
pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/files", get(list).delete(remove))
        .route("/files/info", get(info))
        .route("/files/folder", post(folder))
        .route("/files/move", post(rename))
        .route("/files/find", get(find))
        .route("/files/search", get(search))
        .route("/files/replace", post(replace))
        .route("/files/permissions", post(permissions))
        // Uploads stream to disk: no body limit.
        .route("/files/bulk-upload", post(bulk_upload).layer(DefaultBodyLimit::disable()))
        .route("/files/bulk-download", post(bulk_download))
}

/// `GET /user-home-dir`: the daemon user's `$HOME`.
pub(super) async fn home_dir() -> Response {
    let dir = std::env::var("HOME").unwrap_or_else(|_| "/".to_owned());
    axum::Json(serde_json::json!({ "dir": dir })).into_response()
}

/// `GET /work-dir`: the files root (where relative paths start).
pub(super) async fn work_dir(State(st): State<Arc<AppState>>) -> Response {
    let dir = st.files.as_ref().map_or_else(|| "/".to_owned(), |f| f.root().to_string_lossy().into_owned());
    axum::Json(serde_json::json!({ "dir": dir })).into_response()
}

/// Most matches `find` answers.
const MAX_MATCHES: usize = search::MAX_LIMIT;
/// Most paths `search` answers.
const MAX_NAMES: usize = 100_000;
/// Most directory entries a `list` reads (over all its levels).
const MAX_LISTED: u64 = 100_000;
/// Deepest `depth` a `list` honours (a larger one is this one).
const MAX_LIST_DEPTH: usize = 64;
/// How long a `list` may walk.
const LIST_DEADLINE: Duration = Duration::from_secs(30);
/// Most paths one bulk download or replace names, and most files one bulk
/// upload carries.
const MAX_PATHS: usize = 10_000;
/// Largest JSON body (replace, bulk download).
const MAX_JSON: usize = 2 << 20;
/// Longest `files[i].path` part of an upload, in bytes.
const MAX_PATH_PART: usize = 4096;
/// Failures one bulk-upload answer lists (the rest are counted).
const MAX_ERRORS: usize = 100;
/// Upload file parts that came before their path parts, held at once.
const MAX_SPOOLED: usize = 16;
/// Bytes read from a file at a time for a download or a replace.
const CHUNK: usize = 256 * 1024;
/// The response header saying a capped answer was cut.
const TRUNCATED: &str = "x-tether-truncated";
/// The bulk download's route, for the error parts' envelope.
const DOWNLOAD_ROUTE: &str = "/files/bulk-download";
/// The bulk upload's route, for its error envelope.
const UPLOAD_ROUTE: &str = "/files/bulk-upload";

/// The query parameters of the file routes (each route reads its own).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Q {
    /// The path the route works on.
    path: Option<String>,
    /// `list`: levels to list (1: the directory's entries).
    depth: Option<i64>,
    /// `folder`, `permissions`: octal permission bits (`755`).
    mode: Option<String>,
    /// `delete`: a directory and everything in it.
    recursive: bool,
    /// `move`: from.
    source: Option<String>,
    /// `move`: to.
    destination: Option<String>,
    /// `find`: the literal text; `search`: the name glob.
    pattern: Option<String>,
    /// `permissions`: a user name or uid.
    owner: Option<String>,
    /// `permissions`: a group name or gid.
    group: Option<String>,
}

/// The SDK's `FileInfo` (every field is required by its strict model but
/// `path` and `modifiedAt`, which are always sent too).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct FileInfo {
    /// The last name.
    name: String,
    /// A directory (a symlink to one is not).
    is_dir: bool,
    /// Bytes (`lstat`).
    size: u64,
    /// Go's `FileMode.String()`: `-rw-r--r--`, `drwxr-xr-x`.
    mode: String,
    /// Go's `time.String()`, in UTC.
    mod_time: String,
    /// Octal permission bits, `0644`.
    permissions: String,
    /// The owner's name, else its uid.
    owner: String,
    /// The group's name, else its gid.
    group: String,
    /// Absolute.
    path: String,
    /// RFC 3339, UTC.
    modified_at: String,
}

/// The SDK's `Match`.
#[derive(Debug, Serialize)]
struct Match {
    /// The file's absolute path.
    file: String,
    /// 1-based.
    line: u64,
    /// The line without its newline (lossy UTF-8, at most 4 KiB).
    content: String,
}

/// The SDK's `ReplaceRequest`.
#[derive(Debug, Deserialize)]
struct ReplaceRequest {
    /// The files to rewrite.
    files: Vec<String>,
    /// The literal text to replace.
    pattern: String,
    /// What replaces it.
    #[serde(rename = "newValue")]
    new_value: String,
}

/// The SDK's `ReplaceResult`.
#[derive(Debug, Serialize)]
struct ReplaceResult {
    /// As requested.
    file: String,
    /// Whether the file is as asked (rewritten, or had no match).
    success: bool,
    /// Why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// The SDK's `FilesDownloadRequest`.
#[derive(Debug, Deserialize)]
struct DownloadRequest {
    /// One part each, in this order.
    paths: Vec<String>,
}

/// The SDK's `FsFileResult`: one uploaded file.
#[derive(Debug, Serialize)]
struct Written {
    /// As requested.
    path: String,
    /// Its size.
    bytes: u64,
}

/// `GET /files?path=P[&depth=N]`: P's entries (sorted by name), and with
/// `depth` > 1 theirs, each directory's right after it.
async fn list(State(st): State<Arc<AppState>>, uri: Uri) -> Response {
    let r = async {
        let q: Q = query(&uri)?;
        let path = required(&q.path, "path")?.to_owned();
        let depth = match q.depth {
            None => 1,
            Some(d) if d >= 1 => usize::try_from(d).unwrap_or(MAX_LIST_DEPTH).min(MAX_LIST_DEPTH),
            Some(d) => return Err(Refusal::bad_request(format!("depth must be at least 1, not {d}"))),
        };
        let files = root(&st)?;
        let deadline = Instant::now() + LIST_DEADLINE;
        let infos = blocking(move || list_tree(&files, &path, depth, deadline)).await?;
        Ok(axum::Json(infos).into_response())
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /files/info?path=P`: what P is (a final symlink is not followed).
async fn info(State(st): State<Arc<AppState>>, uri: Uri) -> Response {
    let r = async {
        let q: Q = query(&uri)?;
        let path = required(&q.path, "path")?.to_owned();
        let files = root(&st)?;
        let info = blocking(move || {
            let stat = files.stat(&path)?;
            let abs = files.absolute(&path);
            file_info(&stat, &abs, &Names::load()).map_err(|e| FileError::from_io(e, &path).into())
        })
        .await?;
        Ok::<_, Refusal>(axum::Json(info).into_response())
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

/// `POST /files/folder?path=P&mode=M`: `mkdir -p`, 201; see the module
/// notes for an existing P.
async fn folder(State(st): State<Arc<AppState>>, uri: Uri) -> Response {
    let r = async {
        let q: Q = query(&uri)?;
        let path = required(&q.path, "path")?.to_owned();
        let mode = parse_mode(q.mode.as_deref())?.unwrap_or(0o755);
        let files = root(&st)?;
        blocking(move || {
            let existed = match files.stat(&path) {
                Ok(_) => true,
                Err(FileError::NotFound { .. }) => false,
                Err(e) => return Err(e.into()),
            };
            if existed {
                // `mkdir -p` of what is there: fine for a directory (or a
                // symlink to one).
                return match files.mkdir(&path, true, mode) {
                    Err(FileError::NotADirectory { .. }) => Err(Refusal::new(
                        409,
                        Some("CONFLICT"),
                        format!("{path} exists and is not a directory"),
                    )),
                    r => r.map_err(Refusal::from),
                };
            }
            // `mkdir -p -m`: the parents get the usual 0755 (less the
            // umask), P itself exactly `mode`.
            if let Some(parent) = Path::new(&path).parent().filter(|p| !p.as_os_str().is_empty()) {
                files.mkdir(&parent.to_string_lossy(), true, 0o755)?;
            }
            match files.mkdir(&path, false, mode) {
                // Made meanwhile: as if it had been there.
                Err(FileError::Exists { .. }) => return Ok(()),
                r => r?,
            }
            files.set_mode(&path, mode)?;
            Ok(())
        })
        .await?;
        Ok::<_, Refusal>(StatusCode::CREATED.into_response())
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

/// `DELETE /files?path=P&recursive=B`: 204; a directory that is not empty
/// needs `recursive=true` (else 409).
async fn remove(State(st): State<Arc<AppState>>, uri: Uri) -> Response {
    let r = async {
        let q: Q = query(&uri)?;
        let path = required(&q.path, "path")?.to_owned();
        let recursive = q.recursive;
        let files = root(&st)?;
        blocking(move || {
            files.remove(&path, recursive).map_err(|e| match e {
                FileError::Exists { .. } => Refusal::new(
                    409,
                    Some("CONFLICT"),
                    format!("{path} is a directory that is not empty: delete it with recursive=true"),
                ),
                e => e.into(),
            })
        })
        .await?;
        Ok::<_, Refusal>(StatusCode::NO_CONTENT.into_response())
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

/// `POST /files/move?source=A&destination=B`: `rename(2)`, replacing B
/// like `mv`; 200.
async fn rename(State(st): State<Arc<AppState>>, uri: Uri) -> Response {
    let r = async {
        let q: Q = query(&uri)?;
        let source = required(&q.source, "source")?.to_owned();
        let destination = required(&q.destination, "destination")?.to_owned();
        let files = root(&st)?;
        blocking(move || {
            files.rename(&source, &destination, true).map_err(|e| match e {
                // Either end may be missing: say which.
                FileError::NotFound { .. }
                    if matches!(files.stat(&source), Err(FileError::NotFound { .. })) =>
                {
                    Refusal::new(404, Some("FILE_NOT_FOUND"), format!("{source}: no such file or directory"))
                }
                FileError::NotFound { .. } => Refusal::new(
                    404,
                    Some("FILE_NOT_FOUND"),
                    format!("the directory of {destination} does not exist"),
                ),
                FileError::Exists { .. } => Refusal::new(
                    409,
                    Some("CONFLICT"),
                    format!("{destination} is a directory that is not empty"),
                ),
                // Unconfined, nothing is outside the root: EXDEV is a
                // move across file systems.
                FileError::Outside { .. } if !files.is_confined() => Refusal::bad_request(format!(
                    "{source} and {destination} are on different file systems: move does not copy"
                )),
                e => e.into(),
            })
        })
        .await?;
        Ok::<_, Refusal>(StatusCode::OK.into_response())
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /files/find?path=P&pattern=X`: the lines holding the literal X in
/// the files below directory P (or in file P).
async fn find(State(st): State<Arc<AppState>>, uri: Uri) -> Response {
    let r = async {
        let q: Q = query(&uri)?;
        let path = required(&q.path, "path")?.to_owned();
        let pattern = required(&q.pattern, "pattern")?.to_owned();
        if pattern.is_empty() {
            return Err(Refusal::bad_request("pattern must not be empty"));
        }
        let files = root(&st)?;
        let bounds = Bounds::capped(MAX_MATCHES, Instant::now());
        let found =
            search_turn(bounds, move || match find_grep(&files, &path, pattern.as_bytes(), None, bounds) {
                Err(FileError::NotADirectory { .. }) => grep_file(&files, &path, pattern.as_bytes(), bounds),
                r => r,
            })
            .await?;
        let matches: Vec<Match> = found
            .matches
            .into_iter()
            .map(|m| Match { file: m.path, line: m.line, content: m.text })
            .collect();
        Ok(capped(axum::Json(matches).into_response(), found.truncated))
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /files/search?path=P&pattern=G`: the paths below directory P
/// (files and directories) whose last names match glob G.
async fn search(State(st): State<Arc<AppState>>, uri: Uri) -> Response {
    let r = async {
        let q: Q = query(&uri)?;
        let path = required(&q.path, "path")?.to_owned();
        let pattern = required(&q.pattern, "pattern")?;
        if Pattern::parse(pattern).is_none() {
            return Err(Refusal::bad_request("pattern must not be empty"));
        }
        // `**/` makes a name glob match at any depth.
        let glob = Pattern::parse(&format!("**/{pattern}"))
            .ok_or_else(|| Refusal::bad_request("pattern must not be empty"))?;
        let files = root(&st)?;
        let bounds = Bounds::capped(MAX_NAMES, Instant::now());
        let found = search_turn(bounds, move || find_glob(&files, &path, &glob, bounds)).await?;
        let paths: Vec<String> = found.matches.into_iter().map(|m| m.path).collect();
        let body = axum::Json(serde_json::json!({ "files": paths })).into_response();
        Ok(capped(body, found.truncated))
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

/// `POST /files/replace` `{files, pattern, newValue}`: every literal
/// `pattern` replaced in each file, one result per file (200 even when
/// some fail).
async fn replace(State(st): State<Arc<AppState>>, body: Body) -> Response {
    let r = async {
        let req: ReplaceRequest = read_json(body).await?;
        if req.pattern.is_empty() {
            return Err(Refusal::bad_request("pattern must not be empty"));
        }
        if req.files.len() > MAX_PATHS {
            return Err(Refusal::bad_request(format!("more than {MAX_PATHS} files in one replace")));
        }
        let files = root(&st)?;
        let results = blocking(move || {
            let results = req.files.into_iter().map(|file| {
                match replace_in(&files, &file, req.pattern.as_bytes(), req.new_value.as_bytes()) {
                    Ok(()) => ReplaceResult { file, success: true, error: None },
                    Err(e) => {
                        let error = Some(format!("{file}: {}", reason(&e)));
                        ReplaceResult { file, success: false, error }
                    }
                }
            });
            Ok(results.collect::<Vec<_>>())
        })
        .await?;
        Ok(axum::Json(results).into_response())
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

/// `POST /files/permissions?path=P[&owner=U][&group=G][&mode=M]`: `chown`
/// then `chmod` (a final symlink is followed); 200. Owner and group are
/// names (from `/etc/passwd`, `/etc/group`) or numbers.
async fn permissions(State(st): State<Arc<AppState>>, uri: Uri) -> Response {
    let r = async {
        let q: Q = query(&uri)?;
        let path = required(&q.path, "path")?.to_owned();
        let mode = parse_mode(q.mode.as_deref())?;
        let (owner, group) = (q.owner, q.group);
        let files = root(&st)?;
        blocking(move || {
            let names = if owner.is_some() || group.is_some() { Names::load() } else { Names::default() };
            let uid = match &owner {
                None => None,
                Some(o) => {
                    Some(names.users.id(o).ok_or_else(|| Refusal::bad_request(format!("no user {o:?}")))?)
                }
            };
            let gid = match &group {
                None => None,
                Some(g) => {
                    Some(names.groups.id(g).ok_or_else(|| Refusal::bad_request(format!("no group {g:?}")))?)
                }
            };
            // chown first: it clears the setuid and setgid bits a mode
            // may ask for.
            if uid.is_some() || gid.is_some() {
                files.set_owner(&path, uid, gid)?;
            }
            match mode {
                Some(m) => files.set_mode(&path, m)?,
                // Nothing to change: still a 404 for a missing path.
                None if uid.is_none() && gid.is_none() => drop(files.stat(&path)?),
                None => {}
            }
            Ok(())
        })
        .await?;
        Ok::<_, Refusal>(StatusCode::OK.into_response())
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

/// `POST /files/bulk-download` `{paths}`: 200 `multipart/form-data`, one
/// part per path, in order: `file` (the bytes, streamed from disk) or
/// `error` (the envelope), each named by the path exactly as requested;
/// then the closing boundary. A read failing mid-file aborts the body
/// (no closing boundary: the SDK reports a truncation).
async fn bulk_download(State(st): State<Arc<AppState>>, body: Body) -> Response {
    let r = async {
        let req: DownloadRequest = read_json(body).await?;
        if req.paths.is_empty() {
            return Err(Refusal::bad_request("paths is empty"));
        }
        if req.paths.len() > MAX_PATHS {
            return Err(Refusal::bad_request(format!("more than {MAX_PATHS} paths in one download")));
        }
        let files = root(&st)?;
        let boundary = new_boundary();
        let mut resp = Response::new(download_body(files, req.paths, &boundary));
        let ct = HeaderValue::from_str(&format!("multipart/form-data; boundary={boundary}"))
            .map_err(|e| Refusal::new(500, Some("INTERNAL_SERVER_ERROR"), e.to_string()))?;
        resp.headers_mut().insert(header::CONTENT_TYPE, ct);
        Ok(resp)
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

/// `POST /files/bulk-upload` (multipart `files[i].path` and `files[i].file`,
/// matched by index, in any order): each file streamed to disk and put in
/// place atomically (parents created, an existing file replaced). 200
/// `{"files": [{path, bytes}], "errors": []}`; when any file fails, the
/// status of the first failure with `{"errors": ["<path>: <why>"], "files"}`
/// and the envelope's keys. The files that made it stay written.
async fn bulk_upload(State(st): State<Arc<AppState>>, req: Request) -> Response {
    // `upload_files([])` posts an empty body, with no boundary: nothing to do.
    if req.headers().get(header::CONTENT_LENGTH).is_some_and(|v| v.as_bytes() == b"0") {
        return axum::Json(serde_json::json!({ "files": [], "errors": [] })).into_response();
    }
    let mut batch = Batch { files: st.files.clone(), ..Batch::default() };
    match Multipart::from_request(req, &st).await {
        Ok(mut form) => loop {
            let step = match form.next_field().await {
                Ok(Some(field)) => batch.field(field).await,
                Ok(None) => break,
                Err(e) => Err(e),
            };
            if let Err(e) = step {
                batch.fail("multipart body", e.status().as_u16(), Some("BAD_REQUEST"), e.body_text());
                break;
            }
        },
        Err(e) => {
            let why = format!("not a multipart/form-data body: {}", e.body_text());
            batch.fail("request", 400, Some("BAD_REQUEST"), why);
        }
    }
    batch.finish()
}

/// The file routes' root.
fn root(st: &AppState) -> Result<Arc<Files>, Refusal> {
    st.files.clone().ok_or_else(|| {
        Refusal::new(500, Some("INTERNAL_SERVER_ERROR"), "the daemon has no usable files root")
    })
}

/// A query parameter the route needs.
fn required<'a>(v: &'a Option<String>, name: &str) -> Result<&'a str, Refusal> {
    v.as_deref().ok_or_else(|| Refusal::bad_request(format!("missing query parameter `{name}`")))
}

/// `755`, `0755` or `0o755` (at most `7777`).
fn parse_mode(mode: Option<&str>) -> Result<Option<u32>, Refusal> {
    let Some(m) = mode else { return Ok(None) };
    let digits = m.strip_prefix("0o").unwrap_or(m);
    let octal = !digits.is_empty() && digits.bytes().all(|b| (b'0'..=b'7').contains(&b));
    u32::from_str_radix(digits, 8).ok().filter(|v| octal && *v <= 0o7777).map(Some).ok_or_else(|| {
        Refusal::bad_request(format!("mode must be octal permission bits such as 755, not {m:?}"))
    })
}

/// A JSON body of at most [`MAX_JSON`] bytes, or 400.
async fn read_json<T: serde::de::DeserializeOwned>(body: Body) -> Result<T, Refusal> {
    let bytes = axum::body::to_bytes(body, MAX_JSON).await.map_err(|e| {
        Refusal::new(
            400,
            Some("INVALID_REQUEST_BODY"),
            format!("request body unreadable or over {MAX_JSON} bytes: {e}"),
        )
    })?;
    json(&bytes)
}

/// Runs blocking file work off the runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Refusal> + Send + 'static,
) -> Result<T, Refusal> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Refusal::new(500, Some("INTERNAL_SERVER_ERROR"), format!("file task failed: {e}")))?
}

/// [`blocking`] for work that fails with a [`FileError`].
async fn run<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, FileError> + Send + 'static,
) -> Result<T, FileError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(FileError::Io {
            path: String::new(),
            source: std::io::Error::other(format!("file task failed: {e}")),
        })
    })
}

/// Runs a search on a blocking thread once one of the searches' turns
/// (shared with the LangSmith dialect) is free; one that gets no turn
/// before its deadline finds nothing, truncated.
async fn search_turn<M: Send + 'static>(
    bounds: Bounds,
    f: impl FnOnce() -> Result<Found<M>, FileError> + Send + 'static,
) -> Result<Found<M>, Refusal> {
    let deadline = tokio::time::Instant::from_std(bounds.deadline);
    let Ok(Ok(permit)) = tokio::time::timeout_at(deadline, search::SEARCHES.acquire()).await else {
        return Ok(Found { matches: Vec::new(), truncated: true });
    };
    blocking(move || {
        let _turn = permit;
        f().map_err(Refusal::from)
    })
    .await
}

/// Marks a capped answer that was cut.
fn capped(mut resp: Response, truncated: bool) -> Response {
    if truncated {
        resp.headers_mut().insert(TRUNCATED, HeaderValue::from_static("true"));
    }
    resp
}

/// The entries below directory `path`, down to `depth` levels, in path
/// order. More than [`MAX_LISTED`] entries, or a walk past `deadline`,
/// is a 400 rather than a silently short list.
fn list_tree(files: &Files, path: &str, depth: usize, deadline: Instant) -> Result<Vec<FileInfo>, Refusal> {
    let base = files.absolute(path);
    let names = Names::load();
    let mut out = Vec::new();
    let limits = WalkLimits { max_entries: MAX_LISTED, max_depth: depth, deadline: Some(deadline) };
    let end = files.walk(path, limits, |e| {
        // An entry gone since the walk saw it is left out.
        if let Ok(info) = file_info(&e.stat, &base.join(e.rel), &names) {
            out.push(info);
        }
        Step::Continue
    })?;
    match end {
        WalkEnd::Truncated(WalkLimit::Entries) => Err(Refusal::bad_request(format!(
            "more than {MAX_LISTED} entries below {path} at depth {depth}: list a smaller depth or a subdirectory"
        ))),
        WalkEnd::Truncated(WalkLimit::Deadline) => Err(Refusal::bad_request(format!(
            "listing {path} at depth {depth} took over {} s: list a smaller depth or a subdirectory",
            LIST_DEADLINE.as_secs()
        ))),
        _ => Ok(out),
    }
}

/// `stat` as the SDK's model (the owner and group from the file layer's
/// own lookup, never a second one by path).
fn file_info(stat: &Stat, abs: &Path, names: &Names) -> std::io::Result<FileInfo> {
    let name = if stat.name.is_empty() {
        abs.file_name().map_or_else(|| "/".to_owned(), |n| n.to_string_lossy().into_owned())
    } else {
        stat.name.clone()
    };
    Ok(FileInfo {
        name,
        is_dir: stat.kind == Kind::Dir,
        size: stat.size,
        mode: go_mode(stat.kind, stat.mode),
        mod_time: go_time(stat.mtime_ms),
        permissions: format!("{:04o}", stat.mode & 0o777),
        owner: names.users.name(stat.uid),
        group: names.groups.name(stat.gid),
        path: abs.to_string_lossy().into_owned(),
        modified_at: rfc3339(stat.mtime_ms),
    })
}

/// Go's `time.String()` of a UTC time: `2006-01-02 15:04:05.999 +0000
/// UTC` (the fraction without trailing zeros, none when zero).
fn go_time(ms: i64) -> String {
    let stamp = rfc3339(ms);
    let stamp = stamp.trim_end_matches('Z').replacen('T', " ", 1);
    let frac = format!("{:03}", ms.rem_euclid(1000));
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() { format!("{stamp} +0000 UTC") } else { format!("{stamp}.{frac} +0000 UTC") }
}

/// `e`'s message without the path it starts with, for a caller that names
/// the file its own way.
fn reason(e: &FileError) -> String {
    let msg = e.to_string();
    let path = match e {
        FileError::NotFound { path }
        | FileError::Outside { path }
        | FileError::PermissionDenied { path }
        | FileError::Exists { path }
        | FileError::Special { path }
        | FileError::IsADirectory { path }
        | FileError::NotADirectory { path }
        | FileError::BadPath { path, .. }
        | FileError::NoSpace { path }
        | FileError::TooLarge { path }
        | FileError::Io { path, .. } => path,
        FileError::BadArchive(_) => return msg,
    };
    match msg.strip_prefix(path.as_str()).and_then(|m| m.strip_prefix(": ")) {
        Some(rest) => rest.to_owned(),
        None => msg,
    }
}

/// The lines holding `needle` in the one file `path` (a directory is
/// [`find_grep`]'s); a binary file has none.
fn grep_file(files: &Files, path: &str, needle: &[u8], b: Bounds) -> Result<Found<GrepMatch>, FileError> {
    let opened = files.open_read(path, false)?;
    let shown = files.absolute(path).to_string_lossy().into_owned();
    let finder = memchr::memmem::Finder::new(needle);
    let mut lines = LineScan::new(&finder);
    let mut buf = vec![0u8; 64 * 1024];
    let mut matches = Vec::new();
    let scan = search::scan_file(opened.file, &mut lines, &mut buf, b, &mut |line, text| {
        if matches.len() == b.limit {
            return false;
        }
        matches.push(GrepMatch { path: shown.clone(), line, text });
        true
    });
    Ok(Found { matches, truncated: scan != Scan::Done })
}

/// Rewrites file `path` with every `needle` replaced by `with`: streamed
/// into a new file put in place atomically (keeping the mode, and the
/// owner when the daemon may set it), only when `needle` occurs.
fn replace_in(files: &Files, path: &str, needle: &[u8], with: &[u8]) -> Result<(), FileError> {
    if files.stat(path)?.kind == Kind::Symlink {
        return Err(FileError::BadPath { path: path.to_owned(), why: "is a symbolic link: name its target" });
    }
    let mut opened = files.open_read(path, false)?;
    if opened.source != Source::Regular {
        return Err(FileError::Special { path: path.to_owned() });
    }
    let was = opened.file.metadata().map_err(|e| FileError::from_io(e, path))?;
    let mut up = files.create(path, None, false)?;
    let new = up.file()?;
    let is = new.metadata().map_err(|e| FileError::from_io(e, path))?;
    if (is.uid(), is.gid()) != (was.uid(), was.gid()) {
        // Best effort (only root, or a member of the group, may); a chown
        // clears setuid and setgid, so the mode is set again after it.
        let owner = Some(rustix::fs::Uid::from_raw(was.uid()));
        let group = Some(rustix::fs::Gid::from_raw(was.gid()));
        if rustix::fs::fchown(&new, owner, group).is_ok() {
            let _ = rustix::fs::fchmod(&new, rustix::fs::Mode::from_raw_mode(was.mode() & 0o7777));
        }
    }
    let mut out = std::io::BufWriter::with_capacity(CHUNK, new);
    let n =
        replace_stream(&mut opened.file, &mut out, needle, with).map_err(|e| FileError::from_io(e, path))?;
    out.flush().map_err(|e| FileError::from_io(e, path))?;
    drop(out);
    // No match: the upload is dropped, and the file stays as it was.
    if n > 0 { up.commit() } else { Ok(()) }
}

/// Copies `src` to `dst` with every (non-overlapping, leftmost) `needle`
/// replaced by `with`, in bounded memory: a chunk and the last
/// `needle.len() - 1` bytes, where a match may begin. Returns how many
/// were replaced.
fn replace_stream(
    src: &mut impl Read,
    dst: &mut impl Write,
    needle: &[u8],
    with: &[u8],
) -> std::io::Result<u64> {
    let finder = memchr::memmem::Finder::new(needle);
    let keep = needle.len().saturating_sub(1);
    let mut chunk = vec![0u8; CHUNK];
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK + keep);
    let mut count = 0;
    loop {
        let n = loop {
            match src.read(&mut chunk) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                r => break r?,
            }
        };
        let eof = n == 0;
        buf.extend_from_slice(&chunk[..n]);
        // Past `safe`, a match could still be completed by the next read.
        let safe = if eof { buf.len() } else { buf.len().saturating_sub(keep) };
        let mut at = 0;
        while let Some(i) = finder.find(&buf[at..]).map(|i| at + i).filter(|&i| i < safe) {
            dst.write_all(&buf[at..i])?;
            dst.write_all(with)?;
            count += 1;
            at = i + needle.len();
        }
        let upto = safe.max(at);
        dst.write_all(&buf[at..upto])?;
        buf.drain(..upto);
        if eof {
            return Ok(count);
        }
    }
}

/// `multipart/form-data` boundary: random, so no file holds it.
fn new_boundary() -> String {
    use std::hash::{BuildHasher, Hasher};
    // Each `RandomState` has its own keys (random per thread, then
    // counted): the hashes cannot be guessed.
    let word = || {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        h.write_u128(now.as_nanos());
        h.finish()
    };
    format!("tether-{:016x}{:016x}", word(), word())
}

/// The `Content-Disposition` of a download part named `name` for `path`.
/// The path is echoed exactly: as `filename="..."` when it is printable
/// ASCII without `"` or `\`; else percent-encoded, as `filename*=UTF-8''`
/// (which the SDK prefers) after a plain `filename` of the same ASCII
/// text (which `download_file_stream` needs to see, and which must be
/// latin-1 for it).
fn disposition(name: &str, path: &str) -> String {
    let plain = path.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\');
    if plain {
        return format!("form-data; name=\"{name}\"; filename=\"{path}\"");
    }
    let mut enc = String::with_capacity(path.len() * 3);
    for b in path.bytes() {
        // RFC 5987's `attr-char`.
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            enc.push(char::from(b));
        } else {
            enc.push_str(&format!("%{b:02X}"));
        }
    }
    format!("form-data; name=\"{name}\"; filename=\"{enc}\"; filename*=UTF-8''{enc}")
}

/// A part's boundary line and headers, up to its data.
fn part_head(boundary: &str, name: &str, path: &str, content_type: &str, len: u64) -> Bytes {
    Bytes::from(format!(
        "--{boundary}\r\nContent-Disposition: {}\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\n\r\n",
        disposition(name, path)
    ))
}

/// The closing boundary.
fn closing(boundary: &str) -> Bytes {
    Bytes::from(format!("--{boundary}--\r\n"))
}

/// The line break that ends a part's data.
const PART_END: &[u8] = b"\r\n";

/// The whole download body: each path's part, opened in turn (one file
/// open at a time), then the closing boundary.
fn download_body(files: Arc<Files>, paths: Vec<String>, boundary: &str) -> Body {
    let b: Arc<str> = Arc::from(boundary);
    let end = closing(boundary);
    let parts = stream::iter(paths).then(move |p| part(files.clone(), b.clone(), p)).flatten();
    Body::from_stream(parts.chain(stream::once(async move { Ok(end) })))
}

/// What a download sends for one path.
enum Download {
    /// A regular file: this many bytes, read as they go out.
    File(std::fs::File, u64),
    /// A file of `/proc` or `/sys`, read whole (bounded) for its length.
    Whole(Bytes),
}

/// One path's part: the file, or an `error` part with the envelope.
async fn part(
    files: Arc<Files>,
    boundary: Arc<str>,
    path: String,
) -> BoxStream<'static, std::io::Result<Bytes>> {
    let p = path.clone();
    let opened = run(move || {
        let opened = files.open_read(&p, false)?;
        match opened.source {
            Source::Pseudo => {
                Ok(Download::Whole(read_pseudo(&opened.file, MAX_PSEUDO_BYTES, false, &p)?.into()))
            }
            _ => Ok(Download::File(opened.file, opened.stat.size)),
        }
    })
    .await;
    let end = || Ok(Bytes::from_static(PART_END));
    match opened {
        Ok(Download::File(file, len)) => {
            let head = part_head(&boundary, "file", &path, "application/octet-stream", len);
            stream::once(async move { Ok(head) })
                .chain(file_chunks(file, len))
                .chain(stream::iter([end()]))
                .boxed()
        }
        Ok(Download::Whole(data)) => {
            let head = part_head(&boundary, "file", &path, "application/octet-stream", data.len() as u64);
            stream::iter([Ok(head), Ok(data), end()]).boxed()
        }
        Err(e) => {
            let envelope = Refusal::from(e).body(DOWNLOAD_ROUTE, "POST");
            let json = Bytes::from(serde_json::to_vec(&envelope).unwrap_or_default());
            let head = part_head(&boundary, "error", &path, "application/json", json.len() as u64);
            stream::iter([Ok(head), Ok(json), end()]).boxed()
        }
    }
}

/// Exactly `len` bytes of `file`, a chunk at a time; a file that ends
/// early (shrunk meanwhile) or fails to read ends the stream with an
/// error, which aborts the response.
fn file_chunks(file: std::fs::File, len: u64) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> {
    let file = tokio::fs::File::from_std(file);
    stream::unfold(Some((file, len)), |state| async move {
        let (mut file, left) = state?;
        if left == 0 {
            return None;
        }
        let mut buf = vec![0u8; usize::try_from(left).unwrap_or(CHUNK).min(CHUNK)];
        let n = loop {
            match file.read(&mut buf).await {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Some((Err(e), None)),
                Ok(0) => {
                    let e = std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the file shrank while it was sent",
                    );
                    return Some((Err(e), None));
                }
                Ok(n) => break n,
            }
        };
        buf.truncate(n);
        Some((Ok(Bytes::from(buf)), Some((file, left - n as u64))))
    })
}

/// Which part of upload `files[i]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Which {
    /// `files[i].path`: the destination.
    Path,
    /// `files[i].file`: the bytes.
    File,
}

/// `files[i].path` or `files[i].file`.
fn parse_field_name(name: &str) -> Option<(usize, Which)> {
    let rest = name.strip_prefix("files[")?;
    let (index, which) = rest.split_once("].")?;
    let which = match which {
        "path" => Which::Path,
        "file" => Which::File,
        _ => return None,
    };
    if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((index.parse().ok()?, which))
}

/// A bulk upload in progress.
#[derive(Debug, Default)]
struct Batch {
    /// The root (none: every file fails).
    files: Option<Arc<Files>>,
    /// Each index's parts so far.
    slots: BTreeMap<usize, Slot>,
    /// How many slots hold a spool.
    spooled: usize,
    /// The files put in place.
    written: Vec<Written>,
    /// `<path>: <why>` for each failure.
    errors: Vec<String>,
    /// Failures past [`MAX_ERRORS`], counted only.
    unlisted: usize,
    /// The first failure's status and code: the answer's.
    status: Option<(u16, Option<&'static str>)>,
}

/// One index of an upload.
#[derive(Debug, Default)]
struct Slot {
    /// Its destination, once its path part came.
    path: Option<String>,
    /// Its file part.
    file: FilePart,
}

/// Where an upload's file part is.
#[derive(Debug, Default)]
enum FilePart {
    /// Not seen yet.
    #[default]
    Missing,
    /// Came before its path: in this unnamed temporary file.
    Spooled(std::fs::File),
    /// Written, or failed (and reported).
    Done,
}

impl Batch {
    /// One part of the form; an error is the body's (malformed, cut), which
    /// ends the upload.
    async fn field(&mut self, mut field: Field<'_>) -> Result<(), MultipartError> {
        let Some((i, which)) = field.name().and_then(parse_field_name) else {
            // Not ours: skipped.
            return drain(&mut field).await;
        };
        if i >= MAX_PATHS {
            let why = format!("more than {MAX_PATHS} files in one upload");
            self.fail(&format!("files[{i}]"), 400, Some("BAD_REQUEST"), why);
            return drain(&mut field).await;
        }
        match which {
            Which::Path => {
                let path = match read_text(&mut field).await? {
                    Ok(p) => p,
                    Err(why) => {
                        self.fail(&format!("files[{i}].path"), 400, Some("INVALID_FILE_PATH"), why);
                        return Ok(());
                    }
                };
                let slot = self.slots.entry(i).or_default();
                if slot.path.is_some() {
                    self.fail(&path, 400, Some("BAD_REQUEST"), format!("files[{i}].path is given twice"));
                    return Ok(());
                }
                slot.path = Some(path.clone());
                // A file part that came first is put in place now.
                let spool = match std::mem::take(&mut slot.file) {
                    FilePart::Spooled(spool) => {
                        slot.file = FilePart::Done;
                        spool
                    }
                    other => {
                        slot.file = other;
                        return Ok(());
                    }
                };
                self.spooled -= 1;
                self.place(spool, path).await;
                Ok(())
            }
            Which::File => {
                let slot = self.slots.entry(i).or_default();
                if !matches!(slot.file, FilePart::Missing) {
                    let label = slot.path.clone().unwrap_or_else(|| format!("files[{i}].file"));
                    self.fail(&label, 400, Some("BAD_REQUEST"), format!("files[{i}].file is given twice"));
                    return drain(&mut field).await;
                }
                slot.file = FilePart::Done;
                match slot.path.clone() {
                    Some(path) => self.write(&path, &mut field).await,
                    None => self.spool(i, &mut field).await,
                }
            }
        }
    }

    /// Streams a file part to `path`.
    async fn write(&mut self, path: &str, field: &mut Field<'_>) -> Result<(), MultipartError> {
        let Some(files) = self.files.clone() else {
            self.fail(path, 500, Some("INTERNAL_SERVER_ERROR"), "the daemon has no usable files root".into());
            return drain(field).await;
        };
        let p = path.to_owned();
        let mut up = match run(move || files.create(&p, None, true)).await {
            Ok(up) => up,
            Err(e) => {
                self.fail_file(path, e);
                return drain(field).await;
            }
        };
        let file = match up.file() {
            Ok(f) => f,
            Err(e) => {
                self.fail_file(path, e);
                return drain(field).await;
            }
        };
        // A body cut here returns early: `up` drops, and its temporary
        // file with it.
        let bytes = match copy_part(field, file).await? {
            Ok(n) => n,
            Err(e) => {
                self.fail_file(path, FileError::from_io(e, path));
                return drain(field).await;
            }
        };
        match run(move || up.commit()).await {
            Ok(()) => self.written.push(Written { path: path.to_owned(), bytes }),
            Err(e) => self.fail_file(path, e),
        }
        Ok(())
    }

    /// Keeps a file part that came before its path in an unnamed
    /// temporary file.
    async fn spool(&mut self, i: usize, field: &mut Field<'_>) -> Result<(), MultipartError> {
        let label = format!("files[{i}].file");
        if self.spooled >= MAX_SPOOLED {
            let why = format!("more than {MAX_SPOOLED} file parts came before their path parts");
            self.fail(&label, 400, Some("BAD_REQUEST"), why);
            return drain(field).await;
        }
        let dir = self.files.as_ref().map(|f| f.root().to_owned());
        let spool = match run(move || open_spool(dir.as_deref())).await {
            Ok(s) => s,
            Err(e) => {
                self.fail_file(&label, e);
                return drain(field).await;
            }
        };
        let writer = match spool.try_clone() {
            Ok(w) => w,
            Err(e) => {
                self.fail_file(&label, FileError::from_io(e, &label));
                return drain(field).await;
            }
        };
        if let Err(e) = copy_part(field, writer).await? {
            self.fail_file(&label, FileError::from_io(e, &label));
            return drain(field).await;
        }
        self.slots.entry(i).or_default().file = FilePart::Spooled(spool);
        self.spooled += 1;
        Ok(())
    }

    /// Puts a spooled file part in place at `path`, now that it is known.
    async fn place(&mut self, mut spool: std::fs::File, path: String) {
        let Some(files) = self.files.clone() else {
            self.fail(
                &path,
                500,
                Some("INTERNAL_SERVER_ERROR"),
                "the daemon has no usable files root".into(),
            );
            return;
        };
        let p = path.clone();
        let placed = run(move || {
            let io = |e| FileError::from_io(e, &p);
            spool.rewind().map_err(io)?;
            let mut up = files.create(&p, None, true)?;
            let mut out = up.file()?;
            let n = std::io::copy(&mut spool, &mut out).map_err(io)?;
            drop(out);
            up.commit()?;
            Ok(n)
        })
        .await;
        match placed {
            Ok(bytes) => self.written.push(Written { path, bytes }),
            Err(e) => self.fail_file(&path, e),
        }
    }

    /// Records a failure; the first one sets the answer's status.
    fn fail(&mut self, label: &str, status: u16, code: Option<&'static str>, why: String) {
        if self.errors.len() < MAX_ERRORS {
            self.errors.push(format!("{label}: {why}"));
        } else {
            self.unlisted += 1;
        }
        self.status.get_or_insert((status, code));
    }

    /// Records a file error, with the status and code the toolbox gives it.
    fn fail_file(&mut self, label: &str, e: FileError) {
        let why = reason(&e);
        let r = Refusal::from(e);
        self.fail(label, r.status.as_u16(), r.code, why);
    }

    /// The answer, once the form has been read.
    fn finish(mut self) -> Response {
        for (i, slot) in std::mem::take(&mut self.slots) {
            match (slot.path, slot.file) {
                (Some(p), FilePart::Missing) => {
                    self.fail(&p, 400, Some("BAD_REQUEST"), format!("no file part files[{i}].file"))
                }
                (None, FilePart::Spooled(_)) => {
                    let why = format!("no path part files[{i}].path");
                    self.fail(&format!("files[{i}].file"), 400, Some("BAD_REQUEST"), why)
                }
                _ => {}
            }
        }
        if self.unlisted > 0 {
            self.errors.push(format!("and {} more failures", self.unlisted));
        }
        let Some((status, code)) = self.status else {
            let body = serde_json::json!({ "files": self.written, "errors": self.errors });
            return axum::Json(body).into_response();
        };
        // The SDK reads `errors`; the envelope's keys are there for any
        // other reader of the dialect's errors.
        let refusal = Refusal::new(status, code, self.errors.join(", "));
        let mut body = refusal.body(UPLOAD_ROUTE, "POST");
        if let Some(o) = body.as_object_mut() {
            o.insert("errors".into(), self.errors.into());
            o.insert("files".into(), serde_json::to_value(&self.written).unwrap_or_default());
        }
        (refusal.status, axum::Json(body)).into_response()
    }
}

/// Streams a part's data into `file`: the part's bytes, or the write's
/// error (the part is then unread from there); a body error is the
/// outer one.
async fn copy_part(
    field: &mut Field<'_>,
    file: std::fs::File,
) -> Result<std::io::Result<u64>, MultipartError> {
    let mut out = tokio::fs::File::from_std(file);
    let mut n = 0u64;
    while let Some(chunk) = field.chunk().await? {
        if let Err(e) = out.write_all(&chunk).await {
            return Ok(Err(e));
        }
        n += chunk.len() as u64;
    }
    Ok(out.flush().await.map(|()| n))
}

/// A text part of at most [`MAX_PATH_PART`] bytes of UTF-8, or why not.
async fn read_text(field: &mut Field<'_>) -> Result<Result<String, String>, MultipartError> {
    let mut buf = Vec::new();
    while let Some(chunk) = field.chunk().await? {
        if buf.len() + chunk.len() > MAX_PATH_PART {
            drain(field).await?;
            return Ok(Err(format!("the path is longer than {MAX_PATH_PART} bytes")));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8(buf).map_err(|_| "the path is not UTF-8".to_owned()))
}

/// Reads and drops the rest of a part.
async fn drain(field: &mut Field<'_>) -> Result<(), MultipartError> {
    while field.chunk().await?.is_some() {}
    Ok(())
}

/// An unnamed temporary file (`O_TMPFILE`) in `dir` (the files root: a
/// disk, likely the uploads' own), else in the temp dir: nothing is left
/// behind, whatever happens.
fn open_spool(dir: Option<&Path>) -> Result<std::fs::File, FileError> {
    use std::os::unix::fs::OpenOptionsExt;
    let temp = std::env::temp_dir();
    let mut last = None;
    for d in dir.into_iter().chain([temp.as_path()]) {
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_TMPFILE)
            .open(d);
        match opened {
            Ok(f) => return Ok(f),
            Err(e) => last = Some(FileError::from_io(e, d)),
        }
    }
    Err(last.unwrap_or(FileError::BadPath { path: String::new(), why: "no directory to spool in" }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::compat::fileinfo::IdTable;

    #[test]
    fn modes_as_go_prints_them() {
        assert_eq!(go_mode(Kind::File, 0o644), "-rw-r--r--");
        assert_eq!(go_mode(Kind::Dir, 0o755), "drwxr-xr-x");
        assert_eq!(go_mode(Kind::Symlink, 0o777), "Lrwxrwxrwx");
        assert_eq!(go_mode(Kind::Dir, 0o1777), "dtrwxrwxrwx");
        assert_eq!(go_mode(Kind::File, 0o4755), "urwxr-xr-x");
        assert_eq!(go_mode(Kind::Dir, 0o2775), "dgrwxrwxr-x");
        assert_eq!(go_mode(Kind::CharDevice, 0o666), "Dcrw-rw-rw-");
        assert_eq!(go_mode(Kind::BlockDevice, 0o660), "Drw-rw----");
        assert_eq!(go_mode(Kind::Fifo, 0o600), "prw-------");
        assert_eq!(go_mode(Kind::Socket, 0o755), "Srwxr-xr-x");
        assert_eq!(go_mode(Kind::File, 0), "----------");
    }

    #[test]
    fn times_as_go_prints_them() {
        assert_eq!(go_time(0), "1970-01-01 00:00:00 +0000 UTC");
        assert_eq!(go_time(1_735_689_600_500), "2025-01-01 00:00:00.5 +0000 UTC");
        assert_eq!(go_time(1_735_689_600_123), "2025-01-01 00:00:00.123 +0000 UTC");
        assert_eq!(go_time(1_735_689_600_020), "2025-01-01 00:00:00.02 +0000 UTC");
    }

    #[test]
    fn modes_parse() {
        assert_eq!(parse_mode(None).unwrap(), None);
        assert_eq!(parse_mode(Some("755")).unwrap(), Some(0o755));
        assert_eq!(parse_mode(Some("0644")).unwrap(), Some(0o644));
        assert_eq!(parse_mode(Some("0o700")).unwrap(), Some(0o700));
        assert_eq!(parse_mode(Some("4755")).unwrap(), Some(0o4755));
        for bad in ["", "0o", "888", "rwx", "17777", "-1", "+7"] {
            assert_eq!(parse_mode(Some(bad)).unwrap_err().status, 400, "{bad}");
        }
    }

    #[test]
    fn id_tables() {
        let t = IdTable::parse(
            "root:x:0:0:root:/root:/bin/sh\n# x:x:5:\nbad\nu:x:1000:1000::/home/u:\nalias:x:0:0\n",
        );
        assert_eq!((t.name(0), t.name(1000), t.name(42)), ("root".into(), "u".into(), "42".into()));
        assert_eq!(
            (t.id("alias"), t.id("root"), t.id("7"), t.id("nobody")),
            (Some(0), Some(0), Some(7), None)
        );
        let g = IdTable::parse("wheel:x:10:root,u\n");
        assert_eq!(g.name(10), "wheel");
    }

    #[test]
    fn reasons_drop_the_path() {
        let e = FileError::NotFound { path: "a: b".into() };
        assert_eq!(reason(&e), "no such file or directory");
        let e = FileError::BadPath { path: "x".into(), why: "contains a NUL byte" };
        assert_eq!(reason(&e), "contains a NUL byte");
        assert_eq!(reason(&FileError::BadArchive("cut".into())), "bad archive: cut");
    }

    #[test]
    fn field_names() {
        assert_eq!(parse_field_name("files[0].path"), Some((0, Which::Path)));
        assert_eq!(parse_field_name("files[12].file"), Some((12, Which::File)));
        for bad in
            ["files[].path", "files[x].file", "files[1].name", "file[1].path", "files[-1].path", "files[1]"]
        {
            assert_eq!(parse_field_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn content_disposition() {
        assert_eq!(disposition("file", "/tmp/a b.txt"), r#"form-data; name="file"; filename="/tmp/a b.txt""#);
        assert_eq!(
            disposition("file", "/tmp/é.txt"),
            r#"form-data; name="file"; filename="%2Ftmp%2F%C3%A9.txt"; filename*=UTF-8''%2Ftmp%2F%C3%A9.txt"#
        );
        assert_eq!(
            disposition("error", r#"a"b\c"#),
            r#"form-data; name="error"; filename="a%22b%5Cc"; filename*=UTF-8''a%22b%5Cc"#
        );
        // Control characters never reach a header.
        assert!(disposition("file", "a\r\nb").ends_with("filename*=UTF-8''a%0D%0Ab"));
    }

    #[test]
    fn replaces_across_reads() {
        /// Hands out its bytes `step` at a time.
        struct Trickle<'a>(&'a [u8], usize);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = self.0.len().min(self.1).min(buf.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let text = b"one needle, two needleneedle; needl e, needle";
        for step in [1, 2, 3, 5, 7, 64] {
            let mut out = Vec::new();
            let n = replace_stream(&mut Trickle(text, step), &mut out, b"needle", b"pin").unwrap();
            assert_eq!((n, out.as_slice()), (4, &b"one pin, two pinpin; needl e, pin"[..]), "step {step}");
        }
        // Leftmost, non-overlapping, like `str::replace`.
        let mut out = Vec::new();
        assert_eq!(replace_stream(&mut &b"aaaa"[..], &mut out, b"aa", b"b").unwrap(), 2);
        assert_eq!(out, b"bb");
        let mut out = Vec::new();
        assert_eq!(replace_stream(&mut &b"abc"[..], &mut out, b"x", b"y").unwrap(), 0);
        assert_eq!(out, b"abc");
        let mut out = Vec::new();
        assert_eq!(replace_stream(&mut &b""[..], &mut out, b"x", b"y").unwrap(), 0);
        assert!(out.is_empty());
    }

    /// A directory removed on drop.
    struct Tmp(std::path::PathBuf);

    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn tmp(tag: &str) -> Tmp {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let t =
            Tmp(std::env::temp_dir().join(format!("tether-daytona-{tag}-{}-{nanos}", std::process::id())));
        std::fs::create_dir(&t.0).unwrap();
        t
    }

    #[tokio::test]
    async fn download_framing() {
        let t = tmp("download");
        std::fs::write(t.0.join("a.txt"), b"hello").unwrap();
        std::fs::write(t.0.join("empty"), b"").unwrap();
        let files = Arc::new(Files::new(&t.0, true).unwrap());
        let paths = vec!["a.txt".to_owned(), "empty".to_owned(), "nope".to_owned()];
        let body = download_body(files, paths, "B");
        let got = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        let got = String::from_utf8(got.to_vec()).unwrap();
        let (head, rest) = got.split_once("--B\r\nContent-Disposition: form-data; name=\"error\"").unwrap();
        assert_eq!(
            head,
            "--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\
             Content-Type: application/octet-stream\r\nContent-Length: 5\r\n\r\nhello\r\n\
             --B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"empty\"\r\n\
             Content-Type: application/octet-stream\r\nContent-Length: 0\r\n\r\n\r\n"
        );
        let (headers, rest) = rest.split_once("\r\n\r\n").unwrap();
        assert!(
            headers.starts_with("; filename=\"nope\"\r\nContent-Type: application/json\r\nContent-Length: ")
        );
        let (json, tail) = rest.split_once("\r\n").unwrap();
        assert_eq!(tail, "--B--\r\n");
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!((v["statusCode"].as_u64(), v["code"].as_str()), (Some(404), Some("FILE_NOT_FOUND")));
        assert_eq!(
            (v["source"].as_str(), v["path"].as_str()),
            (Some("DAYTONA_DAEMON"), Some(DOWNLOAD_ROUTE))
        );
    }

    #[tokio::test]
    async fn a_file_that_shrinks_aborts_the_stream() {
        let t = tmp("shrink");
        std::fs::write(t.0.join("f"), b"abc").unwrap();
        let file = std::fs::File::open(t.0.join("f")).unwrap();
        let items: Vec<_> = file_chunks(file, 5).collect().await;
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].as_ref().unwrap().as_ref(), b"abc");
        assert_eq!(items[1].as_ref().unwrap_err().kind(), std::io::ErrorKind::UnexpectedEof);
        let file = std::fs::File::open(t.0.join("f")).unwrap();
        let items: Vec<_> = file_chunks(file, 2).collect().await;
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].as_ref().unwrap().as_ref(), b"ab");
    }

    #[test]
    fn replace_keeps_mode_and_leaves_unmatched_files() {
        let t = tmp("replace");
        let f = t.0.join("f.txt");
        std::fs::write(&f, b"a-b-a").unwrap();
        std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
        let files = Files::new(&t.0, true).unwrap();
        replace_in(&files, "f.txt", b"a", b"xyz").unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"xyz-b-xyz");
        assert_eq!(std::fs::metadata(&f).unwrap().mode() & 0o7777, 0o640);
        let ino = std::fs::metadata(&f).unwrap().ino();
        replace_in(&files, "f.txt", b"nothing", b"x").unwrap();
        assert_eq!(std::fs::metadata(&f).unwrap().ino(), ino);
        std::os::unix::fs::symlink("f.txt", t.0.join("link")).unwrap();
        assert!(matches!(replace_in(&files, "link", b"b", b"c"), Err(FileError::BadPath { .. })));
        assert!(matches!(replace_in(&files, "missing", b"b", b"c"), Err(FileError::NotFound { .. })));
        assert!(matches!(replace_in(&files, "../x", b"b", b"c"), Err(FileError::Outside { .. })));
    }
}
