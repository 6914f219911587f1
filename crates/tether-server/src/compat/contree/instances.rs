//! `POST /v1/instances` (`protocol/compat/contree.md` §Runs): one run on
//! the host image, started as an ordinary tether command whose request key
//! and `contree.operation` label are the operation id the SDK then polls.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tether_exec::{self as exec, CommandSpec};

use super::blobs;
use super::error::Refusal;
use super::image::{check_ref, parse_uuid, uuid_string};
use super::operations::{ECHO_LABEL, OP_LABEL, request_key};
use crate::AppState;

/// Largest spawn request (stdin travels inside it, in base64).
const MAX_BODY: usize = 96 << 20;

/// The SDK's default `truncate_output_at`, when a request has none.
const DEFAULT_TRUNCATE: u64 = 65_535;

/// Largest `truncate_output_at`: each stream's ring holds that much, for
/// the command's whole TTL.
pub(super) const MAX_TRUNCATE: u64 = 256 << 20;

/// The model's default `timeout` (seconds), when a request has none.
const DEFAULT_TIMEOUT: i64 = 60;

/// Longest `timeout`: a week.
const MAX_TIMEOUT: i64 = 7 * 24 * 3600;

/// `InstanceSpawnRequest` (unknown fields ignored).
#[derive(Debug, Deserialize)]
struct SpawnRequest {
    /// The program (`shell: false`) or the shell command line.
    command: String,
    /// `<uuid>` or `tag:<tag>`.
    image: String,
    /// Not honoured (the host keeps its name).
    #[serde(default)]
    hostname: Option<String>,
    /// Arguments.
    #[serde(default)]
    args: Vec<String>,
    /// Whether `command` is a shell command line.
    #[serde(default)]
    shell: bool,
    /// Variables added to the environment.
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// Working directory (empty: the files root, else the daemon's).
    #[serde(default)]
    cwd: Option<String>,
    /// Whether the run's changes are to be discarded (answered with no
    /// result image).
    #[serde(default)]
    disposable: bool,
    /// Everything the command reads on stdin.
    #[serde(default)]
    stdin: Option<StreamDescription>,
    /// Seconds.
    #[serde(default)]
    timeout: Option<i64>,
    /// Bytes kept per output stream.
    #[serde(default)]
    truncate_output_at: Option<i64>,
    /// Files put in place before the run, by destination.
    #[serde(default)]
    files: BTreeMap<String, FileSpec>,
    /// Not honoured (a run's environment never persists on the host).
    #[serde(default)]
    preserve_env: bool,
}

/// `StreamDescription`.
#[derive(Debug, Deserialize)]
pub(super) struct StreamDescription {
    /// The data, encoded.
    value: String,
    /// `ascii` (the text itself) or `base64`.
    #[serde(default)]
    encoding: Option<String>,
}

/// `InstanceFileSpec`.
#[derive(Debug, Deserialize, Serialize)]
struct FileSpec {
    /// The uploaded blob's UUID.
    uuid: String,
    /// Octal permission bits (`"0644"`).
    #[serde(default)]
    mode: Option<String>,
    /// Owner (applied when the daemon runs as root).
    #[serde(default)]
    uid: Option<u32>,
    /// Group (applied when the daemon runs as root).
    #[serde(default)]
    gid: Option<u32>,
}

/// What the operation echoes of its request besides the command line
/// (kept as a label on the command, so it outlives a restart).
#[derive(Debug, Default, Deserialize, Serialize)]
pub(super) struct Echo {
    /// The request's image reference.
    pub(super) image: String,
    /// Its hostname.
    pub(super) hostname: String,
    /// Its shell flag.
    pub(super) shell: bool,
    /// The command line as sent (the argv is the command's own).
    #[serde(default)]
    pub(super) command: Option<String>,
    /// Its arguments as sent.
    #[serde(default)]
    pub(super) args: Option<Vec<String>>,
    /// Its cwd.
    pub(super) cwd: String,
    /// Its disposable flag.
    pub(super) disposable: bool,
    /// Its timeout, seconds.
    pub(super) timeout: i64,
    /// Its `truncate_output_at`.
    pub(super) truncate_output_at: u64,
    /// Its `preserve_env`.
    pub(super) preserve_env: bool,
    /// Its environment, when the label has room for it.
    #[serde(default)]
    pub(super) env: BTreeMap<String, String>,
    /// Its files, when the label has room for them.
    #[serde(default)]
    pub(super) files: serde_json::Map<String, serde_json::Value>,
}

