//! The `tether serve` process the binary's tests run against, and small
//! helpers they share.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_tether");
pub(crate) const LIMIT: Duration = Duration::from_secs(60);

/// A `tether serve` process on port 0, stopped with SIGTERM on drop.
pub(crate) struct Daemon {
    pub(crate) child: Child,
    pub(crate) url: String,
    pub(crate) token: String,
    /// Every line the daemon printed on stdout (one per start or restart).
    lines: Arc<(Mutex<Vec<String>>, Condvar)>,
}

impl Daemon {
    pub(crate) fn start(extra: &[&str]) -> Daemon {
        Daemon::start_in(extra, None)
    }

    /// A daemon whose temporary directory is `tmp`.
    pub(crate) fn start_in(extra: &[&str], tmp: Option<&std::path::Path>) -> Daemon {
        Daemon::start_bin(BIN, extra, tmp)
    }

    /// A daemon run from the binary at `bin`.
    pub(crate) fn start_bin(bin: &str, extra: &[&str], tmp: Option<&std::path::Path>) -> Daemon {
        Daemon::start_cmd(Command::new(bin), extra, tmp)
    }

    /// A daemon run by `cmd` (the binary, or something that execs it with
    /// the arguments given after its own), with `serve` and its arguments.
    pub(crate) fn start_cmd(mut cmd: Command, extra: &[&str], tmp: Option<&std::path::Path>) -> Daemon {
        let token = format!("cli-test-{:016x}", rand_u64());
        if let Some(tmp) = tmp {
            cmd.env("TMPDIR", tmp).env_remove("XDG_RUNTIME_DIR");
        }
        cmd.arg("serve");
        // Port 0 unless the test names an address.
        if !extra.contains(&"--listen") {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        let mut child = cmd
            .args(extra)
            .env("TETHER_TOKEN", &token)
            .env("TETHER_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let lines = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let out = BufReader::new(child.stdout.take().unwrap());
        let l2 = lines.clone();
        std::thread::spawn(move || {
            for line in out.lines() {
                let Ok(line) = line else { break };
                l2.0.lock().unwrap().push(line);
                l2.1.notify_all();
            }
        });
        let mut d = Daemon { child, url: String::new(), token, lines };
        let first = d.wait_lines(1).remove(0);
        d.url = first.strip_prefix("tether: listening on ").expect("listening line").to_owned();
        d
    }

    /// Waits until the daemon has printed `n` lines; returns them.
    pub(crate) fn wait_lines(&self, n: usize) -> Vec<String> {
        let (lock, cv) = &*self.lines;
        let (lines, timeout) = cv.wait_timeout_while(lock.lock().unwrap(), LIMIT, |l| l.len() < n).unwrap();
        assert!(!timeout.timed_out(), "the daemon printed {} of {n} lines: {:?}", lines.len(), *lines);
        lines.clone()
    }

    pub(crate) fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub(crate) fn cli(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args).env("TETHER_URL", &self.url).env("TETHER_TOKEN", &self.token);
        c
    }

    /// Runs a CLI command to completion (bounded) with stdin closed.
    pub(crate) fn run(&self, args: &[&str]) -> Output {
        let mut child = self
            .cli(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_bounded(&mut child);
        child.wait_with_output().unwrap()
    }

    pub(crate) fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).unwrap().count()
    }

    pub(crate) fn zombie_children(&self) -> Vec<i32> {
        let me = self.pid();
        let mut out = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let rest: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
            if rest[1].parse::<i32>() == Ok(me) && rest[0] == "Z" {
                out.push(pid);
            }
        }
        out
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

pub(crate) fn rand_u64() -> u64 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    t.as_nanos() as u64 ^ ((std::process::id() as u64) << 32)
}

pub(crate) fn wait_bounded(child: &mut Child) {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(start.elapsed() < LIMIT, "CLI command did not finish within {LIMIT:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub(crate) fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

// Interactive terminal sessions, driven in tmux (send-keys, capture-pane).

/// A tmux server of its own (no user config) running one command in a
/// window of a fixed size; killed on drop.
pub(crate) struct Tmux {
    socket: String,
}

impl Tmux {
    pub(crate) fn start(url: &str, token: &str, cols: u16, rows: u16, script: &str) -> Tmux {
        let t = Tmux { socket: format!("tether-test-{:016x}", rand_u64()) };
        let ok = Command::new("tmux")
            .args(["-L", &t.socket, "-f", "/dev/null", "new-session", "-d", "-s", "main"])
            .args(["-x", &cols.to_string(), "-y", &rows.to_string()])
            .args(["-e", &format!("TETHER_URL={url}"), "-e", &format!("TETHER_TOKEN={token}")])
            .args(["-e", &format!("PATH={}", std::env::var("PATH").unwrap_or_default())])
            .arg(format!("bash --norc --noprofile -c '{script}'"))
            .status()
            .expect("tmux runs (the tests install it)");
        assert!(ok.success());
        t.tmux(&["set-option", "-g", "status", "off"]);
        t
    }

    /// The tmux server's socket name (`tmux -L`).
    pub(crate) fn socket(&self) -> &str {
        &self.socket
    }

    pub(crate) fn tmux(&self, args: &[&str]) -> String {
        let o = Command::new("tmux").args(["-L", &self.socket]).args(args).output().unwrap();
        text(&o.stdout)
    }

    pub(crate) fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "main"];
        args.extend_from_slice(keys);
        self.tmux(&args);
    }

    pub(crate) fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", "main"])
    }

    /// Polls the screen until it contains `needle`; returns it.
    pub(crate) fn wait_for(&self, needle: &str) -> String {
        let start = Instant::now();
        loop {
            let s = self.screen();
            if s.contains(needle) {
                return s;
            }
            assert!(start.elapsed() < LIMIT, "no {needle:?} on the screen:\n{s}");
            std::thread::sleep(Duration::from_millis(30));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["-L", &self.socket, "kill-server"]).status();
    }
}

/// Runs `tether ARGS` in tmux; after it ends, prints whether the local
/// terminal's settings are as before and its exit code, then waits.
pub(crate) fn in_tmux(d: &Daemon, url: &str, cols: u16, rows: u16, args: &str) -> Tmux {
    let script = format!(
        "before=$(stty -g); {BIN} {args}; code=$?; [ \"$before\" = \"$(stty -g)\" ] && echo TERMINAL-RESTORED; \
         echo EXIT=$code; sleep 600"
    );
    Tmux::start(url, &d.token, cols, rows, &script)
}
