//! One-shot runs over plain HTTP: `POST /v1/exec` (a command) and
//! `POST /v1/code` (a snippet for an interpreter). The request waits until
//! the command ends and gets its exit status and output in one response,
//! JSON or MessagePack. The command is a normal command meanwhile: listed,
//! attachable over the WebSocket, with its own id.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use tether_exec as exec;
use tether_proto::{self as proto, Encoding, ErrorCode, ExecResponse, Payload, RunOptions};

use crate::AppState;
use crate::Error;
use crate::compat::langsmith::ErrorType;
use crate::error::content_type;
use crate::map;

/// Output kept and returned when a request does not say.
pub(crate) const DEFAULT_MAX_OUTPUT: u64 = 16 << 20;

/// Most output a request may ask to get back.
const MAX_OUTPUT: u64 = 1 << 30;

/// Largest request body (the code, or stdin).
pub(crate) const MAX_BODY: usize = 64 << 20;

/// How long a request waits for room in the body budget before it is
/// refused (429 with `Retry-After`).
const BODY_WAIT: Duration = Duration::from_secs(2);

/// The daemon-wide budget of request-body bytes the one-shot routes
/// (`/v1/exec`, `/v1/code`, the LangSmith `execute` routes, and ConTree's
/// spawns and uploads) hold at once:
/// each of them buffers its whole body (up to [`MAX_BODY`]), so without it
/// many large requests at once hold any amount of memory. A request holds
/// its bytes until its response is ready.
#[derive(Clone)]
pub(crate) struct BodyBudget {
    /// One permit per byte.
    sem: Arc<tokio::sync::Semaphore>,
    /// The budget.
    total: usize,
}

impl BodyBudget {
    /// A budget of `total` bytes.
    pub(crate) fn new(total: usize) -> BodyBudget {
        let total = total.min(tokio::sync::Semaphore::MAX_PERMITS);
        BodyBudget { sem: Arc::new(tokio::sync::Semaphore::new(total)), total }
    }

    /// Its size in bytes.
    pub(crate) fn total(&self) -> usize {
        self.total
    }

    /// `n` bytes of it, waiting at most [`BODY_WAIT`] (for routes that
    /// charge their bodies themselves: the ConTree dialect's).
    pub(crate) async fn take(&self, n: usize) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let n = u32::try_from(n).ok()?;
        tokio::time::timeout(BODY_WAIT, self.sem.clone().acquire_many_owned(n)).await.ok()?.ok()
    }
}

/// The middleware that charges a one-shot request's body to the budget:
/// by its `Content-Length` before it is read, or chunk by chunk as it
/// arrives when it has none. Past the budget (after a short wait) the
/// request is refused with 429, `Retry-After` and a typed body (the
/// LangSmith dialect's shape on its routes).
pub(crate) async fn body_budget(
    State(budget): State<BodyBudget>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    // Inside a nested router the URI has lost its prefix: the original
    // has it.
    let path = req.extensions().get::<axum::extract::OriginalUri>().map_or(req.uri().path(), |u| u.0.path());
    let dialect = path.starts_with("/compat/langsmith/");
    let runloop = path.starts_with("/compat/runloop/");
    let refuse = |why: String| {
        if runloop {
            crate::compat::runloop::budget_refusal(why)
        } else if dialect {
            let mut r = crate::compat::langsmith::detail(429, ErrorType::QuotaExceeded.as_str(), &why);
            r.headers_mut().insert(header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
            r
        } else {
            let mut r = Error::new(ErrorCode::LimitExceeded, why).into_http(Encoding::Json);
            r.headers_mut().insert(header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
            r
        }
    };
    let length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    match length {
        // Over the route's limit: the body limit answers 413 unread.
        Some(n) if n > MAX_BODY => next.run(req).await,
        // A refusal reads the body it refuses first (bounded, dropped as it
        // comes, `files::drain`): closed with unread data, the socket is
        // reset, and a client still sending sees the reset, not the 429.
        Some(n) if n > budget.total => {
            crate::files::drain(&mut req.into_body().into_data_stream()).await;
            refuse(format!(
                "a request body of {n} bytes is larger than the daemon's body budget ({})",
                budget.total
            ))
        }
        Some(n) => match budget.take(n).await {
            Some(held) => {
                let resp = next.run(req).await;
                drop(held);
                resp
            }
            None => {
                crate::files::drain(&mut req.into_body().into_data_stream()).await;
                refuse(format!(
                    "the daemon's budget for request bodies ({} bytes) is in use: try again shortly",
                    budget.total
                ))
            }
        },
        None => {
            // Charged as it arrives; the permits outlive the body stream
            // (the handler still holds the bytes) until the response.
            let held = Arc::new(std::sync::Mutex::new(Vec::new()));
            let refused = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let (parts, body) = req.into_parts();
            let stream = {
                let (held, refused, budget) = (held.clone(), refused.clone(), budget.clone());
                futures_util::StreamExt::then(body.into_data_stream(), move |chunk| {
                    let (held, refused, budget) = (held.clone(), refused.clone(), budget.clone());
                    async move {
                        let chunk = chunk?;
                        match budget.take(chunk.len()).await {
                            Some(p) => held.lock().unwrap_or_else(|p| p.into_inner()).push(p),
                            None => {
                                refused.store(true, std::sync::atomic::Ordering::SeqCst);
                                return Err(axum::Error::new("the body budget is in use"));
                            }
                        }
                        Ok::<_, axum::Error>(chunk)
                    }
                })
            };
            let req = axum::extract::Request::from_parts(parts, axum::body::Body::from_stream(stream));
            let resp = next.run(req).await;
            if refused.load(std::sync::atomic::Ordering::SeqCst) {
                return refuse(format!(
                    "the daemon's budget for request bodies ({} bytes) is in use: try again shortly",
                    budget.total
                ));
            }
            drop(held);
            resp
        }
    }
}

/// The interpreters `POST /v1/code` knows without configuration.
pub fn default_interpreters() -> BTreeMap<String, Vec<String>> {
    [("python3", "python3"), ("python", "python3"), ("node", "node"), ("bash", "bash"), ("sh", "sh")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), vec![v.to_owned()]))
        .collect()
}

