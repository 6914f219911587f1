//! Watching a directory (`protocol/compat/e2b.md` §9.7, §9.8): inotify on
//! the directory (and, recursive, on every directory below it, new ones as
//! they appear), its events in envd's terms: `name` relative to the watched
//! directory, `EVENT_TYPE_CREATE`/`WRITE`/`REMOVE`/`RENAME`/`CHMOD`.
//! `WatchDir` streams them; the sync SDK's watchers (`CreateWatcher`,
//! `GetWatcherEvents`, `RemoveWatcher`) take what the kernel queued since
//! the last poll.

use std::collections::HashMap;
use std::convert::Infallible;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
use serde_json::{Value, json};
use tether_files::Kind;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use super::connect::{Code, RpcError, STREAM_CONTENT_TYPE, end_stream, envelope, unary_ok};
use super::process::expand_home;
use crate::AppState;

/// Directories watched at most per watch (one inotify watch each).
const MAX_DIRS: usize = 8192;

/// Watchers (sync SDK) held at once.
const MAX_WATCHERS: usize = 64;

/// A watcher nobody polled for this long is dropped (an SDK that died
/// never calls `stop()`).
const WATCHER_IDLE: Duration = Duration::from_secs(600);

/// The sync SDK's watchers, by id.
#[derive(Default)]
pub(crate) struct Watchers(Mutex<HashMap<String, Arc<tokio::sync::Mutex<Held>>>>);

/// One watcher and when it was last polled.
pub(crate) struct Held {
    watch: Watch,
    polled: Instant,
}

impl Watchers {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<Held>>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One inotify instance over a tree.
pub(crate) struct Watch {
    fd: AsyncFd<OwnedFd>,
    /// Each watch descriptor's directory, relative to the watched one.
    dirs: HashMap<i32, PathBuf>,
    base: PathBuf,
    recursive: bool,
}

const MASK: WatchFlags = WatchFlags::CREATE
    .union(WatchFlags::MODIFY)
    .union(WatchFlags::DELETE)
    .union(WatchFlags::MOVED_FROM)
    .union(WatchFlags::MOVED_TO)
    .union(WatchFlags::ATTRIB);

impl Watch {
    /// Watches `base` (absolute, a directory), and below it if `recursive`.
    fn new(base: PathBuf, recursive: bool) -> std::io::Result<Watch> {
        let fd = inotify::init(CreateFlags::NONBLOCK | CreateFlags::CLOEXEC)?;
        // Deprecated for inner types whose fd could change or close while
        // registered; an `OwnedFd` stays open and the same until the
        // `AsyncFd` drops it (as in `files.rs`).
        #[allow(deprecated)]
        let fd = AsyncFd::new(fd)?;
        let mut w = Watch { fd, dirs: HashMap::new(), base, recursive };
        w.add(PathBuf::new(), None)?;
        Ok(w)
    }

    /// Watches `rel` (and its subdirectories when recursive); what is
    /// already inside them goes to `found` (a directory that appeared while
    /// unwatched may have been filled before its watch was in place).
    fn add(
        &mut self,
        rel: PathBuf,
        mut found: Option<&mut Vec<(String, &'static str)>>,
    ) -> std::io::Result<()> {
        let mut todo = vec![rel];
        while let Some(rel) = todo.pop() {
            if self.dirs.len() >= MAX_DIRS {
                return Err(std::io::Error::other(format!("more than {MAX_DIRS} directories to watch")));
            }
            let abs = self.base.join(&rel);
            let wd = inotify::add_watch(
                self.fd.get_ref(),
                &abs,
                MASK | WatchFlags::ONLYDIR | WatchFlags::DONT_FOLLOW,
            )?;
            self.dirs.insert(wd, rel.clone());
            if self.recursive
                && let Ok(entries) = std::fs::read_dir(&abs)
            {
                for e in entries.flatten() {
                    let child = rel.join(e.file_name());
                    if let Some(found) = found.as_deref_mut()
                        && !is_temp(&e.file_name().to_string_lossy())
                    {
                        found.push((child.to_string_lossy().into_owned(), "EVENT_TYPE_CREATE"));
                    }
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        todo.push(child);
                    }
                }
            }
        }
        Ok(())
    }

