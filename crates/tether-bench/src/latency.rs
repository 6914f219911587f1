//! Round trips: raw spawn, tether exec over an open and over a fresh
//! connection, and websocketd's process-per-connection.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use tether_client::{Client, StartSpec};
use tokio_tungstenite::tungstenite::Message;

use crate::procs::Daemon;
use crate::report::Latency;

/// `Command::new("true").status()`, `n` times, on a blocking thread.
pub(crate) async fn raw_spawn(n: usize) -> Result<Latency> {
    Latency::of(crate::floor::spawn_true(n).await?).context("no samples")
}

fn true_spec() -> StartSpec {
    StartSpec { argv: vec!["true".into()], ..Default::default() }
}

/// `client.run(["true"])` over one open connection, after `warmup` runs.
pub(crate) async fn tether_open(d: &Daemon, n: usize, warmup: usize) -> Result<Latency> {
    runs_open(d, &true_spec(), n, warmup).await
}

/// `client.run(spec)` over one open connection, after `warmup` runs; each
/// must exit 0.
pub(crate) async fn runs_open(d: &Daemon, spec: &StartSpec, n: usize, warmup: usize) -> Result<Latency> {
    let client = Client::connect(&d.url, &d.token).await?;
    for _ in 0..warmup {
        client.run(spec.clone()).await?;
    }
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let out = client.run(spec.clone()).await?;
        samples.push(t.elapsed());
        if out.status.code != Some(0) {
            bail!("{:?} ended with {:?}", spec.argv, out.status);
        }
    }
    Latency::of(samples).context("no samples")
}

/// `Client::connect` + `run(["true"])`, a new connection each time.
pub(crate) async fn tether_fresh(d: &Daemon, n: usize) -> Result<Latency> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let client = Client::connect(&d.url, &d.token).await?;
        let out = client.run(true_spec()).await?;
        samples.push(t.elapsed());
        drop(client);
        if out.status.code != Some(0) {
            bail!("`true` ended with {:?}", out.status);
        }
    }
    Latency::of(samples).context("no samples")
}

/// Opens a WebSocket to `websocketd ... true` and waits for it to close
/// (websocketd closes it when the process exits), `n` times.
pub(crate) async fn websocketd_true(port: u16, n: usize) -> Result<Latency> {
    let url = format!("ws://127.0.0.1:{port}/");
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str()).await?;
        loop {
            match ws.next().await {
                None | Some(Ok(Message::Close(_))) => break,
                Some(Ok(_)) => {}
                // websocketd ends the connection with a TCP reset, not a
                // close frame, when the process has exited.
                Some(Err(e)) if crate::wsclient::is_reset(&e) => break,
                Some(Err(e)) => return Err(e).context("websocketd connection failed"),
            }
        }
        samples.push(t.elapsed());
    }
    Latency::of(samples).context("no samples")
}
