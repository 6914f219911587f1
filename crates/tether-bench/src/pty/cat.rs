//! Throughput of `cat FILE` on a PTY: the file is text (lines of 79
//! printable ASCII characters and `\n`), which the terminal's output
//! processing turns into `\r\n` lines, so every count below is of terminal
//! output: the file's size plus one byte per line. Measured on the bare
//! PTY, through tether (paced, bare client and `tether-client`) and through
//! terminado.

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tether_client::{Client, ExecEvent, PtySpec, StartSpec};
use tether_proto::ServerMsg;

use crate::procs::{self, Daemon};
use crate::tetherws::{self, TetherWs};
use crate::throughput::Transfer;
use crate::wsclient::{self, next_term_msg};

/// Bytes per line of the file, `\n` included.
const LINE: usize = 80;

/// Writes `bytes` bytes of text lines to `path` and returns how many bytes
/// a terminal shows for it (each `\n` becomes `\r\n`).
pub(crate) fn make_file(path: &Path, bytes: u64) -> Result<u64> {
    // 94 printable characters, each line starting one further along.
    let alphabet: Vec<u8> = (b'!'..=b'~').collect();
    let twice = [alphabet.as_slice(), alphabet.as_slice()].concat();
    let f = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
    let (lines, rest) = (bytes / LINE as u64, (bytes % LINE as u64) as usize);
    let mut line = [0u8; LINE];
    line[LINE - 1] = b'\n';
    for i in 0..lines {
        let start = (i % alphabet.len() as u64) as usize;
        line[..LINE - 1].copy_from_slice(&twice[start..start + LINE - 1]);
        w.write_all(&line)?;
    }
    // A last partial line without its `\n`.
    w.write_all(&twice[..rest])?;
    w.flush()?;
    Ok(bytes + lines)
}

/// The floor: `pty_floor.py cat FILE` reads the master of `cat`'s PTY
/// itself (64 KiB reads), from before the spawn to the terminal's end.
pub(crate) async fn floor(python: &str, script: &Path, file: &Path, expected: u64) -> Result<Transfer> {
    let text = super::run_floor(python, script, [Path::new("cat"), file]).await?;
    let mut it = text.split_whitespace().map(str::parse::<u64>);
    let (Some(Ok(bytes)), Some(Ok(nanos))) = (it.next(), it.next()) else {
        bail!("pty_floor.py printed {text:?}, expected \"BYTES NANOS\"");
    };
    if bytes != expected {
        bail!("the PTY gave {bytes} bytes, expected {expected}");
    }
    Ok(Transfer { bytes, lost: 0, elapsed: Duration::from_nanos(nanos), cpu: None, frames: 0 })
}

/// CPU used by `server` and this process since `before`.
fn cpu_since(server: u32, before: (Option<Duration>, Option<Duration>)) -> Option<(Duration, Duration)> {
    let me = std::process::id();
    match (before, procs::cpu_time(server), procs::cpu_time(me)) {
        ((Some(s0), Some(c0)), Some(s1), Some(c1)) => Some((s1.saturating_sub(s0), c1.saturating_sub(c0))),
        _ => None,
    }
}

fn cpu_now(server: u32) -> (Option<Duration>, Option<Duration>) {
    (procs::cpu_time(server), procs::cpu_time(std::process::id()))
}

