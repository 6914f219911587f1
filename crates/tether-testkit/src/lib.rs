//! What tether's test suites share, so that no suite keeps its own copy:
//! time limits, scratch files and processes, a `tether serve` process on
//! port 0, HTTP and WebSocket helpers, and loopback proxies that make
//! network faults.
//!
//! It depends on the wire types (`tether-proto`) but never on
//! `tether-exec` or `tether-server`, so that every crate can dev-depend
//! on it without a cycle. Helpers that need a crate's own types (the exec
//! suites' event readers, the in-process `TestServer` of `tether-tests`)
//! stay with that crate's tests.
//!
//! # Layout
//! - `limit`: [`LIMIT`], [`bounded`], [`within`], [`wait_bounded`],
//!   [`until`]: every wait in a test has an upper bound.
//! - `scratch`: [`ScratchDir`], [`TempPath`], random bytes and files,
//!   [`hex`], [`rand_u64`].
//! - `procfs`: [`running`], whether a process still runs.
//! - `daemon`: [`Daemon`], a `tether serve` process on port 0.
//! - `http`: [`Http`], authorised requests to a daemon's HTTP routes.
//! - `langsmith`: a JSON WebSocket to the LangSmith dialect ([`LsWs`]).
//! - `cut_proxy`: [`CutProxy`], a proxy that cuts connections mid-stream.
//! - `fault_proxy`: [`FaultProxy`], a proxy with the chaos matrix's faults
//!   on demand.
#![allow(missing_docs, clippy::unwrap_used)]

mod cut_proxy;
mod daemon;
mod fault_proxy;
mod http;
mod langsmith;
mod limit;
mod procfs;
mod scratch;

pub use cut_proxy::CutProxy;
pub use daemon::Daemon;
pub use fault_proxy::{FaultProxy, Mode as ProxyMode};
pub use http::{Http, http_client, http_client_builder};
pub use langsmith::{LsWs, ls_connect, ls_execute, ls_recv, ls_send};
pub use limit::{LIMIT, bounded, until, wait_bounded, within};
pub use procfs::running;
pub use scratch::{ScratchDir, TempPath, hex, rand_u64, random_bytes, random_file};
