//! Bodies of the plain HTTP routes (`POST /v1/exec`, `POST /v1/code`):
//! one request, one response, JSON or MessagePack.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{CommandId, ErrorCode, ExitReason, Payload};

/// `POST /v1/exec`: run a command to its end and answer with its output.
/// Exactly one of `command` and `argv`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExecRequest {
    /// A shell command line, run as `<shell_program> -c <command>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Program and arguments, run without a shell.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub argv: Vec<String>,
    /// The shell for `command` (default: the daemon's, `/bin/bash`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shell_program: Option<String>,
    /// Options shared with `POST /v1/code`.
    #[serde(flatten)]
    pub options: RunOptions,
}

/// `POST /v1/code`: run a snippet with an interpreter. The code is written
/// to a private file that the interpreter runs, so it needs no quoting.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CodeRequest {
    /// The interpreter: `python3`, `node`, `bash`, `sh`, or one the daemon
    /// was configured with (`serve --interpreter NAME=PROGRAM`).
    pub language: String,
    /// The source text.
    pub code: String,
    /// Arguments after the file (`sys.argv[1:]`, `process.argv.slice(2)`,
    /// `$1...`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Options shared with `POST /v1/exec`.
    #[serde(flatten)]
    pub options: RunOptions,
}

/// How to run a one-shot command.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunOptions {
    /// Working directory (default: the daemon's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Environment variables added to the daemon's environment.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Bytes for stdin (then EOF). Without it (and `stdin_text`), stdin is
    /// empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdin: Option<Payload>,
    /// Text for stdin, for JSON clients that would rather not base64.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdin_text: Option<String>,
    /// Wall-clock limit; past it the command gets SIGTERM, then SIGKILL
    /// after `kill_grace_ms`. Absent: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Most output bytes (stdout and stderr together) kept and returned;
    /// past it the command runs on, its further output is read and dropped,
    /// and `truncated` is set. Default 16 MiB, at most 1 GiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_output_bytes: Option<u64>,
    /// SIGTERM-to-SIGKILL grace on timeout (default 2 s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kill_grace_ms: Option<u64>,
    /// A name shown in listings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Labels shown in listings.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// The answer to `POST /v1/exec` and `POST /v1/code`: how the command ended
/// and everything it wrote (up to `max_output_bytes`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecResponse {
    /// The command's id (it stays listed and attachable for its TTL).
    pub command: CommandId,
    /// Exit code, if it exited normally.
    pub exit_code: Option<i32>,
    /// Terminating signal, if a signal ended it.
    pub signal: Option<i32>,
    /// Why it ended.
    pub reason: ExitReason,
    /// Wall time from spawn to exit, in milliseconds.
    pub duration_ms: u64,
    /// What it wrote to stdout. MessagePack: `bin`. JSON: see
    /// `stdout_encoding`.
    pub stdout: Payload,
    /// What it wrote to stderr, like `stdout`.
    pub stderr: Payload,
    /// JSON only: `utf8` when `stdout` is the text itself, `base64` when the
    /// bytes were not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout_encoding: Option<TextEncoding>,
    /// JSON only: like `stdout_encoding`, for `stderr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr_encoding: Option<TextEncoding>,
    /// Whether output past `max_output_bytes` was dropped.
    pub truncated: bool,
}

/// How a byte string is written in a JSON response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextEncoding {
    /// The string is the bytes (they were valid UTF-8).
    Utf8,
    /// The string is the bytes in base64 (standard alphabet, padded).
    Base64,
}

/// The body of every HTTP error response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpError {
    /// Machine-readable code (the same codes as the WebSocket `error`).
    pub code: ErrorCode,
    /// Human-readable explanation.
    pub message: String,
    /// The OS error number behind it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<i32>,
}

