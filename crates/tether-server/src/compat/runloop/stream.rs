//! The output streams (`protocol/compat/runloop.md` §7): `GET
//! .../stream_stdout_updates` and `.../stream_stderr_updates`, server-sent
//! events from `?offset=N` (a raw byte position of that stream; none: 0).
//!
//! - Each event is `data: {"output": text, "offset": end}` with no event
//!   name and no `id:`: `output` is the next bytes as text, never split
//!   inside a character, and `offset` the raw position just past them, the
//!   cursor the SDK sends back as `?offset=` when it reconnects, so a
//!   resumed stream neither repeats nor skips a byte.
//! - The response ends when the command has ended and all its output of
//!   that stream is sent (the SDK's end of stream is the end of the body).
//! - Silence is broken by a comment every [`HEARTBEAT`].
//! - An offset the ring no longer holds is `event: error` with code 410;
//!   the daemon stopping or restarting is `event: error` with code 408,
//!   which the SDK answers by reconnecting from its cursor.
//!
//! Each response is one pacing attachment: a client reading slowly holds
//! the command back rather than losing bytes.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use tether_exec::{Event, Stream, Subscription};
use tokio_util::sync::CancellationToken;
use tokio_util::task::task_tracker::TaskTrackerToken;

use super::Refusal;
use super::exec::{ExecutionPath, execution};
use crate::AppState;
use crate::compat::utf8::decode;

/// Silence after which a comment goes out (the SDK reads for 30 s by
/// default before it reconnects).
const HEARTBEAT: Duration = Duration::from_secs(10);

/// Raw bytes per event at most.
const CHUNK: usize = 64 * 1024;

/// `?offset=`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct OffsetQuery {
    #[serde(default)]
    offset: Option<String>,
}

/// `GET .../stream_stdout_updates`.
pub(super) async fn stdout(
    State(st): State<Arc<AppState>>,
    Path(p): Path<ExecutionPath>,
    Query(q): Query<OffsetQuery>,
) -> Response {
    respond(&st, &p, &q, Stream::Stdout).unwrap_or_else(IntoResponse::into_response)
}

/// `GET .../stream_stderr_updates`.
pub(super) async fn stderr(
    State(st): State<Arc<AppState>>,
    Path(p): Path<ExecutionPath>,
    Query(q): Query<OffsetQuery>,
) -> Response {
    respond(&st, &p, &q, Stream::Stderr).unwrap_or_else(IntoResponse::into_response)
}

fn respond(st: &AppState, p: &ExecutionPath, q: &OffsetQuery, stream: Stream) -> Result<Response, Refusal> {
    let h = execution(st, p)?;
    let from = match q.offset.as_deref().map(str::trim) {
        None | Some("") => 0,
        Some(s) => s
            .parse::<u64>()
            .map_err(|_| Refusal::bad_request(format!("offset {s:?}: a byte position, 0 or more")))?,
    };
    let i = usize::from(stream == Stream::Stderr);
    // The other stream from its end: its bytes are skipped anyway.
    let mut at = h.info().offsets.map(|(_, end)| end);
    at[i] = from;
    let sub = h.attach_paced(at, true)?;
    let feed = Feed {
        stream,
        sub: Some(sub),
        at: from,
        pending: Vec::new(),
        shutdown: st.shutdown.clone(),
        _conn: st.conns.token(),
    };
    let events = futures_util::stream::unfold(feed, |mut f| async move {
        f.next().await.map(|ev| (Ok::<_, Infallible>(ev), f))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(HEARTBEAT).text("keepalive")).into_response())
}

/// One response's state; dropping it (the client went away) detaches.
struct Feed {
    stream: Stream,
    /// `None` once the last event went out.
    sub: Option<Subscription>,
    /// The raw offset of `pending[0]` (or of the next byte).
    at: u64,
    /// An incomplete character held back for the next chunk.
    pending: Vec<u8>,
    shutdown: CancellationToken,
    /// Keeps graceful shutdown waiting until the response has ended.
    _conn: TaskTrackerToken,
}

impl Feed {
    /// The next event; `None` ends the response.
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            let sub = self.sub.as_mut()?;
            let ev = tokio::select! {
                biased;
                () = self.shutdown.cancelled() => {
                    self.sub = None;
                    return Some(error(408, "the daemon is restarting or stopping; reconnect from your offset"));
                }
                ev = sub.next(CHUNK) => ev,
            };
            match ev {
                Some(Event::Output { stream, offset, data }) if stream == self.stream => {
                    if offset != self.at + self.pending.len() as u64 {
                        // Not for an in-order subscription; keep offsets true.
                        self.pending.clear();
                        self.at = offset;
                    }
                    if let Some(ev) = self.chunk(&data, false) {
                        return Some(ev);
                    }
                }
                Some(Event::Gap { stream, requested, first_held }) if stream == self.stream => {
                    self.sub = None;
                    return Some(error(
                        410,
                        &format!(
                            "bytes {requested}..{first_held} of {} are no longer held (the ring keeps the last {} MiB)",
                            stream.name(),
                            super::exec::RING_BYTES >> 20
                        ),
                    ));
                }
                Some(Event::Exit(_)) | None => {
                    self.sub = None;
                    return self.chunk(&[], true);
                }
                Some(_) => {}
            }
        }
    }

    /// The event for the next bytes (none while a character is incomplete).
    fn chunk(&mut self, data: &[u8], at_end: bool) -> Option<SseEvent> {
        let mut bytes = std::mem::take(&mut self.pending);
        bytes.extend_from_slice(data);
        let (text, used) = decode(&bytes, at_end);
        self.pending = bytes[used..].to_vec();
        self.at += used as u64;
        (!text.is_empty())
            .then(|| SseEvent::default().data(json!({ "output": text, "offset": self.at }).to_string()))
    }
}

/// `event: error`: the SDK raises the status's error (408: reconnects).
fn error(code: u16, message: &str) -> SseEvent {
    SseEvent::default().event("error").data(json!({ "code": code, "message": message }).to_string())
}
