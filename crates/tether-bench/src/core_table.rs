//! The core table (sections 1-7): raw spawn and tether round trips,
//! websocketd's open-to-close, throughput five ways, memory per idle
//! command / connection / terminal, reconnect + resume, and the targets
//! these are judged against.

use std::path::Path;

use anyhow::Result;

use crate::memory::Footprint;
use crate::peers::{NOT_INSTALLED, has_terminado, has_websocketd, start_terminado, start_websocketd};
use crate::procs::Daemon;
use crate::report::{Latency, Row, failed, fmt_dur, tp_row};
use crate::wsfloor::Place;
use crate::{Args, bounded, latency, memory, progress, ratio, reconnect, throughput};

/// Runs the core group: its own daemon for the round trips and the
/// throughput, a fresh one for memory and reconnect; returns the rows.
/// `memory_only`: sections 5 and 6 alone (`--only memory`).
pub(crate) async fn rows(args: &Args, tether: &Path, logs: &Path, memory_only: bool) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let mut sum = Summary::default();

    if !memory_only {
        let daemon = Daemon::start(tether, &logs.join("tether.log")).await?;
        spawn_rows(args, &daemon, &mut rows, &mut sum).await;
        websocketd_latency_rows(args, logs, &mut rows).await;
        throughput_rows(args, &daemon, logs, &mut rows, &mut sum).await;
        daemon.stop().await;
    }

    // A fresh daemon, so that the memory numbers are not blurred by what
    // the allocator kept from the throughput runs.
    let daemon = Daemon::start(tether, &logs.join("tether-memory.log")).await?;
    memory_rows(args, &daemon, logs, &mut rows, &mut sum).await;
    reconnect_rows(args, &daemon, &mut rows).await;
    daemon.stop().await;

    target_rows(&sum, &mut rows);
    Ok(rows)
}

/// The numbers the target rows compare.
#[derive(Default)]
struct Summary {
    /// Row 1: raw fork+exec+wait.
    raw_spawn: Option<Latency>,
    /// Row 2: `run(["true"])` over an open connection.
    tether_rtt: Option<Latency>,
    /// Row 4: the raw pipe, MiB/s.
    raw_pipe: Option<f64>,
    /// Row 4: tether's lossless delivery, MiB/s.
    tether_tp: Option<f64>,
    /// Row 4: the bare tokio-tungstenite loopback, MiB/s.
    bare_ws: Option<f64>,
    /// Row 5: daemon KiB per idle command.
    tether_mem: Option<f64>,
    /// Row 5: daemon KiB per idle attached connection.
    tether_attached: Option<f64>,
}

async fn spawn_rows(args: &Args, d: &Daemon, rows: &mut Vec<Row>, sum: &mut Summary) {
    progress("1. raw fork+exec+wait of `true`");
    let what = "raw fork+exec+wait of `true` (std Command::status)";
    match bounded(60, latency::raw_spawn(args.spawns)).await {
        Ok(l) => {
            sum.raw_spawn = Some(l);
            rows.push(Row::new("1", what).latency(&l).notes("the physical limit for starting a process"));
        }
        Err(e) => rows.push(Row::new("1", what).result(failed(&e))),
    }

    progress("2. tether exec round trip, open connection");
    let what = "tether `run([\"true\"])`, open connection";
    let warmup = (args.round_trips / 20).max(1);
    match bounded(120, latency::tether_open(d, args.round_trips, warmup)).await {
        Ok(l) => {
            sum.tether_rtt = Some(l);
            let ratio = sum
                .raw_spawn
                .map(|r| format!("; p50 = {:.2}x raw spawn", ratio(l.p50, r.p50)))
                .unwrap_or_default();
            rows.push(
                Row::new("2", what)
                    .latency(&l)
                    .notes(format!("start..exit over one WebSocket, after {warmup} warm-up runs{ratio}")),
            );
        }
        Err(e) => rows.push(Row::new("2", what).result(failed(&e))),
    }

    progress("2. tether exec round trip, fresh connection");
    let what = "tether `connect` + `run([\"true\"])`, fresh connection";
    match bounded(120, latency::tether_fresh(d, args.fresh)).await {
        Ok(l) => rows.push(
            Row::new("2", what).latency(&l).notes("TCP + HTTP upgrade + hello + start..exit, then close"),
        ),
        Err(e) => rows.push(Row::new("2", what).result(failed(&e))),
    }
}

