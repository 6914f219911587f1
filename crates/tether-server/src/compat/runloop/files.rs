//! Files (`protocol/compat/runloop.md` §8), on the native file routes'
//! `tether-files` (so `--files-root` confines them the same way): a
//! relative path is taken from the home directory (the files root when the
//! daemon has one). Reads and downloads stream; writes and uploads are
//! atomic (a temporary file renamed into place) with parents made.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use tether_files::{FileError, Files, Kind, Source};
use tokio_util::io::ReaderStream;

use super::{Refusal, check_devbox, json_body};
use crate::compat::atomic::AtomicWrite;
use crate::{AppState, Error};

/// Largest `write_file_contents` body (the text travels inside JSON;
/// larger files go through `upload_file`, which streams).
pub(super) const MAX_CONTENTS: usize = 64 << 20;

/// Longest `path` part of an upload.
const MAX_PATH_PART: usize = 4096;

/// `{devbox_id}` in the path.
#[derive(Debug, Deserialize)]
pub(super) struct DevboxPath {
    devbox_id: String,
}

/// `read_file_contents`' body.
#[derive(Debug, Deserialize)]
struct ReadContents {
    file_path: String,
}

/// `write_file_contents`' body.
#[derive(Debug, Deserialize)]
struct WriteContents {
    file_path: String,
    contents: String,
}

/// `download_file`'s body.
#[derive(Debug, Deserialize)]
struct Download {
    path: String,
}

/// `POST /read_file_contents`: the file as text (`text/plain`).
pub(super) async fn read_contents(
    State(st): State<Arc<AppState>>,
    Path(p): Path<DevboxPath>,
    body: Bytes,
) -> Response {
    let r = async {
        check_devbox(&st, &p.devbox_id)?;
        let req: ReadContents = json_body(&body)?;
        read(&st, &req.file_path, "text/plain; charset=utf-8").await
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

/// `POST /download_file`: the file's bytes.
pub(super) async fn download(
    State(st): State<Arc<AppState>>,
    Path(p): Path<DevboxPath>,
    body: Bytes,
) -> Response {
    let r = async {
        check_devbox(&st, &p.devbox_id)?;
        let req: Download = json_body(&body)?;
        read(&st, &req.path, "application/octet-stream").await
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

/// `POST /write_file_contents`: the text as the whole file; the
/// `DevboxExecutionDetailView` of a write that succeeded.
pub(super) async fn write_contents(
    State(st): State<Arc<AppState>>,
    Path(p): Path<DevboxPath>,
    body: Bytes,
) -> Response {
    let r = async {
        check_devbox(&st, &p.devbox_id)?;
        let req: WriteContents = json_body(&body)?;
        let files = files(&st)?;
        let dest = path(&files, &req.file_path)?;
        let mut sink = AtomicWrite::open(&files, &dest).await?;
        sink.write(req.contents.as_bytes()).await?;
        sink.commit().await?;
        Ok::<_, Refusal>(
            axum::Json(json!({ "devbox_id": p.devbox_id, "exit_status": 0, "stdout": "", "stderr": "" }))
                .into_response(),
        )
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

/// `POST /upload_file`: multipart, a `path` part then the `file` part.
pub(super) async fn upload(
    State(st): State<Arc<AppState>>,
    Path(p): Path<DevboxPath>,
    req: Request,
) -> Response {
    // Every refusal reads and drops what is left of the body first: a
    // client still sending would get a reset instead of the answer.
    let files = match check_devbox(&st, &p.devbox_id).and_then(|()| files(&st)) {
        Ok(files) => files,
        Err(refused) => {
            crate::files::drain(&mut req.into_body().into_data_stream()).await;
            return refused.into_response();
        }
    };
    let mut form = match Multipart::from_request(req, &st).await {
        Ok(form) => form,
        Err(e) => {
            return Refusal::bad_request(format!("upload_file needs a multipart body: {}", e.body_text()))
                .into_response();
        }
    };
    match write_form(&files, &mut form).await {
        Ok(()) => axum::Json(json!({})).into_response(),
        Err(refused) => {
            crate::files::drain_form(&mut form).await;
            refused.into_response()
        }
    }
}

/// Writes the form's `file` part to the destination its `path` part (which
/// comes first) names.
async fn write_form(files: &Arc<Files>, form: &mut Multipart) -> Result<(), Refusal> {
    let mut dest = None;
    let mut done = false;
    while let Some(mut field) = form.next_field().await.map_err(multipart_error)? {
        match field.name() {
            Some("path") => {
                let mut raw = Vec::new();
                while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
                    if raw.len() + chunk.len() > MAX_PATH_PART {
                        return Err(Refusal::bad_request(format!(
                            "the `path` part is longer than {MAX_PATH_PART} bytes"
                        )));
                    }
                    raw.extend_from_slice(&chunk);
                }
                let text = String::from_utf8(raw)
                    .map_err(|_| Refusal::bad_request("the `path` part is not UTF-8"))?;
                dest = Some(path(files, &text)?);
            }
            Some("file") => {
                let Some(dest) = dest.as_deref() else {
                    return Err(Refusal::bad_request("the `path` part must come before the `file` part"));
                };
                if done {
                    return Err(Refusal::bad_request("one `file` part per upload"));
                }
                let mut sink = AtomicWrite::open(files, dest).await?;
                while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
                    sink.write(&chunk).await?;
                }
                sink.commit().await?;
                done = true;
            }
            _ => {}
        }
    }
    if !done {
        return Err(Refusal::bad_request("upload_file needs a `file` part"));
    }
    Ok(())
}

/// A regular file's bytes, streamed.
async fn read(st: &AppState, path_: &str, content_type: &'static str) -> Result<Response, Refusal> {
    let files = files(st)?;
    let p = path(&files, path_)?;
    let f = files.clone();
    let opened = tokio::task::spawn_blocking(move || f.open_read(&p, false))
        .await
        .map_err(|e| Refusal::from(Error::files("internal", 500, e.to_string())))?
        .map_err(file_error)?;
    if opened.stat.kind == Kind::Dir {
        return Err(Refusal::bad_request(format!("{path_} is a directory")));
    }
    if opened.source != Source::Regular {
        return Err(Refusal::bad_request(format!("{path_} is not a regular file")));
    }
    let len = opened.stat.size;
    let body =
        Body::from_stream(ReaderStream::with_capacity(tokio::fs::File::from_std(opened.file), 256 * 1024));
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, content_type.to_owned()), (header::CONTENT_LENGTH, len.to_string())],
        body,
    )
        .into_response())
}

fn files(st: &AppState) -> Result<Arc<Files>, Refusal> {
    st.files
        .clone()
        .ok_or_else(|| Refusal::from(Error::files("internal", 500, "the daemon has no usable files root")))
}

/// A client's path for `tether-files`: a relative one from the home
/// directory when the daemon is not confined to a root.
fn path(files: &Files, p: &str) -> Result<String, Refusal> {
    if p.is_empty() {
        return Err(Refusal::bad_request("the path is empty"));
    }
    if p.starts_with('/') || files.is_confined() {
        return Ok(p.to_owned());
    }
    let rest = p.strip_prefix("~/").or_else(|| (p == "~").then_some("")).unwrap_or(p);
    match std::env::var("HOME") {
        Ok(home) if home.starts_with('/') => Ok(format!("{}/{rest}", home.trim_end_matches('/'))),
        _ => Ok(rest.to_owned()),
    }
}

fn file_error(e: FileError) -> Refusal {
    Error::from(e).into()
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> Refusal {
    Refusal::bad_request(format!("the multipart body: {}", e.body_text()))
}
