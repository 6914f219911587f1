//! The chaos matrix, for the clients written in Rust: `tether exec` (pipes,
//! stdin from a file), `tether exec -it` (in tmux), `tether attach`, and the
//! Rust client library, each against a real daemon (`tether serve`, a
//! separate process, so that a graceful restart is real) through a fault
//! proxy, under every fault:
//!
//! - `reset`: every connection reset (RST);
//! - `freeze`: nothing passes, nothing closes, for longer than the peer
//!   timeout;
//! - `refuse`: a reset, then new connections refused for 3 s;
//! - `repeated`: four resets a second apart;
//! - `restart`: `kill -USR2` of the daemon while the stream runs;
//! - `typing`: a reset while stdin (keystrokes) is in flight.
//!
//! Every cell streams stdin through the fault and checks what the client
//! shows: numbered lines each once and in order, the command's hash of its
//! stdin equal to the input's, the command alive to its normal end; and
//! measures the time from the network's return to the client being
//! connected again. Each cell's result is appended as a JSON line to
//! `$CHAOS_RESULTS` (see `scripts/chaos-table.py`); `CHAOS_ROUNDS=N` runs
//! every cell N times (default 1).
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::{Tmux, daemon, in_tmux};
use tether_testkit::{Daemon, FaultProxy, hex, rand_u64, random_bytes};

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tether_client::{Client, ClientOptions, ExecEvent, StartSpec};

const FAULTS: [&str; 6] = ["reset", "freeze", "refuse", "repeated", "restart", "typing"];

/// The daemon's and the clients' peer timeout in these tests.
const PEER_SECS: u64 = 3;

/// Every cell's upper bound.
const CELL_LIMIT: Duration = Duration::from_secs(90);

/// Reads stdin slowly (64 KiB per 25 ms at most: 12 MiB take five seconds,
/// longer than any fault), printing a numbered line per read, then the
/// stdin's SHA-256 and the number of lines.
const SLOW_SHA: &str = r#"
import hashlib, sys, time
h = hashlib.sha256(); i = 0
while True:
    b = sys.stdin.buffer.read1(65536)
    if not b:
        break
    h.update(b); i += 1
    print(f"line-{i}", flush=True)
    time.sleep(0.025)
print(f"sha256:{h.hexdigest()}", flush=True)
print(f"end-{i}", flush=True)
"#;

/// Prints a numbered line every 5 ms until its argument names a file that
/// exists, then the number of lines.
const LINES_UNTIL: &str = r#"
import os, sys, time
i = 0
while not os.path.exists(sys.argv[1]):
    i += 1
    print(f"line-{i}", flush=True)
    time.sleep(0.005)
print(f"end-{i}", flush=True)
"#;

/// One run of the matrix: a daemon, a proxy in front of it, the scripts.
struct Env {
    daemon: Daemon,
    rt: tokio::runtime::Runtime,
    proxy: FaultProxy,
    dir: std::path::PathBuf,
}

