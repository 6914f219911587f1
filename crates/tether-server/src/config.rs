use std::collections::BTreeMap;
use std::time::Duration;

use tether_exec::ManagerConfig;

use crate::{Token, Tokens};

/// Everything the daemon's transport needs to know.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The bearer token every request must carry; [`Tokens::set`] replaces
    /// it while the daemon serves (revoking the old one).
    pub token: Tokens,
    /// Origins (e.g. `http://localhost:7070`) allowed besides the daemon's
    /// own host, as [`normalize_origin`] makes them. A request with an
    /// `Origin` header that is neither is refused with 403.
    pub allowed_origins: Vec<String>,
    /// Host names (the `Host` header without its port, lowercase, as
    /// [`normalize_host`] makes them) accepted besides IP literals and
    /// `localhost`: any other `Host` is refused with 403, so a page on a
    /// DNS name rebound to this host cannot reach the daemon. `*` accepts
    /// any.
    pub allowed_hosts: Vec<String>,
    /// Most client connections held at once (HTTP and WebSocket that have
    /// not upgraded yet); past it a new one is closed at once. Default:
    /// half the process's open-file limit ([`default_max_connections`]).
    pub max_connections: usize,
    /// Most connections held at once that have not yet made an
    /// authenticated request; a new one past it closes the oldest of
    /// them. Keeps the rest of [`ServerConfig::max_connections`] for
    /// clients with the token.
    pub max_unauthenticated: usize,
    /// A connection that has made no authenticated request this long after
    /// it was accepted is closed.
    pub unauthenticated_timeout: Duration,
    /// A request whose headers have not all arrived this long after the
    /// connection became ready for it (idle keep-alive included) closes the
    /// connection (slow-header clients).
    pub header_timeout: Duration,
    /// How often the server pings each WebSocket peer.
    pub ping_interval: Duration,
    /// A peer silent (no frame, no pong) for this long is dropped.
    pub peer_timeout: Duration,
    /// Largest inbound WebSocket message/frame.
    pub max_frame_bytes: usize,
    /// Largest `data` in one outbound `output` frame.
    pub max_chunk_bytes: usize,
    /// Outbound frames queued per connection before forwarders wait (and,
    /// if the peer stays slow, fall behind the ring and get a gap).
    pub outbound_queue: usize,
    /// Kill running commands when the daemon shuts down.
    pub kill_on_shutdown: bool,
    /// Command manager defaults and limits.
    pub manager: ManagerConfig,
    /// The file routes' root, confining them to that tree. `None`: paths
    /// are absolute or relative to the daemon's working directory, not
    /// confined.
    pub files_root: Option<std::path::PathBuf>,
    /// Ring size per stream for commands started through the LangSmith
    /// dialect (`None`: the manager's default). Larger than the default:
    /// that client cannot notice lost output, and what was in flight when
    /// its connection dropped must still be held when it reconnects.
    pub langsmith_ring_bytes: Option<usize>,
    /// Bytes of request bodies the one-shot routes (`/v1/exec`,
    /// `/v1/code`, the LangSmith `execute` routes, ConTree's runs and
    /// uploads) may hold at once,
    /// daemon-wide; a request that finds no room within 2 s gets 429 with
    /// `Retry-After`. Default 256 MiB.
    pub max_body_memory: usize,
    /// `POST /v1/code` languages: name to the interpreter's argv (the code
    /// file and the request's `args` follow).
    pub interpreters: BTreeMap<String, Vec<String>>,
    /// The name the sandbox dialects (Daytona) know this host by, besides
    /// `local` (`None`: only `local`). URL-safe: 1..=64 of `[A-Za-z0-9._-]`.
    pub sandbox_id: Option<String>,
    /// TLS on the listener (`None`: plain HTTP).
    pub tls: Option<std::sync::Arc<crate::Tls>>,
}

