//! The scale rows (section X1-X3, `--only scale`): many sessions held at
//! once, many viewers of one command, many clients starting commands at
//! once. Each daemon is started for its row with the limits the row needs
//! (`--max-commands`, `--max-connections`); the open-file limit of this
//! process (and so of the daemon it starts) is raised first, as root may.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::{StreamExt, stream};
use tether_client::{Client, CommandId, StartSpec};
use tether_proto::{ClientMsg, ReqId, ServerMsg};

use crate::files::concurrent::{self, Concurrent};
use crate::memory::{self, Footprint};
use crate::procs::{self, Daemon};
use crate::report::{Latency, Row, failed, fmt_dur};
use crate::tetherws::TetherWs;
use crate::{Args, bounded, latency, progress};

/// Requests in flight while setting up.
const PARALLEL: usize = 32;

/// Raises this process's open-file limit to at least `want` (the daemon it
/// starts inherits it); returns the limit in force.
fn raise_nofile(want: u64) -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let cur = getrlimit(Resource::Nofile);
    let have = cur.current.unwrap_or(u64::MAX);
    if have >= want {
        return have;
    }
    let max = cur.maximum.unwrap_or(u64::MAX);
    // Root may raise the hard limit too (up to fs.nr_open).
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(max);
    for (soft, hard) in [(want, want.max(max)), (want.min(nr_open), want.min(nr_open).max(max)), (max, max)] {
        if setrlimit(Resource::Nofile, Rlimit { current: Some(soft), maximum: Some(hard) }).is_ok() {
            return soft;
        }
    }
    have
}

/// Starts a daemon that admits `n` commands and connections (and a few
/// more for the bench's own).
async fn daemon(tether: &Path, logs: &Path, name: &str, n: usize) -> Result<Daemon> {
    // Finished commands count until their TTL: room for the round trips
    // measured beside the held ones.
    let extra = [
        "--max-commands".to_owned(),
        (n + 20_000).to_string(),
        "--max-connections".to_owned(),
        (n + 64).to_string(),
    ];
    Daemon::start_with(tether, &logs.join(format!("{name}.log")), &extra).await
}

/// X1: `n` live `sleep 600`, each with an idle WebSocket attached.
pub(crate) struct Sessions {
    /// RSS before the commands, with commands and connections (KiB).
    pub(crate) footprint: Footprint,
    /// From the first `start` to the last `attached`.
    pub(crate) setup: Duration,
    /// `run(["true"])` over an open connection while they are held.
    pub(crate) rtt: Latency,
    /// The same on the idle daemon, before.
    pub(crate) rtt_idle: Latency,
}

async fn sessions(d: &Daemon, n: usize, samples: usize) -> Result<Sessions> {
    let client = Client::connect(&d.url, &d.token).await?;
    let rtt_idle = latency::tether_open(d, samples, 20).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (own_before, tree_before, _) = procs::tree_rss(d.pid).context("the daemon is gone")?;
    let t0 = Instant::now();
    // 16 KiB rings: the command prints nothing, and 10,000 default rings
    // (1 MiB each) would pass the daemon's 4 GiB reservation limit.
    let ids = memory::start_sleeps(&client, n, Some(16 << 10)).await?;
    let result = async {
        let conns: Vec<Result<_>> = stream::iter(ids.iter())
            .map(|id| memory::attach_one(d, id))
            .buffer_unordered(PARALLEL)
            .collect()
            .await;
        let setup = t0.elapsed();
        let (open, first_err) = memory::split_results(conns);
        let r = async {
            if let Some(e) = first_err {
                bail!("{} of {n} attaches failed, the first with: {e:#}", n - open.len());
            }
            memory::wait_descendants(d.pid, n, Duration::from_secs(120)).await?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let (own_during, tree_during, _) = procs::tree_rss(d.pid).context("the daemon is gone")?;
            let rtt = latency::tether_open(d, samples, 20).await?;
            let footprint = Footprint {
                count: n,
                own_before,
                own_during,
                own_after: own_during,
                tree_before,
                tree_during,
            };
            Ok(Sessions { footprint, setup, rtt, rtt_idle })
        }
        .await;
        memory::close_all(open).await;
        r
    }
    .await;
    memory::kill_all(&client, &ids).await;
    result
}

