//! [`Daemon`]: a `tether serve` process on port 0 whose address is read
//! from the line it prints, for tests of the binary itself.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex};

use crate::{LIMIT, rand_u64, wait_bounded};

/// A `tether serve` process on port 0, stopped with SIGTERM on drop.
pub struct Daemon {
    pub child: Child,
    pub url: String,
    pub token: String,
    /// The binary [`Daemon::cli`] runs.
    cli: String,
    /// Every line the daemon printed on stdout (one per start or restart).
    lines: Arc<(Mutex<Vec<String>>, Condvar)>,
}

impl Daemon {
    /// `bin serve` on port 0, with `extra` arguments; [`Daemon::cli`]
    /// runs `bin` too.
    pub fn start(bin: &str, extra: &[&str]) -> Daemon {
        Daemon::start_cmd(Command::new(bin), bin, extra, None)
    }

    /// A daemon run by `cmd` (the binary, or something that execs it with
    /// the arguments given after its own), with `serve` and its arguments,
    /// whose temporary directory is `tmp` if given. [`Daemon::cli`] runs
    /// the binary at `cli`.
    pub fn start_cmd(mut cmd: Command, cli: &str, extra: &[&str], tmp: Option<&Path>) -> Daemon {
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
        let mut d = Daemon { child, url: String::new(), token, cli: cli.to_owned(), lines };
        let first = d.wait_lines(1).remove(0);
        d.url = first.strip_prefix("tether: listening on ").expect("listening line").to_owned();
        d
    }

    /// Waits until the daemon has printed `n` lines; returns them.
    pub fn wait_lines(&self, n: usize) -> Vec<String> {
        let (lock, cv) = &*self.lines;
        let (lines, timeout) = cv.wait_timeout_while(lock.lock().unwrap(), LIMIT, |l| l.len() < n).unwrap();
        assert!(!timeout.timed_out(), "the daemon printed {} of {n} lines: {:?}", lines.len(), *lines);
        lines.clone()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// A CLI command (`cli args`) pointed at this daemon.
    pub fn cli(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.cli);
        c.args(args).env("TETHER_URL", &self.url).env("TETHER_TOKEN", &self.token);
        c
    }

    /// Runs a CLI command to completion (bounded) with stdin closed.
    pub fn run(&self, args: &[&str]) -> Output {
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

    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).unwrap().count()
    }

    pub fn zombie_children(&self) -> Vec<i32> {
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
