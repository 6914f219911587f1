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
    /// `exit`, with the final stdout offset.
    Exit { stdout_bytes: u64 },
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
        self.send(&Value::map([("type", Value::str("start")), ("id", Value::Uint(id)), ("spec", spec)]))
            .await?;
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
        "exit" => Frame::Exit {
            stdout_bytes: v
                .get("status")
                .and_then(|s| s.get("stdout_bytes"))
                .and_then(Value::as_u64)
                .context("exit without status.stdout_bytes")?,
        },
        "ok" => Frame::Ok { id: u("id")? },
        "error" => bail!(
            "the daemon answered {}: {}",
            v.get("code").and_then(Value::as_str).unwrap_or("?"),
            v.get("message").and_then(Value::as_str).unwrap_or("?")
        ),
        other => Frame::Other(other.to_owned()),
    })
}
