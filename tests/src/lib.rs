//! Test support for tether's end-to-end tests: an in-process daemon on port
//! 0 ([`TestServer`]) and a raw WebSocket peer for malformed input
//! ([`RawWs`]). What other suites share too (time limits, scratch files,
//! HTTP helpers, the network-fault proxies) is in `tether-testkit`; the
//! fault proxy is also a binary here, `tether-faultproxy`, for the browser
//! and Python tests.
#![allow(missing_docs, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tether_client::{Client, ClientOptions};
use tether_exec::Manager;
use tether_proto::{ClientMsg, Encoding, ServerMsg};
use tether_server::{Server, ServerConfig, Token};
use tether_testkit::{Http, bounded};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, header};

/// A daemon on `127.0.0.1:0` in this process, shut down on drop.
pub struct TestServer {
    pub addr: SocketAddr,
    pub url: String,
    pub token: String,
    pub manager: Manager,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::with(|_| {}).await
    }

    pub async fn with(f: impl FnOnce(&mut ServerConfig)) -> TestServer {
        let token = format!("test-{:016x}", rand::random::<u64>());
        TestServer::on("127.0.0.1:0".parse().unwrap(), token, f).await
    }

    /// A daemon on a given address with a given token (to restart one).
    pub async fn on(addr: SocketAddr, token: String, f: impl FnOnce(&mut ServerConfig)) -> TestServer {
        let mut cfg = ServerConfig::new(Token::new(token.clone()));
        f(&mut cfg);
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = Server::new(cfg);
        let manager = server.manager().clone();
        let (stop, rx) = oneshot::channel();
        let task = tokio::spawn(server.run(listener, async move {
            let _ = rx.await;
        }));
        TestServer { addr, url: format!("http://{addr}"), token, manager, stop: Some(stop), task: Some(task) }
    }

    pub async fn client(&self) -> Client {
        self.client_via(&self.url).await
    }

    /// A client of this daemon reached at `url` (a proxy in front of it).
    pub async fn client_via(&self, url: &str) -> Client {
        Client::connect_with(url, &self.token, fast_reconnect()).await.unwrap()
    }

    /// This daemon's HTTP routes.
    pub fn http(&self) -> Http {
        Http::new(&self.url, &self.token)
    }

    /// Drops the daemon's task without its stop (as when a runtime ends
    /// under it), and waits until it is gone.
    pub async fn abort(mut self) {
        // Held until the task is gone: dropped, it would stop the daemon.
        let _stop = self.stop.take();
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = bounded(t).await;
        }
    }

    /// Stops the daemon and waits for its shutdown to complete.
    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            bounded(t).await.unwrap().unwrap();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Client options that reconnect quickly, for tests.
pub fn fast_reconnect() -> ClientOptions {
    ClientOptions {
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(200),
        reconnect_for: Duration::from_secs(30),
        ..ClientOptions::default()
    }
}

/// A raw WebSocket peer that sends arbitrary frames.
pub struct RawWs {
    pub ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>,
    pub encoding: Encoding,
}

impl RawWs {
    /// Connects to `/v1/ws` with the given token and subprotocol and reads
    /// the `hello`.
    pub async fn connect(server: &TestServer, encoding: Encoding) -> RawWs {
        RawWs::connect_path(server, "/v1/ws", encoding).await
    }

    pub async fn connect_path(server: &TestServer, path: &str, encoding: Encoding) -> RawWs {
        let mut req = format!("ws://{}{path}", server.addr).into_client_request().unwrap();
        req.headers_mut().insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {}", server.token)).unwrap(),
        );
        req.headers_mut()
            .insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(encoding.subprotocol()));
        let (ws, _) = bounded(tokio_tungstenite::connect_async(req)).await.unwrap();
        let mut raw = RawWs { ws, encoding };
        assert!(matches!(raw.recv().await, Some(ServerMsg::Hello { .. })), "hello first");
        raw
    }

    pub async fn send(&mut self, msg: &ClientMsg) {
        let bytes = tether_proto::encode(msg, self.encoding);
        let frame = match self.encoding {
            Encoding::MsgPack => Message::Binary(bytes.into()),
            Encoding::Json => Message::Text(String::from_utf8(bytes).unwrap().into()),
        };
        self.ws.send(frame).await.unwrap();
    }

    pub async fn send_raw(&mut self, frame: Message) {
        self.ws.send(frame).await.unwrap();
    }

    /// The next message; `None` on close.
    pub async fn recv(&mut self) -> Option<ServerMsg> {
        loop {
            match bounded(self.ws.next()).await? {
                Ok(Message::Binary(b)) => {
                    return Some(tether_proto::decode(&b, Encoding::MsgPack).unwrap());
                }
                Ok(Message::Text(t)) => {
                    return Some(tether_proto::decode(t.as_bytes(), Encoding::Json).unwrap());
                }
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }

    /// The close code the daemon sent, reading past other frames.
    pub async fn close_code(&mut self) -> Option<u16> {
        loop {
            match bounded(self.ws.next()).await? {
                Ok(Message::Close(c)) => return c.map(|c| u16::from(c.code)),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }
}
