//! A bare tether protocol client: one tokio-tungstenite WebSocket speaking
//! `tether.v1` (MessagePack) directly, with no driver task, channels,
//! reconnect or stdin window in between, so that a measurement through it
//! is the daemon's cost plus the wire and nothing of `tether-client`.
//! Frames are `tether-proto`'s own messages and encoding; only the bytes
//! of an `output` frame are taken from the frame without a copy (see
//! [`OutputView`]).

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tether_proto::{
    ClientMsg, CommandId, Encoding, Payload, PtySpec, ReqId, ServerMsg, ShellRunSpec, ShellSpec, StartSpec,
    Stream,
};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, header};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::procs::Daemon;
use crate::wsclient::Ws;

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
        req.headers_mut().insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(tether_proto::SUBPROTOCOL_MSGPACK),
        );
        let mut cfg = WebSocketConfig::default();
        cfg.max_message_size = Some(64 << 20);
        cfg.max_frame_size = Some(64 << 20);
        let (ws, _) = tokio_tungstenite::connect_async_with_config(req, Some(cfg), true)
            .await
            .with_context(|| format!("connecting to {url}"))?;
        let mut c = TetherWs { ws, next_id: 1 };
        match c.recv().await? {
            ServerMsg::Hello { .. } => Ok(c),
            other => bail!("the first frame is not hello: {other:?}"),
        }
    }

    /// A fresh request id.
    pub(crate) fn id(&mut self) -> ReqId {
        self.next_id += 1;
        ReqId(self.next_id)
    }

    /// Sends one message.
    pub(crate) async fn send(&mut self, msg: &ClientMsg) -> Result<()> {
        let frame = tether_proto::encode(msg, Encoding::MsgPack);
        self.ws.send(Message::Binary(frame.into())).await.context("sending a frame")
    }

    /// The next message. An `error`, `output` on stderr (which a PTY does
    /// not have), a close or a failure is an error.
    pub(crate) async fn recv(&mut self) -> Result<ServerMsg> {
        Ok(self.recv_sized().await?.0)
    }

    /// [`TetherWs::recv`], with the size of the frame that carried it.
    pub(crate) async fn recv_sized(&mut self) -> Result<(ServerMsg, usize)> {
        loop {
            let b = match self.ws.next().await {
                Some(Ok(Message::Binary(b))) => b,
                Some(Ok(Message::Close(c))) => bail!("the daemon closed the connection: {c:?}"),
                None => bail!("the connection ended"),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e).context("the connection failed"),
            };
            return Ok((parse(&b)?, b.len()));
        }
    }

    /// `start` with `spec`; returns the command id once `started` arrives.
    pub(crate) async fn start(&mut self, spec: StartSpec) -> Result<CommandId> {
        let id = self.id();
        self.send(&ClientMsg::Start { id, spec }).await?;
        loop {
            match self.recv().await? {
                ServerMsg::Started { id: got, command, .. } if got == id => return Ok(command),
                other if is_other(&other) => {}
                other => bail!("unexpected frame before started: {other:?}"),
            }
        }
    }

    /// Sends `stdin` bytes without waiting; returns the request id.
    pub(crate) async fn stdin(&mut self, command: &CommandId, data: &'static [u8]) -> Result<ReqId> {
        let id = self.id();
        let data = Payload(Bytes::from_static(data));
        self.send(&ClientMsg::Stdin { id, command: command.clone(), data, writer: None, offset: None })
            .await?;
        Ok(id)
    }

    /// Sends the request `msg(id)`, one answered by `ok` (`kill`,
    /// `detach`, `remove`), and waits for it, skipping output.
    pub(crate) async fn request_ok(&mut self, msg: impl FnOnce(ReqId) -> ClientMsg) -> Result<()> {
        let id = self.id();
        self.send(&msg(id)).await?;
        self.until_ok(id).await
    }

    /// `shell_create` of a shell named `name` with every other option at
    /// its default; whether this request created it.
    pub(crate) async fn shell_create(&mut self, name: &str) -> Result<bool> {
        let id = self.id();
        self.send(&shell_create_msg(id, name)).await?;
        loop {
            match self.recv().await? {
                ServerMsg::Shell { id: got, created, .. } if got == id => return Ok(created),
                other if is_other(&other) => {}
                other => bail!("unexpected frame before shell: {other:?}"),
            }
        }
    }

    /// `shell_close` of the shell named `name`, until its `ok`.
    pub(crate) async fn shell_close(&mut self, name: &str) -> Result<()> {
        self.request_ok(|id| shell_close_msg(id, name)).await
    }

    /// Sends `msg`, an attached `start` or `shell_run` with request id
    /// `id`, and reads until the `exit` of the command it started, skipping
    /// its output. Returns the command id and its exit code.
    pub(crate) async fn run_to_exit(
        &mut self,
        id: ReqId,
        msg: &ClientMsg,
    ) -> Result<(CommandId, Option<i32>)> {
        self.send(msg).await?;
        let command = loop {
            match self.recv().await? {
                ServerMsg::Started { id: got, command, .. } if got == id => break command,
                other if is_other(&other) => {}
                other => bail!("unexpected frame before started: {other:?}"),
            }
        };
        loop {
            match self.recv().await? {
                ServerMsg::Exit { command: got, status } if got == command => {
                    return Ok((command, status.code));
                }
                ServerMsg::Output { .. } => {}
                other if is_other(&other) => {}
                other => bail!("unexpected frame before the exit of {command}: {other:?}"),
            }
        }
    }

    /// Reads until the `ok` of request `id`, skipping anything else.
    async fn until_ok(&mut self, id: ReqId) -> Result<()> {
        loop {
            match self.recv().await? {
                ServerMsg::Ok { id: got } if got == id => return Ok(()),
                _ => {}
            }
        }
    }

    /// Sends a close frame (best effort) and drops the connection.
    pub(crate) async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// Whether `m` is a message the request loops above pass over: one that is