async fn websocketd_latency_rows(args: &Args, logs: &Path, rows: &mut Vec<Row>) {
    progress("3. websocketd open-to-close of `true`");
    let what = "websocketd `--binary true`: connect until close";
    if !has_websocketd(args) {
        rows.push(Row::new("3", what).result(NOT_INSTALLED));
        return;
    }
    let run = async {
        let peer = start_websocketd(args, logs, "websocketd-true", true, &["true"]).await?;
        let r = async {
            latency::websocketd_true(peer.port, 10).await?;
            latency::websocketd_true(peer.port, args.websocketd_samples).await
        }
        .await;
        peer.stop().await;
        r
    };
    match bounded(120, run).await {
        Ok(l) => rows.push(Row::new("3", what).latency(&l).notes(
            "one process per connection; TCP + upgrade + fork/exec + exit + close, after 10 warm-up runs",
        )),
        Err(e) => rows.push(Row::new("3", what).result(failed(&e))),
    }
}

async fn throughput_rows(args: &Args, d: &Daemon, logs: &Path, rows: &mut Vec<Row>, sum: &mut Summary) {
    let (n, k) = (args.bytes, args.repeat);
    // Generous limits: a few seconds per run is normal.
    let limit = 60 + 40 * k as u64;
    progress("4. throughput: raw pipe");
    let r = bounded(limit, throughput::repeat(k, || throughput::raw_pipe(n))).await;
    if let Ok(runs) = &r {
        sum.raw_pipe = Some(runs.median.rate());
    }
    rows.push(tp_row("4", "raw pipe `head -c N /dev/zero | cat > /dev/null`", n, &r, "the physical limit"));

    for (pace, what, how) in [
        (false, "tether `head -c N /dev/zero` via `start` + events", "not paced: a slower client gets gaps"),
        (
            true,
            "tether, the same with `pace: true`",
            "paced: the daemon stops reading the pipe while the client lags",
        ),
    ] {
        progress(&format!("4. throughput: tether, pace = {pace}"));
        let r = bounded(limit, throughput::repeat(k, || throughput::tether(d, n, pace))).await;
        let mut extra = format!("{how}; default 1 MiB ring");
        if let Ok(runs) = &r {
            let rate = runs.median.rate();
            // The target is judged on lossless delivery: the paced runs, or
            // the unpaced ones when they lost nothing.
            if pace || runs.lost == 0 {
                sum.tether_tp = Some(rate);
            }
            if let Some(raw) = sum.raw_pipe {
                extra.push_str(&format!("; {:.0}% of the raw pipe", 100.0 * rate / raw));
            }
        }
        rows.push(tp_row("4", what, n, &r, &extra));
    }

    progress("4. throughput: bare tokio-tungstenite loopback, server in its own process");
    let r = bounded(limit, throughput::repeat(k, || throughput::bare_websocket(n, Place::OwnProcess))).await;
    if let Ok(runs) = &r {
        sum.bare_ws = Some(runs.median.rate());
    }
    rows.push(tp_row(
        "4",
        "bare tokio-tungstenite loopback, 64 KiB binary frames",
        n,
        &r,
        "the floor: server and client in two processes, as the daemon and a client are",
    ));
    progress("4. throughput: bare tokio-tungstenite loopback, server in the bench process");
    let r = bounded(limit, throughput::repeat(k, || throughput::bare_websocket(n, Place::InProcess))).await;
    rows.push(tp_row(
        "4",
        "the same, the server a task of the bench process",
        n,
        &r,
        "for reference, not the floor: both ends share the bench's two runtime threads",
    ));

    progress("4. throughput: websocketd");
    let what = "websocketd `--binary head -c N /dev/zero`";
    if has_websocketd(args) {
        let run = async {
            let count = n.to_string();
            let peer =
                start_websocketd(args, logs, "websocketd-head", true, &["head", "-c", &count, "/dev/zero"])
                    .await?;
            let r = throughput::repeat(k, || throughput::websocketd(peer.port, n)).await;
            peer.stop().await;
            r
        };
        let r = bounded(limit, run).await;
        rows.push(tp_row("4", what, n, &r, "a new connection (and process) per run"));
    } else {
        rows.push(Row::new("4", what).result(NOT_INSTALLED));
    }

    progress("4. throughput: terminado");
    let what = "terminado (PTY) `head -c N /dev/zero | base64 -w0`";
    if has_terminado(args) {
        let run = async {
            let peer = start_terminado(args, logs, "terminado-throughput", &[]).await?;
            let r = throughput::repeat(k, || throughput::terminado(peer.port, args.pty_bytes)).await;
            peer.stop().await;
            r
        };
        // A PTY is an order of magnitude slower: allow a minute per run.
        let r = bounded(60 + 60 * k as u64, run).await;
        rows.push(tp_row(
            "4",
            what,
            args.pty_bytes,
            &r,
            "counts terminal text (base64, 4/3 N) in JSON `stdout` messages; a new terminal per run",
        ));
    } else {
        rows.push(Row::new("4", what).result(NOT_INSTALLED));
    }
}

