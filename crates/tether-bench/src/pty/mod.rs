//! Terminals (PTY): start latency, keystroke echo latency, `cat`
//! throughput and screen-restoring re-attach, each on the bare PTY (the
//! physical limit, where there is one), through tether and through
//! terminado, in one run. Their rows form a table of their own (sections
//! P0-P3).
//!
//! - P0: `true` on a terminal, from `start` to its exit.
//! - `echo`: one byte typed at `cat`, until its echo.
//! - `cat`: `cat FILE` on a PTY to one client.
//! - `reattach`: a new connection to a full screen, until it can show it.

mod cat;
mod echo;
mod reattach;

use std::path::Path;

use anyhow::Result;

use crate::peers::{NOT_INSTALLED, has_terminado, start_terminado};
use crate::procs::Daemon;
use crate::report::{Latency, Row, failed, fmt_bytes, fmt_dur, lat_row};
use crate::throughput::{self, Runs};
use crate::{Args, bounded, progress, ratio};

/// Runs every PTY measurement against `d` and the peers; returns the rows.
pub(crate) async fn rows(args: &Args, d: &Daemon, logs: &Path) -> Vec<Row> {
    let mut rows = Vec::new();
    start_rows(args, d, &mut rows).await;
    echo_rows(args, d, logs, &mut rows).await;
    cat_rows(args, d, logs, &mut rows).await;
    reattach_rows(args, d, logs, &mut rows).await;
    rows
}

/// Runs `pty_floor.py` with these arguments; returns what it printed.
async fn run_floor<I, S>(python: &str, script: &Path, args: I) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    use anyhow::{Context, bail};
    let out = tokio::process::Command::new(python)
        .arg(script)
        .args(args)
        .output()
        .await
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}): {}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// "; p50 N.Nx the PTY floor's", when the floor was measured.
fn vs_floor(r: &Result<Latency>, floor: Option<Latency>) -> String {
    match (r, floor) {
        (Ok(l), Some(f)) => format!("; p50 {:.1}x the PTY floor's", ratio(l.p50, f.p50)),
        _ => String::new(),
    }
}

/// P0: `run(["true"])` on a 24x80 terminal over an open connection, beside
/// a raw spawn of `true` (which needs no terminal) in the same run.
async fn start_rows(args: &Args, d: &Daemon, rows: &mut Vec<Row>) {
    let n = args.round_trips;
    progress("P0. terminal start: raw spawn");
    let floor = bounded(120, crate::latency::raw_spawn(n)).await;
    rows.push(lat_row(
        "P0",
        "raw fork+exec+wait of `true` (std Command::status)",
        &floor,
        "the physical limit for starting a process (no terminal)".to_owned(),
    ));
    progress("P0. terminal start: tether");
    let spec = tether_client::StartSpec {
        argv: vec!["true".into()],
        pty: Some(tether_client::PtySpec { rows: 24, cols: 80, term: None }),
        ..Default::default()
    };
    let r = bounded(120, crate::latency::runs_open(d, &spec, n, 5)).await;
    let vs = match (&r, &floor) {
        (Ok(l), Ok(f)) => format!("; p50 {:.2}x the raw spawn's", ratio(l.p50, f.p50)),
        _ => String::new(),
    };
    rows.push(lat_row(
        "P0",
        "tether `run([\"true\"])` on a 24x80 terminal, open connection",
        &r,
        format!("`tether-client`, start (a new PTY, a new session) until its exit, after 5 warm-up runs{vs}"),
    ));
}

