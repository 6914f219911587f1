use std::collections::BTreeMap;
use std::time::Duration;

use tether_exec::ManagerConfig;

use crate::Token;

/// Everything the daemon's transport needs to know.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The bearer token every request must carry.
    pub token: Token,
    /// Origins (e.g. `http://localhost:7070`) allowed besides the daemon's
    /// own host. A request with an `Origin` header that is neither is
    /// refused with 403.
    pub allowed_origins: Vec<String>,
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
    /// `POST /v1/code` languages: name to the interpreter's argv (the code
    /// file and the request's `args` follow).
    pub interpreters: BTreeMap<String, Vec<String>>,
}

impl ServerConfig {
    /// Defaults with this token.
    pub fn new(token: Token) -> ServerConfig {
        ServerConfig {
            token,
            allowed_origins: Vec::new(),
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
        }
    }
}
