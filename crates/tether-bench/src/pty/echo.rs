//! Keystroke echo: one byte typed at `cat` on a terminal in its default
//! (canonical, echoing) mode, until the line discipline's echo of it comes
//! back. Measured on the bare PTY, through tether (bare client and
//! `tether-client`) and through terminado.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use futures_util::SinkExt;
use tether_client::{Client, ExecEvent, Execution, PtySpec, StartSpec};
use tether_proto::{ClientMsg, CommandId, ServerMsg};
use tokio_tungstenite::tungstenite::Message;

use crate::procs::Daemon;
use crate::report::Latency;
use crate::tetherws::{self, TetherWs};
use crate::wsclient::{self, Ws, next_term_msg};
use crate::wsfloor::{Place, Server};

/// Keystrokes typed before the measured ones.
pub(crate) const WARMUP: usize = 50;

/// After this many typed bytes the line is ended with `\r`, so the
/// canonical line buffer (4095 bytes) never fills. Not measured.
pub(crate) const FLUSH_EVERY: usize = 1000;

/// A terminal to type at.
trait Keyboard {
    /// Types `a` and waits for its echo; the time until the echo arrived.
    async fn key(&mut self) -> Result<Duration>;
    /// Types `\r` and reads `n` bytes of output: the echoed `\r\n`, then
    /// `cat`'s copy of the line with its `\r\n`.
    async fn enter(&mut self, n: usize) -> Result<()>;
}

/// `WARMUP + n` keystrokes; the last `n` are the samples.
async fn measure(k: &mut impl Keyboard, n: usize) -> Result<Latency> {
    let mut samples = Vec::with_capacity(n);
    let mut typed = 0;
    for i in 0..WARMUP + n {
        if typed == FLUSH_EVERY {
            k.enter(typed + 4).await?;
            typed = 0;
        }
        let d = k.key().await?;
        typed += 1;
        if i >= WARMUP {
            samples.push(d);
        }
    }
    Latency::of(samples).context("no samples")
}

/// The floor: `pty_floor.py echo` writes to and reads from the master of
/// `cat`'s PTY itself, with nothing in between.
pub(crate) async fn floor(python: &str, script: &Path, n: usize) -> Result<Latency> {
    let args = ["echo".to_owned(), n.to_string(), WARMUP.to_string(), FLUSH_EVERY.to_string()];
    let samples = super::run_floor(python, script, args)
        .await?
        .lines()
        .map(|l| l.trim().parse::<u64>().map(Duration::from_nanos))
        .collect::<Result<Vec<_>, _>>()
        .context("pty_floor.py printed something other than nanoseconds")?;
    if samples.len() != n {
        bail!("pty_floor.py printed {} samples, expected {n}", samples.len());
    }
    Latency::of(samples).context("no samples")
}

/// `start {argv: ["cat"], pty: {rows: 24, cols: 80}}`.
fn cat_spec() -> StartSpec {
    StartSpec { argv: vec!["cat".into()], pty: tetherws::pty(24, 80), ..StartSpec::default() }
}

/// What the bare client saw: the echo latency, and when the `ok` of each
/// `stdin` frame came (the daemon sends it once the byte is written to
/// the terminal, so it times the inbound half of the trip).
pub(crate) struct RawEcho {
    /// `stdin` sent until the echo's `output` arrived.
    pub(crate) echo: Latency,
    /// `stdin` sent until its `ok` arrived.
    pub(crate) ok: Latency,
}

/// tether through the bare client: a `stdin` frame with `a`, until the
/// `output` frame with its echo (the `ok` of the `stdin` is awaited too,
/// so that the samples do not overlap).
pub(crate) async fn tether_raw(d: &Daemon, n: usize) -> Result<RawEcho> {
    let mut ws = TetherWs::connect(d).await?;
    let command = ws.start(cat_spec()).await?;
    let mut kb = RawKeyboard { ws, command, oks: Vec::new() };
    let r = measure(&mut kb, n).await;
    let RawKeyboard { mut ws, command, oks } = kb;
    let _ = ws.request_ok(|id| ClientMsg::Kill { id, command }).await;
    ws.close().await;
    let echo = r?;
    // The last `n` keystrokes are the measured ones.
    let ok = Latency::of(oks[oks.len().saturating_sub(n)..].to_vec()).context("no samples")?;
    Ok(RawEcho { echo, ok })
}

struct RawKeyboard {
    ws: TetherWs,
    command: CommandId,
    /// When the `ok` of each keystroke's `stdin` arrived.
    oks: Vec<Duration>,
}

impl RawKeyboard {
    /// Sends `data` and reads output until `n` bytes and the `ok` arrived;
    /// returns the output, when its last byte arrived and when the `ok` did.
    async fn type_and_read(
        &mut self,
        data: &'static [u8],
        n: usize,
    ) -> Result<(Vec<u8>, Duration, Duration)> {
        let t = Instant::now();
        let id = self.ws.stdin(&self.command, data).await?;
        let (mut out, mut done_at, mut acked) = (Vec::new(), None, None);
        while done_at.is_none() || acked.is_none() {
            match self.ws.recv().await? {
                ServerMsg::Output { data, .. } => {
                    out.extend_from_slice(data.as_bytes());
                    if out.len() > n {
                        bail!("expected {n} bytes of output, got {:?}", String::from_utf8_lossy(&out));
                    }
                    if out.len() == n {
                        done_at = Some(t.elapsed());
                    }
                }
                ServerMsg::Ok { id: got } if got == id => acked = Some(t.elapsed()),
                ServerMsg::Exit { .. } => bail!("cat exited"),
                ServerMsg::Gap { .. } => bail!("a gap in cat's output"),
                _ => {}
            }
        }
        Ok((out, done_at.unwrap_or_default(), acked.unwrap_or_default()))
    }
}