/// X2: `viewers` viewers of one command writing `bytes`.
pub(crate) struct Fanout {
    /// The command's own run time (it times itself) with one viewer.
    pub(crate) alone: Duration,
    /// The same with every viewer.
    pub(crate) shared: Duration,
    /// From `go` until the last viewer had every byte.
    pub(crate) delivered: Duration,
    /// Daemon CPU time during the shared run.
    pub(crate) cpu: Duration,
}

/// The line the fan-out command repeats; byte `o` of its output is
/// `LINE[o % LINE.len()]`.
const LINE: &[u8] = b"0123456789abcdefghijklmnopqrstu\n";

async fn fanout(d: &Daemon, logs: &Path, viewers: usize, bytes: u64) -> Result<Fanout> {
    let alone = fanout_run(d, logs, 1, bytes).await?.0;
    let cpu0 = procs::cpu_time(d.pid);
    let (shared, delivered) = fanout_run(d, logs, viewers, bytes).await?;
    let cpu = procs::cpu_time(d.pid).zip(cpu0).map(|(a, b)| a.saturating_sub(b)).unwrap_or_default();
    Ok(Fanout { alone, shared, delivered, cpu })
}

/// One run: the command waits for a line on stdin, `viewers` connections
/// attach to it, then the line is sent; the command writes `bytes` bytes
/// of the pattern and times itself (into a file). Its ring holds all of
/// its output, so no viewer falls out of it and none holds it back (no
/// `pace`): every viewer must get every byte, with no gap. Returns the
/// command's own run time and the time until the last viewer was done.
async fn fanout_run(d: &Daemon, logs: &Path, viewers: usize, bytes: u64) -> Result<(Duration, Duration)> {
    let line = std::str::from_utf8(&LINE[..LINE.len() - 1])?;
    let timing = logs.join(format!("fanout-{viewers}.ns"));
    let _ = std::fs::remove_file(&timing);
    let script = format!(
        "read go; s=$(date +%s%N); yes {line} | head -c {bytes}; e=$(date +%s%N); echo $((e - s)) > {}",
        timing.display()
    );
    let mut ctl = TetherWs::connect(d).await?;
    let command = ctl
        .start(tether_proto::StartSpec {
            shell: Some(script),
            ring_bytes: Some((bytes + (1 << 20)).next_power_of_two()),
            ..Default::default()
        })
        .await?;
    let conns: Vec<TetherWs> = stream::iter(0..viewers)
        .map(|_| async {
            let mut ws = TetherWs::connect(d).await?;
            let id = ws.id();
            ws.send(&attach_msg(id, &command)).await?;
            loop {
                match ws.recv().await? {
                    ServerMsg::Attached { id: got, .. } if got == id => return anyhow::Ok(ws),
                    _ => {}
                }
            }
        })
        .buffer_unordered(PARALLEL)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    let readers: Vec<_> =
        conns.into_iter().map(|ws| tokio::spawn(read_all(ws, command.clone(), bytes))).collect();
    let t = Instant::now();
    ctl.stdin(&command, b"go\n").await?;
    read_all(ctl, command.clone(), bytes).await?;
    for r in readers {
        r.await.context("a viewer task failed")??;
    }
    let delivered = t.elapsed();
    let ns: u64 = std::fs::read_to_string(&timing)
        .with_context(|| format!("the command's timing in {}", timing.display()))?
        .trim()
        .parse()
        .context("the command's timing")?;
    Ok((Duration::from_nanos(ns), delivered))
}

fn attach_msg(id: ReqId, command: &CommandId) -> ClientMsg {
    ClientMsg::Attach {
        id,
        command: command.clone(),
        stdout_offset: 0,
        stderr_offset: 0,
        tail_bytes: None,
        pace: false,
        screen: false,
        size: None,
        window_bytes: None,
        client: None,
    }
}

