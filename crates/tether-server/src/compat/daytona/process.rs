//! One-shot runs (`protocol/compat/daytona.md` §7): `POST
//! /process/execute` and `POST /process/code-run`. Both run to the end as
//! `POST /v1/exec` does (a normal command meanwhile), with stderr in the
//! same pipe as stdout: `result` is the combined output in the order it was
//! written.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use tether_exec::{self as exec, ExitReason};

use super::{Refusal, json, text};
use crate::AppState;
use crate::oneshot::{CodeFile, Finished, run_to_end};

/// Most output an `execute` or `code-run` answers with; past it the
/// command runs on and the rest is dropped.
pub(super) const MAX_RESULT: u64 = 64 << 20;

/// The timeout's SIGTERM-to-SIGKILL grace: the answer must reach the SDK
/// before its own deadline of `timeout + 5` s.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// `ExecuteRequest`.
#[derive(Debug, Deserialize)]
pub(super) struct ExecuteRequest {
    command: String,
    #[serde(default)]
    cwd: Option<String>,
    #[serde(default)]
    envs: Option<BTreeMap<String, String>>,
    /// Seconds; 0 or none: no limit.
    #[serde(default)]
    timeout: Option<i64>,
}

/// `CodeRunRequest`.
#[derive(Debug, Deserialize)]
pub(super) struct CodeRunRequest {
    code: String,
    language: String,
    #[serde(default)]
    argv: Option<Vec<String>>,
    #[serde(default)]
    envs: Option<BTreeMap<String, String>>,
    #[serde(default)]
    timeout: Option<i64>,
}

/// `POST /process/execute`: 200 `{result, exitCode}`, 408 on timeout.
pub(super) async fn execute(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    let r = async {
        let req: ExecuteRequest = json(&body)?;
        if req.command.trim().is_empty() {
            return Err(Refusal::bad_request("command is empty"));
        }
        let script = format!("exec 2>&1\n{}", req.command);
        let mut spec = exec::CommandSpec::new(exec::Program::Shell { shell: None, script });
        spec.cwd = req.cwd.filter(|c| !c.is_empty()).map(Into::into);
        run(&st, spec, req.envs, req.timeout).await
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

/// `POST /process/code-run`: the code in the language's interpreter (the
/// daemon's `POST /v1/code` languages; the SDK sends `python` by default).
pub(super) async fn code_run(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    let r = async {
        let req: CodeRunRequest = json(&body)?;
        let Some(interpreter) = st.cfg.interpreters.get(&req.language) else {
            let known: Vec<&str> = st.cfg.interpreters.keys().map(String::as_str).collect();
            return Err(Refusal::bad_request(format!(
                "language {:?} has no runner on this host; it knows {}",
                req.language,
                known.join(", ")
            )));
        };
        if req.code.contains('\0') {
            return Err(Refusal::bad_request("code contains a NUL byte"));
        }
        let file = CodeFile::write(&req.code)
            .map_err(|e| Refusal::new(500, None, format!("writing the code to a temporary file: {e}")))?;
        // `sh -c 'exec "$@" 2>&1' sh interpreter... file argv...`: stderr
        // joins stdout without quoting anything.
        let mut argv: Vec<String> = ["/bin/sh", "-c", "exec \"$@\" 2>&1", "sh"].map(str::to_owned).to_vec();
        argv.extend(interpreter.iter().cloned());
        argv.push(file.path.to_string_lossy().into_owned());
        argv.extend(req.argv.unwrap_or_default());
        let spec = exec::CommandSpec::new(exec::Program::Argv(argv));
        let r = run(&st, spec, req.envs, req.timeout).await;
        drop(file);
        r
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

/// Runs to the end; the answer both routes share.
async fn run(
    st: &AppState,
    mut spec: exec::CommandSpec,
    envs: Option<BTreeMap<String, String>>,
    timeout: Option<i64>,
) -> Result<Response, Refusal> {
    spec.env = envs.unwrap_or_default();
    spec = spec.stdin(Bytes::new(), true);
    spec.timeout = timeout.filter(|&t| t > 0).map(|t| Duration::from_secs(t.unsigned_abs()));
    spec.kill_grace = Some(KILL_GRACE);
    spec.labels.insert("daytona.kind".into(), "exec".into());
    let Finished { exit, stdout, .. } = run_to_end(st, spec, MAX_RESULT).await?;
    if exit.reason == ExitReason::TimedOut {
        let secs = timeout.unwrap_or(0);
        return Err(Refusal::new(
            408,
            Some("PROCESS_EXECUTION_TIMEOUT"),
            format!("the command timed out after {secs} seconds"),
        ));
    }
    Ok(axum::Json(json!({ "result": text(&stdout), "exitCode": exit.shell_code() })).into_response())
}
