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
//! - `core_table`: the core group's rows (sections 1-7) and its targets.
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
//! - `wsfloor`: the bare WebSocket server of the echo and stream floors, in
//!   this process or in one of its own.
//! - `tetherws`: a bare tether protocol client (`tether-proto` frames, no
//!   client library).
//! - `procs`: starting and stopping the daemon and the peers, `/proc` RSS.
//! - `peers`: websocketd and terminado as the command line asks, and
//!   whether they are installed.
//! - `report`: table rows, the row builders the groups share, percentiles,
//!   formatting.

mod core_table;
mod files;
mod floor;
mod latency;
mod memory;
mod peers;
mod procs;
mod pty;
mod reconnect;
mod report;
mod restart;
mod scale;
mod shell;
mod tetherws;
mod throughput;
mod wsclient;
mod wsfloor;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, ValueEnum};

use crate::procs::Daemon;

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
    /// Idle attached tether connections (one `sleep 600` each) in the
    /// memory run.
    #[arg(long, default_value_t = 1000)]
    attached: usize,
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
    /// Scale (X1): live sessions, each a `sleep` with an attached
    /// connection.
    #[arg(long, default_value_t = 10_000)]
    sessions: usize,
    /// Scale (X1): `run(["true"])` samples while the sessions are held.
    #[arg(long, default_value_t = 200)]
    scale_samples: usize,
    /// Scale (X2): paced viewers of one command.
    #[arg(long, default_value_t = 1000)]
    viewers: usize,
    /// Scale (X2): bytes the viewed command writes.
    #[arg(long, default_value_t = 100 << 20)]
    viewer_bytes: u64,
    /// Scale (X3): clients running commands at once.
    #[arg(long, default_value_t = 200)]
    storm_clients: usize,
    /// Scale (X3): commands they run in all.
    #[arg(long, default_value_t = 4000)]
    storm_requests: usize,
    /// Restart: measured restarts per run.
    #[arg(long, default_value_t = 10)]
    restarts: usize,
    /// Run only the bare WebSocket server of the echo (P1) and stream (row
    /// 4) floors (the bench starts itself this way): print its address,
    /// serve until stdin ends.
    #[arg(long, hide = true)]
    ws_echo_server: bool,
}

/// A group of measurements, for `--only`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Only {
    /// Sections 1-7: spawn, round trips, throughput, memory, reconnect.
    Core,
    /// Sections 5-7 alone: memory, reconnect (and the targets they judge).
    Memory,
    /// Sections P1-P3: terminals.
    Pty,
    /// Sections S1-S2: named shells.
    Shell,
    /// Sections F1-F4: file upload/download and one-shot exec over HTTP.
    Files,
    /// Sections R1-R3: graceful restart and shutdown with commands held.
    Restart,
    /// Sections X1-X3: 10,000 sessions, 1,000 viewers, 200 clients at once.
    Scale,
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
                &mut self.attached,
                &mut self.websocketd_conns,
                &mut self.terminals,
                &mut self.resumes,
                &mut self.keystrokes,
                &mut self.reattaches,
                &mut self.shell_commands,
                &mut self.exec_requests,
                &mut self.restart_commands,
                &mut self.sessions,
                &mut self.scale_samples,
                &mut self.viewers,
                &mut self.storm_clients,
                &mut self.storm_requests,
            ] {
                *n = (*n / 10).max(1);
            }
            self.bytes /= 10;
            self.pty_bytes /= 10;
            self.cat_bytes /= 10;
            self.file_bytes /= 10;
            self.viewer_bytes /= 10;
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = Args::parse();
    if args.ws_echo_server {
        return wsfloor::serve().await;
    }
    args.scale();
    let tether = tether_path(args.tether.as_deref())?;
    let logs = std::env::temp_dir().join(format!("tether-bench-{}", std::process::id()));
    std::fs::create_dir_all(&logs)?;
    progress(&format!("logs in {}", logs.display()));

    // Without `--only`, every group runs.
    let runs = |group: Only| args.only.is_none_or(|o| o == group);
    let mut tables = Vec::new();
    if runs(Only::Core) || args.only == Some(Only::Memory) {
        let rows = core_table::rows(&args, &tether, &logs, args.only == Some(Only::Memory)).await?;
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
    if runs(Only::Scale) {
        let rows = scale::rows(&args, &tether, &logs).await;
        tables.push(format!("Scale:\n\n{}", report::render(&rows)));
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

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-12)
}