/// neither a reply to a request nor part of a command's output (`hello`,
/// `resized`, listings).
pub(crate) fn is_other(m: &ServerMsg) -> bool {
    matches!(
        m,
        ServerMsg::Hello { .. }
            | ServerMsg::Resized { .. }
            | ServerMsg::List { .. }
            | ServerMsg::Status { .. }
            | ServerMsg::ShellList { .. }
            | ServerMsg::ShellHistory { .. }
    )
}

/// `shell_create` of a shell named `name`, every other option at its
/// default.
pub(crate) fn shell_create_msg(id: ReqId, name: &str) -> ClientMsg {
    ClientMsg::ShellCreate { id, spec: ShellSpec { name: Some(name.to_owned()), ..ShellSpec::default() } }
}

/// `shell_run` of `script` in `shell`, attached (the default, so absent
/// as the daemon's own encoder leaves it), with stdin closed, unpaced.
pub(crate) fn shell_run_msg(id: ReqId, shell: &str, script: &str) -> ClientMsg {
    let spec = ShellRunSpec { script: script.to_owned(), close_stdin: true, ..ShellRunSpec::default() };
    ClientMsg::ShellRun { id, shell: shell.to_owned(), spec }
}

/// `shell_close` of `shell`.
pub(crate) fn shell_close_msg(id: ReqId, shell: &str) -> ClientMsg {
    ClientMsg::ShellClose { id, shell: shell.to_owned() }
}

/// A terminal of `rows` x `cols` with the default `TERM`.
pub(crate) fn pty(rows: u16, cols: u16) -> Option<PtySpec> {
    Some(PtySpec { rows, cols, term: None })
}

/// The fields of a server frame that make up an `output` message, with
/// `command` and `data` borrowed from the frame.
///
/// `tether_proto::decode` copies a payload twice (out of its reader, then
/// out of serde's buffer for the tagged enum) into a fresh allocation each
/// time: in P2 that doubled the bench client's CPU. Read through this view
/// with `rmp_serde::from_slice`, `data` becomes a `Bytes` slice of the
/// received frame instead, as the bare client has always done, so the
/// measuring loop costs what it did. Every other frame, and an `output`
/// frame missing a field, goes through `tether_proto::decode`. (Bytes after
/// an `output` map go unnoticed here; the daemon's encoder writes none.)
#[derive(Deserialize)]
struct OutputView<'a> {
    /// The message type: only `output` fits, so that the view of any
    /// other frame fails as soon as its `type` is read (the first field,
    /// as the daemon encodes it), before the rest is looked at.
    #[serde(rename = "type")]
    kind: OutputTag,
    /// `output.command`.
    #[serde(borrow, default)]
    command: Option<&'a str>,
    /// `output.stream`.
    #[serde(default)]
    stream: Option<Stream>,
    /// `output.offset`.
    #[serde(default)]
    offset: Option<u64>,
    /// `output.data`, a slice of the frame.
    #[serde(borrow, default)]
    data: Option<&'a [u8]>,
}

/// The `type` of an `output` message.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum OutputTag {
    /// `output`.
    Output,
}

