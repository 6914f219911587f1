//! The `tether` binary end to end: a real `tether serve` process and the
//! CLI client subcommands against it; fd and zombie leak checks.
#![allow(missing_docs, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tether_client::{Client, ExecEvent, StartSpec};

mod common;

use common::{BIN, daemon, daemon_in, in_tmux, text};
use tether_testkit::{Daemon, LIMIT, rand_u64, wait_bounded};

#[test]
fn exec_streams_output_and_propagates_exit_codes() {
    let d = daemon(&[]);
    let o = d.run(&["exec", "--", "sh", "-c", "echo out; echo err >&2; exit 7"]);
    assert_eq!(o.status.code(), Some(7));
    assert_eq!(text(&o.stdout), "out\n");
    assert_eq!(text(&o.stderr), "err\n");
    // A signal becomes 128 + N.
    let o = d.run(&["exec", "--", "sh", "-c", "kill -TERM $$"]);
    assert_eq!(o.status.code(), Some(143));
    // --shell, --cwd and --env.
    let o = d.run(&[
        "exec",
        "--cwd",
        "/tmp",
        "--env",
        "GREETING=hi there",
        "--shell",
        "echo \"$GREETING\" from $(pwd) | tr a-z A-Z",
    ]);
    assert_eq!(text(&o.stdout), "HI THERE FROM /TMP\n");
    // A program that does not exist: tether's own failure, with the OS reason.
    let o = d.run(&["exec", "--", "/nonexistent/program"]);
    assert_eq!(o.status.code(), Some(127));
    assert!(text(&o.stderr).contains("No such file or directory"), "{}", text(&o.stderr));
}

