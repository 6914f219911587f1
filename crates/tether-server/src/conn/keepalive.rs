//! What ends a connection besides its peer's frames, alike for the native
//! protocol and every dialect: the daemon's stop, the revocation of the
//! token the connection authenticated with, the writer giving up on the
//! peer ([`Lifeline`]), and the peer's silence ([`Keepalive`]: pinged every
//! interval, dropped once silent past the peer timeout).

use std::time::Duration;

use tokio::time::{Instant, Interval};
use tokio_util::sync::CancellationToken;

use super::outbound::Outbound;

/// Close codes (RFC 6455 section 7.4.1).
pub(crate) const CLOSE_NORMAL: u16 = 1000;
pub(crate) const CLOSE_GOING_AWAY: u16 = 1001;
pub(crate) const CLOSE_PROTOCOL: u16 = 1002;
pub(crate) const CLOSE_POLICY: u16 = 1008;
pub(crate) const CLOSE_TOO_BIG: u16 = 1009;

/// Why a [`Lifeline`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    /// The daemon is stopping (shutdown or restart).
    Shutdown,
    /// The token the connection authenticated with was replaced.
    Revoked,
    /// The writer gave up on the peer (send timeout or error).
    Dead,
}

impl Ending {
    /// The close frame to send: 1001 with the wire's own reason for a
    /// stop, 1008 for a revoked token, none for a peer that is gone.
    pub(crate) fn close(self, going_away: &'static str) -> Option<(u16, &'static str)> {
        match self {
            Ending::Shutdown => Some((CLOSE_GOING_AWAY, going_away)),
            Ending::Revoked => Some((CLOSE_POLICY, "token revoked")),
            Ending::Dead => None,
        }
    }
}

/// The three outside ends of a connection, awaited as one.
pub(crate) struct Lifeline {
    shutdown: CancellationToken,
    revoked: CancellationToken,
    dead: CancellationToken,
}

impl Lifeline {
    /// The ends of a connection writing through `outbound`.
    pub(crate) fn new(
        shutdown: CancellationToken,
        revoked: CancellationToken,
        outbound: &Outbound,
    ) -> Lifeline {
        Lifeline { shutdown, revoked, dead: outbound.dead() }
    }

    /// Resolves once one of them has happened (checked in the order of
    /// [`Ending`]).
    pub(crate) async fn ended(&self) -> Ending {
        tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => Ending::Shutdown,
            _ = self.revoked.cancelled() => {
                tracing::info!("token revoked: closing");
                Ending::Revoked
            }
            _ = self.dead.cancelled() => Ending::Dead,
        }
    }
}

/// A connection's pings and the peer's last sign of life.
pub(crate) struct Keepalive {
    ping: Interval,
    last_seen: Instant,
    timeout: Duration,
}

/// What a [`Keepalive`] tick calls for.
pub(crate) enum Tick {
    /// Ping the peer ([`Outbound::ping`]).
    Ping,
    /// The peer has been silent this long, past the peer timeout.
    Silent(Duration),
}

impl Keepalive {
    /// Pings every `interval` from now; a peer silent for longer than
    /// `timeout` is as good as gone.
    pub(crate) fn new(interval: Duration, timeout: Duration) -> Keepalive {
        let ping = tokio::time::interval_at(Instant::now() + interval, interval);
        Keepalive { ping, last_seen: Instant::now(), timeout }
    }

    /// The peer sent a frame.
    pub(crate) fn seen(&mut self) {
        self.last_seen = Instant::now();
    }

    /// Waits for the next ping time and says what it calls for.
    pub(crate) async fn tick(&mut self) -> Tick {
        self.ping.tick().await;
        let silent = self.last_seen.elapsed();
        if silent > self.timeout { Tick::Silent(silent) } else { Tick::Ping }
    }
}
