//! The accept loop: HTTP/1.1 connections served by hyper, each bounded
//! before its client proves it holds the token.
//!
//! A connection is *unauthenticated* until one of its requests passes the
//! token check (`auth::require` marks it through the [`ConnHandle`] in the
//! request's extensions). Unauthenticated connections are what anyone who
//! can reach the port can open, so they are bounded three ways: a request
//! head must arrive within the header timeout (slow-header clients), the
//! connection must authenticate within the unauthenticated timeout (idle
//! sockets, clients that only ever get 401), and at most
//! `max_unauthenticated` are held at once: a new one past that closes the
//! oldest of them. That share keeps the rest of `max_connections` (itself
//! below the open-file limit) for clients with the token, so a flood
//! delays a real client by one handshake at most. Past `max_connections`
//! with nothing left to close, a new connection is closed at once.
//!
//! A connection that upgrades to a WebSocket leaves the accept loop's count
//! (hyper hands its socket to the upgrade); it authenticated to get there.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::ServerConfig;
use crate::wire::{Counted, Wire};

/// How long the loop pauses after the process ran out of file descriptors
/// (having closed the oldest unauthenticated connection, if any).
const FD_EXHAUSTED_PAUSE: Duration = Duration::from_millis(50);

/// The limits a [`Gate`] and its connections enforce.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Most connections held.
    pub(crate) max: usize,
    /// Most unauthenticated connections held.
    pub(crate) max_unauthenticated: usize,
    /// See `ServerConfig::header_timeout`.
    pub(crate) header_timeout: Duration,
    /// See `ServerConfig::unauthenticated_timeout`.
    pub(crate) unauthenticated_timeout: Duration,
}

impl Limits {
    pub(crate) fn of(cfg: &ServerConfig) -> Limits {
        let max = cfg.max_connections.max(1);
        Limits {
            max,
            max_unauthenticated: cfg.max_unauthenticated.clamp(1, max),
            header_timeout: cfg.header_timeout,
            unauthenticated_timeout: cfg.unauthenticated_timeout,
        }
    }
}

/// The count of held connections.
pub(crate) struct Gate {
    limits: Limits,
    /// A std lock: held for a few map operations, never across `.await`.
    inner: Mutex<GateInner>,
}

#[derive(Default)]
struct GateInner {
    next_id: u64,
    /// Connections counted against the cap (evicted ones are not).
    total: usize,
    /// Unauthenticated connections, oldest first (ids grow).
    unauthenticated: BTreeMap<u64, Arc<SlotState>>,
}

#[derive(Default)]
struct SlotState {
    authenticated: AtomicBool,
    /// Still counted in `total` (cleared by eviction or the end).
    counted: AtomicBool,
    evicted: CancellationToken,
}

/// One connection's place at the gate, in each of its requests'
/// extensions; the auth middleware marks it authenticated.
#[derive(Clone)]
pub(crate) struct ConnHandle {
    gate: Arc<Gate>,
    id: u64,
    state: Arc<SlotState>,
}

/// Owned by the connection's task: its end frees the place.
struct Slot(ConnHandle);

impl Gate {
    pub(crate) fn new(limits: Limits) -> Arc<Gate> {
        Arc::new(Gate { limits, inner: Mutex::default() })
    }

    fn lock(&self) -> MutexGuard<'_, GateInner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A place for a new connection: closes the oldest unauthenticated one
    /// if the new one would pass a cap; `None` if the cap is reached with
    /// none to close.
    fn admit(self: &Arc<Gate>) -> Option<Slot> {
        let mut g = self.lock();
        if g.unauthenticated.len() >= self.limits.max_unauthenticated || g.total >= self.limits.max {
            if !Gate::evict_oldest(&mut g) {
                return None;
            }
            tracing::debug!("closed the oldest unauthenticated connection to admit a new one");
        }
        g.next_id += 1;
        g.total += 1;
        metrics::counter!("tether_connections_total").increment(1);
        metrics::gauge!("tether_connections").increment(1);
        let id = g.next_id;
        let state = Arc::new(SlotState::default());
        state.counted.store(true, Ordering::Relaxed);
        g.unauthenticated.insert(id, state.clone());
        Some(Slot(ConnHandle { gate: self.clone(), id, state }))
    }

