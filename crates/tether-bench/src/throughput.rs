//! Streaming one command's stdout to one client: tether, a raw pipe, a bare
//! WebSocket loopback, websocketd and terminado.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::{SinkExt, StreamExt};
use tether_client::{Client, ExecEvent, StartSpec};
use tokio_tungstenite::tungstenite::Message;

use crate::procs::{self, Daemon};
use crate::report::mib_per_s;
use crate::wsclient::{self, Ws, next_term_msg, open_terminal};
use crate::wsfloor::{Place, Server};

/// What one throughput run moved.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Transfer {
    /// Bytes the client received.
    pub(crate) bytes: u64,
    /// Bytes reported lost (tether gaps); 0 elsewhere.
    pub(crate) lost: u64,
    /// From the request to the last byte.
    pub(crate) elapsed: Duration,
    /// CPU time the tether daemon and this process used meanwhile (tether
    /// runs only).
    pub(crate) cpu: Option<(Duration, Duration)>,
    /// Data messages received (0 where not counted).
    pub(crate) frames: u64,
}

impl Transfer {
    /// MiB/s of received bytes.
    pub(crate) fn rate(&self) -> f64 {
        mib_per_s(self.bytes, self.elapsed)
    }
}

/// Several runs of one transfer. Single runs of a pipe on two cores vary
/// by a factor of two or more with scheduling, so the table shows the
/// median and the range.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Runs {
    /// The run with the median rate.
    pub(crate) median: Transfer,
    /// The slowest run's rate, MiB/s.
    pub(crate) min: f64,
    /// The fastest run's rate, MiB/s.
    pub(crate) max: f64,
    /// How many runs.
    pub(crate) count: usize,
    /// Bytes lost in gaps over all runs.
    pub(crate) lost: u64,
}

/// Runs `run` `count` times, one after the other; any failure fails all.
pub(crate) async fn repeat<F, Fut>(count: usize, mut run: F) -> Result<Runs>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Transfer>>,
{
    let mut runs = Vec::with_capacity(count);
    for _ in 0..count.max(1) {
        runs.push(run().await?);
    }
    runs.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
    Ok(Runs {
        median: runs[runs.len() / 2],
        min: runs[0].rate(),
        max: runs[runs.len() - 1].rate(),
        count: runs.len(),
        lost: runs.iter().map(|t| t.lost).sum(),
    })
}

/// tether: `head -c n /dev/zero` via `client.start`, counting stdout bytes
/// and gap bytes until the exit. With `pace`, the daemon stops reading the
/// command's pipe while this client is half a ring behind, so nothing is
/// lost; without it, a client slower than the command gets gaps.
pub(crate) async fn tether(d: &Daemon, n: u64, pace: bool) -> Result<Transfer> {
    let client = Client::connect(&d.url, &d.token).await?;
    let spec = StartSpec {
        argv: vec!["head".into(), "-c".into(), n.to_string(), "/dev/zero".into()],
        pace,
        ..Default::default()
    };
    let me = std::process::id();
    let cpu0 = (procs::cpu_time(d.pid), procs::cpu_time(me));
    let t = Instant::now();
    let mut exec = client.start(spec).await?;
    let (mut bytes, mut lost) = (0u64, 0u64);
    loop {
        match exec.next().await {
            Some(Ok(ExecEvent::Stdout(b))) => bytes += b.len() as u64,
            Some(Ok(ExecEvent::Stderr(_) | ExecEvent::Screen { .. } | ExecEvent::Resized(_))) => {}
            Some(Ok(ExecEvent::Gap { from, to, .. })) => lost += to - from,
            Some(Ok(ExecEvent::Exit(status))) => {
                let elapsed = t.elapsed();
                let cpu = match (cpu0, procs::cpu_time(d.pid), procs::cpu_time(me)) {
                    ((Some(d0), Some(c0)), Some(d1), Some(c1)) => {
                        Some((d1.saturating_sub(d0), c1.saturating_sub(c0)))
                    }
                    _ => None,
                };
                if status.stdout_bytes != n {
                    bail!("the exit reports {} stdout bytes, expected {n}", status.stdout_bytes);
                }
                return Ok(Transfer { bytes, lost, elapsed, cpu, frames: 0 });
            }
            Some(Err(e)) => return Err(e).context("the execution failed"),
            None => bail!("the event stream ended without an exit"),
        }
    }
}