    /// What the kernel has queued now (without waiting); an overflow of
    /// its queue is `data_loss`.
    fn drain(&mut self) -> Result<Vec<(String, &'static str)>, RpcError> {
        let mut out = Vec::new();
        let mut new_dirs = Vec::new();
        let mut buf = [MaybeUninit::<u8>::uninit(); 16 * 1024];
        let mut reader = inotify::Reader::new(self.fd.get_ref(), &mut buf);
        loop {
            let ev = match reader.next() {
                Ok(ev) => ev,
                Err(rustix::io::Errno::AGAIN) => break,
                Err(e) => return Err(RpcError::new(Code::Internal, format!("reading the watch: {e}"))),
            };
            let flags = ev.events();
            if flags.contains(ReadFlags::QUEUE_OVERFLOW) {
                return Err(RpcError::new(
                    Code::DataLoss,
                    "the kernel's event queue overflowed: events were lost",
                ));
            }
            let (Some(dir), Some(name)) = (self.dirs.get(&ev.wd()), ev.file_name()) else { continue };
            let name = name.to_string_lossy();
            // tether's own atomic writes: the unnamed inode and the
            // temporary name it may be linked under before the rename.
            if is_temp(&name) {
                continue;
            }
            let rel = dir.join(&*name);
            let kind = if flags.intersects(ReadFlags::CREATE | ReadFlags::MOVED_TO) {
                if self.recursive && flags.contains(ReadFlags::ISDIR) {
                    new_dirs.push(rel.clone());
                }
                "EVENT_TYPE_CREATE"
            } else if flags.contains(ReadFlags::MODIFY) {
                "EVENT_TYPE_WRITE"
            } else if flags.contains(ReadFlags::DELETE) {
                "EVENT_TYPE_REMOVE"
            } else if flags.contains(ReadFlags::MOVED_FROM) {
                "EVENT_TYPE_RENAME"
            } else if flags.contains(ReadFlags::ATTRIB) {
                "EVENT_TYPE_CHMOD"
            } else {
                continue;
            };
            out.push((rel.to_string_lossy().into_owned(), kind));
        }
        for rel in new_dirs {
            // Gone again, or past the limit: its events are not seen.
            let _ = self.add(rel, Some(&mut out));
        }
        Ok(out)
    }

    /// Waits for events, then takes them.
    async fn next(&mut self) -> Result<Vec<(String, &'static str)>, RpcError> {
        loop {
            let mut ready = self
                .fd
                .readable()
                .await
                .map_err(|e| RpcError::new(Code::Internal, format!("waiting on the watch: {e}")))?;
            ready.clear_ready();
            let events = self.drain()?;
            if !events.is_empty() {
                return Ok(events);
            }
        }
    }
}

/// A name that is one of tether's atomic writes in flight: an `O_TMPFILE`
/// inode (`#<inode>`) or the fallback's `.NAME.tether-<16 hex>`.
fn is_temp(name: &str) -> bool {
    let inode =
        name.strip_prefix('#').is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    let fallback = name.starts_with('.')
        && name
            .rsplit_once(".tether-")
            .is_some_and(|(_, h)| h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit()));
    inode || fallback
}

/// The watched directory: confined like every file path, and a directory.
fn open(st: &AppState, req: &Value) -> Result<(Watch, bool), RpcError> {
    let path = expand_home(req.get("path").and_then(Value::as_str).unwrap_or(""));
    if path.is_empty() {
        return Err(RpcError::new(Code::InvalidArgument, "path is empty"));
    }
    let files = st
        .files
        .clone()
        .ok_or_else(|| RpcError::new(Code::Internal, "the daemon has no usable files root"))?;
    let stat = files.stat(&path).map_err(|e| match e {
        tether_files::FileError::NotFound { .. } => RpcError::new(Code::NotFound, e.to_string()),
        tether_files::FileError::Outside { .. } | tether_files::FileError::PermissionDenied { .. } => {
            RpcError::new(Code::PermissionDenied, e.to_string())
        }
        e => RpcError::new(Code::InvalidArgument, e.to_string()),
    })?;
    if stat.kind != Kind::Dir {
        return Err(RpcError::new(Code::InvalidArgument, format!("{path} is not a directory")));
    }
    let recursive = req.get("recursive").and_then(Value::as_bool).unwrap_or(false);
    let include = req.get("includeEntry").and_then(Value::as_bool).unwrap_or(false);
    let watch = Watch::new(files.absolute(&path), recursive)
        .map_err(|e| RpcError::new(Code::InvalidArgument, format!("watching {path}: {e}")))?;
    Ok((watch, include))
}

/// A `FilesystemEvent` (an entry only when asked, and never for a removal
/// or a rename).
fn event(base: &Path, name: &str, kind: &str, include: bool) -> Value {
    let mut v = json!({ "name": name, "type": kind });
    if include
        && !matches!(kind, "EVENT_TYPE_REMOVE" | "EVENT_TYPE_RENAME")
        && let Ok(meta) = std::fs::symlink_metadata(base.join(name))
        && let Some(o) = v.as_object_mut()
    {
        let t = if meta.is_dir() {
            "FILE_TYPE_DIRECTORY"
        } else if meta.is_symlink() {
            "FILE_TYPE_SYMLINK"
        } else {
            "FILE_TYPE_FILE"
        };
        let entry = json!({
            "name": Path::new(name).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            "type": t,
            "path": base.join(name).to_string_lossy(),
            "size": meta.len().to_string(),
        });
        o.insert("entry".into(), entry);
    }
    v
}

