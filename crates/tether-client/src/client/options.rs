//! [`ClientOptions`], the connection and reconnect settings, and
//! [`Connection`], the state a client publishes.

use std::time::Duration;

use crate::driver;

/// Connection and reconnect settings.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Limit for one connection attempt (TCP + upgrade + hello).
    pub connect_timeout: Duration,
    /// First reconnect delay; doubles per failed attempt.
    pub initial_backoff: Duration,
    /// Largest reconnect delay.
    pub max_backoff: Duration,
    /// Give up reconnecting after this long.
    pub reconnect_for: Duration,
    /// Flow control per execution: the daemon sends at most this many
    /// output bytes that the execution's reader has not taken yet. An
    /// execution nobody reads therefore holds back only its own command (a
    /// paced one waits, another falls behind its ring and gets a gap),
    /// never the connection or other executions.
    pub window_bytes: u64,
    /// How often to ping the daemon.
    pub keepalive: Duration,
    /// Reconnect when nothing (not even a pong) arrived for this long.
    pub peer_timeout: Duration,
    /// A CA certificate (PEM) to trust for a `https://`/`wss://` daemon,
    /// besides the system's roots.
    pub ca_cert: Option<std::path::PathBuf>,
    /// Send the token over plain `http://`/`ws://` to another host
    /// (refused by default: see [`crate::token_may_travel`]).
    pub allow_insecure_token: bool,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: driver::secs(10),
            initial_backoff: Duration::from_millis(100),
            // Reconnect attempts are cheap; a person waits for the next.
            max_backoff: driver::secs(2),
            reconnect_for: driver::secs(300),
            window_bytes: 2 << 20,
            keepalive: driver::secs(15),
            peer_timeout: driver::secs(45),
            ca_cert: None,
            allow_insecure_token: false,
        }
    }
}

/// The state of a client's connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Connection {
    /// Connected to the daemon.
    Connected,
    /// The connection dropped; reconnecting with backoff. Executions resume
    /// when it is back.
    Reconnecting,
    /// Reconnecting failed for good (see [`ClientOptions::reconnect_for`]);
    /// the next request tries again.
    Failed,
}