/// tether through the bare client: `start {argv: ["cat", FILE], pty: 24x80,
/// pace: true}`, counting `output` bytes (checked to be contiguous) and
/// any `gap` until `exit`, whose `stdout_bytes` must be `expected`.
pub(crate) async fn tether_raw(d: &Daemon, file: &Path, expected: u64) -> Result<Transfer> {
    let mut ws = TetherWs::connect(d).await?;
    let spec = StartSpec {
        argv: vec!["cat".into(), file.to_string_lossy().into_owned()],
        pace: true,
        pty: tetherws::pty(24, 80),
        ..StartSpec::default()
    };
    let cpu0 = cpu_now(d.pid);
    let t = Instant::now();
    ws.start(spec).await?;
    let (mut bytes, mut lost, mut frames, mut next) = (0u64, 0u64, 0u64, 0u64);
    loop {
        match ws.recv().await? {
            ServerMsg::Output { offset, data, .. } => {
                if offset != next {
                    bail!("output at offset {offset}, expected {next}");
                }
                next += data.len() as u64;
                bytes += data.len() as u64;
                frames += 1;
            }
            ServerMsg::Gap { requested, first_held, .. } => {
                lost += first_held - requested;
                next = first_held;
            }
            ServerMsg::Exit { status, .. } => {
                let elapsed = t.elapsed();
                let cpu = cpu_since(d.pid, cpu0);
                ws.close().await;
                let stdout_bytes = status.stdout_bytes;
                if stdout_bytes != expected || bytes + lost != expected {
                    bail!(
                        "got {bytes} bytes and {lost} in gaps, the exit reports {stdout_bytes}, expected {expected}"
                    );
                }
                return Ok(Transfer { bytes, lost, elapsed, cpu, frames });
            }
            _ => {}
        }
    }
}

/// tether through `tether-client`: `client.start` with the same spec,
/// counting `Stdout` events until `Exit`.
pub(crate) async fn tether_client(d: &Daemon, file: &Path, expected: u64) -> Result<Transfer> {
    let client = Client::connect(&d.url, &d.token).await?;
    let spec = StartSpec {
        argv: vec!["cat".into(), file.to_string_lossy().into_owned()],
        pty: Some(PtySpec { rows: 24, cols: 80, term: None }),
        pace: true,
        ..Default::default()
    };
    let cpu0 = cpu_now(d.pid);
    let t = Instant::now();
    let mut exec = client.start(spec).await?;
    let (mut bytes, mut lost, mut frames) = (0u64, 0u64, 0u64);
    loop {
        match exec.next().await.context("the events ended")?? {
            ExecEvent::Stdout(b) => {
                bytes += b.len() as u64;
                frames += 1;
            }
            ExecEvent::Gap { from, to, .. } => lost += to - from,
            ExecEvent::Exit(status) => {
                let elapsed = t.elapsed();
                let cpu = cpu_since(d.pid, cpu0);
                if status.stdout_bytes != expected || bytes + lost != expected {
                    bail!(
                        "got {bytes} bytes and {lost} in gaps, the exit reports {}, expected {expected}",
                        status.stdout_bytes
                    );
                }
                return Ok(Transfer { bytes, lost, elapsed, cpu, frames });
            }
            _ => {}
        }
    }
}

/// terminado started with `cat FILE` as its command: a new connection to
/// `/websocket` spawns it on a new PTY; counts the text of `stdout`
/// messages (ASCII, so characters are bytes) until all `expected` bytes
/// arrived. Timed from before the connection, which includes terminado's
/// spawn, as tether's includes its `start`.
pub(crate) async fn terminado(port: u16, server: u32, expected: u64) -> Result<Transfer> {
    let cpu0 = cpu_now(server);
    let t = Instant::now();
    let mut ws = wsclient::connect_nodelay(port, "/websocket").await?;
    let (mut bytes, mut frames) = (0u64, 0u64);
    while bytes < expected {
        match next_term_msg(&mut ws).await? {
            (kind, text) if kind == "stdout" => {
                bytes += text.len() as u64;
                frames += 1;
            }
            (kind, _) if kind == "disconnect" => break,
            _ => {}
        }
    }
    let elapsed = t.elapsed();
    let cpu = cpu_since(server, cpu0);
    let _ = ws.close(None).await;
    if bytes != expected {
        bail!("got {bytes} bytes of terminal output, expected {expected}");
    }
    Ok(Transfer { bytes, lost: 0, elapsed, cpu, frames })
}
