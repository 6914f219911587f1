//! A bare tether protocol client: one tokio-tungstenite WebSocket speaking
//! `tether.v1` (MessagePack) directly, with no driver task, channels,
//! reconnect or stdin window in between, so that a measurement through it
//! is the daemon's cost plus the wire and nothing of `tether-client`.

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, header};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::msgpack::{self, Value};
use crate::procs::Daemon;
use crate::wsclient::Ws;

/// A decoded server frame, reduced to what the benches look at.
#[derive(Debug)]
pub(crate) enum Frame {
    /// `started`: the reply to `start`.
    Started { id: u64, command: String },
    /// `attached`: the reply to `attach`.
    Attached { id: u64 },
    /// `output` of stdout (stderr is empty on a PTY).
    Output { offset: u64, data: Bytes },
    /// `gap`: `[requested, first_held)` was lost.
    Gap { requested: u64, first_held: u64 },
    /// `screen`: the restored screen; `frame_bytes` is the whole frame.
    Screen { offset: u64, data: Bytes, frame_bytes: usize },
    /// `exit`: which command, its exit code (none if a signal or a kill
    /// ended it) and its final stdout offset.
    Exit { command: String, code: Option<i64>, stdout_bytes: u64 },
    /// `shell`: the reply to `shell_create`; `created` is false when a
    /// live shell of that name already existed.
    Shell { id: u64, created: bool },
    /// `ok`.
    Ok { id: u64 },
    /// Anything else (`resized`, `hello`, ...), by type.
    Other(String),
}

/// One connection to the daemon.
pub(crate) struct TetherWs {
    ws: Ws,
    next_id: u64,
}

impl TetherWs {
    /// Opens `/v1/ws` (TCP, HTTP upgrade with the bearer token) and reads
    /// the `hello`. Nagle is off, as in `tether-client`.
    pub(crate) async fn connect(d: &Daemon) -> Result<TetherWs> {
        let url = format!("{}/v1/ws", d.url.replacen("http://", "ws://", 1));
        let mut req = url.as_str().into_client_request()?;
        req.headers_mut()
            .insert(header::AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {}", d.token))?);
        req.headers_mut().insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("tether.v1"));
        let mut cfg = WebSocketConfig::default();
        cfg.max_message_size = Some(64 << 20);
        cfg.max_frame_size = Some(64 << 20);
        let (ws, _) = tokio_tungstenite::connect_async_with_config(req, Some(cfg), true)
            .await
            .with_context(|| format!("connecting to {url}"))?;
        let mut c = TetherWs { ws, next_id: 1 };
        match c.recv().await? {
            Frame::Other(t) if t == "hello" => Ok(c),
            other => bail!("the first frame is not hello: {other:?}"),
        }
    }

    /// A fresh request id.
    pub(crate) fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Sends one message.
    pub(crate) async fn send(&mut self, msg: &Value) -> Result<()> {
        self.ws.send(Message::Binary(msgpack::encode(msg).into())).await.context("sending a frame")
    }

