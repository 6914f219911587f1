//! A JSON WebSocket to the LangSmith dialect
//! (`/compat/langsmith/execute/ws`), with the frames its Python client
//! sends.

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Response;
use tokio_tungstenite::tungstenite::{Error, Message};

use crate::bounded;

/// A WebSocket to the LangSmith dialect.
pub type LsWs = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens the LangSmith socket of the daemon at `addr` with the API key
/// `key`; the handshake's response comes too, for its headers.
pub async fn ls_connect(addr: SocketAddr, key: &str) -> Result<(LsWs, Response), Error> {
    let mut req = format!("ws://{addr}/compat/langsmith/execute/ws").into_client_request().unwrap();
    req.headers_mut().insert("x-api-key", key.parse().unwrap());
    bounded(tokio_tungstenite::connect_async(req)).await
}

/// Sends one JSON frame.
pub async fn ls_send(ws: &mut LsWs, v: &Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

/// The next JSON frame, or `None` once the server closed.
pub async fn ls_recv(ws: &mut LsWs) -> Option<Value> {
    loop {
        match bounded(ws.next()).await? {
            Ok(Message::Text(t)) => return Some(serde_json::from_str(&t).unwrap()),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// An `execute` frame as the Python client sends it, stdin closed.
pub fn ls_execute(command: &str, id: &str) -> Value {
    json!({"type": "execute", "command": command, "timeout_seconds": 60, "shell": "/bin/bash",
           "idle_timeout_seconds": 300, "kill_on_disconnect": false, "ttl_seconds": 600,
           "command_id": id, "close_stdin": true})
}