impl Keyboard for RawKeyboard {
    async fn key(&mut self) -> Result<Duration> {
        let (out, d, ok) = self.type_and_read(b"a", 1).await?;
        if out != b"a" {
            bail!("expected the echo \"a\", got {:?}", String::from_utf8_lossy(&out));
        }
        self.oks.push(ok);
        Ok(d)
    }

    async fn enter(&mut self, n: usize) -> Result<()> {
        self.type_and_read(b"\r", n).await.map(drop)
    }
}

/// tether through `tether-client`: `Execution::write_stdin("a")`, then
/// `next()` until the echo (the client acknowledges stdin in the
/// background, as in normal use).
pub(crate) async fn tether_client(d: &Daemon, n: usize) -> Result<Latency> {
    let client = Client::connect(&d.url, &d.token).await?;
    let spec = StartSpec {
        argv: vec!["cat".into()],
        pty: Some(PtySpec { rows: 24, cols: 80, term: None }),
        ..Default::default()
    };
    let mut kb = LibKeyboard { exec: client.start(spec).await? };
    let r = measure(&mut kb, n).await;
    let _ = kb.exec.kill().await;
    r
}

struct LibKeyboard {
    exec: Execution,
}

impl LibKeyboard {
    async fn type_and_read(&mut self, data: &'static [u8], n: usize) -> Result<(Vec<u8>, Duration)> {
        let t = Instant::now();
        self.exec.write_stdin(Bytes::from_static(data)).await?;
        let mut out = Vec::new();
        while out.len() < n {
            match self.exec.next().await.context("the events ended")?? {
                ExecEvent::Stdout(b) => out.extend_from_slice(&b),
                ExecEvent::Exit(_) => bail!("cat exited"),
                ExecEvent::Gap { .. } => bail!("a gap in cat's output"),
                _ => {}
            }
        }
        let d = t.elapsed();
        if out.len() > n {
            bail!("expected {n} bytes of output, got {:?}", String::from_utf8_lossy(&out));
        }
        Ok((out, d))
    }
}

impl Keyboard for LibKeyboard {
    async fn key(&mut self) -> Result<Duration> {
        let (out, d) = self.type_and_read(b"a", 1).await?;
        if out != b"a" {
            bail!("expected the echo \"a\", got {:?}", String::from_utf8_lossy(&out));
        }
        Ok(d)
    }

    async fn enter(&mut self, n: usize) -> Result<()> {
        self.type_and_read(b"\r", n).await.map(drop)
    }
}

/// terminado running `cat` (a `UniqueTermManager` terminal per
/// connection): `["stdin", "a"]` until `["stdout", "a"]`.
pub(crate) async fn terminado(port: u16, n: usize) -> Result<Latency> {
    let mut ws = wsclient::connect_nodelay(port, "/websocket").await?;
    // `cat` prints nothing: the terminal is ready with terminado's `setup`.
    loop {
        let (kind, _) = next_term_msg(&mut ws).await?;
        if kind == "setup" {
            break;
        }
    }
    let mut kb = TermKeyboard { ws };
    let r = measure(&mut kb, n).await;
    let _ = kb.ws.close(None).await;
    r
}

struct TermKeyboard {
    ws: Ws,
}

impl TermKeyboard {
    async fn type_and_read(&mut self, text: &str, n: usize) -> Result<(String, Duration)> {
        let t = Instant::now();
        self.ws.send(Message::text(serde_json::json!(["stdin", text]).to_string())).await?;
        let mut out = String::new();
        while out.len() < n {
            match next_term_msg(&mut self.ws).await? {
                (kind, text) if kind == "stdout" => out.push_str(&text),
                (kind, _) if kind == "disconnect" => bail!("the terminal closed"),
                _ => {}
            }
        }
        let d = t.elapsed();
        if out.len() > n {
            bail!("expected {n} bytes of output, got {out:?}");
        }
        Ok((out, d))
    }
}

impl Keyboard for TermKeyboard {
    async fn key(&mut self) -> Result<Duration> {
        let (out, d) = self.type_and_read("a", 1).await?;
        if out != "a" {
            bail!("expected the echo \"a\", got {out:?}");
        }
        Ok(d)
    }

    async fn enter(&mut self, n: usize) -> Result<()> {
        self.type_and_read("\r", n).await.map(drop)
    }
}

/// The WebSocket half of the floor: a bare tokio-tungstenite echo server
/// (`wsfloor`); the client sends a one-byte binary frame and waits for it
/// to come back, `WARMUP + n` times over one connection (Nagle off on both
/// ends). With the PTY floor, what a keystroke's trip through any
/// WebSocket terminal cannot go below.
pub(crate) async fn bare_websocket(n: usize, place: Place) -> Result<Latency> {
    let server = Server::start(place).await?;
    let r = echo_samples(server.addr(), n).await;
    server.finish().await?;
    r
}

async fn echo_samples(addr: std::net::SocketAddr, n: usize) -> Result<Latency> {
    use futures_util::StreamExt;
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/"), tcp).await?;
    let mut samples = Vec::with_capacity(n);
    for i in 0..WARMUP + n {
        let t = Instant::now();
        ws.send(Message::Binary(Bytes::from_static(b"a"))).await?;
        match ws.next().await.context("the echo server went away")?? {
            Message::Binary(b) if &b[..] == b"a" => {}
            other => bail!("expected the echo of \"a\", got {other:?}"),
        }
        if i >= WARMUP {
            samples.push(t.elapsed());
        }
    }
    ws.close(None).await?;
    Latency::of(samples).context("no samples")
}