impl Env {
    fn new() -> Env {
        let daemon = daemon(&["--peer-timeout", &PEER_SECS.to_string(), "--ping-interval", "1"]);
        let rt = tokio::runtime::Runtime::new().unwrap();
        let upstream = daemon.url.trim_start_matches("http://").parse().unwrap();
        let proxy = rt.block_on(FaultProxy::start(upstream));
        let dir = std::env::temp_dir().join(format!("tether-chaos-{:016x}", rand_u64()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("slow_sha.py"), SLOW_SHA).unwrap();
        std::fs::write(dir.join("lines_until.py"), LINES_UNTIL).unwrap();
        Env { daemon, rt, proxy, dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_owned()
    }

    /// Makes the fault; returns when the network is back (the proxy
    /// forwards again, or the restarted daemon listens).
    fn inject(&self, fault: &str) {
        let p = &self.proxy;
        match fault {
            "reset" | "typing" => {
                p.reset_all();
                p.restore();
            }
            "freeze" => {
                p.freeze();
                std::thread::sleep(Duration::from_secs(PEER_SECS + 1));
                p.restore();
            }
            "refuse" => {
                p.reset_all();
                p.refuse();
                std::thread::sleep(Duration::from_secs(3));
                p.restore();
            }
            "repeated" => {
                for _ in 0..3 {
                    p.reset_all();
                    std::thread::sleep(Duration::from_secs(1));
                }
                p.reset_all();
                p.restore();
            }
            "restart" => {
                // Not a proxy fault: the restore only marks the moment,
                // the signal's (the daemon is back within milliseconds,
                // and clients reconnect at once on its 1001).
                p.restore();
                let lines = self.daemon.wait_lines(1).len();
                let ok =
                    Command::new("kill").args(["-USR2", &self.daemon.pid().to_string()]).status().unwrap();
                assert!(ok.success());
                self.daemon.wait_lines(lines + 1);
            }
            other => panic!("unknown fault {other}"),
        }
    }

    /// The time from the network's return to a client's first byte on a
    /// connection made or revived after it.
    fn reconnect_ms(&self) -> Option<f64> {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if let Some(d) = self.proxy.reconnected_after() {
                return Some(d.as_secs_f64() * 1000.0);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Appends a cell's result to `$CHAOS_RESULTS` and says it on stderr.
fn record(client: &str, fault: &str, r: &Result<(Option<f64>, String), String>) {
    let (pass, ms, detail) = match r {
        Ok((ms, d)) => (true, *ms, d.clone()),
        Err(e) => (false, None, e.clone()),
    };
    let line = serde_json::json!({
        "client": client, "fault": fault, "pass": pass, "reconnect_ms": ms, "detail": detail,
    });
    eprintln!("chaos: {line}");
    if let Ok(path) = std::env::var("CHAOS_RESULTS") {
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
        writeln!(f, "{line}").unwrap();
    }
}

/// Runs every fault against one client, `CHAOS_ROUNDS` times; fails at the
/// end if any cell failed, after recording them all.
fn matrix(client: &str, cell: impl Fn(&Env, &str) -> Result<String, String>) {
    // One client at a time: the cells measure reconnect times, which a
    // machine busy with three other matrices would blur.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let rounds: usize = std::env::var("CHAOS_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    let mut failed = Vec::new();
    for _ in 0..rounds {
        for fault in FAULTS {
            let env = Env::new();
            let started = Instant::now();
            let r = cell(&env, fault).map(|detail| (env.reconnect_ms(), detail));
            let r = match r {
                Ok((None, _)) => Err("the client never connected again".to_owned()),
                Ok(_) if started.elapsed() > CELL_LIMIT => Err(format!("took {:?}", started.elapsed())),
                r => r,
            };
            record(client, fault, &r);
            if let Err(e) = r {
                failed.push(format!("{client} x {fault}: {e}"));
            }
        }
    }
    assert!(failed.is_empty(), "failed cells:\n{}", failed.join("\n"));
}

/// Checks the output of `slow_sha.py` or `lines_until.py`: `line-1` ..
/// `line-n` once each and in order, then (for the hash) `sha256:<want>`,
/// then `end-n`. Returns n.
fn check_lines(out: &str, want_sha: Option<&str>) -> Result<usize, String> {
    let mut n = 0;
    let mut lines = out.lines().filter(|l| !l.is_empty());
    for l in lines.by_ref() {
        if let Some(k) = l.strip_prefix("line-") {
            let k: usize = k.parse().map_err(|_| format!("garbled line {l:?}"))?;
            if k != n + 1 {
                return Err(format!("line-{k} after line-{n}"));
            }
            n = k;
            continue;
        }
        if let Some(sha) = l.strip_prefix("sha256:") {
            match want_sha {
                Some(w) if w == sha => continue,
                Some(w) => return Err(format!("stdin hash {sha} != {w}")),
                None => return Err("unexpected hash".into()),
            }
        }
        if l == format!("end-{n}") {
            if let Some(extra) = lines.next() {
                return Err(format!("output after the end: {extra:?}"));
            }
            return Ok(n);
        }
        return Err(format!("unexpected line {l:?} after line-{n}"));
    }
    Err(format!("no end line after line-{n}"))
}

/// Collects a child's stdout in a thread; `lines()` counts `line-` lines
/// so far.
struct Reader {
    out: Arc<Mutex<String>>,
    thread: std::thread::JoinHandle<()>,
}

impl Reader {
    fn spawn(child: &mut Child) -> Reader {
        let out = Arc::new(Mutex::new(String::new()));
        let stdout = child.stdout.take().unwrap();
        let o2 = out.clone();
        let thread = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut o = o2.lock().unwrap();
                o.push_str(&line);
                o.push('\n');
            }
        });
        Reader { out, thread }
    }

    fn count(&self) -> usize {
        self.out.lock().unwrap().matches("line-").count()
    }

    /// Waits until `n` lines have come.
    fn until(&self, n: usize) -> Result<(), String> {
        let start = Instant::now();
        while self.count() < n {
            if start.elapsed() > Duration::from_secs(30) {
                return Err(format!("only {} lines came", self.count()));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    fn finish(self) -> String {
        let _ = self.thread.join();
        Arc::try_unwrap(self.out).map(|m| m.into_inner().unwrap()).unwrap_or_default()
    }
}

/// Waits for a child, bounded; its exit code.
fn wait_child(child: &mut Child, limit: Duration) -> Result<i32, String> {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return Ok(st.code().unwrap_or(-1));
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            return Err(format!("still running after {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits for a CLI client to end, checks its output (see [`check_lines`])
/// and its exit code; the number of lines.
fn finish(child: &mut Child, reader: Reader, want_sha: Option<&str>) -> Result<usize, String> {
    let code = wait_child(child, CELL_LIMIT)?;
    let n = check_lines(&reader.finish(), want_sha)?;
    if code != 0 {
        return Err(format!("exit code {code}"));
    }
    Ok(n)
}

// ------------------------------------------------------------- the cells

/// `tether exec` with stdin from a file: the command hashes its stdin,
/// read slowly, and prints a line per read.
#[test]
fn chaos_exec() {
    matrix("exec", |env, fault| {
        let data = random_bytes(12 << 20);
        let want = hex(&Sha256::digest(&data));
        let input = env.path("input");
        std::fs::write(&input, &data).unwrap();
        let mut child = env
            .daemon
            .cli(&[
                "exec",
                "--silence-timeout",
                &PEER_SECS.to_string(),
                "--",
                "python3",
                "-u",
                &env.path("slow_sha.py"),
            ])
            .env("TETHER_URL", env.proxy.url())
            .stdin(std::fs::File::open(&input).unwrap())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let reader = Reader::spawn(&mut child);
        reader.until(10)?;
        env.inject(fault);
        let n = finish(&mut child, reader, Some(&want))?;
        Ok(format!("{n} lines once each, stdin (12 MiB from a file) hashed equal"))
    });
}

/// `tether attach` of a running command, output to a file.
#[test]
fn chaos_attach() {
    matrix("attach", |env, fault| {
        let stop = env.path("stop");
        let o =
            env.daemon.run(&["exec", "--detach", "--", "python3", "-u", &env.path("lines_until.py"), &stop]);
        let id = common::text(&o.stdout).trim().to_owned();
        if !id.starts_with("c-") {
            return Err(format!("no command id: {}", common::text(&o.stderr)));
        }
        let mut child = env
            .daemon
            .cli(&["attach", "--silence-timeout", &PEER_SECS.to_string(), &id])
            .env("TETHER_URL", env.proxy.url())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let reader = Reader::spawn(&mut child);
        reader.until(10)?;
        env.inject(fault);
        // Lines after the return: the stream goes on.
        let after = reader.count();
        reader.until(after + 50)?;
        std::fs::write(&stop, b"").unwrap();
        let n = finish(&mut child, reader, None)?;
        Ok(format!("{n} lines once each"))
    });
}

/// The Rust client library: a paced command hashing stdin the client
/// streams through the fault.
#[test]
fn chaos_rust_client() {
    matrix("rust", |env, fault| {
        let opts = ClientOptions {
            peer_timeout: Duration::from_secs(PEER_SECS),
            keepalive: Duration::from_secs(1),
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(500),
            reconnect_for: Duration::from_secs(60),
            ..ClientOptions::default()
        };
        let data = random_bytes(12 << 20);
        let want = hex(&Sha256::digest(&data));
        let rt = &env.rt;
        let c = rt
            .block_on(Client::connect_with(&env.proxy.url(), &env.daemon.token, opts))
            .map_err(|e| e.to_string())?;
        let spec = StartSpec {
            argv: vec!["python3".into(), "-u".into(), env.path("slow_sha.py")],
            pace: true,
            ..StartSpec::default()
        };
        let mut ex = rt.block_on(c.start(spec)).map_err(|e| e.to_string())?;
        let id = ex.id().clone();
        let writer = rt.spawn({
            let c = c.clone();
            async move {
                for chunk in data.chunks(64 * 1024) {
                    c.write_stdin(&id, Bytes::copy_from_slice(chunk)).await?;
                }
                c.close_stdin(&id).await
            }
        });
        let out = Arc::new(Mutex::new(String::new()));
        let o2 = out.clone();
        let reader = rt.spawn(async move {
            while let Some(ev) = ex.next().await {
                match ev? {
                    ExecEvent::Stdout(b) => o2.lock().unwrap().push_str(&String::from_utf8_lossy(&b)),
                    ExecEvent::Exit(st) => return Ok(st),
                    ExecEvent::Gap { from, to, .. } => {
                        o2.lock().unwrap().push_str(&format!("GAP {from}..{to}\n"));
                    }
                    _ => {}
                }
            }
            Err(tether_client::ClientError::Disconnected)
        });
        let start = Instant::now();
        while out.lock().unwrap().matches("line-").count() < 10 {
            if start.elapsed() > Duration::from_secs(30) {
                return Err("no output".into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        env.inject(fault);
        let st = rt
            .block_on(async { tokio::time::timeout(CELL_LIMIT, reader).await })
            .map_err(|_| "no exit".to_owned())?
            .unwrap()
            .map_err(|e| e.to_string())?;
        rt.block_on(writer).unwrap().map_err(|e| format!("stdin: {e}"))?;
        let n = check_lines(&out.lock().unwrap(), Some(&want))?;
        if st.code != Some(0) {
            return Err(format!("exit {st:?}"));
        }
        Ok(format!("{n} lines once each, stdin (12 MiB, paced) hashed equal"))
    });
}

/// `tether exec -it` in tmux: keystrokes typed one by one through the
/// fault reach `cat` once each, the screen comes back, the session goes on.
#[test]
fn chaos_exec_it() {
    matrix("exec-it", |env, fault| {
        let args = format!("exec -it --silence-timeout {PEER_SECS} -- bash --norc --noprofile");
        let t = in_tmux(&env.daemon, &env.proxy.url(), 120, 30, &args);
        wait_screen(&t, "#", Duration::from_secs(30))?;
        let typed = env.path("typed");
        t.keys(&[&format!("cat > {typed}; echo cat-$((40+2))"), "Enter"]);
        std::thread::sleep(Duration::from_millis(300));
        let text: String = (0..4).map(|l| format!("{l}-{}\n", hex(&random_bytes(24)))).collect();
        let typing = {
            let text = text.clone();
            let socket = t.socket().to_owned();
            std::thread::spawn(move || {
                for c in text.chars() {
                    let key = if c == '\n' { "Enter".to_owned() } else { c.to_string() };
                    let lit = if c == '\n' { vec![] } else { vec!["-l"] };
                    let mut args = vec!["-L", &socket, "send-keys", "-t", "main"];
                    args.extend(lit);
                    args.push(&key);
                    let _ = Command::new("tmux").args(&args).status();
                    std::thread::sleep(Duration::from_millis(15));
                }
            })
        };
        // In the middle of the typing.
        std::thread::sleep(Duration::from_millis(400));
        env.inject(fault);
        typing.join().unwrap();
        t.keys(&["C-d"]);
        wait_screen(&t, "cat-42", Duration::from_secs(40))?;
        let got = std::fs::read_to_string(&typed).map_err(|e| e.to_string())?;
        if got != text {
            return Err(format!("typed {text:?}, the command got {got:?}; the screen:\n{}", t.screen()));
        }
        t.keys(&["echo after-$((6*7))", "Enter"]);
        let s = wait_screen(&t, "after-42", Duration::from_secs(20))?;
        if s.contains("reconnecting") {
            return Err(format!("the notice stayed on the screen:\n{s}"));
        }
        t.keys(&["exit", "Enter"]);
        let s = wait_screen(&t, "EXIT=", Duration::from_secs(20))?;
        if !s.contains("EXIT=0") || !s.contains("TERMINAL-RESTORED") {
            return Err(format!("ended badly:\n{s}"));
        }
        Ok(format!("{} keystrokes once each; the session went on", text.len()))
    });
}

fn wait_screen(t: &Tmux, needle: &str, limit: Duration) -> Result<String, String> {
    let start = Instant::now();
    loop {
        let s = t.screen();
        if s.contains(needle) {
            return Ok(s);
        }
        if start.elapsed() > limit {
            return Err(format!("no {needle:?} on the screen:\n{s}"));
        }
        std::thread::sleep(Duration::from_millis(30));
    }
}
