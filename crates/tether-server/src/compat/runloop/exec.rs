//! Executions (`protocol/compat/runloop.md` §4–§6): each a tether command
//! whose id is the execution id. Without a `shell_name` the command runs
//! in a fresh login shell (`bash -lc`) from the home directory; with one it
//! is queued in the tether named shell of that name (made on first use),
//! whose cwd and environment carry from command to command.
//!
//! Waits are long polls: a `wait_for_status` holds until the execution
//! reaches one of the statuses or the hold runs out, then answers 408,
//! which the SDK takes as "ask again". Output comes back whole in the
//! completed view as far as the rings hold it; past that the view says
//! `*_truncated` and the SDK reads the stream from byte 0.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use serde::Deserialize;
use serde_json::{Value, json};
use tether_exec::{self as exec, CommandHandle, Event, ShellSpec, StdinSeq, Stream};

use super::{Refusal, check_devbox, json_body, request_id};
use crate::AppState;

/// Each stream's ring: what a completed view, and a stream read from byte
/// 0, can give back.
pub(super) const RING_BYTES: usize = 8 << 20;

/// The SDK's default hold for an execution wait (it asks for 25 s).
const DEFAULT_HOLD: Duration = Duration::from_secs(25);

/// Longest any hold lasts, whatever the request asks.
const MAX_HOLD: Duration = Duration::from_secs(60);

/// How long `kill` waits for the exit, so that its answer is the
/// completed view.
const KILL_WAIT: Duration = Duration::from_secs(2);

/// How often a wait for `running` looks whether a queued command started.
const QUEUED_POLL: Duration = Duration::from_millis(20);

/// Labels on the commands this dialect starts.
pub(super) const DEVBOX_LABEL: &str = "runloop.devbox";
const STDIN_LABEL: &str = "runloop.attach_stdin";

/// `{devbox_id}/executions/{execution_id}` in the path.
#[derive(Debug, Deserialize)]
pub(super) struct ExecutionPath {
    pub(super) devbox_id: String,
    pub(super) execution_id: String,
}

/// `{devbox_id}` in the path.
#[derive(Debug, Deserialize)]
pub(super) struct DevboxPath {
    devbox_id: String,
}

/// `DevboxExecuteAsyncParams` and its kin (`execute`, `execute_sync`).
#[derive(Debug, Deserialize)]
struct Execute {
    command: String,
    /// Keep stdin open for `send_std_in` (else it reads end-of-file).
    #[serde(default)]
    attach_stdin: Option<bool>,
    /// The named shell (2.x's `NamedShell`, 3.0.0's `extra_body`).
    #[serde(default)]
    shell_name: Option<String>,
    /// `execute`'s own idempotency id.
    #[serde(default)]
    command_id: Option<String>,
    /// `execute`: how long to wait for the end before answering.
    #[serde(default)]
    optimistic_timeout: Option<f64>,
}

/// `wait_for_status`'s body.
#[derive(Debug, Deserialize)]
struct WaitForStatus {
    statuses: Vec<String>,
    /// Seconds, a float on the wire.
    #[serde(default)]
    timeout_seconds: Option<f64>,
}

/// `send_std_in`'s body: exactly one of the two.
#[derive(Debug, Deserialize)]
struct SendStdIn {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    signal: Option<String>,
}

/// `?last_n=`: only the last lines of each stream in the view.
#[derive(Debug, Default, Deserialize)]
pub(super) struct LastN {
    #[serde(default)]
    last_n: Option<String>,
}

