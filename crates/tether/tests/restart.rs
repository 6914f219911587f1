//! Graceful restart: SIGUSR2 makes `tether serve` re-execute its binary in
//! the same process, handing over its commands and listening socket. A
//! real daemon, real commands, the real Rust client across the restart.
#![allow(missing_docs, clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use tether_client::{Client, ExecEvent, StartSpec};

mod common;

use common::{BIN, client, daemon, daemon_from, shell, text};
use tether_testkit::{Daemon, LIMIT, rand_u64};

fn usr2(d: &Daemon) {
    assert!(Command::new("kill").args(["-USR2", &d.pid().to_string()]).status().unwrap().success());
}

/// Reads an execution to its exit (bounded), restarting the daemon once
/// `restart_after` stdout bytes have arrived; a gap fails the test.
async fn through_a_restart(
    d: &Daemon,
    ex: &mut tether_client::Execution,
    restart_after: usize,
) -> (Vec<u8>, Vec<u8>, tether_proto::ExitStatus) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut restarted = false;
    let status = tokio::time::timeout(LIMIT, async {
        loop {
            match ex.next().await.unwrap().unwrap() {
                ExecEvent::Stdout(b) => {
                    out.extend_from_slice(&b);
                    if !restarted && out.len() > restart_after {
                        restarted = true;
                        usr2(d);
                    }
                }
                ExecEvent::Stderr(b) => err.extend_from_slice(&b),
                ExecEvent::Gap { from, to, .. } => panic!("output lost across the restart: [{from}, {to})"),
                ExecEvent::Exit(s) => return s,
                _ => {}
            }
        }
    })
    .await
    .expect("the command finished in time");
    assert!(restarted, "the stream ended before the restart");
    (out, err, status)
}

/// Attaches from the start and reads to the exit (bounded).
async fn finish(c: &Client, id: &tether_proto::CommandId) -> tether_client::Output {
    let ex = c.attach(id, [0, 0]).await.unwrap();
    tokio::time::timeout(LIMIT, ex.output()).await.expect("finished in time").unwrap()
}

