//! The `tether serve` process the binary's tests run against (the kit's
//! [`Daemon`] run from this crate's binary), and the tmux sessions of its
//! interactive tests.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tether_client::{Client, ClientOptions, StartSpec};
use tether_testkit::{Daemon, LIMIT, rand_u64};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_tether");

/// `tether serve` on port 0 with `extra` arguments.
pub(crate) fn daemon(extra: &[&str]) -> Daemon {
    Daemon::start(BIN, extra)
}

/// A daemon whose temporary directory is `tmp`.
pub(crate) fn daemon_in(extra: &[&str], tmp: Option<&Path>) -> Daemon {
    Daemon::start_cmd(Command::new(BIN), BIN, extra, tmp)
}

/// A daemon run from the binary at `bin` (a copy of this one); its CLI
/// commands still run this one.
pub(crate) fn daemon_from(bin: &str, extra: &[&str], tmp: Option<&Path>) -> Daemon {
    Daemon::start_cmd(Command::new(bin), BIN, extra, tmp)
}

/// `bash -c script`.
pub(crate) fn shell(script: &str) -> StartSpec {
    StartSpec { argv: vec!["bash".into(), "-c".into(), script.into()], ..StartSpec::default() }
}

/// A client of `d` that tries again soon after a drop.
pub(crate) async fn client(d: &Daemon) -> Client {
    let opts = ClientOptions { initial_backoff: Duration::from_millis(20), ..ClientOptions::default() };
    Client::connect_with(&d.url, &d.token, opts).await.unwrap()
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
