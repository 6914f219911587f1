#![allow(missing_docs)]
//! `tether-bench`: measures the tether daemon next to the physical limit
//! (raw fork+exec, a raw pipe, a bare WebSocket) and next to its peers
//! (websocketd, terminado), all in one run on the same machine, and prints
//! a markdown table. See `BENCHMARKS.md` at the repository root.
//!
//! Every measurement has a time limit; one that fails or times out becomes
//! a row that says so, and the run goes on.
//!
//! # Layout
//! - `latency`: raw spawn, tether exec round trips, websocketd open-to-close.
//! - `throughput`: one command's stdout to one client, five ways.
//! - `memory`: RSS per idle command / connection / terminal.
//! - `reconnect`: connect + attach until the first resumed byte.
//! - `pty`: terminals: keystroke echo, `cat` throughput, screen-restoring
//!   re-attach (a table of its own).
//! - `shell`: named shells: per-command overhead of `true` in one shell
//!   next to a bash coprocess on a pipe (a table of its own).
//! - `files`: file upload/download over HTTP next to `cat` and `dd`, and
//!   one-shot `POST /v1/exec` rates next to raw spawns (a table of its own).
//! - `wsclient`: WebSocket client helpers for the peers, terminado's protocol.
//! - `tetherws`, `msgpack`: a bare tether protocol client (no client library).
//! - `procs`: starting and stopping the daemon and the peers, `/proc` RSS.
//! - `report`: table rows, percentiles, formatting.

mod files;
mod latency;
mod memory;
mod msgpack;
mod procs;
mod pty;
mod reconnect;
mod report;
mod restart;
mod shell;
mod tetherws;
mod throughput;
mod wsclient;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, ValueEnum};

use crate::memory::Footprint;
use crate::procs::{Daemon, Peer};
use crate::report::{Latency, Row, fmt_bytes, fmt_dur};
use crate::throughput::Runs;

/// Benchmark the tether daemon against raw spawn/pipe limits, websocketd
/// and terminado; print a markdown table.
#[derive(Parser, Debug)]
#[command(name = "tether-bench")]
struct Args {
    /// The tether binary (default: `tether` next to this binary, else
    /// target/release/tether).
    #[arg(long)]
    tether: Option<PathBuf>,
    /// Also write the table to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Bytes streamed in the throughput runs (except terminado).
    #[arg(long, default_value_t = 1 << 30)]
    bytes: u64,
    /// Bytes (before base64) streamed through terminado's PTY.
    #[arg(long, default_value_t = 256 << 20)]
    pty_bytes: u64,
    /// Samples of raw `true` spawns.
    #[arg(long, default_value_t = 1000)]
    spawns: usize,
    /// Samples of tether round trips over an open connection.
    #[arg(long, default_value_t = 1000)]
    round_trips: usize,
    /// Samples of tether round trips on a fresh connection each.
    #[arg(long, default_value_t = 300)]
    fresh: usize,
    /// Samples of websocketd open-to-close.
    #[arg(long, default_value_t = 300)]
    websocketd_samples: usize,
    /// Idle tether commands in the memory run.
    #[arg(long, default_value_t = 1000)]
    commands: usize,
    /// Idle websocketd connections in the memory run.
    #[arg(long, default_value_t = 200)]
    websocketd_conns: usize,
    /// terminado terminals in the memory run.
    #[arg(long, default_value_t = 100)]
    terminals: usize,
    /// Runs of each throughput measurement (the table shows the median).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Samples of reconnect + resume.
    #[arg(long, default_value_t = 100)]
    resumes: usize,
    /// Divide every count and byte size by 10 (a smoke test).
    #[arg(long)]
    quick: bool,
    /// The websocketd program.
    #[arg(long, default_value = "websocketd")]
    websocketd: String,
    /// The Python interpreter with terminado installed.
    #[arg(long, default_value = "python3")]
    python: String,
    /// The terminado launcher script.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../bench/peers/terminado_server.py"))]
    terminado_script: PathBuf,
    /// Run only one group of measurements (default: all).
    #[arg(long, value_enum)]
    only: Option<Only>,
    /// PTY: measured keystrokes in the echo latency runs.
    #[arg(long, default_value_t = 2000)]
    keystrokes: usize,
    /// PTY: size of the text file `cat` prints through a PTY.
    #[arg(long, default_value_t = 256 << 20)]
    cat_bytes: u64,
    /// PTY: measured re-attaches to a full screen.
    #[arg(long, default_value_t = 200)]
    reattaches: usize,
    /// PTY: the script that measures the bare PTY (the physical limit).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../bench/peers/pty_floor.py"))]
    pty_floor_script: PathBuf,
    /// Named shells: measured commands (`true`) per loop. The
    /// `tether-client` loops keep their commands (2 MiB of ring reservation
    /// each) until the shell closes or their TTL, so past about 2000 they
    /// hit the daemon's 4 GiB ring-memory limit.
    #[arg(long, default_value_t = 1000)]
    shell_commands: usize,
    /// Files: size of the file uploaded and downloaded over HTTP.
    #[arg(long, default_value_t = 1 << 30)]
    file_bytes: u64,
    /// Files: one-shot `POST /v1/exec` requests per run (and raw spawns in
    /// the floor next to it).
    #[arg(long, default_value_t = 2000)]
    exec_requests: usize,
    /// Files: concurrent clients sending the one-shot requests (and
    /// concurrent tasks in the raw spawn floor). Not divided by `--quick`.
    #[arg(long, default_value_t = 16)]
    exec_clients: usize,
    /// Restart: running commands held by the daemon in the largest run
    /// (a tenth of it in the middle one).
    #[arg(long, default_value_t = 1000)]
    restart_commands: usize,
    /// Restart: measured restarts per run.
    #[arg(long, default_value_t = 10)]
    restarts: usize,
}