/// `POST /v1/instances`: 201 `{"uuid": <operation id>}`.
pub(super) async fn spawn(
    State(st): State<Arc<AppState>>,
    axum::Extension(budget): axum::Extension<crate::oneshot::BodyBudget>,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Response {
    let r = async {
        // Held until the run has started (its stdin is the manager's then).
        let (body, _held) = blobs::read_budgeted(&budget, &headers, body, MAX_BODY).await?;
        let req: SpawnRequest = serde_json::from_slice(&body).map_err(Refusal::bad_body)?;
        drop(body);
        check_ref(&st, &req.image)?;
        let truncate = match req.truncate_output_at {
            None => DEFAULT_TRUNCATE,
            Some(t) if (0..=MAX_TRUNCATE as i64).contains(&t) => t as u64,
            Some(t) => {
                return Err(Refusal::invalid(format!(
                    "truncate_output_at {t} is not in 0..={MAX_TRUNCATE} bytes"
                )));
            }
        };
        let timeout = req.timeout.unwrap_or(DEFAULT_TIMEOUT);
        if !(1..=MAX_TIMEOUT).contains(&timeout) {
            return Err(Refusal::invalid(format!("timeout {timeout} is not in 1..={MAX_TIMEOUT} seconds")));
        }
        if req.command.is_empty() {
            return Err(Refusal::invalid("command is empty: nothing to run"));
        }
        let stdin = match &req.stdin {
            None => Bytes::new(),
            Some(s) => decode_stream(s)?,
        };
        let program = if req.shell {
            let mut script = req.command.clone();
            for a in &req.args {
                script.push(' ');
                script.push_str(&shell_quote(a));
            }
            exec::Program::Shell { shell: None, script }
        } else {
            exec::Program::Argv(
                std::iter::once(req.command.clone()).chain(req.args.iter().cloned()).collect(),
            )
        };
        put_files(&st, &req.files).await?;

        let op = new_operation_id()?;
        let mut spec = CommandSpec::new(program);
        spec.cwd = cwd(&st, req.cwd.as_deref());
        spec.env = req.env.clone();
        spec = spec.stdin(stdin, true);
        spec.timeout = Some(Duration::from_secs(timeout.unsigned_abs()));
        // Nobody attaches to a run: it lasts until it ends or its timeout.
        spec.idle_timeout = exec::Lifetime::Never;
        // The rings keep the last `truncate + 1` bytes of each stream: the
        // output answered, and whether there was more.
        let ring = usize::try_from(truncate + 1).unwrap_or(usize::MAX).max(exec::MIN_RING_BYTES);
        spec.ring_bytes = Some(ring);
        spec.request_key = Some(request_key(&op));
        spec.labels.insert(OP_LABEL.into(), op.clone());
        spec.labels.insert(ECHO_LABEL.into(), echo_label(&req, timeout, truncate));
        let h = st.manager.start(spec)?;
        tracing::info!(command = %h.id(), operation = %op, "contree run started");
        Ok::<_, Refusal>((StatusCode::CREATED, Json(json!({ "uuid": op }))).into_response())
    };
    r.await.unwrap_or_else(IntoResponse::into_response)
}

/// The request's echo as a label value, within the manager's label limit:
/// the environment and files are left out (echoed empty) when they do not
/// fit, then the command line (echoed from the argv), then cwd and hostname.
fn echo_label(req: &SpawnRequest, timeout: i64, truncate: u64) -> String {
    let mut echo = Echo {
        image: req.image.clone(),
        hostname: req.hostname.clone().unwrap_or_default(),
        shell: req.shell,
        command: Some(req.command.clone()),
        args: Some(req.args.clone()),
        cwd: req.cwd.clone().unwrap_or_default(),
        disposable: req.disposable,
        timeout,
        truncate_output_at: truncate,
        preserve_env: req.preserve_env,
        env: req.env.clone(),
        files: req
            .files
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::to_value(v).unwrap_or_default()))
            .collect(),
    };
    let fits = |e: &Echo| {
        let s = serde_json::to_string(e).unwrap_or_default();
        (s.len() <= CommandSpec::MAX_LABEL_VALUE_BYTES).then_some(s)
    };
    let shrink: [fn(&mut Echo); 4] = [
        |e| e.env.clear(),
        |e| e.files.clear(),
        |e| (e.command, e.args) = (None, None),
        |e| (e.cwd, e.hostname) = (String::new(), String::new()),
    ];
    for step in shrink {
        if let Some(s) = fits(&echo) {
            return s;
        }
        step(&mut echo);
    }
    fits(&echo).unwrap_or_else(|| "{}".to_owned())
}

