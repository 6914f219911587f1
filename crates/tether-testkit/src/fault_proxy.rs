//! [`FaultProxy`]: a loopback TCP proxy that makes the network faults of the
//! chaos matrix on demand: connection resets (RST, as from a dying NAT or a
//! peer that crashed), a silent freeze (no byte either way, no FIN, no RST:
//! a half-open path), refused connections for a while after a loss, and a
//! return to normal that is time-stamped, so that a test can measure how
//! long a client takes to be back once the network is.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::AbortHandle;

/// What the proxy does with traffic now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forwards both ways.
    Forward,
    /// New connections are accepted and reset at once (RST); open ones
    /// are untouched.
    Refuse,
    /// Nothing passes on any connection, old or new, and nothing is
    /// closed: a black hole.
    Freeze,
    /// Client-to-daemon bytes pass, daemon-to-client ones do not: requests
    /// arrive, their replies are lost.
    FreezeReplies,
}

/// A loopback TCP proxy in front of `upstream` with faults on demand.
pub struct FaultProxy {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
    accept: AbortHandle,
}

struct Inner {
    upstream: SocketAddr,
    mode: watch::Sender<Mode>,
    /// Bumped by [`FaultProxy::reset_all`]: every connection older than
    /// the bump resets itself.
    resets: watch::Sender<u64>,
    accepted: AtomicU64,
    refused: AtomicU64,
    reset: AtomicU64,
    /// Set by the first daemon-to-client byte of a connection forwarded
    /// after the last [`FaultProxy::restore`].
    first_byte_after_restore: Mutex<Option<Instant>>,
    restored_at: Mutex<Option<Instant>>,
    conns: Mutex<Vec<AbortHandle>>,
}

impl FaultProxy {
    pub async fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let inner = Arc::new(Inner {
            upstream,
            mode: watch::Sender::new(Mode::Forward),
            resets: watch::Sender::new(0),
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            reset: AtomicU64::new(0),
            first_byte_after_restore: Mutex::new(None),
            restored_at: Mutex::new(None),
            conns: Mutex::new(Vec::new()),
        });
        let i2 = inner.clone();
        let accept = tokio::spawn(async move {
            while let Ok((down, _)) = listener.accept().await {
                let mode = *i2.mode.borrow();
                if mode == Mode::Refuse {
                    i2.refused.fetch_add(1, Ordering::SeqCst);
                    rst(&down);
                    continue;
                }
                i2.accepted.fetch_add(1, Ordering::SeqCst);
                let h = tokio::spawn(conn(i2.clone(), down));
                let mut conns = i2.conns.lock().expect("lock");
                conns.retain(|h| !h.is_finished());
                conns.push(h.abort_handle());
            }
        })
        .abort_handle();
        FaultProxy { addr, inner, accept }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn mode(&self) -> Mode {
        *self.inner.mode.borrow()
    }

    /// Resets (RST, linger 0) every open connection, both of its sockets.
    pub fn reset_all(&self) {
        self.inner.resets.send_modify(|n| *n += 1);
    }

    /// Refuses (resets) new connections until [`FaultProxy::restore`].
    pub fn refuse(&self) {
        self.inner.mode.send_replace(Mode::Refuse);
    }

    /// Stops all traffic, old connections and new, until
    /// [`FaultProxy::restore`].
    pub fn freeze(&self) {
        self.inner.mode.send_replace(Mode::Freeze);
    }

    /// Lets requests through but holds back every reply, until
    /// [`FaultProxy::restore`].
    pub fn freeze_replies(&self) {
        self.inner.mode.send_replace(Mode::FreezeReplies);
    }

    /// Forwards again (frozen connections resume); returns the moment.
    pub fn restore(&self) -> Instant {
        let now = Instant::now();
        *self.inner.restored_at.lock().expect("lock") = Some(now);
        *self.inner.first_byte_after_restore.lock().expect("lock") = None;
        self.inner.mode.send_replace(Mode::Forward);
        now
    }

    /// How long after the last [`FaultProxy::restore`] the first
    /// daemon-to-client byte of a connection (its handshake's answer)
    /// passed: when a client was connected again.
    pub fn reconnected_after(&self) -> Option<Duration> {
        let restored = (*self.inner.restored_at.lock().expect("lock"))?;
        let first = (*self.inner.first_byte_after_restore.lock().expect("lock"))?;
        Some(first.saturating_duration_since(restored))
    }

    /// Connections accepted and forwarded so far.
    pub fn accepted(&self) -> u64 {
        self.inner.accepted.load(Ordering::SeqCst)
    }

    /// Connections refused so far.
    pub fn refused(&self) -> u64 {
        self.inner.refused.load(Ordering::SeqCst)
    }

    /// Connections reset so far.
    pub fn resets(&self) -> u64 {
        self.inner.reset.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        for h in self.inner.conns.lock().expect("lock").drain(..) {
            h.abort();
        }
    }
}

/// Closes a socket with a reset rather than a FIN (when it is dropped).
// Deprecated because a non-zero linger blocks the dropping thread; a zero
// linger resets at once.
#[allow(deprecated)]
fn rst(s: &TcpStream) {
    let _ = s.set_linger(Some(Duration::ZERO));
}

async fn conn(inner: Arc<Inner>, mut down: TcpStream) {
    let generation = *inner.resets.borrow();
    let Ok(mut up) = TcpStream::connect(inner.upstream).await else {
        rst(&down);
        return;
    };
    let _ = down.set_nodelay(true);
    let _ = up.set_nodelay(true);
    let mut reset_rx = inner.resets.subscribe();
    let was_reset = {
        let (mut dr, mut dw) = down.split();
        let (mut ur, mut uw) = up.split();
        let c2d = async {
            let mut mode = inner.mode.subscribe();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                wait_not_frozen(&mut mode).await;
                let n = match dr.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                wait_not_frozen(&mut mode).await;
                if uw.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
            let _ = uw.shutdown().await;
        };
        let d2c = async {
            let mut mode = inner.mode.subscribe();
            let mut buf = vec![0u8; 64 * 1024];
            let mut first = true;
            loop {
                wait_replies(&mut mode).await;
                let n = match ur.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                wait_replies(&mut mode).await;
                if dw.write_all(&buf[..n]).await.is_err() {
                    break;
                }
                if first {
                    first = false;
                    // The first byte of a connection (its handshake's
                    // answer) after the restore: the client is back.
                    let restored = *inner.restored_at.lock().expect("lock");
                    if restored.is_some_and(|r| r <= Instant::now()) {
                        inner.first_byte_after_restore.lock().expect("lock").get_or_insert(Instant::now());
                    }
                }
            }
            let _ = dw.shutdown().await;
        };
        let reset = async {
            while *reset_rx.borrow_and_update() == generation {
                if reset_rx.changed().await.is_err() {
                    return std::future::pending().await;
                }
            }
        };
        // Each direction ends on EOF or an error of its own (passing the
        // EOF on); the connection ends when both have, or at a reset.
        tokio::select! {
            _ = async { tokio::join!(c2d, d2c) } => false,
            () = reset => true,
        }
    };
    if was_reset {
        inner.reset.fetch_add(1, Ordering::SeqCst);
        rst(&down);
        rst(&up);
    }
}

async fn wait_not_frozen(mode: &mut watch::Receiver<Mode>) {
    while *mode.borrow_and_update() == Mode::Freeze {
        if mode.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

async fn wait_replies(mode: &mut watch::Receiver<Mode>) {
    while matches!(*mode.borrow_and_update(), Mode::Freeze | Mode::FreezeReplies) {
        if mode.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}