async fn echo_rows(args: &Args, d: &Daemon, logs: &Path, rows: &mut Vec<Row>) {
    let n = args.keystrokes;
    let how = format!(
        "`cat` on a 24x80 PTY in its default mode (the line discipline echoes); \
         after {} warm-up keystrokes; a `\\r` every {} keystrokes, not timed",
        echo::WARMUP,
        echo::FLUSH_EVERY
    );

    progress("P1. keystroke echo: bare PTY");
    let r = bounded(120, echo::floor(&args.python, &args.pty_floor_script, n)).await;
    let floor = r.as_ref().ok().copied();
    rows.push(lat_row(
        "P1",
        "PTY floor: write `a` to the master of `cat`'s PTY, read the echo",
        &r,
        format!("the physical limit; bench/peers/pty_floor.py, a Python loop on the master fd; {how}"),
    ));

    progress("P1. keystroke echo: bare WebSocket echo, server in its own process");
    let ws = bounded(120, echo::bare_websocket(n, crate::wsfloor::Place::OwnProcess)).await;
    let ws_floor = ws.as_ref().ok().copied();
    rows.push(lat_row(
        "P1",
        "bare WebSocket echo: a 1-byte binary frame to a tokio-tungstenite echo server in its own process and back",
        &ws,
        "the WebSocket half of the floor: client and server in two processes, as a client and the daemon are; \
         Nagle off"
            .to_owned(),
    ));
    progress("P1. keystroke echo: bare WebSocket echo, server in the bench process");
    let ws = bounded(120, echo::bare_websocket(n, crate::wsfloor::Place::InProcess)).await;
    rows.push(lat_row(
        "P1",
        "the same, the echo server a task of the bench process",
        &ws,
        "for reference, not the floor: no wake-up crosses a process (both ends often run on one thread)"
            .to_owned(),
    ));

    progress("P1. keystroke echo: tether, bare client");
    let r = bounded(120, echo::tether_raw(d, n)).await;
    let ok = match &r {
        Ok(e) => format!(
            "; the `ok` of the `stdin` (sent once the byte is written to the PTY) came after p50 {}, p99 {}",
            fmt_dur(e.ok.p50),
            fmt_dur(e.ok.p99)
        ),
        Err(_) => String::new(),
    };
    let r = r.map(|e| e.echo);
    let extra = vs_floor(&r, floor);
    rows.push(lat_row(
        "P1",
        "tether, bare WebSocket client: `stdin` \"a\" until the `output` with its echo",
        &r,
        format!("MessagePack frames over tokio-tungstenite, no client library{extra}{ok}"),
    ));
    rows.push(echo_target(&r, floor, ws_floor));

    progress("P1. keystroke echo: tether, tether-client");
    let r = bounded(120, echo::tether_client(d, n)).await;
    let extra = vs_floor(&r, floor);
    rows.push(lat_row(
        "P1",
        "tether, `tether-client`: `write_stdin(\"a\")` until the `Stdout` echo",
        &r,
        format!("`Execution::write_stdin` + `next`{extra}"),
    ));

    progress("P1. keystroke echo: terminado");
    let what = "terminado: `[\"stdin\", \"a\"]` until `[\"stdout\", \"a\"]`";
    if has_terminado(args) {
        let run = async {
            let peer = start_terminado(args, logs, "terminado-echo", &["cat"]).await?;
            let r = echo::terminado(peer.port, n).await;
            peer.stop().await;
            r
        };
        let r = bounded(180, run).await;
        let extra = vs_floor(&r, floor);
        rows.push(lat_row("P1", what, &r, format!("a terminal running `cat` (UniqueTermManager){extra}")));
    } else {
        rows.push(Row::new("P1", what).result(NOT_INSTALLED));
    }
}

/// Issue 20's echo target: the bare client's p50 within twice the floor
/// (the PTY's echo plus a bare WebSocket round trip between two processes,
/// both of this run).
fn echo_target(r: &Result<Latency>, pty: Option<Latency>, ws: Option<Latency>) -> Row {
    let row = Row::new("P1", "target: echo, bare client, p50 <= 2x (PTY floor + bare WebSocket echo)");
    match (r, pty, ws) {
        (Ok(l), Some(p), Some(w)) => {
            let floor = p.p50 + w.p50;
            let x = ratio(l.p50, floor);
            row.result(format!("{} ({x:.2}x)", if x <= 2.0 { "met" } else { "MISSED" })).notes(format!(
                "tether {} vs floor {} (PTY {} + WebSocket {})",
                fmt_dur(l.p50),
                fmt_dur(floor),
                fmt_dur(p.p50),
                fmt_dur(w.p50)
            ))
        }
        _ => row.result("not measured (a row above failed)"),
    }
}