/// A group of measurements, for `--only`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Only {
    /// Sections 1-7: spawn, round trips, throughput, memory, reconnect.
    Core,
    /// Sections P1-P3: terminals.
    Pty,
    /// Sections S1-S2: named shells.
    Shell,
    /// Sections F1-F4: file upload/download and one-shot exec over HTTP.
    Files,
    /// Sections R1-R2: graceful restart with commands held.
    Restart,
}

impl Args {
    fn scale(&mut self) {
        if self.quick {
            for n in [
                &mut self.spawns,
                &mut self.round_trips,
                &mut self.fresh,
                &mut self.websocketd_samples,
                &mut self.commands,
                &mut self.websocketd_conns,
                &mut self.terminals,
                &mut self.resumes,
                &mut self.keystrokes,
                &mut self.reattaches,
                &mut self.shell_commands,
                &mut self.exec_requests,
                &mut self.restart_commands,
            ] {
                *n = (*n / 10).max(1);
            }
            self.bytes /= 10;
            self.pty_bytes /= 10;
            self.cat_bytes /= 10;
            self.file_bytes /= 10;
        }
    }
}

/// The numbers the target rows compare.
#[derive(Default)]
struct Summary {
    raw_spawn: Option<Latency>,
    tether_rtt: Option<Latency>,
    raw_pipe: Option<f64>,
    tether_tp: Option<f64>,
    tether_mem: Option<f64>,
}

