//! The dialect's WebSockets (the log follow and PTY sessions) on one
//! bounded peer: every send is bounded by the peer timeout (a peer that
//! takes no bytes for that long is gone: dropping it releases what its
//! attachment holds back), the daemon pings at the native interval so a
//! dead peer's connection errors instead of idling, and the close waits
//! briefly for the peer's.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use tokio::time::{Interval, MissedTickBehavior};

use crate::ServerConfig;

/// One dialect WebSocket.
pub(super) struct Peer {
    socket: WebSocket,
    send_timeout: Duration,
    ping: Interval,
}

impl Peer {
    pub(super) fn new(socket: WebSocket, cfg: &ServerConfig) -> Peer {
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + cfg.ping_interval, cfg.ping_interval);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Peer { socket, send_timeout: cfg.peer_timeout, ping }
    }

    /// Sends; `false` when the peer is gone or took nothing for the peer
    /// timeout.
    pub(super) async fn send(&mut self, m: Message) -> bool {
        matches!(tokio::time::timeout(self.send_timeout, self.socket.send(m)).await, Ok(Ok(())))
    }

    /// The next data frame from the peer (pings are answered by the
    /// socket, ours go out meanwhile); `None` when it closed or failed.
    /// Cancel-safe between frames.
    pub(super) async fn recv(&mut self) -> Option<Message> {
        loop {
            tokio::select! {
                m = self.socket.recv() => match m {
                    None | Some(Err(_) | Ok(Message::Close(_))) => return None,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(m)) => return Some(m),
                },
                _ = self.ping.tick() => {
                    if !self.send(Message::Ping(Default::default())).await {
                        return None;
                    }
                }
            }
        }
    }

    /// Sends a close frame and waits (briefly) for the peer's.
    pub(super) async fn close(mut self, code: u16, reason: &str) {
        let frame = CloseFrame { code, reason: reason.into() };
        if !self.send(Message::Close(Some(frame))).await {
            return;
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(m)) = self.socket.recv().await {
                if matches!(m, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
}