/// Reads `command`'s output until its exit, checking every byte against
/// the pattern and that exactly `bytes` came, with no gap.
async fn read_all(mut ws: TetherWs, command: CommandId, bytes: u64) -> Result<()> {
    let mut next = 0u64;
    loop {
        match ws.recv().await? {
            ServerMsg::Output { command: c, offset, data, .. } if c == command => {
                if offset != next {
                    bail!("output at {offset}, expected {next}");
                }
                for (i, b) in data.0.iter().enumerate() {
                    if *b != LINE[((offset + i as u64) % LINE.len() as u64) as usize] {
                        bail!("byte {} differs from the pattern", offset + i as u64);
                    }
                }
                next += data.0.len() as u64;
            }
            ServerMsg::Gap { .. } => bail!("a gap: a viewer fell out of the ring"),
            ServerMsg::Exit { command: c, .. } if c == command => break,
            _ => {}
        }
    }
    if next != bytes {
        bail!("{next} bytes, expected {bytes}");
    }
    ws.close().await;
    Ok(())
}

/// X3: `clients` connections running `run(["true"])` at once, `n` in all,
/// against `clients` tasks spawning `true` directly.
async fn exec_storm(d: &Daemon, clients: usize, n: usize) -> Result<(Concurrent, Concurrent)> {
    let conns: Vec<Client> = stream::iter(0..clients)
        .map(|_| Client::connect(&d.url, &d.token))
        .buffer_unordered(PARALLEL)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let conns = Arc::new(conns);
    let next = Arc::new(AtomicUsize::new(0));
    let op = move || {
        let (conns, next) = (conns.clone(), next.clone());
        async move {
            let c = conns[next.fetch_add(1, Ordering::Relaxed) % conns.len()].clone();
            let out = c.run(StartSpec { argv: vec!["true".into()], ..Default::default() }).await?;
            if out.status.code != Some(0) {
                bail!("`true` ended with {:?}", out.status);
            }
            anyhow::Ok(())
        }
    };
    let tether = concurrent::concurrent(clients, n, clients, Some(d), op).await?;
    let raw = concurrent::concurrent(clients, n, clients, None, concurrent::spawn_true).await?;
    Ok((tether, raw))
}

