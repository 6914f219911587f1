//! Named shells (issue #4): the per-command overhead of running `true` in
//! one long-lived shell, next to the physical floor (a bash coprocess fed
//! over a pipe) and next to a fresh process per command, in one run. Its
//! rows form a table of their own (sections S1-S2).
//!
//! Every loop is sequential: one command at a time, the next sent once the
//! previous one's end has arrived, so each sample is one whole round trip.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tether_client::{Client, ShellSpec};
use tether_proto::{ClientMsg, ReqId, StartSpec};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::procs::Daemon;
use crate::report::{Latency, Row, fmt_dur, lat_row};
use crate::tetherws::{self, TetherWs};
use crate::{Args, bounded, latency, progress, ratio};

/// Commands run before the measured ones, in every loop.
pub(crate) const WARMUP: usize = 50;

/// The shell the bare client runs its commands in.
const BARE_SHELL: &str = "bench";

/// The shell `tether-client` runs its commands in.
const CLIENT_SHELL: &str = "bench-client";

/// What the coprocess is fed per command: the command, then a marker line
/// with its status.
const COPROCESS_LINE: &[u8] = b"true; echo __done $?\n";

/// Runs every named-shell measurement against `d`; returns the rows.
pub(crate) async fn rows(args: &Args, d: &Daemon) -> Vec<Row> {
    let n = args.shell_commands;
    let mut rows = Vec::new();
    let warm = format!("after {WARMUP} warm-up commands");

    progress("S1. raw bash coprocess over a pipe");
    let r = bounded(120, coprocess(n)).await;
    let floor = r.as_ref().ok().copied();
    rows.push(lat_row(
        "S1",
        "physical floor: raw bash coprocess, `true; echo __done $?` written to its stdin pipe until `__done 0` is read",
        &r,
        format!(
            "one `bash --norc --noprofile` (tokio::process, piped stdin/stdout) for all commands; \
             no status pipe, no FIFOs, no daemon; {warm}"
        ),
    ));

    progress("S1. named shell: tether, bare client");
    let r = bounded(120, tether_raw(d, n)).await;
    let bare = r.as_ref().ok().copied();
    let extra = vs(&r, floor, "the raw coprocess's");
    rows.push(lat_row(
        "S1",
        "tether named shell, bare WebSocket client: `shell_run` of `true` until its `exit`",
        &r,
        format!(
            "MessagePack frames over tokio-tungstenite, no client library; one `shell_create` first; \
             `close_stdin: true`, attached, not paced; `started` then `exit` per command; \
             each command `remove`d after its `exit`, untimed; {warm}{extra}"
        ),
    ));

    progress("S1. named shell: tether, tether-client");
    let r = bounded(120, tether_client(d, n)).await;
    let extra = vs(&r, floor, "the raw coprocess's");
    rows.push(lat_row(
        "S1",
        "tether named shell, `tether-client`: `shell_exec(name, \"true\")`",
        &r,
        format!(
            "`Client::shell_exec` (paced, stdin closed, output collected) over one connection, \
             a second shell; {warm}{extra}"
        ),
    ));

    progress("S1. standalone start of `bash -c true`: tether, bare client");
    let r = bounded(120, tether_raw_start(d, n)).await;
    let extra = vs(&r, bare, "the named shell's (bare)");
    rows.push(lat_row(
        "S1",
        "for comparison: tether standalone `start` of `bash -c true`, bare client, until its `exit`",
        &r,
        format!(
            "a fresh process per command (fork + exec of /bin/bash, which execs `true`), \
             `{{shell: \"true\"}}`, `close_stdin: true`, attached, not paced; \
             each command `remove`d after its `exit`, untimed; {warm}{extra}"
        ),
    ));

    progress("S1. standalone run of `true`: tether, tether-client");
    let r = bounded(120, latency::tether_open(d, n, WARMUP)).await;
    rows.push(lat_row(
        "S1",
        "for comparison: tether standalone `run([\"true\"])`, `tether-client`",
        &r,
        format!(
            "the core group's row 2 measurement (`run` is paced, as `shell_exec` is): a fresh process \
             per command, no bash; {warm}"
        ),
    ));

    let what = "tether named shell (bare client) p50 / raw coprocess p50";
    rows.push(match (bare, floor) {
        (Some(t), Some(f)) => {
            let notes = format!(
                "tether {} vs coprocess {}: what the daemon adds around the same kind of bash \
                 (WebSocket hop, script file and FIFOs, status records, its own bookkeeping)",
                fmt_dur(t.p50),
                fmt_dur(f.p50)
            );
            Row::new("S2", what).result(format!("{:.2}x", ratio(t.p50, f.p50))).notes(notes)
        }
        _ => Row::new("S2", what).result("not measured (see rows S1)"),
    });
    rows
}

