//! The processes the bench starts (the tether daemon, websocketd,
//! terminado) and what it reads about them from `/proc`.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};

/// A tether daemon started for the bench. Stop it with [`Daemon::stop`];
/// dropping it kills the daemon process as a fallback.
pub(crate) struct Daemon {
    /// `http://127.0.0.1:PORT`.
    pub(crate) url: String,
    /// The token it accepts.
    pub(crate) token: String,
    /// The daemon's process id.
    pub(crate) pid: u32,
    child: Child,
    /// Drains the daemon's stdout after the address line, so a later write
    /// there never fails; aborted on stop.
    drain: JoinHandle<()>,
    /// When each later "listening" line arrived (one per restart).
    pub(crate) relistened: tokio::sync::mpsc::UnboundedReceiver<Instant>,
}

impl Daemon {
    /// Starts `tether serve --listen 127.0.0.1:0` and waits for its address
    /// line. Its log (warnings and errors only) goes to `log`.
    pub(crate) async fn start(bin: &Path, log: &Path) -> Result<Daemon> {
        Daemon::start_with(bin, log, &[]).await
    }

    /// [`Daemon::start`] with `extra` arguments after `serve --listen ...`
    /// (e.g. `--files-root DIR`).
    pub(crate) async fn start_with(bin: &Path, log: &Path, extra: &[String]) -> Result<Daemon> {
        let token = format!("bench-{}-{}", std::process::id(), now_nanos());
        let log_file = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut child = Command::new(bin)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .env("TETHER_TOKEN", &token)
            // TETHER_BENCH_LOG: the daemons' log filter (e.g. `info` to see
            // a restart's phases in their logs); `warn` by default.
            .env("TETHER_LOG", std::env::var("TETHER_BENCH_LOG").unwrap_or_else(|_| "warn".to_owned()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id().context("the daemon exited at once")?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let mut lines = BufReader::new(stdout).lines();
        let first = timeout(Duration::from_secs(10), lines.next_line())
            .await
            .context("the daemon printed no address within 10 s")??
            .with_context(|| format!("the daemon exited; see {}", log.display()))?;
        let url = first
            .strip_prefix("tether: listening on ")
            .with_context(|| format!("unexpected first line from the daemon: {first:?}"))?
            .trim()
            .to_owned();
        let (tx, relistened) = tokio::sync::mpsc::unbounded_channel();
        let drain = tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.starts_with("tether: listening on ") {
                    let _ = tx.send(Instant::now());
                }
            }
        });
        Ok(Daemon { url, token, pid, child, drain, relistened })
    }

    /// SIGTERM (the daemon then kills its commands), SIGKILL after 30 s: a
    /// daemon holding thousands of commands takes seconds to end them, and
    /// one killed before would leave them running into the next rows.
    pub(crate) async fn stop(mut self) {
        signal(self.pid, "TERM", false);
        if timeout(Duration::from_secs(30), self.child.wait()).await.is_err() {
            let _ = self.child.start_kill();
            let _ = timeout(Duration::from_secs(2), self.child.wait()).await;
        }
        self.drain.abort();
    }
}

/// A peer server (websocketd, terminado) in its own process group, so that
/// stopping it also stops the commands it started.
pub(crate) struct Peer {
    /// Its process id (= process group id).
    pub(crate) pid: u32,
    /// Where it listens.
    pub(crate) port: u16,
    child: Child,
    stopped: bool,
}

impl Peer {
    /// Spawns `program args...` in a new process group with output to
    /// `log`, then waits until something accepts TCP connections on `port`.
    pub(crate) async fn start(program: &str, args: &[String], port: u16, log: &Path) -> Result<Peer> {
        let out = std::fs::File::create(log)?;
        let err = out.try_clone()?;
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {program}"))?;
        let pid = child.id().context("exited at once")?;
        let mut peer = Peer { pid, port, child, stopped: false };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Ok(peer);
            }
            if let Ok(Some(status)) = peer.child.try_wait() {
                peer.stopped = true;
                bail!("{program} exited with {status}; see {}", log.display());
            }
            if Instant::now() > deadline {
                bail!("{program} did not listen on port {port} within 15 s");
            }
            sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM to the group, SIGKILL to the group after 3 s.
    pub(crate) async fn stop(mut self) {
        signal(self.pid, "TERM", true);
        if timeout(Duration::from_secs(3), self.child.wait()).await.is_err() {
            signal(self.pid, "KILL", true);
            let _ = timeout(Duration::from_secs(2), self.child.wait()).await;
        }
        // Stragglers of the group (commands that ignored SIGTERM).
        signal(self.pid, "KILL", true);
        self.stopped = true;
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if !self.stopped {
            signal(self.pid, "KILL", true);
        }
    }
}

/// Sends a signal with kill(1), to a process or (`group`) its process group.
/// The workspace forbids `unsafe`, so no direct libc call.
pub(crate) fn signal(pid: u32, sig: &str, group: bool) {
    let target = if group { format!("-{pid}") } else { pid.to_string() };
    let _ = std::process::Command::new("kill")
        .args([format!("-{sig}"), "--".into(), target])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A loopback port that was free a moment ago.
pub(crate) fn free_port() -> Result<u16> {
    let l = StdListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    Ok(l.local_addr()?.port())
}

/// Whether `program` can be found on `PATH` (or is a path that exists).
pub(crate) fn which(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        let p = PathBuf::from(program);
        return p.is_file().then_some(p);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Resident set size of one process, in KiB (`VmRSS` in /proc/PID/status).
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Every live descendant of `root` (children, grandchildren...), from the
/// parent links in /proc/*/stat. Zombies are left out.
pub(crate) fn descendants(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The command name is in parentheses and may hold spaces, so parse
        // from the last ')': "state ppid ...".
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next();
        let ppid = fields.next().and_then(|p| p.parse::<u32>().ok());
        match (state, ppid) {
            (Some(state), Some(ppid)) if state != "Z" => children.entry(ppid).or_default().push(pid),
            _ => {}
        }
    }
    let mut out = Vec::new();
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        if let Some(kids) = children.get(&p) {
            out.extend_from_slice(kids);
            todo.extend_from_slice(kids);
        }
    }
    out
}

/// RSS of `root` alone and of `root` plus all its descendants, in KiB, and
/// the number of descendants. Shared pages (libc, the binary's text) count
/// once per process, as RSS always does.
pub(crate) fn tree_rss(root: u32) -> Option<(u64, u64, usize)> {
    let own = rss_kib(root)?;
    let kids = descendants(root);
    let children: u64 = kids.iter().filter_map(|&p| rss_kib(p)).sum();
    Some((own, own + children, kids.len()))
}

/// CPU time (user + system, all threads) a process has used so far, from
/// /proc/PID/stat. The kernel reports it in USER_HZ ticks, which is 100
/// per second on every Linux architecture in use.
pub(crate) fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    // After the name: state(3) ppid(4) ... utime(14) stime(15).
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}