/// The physical limit: `head -c n /dev/zero | cat > /dev/null` under sh.
pub(crate) async fn raw_pipe(n: u64) -> Result<Transfer> {
    let t = Instant::now();
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!("head -c {n} /dev/zero | cat > /dev/null"))
        .status()
        .await?;
    let elapsed = t.elapsed();
    if !status.success() {
        bail!("the pipeline failed: {status}");
    }
    Ok(Transfer { bytes: n, lost: 0, elapsed, cpu: None, frames: 0 })
}

/// A bare tokio-tungstenite server (`wsfloor`, in this process or its
/// own) sends `n` bytes as 64 KiB binary frames; the client counts them.
pub(crate) async fn bare_websocket(n: u64, place: Place) -> Result<Transfer> {
    let server = Server::start(place).await?;
    let addr = server.addr();
    let t = Instant::now();
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/")).await?;
    ws.send(Message::Text(n.to_string().into())).await?;
    let bytes = count_binary(&mut ws).await?;
    let elapsed = t.elapsed();
    server.finish().await?;
    if bytes != n {
        bail!("received {bytes} of {n} bytes");
    }
    Ok(Transfer { bytes, lost: 0, elapsed, cpu: None, frames: 0 })
}

/// websocketd `--binary head -c n /dev/zero`: counts binary bytes until the
/// connection closes.
pub(crate) async fn websocketd(port: u16, n: u64) -> Result<Transfer> {
    let t = Instant::now();
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/")).await?;
    let bytes = count_binary(&mut ws).await?;
    let elapsed = t.elapsed();
    if bytes != n {
        bail!("received {bytes} of {n} bytes before the connection ended");
    }
    Ok(Transfer { bytes, lost: 0, elapsed, cpu: None, frames: 0 })
}

/// Counts data bytes until the peer closes. websocketd ends a connection
/// whose process exited with a TCP reset instead of a close frame, so a
/// reset also counts as the end; the callers compare the count with what
/// was sent.
async fn count_binary(ws: &mut Ws) -> Result<u64> {
    let mut bytes = 0u64;
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(b))) => bytes += b.len() as u64,
            Some(Ok(Message::Text(s))) => bytes += s.len() as u64,
            Some(Ok(Message::Close(_))) | None => return Ok(bytes),
            Some(Ok(_)) => {}
            Some(Err(e)) if wsclient::is_reset(&e) => return Ok(bytes),
            Some(Err(e)) => return Err(e).context("the stream failed"),
        }
    }
}

/// The end-of-output marker. The command line types it as `__DO""NE__`,
/// so the terminal's echo of the command line does not contain it.
const MARKER: &str = "__DONE__";

/// terminado: types `head -c n /dev/zero | base64 -w0; echo; echo __DONE__`
/// into a fresh bash and counts the text of `stdout` messages until the
/// marker. Returns the bytes of terminal output received (base64, about
/// 4/3 of `n`).
pub(crate) async fn terminado(port: u16, n: u64) -> Result<Transfer> {
    // Wait for the shell's first output (its prompt), so that bash's start
    // is not part of the measurement.
    let mut ws = open_terminal(port).await?;
    let line = format!("head -c {n} /dev/zero | base64 -w0; echo; echo __DO\"\"NE__\r");
    let t = Instant::now();
    ws.send(Message::text(serde_json::json!(["stdin", line]).to_string())).await?;
    let mut bytes = 0u64;
    // The tail of the previous message, so a marker split over two
    // messages is still found.
    let mut tail = String::new();
    loop {
        let (kind, text) = next_term_msg(&mut ws).await?;
        if kind == "disconnect" {
            bail!("the terminal closed before the marker");
        }
        if kind != "stdout" {
            continue;
        }
        bytes += text.len() as u64;
        tail.push_str(&text);
        if tail.contains(MARKER) {
            break;
        }
        let keep = tail.len().saturating_sub(MARKER.len());
        // Cut on a char boundary; the text is base64 and ASCII in practice.
        let cut = (keep..=tail.len()).find(|&i| tail.is_char_boundary(i)).unwrap_or(tail.len());
        tail.drain(..cut);
    }
    let elapsed = t.elapsed();
    let _ = ws.close(None).await;
    Ok(Transfer { bytes, lost: 0, elapsed, cpu: None, frames: 0 })
}