/// Issue 20's `cat` target: the bare client's median run at least 85% of
/// the PTY floor's, both of this run.
fn cat_target(r: &Result<Runs>, floor: Option<f64>) -> Row {
    let row = Row::new("P2", "target: PTY `cat`, bare client, >= 85% of the PTY floor");
    match (r, floor) {
        (Ok(runs), Some(f)) => {
            let pct = 100.0 * runs.median.rate() / f;
            row.result(format!("{} ({pct:.0}%)", if pct >= 85.0 { "met" } else { "MISSED" }))
                .notes(format!("tether {:.0} MiB/s vs PTY floor {f:.0} MiB/s", runs.median.rate()))
        }
        _ => row.result("not measured (a row above failed)"),
    }
}

/// A PTY throughput row: MiB/s of terminal output, median of the runs.
fn tp_row(what: &str, file: u64, r: &Result<Runs>, floor: Option<f64>, extra: &str) -> Row {
    let row = Row::new("P2", what);
    let runs = match r {
        Ok(runs) => runs,
        Err(e) => return row.samples(fmt_bytes(file)).result(failed(e)),
    };
    let t = runs.median;
    let mut notes = format!(
        "median run: {} of terminal output in {}; range {:.0}-{:.0} MiB/s",
        fmt_bytes(t.bytes),
        fmt_dur(t.elapsed),
        runs.min,
        runs.max
    );
    if let Some((server, client)) = t.cpu {
        notes.push_str(&format!(
            "; CPU in that run: server {}, bench client {}",
            fmt_dur(server),
            fmt_dur(client)
        ));
    }
    if t.frames > 0 {
        notes.push_str(&format!("; {} messages of {} on average", t.frames, fmt_bytes(t.bytes / t.frames)));
    }
    if runs.lost > 0 {
        notes.push_str(&format!("; {} LOST in gaps over the {} runs", fmt_bytes(runs.lost), runs.count));
    }
    if let Some(f) = floor {
        notes.push_str(&format!("; {:.0}% of the PTY floor", 100.0 * t.rate() / f));
    }
    if !extra.is_empty() {
        notes.push_str("; ");
        notes.push_str(extra);
    }
    row.samples(format!("{} x {}", runs.count, fmt_bytes(file)))
        .result(format!("{:.0} MiB/s", t.rate()))
        .notes(notes)
}