pub(crate) async fn exec_handler(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (req_enc, resp_enc) = encodings(&headers);
    let req: proto::ExecRequest = match proto::decode(&body, req_enc) {
        Ok(r) => r,
        Err(e) => return bad_frame(e).into_http(resp_enc),
    };
    let program = match (req.command, req.argv.is_empty()) {
        (Some(c), true) => exec::Program::Shell { shell: req.shell_program, script: c },
        (None, false) => exec::Program::Argv(req.argv),
        (Some(_), false) => {
            return Error::bad_request("give either command or argv, not both").into_http(resp_enc);
        }
        (None, true) => {
            return Error::bad_request("give command or argv: nothing to run").into_http(resp_enc);
        }
    };
    respond(resp_enc, run(&st, program, req.options).await)
}

pub(crate) async fn code_handler(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (req_enc, resp_enc) = encodings(&headers);
    let req: proto::CodeRequest = match proto::decode(&body, req_enc) {
        Ok(r) => r,
        Err(e) => return bad_frame(e).into_http(resp_enc),
    };
    let Some(interpreter) = st.cfg.interpreters.get(&req.language) else {
        let known: Vec<&str> = st.cfg.interpreters.keys().map(String::as_str).collect();
        let msg = format!("unknown language {:?}; this daemon knows {}", req.language, known.join(", "));
        return Error::bad_request(msg).into_http(resp_enc);
    };
    if req.code.contains('\0') {
        return Error::bad_request("code contains a NUL byte").into_http(resp_enc);
    }
    // The code goes through a private file: no quoting, no argv size limit,
    // and stdin stays the request's.
    let file = match CodeFile::write(&req.code) {
        Ok(f) => f,
        Err(e) => {
            let msg = format!("writing the code to a temporary file: {e}");
            let e = Error { errno: e.raw_os_error(), ..Error::new(ErrorCode::Internal, msg) };
            return e.into_http(resp_enc);
        }
    };
    let mut argv = interpreter.clone();
    argv.push(file.path.to_string_lossy().into_owned());
    argv.extend(req.args);
    let r = run(&st, exec::Program::Argv(argv), req.options).await;
    // Only now: the interpreter may open the file at any time before it ends.
    drop(file);
    respond(resp_enc, r)
}

/// Starts the command, collects its output (paced, so nothing is lost) up
/// to the limit, and waits for its end.
async fn run(st: &AppState, program: exec::Program, o: RunOptions) -> Result<ExecResponse, Error> {
    let max = o.max_output_bytes.unwrap_or(DEFAULT_MAX_OUTPUT);
    if max > MAX_OUTPUT {
        return Err(Error::bad_request(format!("max_output_bytes {max} is over the limit of {MAX_OUTPUT}")));
    }
    let mut spec = exec::CommandSpec::new(program);
    spec.cwd = o.cwd.map(Into::into);
    spec.env = o.env;
    let stdin = match (o.stdin, o.stdin_text) {
        (Some(b), None) => b.0,
        (None, Some(t)) => Bytes::from(t),
        (None, None) => Bytes::new(),
        (Some(_), Some(_)) => {
            return Err(Error::bad_request("give either stdin or stdin_text, not both"));
        }
    };
    spec = spec.stdin(stdin, true);
    spec.timeout = o.timeout_ms.map(Duration::from_millis);
    spec.kill_grace = o.kill_grace_ms.map(Duration::from_millis);
    spec.name = o.name;
    spec.labels = o.labels;
    let Finished { id, exit, stdout, stderr } = run_to_end(st, spec, max).await?;
    Ok(ExecResponse {
        command: proto::CommandId(id),
        exit_code: exit.code,
        signal: exit.signal,
        reason: map::exit_to_wire(&exit).reason,
        duration_ms: exit.wall.as_millis() as u64,
        stdout: Payload::from(stdout),
        stderr: Payload::from(stderr),
        stdout_encoding: None,
        stderr_encoding: None,
        truncated: exit.truncated,
    })
}