#[test]
fn exec_forwards_stdin_with_eof() {
    let d = daemon(&[]);
    let mut child =
        d.cli(&["exec", "--", "wc", "-c"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&vec![b'z'; 300_000]).unwrap();
    drop(stdin);
    wait_bounded(&mut child);
    let o = child.wait_with_output().unwrap();
    assert_eq!(text(&o.stdout).trim(), "300000");
    assert_eq!(o.status.code(), Some(0));
}

#[test]
fn ctrl_c_is_forwarded_to_the_command() {
    let d = daemon(&[]);
    let mut child = d
        .cli(&[
            "exec",
            "--no-stdin",
            "--",
            "sh",
            "-c",
            "trap 'echo got-int; exit 42' INT; echo ready; while :; do sleep 0.05; done",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    wait_bounded(&mut child);
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "got-int\n");
    assert_eq!(child.wait().unwrap().code(), Some(42));
}

#[test]
fn detach_attach_logs_wait_ls_kill() {
    let d = daemon(&[]);
    let o = d.run(&[
        "exec",
        "--detach",
        "--name",
        "two-lines",
        "--",
        "sh",
        "-c",
        "echo a; sleep 0.5; echo b; exit 3",
    ]);
    assert_eq!(o.status.code(), Some(0));
    let id = text(&o.stdout).trim().to_owned();
    assert!(id.starts_with("c-"), "{id}");

    let ls = text(&d.run(&["ls"]).stdout);
    assert!(ls.contains(&id) && ls.contains("two-lines") && ls.contains("running"), "{ls}");

    let o = d.run(&["attach", &id]);
    assert_eq!(text(&o.stdout), "a\nb\n");
    assert_eq!(o.status.code(), Some(3));
    let o = d.run(&["logs", &id]);
    assert_eq!(text(&o.stdout), "a\nb\n");
    assert_eq!(d.run(&["wait", &id]).status.code(), Some(3));
    let o = d.run(&["attach", "--tail", "2", &id]);
    assert_eq!(text(&o.stdout), "b\n");

    let o = d.run(&["exec", "-d", "--", "sleep", "100"]);
    let sleeper = text(&o.stdout).trim().to_owned();
    assert_eq!(d.run(&["kill", &sleeper]).status.code(), Some(0));
    assert_eq!(d.run(&["wait", &sleeper]).status.code(), Some(137));
    let status: serde_json::Value = serde_json::from_slice(&d.run(&["status", &sleeper]).stdout).unwrap();
    assert_eq!(status["exit"]["reason"], "killed");
    assert_eq!(d.run(&["rm", &sleeper]).status.code(), Some(0));
    let o = d.run(&["status", &sleeper]);
    assert_eq!(o.status.code(), Some(255));
    assert!(text(&o.stderr).contains("no command"), "{}", text(&o.stderr));
}

#[test]
fn without_a_token_serve_writes_a_private_token_file_the_cli_reads() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("tether-cfg-{:016x}", rand_u64()));
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_remove("TETHER_TOKEN")
        .env("XDG_CONFIG_HOME", &dir)
        .env("TETHER_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.trim().strip_prefix("tether: listening on ").unwrap().to_owned();
    let file = dir.join("tether/token");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let o = Command::new(BIN)
        .args(["exec", "--", "echo", "via-file"])
        .env_remove("TETHER_TOKEN")
        .env("XDG_CONFIG_HOME", &dir)
        .env("TETHER_URL", &url)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(text(&o.stdout), "via-file\n");
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    wait_bounded(&mut child);
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(err.contains("wrote a new token to"), "{err}");
    let token = std::fs::read_to_string(&file).unwrap();
    assert!(!err.contains(token.trim()), "the token must never be printed");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn wrong_token_is_a_clear_error() {
    let d = daemon(&[]);
    let o = d.cli(&["ls"]).env("TETHER_TOKEN", "wrong").output().unwrap();
    assert_eq!(o.status.code(), Some(255));
    assert!(text(&o.stderr).contains("401"), "{}", text(&o.stderr));
}

#[test]
fn sigterm_shuts_down_and_kills_commands() {
    let mut d = daemon(&[]);
    let o = d.run(&["exec", "-d", "--", "sleep", "100"]);
    let id = text(&o.stdout).trim().to_owned();
    let status: serde_json::Value = serde_json::from_slice(&d.run(&["status", &id]).stdout).unwrap();
    let pid = status["pid"].as_u64().unwrap();
    Command::new("kill").args(["-TERM", &d.child.id().to_string()]).status().unwrap();
    wait_bounded(&mut d.child);
    assert!(d.child.wait().unwrap().success(), "daemon exits 0 on SIGTERM");
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "command {pid} survived the daemon");
}

#[test]
fn no_fd_or_zombie_leaks_after_a_mixed_workload() {
    let d = daemon(&["--ttl", "1"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // Warm up: the runtime and its drivers open their fds lazily.
        let c = Client::connect(&d.url, &d.token).await.unwrap();
        c.run(argv(&["true"])).await.unwrap();
        drop(c);
    });
    std::thread::sleep(Duration::from_millis(200));
    let baseline = d.fd_count();

    rt.block_on(async {
        let c = Client::connect(&d.url, &d.token).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..48 {
            let c = c.clone();
            tasks.push(tokio::spawn(async move {
                match i % 6 {
                    // Terminals: one exits by itself, one is killed with a
                    // background job holding the terminal.
                    5 if i % 12 == 5 => {
                        let pty = Some(tether_client::PtySpec { rows: 24, cols: 80, term: None });
                        c.run(StartSpec { pty, ..argv(&["sh", "-c", "tty; stty size"]) }).await.unwrap();
                    }
                    5 => {
                        let pty = Some(tether_client::PtySpec { rows: 24, cols: 80, term: None });
                        let ex = c
                            .start(StartSpec { pty, ..argv(&["sh", "-c", "sleep 100 & sleep 100"]) })
                            .await
                            .unwrap();
                        ex.kill().await.unwrap();
                        ex.output().await.unwrap();
                    }
                    0 => {
                        c.run(argv(&["sh", "-c", "echo x; echo y >&2"])).await.unwrap();
                    }
                    1 => {
                        let ex = c.start(argv(&["sleep", "100"])).await.unwrap();
                        ex.kill().await.unwrap();
                        ex.output().await.unwrap();
                    }
                    2 => {
                        let spec = StartSpec {
                            timeout_ms: Some(100),
                            ..argv(&["sh", "-c", "sleep 100 & sleep 100"])
                        };
                        c.run(spec).await.unwrap();
                    }
                    3 => {
                        assert!(c.run(argv(&["/nonexistent"])).await.is_err());
                    }
                    _ => {
                        let ex = c.start(argv(&["cat"])).await.unwrap();
                        ex.write_stdin(&b"abc"[..]).await.unwrap();
                        ex.close_stdin().await.unwrap();
                        let mut ex = ex;
                        let mut got = Vec::new();
                        while let Some(ev) = ex.next().await {
                            match ev.unwrap() {
                                ExecEvent::Stdout(b) => got.extend_from_slice(&b),
                                ExecEvent::Exit(_) => break,
                                _ => {}
                            }
                        }
                        assert_eq!(got, b"abc");
                    }
                }
            }));
        }
        for t in tasks {
            tokio::time::timeout(LIMIT, t).await.unwrap().unwrap();
        }
        // Extra connections that come and go.
        for _ in 0..10 {
            let c2 = Client::connect(&d.url, &d.token).await.unwrap();
            c2.list().await.unwrap();
        }
    });

    // Everything ends, records expire (ttl 1 s), connections close.
    let start = Instant::now();
    loop {
        let (fds, zombies) = (d.fd_count(), d.zombie_children());
        if fds <= baseline && zombies.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "leak: {fds} fds vs baseline {baseline}; zombie children {zombies:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn argv(a: &[&str]) -> StartSpec {
    StartSpec { argv: a.iter().map(|s| s.to_string()).collect(), ..StartSpec::default() }
}

// Interactive terminal sessions, driven in tmux (send-keys, capture-pane).

const SHELL: &str = "bash --norc --noprofile";

#[test]
fn exec_it_is_an_interactive_terminal_with_exit_code_and_restore() {
    let d = daemon(&[]);
    let t = in_tmux(&d, &d.url, 100, 30, &format!("exec -it -- {SHELL}"));
    t.keys(&["echo hi-$((1+1)); stty size; tty", "Enter"]);
    let s = t.wait_for("hi-2");
    t.wait_for("30 100");
    assert!(t.wait_for("/dev/pts/").contains("/dev/pts/"), "{s}");
    // Full-screen program and back: the local terminal leaves it cleanly.
    t.keys(&["printf '\\033[?1049h\\033[?25lALT'; sleep 0.2; exit 7", "Enter"]);
    let s = t.wait_for("EXIT=7");
    assert!(s.contains("TERMINAL-RESTORED"), "{s}");
}

#[test]
fn detach_keys_leave_it_running_and_attach_restores_screen_and_size() {
    let d = daemon(&[]);
    // Resizes wait for a prompt: readline reads the window size and writes
    // it back as it starts each line, undoing a resize that lands between.
    let a = in_tmux(&d, &d.url, 100, 30, &format!("exec -it -- env PS1=PROMPT: {SHELL}"));
    a.keys(&["echo marker-$((6*7))", "Enter"]);
    a.wait_for("marker-42\nPROMPT:");
    a.keys(&["C-p", "C-q"]);
    let s = a.wait_for("EXIT=0");
    assert!(s.contains("TERMINAL-RESTORED"), "{s}");
    let id = s
        .split_whitespace()
        .find(|w| w.starts_with("c-"))
        .map(|w| w.trim_end_matches(';').to_owned())
        .unwrap_or_else(|| panic!("no command id in:\n{s}"));
    assert!(s.contains(&format!("tether attach {id}")), "{s}");
    let o = d.run(&["status", &id]);
    assert!(text(&o.stdout).contains("\"running\""), "still running after detach");

    // Another terminal, another size: the screen comes back, the size is its own.
    let b = in_tmux(&d, &d.url, 120, 40, &format!("attach {id}"));
    b.wait_for("marker-42");
    b.keys(&["clear; stty size", "Enter"]);
    b.wait_for("40 120\nPROMPT:");
    // The local window changes size: the remote terminal follows.
    b.tmux(&["resize-window", "-t", "main", "-x", "90", "-y", "25"]);
    b.keys(&["clear; stty size", "Enter"]);
    b.wait_for("25 90");
    b.keys(&["exit 3", "Enter"]);
    let s = b.wait_for("EXIT=3");
    assert!(s.contains("TERMINAL-RESTORED"), "{s}");
}

#[test]
fn an_interactive_session_survives_a_network_cut() {
    let d = daemon(&[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let upstream: std::net::SocketAddr = d.url.trim_start_matches("http://").parse().unwrap();
    // Never cuts by itself; `cut_all` cuts on demand.
    let proxy = rt.block_on(tether_testkit::CutProxy::start(upstream, u64::MAX / 4, u64::MAX / 2));
    let t = in_tmux(&d, &proxy.url(), 100, 30, &format!("exec -it -- {SHELL}"));
    t.keys(&["echo before-$((1+1))", "Enter"]);
    t.wait_for("before-2");
    rt.block_on(async { proxy.cut_all() });
    t.wait_for("reconnecting");
    // The screen is redrawn after the reconnect (the notice is gone) and the
    // session goes on.
    let start = Instant::now();
    while t.screen().contains("reconnecting") {
        assert!(start.elapsed() < LIMIT, "never redrawn:\n{}", t.screen());
        std::thread::sleep(Duration::from_millis(30));
    }
    assert!(t.screen().contains("before-2"), "{}", t.screen());
    t.keys(&["echo after-$((2+1))", "Enter"]);
    t.wait_for("after-3");
    t.keys(&["exit", "Enter"]);
    t.wait_for("EXIT=0");
    assert!(proxy.cuts() >= 1);
}

/// The network dies hard (both sockets reset), new connections are refused
/// for 3 s, then it comes back: the notice shows within a few seconds, the
/// screen is redrawn, what was typed during the outage reaches the shell,
/// and the session goes on (issue 12's report).
#[test]
fn an_interactive_session_survives_a_reset_and_refused_reconnects() {
    let d = daemon(&[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let upstream: std::net::SocketAddr = d.url.trim_start_matches("http://").parse().unwrap();
    let proxy = rt.block_on(tether_testkit::FaultProxy::start(upstream));
    let t = in_tmux(&d, &proxy.url(), 100, 30, &format!("exec -it -- {SHELL}"));
    t.keys(&["echo before-$((1+1))", "Enter"]);
    t.wait_for("before-2");
    // The loss comes in the middle of typing: keystrokes are in flight.
    let word = "echo abcdefghijklmnopqrstuvwxyz";
    for (i, c) in word.chars().enumerate() {
        t.keys(&["-l", &c.to_string()]);
        if i == word.len() / 2 {
            rt.block_on(async {
                proxy.reset_all();
                proxy.refuse();
            });
        }
        std::thread::sleep(Duration::from_millis(15));
    }
    t.keys(&["Enter"]);
    let lost = Instant::now();
    t.wait_for("reconnecting");
    assert!(lost.elapsed() < Duration::from_secs(5), "the notice took {:?}", lost.elapsed());
    // Typed while the network is down.
    t.keys(&["echo typed-during-$((3+4))"]);
    std::thread::sleep(Duration::from_secs(3));
    rt.block_on(async { proxy.restore() });
    let start = Instant::now();
    while t.screen().contains("reconnecting") {
        assert!(start.elapsed() < LIMIT, "never redrawn:\n{}", t.screen());
        std::thread::sleep(Duration::from_millis(30));
    }
    t.keys(&["Enter"]);
    t.wait_for("typed-during-7");
    // The word's line ran: its output follows the command line. Not
    // necessarily at a line's start: the Enter and the next line, both
    // typed while the network was down, go out together once reconnected,
    // and the terminal echoes the typed-ahead line before the output.
    let screen = t.screen();
    assert!(screen.matches("abcdefghijklmnopqrstuvwxyz").count() >= 2, "{screen}");
    t.keys(&["echo after-$((2+1))", "Enter"]);
    t.wait_for("after-3");
    t.keys(&["exit", "Enter"]);
    t.wait_for("EXIT=0");
    assert!(proxy.resets() >= 1 && proxy.refused() >= 1, "the faults happened");
}

#[test]
fn a_signal_to_an_interactive_client_restores_the_terminal_and_leaves_the_command() {
    let d = daemon(&[]);
    let t = in_tmux(&d, &d.url, 100, 30, &format!("exec -it -- {SHELL}"));
    t.keys(&["echo up-$((3+4))", "Enter"]);
    t.wait_for("up-7");
    // This pane's tether client: the child of the pane's wrapper shell
    // (other tests run clients of their own at the same time).
    let pane = t.tmux(&["display-message", "-p", "-t", "main", "#{pane_pid}"]);
    let o = Command::new("pkill")
        .args(["-TERM", "-P", pane.trim(), "-f", &format!("^{BIN} exec -it")])
        .status()
        .unwrap();
    assert!(o.success());
    let s = t.wait_for("EXIT=143");
    assert!(s.contains("TERMINAL-RESTORED"), "{s}");
    assert!(s.contains("keeps running"), "{s}");
    let list = text(&d.run(&["ls"]).stdout);
    assert!(list.contains("running"), "{list}");
}

#[test]
fn exec_t_without_i_forwards_ctrl_c_to_the_command() {
    let d = daemon(&[]);
    // A terminal for the command, but keystrokes stay local: Ctrl-C is a
    // signal here, forwarded to the command's foreground job.
    let t = in_tmux(&d, &d.url, 100, 30, "exec -t -- sh -c \"tty; echo go; sleep 100\"");
    t.wait_for("go");
    t.keys(&["C-c"]);
    let s = t.wait_for("EXIT=130");
    assert!(s.contains("/dev/pts/"), "{s}");
    assert!(s.contains("TERMINAL-RESTORED"), "{s}");
}

#[test]
fn exec_t_with_piped_output_writes_only_the_commands_bytes() {
    let d = daemon(&[]);
    let o = d.run(&["exec", "-t", "--", "sh", "-c", "printf 'a\\nb'"]);
    assert_eq!(o.status.code(), Some(0));
    // The terminal's CR LF, and none of tether's own terminal sequences.
    assert_eq!(text(&o.stdout), "a\r\nb");
}

#[test]
fn shell_create_run_ls_history_rm() {
    let d = daemon(&[]);
    let out = d.run(&["shell", "create", "dev", "--cwd", "/tmp", "-e", "GREETING=hi"]);
    assert_eq!((text(&out.stdout).as_str(), out.status.code()), ("dev\n", Some(0)));
    let out = d.run(&["shell", "run", "dev", "--", "cd /usr && export X=1"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // Words after `--` are joined into one script.
    let out = d.run(&["shell", "run", "dev", "--", "echo", "$PWD", "$X", "$GREETING;", "exit 3"]);
    assert_eq!(text(&out.stdout), "/usr 1 hi\n");
    assert_eq!(out.status.code(), Some(3));
    let out = d.run(&["shell", "ls"]);
    let line = text(&out.stdout).lines().find(|l| l.starts_with("dev ")).unwrap().to_owned();
    assert!(line.contains("closed") && line.ends_with("/usr"), "{line}");
    let out = d.run(&["shell", "history", "dev", "--json"]);
    let h: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(h[0]["script"], "cd /usr && export X=1");
    assert_eq!(h[1]["exit_code"], 3);
    // A closed shell: a clear error and tether's own failure code.
    let out = d.run(&["shell", "run", "dev", "--", "true"]);
    assert_eq!(out.status.code(), Some(255));
    assert!(text(&out.stderr).contains("closed"), "{}", text(&out.stderr));
    assert_eq!(d.run(&["shell", "rm", "dev"]).status.code(), Some(0));
    assert!(!text(&d.run(&["shell", "ls"]).stdout).contains("dev "));
    assert_ne!(d.run(&["shell", "rm", "dev"]).status.code(), Some(0));
}

#[test]
fn shell_run_forwards_ctrl_c_and_stdin() {
    let d = daemon(&[]);
    d.run(&["shell", "create", "sh1"]);
    let out = {
        let mut child = d
            .cli(&["shell", "run", "sh1", "--", "read a; echo got:$a; wc -c"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(b"first\nabc").unwrap();
        wait_bounded(&mut child);
        child.wait_with_output().unwrap()
    };
    assert_eq!(text(&out.stdout), "got:first\n3\n");
    let mut child = d
        .cli(&["shell", "run", "sh1", "--no-stdin", "--", "x=kept; echo ready; sleep 1000; echo never"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    wait_bounded(&mut child);
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "");
    assert_eq!(child.wait().unwrap().code(), Some(130));
    // The shell lives on with its state.
    let out = d.run(&["shell", "run", "sh1", "--", "echo $x"]);
    assert_eq!(text(&out.stdout), "kept\n");
}

#[test]
fn shells_leak_no_fds_processes_or_files() {
    // A temporary directory of its own, where the shells' private
    // directories go.
    let base = std::env::temp_dir().join(format!("tether-cli-tmp-{:016x}", rand_u64()));
    std::fs::create_dir(&base).unwrap();
    let d = daemon_in(&["--ttl", "1"], Some(&base));
    let shells_dir = || -> Vec<String> {
        std::fs::read_dir(&base)
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.starts_with("tether-sh-"))
            .collect()
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = Client::connect(&d.url, &d.token).await.unwrap();
        c.shell_create(tether_client::ShellSpec::default()).await.unwrap();
    });
    std::thread::sleep(Duration::from_millis(200));
    let baseline = d.fd_count();
    let pids = rt.block_on(async {
        let c = Client::connect(&d.url, &d.token).await.unwrap();
        let mut pids = Vec::new();
        for i in 0..4 {
            let spec = tether_client::ShellSpec { name: Some(format!("leak{i}")), ..Default::default() };
            let (info, _) = c.shell_create(spec).await.unwrap();
            pids.push(info.pid as i32);
            let name = info.name;
            for s in [
                "echo a",
                "sleep 1000 & echo $!",
                "head -c 100000 /dev/zero | wc -c",
                "false",
                "(sleep 0.2; echo late) &",
            ] {
                let out = c.shell_exec(&name, s).await.unwrap();
                if s.starts_with("sleep 1000") {
                    pids.push(String::from_utf8_lossy(&out.stdout).trim().parse().unwrap());
                }
            }
            match i {
                0 => c.shell_close(&name).await.unwrap(),
                1 => {
                    c.shell_exec(&name, "exit 4").await.unwrap();
                    c.shell_close(&name).await.unwrap();
                }
                2 => {
                    // Closed while a command runs and one is queued.
                    let id = c
                        .shell_submit(
                            &name,
                            tether_client::ShellRunSpec { script: "sleep 1000".into(), ..Default::default() },
                        )
                        .await
                        .unwrap();
                    c.shell_submit(
                        &name,
                        tether_client::ShellRunSpec { script: "true".into(), ..Default::default() },
                    )
                    .await
                    .unwrap();
                    while c.status(&id).await.unwrap().state == tether_proto::CommandState::Queued {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    c.shell_close(&name).await.unwrap();
                }
                _ => c.shell_close(&name).await.unwrap(),
            }
        }
        pids
    });
    // Every process of the closed shells is gone and reaped; the fds and
    // the private directories are back to where they were.
    let deadline = Instant::now() + LIMIT;
    loop {
        let alive: Vec<i32> =
            pids.iter().copied().filter(|p| std::path::Path::new(&format!("/proc/{p}")).exists()).collect();
        let fds = d.fd_count();
        if alive.is_empty() && fds <= baseline && d.zombie_children().is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "alive {alive:?}, fds {fds} > {baseline}, zombies {:?}",
            d.zombie_children()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let dirs = shells_dir();
    assert_eq!(dirs.len(), 1, "only the live shell's directory remains: {dirs:?}");
    drop(d);
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn cp_cat_and_run_code() {
    let base = std::env::temp_dir().join(format!("tether-cli-cp-{:016x}", rand_u64()));
    let root = base.join("root");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir(root.join("in")).unwrap();
    let d = daemon(&["--files-root", root.to_str().unwrap()]);
    // A file up and down, byte for byte, mode kept.
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let local = base.join("data.bin");
    std::fs::write(&local, &data).unwrap();
    std::fs::set_permissions(&local, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    let out = d.run(&["cp", local.to_str().unwrap(), ":in/"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // Piped: no progress bar in the output.
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(root.join("in/data.bin")).unwrap(), data);
    // Into an existing directory named without a trailing slash, as cp does.
    let other = base.join("other.txt");
    std::fs::write(&other, b"other").unwrap();
    assert_eq!(d.run(&["cp", other.to_str().unwrap(), ":in"]).status.code(), Some(0));
    assert_eq!(std::fs::read(root.join("in/other.txt")).unwrap(), b"other");
    let back = base.join("back.bin");
    assert_eq!(d.run(&["cp", ":in/data.bin", back.to_str().unwrap()]).status.code(), Some(0));
    assert_eq!(std::fs::read(&back).unwrap(), data);
    let mode = |p: &std::path::Path| {
        std::os::unix::fs::PermissionsExt::mode(&std::fs::symlink_metadata(p).unwrap().permissions()) & 0o777
    };
    assert_eq!(mode(&back), 0o640);
    // A tree with a symlink, up and down.
    let tree = base.join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("sub/x"), b"x").unwrap();
    std::os::unix::fs::symlink("sub/x", tree.join("link")).unwrap();
    // (`trees` does not exist: it becomes the copy.)
    assert_eq!(d.run(&["cp", tree.to_str().unwrap(), ":trees"]).status.code(), Some(0));
    assert_eq!(std::fs::read_link(root.join("trees/link")).unwrap(), std::path::Path::new("sub/x"));
    let down = base.join("down");
    assert_eq!(d.run(&["cp", ":trees", down.to_str().unwrap()]).status.code(), Some(0));
    assert_eq!(std::fs::read(down.join("sub/x")).unwrap(), b"x");
    assert_eq!(std::fs::read_link(down.join("link")).unwrap(), std::path::Path::new("sub/x"));
    // cat, and errors with the daemon's reason.
    assert_eq!(d.run(&["cat", ":trees/sub/x"]).stdout, b"x");
    let out = d.run(&["cat", ":../secret"]);
    assert_eq!(out.status.code(), Some(255));
    assert!(text(&out.stderr).contains("outside the files root"), "{}", text(&out.stderr));
    // run-code: the code as given, arguments, exit code.
    let out = d.run(&[
        "run-code",
        "python3",
        "import sys; print(\"it's\", sys.argv[1:]); sys.exit(3)",
        "--",
        "a b",
    ]);
    assert_eq!((text(&out.stdout).as_str(), out.status.code()), ("it's ['a b']\n", Some(3)));
    let script = base.join("s.sh");
    std::fs::write(&script, "echo \"$1\"\n").unwrap();
    let out = d.run(&["run-code", "bash", "--file", script.to_str().unwrap(), "--", "from file"]);
    assert_eq!(text(&out.stdout), "from file\n");
    drop(d);
    let _ = std::fs::remove_dir_all(&base);
}

// The network perimeter (issue 13): tokens, hosts, origins, fd limits.

/// One HTTP/1.1 request on a new connection to `url`; the status code.
fn http_status(url: &str, path: &str, headers: &[(&str, &str)]) -> Option<u16> {
    let addr = url.strip_prefix("http://").unwrap();
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head = format!("GET {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).ok()?;
    let mut got = String::new();
    let _ = s.read_to_string(&mut got);
    got.split(' ').nth(1)?.parse().ok()
}

/// A daemon reading its token from `file` (no TETHER_TOKEN), its stderr
/// piped; `None` if it exited before listening.
fn serve_with_token_file(file: &std::path::Path, extra: &[&str]) -> (std::process::Child, Option<String>) {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--token-file"])
        .arg(file)
        .args(extra)
        .env_remove("TETHER_TOKEN")
        .env("TETHER_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.trim().strip_prefix("tether: listening on ").map(str::to_owned);
    (child, url)
}

fn write_token(file: &std::path::Path, token: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    // Replaced whole, as an editor or `mv` does.
    let tmp = file.with_extension("new");
    std::fs::write(&tmp, format!("{token}\n")).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).unwrap();
    std::fs::rename(&tmp, file).unwrap();
}

fn stop(mut child: std::process::Child) -> String {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    wait_bounded(&mut child);
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    err
}

/// Runs `cmd` to its end with stdin closed; a daemon that starts when it
/// should have refused is killed after 10 s (the test then fails on its
/// status).
fn output_bounded(cmd: &mut Command) -> std::process::Output {
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let t = Instant::now();
    while child.try_wait().unwrap().is_none() && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait_with_output().unwrap()
}

/// Polls `f` every 20 ms until it holds; `false` after `within`.
fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < within {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

#[test]
fn a_rewritten_token_file_revokes_the_old_token_at_once() {
    let dir = std::env::temp_dir().join(format!("tether-rotate-{:016x}", rand_u64()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("token");
    let (old, new, newer) =
        ("old-token-0123456789abcdef", "new-token-0123456789abcdef", "third-token-0123456789abc");
    write_token(&file, old, 0o600);
    let (child, url) = serve_with_token_file(&file, &[]);
    let url = url.expect("the daemon listens");
    let bearer = |t: &str| format!("Bearer {t}");
    assert_eq!(http_status(&url, "/v1/commands", &[("Authorization", &bearer(old))]), Some(200));
    // A client connected with the old token loses its connection.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let c = rt.block_on(Client::connect(&url, old)).unwrap();
    let ex = rt.block_on(c.start(argv(&["sleep", "30"]))).unwrap();
    write_token(&file, new, 0o600);
    let t = Instant::now();
    assert!(
        eventually(Duration::from_secs(5), || {
            http_status(&url, "/v1/commands", &[("Authorization", &bearer(old))]) == Some(401)
        }),
        "the old token still works 5 s after the file changed"
    );
    assert!(t.elapsed() < Duration::from_secs(3), "revoked after {:?}", t.elapsed());
    assert_eq!(http_status(&url, "/v1/commands", &[("Authorization", &bearer(new))]), Some(200));
    // Its reconnects are refused: the execution ends in an error.
    let end = rt.block_on(async { tokio::time::timeout(Duration::from_secs(20), ex.output()).await });
    assert!(matches!(end, Ok(Err(_))), "the old token's stream went on: {end:?}");
    // SIGHUP reads the file at once.
    write_token(&file, newer, 0o600);
    let _ = Command::new("kill").args(["-HUP", &child.id().to_string()]).status();
    assert!(eventually(Duration::from_secs(2), || {
        http_status(&url, "/v1/commands", &[("Authorization", &bearer(newer))]) == Some(200)
    }));
    assert_eq!(http_status(&url, "/v1/commands", &[("Authorization", &bearer(new))]), Some(401));
    let err = stop(child);
    for t in [old, new, newer] {
        assert!(!err.contains(t), "a token was logged: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn weak_tokens_and_exposed_token_files_are_refused_unless_allowed() {
    // Too short, from the environment.
    let o = output_bounded(
        Command::new(BIN).args(["serve", "--listen", "127.0.0.1:0"]).env("TETHER_TOKEN", "short"),
    );
    assert_eq!(o.status.code(), Some(255));
    let err = text(&o.stderr);
    assert!(err.contains("fewer than 16") && err.contains("--allow-weak-token"), "{err}");
    assert!(!err.contains("short\n") && !o.stdout.starts_with(b"tether: listening"));
    // A token file others can read.
    let dir = std::env::temp_dir().join(format!("tether-weak-{:016x}", rand_u64()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("token");
    write_token(&file, "long-enough-token-0123456789", 0o644);
    let (child, url) = serve_with_token_file(&file, &[]);
    assert!(url.is_none(), "served with a token file of mode 0644");
    let err = stop(child);
    assert!(err.contains("mode 0644") && err.contains("--allow-weak-token"), "{err}");
    // Allowed: served, and said loudly.
    let (child, url) = serve_with_token_file(&file, &["--allow-weak-token"]);
    assert!(url.is_some());
    let err = stop(child);
    assert!(err.contains("WARNING") && err.contains("mode 0644"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn allowed_origins_are_normalised_and_malformed_ones_refused_at_start() {
    let o = output_bounded(
        Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--allow-origin", "localhost:3000"])
            .env("TETHER_TOKEN", "cli-test-0123456789abcdef"),
    );
    assert_eq!(o.status.code(), Some(255));
    assert!(
        text(&o.stderr).contains("--allow-origin") && text(&o.stderr).contains("no scheme"),
        "{}",
        text(&o.stderr)
    );
    let o = output_bounded(
        Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--allow-host", "http://box:7070"])
            .env("TETHER_TOKEN", "cli-test-0123456789abcdef"),
    );
    assert_eq!(o.status.code(), Some(255));
    assert!(text(&o.stderr).contains("--allow-host"), "{}", text(&o.stderr));
    // A trailing slash matches the browser's Origin (it never has one).
    let d = daemon(&["--allow-origin", "http://App.Example:3000/", "--allow-host", "box.internal"]);
    let auth = format!("Bearer {}", d.token);
    let status = |extra: &[(&str, &str)]| {
        let mut h = vec![("Authorization", auth.as_str())];
        h.extend_from_slice(extra);
        http_status(&d.url, "/v1/commands", &h)
    };
    assert_eq!(status(&[("Origin", "http://app.example:3000")]), Some(200));
    assert_eq!(status(&[("Origin", "http://other.example")]), Some(403));
    // DNS rebinding: a name that is not ours is refused, even with the token.
    assert_eq!(status(&[("Host", "evil.example:7070")]), Some(403));
    assert_eq!(status(&[("Host", "box.internal:7070")]), Some(200));
    assert_eq!(status(&[("Host", "localhost")]), Some(200));
}

#[test]
fn the_daemons_token_never_reaches_a_commands_environment() {
    let d = daemon(&[]);
    let o = d.run(&["exec", "--", "env"]);
    assert_eq!(o.status.code(), Some(0));
    let env = text(&o.stdout);
    assert!(env.contains("PATH="), "{env}");
    assert!(!env.contains("TETHER_TOKEN"), "{env}");
    assert!(!env.contains(&d.token), "the token is in a command's environment");
    // Nor through a shell's.
    let o = d.run(&[
        "exec",
        "--shell",
        "echo \"[$TETHER_TOKEN]\"; cat /proc/$$/environ | tr '\\0' '\\n' | grep -c TETHER_TOKEN",
    ]);
    assert_eq!(text(&o.stdout), "[]\n0\n");
}

#[test]
fn idle_sockets_do_not_lock_clients_out_under_a_small_fd_limit() {
    // 128 open files: the daemon's own ~20 plus ~100 sockets.
    let mut cmd = Command::new("prlimit");
    cmd.args(["--nofile=128:128", "--", BIN]);
    let d = Daemon::start_cmd(cmd, BIN, &["--header-timeout", "60", "--unauthenticated-timeout", "60"], None);
    let addr = d.url.strip_prefix("http://").unwrap().to_owned();
    // Idle sockets and slow headers, twice the open-file limit.
    let mut held = Vec::new();
    for i in 0..256 {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        if i % 2 == 1 {
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n");
        }
        held.push(s);
    }
    // A client with the token still gets through, promptly.
    let mut child = d
        .cli(&["exec", "--", "echo", "got through"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while child.try_wait().unwrap().is_none() && t.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(20));
    }
    if child.try_wait().unwrap().is_none() {
        let _ = child.kill();
        panic!("the client was locked out for 15 s by {} idle sockets", held.len());
    }
    let o = child.wait_with_output().unwrap();
    assert_eq!(text(&o.stdout), "got through\n", "{}", text(&o.stderr));
    drop(held);
}

/// One `tether cp` case of [`cp_follows_cp_r_and_docker_cp_both_ways`]:
/// source and destination relative to the case's directories (a leading
/// `:` is the daemon's side), and what must be true afterwards.
struct CpCase {
    what: &'static str,
    from: &'static str,
    to: &'static str,
    /// `None`: the copy must fail (exit 255) and change nothing.
    /// `Some(files)`: these files (relative to the destination side's case
    /// directory) must exist with these contents.
    expect: Option<&'static [(&'static str, &'static str)]>,
    /// Paths that must not exist afterwards (relative, destination side).
    absent: &'static [&'static str],
}

/// `tether cp` follows `cp -r`, `scp -r` and `docker cp`, both ways: a
/// missing destination becomes the copy, an existing directory receives the
/// source inside it, a trailing `/.` copies a directory's contents, a
/// directory never replaces a file, and a missing parent or a missing
/// directory named with a trailing `/` is an error that creates nothing.
/// (Found as a new user would: `tether cp ./tree :/srv/new` made
/// `/srv/new/tree/...`.)
#[test]
fn cp_follows_cp_r_and_docker_cp_both_ways() {
    const TREE: &[(&str, &str)] = &[("a", "A"), ("sub/b", "B")];
    let cases: &[CpCase] = &[
        CpCase {
            what: "dir to a missing path: becomes the copy",
            from: "tree",
            to: "new",
            expect: Some(&[("new/a", "A"), ("new/sub/b", "B")]),
            absent: &["new/tree"],
        },
        CpCase {
            what: "dir to a missing path/: becomes the copy",
            from: "tree",
            to: "new/",
            expect: Some(&[("new/a", "A"), ("new/sub/b", "B")]),
            absent: &["new/tree"],
        },
        CpCase {
            what: "dir into an existing dir",
            from: "tree",
            to: "exist",
            expect: Some(&[("exist/tree/a", "A"), ("exist/tree/sub/b", "B"), ("exist/old", "old")]),
            absent: &["exist/a"],
        },
        CpCase {
            what: "dir into an existing dir/",
            from: "tree/",
            to: "exist/",
            expect: Some(&[("exist/tree/a", "A"), ("exist/old", "old")]),
            absent: &["exist/a"],
        },
        CpCase {
            what: "dir/. into an existing dir: contents",
            from: "tree/.",
            to: "exist",
            expect: Some(&[("exist/a", "A"), ("exist/sub/b", "B"), ("exist/old", "old")]),
            absent: &["exist/tree"],
        },
        CpCase {
            what: "dir/. to a missing path: contents",
            from: "tree/.",
            to: "new",
            expect: Some(&[("new/a", "A"), ("new/sub/b", "B")]),
            absent: &["new/tree"],
        },
        CpCase { what: "dir onto a file: refused", from: "tree", to: "file.txt", expect: None, absent: &[] },
        CpCase {
            what: "dir below a missing parent: refused",
            from: "tree",
            to: "missing/deeper",
            expect: None,
            absent: &["missing"],
        },
        CpCase {
            what: "file into an existing dir",
            from: "f.txt",
            to: "exist",
            expect: Some(&[("exist/f.txt", "F"), ("exist/old", "old")]),
            absent: &[],
        },
        CpCase {
            what: "file to a missing path",
            from: "f.txt",
            to: "g.txt",
            expect: Some(&[("g.txt", "F")]),
            absent: &[],
        },
        CpCase {
            what: "file onto a file: replaced",
            from: "f.txt",
            to: "file.txt",
            expect: Some(&[("file.txt", "F")]),
            absent: &[],
        },
        CpCase {
            what: "file to a missing dir/: refused",
            from: "f.txt",
            to: "nodir/",
            expect: None,
            absent: &["nodir"],
        },
        CpCase {
            what: "file below a missing parent: refused",
            from: "f.txt",
            to: "missing/g.txt",
            expect: None,
            absent: &["missing"],
        },
        CpCase { what: "file/.: refused", from: "f.txt/.", to: "new", expect: None, absent: &["new"] },
    ];
    let base = std::env::temp_dir().join(format!("tether-cli-cp-table-{:016x}", rand_u64()));
    let root = base.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let d = daemon(&["--files-root", root.to_str().unwrap()]);
    // The sources, on both sides.
    for side in [&root, &base] {
        for (p, c) in TREE {
            let p = side.join("src/tree").join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, c).unwrap();
        }
        std::fs::write(side.join("src/f.txt"), "F").unwrap();
    }
    let mut failed = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        for up in [true, false] {
            // Each case in a directory of its own on each side, holding an
            // existing directory (with a file) and an existing file.
            let case = format!("case{i}-{}", if up { "up" } else { "down" });
            for side in [&root, &base] {
                std::fs::create_dir_all(side.join(&case).join("exist")).unwrap();
                std::fs::write(side.join(&case).join("exist/old"), "old").unwrap();
                std::fs::write(side.join(&case).join("file.txt"), "old").unwrap();
            }
            let (src_side, dst_side) = if up { (&base, &root) } else { (&root, &base) };
            let local_src = format!("{}/src/{}", src_side.display(), c.from);
            let local_dst = format!("{}/{case}/{}", dst_side.display(), c.to);
            let (from, to) = if up {
                (local_src, format!(":{case}/{}", c.to))
            } else {
                (format!(":src/{}", c.from), local_dst)
            };
            let out = d.run(&["cp", &from, &to]);
            let dir = dst_side.join(&case);
            let mut problems = Vec::new();
            match c.expect {
                None => {
                    if out.status.code() != Some(255) {
                        problems.push(format!("expected a refusal, got {:?}", out.status.code()));
                    }
                    if std::fs::read(dir.join("file.txt")).ok().as_deref() != Some(b"old".as_slice()) {
                        problems.push("file.txt changed".into());
                    }
                    let mut names: Vec<_> =
                        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
                    names.sort();
                    if names != ["exist", "file.txt"] {
                        problems.push(format!("the destination changed: {names:?}"));
                    }
                }
                Some(files) => {
                    if out.status.code() != Some(0) {
                        problems.push(format!("exit {:?}: {}", out.status.code(), text(&out.stderr)));
                    }
                    for (p, content) in files {
                        let got = std::fs::read(dir.join(p)).ok();
                        if got.as_deref() != Some(content.as_bytes()) {
                            problems.push(format!("{p}: {:?}", got.map(|g| text(&g))));
                        }
                    }
                }
            }
            for p in c.absent {
                if std::fs::symlink_metadata(dir.join(p)).is_ok() {
                    problems.push(format!("{p} exists"));
                }
            }
            if !problems.is_empty() {
                failed.push(format!(
                    "{} ({}: cp {from} {to}): {}",
                    c.what,
                    if up { "up" } else { "down" },
                    problems.join("; ")
                ));
            }
        }
    }
    drop(d);
    let _ = std::fs::remove_dir_all(&base);
    assert!(
        failed.is_empty(),
        "{} of {} cases failed:\n{}",
        failed.len(),
        cases.len() * 2,
        failed.join("\n")
    );
}

/// `--node-id NAME` (default: a dot-free --sandbox-id) puts the daemon's
/// name in front of every command id, so a router in front of many daemons
/// can tell which one holds a command; the ids work like any other.
#[test]
fn node_ids_name_the_daemon_in_command_ids() {
    let d = daemon(&["--node-id", "east-1"]);
    let o = d.run(&["exec", "--detach", "--", "sh", "-c", "echo from-east; exit 4"]);
    let id = text(&o.stdout).trim().to_owned();
    assert!(id.starts_with("east-1.c-") && id.len() == "east-1.c-".len() + 16, "{id}");
    assert_eq!(d.run(&["wait", &id]).status.code(), Some(4));
    assert_eq!(text(&d.run(&["logs", &id]).stdout), "from-east\n");
    let o = d.run(&["shell", "create", "s"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let o = d.run(&["shell", "run", "--detach", "s", "--", "true"]);
    assert!(text(&o.stdout).trim().starts_with("east-1.c-"), "{}", text(&o.stdout));
    drop(d);
    let d = daemon(&["--sandbox-id", "sbx_7"]);
    let id = text(&d.run(&["exec", "--detach", "--", "true"]).stdout).trim().to_owned();
    assert!(id.starts_with("sbx_7.c-"), "{id}");
    drop(d);
    // A sandbox id with a dot is no node id: plain ids.
    let d = daemon(&["--sandbox-id", "a.b"]);
    let id = text(&d.run(&["exec", "--detach", "--", "true"]).stdout).trim().to_owned();
    assert!(id.starts_with("c-"), "{id}");
    drop(d);
    let o = output_bounded(
        Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--node-id", "a.b"])
            .env("TETHER_TOKEN", "cli-test-0123456789abcdef"),
    );
    assert_eq!(o.status.code(), Some(255));
    assert!(text(&o.stderr).contains("--node-id \"a.b\""), "{}", text(&o.stderr));
}

/// Every log line about a command names it (`command`, in the line's
/// fields or in one of its spans), in JSON logs; human logs carry no
/// colour codes when stderr is not a terminal.
#[test]
fn log_lines_name_their_command_and_piped_logs_have_no_colour() {
    let dir = std::env::temp_dir().join(format!("tether-cli-logs-{:016x}", rand_u64()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("token");
    let token = "logs-test-0123456789abcdef";
    write_token(&file, token, 0o600);
    let cli = |url: &str, args: &[&str]| {
        output_bounded(Command::new(BIN).args(["--url", url]).args(args).env("TETHER_TOKEN", token))
    };
    // JSON: a mixed workload, then every line is checked.
    let (child, url) = serve_with_token_file(&file, &["--log-format", "json", "--ring-bytes", "65536"]);
    let url = url.expect("the daemon listens");
    let mut ids = Vec::new();
    assert_eq!(cli(&url, &["exec", "--", "true"]).status.code(), Some(0));
    // Output past the ring, then an attach from byte 0: a gap.
    let gap = text(&cli(&url, &["exec", "--detach", "--", "sh", "-c", "head -c 300000 /dev/zero"]).stdout)
        .trim()
        .to_owned();
    assert_eq!(cli(&url, &["wait", &gap]).status.code(), Some(0));
    assert_eq!(cli(&url, &["attach", &gap]).status.code(), Some(0));
    let long = text(&cli(&url, &["exec", "--detach", "--", "sleep", "30"]).stdout).trim().to_owned();
    assert_eq!(cli(&url, &["kill", &long]).status.code(), Some(0));
    ids.push(long);
    assert_eq!(cli(&url, &["shell", "create", "s"]).status.code(), Some(0));
    assert_eq!(cli(&url, &["shell", "run", "s", "--", "true"]).status.code(), Some(0));
    let err = stop(child);
    let mut seen = std::collections::BTreeSet::new();
    let mut unnamed = Vec::new();
    for line in err.lines().filter(|l| l.starts_with('{')) {
        let j: serde_json::Value = serde_json::from_str(line).unwrap();
        let msg = j["fields"]["message"].as_str().unwrap_or_default().to_owned();
        let target = j["target"].as_str().unwrap_or_default();
        let about_a_command = target.starts_with("tether_exec::command")
            || target.starts_with("tether_server::conn::attach")
            || [
                "command started",
                "started",
                "kill requested",
                "shell command queued",
                "queued in shell",
                "command finished",
            ]
            .contains(&msg.as_str());
        if !about_a_command {
            continue;
        }
        seen.insert(msg.clone());
        let named = j["fields"]["command"].as_str().is_some()
            || j["spans"].as_array().is_some_and(|s| s.iter().any(|s| s["command"].as_str().is_some()));
        if !named {
            unnamed.push(line.to_owned());
        }
    }
    for m in ["command started", "started", "kill requested", "shell command queued", "command finished"] {
        assert!(seen.contains(m), "no {m:?} line in:\n{err}");
    }
    assert!(seen.iter().any(|m| m.contains("gap")), "no gap line in:\n{err}");
    assert!(unnamed.is_empty(), "lines about a command without its id:\n{}", unnamed.join("\n"));
    assert!(err.contains(&ids[0]), "{err}");
    // Human, on a pipe: no escape codes at all.
    let (child, url) = serve_with_token_file(&file, &[]);
    assert_eq!(cli(&url.unwrap(), &["exec", "--", "true"]).status.code(), Some(0));
    let err = stop(child);
    assert!(err.contains("command finished"), "{err}");
    assert!(!err.contains('\x1b'), "colour codes on a pipe: {err:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `tether serve` takes its settings from flags, then `TETHER_*`
/// variables, then the `--config` TOML file (keys named as the flags),
/// then defaults; `--print-config` shows the result and where each value
/// came from, never the token; unknown keys and bad values are refused
/// with the file's name.
#[test]
fn settings_come_from_flags_then_environment_then_the_config_file() {
    let dir = std::env::temp_dir().join(format!("tether-cli-config-{:016x}", rand_u64()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("tether.toml");
    std::fs::write(
        &file,
        "# a comment\nnode-id = \"from-file\"\nmax-commands = 1\nttl = 77\nallow-host = [\"a.example\", \"b.example\"]\n\
         keep-commands-on-shutdown = true\nping-interval = 5.5\n",
    )
    .unwrap();
    let token = "config-test-0123456789abcdef-secret";
    let serve = |args: &[&str], env: &[(&str, &str)]| {
        let mut c = Command::new(BIN);
        c.args(["serve", "--config"]).arg(&file).args(args).env("TETHER_TOKEN", token);
        for (k, v) in env {
            c.env(k, v);
        }
        output_bounded(&mut c)
    };
    let o = serve(
        &["--print-config", "--ttl", "5"],
        &[("TETHER_PING_INTERVAL", "2"), ("TETHER_NODE_ID", "from-env")],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let printed = text(&o.stdout);
    for line in [
        "node-id = \"from-env\"  # environment",
        "max-commands = 1  # file",
        "ttl = 5  # flag",
        "ping-interval = 2  # environment",
        "allow-host = [\"a.example\", \"b.example\"]  # file",
        "keep-commands-on-shutdown = true  # file",
        "idle-timeout = 300  # default",
        "token = \"<redacted>\"  # environment",
    ] {
        assert!(printed.lines().any(|l| l == line), "no {line:?} in:\n{printed}");
    }
    assert!(!printed.contains(token) && !text(&o.stderr).contains(token), "the token was printed");
    // The output is itself a valid configuration file.
    let again = dir.join("again.toml");
    let settings: String = printed
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("token "))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&again, settings).unwrap();
    let o = output_bounded(Command::new(BIN).args(["serve", "--print-config", "--config"]).arg(&again));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("node-id = \"from-env\"  # file"), "{}", text(&o.stdout));
    // A real daemon with the file: its settings hold.
    let d = daemon(&["--config", file.to_str().unwrap()]);
    let id = text(&d.run(&["exec", "--detach", "--", "sleep", "30"]).stdout).trim().to_owned();
    assert!(id.starts_with("from-file.c-"), "{id}");
    let o = d.run(&["exec", "--", "true"]);
    assert_ne!(o.status.code(), Some(0), "max-commands = 1 from the file");
    assert!(text(&o.stderr).contains("commands"), "{}", text(&o.stderr));
    drop(d);
    // Refusals: exit 2, the file named, the key and a hint.
    let refused = |content: &str, needles: &[&str]| {
        std::fs::write(&file, content).unwrap();
        let o = serve(&["--print-config"], &[]);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{content:?}: {err}");
        assert!(err.contains(file.to_str().unwrap()), "{content:?}: {err}");
        for n in needles {
            assert!(err.contains(n), "{content:?}: no {n:?} in {err}");
        }
        assert!(o.stdout.is_empty(), "{content:?}: printed {}", text(&o.stdout));
    };
    refused("lisen = \"127.0.0.1:1\"\n", &["unknown key `lisen`", "did you mean `listen`"]);
    refused("max_commands = 3\n", &["unknown key `max_commands`", "did you mean `max-commands`"]);
    refused("token = \"abc\"\n", &["token-file"]);
    refused("listen = [\"127.0.0.1:1\"]\n", &["`listen`: takes one value"]);
    refused("listen = 7070\n", &["7070", "--listen"]);
    refused("[serve]\nlisten = \"x\"\n", &["`serve`"]);
    refused("listen = \"unterminated\n", &["TOML", "line 1"]);
    let o = output_bounded(Command::new(BIN).args([
        "serve",
        "--print-config",
        "--config",
        "/nonexistent/t.toml",
    ]));
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("/nonexistent/t.toml"), "{}", text(&o.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}

/// One HTTP/1.1 GET on a new connection: the status and the body.
fn http_get(addr: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head = format!("GET {path} HTTP/1.1\r\nConnection: close\r\nHost: {addr}\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    let mut got = String::new();
    s.read_to_string(&mut got).unwrap();
    let (head, body) = got.split_once("\r\n\r\n").unwrap();
    (head.split(' ').nth(1).unwrap().parse().unwrap(), body.to_owned())
}

/// A scrape, checked by Prometheus' own `promtool check metrics` and
/// parsed by a Prometheus text-format parser: each sample's value by its
/// name and labels (`name{k="v",...}` with the labels sorted).
fn scrape(addr: &str, headers: &[(&str, &str)]) -> std::collections::BTreeMap<String, f64> {
    let (status, body) = http_get(addr, "/metrics", headers);
    assert_eq!(status, 200, "{body}");
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (scripts/test-all.sh installs Debian's prometheus)");
    promtool.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    wait_bounded(&mut promtool);
    let o = promtool.wait_with_output().unwrap();
    assert!(o.status.success(), "promtool: {}{}\n{body}", text(&o.stdout), text(&o.stderr));
    let lines = body.lines().map(|l| Ok(l.to_owned()));
    let parsed = prometheus_parse::Scrape::parse(lines).unwrap();
    let mut out = std::collections::BTreeMap::new();
    for s in parsed.samples {
        let mut labels: Vec<_> = s.labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        labels.sort();
        let key = if labels.is_empty() {
            s.metric.clone()
        } else {
            format!("{}{{{}}}", s.metric, labels.join(","))
        };
        let v = match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(h) => {
                out.insert(format!("{}_count", s.metric), h.iter().map(|b| b.count).fold(0.0, f64::max));
                continue;
            }
            prometheus_parse::Value::Summary(_) => continue,
        };
        out.insert(key, v);
    }
    out
}

/// `/metrics`: Prometheus text behind the token (or without it on
/// `--metrics-listen`, which serves nothing else), valid for promtool, and
/// the values move as commands run, clients attach, fall behind, get
/// refused, and the daemon restarts.
#[test]
fn metrics_scrape_as_prometheus_text_and_move_as_commands_run() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let maddr = free.local_addr().unwrap().to_string();
    drop(free);
    let d = daemon(&["--metrics-listen", &maddr, "--ring-bytes", "65536"]);
    let addr = d.url.strip_prefix("http://").unwrap().to_owned();
    let auth = format!("Bearer {}", d.token);
    assert_eq!(http_get(&addr, "/metrics", &[]).0, 401);
    assert_eq!(http_get(&maddr, "/v1/commands", &[]).0, 404, "the metrics listener serves metrics alone");
    let get = |m: &std::collections::BTreeMap<String, f64>, k: &str| m.get(k).copied().unwrap_or(0.0);
    let before = scrape(&addr, &[("Authorization", &auth)]);
    assert_eq!(get(&before, "tether_restarts_total"), 0.0);
    assert_eq!(get(&before, "tether_memory_limit_bytes"), 4294967296.0);
    // A command with 50000 bytes of output (less than a pipe holds: the
    // output is read once the CLI has exited).
    let o = d.run(&["exec", "--", "sh", "-c", "head -c 50000 /dev/zero"]);
    assert_eq!(o.stdout.len(), 50_000);
    // One held running with a client attached, and a wrong token.
    let long = text(&d.run(&["exec", "--detach", "--", "sleep", "30"]).stdout).trim().to_owned();
    let mut viewer = d.cli(&["attach", &long]).stdin(Stdio::null()).stdout(Stdio::null()).spawn().unwrap();
    assert_eq!(http_get(&addr, "/v1/commands", &[("Authorization", "Bearer wrong")]).0, 401);
    let attached = |m: &std::collections::BTreeMap<String, f64>| get(m, "tether_attached_clients") >= 1.0;
    let mut during = scrape(&maddr, &[]);
    let t = Instant::now();
    while !attached(&during) && t.elapsed() < LIMIT {
        std::thread::sleep(Duration::from_millis(20));
        during = scrape(&maddr, &[]);
    }
    assert!(attached(&during), "{during:?}");
    let _ = viewer.kill();
    let _ = viewer.wait();
    let delta = |k: &str| get(&during, k) - get(&before, k);
    assert_eq!(delta("tether_commands_started_total{kind=\"process\"}"), 2.0, "{during:?}");
    assert_eq!(delta("tether_spawn_seconds_count"), 2.0, "{during:?}");
    assert!(delta("tether_output_bytes_total{stream=\"stdout\"}") >= 50_000.0, "{during:?}");
    assert_eq!(get(&during, "tether_commands{state=\"running\"}"), 1.0, "{during:?}");
    assert!(get(&during, "tether_commands{state=\"exited\"}") >= 1.0, "{during:?}");
    assert!(delta("tether_auth_rejected_total{reason=\"token\"}") >= 1.0, "the 401: {during:?}");
    assert!(get(&during, "tether_websockets") >= 1.0, "the viewer's: {during:?}");
    assert!(get(&during, "tether_connections_total") >= 4.0, "{during:?}");
    assert!(delta("tether_attaches_total{from=\"start\"}") >= 2.0, "{during:?}");
    assert!(get(&during, "tether_memory_committed_bytes") > 0.0, "{during:?}");
    // Output past the ring, then a reader from byte 0: a gap.
    let gap = text(&d.run(&["exec", "--detach", "--", "sh", "-c", "head -c 300000 /dev/zero"]).stdout)
        .trim()
        .to_owned();
    assert_eq!(d.run(&["wait", &gap]).status.code(), Some(0));
    let mut logs = d.cli(&["logs", &gap]).stdin(Stdio::null()).stdout(Stdio::null()).spawn().unwrap();
    wait_bounded(&mut logs);
    let after = scrape(&addr, &[("Authorization", &auth)]);
    assert!(get(&after, "tether_gaps_total") > get(&during, "tether_gaps_total"), "{after:?}");
    assert!(get(&after, "tether_gap_bytes_total") >= 200_000.0, "{after:?}");
    // A restart in place: counted, and the metrics listener is back.
    assert!(Command::new("kill").args(["-USR2", &d.pid().to_string()]).status().unwrap().success());
    d.wait_lines(2);
    let restarted = scrape(&maddr, &[]);
    assert_eq!(get(&restarted, "tether_restarts_total"), 1.0, "{restarted:?}");
    assert_eq!(get(&restarted, "tether_commands{state=\"running\"}"), 1.0, "the command was handed over");
}

/// A CA and a certificate it signed for `localhost` and 127.0.0.1, made
/// with openssl in `dir`: (ca.pem, cert.pem, key.pem).
fn make_certs(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let openssl = |args: &[&str]| {
        let o = output_bounded(Command::new("openssl").current_dir(dir).args(args));
        assert!(o.status.success(), "openssl {args:?}: {}", text(&o.stderr));
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    // A subject of its own: two test CAs must not look like one.
    let subject = format!("/CN=tether test CA {:016x}", rand_u64());
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", &subject],
        ]
        .concat(),
    );
    openssl(
        &[&["req"][..], &ec, &["-keyout", "key.pem", "-out", "leaf.csr", "-subj", "/CN=localhost"]].concat(),
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "cert.pem",
    ]);
    (dir.join("ca.pem"), dir.join("cert.pem"), dir.join("key.pem"))
}

/// `--tls-cert`/`--tls-key`: HTTPS and WSS for the CLI (WebSocket and
/// HTTP routes) with `--ca-cert`; an unknown issuer is refused; SIGHUP
/// takes a renewed pair (a broken one is refused and the old one kept);
/// and no client sends its token in clear text to another host unless
/// told to.
#[test]
fn tls_serves_https_and_wss_reloads_on_sighup_and_tokens_stay_off_plain_http() {
    let base = std::env::temp_dir().join(format!("tether-cli-tls-{:016x}", rand_u64()));
    let (ca1, cert1, key1) = make_certs(&base.join("one"));
    let (ca2, cert2, key2) = make_certs(&base.join("two"));
    let (cert, key) = (base.join("cert.pem"), base.join("key.pem"));
    std::fs::copy(&cert1, &cert).unwrap();
    std::fs::copy(&key1, &key).unwrap();
    let d = daemon(&["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()]);
    assert!(d.url.starts_with("https://127.0.0.1:"), "{}", d.url);
    let run = |ca: &std::path::Path, args: &[&str]| {
        let mut c = d.cli(args);
        c.env("TETHER_CA_CERT", ca);
        output_bounded(&mut c)
    };
    let o = run(&ca1, &["exec", "--", "echo", "over tls"]);
    assert_eq!((o.status.code(), text(&o.stdout).as_str()), (Some(0), "over tls\n"), "{}", text(&o.stderr));
    let file = base.join("up.txt");
    std::fs::write(&file, "up").unwrap();
    let o = run(&ca1, &["cp", file.to_str().unwrap(), &format!(":{}", base.join("down.txt").display())]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(std::fs::read(base.join("down.txt")).unwrap(), b"up");
    // Another CA: refused, by the WebSocket and by the HTTP routes.
    let o = run(&ca2, &["exec", "--", "true"]);
    assert_eq!(o.status.code(), Some(255));
    assert!(text(&o.stderr).contains("UnknownIssuer"), "{}", text(&o.stderr));
    assert_eq!(run(&ca2, &["cat", &format!(":{}", file.display())]).status.code(), Some(255));
    // Plain HTTP to the TLS port gets no answer.
    assert_eq!(http_status(&d.url.replace("https://", "http://"), "/healthz", &[]), None);
    // A renewed pair, then SIGHUP: new handshakes use it.
    std::fs::copy(&cert2, &cert).unwrap();
    std::fs::copy(&key2, &key).unwrap();
    let hup =
        || assert!(Command::new("kill").args(["-HUP", &d.pid().to_string()]).status().unwrap().success());
    hup();
    assert!(
        eventually(LIMIT, || run(&ca2, &["exec", "--", "true"]).status.code() == Some(0)),
        "the renewed certificate was not taken"
    );
    assert_eq!(run(&ca1, &["exec", "--", "true"]).status.code(), Some(255), "the old CA no longer matches");
    // A broken pair: refused, the current one kept.
    std::fs::write(&cert, "not a certificate\n").unwrap();
    hup();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(run(&ca2, &["exec", "--", "true"]).status.code(), Some(0));
    drop(d);
    // Refused at start: a key that does not exist.
    let o = output_bounded(
        Command::new(BIN)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--tls-cert",
                cert2.to_str().unwrap(),
                "--tls-key",
                "/nonexistent.pem",
            ])
            .env("TETHER_TOKEN", "cli-test-0123456789abcdef"),
    );
    assert_eq!(o.status.code(), Some(255));
    assert!(text(&o.stderr).contains("/nonexistent.pem"), "{}", text(&o.stderr));
    // The token and plain HTTP: only to this host, unless allowed. (An
    // IPv4-mapped IPv6 address of 127.0.0.1 reaches a plain daemon here,
    // but is not a loopback address by name.)
    let d = daemon(&[]);
    let port = d.url.rsplit(':').next().unwrap().to_owned();
    let far = format!("http://[::ffff:127.0.0.1]:{port}");
    for args in [&["exec", "--", "true"][..], &["cat", "/etc/hostname"][..]] {
        let o = output_bounded(d.cli(args).env("TETHER_URL", &far));
        assert_eq!(o.status.code(), Some(255), "{args:?}");
        assert!(
            text(&o.stderr).contains("refusing to send the token over plain HTTP"),
            "{}",
            text(&o.stderr)
        );
        let o = output_bounded(d.cli(args).env("TETHER_URL", &far).env("TETHER_ALLOW_INSECURE_TOKEN", "1"));
        assert!(!text(&o.stderr).contains("refusing"), "{args:?}: {}", text(&o.stderr));
    }
    assert_eq!(d.run(&["exec", "--", "true"]).status.code(), Some(0), "127.0.0.1 is this host");
    let _ = std::fs::remove_dir_all(&base);
}
