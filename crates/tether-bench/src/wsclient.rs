//! WebSocket client helpers for the peers: the stream type, how websocketd
//! ends a connection, and terminado's JSON-array protocol (`["stdin", text]`
//! in; `["setup", {}]`, `["stdout", text]`, `["disconnect", 1]` out).

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// A client WebSocket to a peer.
pub(crate) type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next terminado message, `["kind", payload...]`, as (kind, text of
/// the first payload if it is a string).
pub(crate) async fn next_term_msg(ws: &mut Ws) -> Result<(String, String)> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(s))) => {
                let v: serde_json::Value = serde_json::from_str(&s).context("terminado sent invalid JSON")?;
                let kind = v
                    .get(0)
                    .and_then(|k| k.as_str())
                    .context("terminado sent a message without a kind")?
                    .to_owned();
                let text = v.get(1).and_then(|t| t.as_str()).unwrap_or_default().to_owned();
                return Ok((kind, text));
            }
            Some(Ok(Message::Close(_))) | None => bail!("terminado closed the connection"),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e).context("the terminado connection failed"),
        }
    }
}

/// Opens a WebSocket to `path` on a local peer with Nagle off on the
/// client's side (as `tether-client` and the bare tether client do), for
/// the latency-sensitive PTY benches. terminado (tornado) leaves it on on
/// its side, as shipped.
pub(crate) async fn connect_nodelay(port: u16, path: &str) -> Result<Ws> {
    let url = format!("ws://127.0.0.1:{port}{path}");
    let (ws, _) = tokio_tungstenite::connect_async_with_config(url.as_str(), None, true)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    Ok(ws)
}

/// Opens a terminado terminal and waits for its first output (bash is up).
pub(crate) async fn open_terminal(port: u16) -> Result<Ws> {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/websocket")).await?;
    loop {
        let (kind, _) = next_term_msg(&mut ws).await?;
        if kind == "stdout" {
            return Ok(ws);
        }
    }
}

/// Whether a WebSocket error is the peer resetting the TCP connection
/// without a close frame (how websocketd ends a finished process).
pub(crate) fn is_reset(e: &WsError) -> bool {
    match e {
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => true,
        WsError::Io(io) => io.kind() == std::io::ErrorKind::ConnectionReset,
        _ => false,
    }
}