/// `filesystem.Filesystem/WatchDir`: `start`, then events and keepalives,
/// until the deadline, the client going away or the daemon stopping.
pub(super) async fn watch_dir(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let r = async {
        let req = super::process::stream_request(body).await?;
        let limit = super::process::deadline(&headers)?;
        let (watch, include) = open(&st, &req)?;
        let every = super::process::keepalive_every(&headers);
        let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(8);
        st.conns.spawn(pump(tx, watch, include, every, limit, st.shutdown.clone()));
        let body = Body::from_stream(super::process::stream_body(rx));
        Ok::<_, RpcError>(
            (StatusCode::OK, [(header::CONTENT_TYPE, STREAM_CONTENT_TYPE)], body).into_response(),
        )
    };
    r.await.unwrap_or_else(super::process::stream_error)
}

async fn pump(
    tx: mpsc::Sender<Result<Bytes, Infallible>>,
    mut watch: Watch,
    include: bool,
    every: Duration,
    limit: Option<Duration>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let send = |m: Bytes| {
        let tx = tx.clone();
        async move { tx.send(Ok(m)).await.is_ok() }
    };
    if !send(envelope(&json!({"start": {}}))).await {
        return;
    }
    let deadline = limit.map(|l| tokio::time::Instant::now() + l);
    let mut keepalive = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let error = loop {
        tokio::select! {
            evs = watch.next() => match evs {
                Ok(evs) => {
                    for (name, kind) in evs {
                        if !send(envelope(&json!({"filesystem": event(&watch.base, &name, kind, include)}))).await {
                            return;
                        }
                    }
                    keepalive.reset();
                }
                Err(e) => break Some(e),
            },
            _ = keepalive.tick() => {
                if !send(envelope(&json!({"keepalive": {}}))).await {
                    return;
                }
            }
            () = super::process::at(deadline) => break Some(RpcError::new(Code::DeadlineExceeded, "the request's deadline passed")),
            () = shutdown.cancelled() => break Some(RpcError::new(Code::Unavailable, "tether is restarting or stopping: watch again")),
            () = tx.closed() => return,
        }
    };
    let _ = send(end_stream(error.as_ref())).await;
}

/// `filesystem.Filesystem/CreateWatcher`: `{watcherId}`.
pub(super) async fn create_watcher(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    let r = async {
        let req: Value = serde_json::from_slice(&body)
            .map_err(|e| RpcError::new(Code::InvalidArgument, format!("the request is not JSON: {e}")))?;
        let (watch, _) = open(&st, &req)?;
        let mut map = st.e2b_watchers.map();
        // Lazily: watchers nobody polls any more go.
        map.retain(|_, h| h.try_lock().map_or(true, |h| h.polled.elapsed() < WATCHER_IDLE));
        if map.len() >= MAX_WATCHERS {
            return Err(RpcError::new(
                Code::ResourceExhausted,
                format!("{MAX_WATCHERS} watchers are held already"),
            ));
        }
        let id = format!("w-{:016x}", rand_u64());
        map.insert(id.clone(), Arc::new(tokio::sync::Mutex::new(Held { watch, polled: Instant::now() })));
        Ok::<_, RpcError>(unary_ok(json!({ "watcherId": id })))
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

/// `filesystem.Filesystem/GetWatcherEvents`: what happened since the last
/// call.
pub(super) async fn get_watcher_events(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    let r = async {
        let held = held(&st, &body)?;
        let mut held = held.lock().await;
        held.polled = Instant::now();
        let base = held.watch.base.clone();
        let events: Vec<Value> =
            held.watch.drain()?.into_iter().map(|(name, kind)| event(&base, &name, kind, false)).collect();
        Ok::<_, RpcError>(unary_ok(json!({ "events": events })))
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

/// `filesystem.Filesystem/RemoveWatcher`.
pub(super) async fn remove_watcher(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    let r = async {
        let id = watcher_id(&body)?;
        st.e2b_watchers
            .map()
            .remove(&id)
            .ok_or_else(|| RpcError::new(Code::NotFound, format!("watcher {id} not found")))?;
        Ok::<_, RpcError>(unary_ok(json!({})))
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

fn watcher_id(body: &[u8]) -> Result<String, RpcError> {
    let req: Value = serde_json::from_slice(body)
        .map_err(|e| RpcError::new(Code::InvalidArgument, format!("the request is not JSON: {e}")))?;
    req.get("watcherId")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| RpcError::new(Code::InvalidArgument, "watcherId is missing"))
}

fn held(st: &AppState, body: &[u8]) -> Result<Arc<tokio::sync::Mutex<Held>>, RpcError> {
    let id = watcher_id(body)?;
    st.e2b_watchers
        .map()
        .get(&id)
        .cloned()
        .ok_or_else(|| RpcError::new(Code::NotFound, format!("watcher {id} not found")))
}

/// A number for watcher ids (SipHash of a counter under random keys).
fn rand_u64() -> u64 {
    use std::hash::BuildHasher;
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::collections::hash_map::RandomState::new().hash_one(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tethers_own_atomic_writes_are_not_events() {
        assert!(is_temp("#10307387"));
        assert!(is_temp(".a.txt.tether-0123456789abcdef"));
        assert!(!is_temp("#notes"));
        assert!(!is_temp("a.txt"));
        assert!(!is_temp(".hidden"));
        assert!(!is_temp(".a.tether-short"));
    }
}