fn mem_row(what: &str, unit: &str, r: &Result<Footprint>, own_only_note: &str) -> Row {
    let row = Row::new("5", what);
    match r {
        Ok(f) => {
            let mib = |k: u64| format!("{:.1} MiB", k as f64 / 1024.0);
            row.samples(f.count.to_string()).result(format!("{:.1} KiB/{unit}", f.own_per())).notes(format!(
                "own RSS {} -> {} with {} -> {} after; incl. child processes {:.0} KiB/{unit}{}",
                mib(f.own_before),
                mib(f.own_during),
                f.count,
                mib(f.own_after),
                f.tree_per(),
                own_only_note,
            ))
        }
        Err(e) => row.result(failed(e)),
    }
}

async fn memory_rows(args: &Args, d: &Daemon, logs: &Path, rows: &mut Vec<Row>, sum: &mut Summary) {
    progress("5. memory: tether idle commands");
    let r = bounded(120, memory::tether(d, args.commands)).await;
    if let Ok(f) = &r {
        sum.tether_mem = Some(f.own_per());
    }
    rows.push(mem_row(
        "tether daemon RSS per idle `sleep 600` (start_detached)",
        "cmd",
        &r,
        "; \"after\" = all killed (still held as exited until their TTL)",
    ));

    progress("5. memory: tether idle attached connections");
    let r = bounded(180, memory::tether_attached(d, args.attached)).await;
    if let Ok(f) = &r {
        sum.tether_attached = Some(f.own_per());
    }
    rows.push(mem_row(
        "tether daemon RSS per idle attached connection (`/v1/ws?attach=ID` to a `sleep 600`)",
        "conn",
        &r,
        "; before = the commands alone, \"after\" = all closed",
    ));

    progress("5. memory: tether rings of line-at-a-time writers");
    let what = "tether: what a 1 MiB ring holds of a program writing a line per `write` (finished)";
    match bounded(180, memory::line_writers(d, 20, 1 << 20)).await {
        Ok(r) => rows.push(
            Row::new("5", what)
                .samples(r.count.to_string())
                .result(format!("{:.0}% held", r.held as f64 * 100.0 / r.ring as f64))
                .notes(format!(
                    "bash `for ...; do echo \"line $i\"; done` wrote {:.1} MiB each; {:.0} KiB of {} KiB held per ring \
                     (the rest is bookkeeping, charged 64 B per chunk); daemon's own RSS {:.0} KiB per finished command",
                    r.written as f64 / (1 << 20) as f64,
                    r.held as f64 / 1024.0,
                    r.ring / 1024,
                    r.own_per,
                )),
        ),
        Err(e) => rows.push(Row::new("5", what).result(failed(&e))),
    }

    progress("5. memory: websocketd idle connections");
    let what = "websocketd RSS per open connection to `sleep 600`";
    if has_websocketd(args) {
        let run = async {
            let peer = start_websocketd(args, logs, "websocketd-sleep", false, &["sleep", "600"]).await?;
            let r = memory::websocketd(peer.pid, peer.port, args.websocketd_conns).await;
            peer.stop().await;
            r
        };
        let r = bounded(120, run).await;
        rows.push(mem_row(what, "conn", &r, "; \"after\" = all closed"));
    } else {
        rows.push(Row::new("5", what).result(NOT_INSTALLED));
    }

    progress("5. memory: terminado terminals");
    let what = "terminado RSS per open terminal (bash in a PTY)";
    if has_terminado(args) {
        let run = async {
            let peer = start_terminado(args, logs, "terminado-memory", &[]).await?;
            let r = memory::terminado(peer.pid, peer.port, args.terminals).await;
            peer.stop().await;
            r
        };
        let r = bounded(120, run).await;
        rows.push(mem_row(what, "term", &r, "; \"after\" = all closed"));
    } else {
        rows.push(Row::new("5", what).result(NOT_INSTALLED));
    }
}