    /// Closes the oldest unauthenticated connection; `false` if none.
    fn evict_oldest(g: &mut GateInner) -> bool {
        let Some((_, state)) = g.unauthenticated.pop_first() else {
            return false;
        };
        if state.counted.swap(false, Ordering::Relaxed) {
            g.total -= 1;
        }
        state.evicted.cancel();
        true
    }
}

impl ConnHandle {
    /// The connection made an authenticated request: it no longer counts
    /// as unauthenticated, and no longer has a deadline to authenticate.
    pub(crate) fn authenticated(&self) {
        if !self.state.authenticated.swap(true, Ordering::Relaxed) {
            self.gate.lock().unauthenticated.remove(&self.id);
        }
    }

    fn is_authenticated(&self) -> bool {
        self.state.authenticated.load(Ordering::Relaxed)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        metrics::gauge!("tether_connections").decrement(1);
        let h = &self.0;
        let mut g = h.gate.lock();
        g.unauthenticated.remove(&h.id);
        if h.state.counted.swap(false, Ordering::Relaxed) {
            g.total -= 1;
        }
    }
}

/// Accepts on `listener` and serves each connection with `router` until
/// `stop` resolves; then stops accepting (later connections wait in the
/// backlog), lets each connection finish its request in flight (idle ones
/// close at once) and returns when all have ended. Every socket gets
/// `TCP_NODELAY`: small frames (a prompt, an exit) must not wait for Nagle
/// plus the peer's delayed ACK (40 ms on Linux).
///
/// Each connection thread (`shards`) accepts on a duplicate of the
/// listening socket, registered with its own reactor, and serves what it
/// accepts itself: a connection starts on the thread that serves it, with
/// no hand-off from an accepting thread (a wake-up of another thread, and
/// the socket moved between reactors, cost a new connection about 80 µs).
/// A new connection wakes every thread waiting in `accept`; one gets it.
///
/// The loops, and their duplicates of the socket, are in place when this
/// returns, before its future is first polled: the caller's "listening"
/// comes after it, and what the process holds at that line is what it
/// holds while it serves (a restart's fd test compares against it).
pub(crate) fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    tls: Option<Arc<crate::Tls>>,
    stop: impl std::future::Future<Output = ()>,
) -> impl std::future::Future<Output = ()> {
    let acceptor = Acceptor {
        gate: Gate::new(limits),
        conns: TaskTracker::new(),
        draining: CancellationToken::new(),
        router,
        limits,
        tls,
    };
    let stopped = CancellationToken::new();
    // The loops run on the shards, which outlive the future: dropped
    // without its stop (a test's runtime ending), polled or not, it still
    // ends them, so no shard goes on accepting for a server that is gone.
    let loops_end = stopped.clone().drop_guard();
    let drain = acceptor.draining.clone().drop_guard();
    let mut loops = Vec::new();
    for (i, shard) in crate::shards::all().iter().enumerate() {
        let dup = match listener_dup(&listener) {
            Ok(dup) => dup,
            Err(e) => {
                tracing::warn!("a connection thread cannot accept: {e}");
                continue;
            }
        };
        let (acceptor, stopped) = (acceptor.clone(), stopped.clone());
        // Registered with the shard's reactor on its own thread.
        loops.push(shard.spawn(async move {
            match TcpListener::from_std(dup) {
                Ok(l) => acceptor.accept_loop(l, Some(i), stopped.cancelled()).await,
                Err(e) => tracing::warn!("a connection thread cannot accept: {e}"),
            }
        }));
    }
    async move {
        let (_loops_end, _drain) = (loops_end, drain);
        if loops.is_empty() {
            // No connection thread: accept and serve on this runtime.
            acceptor.accept_loop(listener, None, stop).await;
        } else {
            stop.await;
            stopped.cancel();
            // Each loop drops its duplicate once it has stopped: nothing is
            // accepted past this point, the backlog waits for the next daemon.
            for l in loops {
                let _ = l.await;
            }
            drop(listener);
        }
        acceptor.draining.cancel();
        acceptor.conns.close();
        acceptor.conns.wait().await;
    }
}