impl ServerConfig {
    /// Defaults with this token.
    pub fn new(token: Token) -> ServerConfig {
        ServerConfig {
            token: Tokens::new(token),
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            max_connections: default_max_connections(),
            max_unauthenticated: default_max_connections() / 4,
            unauthenticated_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(15),
            peer_timeout: Duration::from_secs(45),
            max_frame_bytes: 1 << 20,
            max_chunk_bytes: 256 * 1024,
            outbound_queue: 16,
            kill_on_shutdown: true,
            manager: ManagerConfig::default(),
            interpreters: crate::oneshot::default_interpreters(),
            files_root: None,
            langsmith_ring_bytes: Some(4 << 20),
            max_body_memory: 256 << 20,
            sandbox_id: None,
            tls: None,
        }
    }
}

/// Half the process's soft open-file limit (at least 16, at most 65536):
/// the rest is for commands' pipes, terminals and files.
pub fn default_max_connections() -> usize {
    let nofile = rustix::process::getrlimit(rustix::process::Resource::Nofile).current.unwrap_or(65536 * 2);
    usize::try_from(nofile / 2).unwrap_or(65536).clamp(16, 65536)
}

/// A configuration value the daemon cannot use.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// An allowed Origin that no browser could send.
    #[error(
        "allowed origin {value:?}: {why} (expected scheme://host[:port], e.g. http://localhost:3000, or *)"
    )]
    Origin {
        /// The value given.
        value: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// An allowed host that is not a host name.
    #[error("allowed host {value:?}: {why} (expected a name such as box.example.com, or *)")]
    Host {
        /// The value given.
        value: String,
        /// What is wrong with it.
        why: &'static str,
    },
}

/// An allowed Origin as browsers send it: `scheme://host[:port]`, scheme
/// and host lowercase, no path (a trailing `/` is dropped, since an Origin
/// never has one and the entry would otherwise never match). `*` stays.
pub fn normalize_origin(value: &str) -> Result<String, ConfigError> {
    let err = |why| ConfigError::Origin { value: value.to_owned(), why };
    let v = value.trim();
    if v == "*" {
        return Ok(v.to_owned());
    }
    let v = v.strip_suffix('/').unwrap_or(v);
    let (scheme, rest) = v.split_once("://").ok_or_else(|| err("no scheme"))?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err(err("the scheme is not http or https"));
    }
    if rest.is_empty() {
        return Err(err("no host"));
    }
    if rest.contains(['/', '?', '#', '@']) || rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(err("an origin has no path, query, fragment, user or spaces"));
    }
    let port = rest.rsplit_once(':').filter(|_| !rest.ends_with(']')).map(|(_, p)| p);
    if port.is_some_and(|p| !p.bytes().all(|b| b.is_ascii_digit()) || p.parse::<u16>().is_err()) {
        return Err(err("the port is not a number below 65536"));
    }
    Ok(format!("{scheme}://{}", rest.to_ascii_lowercase()))
}

/// An allowed host name (`Host` without its port): lowercase, without a
/// trailing dot. `*` stays.
pub fn normalize_host(value: &str) -> Result<String, ConfigError> {
    let err = |why| ConfigError::Host { value: value.to_owned(), why };
    let v = value.trim();
    if v == "*" {
        return Ok(v.to_owned());
    }
    let v = v.strip_suffix('.').unwrap_or(v);
    if v.is_empty() {
        return Err(err("empty"));
    }
    if !v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') {
        return Err(err("a host name has only letters, digits, '-' and '.' (no scheme, port or path)"));
    }
    Ok(v.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_normalised_or_refused() {
        let ok = |v: &str| normalize_origin(v).ok();
        assert_eq!(ok("http://localhost:3000/").as_deref(), Some("http://localhost:3000"));
        assert_eq!(ok(" HTTPS://App.Example ").as_deref(), Some("https://app.example"));
        assert_eq!(ok("http://[::1]:8080").as_deref(), Some("http://[::1]:8080"));
        assert_eq!(ok("*").as_deref(), Some("*"));
        for bad in [
            "localhost:3000",
            "ftp://x",
            "http://",
            "http://x/app",
            "http://x:port",
            "http://a b",
            "http://x:99999",
        ] {
            assert!(normalize_origin(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hosts_are_normalised_or_refused() {
        assert_eq!(normalize_host("Box.Example.").ok().as_deref(), Some("box.example"));
        for bad in ["", "http://box", "box:7070", "box/x"] {
            assert!(normalize_host(bad).is_err(), "{bad}");
        }
    }
}