/// A one-shot command that ended, with the output it kept.
pub(crate) struct Finished {
    /// Its id (already forgotten by the manager).
    pub(crate) id: String,
    /// How it ended.
    pub(crate) exit: exec::ExitInfo,
    /// Its stdout, up to the limit.
    pub(crate) stdout: Vec<u8>,
    /// Its stderr, up to the limit (shared with stdout).
    pub(crate) stderr: Vec<u8>,
}

/// Runs `spec` as a one-shot command: started, read paced to its end (so
/// nothing is lost) keeping at most `max` output bytes, and forgotten at
/// exit. Also serves the LangSmith dialect's legacy `POST /execute`.
pub(crate) async fn run_to_end(
    st: &AppState,
    mut spec: exec::CommandSpec,
    max: u64,
) -> Result<Finished, exec::ExecError> {
    // Its output goes back in the response: nothing to keep it for once it
    // ended (held for the TTL, every finished run would keep its ring
    // reservation, and a busy client would run the daemon out of them).
    spec.ttl = exec::Lifetime::After(Duration::ZERO);
    // Past the limit the command runs on and its output is dropped as it
    // is read: never held.
    spec = spec.max_output(max, exec::OutputLimit::Truncate);
    // Attached, paced, before the command's first byte is read.
    let (h, sub) = st.manager.start_then(spec, |h| h.attach_paced([0, 0], true))?;
    let mut sub = sub?;
    tracing::info!(command = %h.id(), "one-shot started");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let exit = loop {
        // A stopping daemon answers at once (503) rather than holding its
        // stop (or restart) until the command ends.
        let ev = tokio::select! {
            ev = sub.next(256 * 1024) => ev,
            _ = st.shutdown.cancelled() => return Err(exec::ExecError::ShuttingDown),
        };
        match ev {
            Some(exec::Event::Output { stream: exec::Stream::Stdout, data, .. }) => {
                out.extend_from_slice(&data)
            }
            Some(exec::Event::Output { stream: exec::Stream::Stderr, data, .. }) => {
                err.extend_from_slice(&data)
            }
            Some(exec::Event::Gap { .. } | exec::Event::Resized(_)) => {}
            Some(exec::Event::Exit(e)) => break e,
            None => break h.wait().await,
        }
    };
    Ok(Finished { id: h.id().to_owned(), exit, stdout: out, stderr: err })
}

/// The request's encoding (its `Content-Type`) and the response's (its
/// `Accept`, else the request's). JSON unless MessagePack is named.
fn encodings(headers: &HeaderMap) -> (Encoding, Encoding) {
    let names_msgpack =
        |h: header::HeaderName| headers.get(h).and_then(|v| v.to_str().ok()).map(|v| v.contains("msgpack"));
    let req =
        if names_msgpack(header::CONTENT_TYPE) == Some(true) { Encoding::MsgPack } else { Encoding::Json };
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let resp = if accept.contains("msgpack") {
        Encoding::MsgPack
    } else if accept.contains("json") {
        Encoding::Json
    } else {
        req
    };
    (req, resp)
}

fn bad_frame(e: proto::DecodeError) -> Error {
    Error::new(ErrorCode::BadFrame, format!("the request body is not a valid request: {e}"))
}

fn respond(enc: Encoding, r: Result<ExecResponse, Error>) -> Response {
    match r {
        Ok(resp) => {
            let body = match enc {
                Encoding::Json => resp.to_json(),
                Encoding::MsgPack => proto::encode(&resp, Encoding::MsgPack),
            };
            ([(header::CONTENT_TYPE, content_type(enc))], body).into_response()
        }
        Err(e) => e.into_http(enc),
    }
}

/// A snippet in a private directory, removed on drop.
pub(crate) struct CodeFile {
    pub(crate) path: std::path::PathBuf,
    /// Removed (with the file) on drop.
    _dir: exec::PrivateDir,
}

impl CodeFile {
    pub(crate) fn write(code: &str) -> std::io::Result<CodeFile> {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = exec::PrivateDir::new_in(&std::env::temp_dir(), "tether-code")?;
        let path = dir.path().join("code");
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
        std::io::Write::write_all(&mut f, code.as_bytes())?;
        Ok(CodeFile { path, _dir: dir })
    }
}