/// A duplicate of the listening socket, for another reactor.
fn listener_dup(listener: &TcpListener) -> std::io::Result<std::net::TcpListener> {
    let fd = std::os::fd::AsFd::as_fd(listener).try_clone_to_owned()?;
    let l = std::net::TcpListener::from(fd);
    l.set_nonblocking(true)?;
    Ok(l)
}

/// What every accept loop shares.
#[derive(Clone)]
struct Acceptor {
    gate: Arc<Gate>,
    conns: TaskTracker,
    draining: CancellationToken,
    router: Router,
    limits: Limits,
    tls: Option<Arc<crate::Tls>>,
}

impl Acceptor {
    /// Accepts on `listener` until `stop`, serving each connection on the
    /// current runtime (shard `shard`, if on one), or on a less busy shard.
    async fn accept_loop(
        &self,
        listener: TcpListener,
        shard: Option<usize>,
        stop: impl std::future::Future<Output = ()>,
    ) {
        let Acceptor { gate, conns, draining, router, limits, tls } = self;
        tokio::pin!(stop);
        loop {
            let accepted = tokio::select! {
                biased;
                () = &mut stop => break,
                r = listener.accept() => r,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) if is_fd_exhaustion(&e) => {
                    // Make room, then try again shortly (the backlog holds the
                    // clients meanwhile).
                    let closed = Gate::evict_oldest(&mut gate.lock());
                    tracing::warn!(closed_unauthenticated = closed, "accept: {e}");
                    tokio::select! {
                        () = &mut stop => break,
                        () = tokio::time::sleep(FD_EXHAUSTED_PAUSE) => continue,
                    }
                }
                // Another loop took it (every waiting loop is woken), or
                // errors of the one connection (reset before accept and such).
                Err(e) => {
                    if e.kind() != std::io::ErrorKind::WouldBlock {
                        tracing::debug!("accept: {e}");
                    }
                    continue;
                }
            };
            let Some(slot) = gate.admit() else {
                metrics::counter!("tether_connections_refused_total").increment(1);
                tracing::warn!(%peer, max = limits.max, "refused: connection cap reached");
                drop(tcp);
                continue;
            };
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!("TCP_NODELAY: {e}");
            }
            let tls = tls.as_ref().map(|t| t.acceptor());
            let (router, draining, limits) = (router.clone(), draining.clone(), *limits);
            let serve = move |tcp| connection(Counted::new(tcp), tls, peer, slot, router, limits, draining);
            let Some(lighter) = shard.and_then(crate::shards::lighter_than) else {
                conns.spawn(serve(tcp));
                continue;
            };
            // Moved to the other shard's reactor, so that its readiness is
            // delivered on the thread that serves it.
            let tcp = match tcp.into_std() {
                Ok(tcp) => tcp,
                Err(e) => {
                    tracing::debug!(%peer, "accept: {e}");
                    continue;
                }
            };
            conns.spawn_on(
                async move {
                    match TcpStream::from_std(tcp) {
                        Ok(tcp) => serve(tcp).await,
                        Err(e) => tracing::debug!(%peer, "accept: {e}"),
                    }
                },
                lighter,
            );
        }
    }
}

fn is_fd_exhaustion(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}

/// Serves one connection until it ends, is closed for a limit, or the
/// server drains; with `tls`, after a handshake that must finish within
/// the header timeout (the connection holds its place at the gate
/// meanwhile, as one that has not authenticated).
async fn connection(
    tcp: Counted,
    tls: Option<tokio_rustls::TlsAcceptor>,
    peer: SocketAddr,
    slot: Slot,
    router: Router,
    limits: Limits,
    draining: CancellationToken,
) {
    let wire = tcp.wire();
    let Some(tls) = tls else {
        return http(tcp, wire, peer, slot, router, limits, draining).await;
    };
    let handshake = tokio::select! {
        r = tokio::time::timeout(limits.header_timeout, tls.accept(tcp)) => r,
        () = slot.0.state.evicted.cancelled() => return,
    };
    match handshake {
        Ok(Ok(stream)) => http(stream, wire, peer, slot, router, limits, draining).await,
        Ok(Err(e)) => {
            metrics::counter!("tether_tls_handshake_failures_total").increment(1);
            tracing::debug!(%peer, "TLS handshake failed: {e}");
        }
        Err(_) => {
            metrics::counter!("tether_tls_handshake_failures_total").increment(1);
            tracing::debug!(%peer, "TLS handshake took longer than {:?}", limits.header_timeout);
        }
    }
}