/// `POST /execute_async`: the view at once (queued or running).
pub(super) async fn execute_async(
    State(st): State<Arc<AppState>>,
    Path(p): Path<DevboxPath>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = async {
        check_devbox(&st, &p.devbox_id)?;
        let req: Execute = json_body(&body)?;
        let h = start(&st, &p.devbox_id, &headers, &req).await?;
        Ok::<_, Refusal>(axum::Json(view(&p.devbox_id, &h, None)).into_response())
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

/// `POST /execute`: starts, then waits up to `optimistic_timeout` (25 s
/// at most) for the end; the view either way.
pub(super) async fn execute(
    State(st): State<Arc<AppState>>,
    Path(p): Path<DevboxPath>,
    Query(q): Query<LastN>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = async {
        check_devbox(&st, &p.devbox_id)?;
        let req: Execute = json_body(&body)?;
        let last_n = last_n(&q)?;
        let h = start(&st, &p.devbox_id, &headers, &req).await?;
        let wait = hold(req.optimistic_timeout, DEFAULT_HOLD)?.min(DEFAULT_HOLD).min(read_budget(&headers));
        tokio::select! {
            _ = h.wait() => {}
            () = tokio::time::sleep(wait) => {}
            () = st.shutdown.cancelled() => {}
        }
        Ok::<_, Refusal>(axum::Json(view(&p.devbox_id, &h, last_n)).into_response())
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

/// `POST /execute_sync`: starts and answers at the end (a restart in
/// between answers 408; the SDK's retry, with the same request id, finds
/// the same command and waits on).
pub(super) async fn execute_sync(
    State(st): State<Arc<AppState>>,
    Path(p): Path<DevboxPath>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = async {
        check_devbox(&st, &p.devbox_id)?;
        let req: Execute = json_body(&body)?;
        let h = start(&st, &p.devbox_id, &headers, &req).await?;
        tokio::select! {
            _ = h.wait() => {}
            () = st.shutdown.cancelled() => {
                return Err(Refusal::keep_waiting("the daemon is restarting; ask again"));
            }
        }
        Ok(axum::Json(view(&p.devbox_id, &h, None)).into_response())
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /executions/{id}`: the view now.
pub(super) async fn retrieve(
    State(st): State<Arc<AppState>>,
    Path(p): Path<ExecutionPath>,
    Query(q): Query<LastN>,
) -> Response {
    let r = async {
        let h = execution(&st, &p)?;
        Ok::<_, Refusal>(axum::Json(view(&p.devbox_id, &h, last_n(&q)?)).into_response())
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

/// `POST /executions/{id}/wait_for_status`: the view once the execution
/// has one of the statuses; 408 when the hold runs out first or the daemon
/// stops meanwhile.
pub(super) async fn wait_for_status(
    State(st): State<Arc<AppState>>,
    Path(p): Path<ExecutionPath>,
    Query(q): Query<LastN>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = async {
        let h = execution(&st, &p)?;
        let req: WaitForStatus = json_body(&body)?;
        let last_n = last_n(&q)?;
        if let Some(bad) =
            req.statuses.iter().find(|s| !["queued", "running", "completed"].contains(&s.as_str()))
        {
            return Err(Refusal::bad_request(format!(
                "unknown status {bad:?}: an execution is queued, running or completed"
            )));
        }
        let wanted = |h: &CommandHandle| req.statuses.iter().any(|s| s == status(h));
        let deadline =
            tokio::time::Instant::now() + hold(req.timeout_seconds, DEFAULT_HOLD)?.min(read_budget(&headers));
        while !wanted(&h) {
            // Only `completed` is a change `wait` reports; queued to
            // running is looked at now and then.
            let poll = if status(&h) == "queued" { QUEUED_POLL } else { MAX_HOLD };
            tokio::select! {
                // An ended command that is not what is waited for never
                // will be: only the deadline is left.
                _ = h.wait(), if h.exit().is_none() => {}
                () = tokio::time::sleep(poll) => {}
                () = tokio::time::sleep_until(deadline) => {
                    return Err(Refusal::keep_waiting(format!(
                        "execution {:?} is still {}; ask again", p.execution_id, status(&h)
                    )));
                }
                () = st.shutdown.cancelled() => {
                    return Err(Refusal::keep_waiting("the daemon is restarting; ask again"));
                }
            }
        }
        Ok(axum::Json(view(&p.devbox_id, &h, last_n)).into_response())
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

/// `POST /executions/{id}/kill`: SIGKILL to the command and everything it
/// started (its process group and descendants, whatever
/// `kill_process_group` says); the view, completed once the exit came
/// (within [`KILL_WAIT`]).
pub(super) async fn kill(State(st): State<Arc<AppState>>, Path(p): Path<ExecutionPath>) -> Response {
    let r = async {
        let h = execution(&st, &p)?;
        match h.kill_and_wait(KILL_WAIT).await {
            Ok(()) | Err(exec::ExecError::NotRunning(_)) => {}
            Err(e) => return Err(e.into()),
        }
        Ok::<_, Refusal>(axum::Json(view(&p.devbox_id, &h, None)).into_response())
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

/// `POST /executions/{id}/send_std_in`: text, or `EOF` (closes stdin) or
/// `INTERRUPT` (SIGINT). A resend of one request (same request id) writes
/// nothing more: the request id names a stdin writer.
pub(super) async fn send_std_in(
    State(st): State<Arc<AppState>>,
    Path(p): Path<ExecutionPath>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = async {
        let h = execution(&st, &p)?;
        let req: SendStdIn = json_body(&body)?;
        let seq = request_id(&headers).map(|id| StdinSeq { writer: writer_name(&id), offset: 0 });
        // A command that does not read holds the write; a restart must not
        // wait for it (the SDK resends, and the numbered writer keeps the
        // resend from writing twice).
        tokio::select! {
            r = send(&h, &p, req, seq) => r?,
            () = st.shutdown.cancelled() => {
                return Err(Refusal::keep_waiting("the daemon is restarting; send again"));
            }
        }
        Ok(axum::Json(json!({ "devbox_id": p.devbox_id, "execution_id": p.execution_id, "success": true }))
            .into_response())
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

/// What one `send_std_in` does.
async fn send(
    h: &CommandHandle,
    p: &ExecutionPath,
    req: SendStdIn,
    seq: Option<StdinSeq>,
) -> Result<(), Refusal> {
    let attached = h.info().labels.contains_key(STDIN_LABEL);
    match (req.text, req.signal.as_deref()) {
        (Some(text), None) if !text.is_empty() => {
            if !attached {
                return Err(not_attached(p));
            }
            h.write_stdin_at(Bytes::from(text), seq).await.map_err(|e| stdin_error(h, p, e))
        }
        (None, Some("EOF")) => {
            if !attached {
                return Err(not_attached(p));
            }
            h.close_stdin_at(seq).await.map_err(|e| stdin_error(h, p, e))
        }
        (None, Some("INTERRUPT")) => h.signal("INT").await.map_err(|e| stdin_error(h, p, e)),
        (None, Some(other)) => Err(Refusal::bad_request(format!("signal {other:?}: EOF or INTERRUPT"))),
        _ => Err(Refusal::bad_request("send exactly one of a non-empty `text` or a `signal`")),
    }
}

/// Starts the command of an execute request, or finds the one a previous
/// send of the same request started.
async fn start(
    st: &AppState,
    devbox: &str,
    headers: &HeaderMap,
    req: &Execute,
) -> Result<CommandHandle, Refusal> {
    if req.command.trim().is_empty() {
        return Err(Refusal::bad_request("command is empty"));
    }
    let attach = req.attach_stdin.unwrap_or(false);
    let key = req.command_id.clone().or_else(|| request_id(headers)).map(|k| request_key(&k));
    let shell = req.shell_name.as_deref().filter(|s| !s.is_empty());
    let mut spec = match shell {
        Some(_) => exec::CommandSpec::shell(req.command.clone()),
        None => {
            let argv = ["bash", "-lc", req.command.as_str()].map(str::to_owned).to_vec();
            let mut spec = exec::CommandSpec::new(exec::Program::Argv(argv));
            spec.cwd = home(st);
            spec
        }
    };
    if !attach {
        spec = spec.stdin(Bytes::new(), true);
    } else {
        spec.labels.insert(STDIN_LABEL.into(), "1".into());
    }
    // Nobody attached is no reason to end it: the SDK polls.
    spec.idle_timeout = exec::Lifetime::Never;
    spec.ring_bytes = Some(RING_BYTES);
    spec.request_key = key;
    spec.labels.insert(DEVBOX_LABEL.into(), devbox.to_owned());
    let (h, new) = match shell {
        Some(name) => {
            let mut sh = ShellSpec::named(name);
            sh.cwd = home(st);
            st.manager.create_shell(sh).await.map_err(shell_error)?;
            st.manager.shell_run_keyed(name, spec).await.map_err(shell_error)?
        }
        None => st.manager.start_keyed(spec)?,
    };
    if new {
        tracing::info!(command = %h.id(), shell = ?shell, "runloop execution started");
    } else {
        tracing::info!(command = %h.id(), "runloop execute resent: the execution it started");
    }
    Ok(h)
}

/// The execution (any held tether command, by its id).
pub(super) fn execution(st: &AppState, p: &ExecutionPath) -> Result<CommandHandle, Refusal> {
    check_devbox(st, &p.devbox_id)?;
    st.manager.get(&p.execution_id).map_err(|_| {
        Refusal::not_found(format!(
            "no execution {:?} (never started, or ended longer ago than its TTL)",
            p.execution_id
        ))
    })
}

/// `queued`, `running` or `completed`.
fn status(h: &CommandHandle) -> &'static str {
    status_of(h, h.exit().as_ref())
}

/// The status given the exit read once (so a view never says `running`
/// beside an exit status).
fn status_of(h: &CommandHandle, exit: Option<&exec::ExitInfo>) -> &'static str {
    if exit.is_some() {
        "completed"
    } else if h.info().queued {
        "queued"
    } else {
        "running"
    }
}

/// `DevboxAsyncExecutionDetailView`: once completed with the exit status
/// and the output the rings hold (from byte 0, else `*_truncated`).
pub(super) fn view(devbox: &str, h: &CommandHandle, last_n: Option<usize>) -> Value {
    let exit = h.exit();
    let mut v = json!({
        "devbox_id": devbox,
        "execution_id": h.id(),
        "status": status_of(h, exit.as_ref()),
    });
    if let (Some(x), Some(o)) = (exit, v.as_object_mut()) {
        let (out, err) = held_output(h);
        o.insert("exit_status".into(), x.shell_code().into());
        for (name, (bytes, truncated)) in [("stdout", out), ("stderr", err)] {
            let text = super::super::utf8::decode(&bytes, true).0;
            let text = match last_n {
                Some(n) => tail_lines(&text, n),
                None => text,
            };
            o.insert(name.into(), text.into());
            o.insert(format!("{name}_truncated"), truncated.into());
        }
        if let Some(shell) = h.info().shell {
            o.insert("shell_name".into(), shell.into());
        }
    }
    v
}

/// An ended command's held output per stream, and whether its start is
/// gone (the ring moved on).
fn held_output(h: &CommandHandle) -> ((Vec<u8>, bool), (Vec<u8>, bool)) {
    let mut sub = h.attach_tail(u64::MAX, false);
    let mut out = [(Vec::new(), false), (Vec::new(), false)];
    let mut first = [true, true];
    // The command has ended: everything is there now.
    while let Some(Some(ev)) = sub.next(1 << 20).now_or_never() {
        match ev {
            Event::Output { stream, offset, data } => {
                let i = usize::from(stream == Stream::Stderr);
                if first[i] {
                    out[i].1 = offset > 0;
                    first[i] = false;
                }
                out[i].0.extend_from_slice(&data);
            }
            Event::Gap { stream, .. } => out[usize::from(stream == Stream::Stderr)].1 = true,
            Event::Resized(_) => {}
            Event::Exit(_) => break,
        }
    }
    let [o, e] = out;
    (o, e)
}

/// The last `n` lines (a trailing newline is not a line of its own).
fn tail_lines(text: &str, n: usize) -> String {
    if n == 0 {
        return String::new();
    }
    let body = text.strip_suffix('\n').unwrap_or(text);
    let start = body.rmatch_indices('\n').nth(n - 1).map_or(0, |(i, _)| i + 1);
    text[start..].to_owned()
}

fn last_n(q: &LastN) -> Result<Option<usize>, Refusal> {
    q.last_n
        .as_deref()
        .map(|s| {
            s.trim()
                .parse::<usize>()
                .map_err(|_| Refusal::bad_request(format!("last_n {s:?}: a count of lines")))
        })
        .transpose()
}

/// A hold of `asked` seconds (`None`: `default`), at most [`MAX_HOLD`].
pub(super) fn hold(asked: Option<f64>, default: Duration) -> Result<Duration, Refusal> {
    match asked {
        None => Ok(default),
        Some(s) if s.is_finite() && s >= 0.0 => Ok(Duration::from_secs_f64(s.min(MAX_HOLD.as_secs_f64()))),
        Some(s) => Err(Refusal::bad_request(format!("timeout_seconds {s}: a number of seconds, 0 or more"))),
    }
}

/// How long the client reads before it gives up (`x-stainless-read-timeout`),
/// less a second, so a hold answers before the client's own timeout.
pub(super) fn read_budget(headers: &HeaderMap) -> Duration {
    headers
        .get("x-stainless-read-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map_or(MAX_HOLD, |s| Duration::from_secs_f64((s - 1.0).max(s / 2.0).min(MAX_HOLD.as_secs_f64())))
}

/// The command's request key for a request id (namespaced, bounded).
fn request_key(id: &str) -> String {
    let key = format!("runloop:{id}");
    if key.len() <= 100 { key } else { format!("runloop:#{:016x}", fnv1a(id.as_bytes())) }
}

/// The stdin writer a request id names (at most 64 bytes).
fn writer_name(id: &str) -> String {
    if id.len() <= StdinSeq::MAX_WRITER { id.to_owned() } else { format!("#{:016x}", fnv1a(id.as_bytes())) }
}

/// FNV-1a, 64 bits: a stable short name for a long id.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Where a command without a shell starts: the files root when the daemon
/// has one, else the daemon user's home.
fn home(st: &AppState) -> Option<std::path::PathBuf> {
    st.cfg.files_root.clone().or_else(|| std::env::var_os("HOME").map(Into::into)).filter(|p| p.is_dir())
}

fn shell_error(e: exec::ExecError) -> Refusal {
    match e {
        exec::ExecError::BadShellName(name) => {
            Refusal::bad_request(format!("shell_name {name:?}: 1 to 64 letters, digits, `.`, `_` or `-`"))
        }
        e => e.into(),
    }
}

fn not_attached(p: &ExecutionPath) -> Refusal {
    Refusal::bad_request(format!(
        "execution {:?} was not started with attach_stdin: true; its stdin is closed",
        p.execution_id
    ))
}

fn stdin_error(h: &CommandHandle, p: &ExecutionPath, e: exec::ExecError) -> Refusal {
    match e {
        exec::ExecError::NotRunning(_) if h.exit().is_none() => Refusal::bad_request(format!(
            "execution {:?} has not started yet (it is queued in its shell)",
            p.execution_id
        )),
        exec::ExecError::NotRunning(_) => {
            Refusal::bad_request(format!("execution {:?} has completed", p.execution_id))
        }
        exec::ExecError::StdinClosed(_) => {
            Refusal::bad_request(format!("execution {:?}: stdin is closed (EOF was sent)", p.execution_id))
        }
        e => e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::tail_lines;

    #[test]
    fn the_last_lines_keep_their_newline() {
        assert_eq!(tail_lines("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(tail_lines("a\nb\nc", 1), "c");
        assert_eq!(tail_lines("a\n", 5), "a\n");
        assert_eq!(tail_lines("a\nb\n", 0), "");
    }
}
