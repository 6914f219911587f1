//! [`CutProxy`]: a loopback TCP proxy that cuts connections after a
//! random number of bytes (mid-frame, like a dropped network), or freezes
//! or cuts them on demand.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::AbortHandle;

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
        CutProxy::start_with(upstream, min, max, None).await
    }

    /// A proxy that cuts only on demand, whose socket to the daemon
    /// buffers at most about `buffer` bytes (`SO_RCVBUF`, which Linux
    /// doubles): a network path with bounded buffering, where loopback's
    /// autotuning would let many MiB sit in flight.
    pub async fn bounded(upstream: SocketAddr, buffer: u32) -> CutProxy {
        CutProxy::start_with(upstream, u64::MAX, u64::MAX, Some(buffer)).await
    }

    async fn start_with(upstream: SocketAddr, min: u64, max: u64, buffer: Option<u32>) -> CutProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cuts = Arc::new(AtomicU64::new(0));
        let (accepted, frozen) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let conns: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (c2, conns2, a2, f2) = (cuts.clone(), conns.clone(), accepted.clone(), frozen.clone());
        let accept = tokio::spawn(async move {
            while let Ok((down, _)) = listener.accept().await {
                let socket =
                    if upstream.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }.unwrap();
                if let Some(b) = buffer {
                    // Before connect: the window the daemon is offered is small.
                    socket.set_recv_buffer_size(b).unwrap();
                }
                let Ok(up) = socket.connect(upstream).await else {
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
