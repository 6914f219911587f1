//! The host as an image (`protocol/compat/contree.md` §Images): one image,
//! the live filesystem, tagged `local`, with a stable UUID; the inspect
//! routes read it through `tether-files` (the `--files-root` confinement of
//! the native file routes). Other images, tags and imports are refused.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tether_files::{Files, Kind, Source};
use tokio_util::io::ReaderStream;

use super::error::Refusal;
use crate::AppState;
use crate::compat::fileinfo::Names;

/// The host image's tag.
pub(super) const TAG: &str = "local";

/// Most entries one listing answers (more is a 422, never a short list).
const MAX_LISTED: usize = 100_000;

/// Largest tag request (`{"tag": T}`); more is 413.
const MAX_TAG_BODY: usize = 64 << 10;

/// A UUID (version 8: vendor-defined) from the first 16 bytes of
/// SHA-256(`what`).
pub(super) fn uuid_of(what: &[u8]) -> String {
    let d = Sha256::digest(what);
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    uuid_string(b)
}

/// `b` as a UUID string, its version set to 8 and its variant to RFC 9562's.
pub(super) fn uuid_string(mut b: [u8; 16]) -> String {
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// `s` as a canonical (lower-case, hyphenated) UUID, if it is one.
pub(super) fn parse_uuid(s: &str) -> Option<String> {
    let hex: String = s.chars().filter(|&c| c != '-').collect();
    let shaped = s.len() == 36 && [8, 13, 18, 23].iter().all(|&i| s.as_bytes()[i] == b'-');
    let plain = s.len() == 32;
    if !(shaped || plain) || hex.len() != 32 || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let h = hex.to_ascii_lowercase();
    Some(format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..]))
}

/// The host image's UUID: derived from the daemon's sandbox id
/// (`--sandbox-id`), else from the tag alone, so it is the same for every
/// daemon started without one (and across restarts either way).
pub(super) fn host_uuid(st: &AppState) -> String {
    let id = st.cfg.sandbox_id.as_deref().unwrap_or("");
    uuid_of(format!("tether contree image {TAG} {id}").as_bytes())
}

/// The host image as the SDK's `ContreeImageModel`.
fn host_json(st: &AppState) -> Value {
    json!({ "uuid": host_uuid(st), "tag": TAG })
}

/// Checks that `image` (a path's UUID) is the host; else the refusal.
pub(super) fn check_uuid(st: &AppState, image: &str) -> Result<(), Refusal> {
    let host = host_uuid(st);
    match parse_uuid(image) {
        Some(u) if u == host => Ok(()),
        Some(u) => Err(Refusal::not_found(format!(
            "image {u} not found: this host serves one image, its live filesystem ({host}, tag \
             {TAG:?}); an older or branched image state needs a copy-on-write backend \
             (protocol/compat/contree.md)"
        ))),
        None => Err(Refusal::invalid(format!("image {image:?} is not a UUID"))),
    }
}

/// Checks a spawn's `image` (`<uuid>` or `tag:<tag>`).
pub(super) fn check_ref(st: &AppState, image: &str) -> Result<(), Refusal> {
    match image.strip_prefix("tag:") {
        Some(tag) => check_tag(tag),
        None => check_uuid(st, image),
    }
}

fn check_tag(tag: &str) -> Result<(), Refusal> {
    if tag == TAG {
        return Ok(());
    }
    Err(Refusal::not_found(format!(
        "image tag {tag:?} not found: this host serves one image, its live filesystem, tagged {TAG:?} \
         (importing or tagging other images needs a container backend)"
    )))
}

