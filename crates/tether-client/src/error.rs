use tether_proto::ErrorCode;

/// Errors of the tether client.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The URL is not a usable `http(s)://` or `ws(s)://` URL.
    #[error("bad daemon URL {url:?}: {why}")]
    BadUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        why: String,
    },
    /// The daemon refused the token (HTTP 401).
    #[error("the daemon refused the token (401): check TETHER_TOKEN")]
    Unauthorized,
    /// The daemon refused the request's Origin (HTTP 403).
    #[error("the daemon refused the connection (403 forbidden)")]
    Forbidden,
    /// Connecting failed.
    #[error("cannot connect to {url}: {why}")]
    Connect {
        /// Where.
        url: String,
        /// Why.
        why: String,
    },
    /// The connection dropped while this request was in flight, or the
    /// client gave up reconnecting.
    #[error("disconnected from the daemon")]
    Disconnected,
    /// The daemon answered with an error.
    #[error("{message} ({code:?})")]
    Server {
        /// Machine-readable code.
        code: ErrorCode,
        /// Human-readable message.
        message: String,
        /// OS error number, if any.
        errno: Option<i32>,
    },
    /// The daemon sent something this client did not expect.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The token would travel in clear text (`http://`/`ws://`) to
    /// another host; use `https://`, or allow it
    /// (`ClientOptions::allow_insecure_token`).
    #[error(
        "refusing to send the token over plain HTTP to {url}: use https:// (or allow it: --allow-insecure-token, TETHER_ALLOW_INSECURE_TOKEN=1)"
    )]
    InsecureToken {
        /// The URL given.
        url: String,
    },
    /// The TLS settings cannot be used (a CA file that is not PEM).
    #[error("TLS: {why}")]
    Tls {
        /// What is wrong.
        why: String,
    },
    /// The client was closed.
    #[error("client closed")]
    Closed,
}