/// The run's working directory: as the other dialects, in the files root
/// (`--files-root`) when there is one: an empty `cwd` is the root, a
/// relative one starts there. Without a root, the daemon's directory.
fn cwd(st: &AppState, asked: Option<&str>) -> Option<std::path::PathBuf> {
    let asked = asked.filter(|c| !c.is_empty()).map(std::path::Path::new);
    match (&st.cfg.files_root, asked) {
        (Some(root), Some(c)) => Some(root.join(c)),
        (Some(root), None) => Some(root.clone()),
        (None, c) => c.map(Into::into),
    }
}

/// A `StreamDescription`'s bytes.
fn decode_stream(s: &StreamDescription) -> Result<Bytes, Refusal> {
    match s.encoding.as_deref().unwrap_or("base64") {
        "ascii" => Ok(Bytes::from(s.value.clone().into_bytes())),
        "base64" => base64::engine::general_purpose::STANDARD
            .decode(&s.value)
            .map(Bytes::from)
            .map_err(|e| Refusal::invalid(format!("stdin is not valid base64: {e}"))),
        other => Err(Refusal::invalid(format!("stdin encoding {other:?} is not ascii or base64"))),
    }
}

/// `s` quoted for a POSIX shell.
fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|c| c.is_ascii_alphanumeric() || b"-_./=:@%+,".contains(&c)) {
        return s.to_owned();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A fresh operation id: 16 random bytes as a UUID.
fn new_operation_id() -> Result<String, Refusal> {
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| Refusal::internal(format!("reading /dev/urandom: {e}")))?;
    Ok(uuid_string(b))
}

/// Puts the request's files in place (atomically, parents made, through
/// the files root's confinement), before the command starts.
async fn put_files(st: &AppState, files: &BTreeMap<String, FileSpec>) -> Result<(), Refusal> {
    if files.is_empty() {
        return Ok(());
    }
    let root = st.files.clone().ok_or_else(|| Refusal::internal("the daemon has no usable files root"))?;
    let mut work = Vec::with_capacity(files.len());
    for (dst, f) in files {
        let uuid = parse_uuid(&f.uuid)
            .ok_or_else(|| Refusal::invalid(format!("file {dst}: {:?} is not a UUID", f.uuid)))?;
        let data = blobs::get(&uuid).ok_or_else(|| {
            Refusal::not_found(format!("file {dst}: no uploaded file {uuid} (upload it with POST /v1/files)"))
        })?;
        let mode = match f.mode.as_deref() {
            None | Some("") => 0o644,
            Some(m) => u32::from_str_radix(m.trim_start_matches("0o"), 8)
                .ok()
                .filter(|&m| m <= 0o7777)
                .ok_or_else(|| Refusal::invalid(format!("file {dst}: mode {m:?} is not octal bits")))?,
        };
        if dst.is_empty() || dst.ends_with('/') {
            return Err(Refusal::invalid(format!("file destination {dst:?} is not a file path")));
        }
        work.push((dst.clone(), data, mode, f.uid, f.gid));
    }
    let as_root = rustix::process::geteuid().is_root();
    tokio::task::spawn_blocking(move || {
        for (dst, data, mode, uid, gid) in work {
            let mut up = root.create(&dst, Some(mode), true)?;
            let mut file = up.file()?;
            file.write_all(&data).map_err(|e| tether_files::FileError::from_io(e, &dst))?;
            drop(file);
            up.commit()?;
            if as_root {
                root.set_owner(&dst, uid, gid)?;
            }
        }
        Ok::<_, Refusal>(())
    })
    .await
    .map_err(|e| Refusal::internal(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_the_shell() {
        assert_eq!(shell_quote("a"), "a");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn the_echo_always_fits_a_label() {
        let long = "x".repeat(5000);
        let req: SpawnRequest = serde_json::from_value(json!({
            "command": long, "image": "tag:local", "cwd": long, "hostname": long,
            "env": { "A": long }, "args": [long],
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let s = echo_label(&req, 5, 10);
        assert!(s.len() <= CommandSpec::MAX_LABEL_VALUE_BYTES, "{}", s.len());
        let e: Echo = serde_json::from_str(&s).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((e.timeout, e.truncate_output_at), (5, 10));
    }
}
