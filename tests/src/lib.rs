//! Test support for tether's end-to-end tests: an in-process daemon on port
//! 0 ([`TestServer`]), a raw WebSocket peer for malformed input
//! ([`RawWs`]), a loopback TCP proxy that cuts connections
//! ([`CutProxy`]), and one that makes the chaos matrix's network faults on
//! demand ([`FaultProxy`]; also a binary, `tether-faultproxy`, for the
//! browser and Python tests).
#![allow(missing_docs, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use sha2::{Digest, Sha256};
use tether_client::{Client, ClientOptions};
use tether_exec::Manager;
use tether_proto::{ClientMsg, Encoding, ServerMsg};
use tether_server::{Server, ServerConfig, Token};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{AbortHandle, JoinHandle};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, header};

mod proxy;

pub use proxy::{FaultProxy, Mode as ProxyMode};

/// Every test's upper bound.
pub const LIMIT: Duration = Duration::from_secs(60);

/// Bounds a future by [`LIMIT`].
pub async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(LIMIT, f).await.expect("test step finished within the limit")
}

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

/// A loopback TCP proxy in front of `upstream` that cuts every connection
/// after a random number of daemon-to-client bytes in `[min, max)`.
pub struct CutProxy {
    pub addr: SocketAddr,
    pub cuts: Arc<AtomicU64>,
    /// Connections accepted so far; those numbered below `frozen` stop
    /// forwarding (a silent, half-open network) without closing.
    accepted: Arc<AtomicU64>,
    frozen: Arc<AtomicU64>,
    accept: AbortHandle,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
}

impl CutProxy {
    pub async fn start(upstream: SocketAddr, min: u64, max: u64) -> CutProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cuts = Arc::new(AtomicU64::new(0));
        let (accepted, frozen) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let conns: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (c2, conns2, a2, f2) = (cuts.clone(), conns.clone(), accepted.clone(), frozen.clone());
        let accept = tokio::spawn(async move {
            while let Ok((down, _)) = listener.accept().await {
                let Ok(up) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let budget = min + rand::random::<u64>() % (max - min).max(1);
                let cuts = c2.clone();
                let me = a2.fetch_add(1, Ordering::SeqCst);
                let frozen = f2.clone();
                let is_frozen = move || me < frozen.load(Ordering::SeqCst);
                let h = tokio::spawn(pipe_with_cut(down, up, budget, cuts, is_frozen));
                conns2.lock().unwrap().push(h.abort_handle());
            }
        })
        .abort_handle();
        CutProxy { addr, cuts, accepted, frozen, accept, conns }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every connection open now goes silent: no byte passes either way,
    /// no FIN, no RST. New connections work.
    pub fn freeze(&self) {
        self.frozen.store(self.accepted.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    /// Cuts every connection open now (both sides see the socket close).
    /// New connections work.
    pub fn cut_all(&self) {
        for h in self.conns.lock().unwrap().drain(..) {
            h.abort();
            self.cuts.fetch_add(1, Ordering::SeqCst);
        }
    }

    pub fn cuts(&self) -> u64 {
        self.cuts.load(Ordering::SeqCst)
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.accept.abort();
        for h in self.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }
}

async fn pipe_with_cut(
    down: TcpStream,
    up: TcpStream,
    budget: u64,
    cuts: Arc<AtomicU64>,
    frozen: impl Fn() -> bool,
) {
    let (mut dr, mut dw) = down.into_split();
    let (mut ur, mut uw) = up.into_split();
    let client_to_daemon = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match dr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if frozen() {
                return std::future::pending().await;
            }
            if uw.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let daemon_to_client = async {
        let mut left = budget;
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match ur.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => n,
            };
            if frozen() {
                return std::future::pending().await;
            }
            let take = (n as u64).min(left) as usize;
            if dw.write_all(&buf[..take]).await.is_err() {
                return false;
            }
            left -= take as u64;
            if left == 0 {
                return true; // cut mid-stream, possibly mid-frame
            }
        }
    };
    tokio::select! {
        _ = client_to_daemon => {}
        cut = daemon_to_client => {
            if cut {
                cuts.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
    // Dropping both halves of both sockets closes them.
}

/// Writes `len` random bytes to a new temp file; returns its path and hash.
pub fn random_file(len: usize) -> (tempfile_path::TempPath, [u8; 32]) {
    let path = tempfile_path::TempPath::new();
    let data = random_bytes(len);
    std::fs::write(&path.0, &data).unwrap();
    (path, Sha256::digest(&data).into())
}

/// `len` random bytes.
pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    rand::fill(&mut data[..]);
    data
}

/// Lower-case hex, as `sha256sum` prints it.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub mod tempfile_path {
    //! A temp file removed on drop (enough for tests; no extra crate).
    use std::path::PathBuf;

    pub struct TempPath(pub PathBuf);

    impl TempPath {
        pub fn new() -> TempPath {
            let p = std::env::temp_dir().join(format!("tether-test-{:016x}", rand::random::<u64>()));
            TempPath(p)
        }

        pub fn as_str(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }

    impl Default for TempPath {
        fn default() -> Self {
            TempPath::new()
        }
    }

    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// Whether process `pid` runs (a zombie counts as gone).
pub fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rfind(')').and_then(|i| s.get(i + 2..)).is_some_and(|r| !r.starts_with('Z')))
}

/// A scratch directory with an empty `root/` inside, removed on drop.
pub struct ScratchDir(pub std::path::PathBuf);

impl ScratchDir {
    pub fn new() -> ScratchDir {
        let p = std::env::temp_dir().join(format!("tether-scratch-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(p.join("root")).unwrap();
        ScratchDir(p)
    }

    /// The `root/` inside.
    pub fn root(&self) -> std::path::PathBuf {
        self.0.join("root")
    }
}

impl Default for ScratchDir {
    fn default() -> ScratchDir {
        ScratchDir::new()
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
