//! [`Counted`]: a connection's TCP stream, counting the bytes written into
//! it; and [`Wire`], what any of the connection's tasks may ask of it: how
//! many of those bytes the peer's TCP has acknowledged. A client that
//! acknowledges nothing of its own (the LangSmith dialect) is paced by that
//! (`conn::Delivery`): what sits in the daemon's send buffer (on loopback
//! autotuned to several MiB) has not reached it.
//!
//! Under TLS the counted bytes are the encrypted ones, as the socket sees
//! them: a writer that asks after a flush compares like with like.

use std::io;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A TCP stream that counts what is written into it. The stream is shared
/// with its [`Wire`] only to be asked about, never to read or write.
pub(crate) struct Counted {
    tcp: Arc<TcpStream>,
    wire: Arc<Wire>,
}

/// What the socket of a connection has delivered.
pub(crate) struct Wire {
    /// Weak: asking never keeps a closed connection's socket open.
    tcp: Weak<TcpStream>,
    /// Bytes the socket has taken from the connection.
    written: AtomicU64,
}

impl Counted {
    pub(crate) fn new(tcp: TcpStream) -> Counted {
        let tcp = Arc::new(tcp);
        let wire = Arc::new(Wire { tcp: Arc::downgrade(&tcp), written: AtomicU64::new(0) });
        Counted { tcp, wire }
    }

    /// The connection's [`Wire`].
    pub(crate) fn wire(&self) -> Arc<Wire> {
        self.wire.clone()
    }
}

impl Wire {
    /// Bytes the socket has taken so far.
    pub(crate) fn written(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    /// Bytes the peer's TCP has acknowledged, at least; `None` once the
    /// socket has closed. A socket that cannot say (the call refused)
    /// counts all it took as delivered: pacing then follows the daemon's
    /// queue, not the socket, rather than stopping.
    pub(crate) fn delivered(&self) -> Option<u64> {
        // Counted before asking: a write in between only adds to what the
        // socket holds, so the answer can be low, never high.
        let written = self.written();
        let tcp = self.tcp.upgrade()?;
        match tether_exec::socket_unacked(tcp.as_fd()) {
            Ok(unacked) => Some(written.saturating_sub(unacked)),
            Err(e) => {
                tracing::debug!("SIOCOUTQ: {e}");
                Some(written)
            }
        }
    }
}

impl AsyncRead for Counted {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            ready!(self.tcp.poll_read_ready(cx))?;
            match self.tcp.try_read_buf(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                r => return Poll::Ready(r.map(drop)),
            }
        }
    }
}

impl AsyncWrite for Counted {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        self.write_with(cx, |tcp| tcp.try_write(data))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.write_with(cx, |tcp| tcp.try_write_vectored(bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(rustix::net::shutdown(&*self.tcp, rustix::net::Shutdown::Write).map_err(Into::into))
    }
}

impl Counted {
    /// One write when the socket has room, counted.
    fn write_with(
        &self,
        cx: &mut Context<'_>,
        mut write: impl FnMut(&TcpStream) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.tcp.poll_write_ready(cx))?;
            match write(&self.tcp) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Ok(n) => {
                    self.wire.written.fetch_add(n as u64, Ordering::AcqRel);
                    return Poll::Ready(Ok(n));
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn counts_what_it_writes_and_what_the_peer_acknowledged() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut peer = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let mut io = Counted::new(listener.accept().await.unwrap().0);
        let wire = io.wire();
        io.write_all(&[7; 100_000]).await.unwrap();
        assert_eq!(wire.written(), 100_000);
        let mut got = vec![0; 100_000];
        peer.read_exact(&mut got).await.unwrap();
        // Read by the peer, so acknowledged by its TCP (loopback acks at
        // once, but the ack may still be on its way to this socket).
        let delivered = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            loop {
                match wire.delivered() {
                    Some(100_000) => return,
                    Some(d) => assert!(d < 100_000),
                    None => panic!("the socket is open"),
                }
                tokio::task::yield_now().await;
            }
        });
        delivered.await.unwrap();
        peer.write_all(b"back").await.unwrap();
        let mut back = [0; 4];
        io.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"back");
        io.shutdown().await.unwrap();
        assert_eq!(peer.read(&mut back).await.unwrap(), 0, "end of stream after shutdown");
        drop(io);
        assert_eq!(wire.delivered(), None, "closed");
    }
}
