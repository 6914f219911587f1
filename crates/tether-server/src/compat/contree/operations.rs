//! `GET` and `DELETE /v1/operations/{id}` (`protocol/compat/contree.md`
//! §Operations). An operation is its command: found by request key
//! (`contree-op-<id>`, carried across a graceful restart like the command),
//! its status from the command's exit, its output from the command's rings.

use std::sync::Arc;
use std::time::SystemTime;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};
use tether_exec::{self as exec, CommandHandle, ExitInfo, ExitReason};

use super::error::Refusal;
use super::image::{TAG, host_uuid, parse_uuid};
use super::instances::Echo;
use crate::AppState;

/// The label holding a run's operation id (shown by `tether ls`).
pub(super) const OP_LABEL: &str = "contree.operation";

/// The label holding what the operation echoes of its request.
pub(super) const ECHO_LABEL: &str = "contree.request";

/// The request key of operation `op`.
pub(super) fn request_key(op: &str) -> String {
    format!("contree-op-{op}")
}

/// The command of operation `id`, or the refusal.
fn find(st: &AppState, id: &str) -> Result<(String, CommandHandle), Refusal> {
    let op = parse_uuid(id).ok_or_else(|| Refusal::invalid(format!("operation id {id:?} is not a UUID")))?;
    let gone = || {
        Refusal::not_found(format!(
            "no operation {op} (never started here, or forgotten after its TTL; finished runs are kept for \
             the daemon's --ttl)"
        ))
    };
    let h = st.manager.get(&request_key(&op)).map_err(|_| gone())?;
    if h.info().labels.get(OP_LABEL) != Some(&op) {
        return Err(gone());
    }
    Ok((op, h))
}

/// `GET /v1/operations/{id}`: the `OperationModel`; `EXECUTING` while the
/// command runs, then `SUCCESS` (any exit code, or the timeout),
/// `CANCELLED` (killed) or `FAILED`, with the result.
pub(super) async fn get(State(st): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let r = async {
        let (op, h) = find(&st, &id)?;
        tracing::debug!(operation = %op, command = %h.id(), "contree poll");
        let info = h.info();
        let echo: Echo =
            info.labels.get(ECHO_LABEL).and_then(|s| serde_json::from_str(s).ok()).unwrap_or_default();
        let mut metadata = metadata(&echo, &info.argv);
        let Some(exit) = h.exit() else {
            let running = SystemTime::now().duration_since(info.started_at).unwrap_or_default();
            return Ok(Json(json!({
                "kind": "instance",
                "status": "EXECUTING",
                "duration": running.as_secs_f64(),
                "error": null,
                "metadata": metadata,
                "result": null,
            }))
            .into_response());
        };
        let [stdout, stderr] = output(&h, &exit, echo.truncate_output_at).await?;
        let (status, error) = match exit.reason {
            ExitReason::Exited | ExitReason::TimedOut | ExitReason::OutputLimit => ("SUCCESS", None),
            ExitReason::Killed => {
                ("CANCELLED", Some("the run was cancelled (its command was killed)".to_owned()))
            }
            other => ("FAILED", Some(format!("the run's command ended: {other:?}"))),
        };
        metadata["result"] = json!({
            "resources": resources(&exit),
            "state": {
                "continued": false,
                "core_dump": exit.core_dumped,
                "exit_code": exit.shell_code(),
                "pid": info.pid,
                "signal": exit.signal.unwrap_or(0),
                "stopped": false,
                "timed_out": exit.reason == ExitReason::TimedOut,
            },
            "stdout": stdout,
            "stderr": stderr,
        });
        // A disposable run's changes cannot be discarded on a live host:
        // it is answered as ConTree answers one, with no result image, so
        // nothing names a state the host does not have.
        let image = if echo.disposable {
            json!({ "image": null, "tag": null })
        } else {
            json!({ "image": host_uuid(&st), "tag": TAG })
        };
        Ok::<_, Refusal>(
            Json(json!({
                "kind": "instance",
                "status": status,
                "duration": exit.wall.as_secs_f64(),
                "error": error,
                "metadata": metadata,
                "result": image,
            }))
            .into_response(),
        )
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

/// `DELETE /v1/operations/{id}`: kills a running command (the operation
/// becomes `CANCELLED`); a finished one is left as it is. 204 either way.
pub(super) async fn cancel(State(st): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let r = async {
        let (op, h) = find(&st, &id)?;
        if h.exit().is_none() {
            match h.kill().await {
                Ok(()) | Err(exec::ExecError::NotRunning(_)) => {}
                Err(e) => return Err(e.into()),
            }
            tracing::info!(operation = %op, command = %h.id(), "contree run cancelled");
        }
        Ok::<_, Refusal>(StatusCode::NO_CONTENT.into_response())
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

/// `InstanceOperationMetadata` without its `result`: the echoed request,
/// the command line from the echo or else from the command's argv.
fn metadata(echo: &Echo, argv: &[String]) -> Value {
    let (command, args) = match (&echo.command, &echo.args) {
        (Some(c), Some(a)) => (c.clone(), a.clone()),
        // `<shell> -c <script>`, or the argv itself.
        _ if echo.shell => (argv.get(2).cloned().unwrap_or_default(), Vec::new()),
        _ => (argv.first().cloned().unwrap_or_default(), argv.iter().skip(1).cloned().collect()),
    };
    json!({
        "args": args,
        "command": command,
        "cwd": echo.cwd,
        "disposable": echo.disposable,
        "env": echo.env,
        "files": echo.files,
        "hostname": echo.hostname,
        "image": echo.image,
        "result": null,
        "shell": echo.shell,
        "stdin": { "value": "", "encoding": "base64", "truncated": false },
        "timeout": echo.timeout,
        "truncate_output_at": echo.truncate_output_at,
        "preserve_env": echo.preserve_env,
    })
}

/// `ProcessResources`: what tether measures, zero for the rest.
fn resources(exit: &ExitInfo) -> Value {
    let wall = exit.wall.as_secs_f64();
    json!({
        "block_input": 0,
        "block_output": 0,
        "cost": 0.0,
        "elapsed_time": wall,
        "involuntary_switches": 0,
        "max_rss": exit.max_rss_kb,
        "monotonic_time": wall,
        "page_faults": 0,
        "page_faults_io": 0,
        "shared_memory": 0,
        "signals": 0,
        "swaps": 0,
        "system_cpu_time": exit.sys_us as f64 / 1e6,
        "unshared_memory": 0,
        "user_cpu_time": exit.user_us as f64 / 1e6,
        "voluntary_switches": 0,
    })
}

/// Both streams as `StreamDescription`s: all of a stream that wrote at
/// most `truncate` bytes; else its last `truncate` bytes, `truncated`.
/// Only those bytes are read, so a poll costs what it answers.
async fn output(h: &CommandHandle, exit: &ExitInfo, truncate: u64) -> Result<[Value; 2], Refusal> {
    let mut sub = h.attach_tail(truncate, false);
    let mut bufs: [Vec<u8>; 2] = Default::default();
    while let Some(ev) = sub.next(1 << 20).await {
        match ev {
            exec::Event::Output { stream, data, .. } => {
                bufs[usize::from(stream == exec::Stream::Stderr)].extend_from_slice(&data)
            }
            exec::Event::Exit(_) => break,
            exec::Event::Gap { .. } | exec::Event::Resized(_) => {}
        }
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    Ok([0, 1].map(|i| {
        let truncated = exit.ends[i] > truncate;
        json!({ "value": b64.encode(&bufs[i]), "encoding": "base64", "truncated": truncated })
    }))
}