/// What the file routes say about a path (`GET /v1/files/stat`, the
/// entries of `GET /v1/files/list`, the answer to a `PUT`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStat {
    /// Its name (the last component of the path).
    pub name: String,
    /// `file`, `dir`, `symlink`, `fifo`, `socket`, `char_device` or
    /// `block_device`. A final symlink is not followed.
    pub kind: String,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits, e.g. 420 (0644).
    pub mode: u32,
    /// Last modification, milliseconds since the Unix epoch.
    pub mtime_ms: i64,
    /// A symlink's target, as stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// The answer to `GET /v1/files/list`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileList {
    /// The entries, sorted by name, without `.` and `..`.
    pub entries: Vec<FileStat>,
}

impl ExecResponse {
    /// The JSON body: `stdout`/`stderr` as their text with encoding `utf8`
    /// when they are valid UTF-8, else base64 with encoding `base64`.
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(map) = v.as_object_mut() {
            for (field, bytes) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
                let (text, enc) = match std::str::from_utf8(bytes.as_bytes()) {
                    Ok(t) => (serde_json::Value::String(t.to_owned()), TextEncoding::Utf8),
                    Err(_) => (map.get(field).cloned().unwrap_or_default(), TextEncoding::Base64),
                };
                map.insert(field.to_owned(), text);
                map.insert(format!("{field}_encoding"), serde_json::to_value(enc).unwrap_or_default());
            }
        }
        serde_json::to_vec(&v).unwrap_or_default()
    }

    /// Reads a JSON body written by [`ExecResponse::to_json`].
    pub fn from_json(body: &[u8]) -> Result<ExecResponse, serde_json::Error> {
        let mut v: serde_json::Value = serde_json::from_slice(body)?;
        let mut text = Vec::new();
        if let Some(map) = v.as_object_mut() {
            for field in ["stdout", "stderr"] {
                let enc = map.get(&format!("{field}_encoding")).and_then(|e| e.as_str()).map(str::to_owned);
                if enc.as_deref() == Some("utf8") {
                    // Stand-in base64 so the struct decodes; the text goes in after.
                    let s = map.get(field).and_then(|s| s.as_str()).unwrap_or_default().to_owned();
                    map.insert(field.to_owned(), serde_json::Value::String(String::new()));
                    text.push((field, s));
                }
            }
        }
        let mut r: ExecResponse = serde_json::from_value(v)?;
        for (field, s) in text {
            let p = Payload::from(s.into_bytes());
            if field == "stdout" {
                r.stdout = p;
            } else {
                r.stderr = p;
            }
        }
        Ok(r)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::{Encoding, decode, encode};

    #[test]
    fn requests_round_trip_in_both_encodings() {
        let req = ExecRequest {
            argv: vec!["cat".into()],
            options: RunOptions {
                stdin: Some(Payload::from(&b"\x00\xffbin"[..])),
                timeout_ms: Some(5),
                env: [("A".to_owned(), "1".to_owned())].into(),
                ..RunOptions::default()
            },
            ..ExecRequest::default()
        };
        for enc in [Encoding::MsgPack, Encoding::Json] {
            let back: ExecRequest = decode(&encode(&req, enc), enc).unwrap();
            assert_eq!(back, req, "{enc:?}");
        }
    }

    #[test]
    fn json_responses_carry_text_or_base64() {
        let mut r = ExecResponse {
            command: CommandId("c-1".into()),
            exit_code: Some(0),
            signal: None,
            reason: ExitReason::Exited,
            duration_ms: 3,
            stdout: Payload::from(&b"hello\n"[..]),
            stderr: Payload::from(&b"\xff\xfe"[..]),
            stdout_encoding: None,
            stderr_encoding: None,
            truncated: false,
        };
        let json = r.to_json();
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["stdout"], "hello\n");
        assert_eq!(v["stdout_encoding"], "utf8");
        assert_eq!(v["stderr"], "//4=");
        assert_eq!(v["stderr_encoding"], "base64");
        let back = ExecResponse::from_json(&json).unwrap();
        r.stdout_encoding = Some(TextEncoding::Utf8);
        r.stderr_encoding = Some(TextEncoding::Base64);
        assert_eq!(back, r);
    }
}
