//! Graceful restart (SIGUSR2): how long a daemon holding N running commands
//! (each with 256 KiB of output in its ring) is away, next to the physical
//! floor measured in the same run: starting the binary at all (fork, exec,
//! exit of `tether --version`). Sections R1-R2; R3 is the shutdown that
//! ends each run (SIGTERM until the daemon, killing its commands, exits).

use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;

use anyhow::{Context, Result, bail};
use tether_client::{Client, ClientOptions, ExecEvent, Execution, StartSpec};

use crate::procs::{self, Daemon};
use crate::report::{Latency, Row, fmt_dur, lat_row};
use crate::{Args, bounded, progress};

/// Output each held command has in its ring when the restarts begin.
const HELD_BYTES: u64 = 256 * 1024;

/// Runs the restart measurements; returns the rows.
pub(crate) async fn rows(args: &Args, tether: &Path, logs: &Path) -> Vec<Row> {
    let mut rows = Vec::new();
    progress("R1. floor: fork + exec + exit of the tether binary");
    let r = bounded(120, exec_floor(tether, args.restarts * 4)).await;
    rows.push(lat_row(
        "R1",
        "physical floor: `tether --version` spawned and waited for (fork, exec, dynamic loading, exit)",
        &r,
        "what any re-exec costs before the daemon does anything".into(),
    ));
    for n in [0, args.restart_commands / 10, args.restart_commands] {
        progress(&format!("R2. restarts with {n} commands held"));
        let log = logs.join(format!("tether-restart-{n}.log"));
        match bounded(600, restarts(tether, &log, n, args.restarts)).await {
            Ok((listen, outage, stopped)) => {
                rows.push(lat_row(
                    "R2",
                    &format!("{n} running commands: SIGUSR2 until the new daemon prints \"listening\""),
                    &Ok(listen),
                    format!(
                        "{n} × {} KiB of rings handed over, plus a ticker; a second apart; includes checking the \
                         new binary and writing the rings ahead while still serving",
                        HELD_BYTES / 1024
                    ),
                ));
                let target = if n == args.restart_commands && n >= 1000 {
                    let met = outage.p50 <= Duration::from_millis(100);
                    format!("; target <= 100 ms with 1000 commands: {}", if met { "met" } else { "MISSED" })
                } else {
                    String::new()
                };
                rows.push(lat_row(
                    "R2",
                    &format!("{n} running commands: the longest an attached client got no output"),
                    &Ok(outage),
                    format!(
                        "tether-client attached to a command printing its clock every 5 ms (a line every 6-7 ms \
                         when nothing restarts): the longest time between two lines arriving, from the signal \
                         until a line printed after the new daemon listened (the old daemon serves while it \
                         writes the rings ahead, then 1001, reconnect, re-attach){target}"
                    ),
                ));
                rows.push(
                    Row::new("R3", format!("{n} running commands: SIGTERM until the daemon has killed them and exited"))
                        .samples("1")
                        .result(fmt_dur(stopped))
                        .notes("the default `--kill-on-shutdown`: every command killed (with its tree), reaped and swept"),
                );
            }
            Err(e) => {
                rows.push(Row::new("R2", format!("{n} running commands")).result(format!("FAILED: {e:#}")))
            }
        }
    }
    rows
}

async fn exec_floor(tether: &Path, n: usize) -> Result<Latency> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let st = tokio::process::Command::new(tether).arg("--version").output().await?;
        if !st.status.success() {
            bail!("tether --version failed");
        }
        samples.push(t.elapsed());
    }
    Latency::of(samples).context("no samples")
}

/// `n` held commands and a ticker, then `restarts` restarts: time to the
/// new "listening" line, and to the ticker's next output after it.
async fn restarts(
    tether: &Path,
    log: &Path,
    n: usize,
    restarts: usize,
) -> Result<(Latency, Latency, Duration)> {
    let mut d = Daemon::start(tether, log).await?;
    let r = async {
        let opts = ClientOptions { initial_backoff: Duration::from_millis(1), ..ClientOptions::default() };
        let c = Client::connect_with(&d.url, &d.token, opts).await?;
        let held = format!("head -c {HELD_BYTES} /dev/zero | tr '\\0' x; exec sleep 600");
        for _ in 0..n {
            c.start_detached(shell(&held)).await?;
        }
        // Every held command has written its output.
        loop {
            let list = c.list().await?;
            let full = list.iter().filter(|i| i.stdout.end >= HELD_BYTES).count();
            if full >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Each tick is the wall-clock time it was printed at, in ns.
        let mut ticker = c.start(shell("while :; do date +%s%N; sleep 0.005; done")).await?;
        let mut pending = Vec::new();
        next_tick(&mut ticker, &mut pending).await?;
        let (mut listen, mut outage) = (Vec::new(), Vec::new());
        for _ in 0..restarts {
            // A second of the ticker first: the daemon settles (after a
            // restart it copies the rings off the handover's mapping in the
            // background, and a restart waits for that to end).
            let settled = Instant::now() + Duration::from_secs(1);
            while let Ok(tick) = tokio::time::timeout_at(settled, next_tick(&mut ticker, &mut pending)).await
            {
                tick?;
            }
            let t0 = Instant::now();
            procs::signal(d.pid, "USR2", false);
            // Until a line printed after the new daemon listened has come:
            // the longest time between two lines arriving.
            let (mut listened, mut last, mut longest) = (None, t0, Duration::ZERO);
            loop {
                tokio::select! {
                    at = d.relistened.recv(), if listened.is_none() => {
                        let at = at.context("the daemon's stdout ended")?;
                        listen.push(at.saturating_duration_since(t0));
                        listened = Some(wall_ns());
                    }
                    tick = next_tick(&mut ticker, &mut pending) => {
                        let tick = tick?;
                        let now = Instant::now();
                        longest = longest.max(now - last);
                        last = now;
                        if listened.is_some_and(|w| tick > w) {
                            break;
                        }
                    }
                }
            }
            outage.push(longest);
        }
        let _ = c.kill(ticker.id()).await;
        Ok::<_, anyhow::Error>((
            Latency::of(listen).context("no samples")?,
            Latency::of(outage).context("no samples")?,
        ))
    }
    .await;
    let t = Instant::now();
    d.stop().await;
    let stopped = t.elapsed();
    let (l, o) = r?;
    progress(&format!(
        "     listening again p50 {}, longest without output p50 {}, stopped in {}",
        fmt_dur(l.p50),
        fmt_dur(o.p50),
        fmt_dur(stopped)
    ));
    Ok((l, o, stopped))
}

/// The next whole line of the ticker, as a number (`pending` holds a
/// partial line between calls).
async fn next_tick(ex: &mut Execution, pending: &mut Vec<u8>) -> Result<u128> {
    loop {
        if let Some(i) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=i).collect();
            return std::str::from_utf8(&line[..i])?.trim().parse().context("a tick that is not a number");
        }
        match ex.next().await.context("the ticker's events ended")?? {
            ExecEvent::Stdout(b) => pending.extend_from_slice(&b),
            ExecEvent::Exit(s) => bail!("the ticker exited: {s:?}"),
            _ => {}
        }
    }
}

fn wall_ns() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

fn shell(script: &str) -> StartSpec {
    StartSpec { argv: vec!["sh".into(), "-c".into(), script.into()], ..StartSpec::default() }
}