    /// The next frame. An `error` frame, a close or a failure is an error.
    pub(crate) async fn recv(&mut self) -> Result<Frame> {
        loop {
            let b = match self.ws.next().await {
                Some(Ok(Message::Binary(b))) => b,
                Some(Ok(Message::Close(c))) => bail!("the daemon closed the connection: {c:?}"),
                None => bail!("the connection ended"),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e).context("the connection failed"),
            };
            return parse(&b);
        }
    }

    /// `start` with `spec`; returns the command id once `started` arrives.
    pub(crate) async fn start(&mut self, spec: Value) -> Result<String> {
        let id = self.id();
        self.send(&start_msg(id, spec)).await?;
        loop {
            match self.recv().await? {
                Frame::Started { id: got, command } if got == id => return Ok(command),
                Frame::Other(_) => {}
                other => bail!("unexpected frame before started: {other:?}"),
            }
        }
    }

    /// Sends `stdin` bytes without waiting; returns the request id.
    pub(crate) async fn stdin(&mut self, command: &str, data: &'static [u8]) -> Result<u64> {
        let id = self.id();
        self.send(&Value::map([
            ("type", Value::str("stdin")),
            ("id", Value::Uint(id)),
            ("command", Value::str(command)),
            ("data", Value::Bin(Bytes::from_static(data))),
        ]))
        .await?;
        Ok(id)
    }

    /// Sends a request that is answered by `ok` (`kill`, `detach`) and
    /// waits for it, skipping output.
    pub(crate) async fn request_ok(&mut self, kind: &str, command: &str) -> Result<()> {
        let id = self.id();
        self.send(&Value::map([
            ("type", Value::str(kind)),
            ("id", Value::Uint(id)),
            ("command", Value::str(command)),
        ]))
        .await?;
        self.until_ok(id).await
    }

    /// `shell_create` of a shell named `name` with every other option at
    /// its default; whether this request created it.
    pub(crate) async fn shell_create(&mut self, name: &str) -> Result<bool> {
        let id = self.id();
        self.send(&shell_create_msg(id, name)).await?;
        loop {
            match self.recv().await? {
                Frame::Shell { id: got, created } if got == id => return Ok(created),
                Frame::Other(_) => {}
                other => bail!("unexpected frame before shell: {other:?}"),
            }
        }
    }

    /// `shell_close` of the shell named `name`, until its `ok`.
    pub(crate) async fn shell_close(&mut self, name: &str) -> Result<()> {
        let id = self.id();
        self.send(&shell_close_msg(id, name)).await?;
        self.until_ok(id).await
    }

    /// Sends `msg`, an attached `start` or `shell_run` with request id
    /// `id`, and reads until the `exit` of the command it started, skipping
    /// its output. Returns the command id and its exit code.
    pub(crate) async fn run_to_exit(&mut self, id: u64, msg: &Value) -> Result<(String, Option<i64>)> {
        self.send(msg).await?;
        let command = loop {
            match self.recv().await? {
                Frame::Started { id: got, command } if got == id => break command,
                Frame::Other(_) => {}
                other => bail!("unexpected frame before started: {other:?}"),
            }
        };
        loop {
            match self.recv().await? {
                Frame::Exit { command: got, code, .. } if got == command => return Ok((command, code)),
                Frame::Output { .. } | Frame::Other(_) => {}
                other => bail!("unexpected frame before the exit of {command}: {other:?}"),
            }
        }
    }

    /// Reads until the `ok` of request `id`, skipping anything else.
    async fn until_ok(&mut self, id: u64) -> Result<()> {
        loop {
            match self.recv().await? {
                Frame::Ok { id: got } if got == id => return Ok(()),
                _ => {}
            }
        }
    }

    /// Sends a close frame (best effort) and drops the connection.
    pub(crate) async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// `start` with request id `id`.
pub(crate) fn start_msg(id: u64, spec: Value) -> Value {
    Value::map([("type", Value::str("start")), ("id", Value::Uint(id)), ("spec", spec)])
}

/// `shell_create` of a shell named `name`, every other option at its
/// default.
pub(crate) fn shell_create_msg(id: u64, name: &str) -> Value {
    Value::map([
        ("type", Value::str("shell_create")),
        ("id", Value::Uint(id)),
        ("spec", Value::map([("name", Value::str(name))])),
    ])
}

/// `shell_run` of `script` in `shell`, attached (the default, so absent
/// as the daemon's own encoder leaves it), with stdin closed, unpaced.
pub(crate) fn shell_run_msg(id: u64, shell: &str, script: &str) -> Value {
    Value::map([
        ("type", Value::str("shell_run")),
        ("id", Value::Uint(id)),
        ("shell", Value::str(shell)),
        ("spec", Value::map([("script", Value::str(script)), ("close_stdin", Value::Bool(true))])),
    ])
}

/// `shell_close` of `shell`.
pub(crate) fn shell_close_msg(id: u64, shell: &str) -> Value {
    Value::map([("type", Value::str("shell_close")), ("id", Value::Uint(id)), ("shell", Value::str(shell))])
}

/// `{rows, cols}`.
pub(crate) fn size(rows: u16, cols: u16) -> Value {
    Value::map([("rows", Value::Uint(rows as u64)), ("cols", Value::Uint(cols as u64))])
}