/// The scale rows.
pub(crate) async fn rows(args: &Args, tether: &Path, logs: &Path) -> Vec<Row> {
    let mut rows = Vec::new();
    // Each session holds five fds in the daemon (three pipes, a pidfd and
    // the socket) and one in the bench; each process has the limit.
    let want = (args.sessions as u64) * 5 + 1024;
    let nofile = raise_nofile(want);
    let n = if nofile >= want { args.sessions } else { ((nofile.saturating_sub(1024)) / 5) as usize };

    progress(&format!("X1. {n} sessions, each with an attached connection"));
    let what = format!("{n} live `sleep 600`, each with an idle attached WebSocket");
    let r = async {
        let d = daemon(tether, logs, "tether-scale-sessions", n).await?;
        let r = bounded(600, sessions(&d, n, args.scale_samples)).await;
        d.stop().await;
        r
    }
    .await;
    match r {
        Ok(s) => {
            let f = &s.footprint;
            let mib = |k: u64| format!("{:.1} MiB", k as f64 / 1024.0);
            rows.push(
                Row::new("X1", format!("{what}: daemon RSS"))
                    .samples(n.to_string())
                    .result(format!("{} ({:.1} KiB/session)", mib(f.own_during), f.own_per()))
                    .notes(format!(
                        "own RSS {} idle -> {} holding them; with the sleeps {:.0} KiB/session{}",
                        mib(f.own_before),
                        mib(f.own_during),
                        f.tree_per(),
                        if n < args.sessions {
                            format!("; {} asked, the open-file limit ({nofile}) allows {n}", args.sessions)
                        } else {
                            String::new()
                        }
                    )),
            );
            rows.push(Row::new("X1", format!("{what}: time to start and attach them all")).samples(n.to_string())
                .result(fmt_dur(s.setup))
                .notes(format!(
                    "{PARALLEL} requests in flight: start_detached, then /v1/ws?attach=ID until `attached`; {:.0} sessions/s",
                    n as f64 / s.setup.as_secs_f64().max(1e-9)
                )));
            rows.push(Row::new("X1", format!("{what}: `run([\"true\"])` while held")).latency(&s.rtt).notes(
                format!(
                    "open connection; on the idle daemon before: p50 {}, p99 {}",
                    fmt_dur(s.rtt_idle.p50),
                    fmt_dur(s.rtt_idle.p99)
                ),
            ));
        }
        Err(e) => rows.push(Row::new("X1", what).result(failed(&e))),
    }

    let (v, bytes) = (args.viewers, args.viewer_bytes);
    progress(&format!("X2. {v} viewers of one command writing {bytes} bytes"));
    let what = format!("{v} viewers of one command writing {} MiB", bytes >> 20);
    let r = async {
        let d = daemon(tether, logs, "tether-scale-fanout", v).await?;
        let r = bounded(900, fanout(&d, logs, v, bytes)).await;
        d.stop().await;
        r
    }
    .await;
    match r {
        Ok(f) => {
            let slower = 100.0 * (f.shared.as_secs_f64() / f.alone.as_secs_f64().max(1e-9) - 1.0);
            let total = (v as f64) * bytes as f64 / (1 << 20) as f64;
            rows.push(Row::new("X2", format!("{what}: the command's own run time")).samples(v.to_string()).result(format!(
                "{} ({slower:+.0}% against one viewer)",
                fmt_dur(f.shared)
            )).notes(format!(
                "one viewer: {}; its ring holds all its output, so nobody paces it and every viewer gets every byte (pattern checked, no gap)",
                fmt_dur(f.alone),
            )));
            rows.push(
                Row::new("X2", format!("{what}: until every viewer had every byte"))
                    .samples(v.to_string())
                    .result(format!("{:.0} MiB/s", total / f.delivered.as_secs_f64().max(1e-9)))
                    .notes(format!(
                        "{total:.0} MiB in all in {}; daemon CPU {} ({} per viewer, {:.2} ms per MiB sent)",
                        fmt_dur(f.delivered),
                        fmt_dur(f.cpu),
                        fmt_dur(f.cpu / v.max(1) as u32),
                        f.cpu.as_secs_f64() * 1000.0 / total.max(1e-9),
                    )),
            );
            rows.push(
                Row::new("X2", "target: the command slowed <= 10% by its viewers")
                    .result(format!("{} ({slower:+.0}%)", if slower <= 10.0 { "met" } else { "MISSED" })),
            );
        }
        Err(e) => rows.push(Row::new("X2", what).result(failed(&e))),
    }

    let (c, n) = (args.storm_clients, args.storm_requests);
    progress(&format!("X3. {c} clients running `true` at once, {n} in all"));
    let what = format!("{c} clients each running `run([\"true\"])` in a loop, {n} in all");
    let r = async {
        let d = daemon(tether, logs, "tether-scale-storm", c).await?;
        let r = bounded(600, exec_storm(&d, c, n)).await;
        d.stop().await;
        r
    }
    .await;
    match r {
        Ok((t, raw)) => {
            rows.push(Row::new("X3", what).samples(n.to_string()).result(format!("{:.0} runs/s", t.per_sec)).notes(
                format!(
                    "{:.0}% of the raw rate ({c} tasks spawning `true`: {:.0}/s); each run p50 {}, p99 {}{}",
                    100.0 * t.per_sec / raw.per_sec.max(1e-9),
                    raw.per_sec,
                    fmt_dur(t.lat.p50),
                    fmt_dur(t.lat.p99),
                    t.cpu.map(|(d, b)| format!("; CPU daemon {} bench {}", fmt_dur(d), fmt_dur(b))).unwrap_or_default(),
                ),
            ));
        }
        Err(e) => rows.push(Row::new("X3", what).result(failed(&e))),
    }
    rows
}
