#![allow(missing_docs)]
//! `client_figures`: the Rust client's figures against a daemon someone
//! else started (`--url`, `--token`), one measurement per invocation, as
//! one line of JSON on stdout. `sdk/python/bench/bench.py` runs it next to
//! the Python SDK against the same daemon, so the two clients are measured
//! side by side in one run; `tether-bench` itself starts daemons of its own
//! and has no way to be pointed at one.
//!
//! Modes:
//! - `spawn N`: the floor, `Command::new("true").status()` N times (what
//!   `tether-bench` row 1 does). Prints `{"samples_ns": [...]}`.
//! - `round-trip N WARMUP`: one `Client::connect`, WARMUP untimed then N
//!   timed `client.run(StartSpec { argv: ["true"] })` (row 2 of
//!   `tether-bench`), then removes the commands it made (untimed). Prints
//!   `{"samples_ns": [...]}`.
//! - `stream BYTES`: `client.start(["head", "-c", BYTES, "/dev/zero"])`
//!   with `pace: true`, counting `Stdout` bytes until `Exit` (the paced
//!   throughput row). Fails unless the count, the exit's `stdout_bytes` and
//!   BYTES agree and nothing was lost. Prints `{"bytes", "elapsed_s",
//!   "cpu_s"}` (this process's CPU during the transfer).
//! - `handles N`: RSS of this process (VmRSS) after connecting and one
//!   warm-up run, then after N `client.start(["sleep", SECS])` with `pace:
//!   true` whose `Execution`s are held (the Python SDK's `run(..., wait=False)`),
//!   then every command is removed. Prints `{"n", "rss_before_kib",
//!   "rss_after_kib"}`.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use tether_client::{Client, ExecEvent, StartSpec};

#[path = "../floor.rs"]
mod floor;

#[derive(Parser, Debug)]
#[command(name = "client_figures")]
struct Args {
    /// The daemon's base URL (`http://127.0.0.1:PORT`); not used by `spawn`.
    #[arg(long, default_value = "")]
    url: String,
    /// Its token.
    #[arg(long, env = "TETHER_TOKEN", default_value = "")]
    token: String,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// Raw `true` spawns (std Command::status).
    Spawn { n: usize },
    /// `client.run(["true"])` over one open connection.
    RoundTrip { n: usize, warmup: usize },
    /// One paced `head -c BYTES /dev/zero`, counted.
    Stream { bytes: u64 },
    /// RSS of this client holding N attached `sleep` commands.
    Handles {
        n: usize,
        /// How long each `sleep` sleeps (it is removed afterwards anyway).
        #[arg(long, default_value_t = 60)]
        secs: u64,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let line = match args.mode {
        Mode::Spawn { n } => samples_json(&floor::spawn_true(n).await?),
        Mode::RoundTrip { n, warmup } => samples_json(&round_trip(&args.url, &args.token, n, warmup).await?),
        Mode::Stream { bytes } => stream(&args.url, &args.token, bytes).await?,
        Mode::Handles { n, secs } => handles(&args.url, &args.token, n, secs).await?,
    };
    println!("{line}");
    Ok(())
}

fn samples_json(samples: &[Duration]) -> String {
    let ns: Vec<u128> = samples.iter().map(Duration::as_nanos).collect();
    serde_json::json!({ "samples_ns": ns }).to_string()
}

fn argv(words: &[&str]) -> StartSpec {
    StartSpec { argv: words.iter().map(|w| (*w).to_owned()).collect(), ..Default::default() }
}

/// `client.run(["true"])`, spelled out (`run` is `start` with `pace: true`
/// then `output`) to keep the command's id for removing it afterwards.
async fn run_true(client: &Client) -> Result<tether_client::CommandId> {
    let exec = client.start(StartSpec { pace: true, ..argv(&["true"]) }).await?;
    let id = exec.id().clone();
    let out = exec.output().await?;
    if out.status.code != Some(0) {
        bail!("`true` ended with {:?}", out.status);
    }
    Ok(id)
}

async fn round_trip(url: &str, token: &str, n: usize, warmup: usize) -> Result<Vec<Duration>> {
    let client = Client::connect(url, token).await.context("connecting")?;
    let mut ids = Vec::with_capacity(n + warmup);
    for _ in 0..warmup {
        ids.push(run_true(&client).await?);
    }
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let id = run_true(&client).await?;
        samples.push(t.elapsed());
        ids.push(id);
    }
    // Untimed: forget them, so that the daemon's ring budget is not held
    // for their TTL by the rows that follow.
    for id in &ids {
        let _ = client.remove(id).await;
    }
    Ok(samples)
}

/// CPU time (user + system) of this process, from /proc/self/stat (USER_HZ
/// = 100).
fn own_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

async fn stream(url: &str, token: &str, n: u64) -> Result<String> {
    let client = Client::connect(url, token).await.context("connecting")?;
    let spec = StartSpec { pace: true, ..argv(&["head", "-c", &n.to_string(), "/dev/zero"]) };
    let cpu0 = own_cpu();
    let t = Instant::now();
    let mut exec = client.start(spec).await?;
    let id = exec.id().clone();
    let (mut bytes, mut lost) = (0u64, 0u64);
    let status = loop {
        match exec.next().await {
            Some(Ok(ExecEvent::Stdout(b))) => bytes += b.len() as u64,
            Some(Ok(ExecEvent::Gap { from, to, .. })) => lost += to - from,
            Some(Ok(ExecEvent::Exit(status))) => break status,
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e).context("the execution failed"),
            None => bail!("the event stream ended without an exit"),
        }
    };
    let elapsed = t.elapsed();
    let cpu = match (cpu0, own_cpu()) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a).as_secs_f64()),
        _ => None,
    };
    let _ = client.remove(&id).await;
    if lost != 0 || bytes != n || status.stdout_bytes != n {
        bail!("received {bytes} B, lost {lost} B, exit says {} B, expected {n}", status.stdout_bytes);
    }
    Ok(serde_json::json!({ "bytes": bytes, "elapsed_s": elapsed.as_secs_f64(), "cpu_s": cpu }).to_string())
}

fn own_rss_kib() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS in /proc/self/status")
}

async fn handles(url: &str, token: &str, n: usize, secs: u64) -> Result<String> {
    let client = Client::connect(url, token).await.context("connecting")?;
    // Warm up the connection and the runtime, so the baseline has them.
    for _ in 0..5 {
        client.run(argv(&["true"])).await?;
    }
    let before = own_rss_kib()?;
    let secs = secs.to_string();
    let mut held = Vec::with_capacity(n);
    let mut start_err = None;
    for _ in 0..n {
        match client.start(StartSpec { pace: true, ..argv(&["sleep", &secs]) }).await {
            Ok(exec) => held.push(exec),
            Err(e) => {
                start_err = Some(e);
                break;
            }
        }
    }
    let after = own_rss_kib()?;
    let ids: Vec<_> = held.iter().map(|e| e.id().clone()).collect();
    let count = held.len();
    drop(held);
    for id in &ids {
        let _ = client.remove(id).await;
    }
    if let Some(e) = start_err {
        return Err(e).with_context(|| format!("start {} of {n} failed", count + 1));
    }
    Ok(serde_json::json!({ "n": count, "rss_before_kib": before, "rss_after_kib": after }).to_string())
}