/// The fds of a process, as link targets (sockets and pipes by inode).
/// An fd the daemon closes between the listing and its readlink is left
/// out: the daemon is live while we look.
fn fds(pid: i32) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let target = std::fs::read_link(e.path()).ok()?;
            Some(format!("{} -> {}", e.file_name().to_string_lossy(), target.display()))
        })
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_continues_byte_exact_across_a_restart() {
    let d = daemon(&[]);
    let before = fds(d.pid());
    let c = client(&d).await;
    // About 3.9 MB over about 2 s: the restart lands mid-stream.
    let script = "for i in $(seq 0 39); do seq $((i*50000)) $((i*50000+49999)); sleep 0.05; done; \
                  echo done >&2; exit 5";
    let mut ex = c.start(shell(script)).await.unwrap();
    let pid = ex.pid();
    let (out, err, status) = through_a_restart(&d, &mut ex, 200_000).await;
    // The daemon re-executed itself: the same process, a second start.
    let lines = d.wait_lines(2);
    assert_eq!(lines[1], lines[0], "the same address after the restart");
    let want: String = (0..2_000_000).map(|i| format!("{i}\n")).collect();
    assert!(
        out.len() == want.len() && out == want.as_bytes(),
        "stdout differs ({} of {} bytes)",
        out.len(),
        want.len()
    );
    assert_eq!(text(&err), "done\n");
    assert_eq!(status.code, Some(5));
    let info = c.status(&ex.id().clone()).await.unwrap();
    assert_eq!(Some(info.pid), pid);
    // The handed-over rings were copied out of the state's mapping, which
    // is gone: each ring's memory leaves with its command.
    let unmapped = async {
        while std::fs::read_to_string(format!("/proc/{}/maps", d.pid())).unwrap().contains("tether-handover")
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), unmapped).await.expect("the handover mapping is released");
    drop(ex);
    drop(c);
    // Nothing leaked across the exec: no more fds once the client is gone
    // (fewer, if the daemon inherited any: those were close-on-exec).
    let settled = async {
        loop {
            let now = fds(d.pid());
            if now.len() <= before.len() {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let after = tokio::time::timeout(Duration::from_secs(10), settled).await.unwrap_or_else(|_| fds(d.pid()));
    assert!(after.len() <= before.len(), "before: {before:#?}\nafter: {after:#?}");
    assert!(d.zombie_children().is_empty());
}

/// A paced stream (what `exec` and the SDKs' buffered runs use) from a
/// producer far faster than the restart: its pacing must survive the
/// handover, holding the command at what its client acknowledged until the
/// client re-attaches, or the ring overruns and bytes are lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paced_stream_loses_nothing_across_a_restart() {
    let d = daemon(&[]);
    let c = client(&d).await;
    // 13.9 MB as fast as `seq` writes: many rings' worth.
    let mut spec = shell("seq 0 1999999");
    spec.pace = true;
    let mut ex = c.start(spec).await.unwrap();
    let (out, _, status) = through_a_restart(&d, &mut ex, 1_000_000).await;
    d.wait_lines(2);
    let want: String = (0..2_000_000).map(|i| format!("{i}\n")).collect();
    assert!(out == want.as_bytes(), "stdout differs ({} of {} bytes)", out.len(), want.len());
    assert_eq!(status.code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_in_every_state_survive_two_restarts() {
    let d = daemon(&[]);
    let c = client(&d).await;
    // Finished, held for its TTL.
    let (finished, _) = c.start_detached(shell("echo finished; exit 3")).await.unwrap();
    assert_eq!(finish(&c, &finished).await.status.code, Some(3));
    // Running, reading stdin.
    let cat = StartSpec { argv: vec!["cat".into()], close_stdin: false, ..StartSpec::default() };
    let (reader, reader_pid) = c.start_detached(cat).await.unwrap();
    c.write_stdin(&reader, Bytes::from_static(b"one\n")).await.unwrap();
    // Running with a timeout that falls after the restarts.
    let mut sleeper = shell("sleep 60");
    sleeper.timeout_ms = Some(2500);
    let (sleeper, _) = c.start_detached(sleeper).await.unwrap();
    // A terminal.
    let mut pty =
        StartSpec { argv: vec!["bash".into(), "--norc".into(), "-i".into()], ..StartSpec::default() };
    pty.pty = Some(tether_proto::PtySpec::default());
    pty.close_stdin = false;
    let (term, _) = c.start_detached(pty).await.unwrap();

    for n in 2..=3 {
        usr2(&d);
        d.wait_lines(n);
    }
    // The client reconnected by itself; every command is still there.
    let list = tokio::time::timeout(LIMIT, c.list()).await.unwrap().unwrap();
    for id in [&finished, &reader, &sleeper, &term] {
        assert!(list.iter().any(|i| &i.command == id), "{id:?} missing after the restarts: {list:#?}");
    }
    let st = c.status(&finished).await.unwrap();
    assert_eq!(st.exit.unwrap().code, Some(3));
    assert_eq!(text(&finish(&c, &finished).await.stdout), "finished\n");
    assert_eq!(c.status(&reader).await.unwrap().pid, reader_pid);
    c.write_stdin(&reader, Bytes::from_static(b"two\n")).await.unwrap();
    c.close_stdin(&reader).await.unwrap();
    let o = finish(&c, &reader).await;
    assert_eq!((text(&o.stdout).as_str(), o.status.code), ("one\ntwo\n", Some(0)));
    assert_eq!(finish(&c, &sleeper).await.status.reason, tether_proto::ExitReason::TimedOut);
    c.write_stdin(&term, Bytes::from_static(b"exit 9\n")).await.unwrap();
    assert_eq!(finish(&c, &term).await.status.code, Some(9));
}

/// Enough held output that the rings are written ahead of the handover
/// (past 8 MiB) and then served from the written copies: every byte
/// crosses a restart and a failed exec, and bytes written while the
/// rings were written ahead are carried too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rings_written_ahead_cross_a_restart_and_a_failed_exec_byte_exact() {
    let (dir, bin, d) = daemon_on_a_copy("tether-ahead");
    let c = client(&d).await;
    // 12 x 1.29 MB of `seq`, each held whole, then waiting for a line; and
    // one that keeps writing through the restarts.
    let mut ids = Vec::new();
    for _ in 0..12 {
        let spec =
            StartSpec { ring_bytes: Some(2 << 20), ..shell("seq 1 200000; read line; echo \"got $line\"") };
        ids.push(c.start_detached(spec).await.unwrap().0);
    }
    let busy =
        StartSpec { ring_bytes: Some(4 << 20), ..shell("seq 1 300000 | while read n; do echo $n; done") };
    let (busy, _) = c.start_detached(busy).await.unwrap();
    let full = async {
        loop {
            let list = c.list().await.unwrap();
            if ids.iter().all(|id| list.iter().any(|i| &i.command == id && i.stdout.end >= 1_288_895)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(LIMIT, full).await.expect("every command wrote its output");
    usr2(&d);
    d.wait_lines(2);
    // An exec that fails (the binary gone): the old process resumes with
    // the rings it had taken from the written copies.
    let c = client(&d).await;
    replace_with_script(&bin, &vanishing());
    usr2(&d);
    d.wait_lines(3);
    let c2 = client(&d).await;
    let seq = |n: u32| (1..=n).map(|i| format!("{i}\n")).collect::<String>();
    for id in &ids {
        c2.write_stdin(id, Bytes::from_static(b"on\n")).await.unwrap();
        let o = finish(&c2, id).await;
        assert!(text(&o.stdout) == seq(200000) + "got on\n", "{id}: the output changed across the restarts");
    }
    assert!(text(&finish(&c2, &busy).await.stdout) == seq(300000), "the busy command's output changed");
    drop(c);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_exec_resumes_in_the_same_process() {
    // A copy of the binary, replaced before the restart by a script that
    // removes itself and passes the new binary's check (the real binary
    // answers it): the exec fails.
    let (dir, bin, d) = daemon_on_a_copy("tether-restart");
    let c = client(&d).await;
    let (id, _) = c.start_detached(shell("sleep 0.5; echo still-here")).await.unwrap();
    replace_with_script(&bin, &vanishing());
    usr2(&d);
    d.wait_lines(2);
    let o = finish(&c, &id).await;
    assert_eq!((text(&o.stdout).as_str(), o.status.code), ("still-here\n", Some(0)));
    // The restart signal still works (it was not left ignored).
    replace_with_script(&bin, &vanishing());
    usr2(&d);
    d.wait_lines(3);
    std::fs::remove_dir_all(&dir).unwrap();
    // A connection of its own: `c` may not have seen the 1001 yet, and a
    // start in flight when a connection closes is refused as ambiguous.
    let c = client(&d).await;
    let (id, _) = c.start_detached(shell("ls /proc/self/fd | wc -l")).await.unwrap();
    // The handed-over fds are close-on-exec again: 0, 1, 2 and ls's own.
    assert_eq!(text(&finish(&c, &id).await.stdout).trim(), "4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_shot_request_in_flight_does_not_hold_up_a_restart() {
    let d = daemon(&[]);
    let c = client(&d).await;
    let http = tether_testkit::http_client();
    let req = http
        .post(format!("{}/v1/exec", d.url))
        .bearer_auth(&d.token)
        .json(&serde_json::json!({"argv": ["sleep", "30"], "name": "one-shot"}))
        .send();
    let pending = tokio::spawn(req);
    // It runs once it is listed.
    tokio::time::timeout(LIMIT, async {
        while !c.list().await.unwrap().iter().any(|i| i.name.as_deref() == Some("one-shot")) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    let t = std::time::Instant::now();
    usr2(&d);
    let resp = tokio::time::timeout(LIMIT, pending).await.unwrap().unwrap().unwrap();
    assert_eq!(resp.status(), 503);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "shutting_down", "{body}");
    d.wait_lines(2);
    assert!(t.elapsed() < Duration::from_secs(3), "the restart waited for the request: {:?}", t.elapsed());
}

// Linux's numbers.
const SIGINT: i32 = 2;
const SIGPIPE: i32 = 13;
const SIGTTIN: i32 = 21;
const SIGTTOU: i32 = 22;

/// The signals 1-31 a process ignores, less SIGTTIN and SIGTTOU (kept as
/// inherited, see `catch_inherited_ignores`), from its `SigIgn:` line.
fn ignored(status: &str) -> u64 {
    let hex = status.lines().find_map(|l| l.trim().strip_prefix("SigIgn:")).expect("a SigIgn line");
    let ttin_ttou = (1 << (SIGTTIN - 1)) | (1 << (SIGTTOU - 1));
    u64::from_str_radix(hex.trim(), 16).unwrap() & 0x7fff_ffff & !ttin_ttou
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_started_with_signals_ignored_starts_commands_with_defaults() {
    // As `nohup tether serve &` in a script does: SIGHUP, SIGINT and SIGQUIT
    // ignored, which exec passes on to whatever the daemon runs. And
    // SIGCHLD, with which the kernel would reap commands itself.
    let mut sh = Command::new("sh");
    sh.args(["-c", "trap '' HUP INT QUIT CHLD; exec \"$0\" \"$@\"", BIN]);
    let d = Daemon::start_cmd(sh, BIN, &[], None);
    for round in 0..2 {
        // The daemon catches what it inherited as ignored (it ignores only
        // SIGPIPE, as every Rust program).
        let daemon_status = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).unwrap();
        assert_eq!(ignored(&daemon_status), 1 << (SIGPIPE - 1), "round {round}: {daemon_status}");
        let c = client(&d).await;
        let o = c.run(shell("grep SigIgn /proc/self/status; exit 7")).await.unwrap();
        assert_eq!(ignored(&text(&o.stdout)), 0, "round {round}: {}", text(&o.stdout));
        assert_eq!(o.status.code, Some(7), "round {round}: the exit status is read");
        let mut pty = shell("grep SigIgn /proc/self/status");
        pty.pty = Some(tether_proto::PtySpec::default());
        let o = c.run(pty).await.unwrap();
        assert_eq!(ignored(&text(&o.stdout)), 0, "round {round} (terminal): {}", text(&o.stdout));
        // Interrupting a command works: it dies of SIGINT.
        let (id, _) = c.start_detached(shell("exec sleep 60")).await.unwrap();
        c.signal(&id, "INT").await.unwrap();
        assert_eq!(finish(&c, &id).await.status.signal, Some(SIGINT), "round {round}");
        // The daemon still ignores a hangup, as it was started to (also
        // after a restart, which ignores those signals across its exec).
        assert!(Command::new("kill").args(["-HUP", &d.pid().to_string()]).status().unwrap().success());
        let list = tokio::time::timeout(LIMIT, c.list()).await.expect("answers after SIGHUP");
        assert!(list.is_ok(), "round {round}: {list:?}");
        if round == 0 {
            drop(c);
            usr2(&d);
            d.wait_lines(2);
        }
    }
}

/// A daemon started from a copy of the binary in a directory of its own
/// (`prefix-<random>`), so that a test can replace the copy before a
/// restart: the directory, the copy, the daemon.
fn daemon_on_a_copy(prefix: &str) -> (std::path::PathBuf, std::path::PathBuf, Daemon) {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", rand_u64()));
    std::fs::create_dir_all(&dir).unwrap();
    let bin = dir.join("tether");
    copy_binary(&bin);
    let d = daemon_from(bin.to_str().unwrap(), &[], None);
    (dir, bin, d)
}

/// A script that removes itself and runs the real binary: it passes the
/// new binary's check, and the exec that follows fails.
fn vanishing() -> String {
    format!("#!/bin/sh\nrm -f \"$0\"\nexec {BIN} \"$@\"\n")
}

/// Copies the daemon's binary to `to` in a `cp` process of its own: a
/// file this (multi-threaded) test process had open for writing could be
/// inherited by a child another thread forks at that moment, and `exec`
/// of the copy fail with ETXTBSY until that child has exec'd.
fn copy_binary(to: &std::path::Path) {
    let ok = std::process::Command::new("cp").arg(BIN).arg(to).status().expect("cp runs").success();
    assert!(ok, "copying {BIN} to {}", to.display());
}

/// Replaces the file at `path` with a shell script (a new file renamed
/// over it, as an upgrade does: the running binary's file cannot be
/// written).
fn replace_with_script(path: &std::path::Path, script: &str) {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, script).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_binary_that_fails_its_check_is_not_handed_the_commands() {
    let (dir, bin, d) = daemon_on_a_copy("tether-badbin");
    let c = client(&d).await;
    let (id, pid) = c.start_detached(shell("read line; echo \"got $line\"")).await.unwrap();
    // Starts, then fails: exit 1, then a segfault; then succeeds but reads
    // only older handover states (a downgrade), or does not say which (a
    // tether from before the check). Each leaves a mark when it runs.
    let mark = dir.join("ran");
    let fails = ["exit 1", "kill -SEGV $$", "echo 'tether handover 1-2'", "echo 'usage: tether ...'"];
    for (i, fail) in fails.iter().enumerate() {
        replace_with_script(&bin, &format!("#!/bin/sh\necho >> {}\n{fail}\n", mark.display()));
        usr2(&d);
        let ran = async {
            while std::fs::read_to_string(&mark).map_or(0, |m| m.lines().count()) <= i {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(LIMIT, ran).await.expect("the new binary was run");
        // The same daemon still serves, its command untouched.
        let info = c.status(&id).await.unwrap();
        assert!(info.exit.is_none(), "the command ended: {info:?}");
    }
    assert_eq!(c.status(&id).await.unwrap().pid, pid);
    c.write_stdin(&id, Bytes::from_static(b"on\n")).await.unwrap();
    let o = finish(&c, &id).await;
    assert_eq!((text(&o.stdout).as_str(), o.status.code), ("got on\n", Some(0)));
    // A good binary again: the restart goes ahead.
    replace_with_script(&bin, &format!("#!/bin/sh\nexec {BIN} \"$@\"\n"));
    usr2(&d);
    // The one restart is this one: the failed checks restarted nothing.
    assert_eq!(d.wait_lines(2).len(), 2);
    let c = client(&d).await;
    assert!(c.list().await.unwrap().iter().any(|i| i.command == id), "the command crossed the good restart");
    let _ = std::fs::remove_dir_all(&dir);
}