/// Decodes a frame (see [`OutputView`]).
fn decode(frame: &Bytes) -> Result<ServerMsg> {
    if let Ok(OutputView {
        kind: OutputTag::Output,
        command: Some(command),
        stream: Some(stream),
        offset: Some(offset),
        data: Some(data),
    }) = rmp_serde::from_slice(frame)
    {
        let data = Payload(frame.slice_ref(data));
        return Ok(ServerMsg::Output { command: CommandId(command.to_owned()), stream, offset, data });
    }
    Ok(tether_proto::decode(frame, Encoding::MsgPack)?)
}

/// Decodes a frame; an `error` and `output` on stderr are errors.
fn parse(b: &Bytes) -> Result<ServerMsg> {
    let msg = decode(b)?;
    match msg {
        ServerMsg::Output { stream: Stream::Stderr, .. } => {
            bail!("output on a stream other than stdout: {msg:?}")
        }
        ServerMsg::Error { code, message, .. } => bail!("the daemon answered {code:?}: {message}"),
        msg => Ok(msg),
    }
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
        let frame = tether_proto::encode(&shell_close_msg(ReqId(24), "build"), Encoding::MsgPack);
        assert_eq!(frame, vector("client_shell_close"));
    }

    #[test]
    fn shell_messages_carry_the_fields_the_spec_names() {
        let json = |m: &ClientMsg| -> serde_json::Value {
            serde_json::from_slice(&tether_proto::encode(m, Encoding::Json)).expect("valid json")
        };
        let create = json(&shell_create_msg(ReqId(20), "build"));
        assert_eq!(create["spec"]["name"], "build");
        let run = json(&shell_run_msg(ReqId(21), "build", "true"));
        assert_eq!(run["shell"], "build");
        let spec = &run["spec"];
        assert_eq!(spec["script"], "true");
        assert_eq!(spec["close_stdin"], true);
        assert_eq!(spec.get("attach"), None, "attach is left at its default, true");
    }

    #[test]
    fn shell_exit_and_started_replies_parse() {
        match parse(&vector("server_shell")).expect("parses") {
            ServerMsg::Shell { id: ReqId(20), created: true, .. } => {}
            other => panic!("server_shell parsed as {other:?}"),
        }
        match parse(&vector("server_exit")).expect("parses") {
            ServerMsg::Exit { command, status } => {
                assert_eq!(command.0, "c-5f0c9a7e21b34d08");
                assert_eq!((status.code, status.stdout_bytes), (None, 5368774656));
            }
            other => panic!("server_exit parsed as {other:?}"),
        }
        let mut exit: serde_json::Value =
            serde_json::from_slice(&std::fs::read(format!("{VECTORS}/server_exit.json")).expect("read json"))
                .expect("valid json");
        exit["status"]["code"] = 0.into();
        let exit: ServerMsg = serde_json::from_value(exit).expect("an exit");
        match parse(&tether_proto::encode(&exit, Encoding::MsgPack).into()).expect("parses") {
            ServerMsg::Exit { status, .. } if status.code == Some(0) => {}
            other => panic!("exit with code 0 parsed as {other:?}"),
        }
    }

    #[test]
    fn errors_and_stderr_output_are_refused() {
        assert!(parse(&vector("server_error")).is_err());
        let mut output: ServerMsg = tether_proto::decode(&vector("server_output"), Encoding::MsgPack)
            .expect("the golden output decodes");
        assert!(
            parse(&tether_proto::encode(&output, Encoding::MsgPack).into()).is_ok(),
            "stdout output parses"
        );
        if let ServerMsg::Output { stream, .. } = &mut output {
            *stream = Stream::Stderr;
        }
        assert!(parse(&tether_proto::encode(&output, Encoding::MsgPack).into()).is_err());
    }

    #[test]
    fn output_is_sliced_from_the_frame_and_decodes_as_tether_proto_does() {
        for name in ["server_output", "server_screen", "server_exit", "server_gap", "server_hello"] {
            let frame = vector(name);
            let ours = decode(&frame).unwrap_or_else(|e| panic!("{name}: {e:#}"));
            let theirs: ServerMsg = tether_proto::decode(&frame, Encoding::MsgPack).expect("decodes");
            assert_eq!(ours, theirs, "{name}");
        }
        let frame = vector("server_output");
        let Ok(ServerMsg::Output { data, .. }) = decode(&frame) else { panic!("not an output") };
        let range = frame.as_ptr_range();
        assert!(range.contains(&data.as_bytes().as_ptr()), "the payload was copied");
        // A frame cut short fails as it does in tether-proto.
        assert!(decode(&frame.slice(..frame.len() - 1)).is_err());
    }
}