fn parse(b: &Bytes) -> Result<Frame> {
    let v = msgpack::decode(b)?;
    let kind = v.get("type").and_then(Value::as_str).context("a frame without a type")?;
    let u = |k: &str| v.get(k).and_then(Value::as_u64).with_context(|| format!("{kind} without {k}"));
    let bin =
        |k: &str| v.get(k).and_then(Value::as_bin).cloned().with_context(|| format!("{kind} without {k}"));
    Ok(match kind {
        "started" => Frame::Started {
            id: u("id")?,
            command: v.get("command").and_then(Value::as_str).context("started without command")?.to_owned(),
        },
        "attached" => Frame::Attached { id: u("id")? },
        "output" => {
            if v.get("stream").and_then(Value::as_str) != Some("stdout") {
                bail!("output on a stream other than stdout: {v:?}");
            }
            Frame::Output { offset: u("offset")?, data: bin("data")? }
        }
        "gap" => Frame::Gap { requested: u("requested")?, first_held: u("first_held")? },
        "screen" => Frame::Screen { offset: u("offset")?, data: bin("data")?, frame_bytes: b.len() },
        "exit" => {
            let status = v.get("status").context("exit without status")?;
            Frame::Exit {
                command: v.get("command").and_then(Value::as_str).context("exit without command")?.to_owned(),
                code: match status.get("code") {
                    None | Some(Value::Nil) => None,
                    Some(Value::Uint(n)) => Some(i64::try_from(*n).context("exit code out of range")?),
                    Some(Value::Int(n)) => Some(*n),
                    Some(other) => bail!("exit with a code of {other:?}"),
                },
                stdout_bytes: status
                    .get("stdout_bytes")
                    .and_then(Value::as_u64)
                    .context("exit without status.stdout_bytes")?,
            }
        }
        "ok" => Frame::Ok { id: u("id")? },
        "shell" => Frame::Shell {
            id: u("id")?,
            created: match v.get("created") {
                Some(Value::Bool(b)) => *b,
                _ => bail!("shell without created"),
            },
        },
        "error" => bail!(
            "the daemon answered {}: {}",
            v.get("code").and_then(Value::as_str).unwrap_or("?"),
            v.get("message").and_then(Value::as_str).unwrap_or("?")
        ),
        other => Frame::Other(other.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../protocol/vectors");

    fn vector(name: &str) -> Bytes {
        let path = format!("{VECTORS}/{name}.msgpack");
        Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
    }

    #[test]
    fn shell_close_encodes_as_the_golden_frame() {
        assert_eq!(msgpack::encode(&shell_close_msg(24, "build")), vector("client_shell_close").to_vec());
    }

    #[test]
    fn shell_messages_carry_the_fields_the_spec_names() {
        let create = shell_create_msg(20, "build");
        assert_eq!(create.get("spec").and_then(|s| s.get("name")).and_then(Value::as_str), Some("build"));
        let run = shell_run_msg(21, "build", "true");
        assert_eq!(run.get("shell").and_then(Value::as_str), Some("build"));
        let spec = run.get("spec").expect("spec");
        assert_eq!(spec.get("script").and_then(Value::as_str), Some("true"));
        assert_eq!(spec.get("close_stdin"), Some(&Value::Bool(true)));
        assert_eq!(spec.get("attach"), None, "attach is left at its default, true");
    }

    #[test]
    fn shell_exit_and_started_replies_parse() {
        match parse(&vector("server_shell")).expect("parses") {
            Frame::Shell { id: 20, created: true } => {}
            other => panic!("server_shell parsed as {other:?}"),
        }
        match parse(&vector("server_exit")).expect("parses") {
            Frame::Exit { command, code: None, stdout_bytes: 5368774656 } => {
                assert_eq!(command, "c-5f0c9a7e21b34d08");
            }
            other => panic!("server_exit parsed as {other:?}"),
        }
        let exit = Value::map([
            ("type", Value::str("exit")),
            ("command", Value::str("c-1")),
            ("status", Value::map([("code", Value::Uint(0)), ("stdout_bytes", Value::Uint(0))])),
        ]);
        match parse(&Bytes::from(msgpack::encode(&exit))).expect("parses") {
            Frame::Exit { code: Some(0), .. } => {}
            other => panic!("exit with code 0 parsed as {other:?}"),
        }
    }
}