/// HTTP/1.1 (with upgrades) on one connection, plain or TLS.
async fn http<I>(
    io: I,
    wire: Arc<Wire>,
    peer: SocketAddr,
    slot: Slot,
    router: Router,
    limits: Limits,
    draining: CancellationToken,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let handle = slot.0.clone();
    let svc = Svc { router, peer, conn: handle.clone(), wire };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    let conn = builder.serve_connection(TokioIo::new(io), svc).with_upgrades();
    tokio::pin!(conn);
    let deadline = tokio::time::sleep(limits.unauthenticated_timeout);
    tokio::pin!(deadline);
    let mut drained = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, "connection: {e}");
                }
                break;
            }
            () = draining.cancelled(), if !drained => {
                drained = true;
                conn.as_mut().graceful_shutdown();
            }
            () = handle.state.evicted.cancelled() => {
                tracing::debug!(%peer, "closed: unauthenticated connections past their share");
                break;
            }
            // The condition is looked at when `select!` starts waiting, not
            // when the deadline fires: a request that authenticated since
            // (and may still be streaming its response) keeps it open.
            () = &mut deadline, if !handle.is_authenticated() => {
                if handle.is_authenticated() {
                    continue;
                }
                tracing::debug!(%peer, "closed: no authenticated request within {:?}", limits.unauthenticated_timeout);
                break;
            }
        }
    }
    drop(slot);
}

/// The router as a hyper service, with the connection's peer address (for
/// `ConnectInfo`), place at the gate and [`Wire`] in every request.
#[derive(Clone)]
struct Svc {
    router: Router,
    peer: SocketAddr,
    conn: ConnHandle,
    wire: Arc<Wire>,
}

impl hyper::service::Service<hyper::Request<Incoming>> for Svc {
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = axum::routing::future::RouteFuture<Infallible>;

    fn call(&self, mut req: hyper::Request<Incoming>) -> Self::Future {
        req.extensions_mut().insert(ConnectInfo(self.peer));
        req.extensions_mut().insert(self.conn.clone());
        req.extensions_mut().insert(self.wire.clone());
        tower_service::Service::call(&mut self.router.clone(), req)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn limits(max: usize, unauth: usize) -> Limits {
        Limits {
            max,
            max_unauthenticated: unauth,
            header_timeout: Duration::from_secs(1),
            unauthenticated_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn past_the_unauthenticated_share_the_oldest_goes() {
        let gate = Gate::new(limits(10, 2));
        let a = gate.admit().unwrap();
        let b = gate.admit().unwrap();
        let c = gate.admit().unwrap();
        assert!(a.0.state.evicted.is_cancelled());
        assert!(!b.0.state.evicted.is_cancelled() && !c.0.state.evicted.is_cancelled());
        // An authenticated one is never closed for the share.
        b.0.authenticated();
        let d = gate.admit().unwrap();
        assert!(!b.0.state.evicted.is_cancelled());
        assert!(!c.0.state.evicted.is_cancelled() && !d.0.state.evicted.is_cancelled());
        assert_eq!(gate.lock().total, 3);
        drop((a, b, c, d));
        assert_eq!(gate.lock().total, 0);
        assert!(gate.lock().unauthenticated.is_empty());
    }

    #[test]
    fn past_the_cap_with_all_authenticated_a_new_one_is_refused() {
        let gate = Gate::new(limits(2, 1));
        let a = gate.admit().unwrap();
        a.0.authenticated();
        let b = gate.admit().unwrap();
        b.0.authenticated();
        assert!(gate.admit().is_none());
        drop(a);
        assert!(gate.admit().is_some());
    }
}