const NOT_INSTALLED: &str = "not installed (run bench/setup-peers.sh)";

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = Args::parse();
    args.scale();
    let tether = tether_path(args.tether.as_deref())?;
    let logs = std::env::temp_dir().join(format!("tether-bench-{}", std::process::id()));
    std::fs::create_dir_all(&logs)?;
    progress(&format!("logs in {}", logs.display()));

    // Without `--only`, every group runs.
    let runs = |group: Only| args.only.is_none_or(|o| o == group);
    let mut tables = Vec::new();
    if runs(Only::Core) {
        let mut rows = Vec::new();
        let mut sum = Summary::default();

        let daemon = Daemon::start(&tether, &logs.join("tether.log")).await?;
        spawn_rows(&args, &daemon, &mut rows, &mut sum).await;
        websocketd_latency_rows(&args, &logs, &mut rows).await;
        throughput_rows(&args, &daemon, &logs, &mut rows, &mut sum).await;
        daemon.stop().await;

        // A fresh daemon, so that the memory numbers are not blurred by what
        // the allocator kept from the throughput runs.
        let daemon = Daemon::start(&tether, &logs.join("tether-memory.log")).await?;
        memory_rows(&args, &daemon, &logs, &mut rows, &mut sum).await;
        reconnect_rows(&args, &daemon, &mut rows).await;
        daemon.stop().await;

        target_rows(&sum, &mut rows);
        tables.push(report::render(&rows));
    }
    if runs(Only::Pty) {
        // A daemon of its own, as for the memory rows.
        let daemon = Daemon::start(&tether, &logs.join("tether-pty.log")).await?;
        let rows = pty::rows(&args, &daemon, &logs).await;
        daemon.stop().await;
        tables.push(format!("Terminals (PTY):\n\n{}", report::render(&rows)));
    }
    if runs(Only::Shell) {
        let daemon = Daemon::start(&tether, &logs.join("tether-shell.log")).await?;
        let rows = shell::rows(&args, &daemon).await;
        daemon.stop().await;
        tables.push(format!("Named shells:\n\n{}", report::render(&rows)));
    }
    if runs(Only::Files) {
        // The scratch directory (the test file, uploads, downloads) is the
        // daemon's files root; it goes when `scratch` is dropped.
        let scratch = files::Scratch::new()?;
        let log = logs.join("tether-files.log");
        let daemon = Daemon::start_with(&tether, &log, &files::daemon_args(&scratch)).await?;
        let rows = files::rows(&args, &daemon, &scratch).await;
        daemon.stop().await;
        drop(scratch);
        tables.push(format!("Files and one-shot exec:\n\n{}", report::render(&rows)));
    }
    if runs(Only::Restart) {
        let rows = restart::rows(&args, &tether, &logs).await;
        tables.push(format!("Graceful restart:\n\n{}", report::render(&rows)));
    }

    let header = format!(
        "tether-bench: {} cores, Linux {}, tether {}\n\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        tether.display(),
    );
    let text = format!("{header}{}", tables.join("\n"));
    println!("{text}");
    if let Some(out) = &args.out {
        std::fs::write(out, &text).with_context(|| format!("writing {}", out.display()))?;
        progress(&format!("table written to {}", out.display()));
    }
    Ok(())
}

fn progress(msg: &str) {
    eprintln!("tether-bench: {msg}");
}

/// Runs `fut` with a time limit; a timeout becomes an error.
async fn bounded<T>(secs: u64, fut: impl Future<Output = Result<T>>) -> Result<T> {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(r) => r,
        Err(_) => Err(anyhow!("timed out after {secs} s")),
    }
}

fn failed(e: &anyhow::Error) -> String {
    format!("FAILED: {e:#}")
}

/// A latency row: p50/p99, and max and mean as the result.
fn lat_row(section: &'static str, what: &str, r: &Result<Latency>, notes: String) -> Row {
    match r {
        Ok(l) => Row::new(section, what)
            .latency(l)
            .result(format!("max {}; mean {}", fmt_dur(l.max), fmt_dur(l.mean)))
            .notes(notes),
        Err(e) => Row::new(section, what).result(failed(e)),
    }
}

fn tether_path(given: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = given {
        if !p.is_file() {
            bail!("{} does not exist", p.display());
        }
        return Ok(p.to_owned());
    }
    let sibling = std::env::current_exe().ok().and_then(|e| e.parent().map(|d| d.join("tether")));
    let candidates = sibling.into_iter().chain([PathBuf::from("target/release/tether")]);
    for c in candidates {
        if c.is_file() {
            return Ok(c);
        }
    }
    bail!("no tether binary found: build it with `cargo build --release -p tether` or pass --tether")
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

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-12)
}

fn websocketd_args(port: u16, binary: bool, cmd: &[&str]) -> Vec<String> {
    let mut v = vec![format!("--port={port}"), "--address=127.0.0.1".into(), "--loglevel=error".into()];
    if binary {
        v.push("--binary".into());
    }
    v.extend(cmd.iter().map(|s| s.to_string()));
    v
}