/// "; p50 N.Nx {whose}", when both were measured.
fn vs(r: &Result<Latency>, base: Option<Latency>, whose: &str) -> String {
    match (r, base) {
        (Ok(l), Some(b)) => format!("; p50 {:.1}x {whose}", ratio(l.p50, b.p50)),
        _ => String::new(),
    }
}

/// The floor: one `bash --norc --noprofile` reading commands from a pipe,
/// fed `true; echo __done $?` per command; each sample lasts from the write
/// until the `__done 0` line has been read.
async fn coprocess(n: usize) -> Result<Latency> {
    let mut child = tokio::process::Command::new("bash")
        .args(["--norc", "--noprofile"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting bash")?;
    let mut stdin = child.stdin.take().context("no stdin pipe")?;
    let mut stdout = BufReader::new(child.stdout.take().context("no stdout pipe")?);
    let mut samples = Vec::with_capacity(n);
    let mut line = String::new();
    for i in 0..WARMUP + n {
        let t = Instant::now();
        stdin.write_all(COPROCESS_LINE).await.context("writing to bash")?;
        loop {
            line.clear();
            if stdout.read_line(&mut line).await.context("reading from bash")? == 0 {
                bail!("bash closed its stdout");
            }
            if line.starts_with("__done ") {
                break;
            }
        }
        let d = t.elapsed();
        if line != "__done 0\n" {
            bail!("bash reported {:?}", line.trim_end());
        }
        if i >= WARMUP {
            samples.push(d);
        }
    }
    // EOF on its stdin ends bash; kill_on_drop covers a bash that hangs.
    drop(stdin);
    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    Latency::of(samples).context("no samples")
}

/// tether through the bare client: `shell_create` once, then `shell_run`
/// of `true` per command until its `exit`.
async fn tether_raw(d: &Daemon, n: usize) -> Result<Latency> {
    let mut ws = TetherWs::connect(d).await?;
    if !ws.shell_create(BARE_SHELL).await? {
        bail!("a shell named {BARE_SHELL} already existed");
    }
    let r = bare_loop(&mut ws, n, |id| tetherws::shell_run_msg(id, BARE_SHELL, "true")).await;
    let closed = ws.shell_close(BARE_SHELL).await;
    ws.close().await;
    let l = r?;
    closed.context("closing the shell")?;
    Ok(l)
}

/// A standalone command per sample, through the bare client: `start` of
/// `{shell: "true"}` (run as `/bin/bash -c true`) until its `exit`.
async fn tether_raw_start(d: &Daemon, n: usize) -> Result<Latency> {
    let mut ws = TetherWs::connect(d).await?;
    let r = bare_loop(&mut ws, n, |id| {
        let spec = StartSpec { shell: Some("true".to_owned()), close_stdin: true, ..StartSpec::default() };
        ClientMsg::Start { id, spec }
    })
    .await;
    ws.close().await;
    r
}

/// `WARMUP + n` commands, each sent as `msg(request id)` and timed until
/// its `exit`; the last `n` are the samples. Each command is removed after
/// its `exit` (untimed), so that the daemon holds one at a time: otherwise
/// the finished ones would keep their ring reservations for their TTL and
/// a long run would hit `limit_exceeded`.
async fn bare_loop(ws: &mut TetherWs, n: usize, msg: impl Fn(ReqId) -> ClientMsg) -> Result<Latency> {
    let mut samples = Vec::with_capacity(n);
    for i in 0..WARMUP + n {
        let id = ws.id();
        let m = msg(id);
        let t = Instant::now();
        let (command, code) = ws.run_to_exit(id, &m).await?;
        let d = t.elapsed();
        if code != Some(0) {
            bail!("`true` ended with code {code:?}");
        }
        ws.request_ok(|id| ClientMsg::Remove { id, command }).await?;
        if i >= WARMUP {
            samples.push(d);
        }
    }
    Latency::of(samples).context("no samples")
}

/// tether through `tether-client`: `shell_create` once, then
/// `shell_exec(name, "true")` per command.
async fn tether_client(d: &Daemon, n: usize) -> Result<Latency> {
    let client = Client::connect(&d.url, &d.token).await?;
    let (_, created) = client
        .shell_create(ShellSpec { name: Some(CLIENT_SHELL.to_owned()), ..ShellSpec::default() })
        .await?;
    if !created {
        bail!("a shell named {CLIENT_SHELL} already existed");
    }
    let r = async {
        let mut samples = Vec::with_capacity(n);
        for i in 0..WARMUP + n {
            let t = Instant::now();
            let out = client.shell_exec(CLIENT_SHELL, "true").await?;
            let d = t.elapsed();
            if out.status.code != Some(0) {
                bail!("`true` ended with {:?}", out.status);
            }
            if i >= WARMUP {
                samples.push(d);
            }
        }
        Latency::of(samples).context("no samples")
    }
    .await;
    // Closing the shell also frees its commands (and their reservations).
    let closed = client.shell_close(CLIENT_SHELL).await;
    let l = r?;
    closed.context("closing the shell")?;
    Ok(l)
}