async fn reconnect_rows(args: &Args, d: &Daemon, rows: &mut Vec<Row>) {
    progress("6. reconnect + resume");
    let what = "tether `connect` + `attach(id, offsets)` to first resumed byte";
    match bounded(60, reconnect::tether(d, args.resumes)).await {
        Ok(l) => rows.push(
            Row::new("6", what)
                .latency(&l)
                .notes("a command printing a line every 10 ms; attach from an offset the ring still holds"),
        ),
        Err(e) => rows.push(Row::new("6", what).result(failed(&e))),
    }
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

fn target_rows(sum: &Summary, rows: &mut Vec<Row>) {
    let what = "target: exec round trip <= 1.2x raw spawn (p50)";
    rows.push(match (sum.tether_rtt, sum.raw_spawn) {
        (Some(t), Some(r)) => {
            let x = ratio(t.p50, r.p50);
            Row::new("7", what).result(format!("{} ({x:.2}x)", verdict(x <= 1.2))).notes(format!(
                "tether {} vs raw {}",
                fmt_dur(t.p50),
                fmt_dur(r.p50)
            ))
        }
        _ => Row::new("7", what).result("not measured (see rows 1-2)"),
    });
    let what = "target: lossless throughput >= 80% of a bare tokio-tungstenite stream";
    rows.push(match (sum.tether_tp, sum.bare_ws) {
        (Some(t), Some(b)) => {
            let pct = 100.0 * t / b;
            Row::new("7", what).result(format!("{} ({pct:.0}%)", verdict(pct >= 80.0))).notes(format!(
                "lossless tether delivery {t:.0} MiB/s vs bare WebSocket {b:.0} MiB/s{}",
                sum.raw_pipe.map(|r| format!(" (raw pipe {r:.0} MiB/s)")).unwrap_or_default()
            ))
        }
        _ => Row::new("7", what).result("not measured (see row 4)"),
    });
    let what = "target: <= 8 KiB daemon memory per idle detached command";
    rows.push(match sum.tether_mem {
        Some(k) => Row::new("7", what)
            .result(format!("{} ({k:.1} KiB)", verdict(k <= 8.0)))
            .notes("daemon's own RSS growth per `sleep 600`"),
        None => Row::new("7", what).result("not measured (see row 5)"),
    });
    let what = "target: <= 24 KiB daemon memory per idle attached connection";
    rows.push(match sum.tether_attached {
        Some(k) => Row::new("7", what)
            .result(format!("{} ({k:.1} KiB)", verdict(k <= 24.0)))
            .notes("daemon's own RSS growth per attached WebSocket, the commands already held"),
        None => Row::new("7", what).result("not measured (see row 5)"),
    });
}