async fn start_websocketd(args: &Args, logs: &Path, name: &str, binary: bool, cmd: &[&str]) -> Result<Peer> {
    let port = procs::free_port()?;
    Peer::start(
        &args.websocketd,
        &websocketd_args(port, binary, cmd),
        port,
        &logs.join(format!("{name}.log")),
    )
    .await
}

fn has_websocketd(args: &Args) -> bool {
    procs::which(&args.websocketd).is_some()
}

fn has_terminado(args: &Args) -> bool {
    std::process::Command::new(&args.python)
        .args(["-c", "import terminado, tornado"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Starts `terminado_server.py` with `command` as its terminals' program
/// (empty: `bash`).
async fn start_terminado(args: &Args, logs: &Path, name: &str, command: &[&str]) -> Result<Peer> {
    let port = procs::free_port()?;
    let mut argv = vec![args.terminado_script.to_string_lossy().into_owned(), port.to_string()];
    argv.extend(command.iter().map(|s| s.to_string()));
    Peer::start(&args.python, &argv, port, &logs.join(format!("{name}.log"))).await
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

/// A throughput row of section `section`: the median run's MiB/s.
fn tp_row(section: &'static str, what: &str, n: u64, r: &Result<Runs>, extra: &str) -> Row {
    let row = Row::new(section, what);
    match r {
        Ok(runs) => {
            let t = runs.median;
            let mut notes = format!(
                "median run: {} in {}; range {:.0}-{:.0} MiB/s",
                fmt_bytes(t.bytes),
                fmt_dur(t.elapsed),
                runs.min,
                runs.max
            );
            if let Some((daemon, client)) = t.cpu {
                notes.push_str(&format!(
                    "; CPU in that run: daemon {}, bench client {}",
                    fmt_dur(daemon),
                    fmt_dur(client)
                ));
            }
            if runs.lost > 0 {
                notes.push_str(&format!(
                    "; {} LOST in gaps over the {} runs",
                    fmt_bytes(runs.lost),
                    runs.count
                ));
            }
            if !extra.is_empty() {
                notes.push_str("; ");
                notes.push_str(extra);
            }
            row.samples(format!("{} x {}", runs.count, fmt_bytes(n)))
                .result(format!("{:.0} MiB/s", t.rate()))
                .notes(notes)
        }
        Err(e) => row.samples(fmt_bytes(n)).result(failed(e)),
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

    progress("4. throughput: bare tokio-tungstenite loopback");
    let r = bounded(limit, throughput::repeat(k, || throughput::bare_websocket(n))).await;
    rows.push(tp_row(
        "4",
        "bare tokio-tungstenite loopback, 64 KiB binary frames",
        n,
        &r,
        "server and client in the bench process",
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
    let what = "target: exec round trip <= 1.5x raw spawn (p50)";
    rows.push(match (sum.tether_rtt, sum.raw_spawn) {
        (Some(t), Some(r)) => {
            let x = ratio(t.p50, r.p50);
            Row::new("7", what).result(format!("{} ({x:.2}x)", verdict(x <= 1.5))).notes(format!(
                "tether {} vs raw {}",
                fmt_dur(t.p50),
                fmt_dur(r.p50)
            ))
        }
        _ => Row::new("7", what).result("not measured (see rows 1-2)"),
    });
    let what = "target: throughput >= 50% of the raw pipe";
    rows.push(match (sum.tether_tp, sum.raw_pipe) {
        (Some(t), Some(r)) => {
            let pct = 100.0 * t / r;
            Row::new("7", what)
                .result(format!("{} ({pct:.0}%)", verdict(pct >= 50.0)))
                .notes(format!("lossless tether delivery {t:.0} MiB/s vs raw pipe {r:.0} MiB/s"))
        }
        _ => Row::new("7", what).result("not measured (see row 4)"),
    });
    let what = "target: <= 32 KiB daemon memory per idle command";
    rows.push(match sum.tether_mem {
        Some(k) => Row::new("7", what)
            .result(format!("{} ({k:.1} KiB)", verdict(k <= 32.0)))
            .notes("daemon's own RSS growth per `sleep 600`"),
        None => Row::new("7", what).result("not measured (see row 5)"),
    });
}