/// `GET /v1/inspect/?tag=T`.
pub(super) async fn by_tag(State(st): State<Arc<AppState>>, uri: Uri) -> Response {
    let tag = match query(&uri) {
        Ok(mut q) => q.remove("tag").unwrap_or_default(),
        Err(e) => return e.into_response(),
    };
    match check_tag(&tag) {
        Ok(()) => Json(host_json(&st)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `GET /v1/inspect/{uuid}/`.
pub(super) async fn by_uuid(State(st): State<Arc<AppState>>, Path(image): Path<String>) -> Response {
    match check_uuid(&st, &image) {
        Ok(()) => Json(host_json(&st)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// A request's query parameters, or the refusal.
fn query(uri: &Uri) -> Result<BTreeMap<String, String>, Refusal> {
    Query::try_from_uri(uri).map(|q| q.0).map_err(|e| Refusal::invalid(e.body_text()))
}

/// The `path` asked for, or the refusal.
fn path_of(uri: &Uri) -> Result<String, Refusal> {
    match query(uri)?.remove("path") {
        Some(p) if !p.is_empty() => Ok(p),
        _ => Err(Refusal::invalid("missing query parameter `path`")),
    }
}

fn files_of(st: &AppState) -> Result<Arc<Files>, Refusal> {
    st.files.clone().ok_or_else(|| Refusal::internal("the daemon has no usable files root"))
}

/// Runs file-layer work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Refusal> + Send + 'static,
) -> Result<T, Refusal> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Refusal::internal(e.to_string()))?
}

/// `GET /v1/inspect/{uuid}/list?path=P`: `{"files": [FileItemModel]}`.
pub(super) async fn list(State(st): State<Arc<AppState>>, Path(image): Path<String>, uri: Uri) -> Response {
    let r = async {
        check_uuid(&st, &image)?;
        let path = path_of(&uri)?;
        let files = files_of(&st)?;
        let items = blocking(move || {
            let top = files.stat(&path)?;
            let base = files.absolute(&path);
            if top.kind != Kind::Dir && !(top.kind == Kind::Symlink && base.is_dir()) {
                return Err(Refusal::invalid(format!("{path} is not a directory")));
            }
            let entries = files.list(&path)?;
            if entries.len() > MAX_LISTED {
                return Err(Refusal::invalid(format!("{path} has more than {MAX_LISTED} entries")));
            }
            // Owners and link counts come from the file layer's own
            // lookup (no second one by path, which could follow a
            // component swapped meanwhile for a symlink out of the root).
            let names = Names::load();
            let mut out = Vec::with_capacity(entries.len());
            for e in entries {
                out.push(json!({
                    "size": e.size,
                    "path": e.name,
                    "uid": e.uid,
                    "gid": e.gid,
                    "mode": e.mode,
                    "mtime": e.mtime_ms.div_euclid(1000),
                    "nlink": e.nlink,
                    "symlink_to": e.target.clone().unwrap_or_default(),
                    "is_dir": e.kind == Kind::Dir,
                    "is_regular": e.kind == Kind::File,
                    "is_socket": e.kind == Kind::Socket,
                    "is_fifo": e.kind == Kind::Fifo,
                    "is_symlink": e.kind == Kind::Symlink,
                    "owner": names.users.name(e.uid),
                    "group": names.groups.name(e.gid),
                }));
            }
            Ok(out)
        })
        .await?;
        Ok::<_, Refusal>(Json(json!({ "files": items })).into_response())
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /v1/inspect/{uuid}/download?path=P`: the file's bytes, streamed.
pub(super) async fn download(
    State(st): State<Arc<AppState>>,
    Path(image): Path<String>,
    uri: Uri,
) -> Response {
    let r = async {
        check_uuid(&st, &image)?;
        let path = path_of(&uri)?;
        let files = files_of(&st)?;
        let p2 = path.clone();
        let opened = blocking(move || Ok(files.open_read(&p2, false)?)).await?;
        if opened.stat.kind == Kind::Dir {
            return Err(Refusal::invalid(format!("{path} is a directory")));
        }
        if opened.source != Source::Regular {
            return Err(Refusal::invalid(format!("{path} is not a regular file")));
        }
        let (file, len) = (opened.file, opened.stat.size);
        let body =
            Body::from_stream(ReaderStream::with_capacity(tokio::fs::File::from_std(file), 256 * 1024));
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
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /v1/images`: the one image (on the first page).
pub(super) async fn images(State(st): State<Arc<AppState>>, uri: Uri) -> Response {
    let q = match query(&uri) {
        Ok(q) => q,
        Err(e) => return e.into_response(),
    };
    let number = |k: &str, default: u64| match q.get(k) {
        None => Ok(default),
        Some(v) => v.parse::<u64>().map_err(|_| Refusal::invalid(format!("{k} {v:?} is not a count"))),
    };
    let (offset, limit) = match (number("offset", 0), number("limit", 100)) {
        (Ok(o), Ok(l)) => (o, l),
        (Err(e), _) | (_, Err(e)) => return e.into_response(),
    };
    let list = if offset == 0 && limit > 0 { vec![host_json(&st)] } else { Vec::new() };
    Json(json!({ "images": list })).into_response()
}

/// `POST /v1/images/import`: refused (no registry, no container backend).
pub(super) async fn import() -> Response {
    Refusal::new(
        501,
        format!(
            "importing an image is not supported: this host serves one image, its live filesystem \
             (tag {TAG:?}) (protocol/compat/contree.md)"
        ),
    )
    .into_response()
}

/// `PATCH /v1/images/{uuid}/tag` with `{"tag": T}`: only `local` on the
/// host (a no-op); another tag would pin a state the live host cannot keep.
pub(super) async fn tag(State(st): State<Arc<AppState>>, Path(image): Path<String>, body: Body) -> Response {
    let r = async {
        check_uuid(&st, &image)?;
        // The dialect has no body limit of its own: this route's is small.
        let body = super::blobs::read_capped(body, MAX_TAG_BODY).await?;
        let v: Value = serde_json::from_slice(&body).map_err(Refusal::bad_body)?;
        let Some(tag) = v.get("tag").and_then(Value::as_str) else {
            return Err(Refusal::invalid("the body has no string `tag`"));
        };
        if tag != TAG {
            return Err(Refusal::invalid(format!(
                "cannot tag the host as {tag:?}: a tag names a fixed image state, and this host is one live \
                 filesystem (tag {TAG:?}); it needs a copy-on-write backend (protocol/compat/contree.md)"
            )));
        }
        Ok::<_, Refusal>(Json(host_json(&st)).into_response())
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

/// `DELETE /v1/images/{uuid}/tag`: refused (the host keeps `local`).
pub(super) async fn untag(State(st): State<Arc<AppState>>, Path(image): Path<String>) -> Response {
    match check_uuid(&st, &image) {
        Ok(()) => Refusal::invalid(format!("the host image's tag {TAG:?} cannot be removed")).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `GET /v1/whoami`: the SDK's `WhoAmI` (no expiry, no limits it checks).
pub(super) async fn whoami(State(st): State<Arc<AppState>>) -> Response {
    let token_uuid = uuid_of(format!("tether contree token {}", host_uuid(&st)).as_bytes());
    Json(json!({
        "token_uuid": token_uuid,
        "token_expiration": null,
        "permissions": {},
        "limits": {},
        "operations_stat": {},
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_canonical() {
        let u = uuid_of(b"x");
        assert_eq!(parse_uuid(&u).as_deref(), Some(u.as_str()));
        assert_eq!(u.as_bytes()[14], b'8');
        assert_eq!(parse_uuid(&u.to_uppercase()).as_deref(), Some(u.as_str()));
        assert_eq!(parse_uuid(&u.replace('-', "")).as_deref(), Some(u.as_str()));
        for bad in ["", "local", "0123", &u[1..], &format!("{}x", &u[..35])] {
            assert_eq!(parse_uuid(bad), None, "{bad}");
        }
    }
}
