//! The LangSmith sandbox client's one-way transport, server-sent events
//! (`protocol/compat/langsmith.md` §6): `POST /execute/stream/start` runs a
//! command (idempotent by the client's `command_id`, like the WebSocket's
//! `execute`) and `POST /execute/stream/resume` continues one from
//! per-stream byte offsets. Each response is one paced attachment:
//!
//! - `started` `{command_id, pid}` first, on resumes too;
//! - `stdout`/`stderr` `{offset, data}`: the raw bytes in standard base64 at
//!   their raw offset (the client counts raw bytes, so unlike the WebSocket
//!   nothing depends on how the bytes decode);
//! - at the end `stream_end` `{stream, offset}` per stream at its final
//!   offset, then `exit` `{exit_code}` or `error` `CommandTimeout`;
//! - `: ping` after 15 s without an event;
//! - at daemon shutdown `error` `ServerShuttingDown`, and the response ends
//!   (the client resumes from its cursors).
//!
//! A response never needs `ack_required`: pacing holds the command back
//! while the client reads slowly, and a client that goes away drops the
//! response, which detaches (idle timeout applies). Start refusals are an
//! `error` event as the only event, as on the WebSocket; an unknown command
//! on resume is a 404, which the client turns into `CommandNotFound`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};
use tether_exec::{Event, ExitInfo, Stream, Subscription};
use tokio_util::sync::CancellationToken;
use tokio_util::task::task_tracker::TaskTrackerToken;

use super::mapping::{self, Bound, Execute, FRAME_RAW_BYTES};
use super::{ErrorType, Refused, detail};
use crate::AppState;
use crate::Error;

/// Silence after which a heartbeat comment goes out. The client's read
/// timeout (60 s by default) counts from the last line it read.
const HEARTBEAT: Duration = Duration::from_secs(15);

/// `POST /execute/stream/start`.
pub(crate) async fn start(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    let mut e: Execute = match serde_json::from_slice(&body) {
        Ok(e) => e,
        Err(e) => return bad_request(&format!("the start request is not valid: {e}")),
    };
    // The one-way transport: stdin closed at spawn, no terminal, and no
    // kill on disconnect (every resume follows a disconnect).
    e.close_stdin = true;
    e.pty = false;
    e.kill_on_disconnect = false;
    respond(&st, mapping::execute(&st, e).map_err(Error::into_langsmith))
}

/// The body of `POST /execute/stream/resume`.
#[derive(Debug, Deserialize)]
struct Resume {
    /// Tether's id (from `started`) or the client's `command_id`.
    command_id: String,
    /// First stdout byte wanted.
    #[serde(default)]
    stdout_offset: i64,
    /// First stderr byte wanted.
    #[serde(default)]
    stderr_offset: i64,
}

/// `POST /execute/stream/resume`.
pub(crate) async fn resume(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    let r: Resume = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(&format!("the resume request is not valid: {e}")),
    };
    match mapping::reconnect(&st, &r.command_id, [r.stdout_offset, r.stderr_offset])
        .map_err(Error::into_langsmith)
    {
        // The client maps a 404 on resume to `CommandNotFound`.
        Err(Refused::Error(ErrorType::CommandNotFound, message)) => {
            detail(404, ErrorType::CommandNotFound.as_str(), &message)
        }
        bound => respond(&st, bound),
    }
}

/// The event stream of one attachment, or of one refusal.
fn respond(st: &AppState, bound: Result<Bound, Refused>) -> Response {
    let mut feed = Feed {
        command: String::new(),
        sub: None,
        shutdown: st.shutdown.clone(),
        queue: VecDeque::new(),
        _conn: st.conns.token(),
    };
    match bound {
        Ok(Bound { h, sub, echo }) => {
            feed.queue.push_back(event("started", json!({"command_id": echo, "pid": h.pid()})));
            feed.command = h.id().to_owned();
            feed.sub = Some(sub);
        }
        Err(Refused::Error(kind, message)) => feed.queue.push_back(error(kind, &message)),
        // Before `started` the client sends the same start again.
        Err(Refused::Restarting) => feed.queue.push_back(shutting_down()),
    }
    let events = futures_util::stream::unfold(feed, |mut f| async move {
        f.next().await.map(|ev| (Ok::<_, Infallible>(ev), f))
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(HEARTBEAT).text("ping")).into_response()
}

/// One response's state. Dropped with the response: a client that goes
/// away drops the subscription, which detaches.
struct Feed {
    /// The command's id, for log lines.
    command: String,
    /// The paced attachment; `None` once the last event is queued.
    sub: Option<Subscription>,
    /// The daemon's shutdown.
    shutdown: CancellationToken,
    /// Events decided but not yet sent.
    queue: VecDeque<SseEvent>,
    /// Keeps graceful shutdown waiting until the response has ended.
    _conn: TaskTrackerToken,
}

impl Feed {
    /// The next event; `None` ends the response.
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(ev) = self.queue.pop_front() {
                return Some(ev);
            }
            let sub = self.sub.as_mut()?;
            let ev = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => None,
                ev = sub.next(FRAME_RAW_BYTES) => Some(ev),
            };
            match ev {
                None => {
                    self.sub = None;
                    self.queue.push_back(shutting_down());
                }
                Some(Some(Event::Output { stream, offset, data })) => {
                    let data = base64::engine::general_purpose::STANDARD.encode(&data);
                    return Some(event(Stream::name(stream), json!({"offset": offset, "data": data})));
                }
                Some(Some(Event::Gap { stream, requested, first_held })) => {
                    // Only a client that was away can miss output; its next
                    // event's offset jumps, which is all the dialect can say.
                    let command = &self.command;
                    tracing::warn!(command, ?stream, requested, first_held, "compat client missed output");
                }
                Some(Some(Event::Resized(_))) => {}
                Some(Some(Event::Exit(e))) => {
                    self.sub = None;
                    self.finish(&e);
                }
                // Comes only after the exit, which already ended the
                // attachment; were it to come, the response would end
                // without a last event and the client would resume.
                Some(None) => self.sub = None,
            }
        }
    }

    /// `stream_end` for both streams at their final offsets, then the exit.
    fn finish(&mut self, e: &ExitInfo) {
        for (stream, end) in [Stream::Stdout, Stream::Stderr].into_iter().zip(e.ends) {
            self.queue.push_back(event("stream_end", json!({"stream": Stream::name(stream), "offset": end})));
        }
        let (name, fields) = mapping::ending(e);
        self.queue.push_back(event(name, fields));
    }
}

/// An event whose data is one line of JSON (serde_json escapes newlines).
fn event(name: &str, data: Value) -> SseEvent {
    SseEvent::default().event(name).data(data.to_string())
}

fn error(kind: ErrorType, message: &str) -> SseEvent {
    event("error", json!({"error_type": kind.as_str(), "error": message}))
}

fn shutting_down() -> SseEvent {
    error(ErrorType::ServerShuttingDown, "the daemon is shutting down")
}

/// A body that is not a request: the client raises `SandboxOperationError`
/// (`CommandError`) for this shape and never retries a 400.
fn bad_request(message: &str) -> Response {
    detail(400, ErrorType::CommandError.as_str(), message)
}
