//! Uploaded files (`protocol/compat/contree.md` §Files): content-addressed
//! blobs in memory, bounded in size and number, the least recently used
//! evicted first. A blob's UUID is derived from its SHA-256, so the same
//! content always has the same UUID. The SDK probes
//! `GET /v1/files/{sha256}` before every upload, so a blob evicted (or lost
//! with a restart) is simply sent again by the next run that needs it.
//!
//! The store is process-wide rather than a field of the server's state: it
//! is a cache the SDK refills, and keeping it here leaves the shared state
//! untouched.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::Path;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::OwnedSemaphorePermit;

use super::error::Refusal;
use super::image::uuid_string;
use crate::oneshot::BodyBudget;

/// Largest blob.
pub(super) const MAX_BLOB: usize = 64 << 20;

/// Most bytes held in all.
const MAX_TOTAL: usize = 256 << 20;

/// Most blobs held.
const MAX_COUNT: usize = 4096;

/// The store. A std mutex: held for a lookup or an insert, never across
/// I/O or an `.await`.
static STORE: LazyLock<Mutex<Store>> = LazyLock::new(Mutex::default);

/// Blobs by SHA-256 (hex), and the SHA-256 of each UUID.
#[derive(Default)]
struct Store {
    /// The blobs.
    by_sha: HashMap<String, Blob>,
    /// UUID to SHA-256.
    by_uuid: HashMap<String, String>,
    /// Sum of the blobs' sizes.
    total: usize,
    /// Use counter, for least-recently-used eviction.
    clock: u64,
}

/// One blob.
struct Blob {
    /// The content.
    data: Bytes,
    /// Its UUID.
    uuid: String,
    /// When it was last used (the store's clock).
    used: u64,
}

/// The UUID of content with this SHA-256 (raw bytes).
fn uuid_for(sha: &[u8]) -> String {
    let mut b = [0u8; 16];
    b.copy_from_slice(&sha[..16]);
    uuid_string(b)
}

fn store() -> std::sync::MutexGuard<'static, Store> {
    STORE.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Store {
    fn touch(&mut self, sha: &str) -> Option<(String, Bytes)> {
        self.clock += 1;
        let now = self.clock;
        let b = self.by_sha.get_mut(sha)?;
        b.used = now;
        Some((b.uuid.clone(), b.data.clone()))
    }

    fn insert(&mut self, sha: String, uuid: String, data: Bytes) {
        if self.touch(&sha).is_some() {
            return;
        }
        while !self.by_sha.is_empty()
            && (self.total + data.len() > MAX_TOTAL || self.by_sha.len() >= MAX_COUNT)
        {
            let Some(oldest) = self.by_sha.iter().min_by_key(|(_, b)| b.used).map(|(k, _)| k.clone()) else {
                break;
            };
            if let Some(b) = self.by_sha.remove(&oldest) {
                self.total -= b.data.len();
                self.by_uuid.remove(&b.uuid);
            }
        }
        self.clock += 1;
        self.total += data.len();
        self.by_uuid.insert(uuid.clone(), sha.clone());
        self.by_sha.insert(sha, Blob { data, uuid, used: self.clock });
    }
}

/// A blob's content by its UUID (marked used), if held.
pub(super) fn get(uuid: &str) -> Option<Bytes> {
    let mut s = store();
    let sha = s.by_uuid.get(uuid)?.clone();
    s.touch(&sha).map(|(_, data)| data)
}

/// `POST /v1/files` (raw body): `{"uuid", "sha256"}`.
pub(super) async fn upload(
    axum::Extension(budget): axum::Extension<BodyBudget>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let r = async {
        let (data, _held) = read_budgeted(&budget, &headers, body, MAX_BLOB).await?;
        let digest = Sha256::digest(&data);
        let sha: String = digest.iter().map(|x| format!("{x:02x}")).collect();
        let uuid = uuid_for(&digest);
        store().insert(sha.clone(), uuid.clone(), data);
        Ok::<_, Refusal>((axum::http::StatusCode::CREATED, Json(json!({ "uuid": uuid, "sha256": sha }))))
    };
    r.await.into_response()
}

/// `GET /v1/files/{sha256}`: `{"uuid", "sha256"}` if held, else 404 (the
/// SDK then uploads).
pub(super) async fn by_sha256(Path(sha): Path<String>) -> Response {
    let sha = sha.to_ascii_lowercase();
    if sha.len() != 64 || !sha.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Refusal::invalid(format!("{sha:?} is not a SHA-256 in hex")).into_response();
    }
    match store().touch(&sha) {
        Some((uuid, _)) => Json(json!({ "uuid": uuid, "sha256": sha })).into_response(),
        None => Refusal::not_found(format!("no file with SHA-256 {sha}")).into_response(),
    }
}

/// A request body, refused (413) past `max` bytes.
pub(super) async fn read_capped(body: Body, max: usize) -> Result<Bytes, Refusal> {
    use futures_util::StreamExt;
    let mut stream = body.into_data_stream();
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| Refusal::new(400, format!("reading the request body: {e}")))?;
        if buf.len() + chunk.len() > max {
            return Err(Refusal::new(413, format!("a request body is at most {max} bytes here")));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// A body of at most `max` bytes held under the daemon's body budget
/// (413 past `max` or past the whole budget; 429, which the SDK retries on
/// a spawn, when the budget has no room within a short wait). The bytes are charged by the
/// `Content-Length` before any is read, else chunk by chunk as they
/// arrive; the permits returned hold them until dropped (when the
/// response is ready).
pub(super) async fn read_budgeted(
    budget: &BodyBudget,
    headers: &HeaderMap,
    body: Body,
    max: usize,
) -> Result<(Bytes, Vec<OwnedSemaphorePermit>), Refusal> {
    use futures_util::StreamExt;
    let busy = || {
        Refusal::new(
            429,
            format!(
                "the daemon's budget for request bodies ({} bytes) is in use: try again shortly",
                budget.total()
            ),
        )
    };
    let too_big = || Refusal::new(413, format!("a request body is at most {max} bytes here"));
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let mut held = Vec::new();
    match length {
        Some(n) if n > max => return Err(too_big()),
        // It would never fit: not worth the SDK's retries.
        Some(n) if n > budget.total() => {
            return Err(Refusal::new(
                413,
                format!(
                    "a request body of {n} bytes is larger than the daemon's body budget ({}): see \
                     --max-body-memory",
                    budget.total()
                ),
            ));
        }
        Some(n) => held.push(budget.take(n).await.ok_or_else(busy)?),
        None => {}
    }
    let mut stream = body.into_data_stream();
    let mut buf = bytes::BytesMut::with_capacity(length.unwrap_or(0));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| Refusal::new(400, format!("reading the request body: {e}")))?;
        if buf.len() + chunk.len() > max {
            return Err(too_big());
        }
        if length.is_none() {
            held.push(budget.take(chunk.len()).await.ok_or_else(busy)?);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok((buf.freeze(), held))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eviction_keeps_the_store_bounded_and_the_index_whole() {
        let mut s = Store::default();
        let big = Bytes::from(vec![0u8; MAX_TOTAL / 2 + 1]);
        s.insert("a".into(), "ua".into(), big.clone());
        s.insert("b".into(), "ub".into(), big.clone());
        assert!(s.total <= MAX_TOTAL);
        assert_eq!(s.by_sha.len(), 1);
        assert!(s.by_uuid.contains_key("ub") && !s.by_uuid.contains_key("ua"));
        s.insert("b".into(), "ub".into(), big);
        assert_eq!(s.by_sha.len(), 1);
    }
}
