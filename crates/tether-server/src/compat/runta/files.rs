//! `GET` and `PUT /v2/runtimes/{id}/files?path=P` over `tether-files`: the
//! raw bytes out (streamed), the raw body in (streamed to a temporary file
//! put in place atomically, parents made), 204. Relative paths are taken
//! from the files root, as on every file route.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tether_files::{Files, Source};
use tokio::io::AsyncWriteExt;
use tokio_util::io::ReaderStream;

use super::{Refusal, known_runtime, query};
use crate::AppState;

/// Largest read of a file of a pseudo file system (`/proc`, `/sys`), whose
/// size is not known before it is read.
const MAX_PSEUDO: u64 = 16 << 20;

#[derive(Debug, Deserialize)]
struct PathQuery {
    #[serde(default)]
    path: Option<String>,
}

/// `GET .../files?path=P`: 200 with the bytes.
pub(super) async fn read(State(st): State<Arc<AppState>>, Path(id): Path<String>, req: Request) -> Response {
    let r = async move {
        known_runtime(&st, &id)?;
        let path = path_of(req.uri())?;
        let files = root(&st)?;
        let p2 = path.clone();
        let opened = blocking(move || files.open_read(&p2, false)).await??;
        match opened.source {
            Source::Regular => {
                let len = opened.stat.size;
                let body = Body::from_stream(ReaderStream::with_capacity(
                    tokio::fs::File::from_std(opened.file),
                    256 * 1024,
                ));
                Ok::<_, Refusal>(
                    (
                        StatusCode::OK,
                        [
                            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
                            (header::CONTENT_LENGTH, len.to_string()),
                        ],
                        body,
                    )
                        .into_response(),
                )
            }
            Source::Pseudo => {
                let p2 = path.clone();
                let data = blocking(move || tether_files::read_pseudo(&opened.file, MAX_PSEUDO, false, &p2))
                    .await??;
                Ok(([(header::CONTENT_TYPE, "application/octet-stream")], data).into_response())
            }
            Source::Special => Err(Refusal::invalid(format!("{path} is not a regular file"))),
        }
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

/// `PUT .../files?path=P` with the raw body: 204. Written atomically: a
/// body that fails half-way leaves the old file as it was.
pub(super) async fn write(State(st): State<Arc<AppState>>, Path(id): Path<String>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let mut body = body.into_data_stream();
    let r = async {
        known_runtime(&st, &id)?;
        let path = path_of(&parts.uri)?;
        if parts
            .headers
            .get(header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| !v.eq_ignore_ascii_case("identity"))
        {
            return Err(Refusal::invalid("compressed bodies are not supported by tether"));
        }
        let files = root(&st)?;
        let (f2, p2) = (files.clone(), path.clone());
        let mut upload = blocking(move || f2.create(&p2, None, true)).await??;
        let mut file = tokio::fs::File::from_std(upload.file()?);
        while let Some(chunk) = futures_util::StreamExt::next(&mut body).await {
            let chunk = chunk.map_err(|e| Refusal::invalid(format!("reading the body: {e}")))?;
            file.write_all(&chunk).await.map_err(|e| write_failed(&path, &e))?;
        }
        file.flush().await.map_err(|e| write_failed(&path, &e))?;
        drop(file);
        blocking(move || upload.commit()).await??;
        Ok(StatusCode::NO_CONTENT.into_response())
    };
    match r.await {
        Ok(done) => done,
        // What is left of the body is read and dropped first: a client
        // still sending would get a reset instead of the answer.
        Err(refused) => {
            crate::files::drain(&mut body).await;
            refused.into_response()
        }
    }
}

fn write_failed(path: &str, e: &std::io::Error) -> Refusal {
    Refusal::from(tether_files::FileError::from_io(std::io::Error::new(e.kind(), e.to_string()), path))
}

/// The `path` query parameter.
fn path_of(uri: &axum::http::Uri) -> Result<String, Refusal> {
    let q: PathQuery = query(uri)?;
    q.path.filter(|p| !p.is_empty()).ok_or_else(|| Refusal::invalid("missing query parameter `path`"))
}

/// The files root.
fn root(st: &AppState) -> Result<Arc<Files>, Refusal> {
    st.files.clone().ok_or_else(|| Refusal::new(503, "unavailable", "the daemon has no usable files root"))
}

/// Runs file-system work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Refusal> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Refusal::new(500, "internal", e.to_string()))
}