async fn cat_rows(args: &Args, d: &Daemon, logs: &Path, rows: &mut Vec<Row>) {
    let (n, k) = (args.cat_bytes, args.repeat);
    let path = logs.join("pty-cat.txt");
    progress(&format!("P2. writing {} of text to {}", fmt_bytes(n), path.display()));
    let expected = match cat::make_file(&path, n) {
        Ok(e) => e,
        Err(e) => {
            rows.push(Row::new("P2", "`cat FILE` through a PTY").result(failed(&e)));
            return;
        }
    };
    // A PTY moves tens of MiB/s: allow a minute per run, more for terminado.
    let limit = 60 + 60 * k as u64;

    progress("P2. cat throughput: bare PTY");
    let r = bounded(
        limit,
        throughput::repeat(k, || cat::floor(&args.python, &args.pty_floor_script, &path, expected)),
    )
    .await;
    let floor = r.as_ref().ok().map(|runs| runs.median.rate());
    rows.push(tp_row(
        "PTY floor: `cat FILE` on a PTY, the master read directly (64 KiB reads)",
        n,
        &r,
        None,
        "the physical limit; bench/peers/pty_floor.py; output processing (`\\n` -> `\\r\\n`) included",
    ));

    progress("P2. cat throughput: tether, bare client");
    let r = bounded(limit, throughput::repeat(k, || cat::tether_raw(d, &path, expected))).await;
    rows.push(tp_row(
        "tether, bare WebSocket client: `start {argv: [cat, FILE], pty: 24x80, pace: true}`",
        n,
        &r,
        floor,
        "paced: lossless; byte count and offsets checked against the exit's `stdout_bytes`",
    ));
    rows.push(cat_target(&r, floor));

    progress("P2. cat throughput: tether, tether-client");
    let r = bounded(limit, throughput::repeat(k, || cat::tether_client(d, &path, expected))).await;
    rows.push(tp_row("tether, `tether-client`: `client.start` with the same spec", n, &r, floor, "paced"));

    progress("P2. cat throughput: terminado");
    let what = "terminado: a terminal running `cat FILE`, `[\"stdout\", text]` messages";
    if has_terminado(args) {
        let run = async {
            let file = path.to_string_lossy().into_owned();
            let peer = start_terminado(args, logs, "terminado-cat", &["cat", &file]).await?;
            let r = throughput::repeat(k, || cat::terminado(peer.port, peer.pid, expected)).await;
            peer.stop().await;
            r
        };
        let r = bounded(limit * 3, run).await;
        rows.push(tp_row(what, n, &r, floor, "a new terminal per run; byte count checked"));
    } else {
        rows.push(Row::new("P2", what).result(NOT_INSTALLED));
    }
    let _ = std::fs::remove_file(&path);
}

async fn reattach_rows(args: &Args, d: &Daemon, logs: &Path, rows: &mut Vec<Row>) {
    let n = args.reattaches;
    let screen =
        format!("a {}x{} PTY filled by `bash -c '{}'`", reattach::ROWS, reattach::COLS, reattach::DRAW);

    progress("P3. re-attach: tether, bare client");
    let what = "tether, bare client: connect + `attach {screen: true, size: 50x200}` until `screen`";
    match bounded(120, reattach::tether_raw(d, n)).await {
        Ok(r) => {
            let connect = r
                .connect
                .map(|c| format!(", of which TCP + HTTP upgrade + `hello`: p50 {}", fmt_dur(c.p50)))
                .unwrap_or_default();
            let notes = format!(
                "new connection + attach until the `screen` frame{connect}; screen data {} B in a {} B \
                 frame; {screen}",
                r.payload, r.frame
            );
            rows.push(lat_row("P3", what, &Ok(r.latency), notes));
        }
        Err(e) => rows.push(lat_row("P3", what, &Err(e), String::new())),
    }

    progress("P3. re-attach: tether, tether-client");
    let what = "tether, `tether-client`: `Client::connect` + `attach_terminal` until `Screen`";
    match bounded(120, reattach::tether_client(d, n)).await {
        Ok(r) => rows.push(lat_row("P3", what, &Ok(r.latency), format!("screen data {} B", r.payload))),
        Err(e) => rows.push(lat_row("P3", what, &Err(e), String::new())),
    }

    progress("P3. re-attach: terminado");
    let what = "terminado: connect to a named terminal until its replay (no screen restore)";
    if has_terminado(args) {
        let run = async {
            let argv = ["bash", "-c", reattach::DRAW];
            let peer = start_terminado(args, logs, "terminado-reattach", &argv).await?;
            let r = reattach::terminado(peer.port, n).await;
            peer.stop().await;
            r
        };
        match bounded(120, run).await {
            Ok(r) => {
                let notes = format!(
                    "terminado keeps no screen: a joining client gets the terminal's last 1000 reads \
                     of raw output ({} B here, in a {} B message), which redraws this screen only \
                     because the whole history fits in them; a long-running program's viewer gets up \
                     to 1000 reads of old output instead; the same screen as tether's rows",
                    r.payload, r.frame
                );
                rows.push(lat_row("P3", what, &Ok(r.latency), notes));
            }
            Err(e) => rows.push(lat_row("P3", what, &Err(e), String::new())),
        }
    } else {
        rows.push(Row::new("P3", what).result(NOT_INSTALLED));
    }
}
