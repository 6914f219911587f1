//! Command manager tests against real processes.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use tether_exec::{
    CommandSpec, Event, ExecError, ExitReason, Lifetime, Manager, ManagerConfig, OutputLimit, Stream,
};

mod support;

use support::{collect, manager, read_until};

const LIMIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn separates_streams_and_reports_exit_code() {
    let m = manager();
    let h = m.start(CommandSpec::shell("echo out; echo err >&2; exit 7")).unwrap();
    let (out, err, exit) = collect(h.attach([0, 0]).unwrap(), LIMIT).await;
    assert_eq!(out, b"out\n");
    assert_eq!(err, b"err\n");
    assert_eq!(exit.code, Some(7));
    assert_eq!(exit.reason, ExitReason::Exited);
    assert_eq!(exit.ends, [4, 4]);
}

#[tokio::test]
async fn stdin_and_eof_reach_the_command() {
    let m = manager();
    let h = m.start(CommandSpec::argv(["wc", "-c"]).stdin(Bytes::from_static(b"abc"), false)).unwrap();
    let sub = h.attach([0, 0]).unwrap();
    h.write_stdin(Bytes::from_static(b"defg")).await.unwrap();
    h.close_stdin().await.unwrap();
    let (out, _, exit) = collect(sub, LIMIT).await;
    assert_eq!(String::from_utf8_lossy(&out).trim(), "7");
    assert_eq!(exit.code, Some(0));
    assert!(matches!(h.write_stdin(Bytes::from_static(b"x")).await, Err(ExecError::NotRunning(_))));
}

#[tokio::test]
async fn children_inherit_only_stdio() {
    let m = manager();
    // ls opens one fd of its own for /proc/self/fd.
    let h = m.start(CommandSpec::shell("ls /proc/self/fd | wc -l")).unwrap();
    let (out, _, _) = collect(h.attach([0, 0]).unwrap(), LIMIT).await;
    // 0, 1, 2 and the directory fd of ls itself.
    assert_eq!(String::from_utf8_lossy(&out).trim(), "4");
    // The same on a terminal (spawned another way), with SIGPIPE default.
    let h = m
        .start(CommandSpec::shell("ls /proc/self/fd | wc -l; grep SigIgn /proc/self/status").pty(24, 80))
        .unwrap();
    let (out, _, _) = collect(h.attach([0, 0]).unwrap(), LIMIT).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let (count, ignored) = text.trim_end().split_once("\r\nSigIgn:\t").unwrap();
    assert_eq!(count, "4");
    // Signals 1-31 not ignored (see the next test about 32 and 33).
    assert_eq!(u64::from_str_radix(ignored, 16).unwrap() & 0x7fff_ffff, 0, "{text}");
}

#[tokio::test]
async fn children_start_with_default_sigpipe_and_an_empty_signal_mask() {
    let m = manager();
    // The daemon (a Rust program) ignores SIGPIPE; its children must not.
    let h = m.start(CommandSpec::shell("yes | head -c1 >/dev/null; echo ${PIPESTATUS[0]}")).unwrap();
    let (out, _, _) = collect(h.attach([0, 0]).unwrap(), LIMIT).await;
    assert_eq!(String::from_utf8_lossy(&out).trim(), "141", "yes must die of SIGPIPE");
    let h = m.start(CommandSpec::argv(["grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"])).unwrap();
    let (out, _, _) = collect(h.attach([0, 0]).unwrap(), LIMIT).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    assert_eq!(text.lines().count(), 2);
    for line in text.lines() {
        let mask = u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap();
        // Signals 1-31 (bits 0-30) must be neither blocked nor ignored.
        // (glibc's posix_spawn leaves its two internal real-time signals,
        // 32 and 33, ignored in every child it spawns; they are reserved.)
        assert_eq!(mask & 0x7fff_ffff, 0, "{text}");
    }
}

#[tokio::test]
async fn timeout_kills_the_whole_group() {
    let m = manager();
    let spec = CommandSpec::shell("sleep 300 & echo $!; trap '' TERM; sleep 300")
        .timeout(Duration::from_millis(300))
        .kill_grace(Duration::from_millis(200));
    let h = m.start(spec).unwrap();
    let (out, _, exit) = collect(h.attach([0, 0]).unwrap(), LIMIT).await;
    assert_eq!(exit.reason, ExitReason::TimedOut);
    let grandchild: i32 = String::from_utf8_lossy(&out).trim().parse().unwrap();
    // The grandchild must be gone (or a zombie awaiting its reaper).
    let stat = std::fs::read_to_string(format!("/proc/{grandchild}/stat")).unwrap_or_default();
    assert!(stat.is_empty() || stat.contains(") Z"), "grandchild survived: {stat}");
}

#[tokio::test]
async fn idle_timeout_kills_unattached_command() {
    let m = manager();
    let h = m
        .start(CommandSpec::argv(["sleep", "100"]).idle_timeout(Lifetime::After(Duration::from_millis(200))))
        .unwrap();
    let exit = tokio::time::timeout(LIMIT, h.wait()).await.unwrap();
    assert_eq!(exit.reason, ExitReason::IdleTimeout);
}

#[tokio::test]
async fn kill_on_disconnect_fires_when_last_client_leaves() {
    let m = manager();
    let h = m.start(CommandSpec::argv(["sleep", "100"]).kill_on_disconnect(true)).unwrap();
    let a = h.attach([0, 0]).unwrap();
    let b = h.attach([0, 0]).unwrap();
    drop(a);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(h.exit().is_none(), "one client still attached");
    drop(b);
    let exit = tokio::time::timeout(LIMIT, h.wait()).await.unwrap();
    assert_eq!(exit.reason, ExitReason::Disconnected);
}

#[tokio::test]
async fn ttl_expiry_removes_the_record() {
    let m = manager();
    let h = m.start(CommandSpec::argv(["true"]).ttl(Lifetime::After(Duration::from_millis(100)))).unwrap();
    let id = h.id().to_owned();
    tokio::time::timeout(LIMIT, h.wait()).await.unwrap();
    assert!(m.get(&id).is_ok(), "held right after exit");
    tokio::time::timeout(LIMIT, async {
        while m.get(&id).is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("record expired");
}

#[tokio::test]
async fn old_offset_gets_a_gap_then_data() {
    let m = manager();
    let h = m.start(CommandSpec::shell("head -c 100000 /dev/zero").ring_bytes(8192)).unwrap();
    h.wait().await;
    let mut sub = h.attach([0, 0]).unwrap();
    match sub.next(1 << 20).await.unwrap() {
        Event::Gap { stream: Stream::Stdout, requested: 0, first_held } => {
            assert!(first_held > 90_000 && first_held < 100_000, "{first_held}");
        }
        other => panic!("expected gap, got {other:?}"),
    }
    let mut total = 0;
    while let Some(ev) = sub.next(1 << 20).await {
        if let Event::Output { data, .. } = ev {
            total += data.len();
        }
    }
    assert!(total > 0 && total <= 8192);
}

/// Each `echo` of bash is a write of its own, mostly read on its own. The
/// ring charges a chunk 64 bytes of bookkeeping besides its bytes, so a
/// chunk per line would charge 30,000 lines of about 11 bytes 2.2 MB, four
/// times a 512 KiB ring, and it would keep a sixth of them; merged into
/// larger chunks they are charged about their bytes (318 KB) and it keeps
/// them all. (A ring smaller than the output is not asked to be full to a
/// given fraction: it evicts whole chunks, and how large a chunk is depends
/// on how many lines the actor finds at once, which a loaded machine
/// changes.)
#[tokio::test]
async fn lines_written_one_at_a_time_are_charged_their_bytes_not_a_chunk_each() {
    let m = manager();
    let ring = 512 << 10;
    let script = r#"for i in $(seq 1 30000); do echo "line $i"; done"#;
    let h = m.start(CommandSpec::shell(script).ring_bytes(ring)).unwrap();
    h.wait().await;
    let all: String = (1..=30000).map(|i| format!("line {i}\n")).collect();
    let (first_held, end) = h.info().offsets[0];
    assert_eq!(end, all.len() as u64);
    assert_eq!(first_held, 0, "held {} of the {end} bytes written", end - first_held);
    let mut sub = h.attach([0, 0]).unwrap();
    let mut out = Vec::new();
    while let Some(ev) = sub.next(1 << 20).await {
        if let Event::Output { data, .. } = ev {
            out.extend_from_slice(&data);
        }
    }
    assert!(out == all.as_bytes(), "every line, in order");
}

#[tokio::test]
async fn output_limit_kills_or_truncates() {
    let m = manager();
    let h = m.start(CommandSpec::argv(["yes"]).max_output(10_000, OutputLimit::Kill)).unwrap();
    let (out, _, exit) = collect(h.attach([0, 0]).unwrap(), LIMIT).await;
    assert_eq!(exit.reason, ExitReason::OutputLimit);
    assert_eq!(out.len(), 10_000);
    assert!(exit.truncated);

    let h = m
        .start(
            CommandSpec::shell("head -c 50000 /dev/zero; echo done >&2")
                .max_output(1000, OutputLimit::Truncate),
        )
        .unwrap();
    let (out, err, exit) = collect(h.attach([0, 0]).unwrap(), LIMIT).await;
    assert_eq!(exit.reason, ExitReason::Exited);
    assert_eq!(exit.code, Some(0));
    assert_eq!(out.len() + err.len(), 1000);
}

#[tokio::test]
async fn bad_starts_are_typed_errors() {
    let m = manager();
    let e = m.start(CommandSpec::argv(["/nonexistent/prog"])).unwrap_err();
    assert!(matches!(e, ExecError::Spawn { .. }) && e.errno() == Some(libc_enoent()), "{e:?}");
    let e = m.start(CommandSpec::argv(["/etc/passwd"])).unwrap_err();
    assert!(matches!(e, ExecError::Spawn { .. }) && e.errno() == Some(13), "{e:?}");
    let e = m.start(CommandSpec::argv(["true"]).cwd("/nonexistent")).unwrap_err();
    assert!(matches!(e, ExecError::BadCwd { .. }), "{e:?}");
    let e = m.start(CommandSpec::argv(["echo", "a\0b"])).unwrap_err();
    assert!(matches!(e, ExecError::NulByte { what: "argv" }), "{e:?}");
    let e = m.start(CommandSpec::argv(["true"]).env("A", "x\0")).unwrap_err();
    assert!(matches!(e, ExecError::NulByte { what: "env" }), "{e:?}");
    let e = m.start(CommandSpec::argv(["echo".to_owned(), "x".repeat(200_000)])).unwrap_err();
    assert!(matches!(e, ExecError::Spawn { .. }) && e.errno() == Some(7), "{e:?}");
    let e = m.start(CommandSpec::argv(Vec::<String>::new())).unwrap_err();
    assert!(matches!(e, ExecError::EmptyArgv), "{e:?}");
    assert!(m.is_empty(), "failed starts leave no record");
}

fn libc_enoent() -> i32 {
    2
}

#[tokio::test]
async fn limits_are_typed_errors() {
    let cfg = ManagerConfig { max_commands: 2, ..ManagerConfig::default() };
    let m = Manager::new(cfg, true);
    let a = m.start(CommandSpec::argv(["sleep", "10"])).unwrap();
    let _b = m.start(CommandSpec::argv(["sleep", "10"])).unwrap();
    assert!(matches!(m.start(CommandSpec::argv(["true"])), Err(ExecError::TooManyCommands(2))));
    a.kill().await.unwrap();
    let cfg = ManagerConfig { max_total_ring_bytes: 3 << 20, ..ManagerConfig::default() };
    let m2 = Manager::new(cfg, true);
    let _c = m2.start(CommandSpec::argv(["sleep", "10"])).unwrap();
    assert!(matches!(m2.start(CommandSpec::argv(["true"])), Err(ExecError::RingMemory { .. })));
    m.shutdown().await;
    m2.shutdown().await;
}

#[tokio::test]
async fn a_removed_command_gives_back_its_slot_and_memory_before_remove_returns() {
    // A client at the limit removes a command and starts the next one at
    // once: the start must not fail because the removed command's actor
    // had not yet ended (running, finished, and with a subscriber each).
    let cfg = ManagerConfig { max_commands: 1, max_total_ring_bytes: 3 << 20, ..ManagerConfig::default() };
    let m = Manager::new(cfg, true);
    for round in 0..20 {
        let h =
            m.start(CommandSpec::argv(["sleep", "30"])).unwrap_or_else(|e| panic!("round {round}: {e:?}"));
        let sub = (round % 2 == 1).then(|| h.attach([0, 0]).unwrap());
        if round % 4 >= 2 {
            h.kill().await.unwrap();
            tokio::time::timeout(LIMIT, h.wait()).await.unwrap();
        }
        let id = h.id().to_owned();
        drop(h);
        let removing = m.removal(&id).unwrap();
        assert!(matches!(m.get(&id), Err(ExecError::NotFound(_))), "round {round}: forgotten at once");
        tokio::time::timeout(LIMIT, removing).await.expect("remove in time");
        assert_eq!(m.len(), 0, "round {round}: the count after remove");
        assert_eq!(m.committed_ring_bytes(), 0, "round {round}: ring memory after remove");
        drop(sub);
    }
    let h = m.start(CommandSpec::argv(["true"])).unwrap();
    tokio::time::timeout(LIMIT, h.wait()).await.unwrap();
    m.shutdown().await;
}

#[tokio::test]
async fn an_ended_command_holds_only_the_ring_bytes_it_uses() {
    // Room for one running command's rings (2 x 8 MiB); ended ones kept
    // for their TTL hold only what their rings hold, so a hundred short
    // commands one after another all start (each ended one used to keep
    // its whole 16 MiB until the TTL ran out).
    let cfg = ManagerConfig { max_total_ring_bytes: 20 << 20, ..ManagerConfig::default() };
    let m = Manager::new(cfg, true);
    let mut kept = Vec::new();
    for i in 0..100 {
        let h = m
            .start(CommandSpec::argv(["echo", "held"]).ring_bytes(8 << 20))
            .unwrap_or_else(|e| panic!("command {i}: {e:?}"));
        let exit = tokio::time::timeout(LIMIT, h.wait()).await.unwrap();
        assert_eq!(exit.code, Some(0));
        kept.push(h);
    }
    assert_eq!(m.len(), 100, "the ended commands are still held");
    assert!(m.committed_ring_bytes() < 1 << 20, "{}", m.committed_ring_bytes());
    // Their output is all still there.
    let mut sub = kept[0].attach([0, 0]).unwrap();
    let Some(tether_exec::Event::Output { data, .. }) = sub.next(1 << 10).await else { panic!("no output") };
    assert_eq!(&data[..], b"held\n");
    // A running command still reserves its whole rings.
    let long = m.start(CommandSpec::argv(["sleep", "30"]).ring_bytes(8 << 20)).unwrap();
    assert!(m.committed_ring_bytes() >= 16 << 20);
    assert!(matches!(
        m.start(CommandSpec::argv(["sleep", "30"]).ring_bytes(8 << 20)),
        Err(ExecError::RingMemory { .. })
    ));
    long.kill().await.unwrap();
    m.shutdown().await;
}

#[tokio::test]
async fn signal_reaches_group_and_kill_reports_killed() {
    let m = manager();
    let h = m.start(CommandSpec::argv(["sleep", "100"])).unwrap();
    h.signal("TERM").await.unwrap();
    let exit = tokio::time::timeout(LIMIT, h.wait()).await.unwrap();
    assert_eq!(exit.signal, Some(15));
    assert_eq!(exit.reason, ExitReason::Exited);
    assert!(matches!(h.signal("BOGUS").await, Err(ExecError::BadSignal(_))));

    let h = m.start(CommandSpec::argv(["sleep", "100"])).unwrap();
    h.kill().await.unwrap();
    let exit = tokio::time::timeout(LIMIT, h.wait()).await.unwrap();
    assert_eq!((exit.signal, exit.reason), (Some(9), ExitReason::Killed));
    assert!(matches!(h.kill().await, Err(ExecError::NotRunning(_))));
}

// PTY commands.

use tether_exec::TermSize;

/// An interactive bash without rc files on a terminal, with a fixed prompt.
fn bash_pty() -> CommandSpec {
    CommandSpec::argv(["bash", "--norc", "--noprofile", "-i"]).env("PS1", "PROMPT$ ").pty(24, 80)
}

#[tokio::test]
async fn a_pty_command_has_a_terminal_of_the_start_size() {
    let m = manager();
    let h = m.start(CommandSpec::shell("tty; stty size; echo $TERM").pty(33, 101)).unwrap();
    assert!(h.is_pty());
    let (out, err, exit) = collect(h.attach([0, 0]).unwrap(), LIMIT).await;
    let out = String::from_utf8_lossy(&out);
    let lines: Vec<&str> = out.split("\r\n").collect();
    assert!(lines[0].starts_with("/dev/pts/"), "{out:?}");
    assert_eq!(lines[1], "33 101");
    assert_eq!(lines[2], "xterm-256color");
    assert!(err.is_empty(), "a terminal has one stream");
    assert_eq!(exit.code, Some(0));
}

#[tokio::test]
async fn resize_reaches_the_program_and_every_subscriber() {
    let m = manager();
    let h = m.start(CommandSpec::shell("read line; stty size").pty(24, 80)).unwrap();
    let mut sub = h.attach([0, 0]).unwrap();
    let first = tokio::time::timeout(LIMIT, sub.next(1024)).await.unwrap();
    assert_eq!(first, Some(Event::Resized(TermSize { rows: 24, cols: 80 })));
    h.resize(TermSize { rows: 30, cols: 100 }).await.unwrap();
    // The same size again changes nothing and tells nobody.
    h.resize(TermSize { rows: 30, cols: 100 }).await.unwrap();
    assert_eq!(h.info().pty, Some(TermSize { rows: 30, cols: 100 }));
    h.write_stdin(Bytes::from_static(b"\n")).await.unwrap();
    let mut out = Vec::new();
    let mut resized = Vec::new();
    let fut = async {
        while let Some(ev) = sub.next(1024).await {
            match ev {
                Event::Output { data, .. } => out.extend_from_slice(&data),
                Event::Resized(s) => resized.push(s),
                _ => {}
            }
        }
    };
    tokio::time::timeout(LIMIT, fut).await.unwrap();
    assert!(String::from_utf8_lossy(&out).contains("30 100"), "{:?}", String::from_utf8_lossy(&out));
    assert_eq!(resized, [TermSize { rows: 30, cols: 100 }]);
    assert!(matches!(h.resize(TermSize { rows: 0, cols: 10 }).await, Err(ExecError::BadSize { .. })));
}

/// A size the terminal lost is given back by the next resize to it. The
/// program here sets the old size itself, as readline does by accident:
/// it reads the window size and writes it back as it starts a line
/// (`set_winsize` in rltty.c), so a resize that lands in between is undone
/// in the kernel while the daemon still holds the new size. A client that
/// asserts its size again (a resize, a re-attach with a size) must reach
/// the terminal, not be taken for "the same size, nothing to do".
#[tokio::test]
async fn a_size_the_terminal_lost_is_set_again_by_the_next_resize() {
    let m = manager();
    let script = "echo ready; read _; stty rows 24 cols 80; echo reverted; read _; stty size";
    let h = m.start(CommandSpec::shell(script).pty(24, 80)).unwrap();
    let mut sub = h.attach([0, 0]).unwrap();
    let mut out = Vec::new();
    read_until(&mut sub, &mut out, "ready", LIMIT).await;
    let size = TermSize { rows: 30, cols: 100 };
    h.resize(size).await.unwrap();
    h.write_stdin(Bytes::from_static(b"\n")).await.unwrap();
    read_until(&mut sub, &mut out, "reverted", LIMIT).await;
    // The kernel has 24x80 again; the daemon's record still says 30x100.
    h.resize(size).await.unwrap();
    assert_eq!(h.info().pty, Some(size));
    h.write_stdin(Bytes::from_static(b"\n")).await.unwrap();
    let (rest, _, exit) = collect(sub, LIMIT).await;
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.contains("30 100"), "the program saw {rest:?}");
    assert_eq!(exit.code, Some(0));
}

#[tokio::test]
async fn resize_of_a_pipe_command_is_refused() {
    let m = manager();
    let h = m.start(CommandSpec::shell("sleep 5")).unwrap();
    assert!(matches!(h.resize(TermSize { rows: 10, cols: 10 }).await, Err(ExecError::NotAPty(_))));
    h.kill().await.unwrap();
}

/// Waits until `bash` has a child running `comm`.
async fn wait_for_child(bash: u32, comm: &str) {
    let fut = async {
        loop {
            let kids =
                std::fs::read_to_string(format!("/proc/{bash}/task/{bash}/children")).unwrap_or_default();
            for k in kids.split_whitespace() {
                let name = std::fs::read_to_string(format!("/proc/{k}/comm")).unwrap_or_default();
                if name.trim() == comm {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(LIMIT, fut).await.expect("child started");
}

#[tokio::test]
async fn interrupt_stops_the_foreground_job_and_not_the_shell() {
    let m = manager();
    let h = m.start(bash_pty()).unwrap();
    let mut sub = h.attach([0, 0]).unwrap();
    let mut out = Vec::new();
    read_until(&mut sub, &mut out, "PROMPT$ ", LIMIT).await;
    // Once by signal (to the foreground group), once by the Ctrl-C byte.
    h.write_stdin(Bytes::from_static(b"sleep 100\n")).await.unwrap();
    wait_for_child(h.pid(), "sleep").await;
    h.signal("INT").await.unwrap();
    h.write_stdin(Bytes::from_static(b"echo alive $?\n")).await.unwrap();
    read_until(&mut sub, &mut out, "alive 130", LIMIT).await;
    h.write_stdin(Bytes::from_static(b"sleep 100\n")).await.unwrap();
    wait_for_child(h.pid(), "sleep").await;
    h.write_stdin(Bytes::from_static(b"\x03")).await.unwrap();
    h.write_stdin(Bytes::from_static(b"echo again $?\n")).await.unwrap();
    read_until(&mut sub, &mut out, "again 130", LIMIT).await;
    assert!(h.exit().is_none(), "the shell survives");
    h.write_stdin(Bytes::from_static(b"exit 4\n")).await.unwrap();
    let (_, _, exit) = collect(sub, LIMIT).await;
    assert_eq!(exit.code, Some(4));
}

#[tokio::test]
async fn close_stdin_on_a_terminal_types_end_of_file() {
    let m = manager();
    let h = m.start(CommandSpec::argv(["wc", "-c"]).pty(24, 80)).unwrap();
    let sub = h.attach([0, 0]).unwrap();
    h.write_stdin(Bytes::from_static(b"abc\n")).await.unwrap();
    h.close_stdin().await.unwrap();
    let (out, _, exit) = collect(sub, LIMIT).await;
    // The echo of the input, then the count (the line discipline made the
    // newline a CR LF on output but wc read 4 bytes).
    assert!(String::from_utf8_lossy(&out).ends_with("4\r\n"), "{:?}", String::from_utf8_lossy(&out));
    assert_eq!(exit.code, Some(0));
}

#[tokio::test]
async fn terminal_output_is_complete_after_exit() {
    let m = manager();
    // Output still in the terminal when the leader exits, and output of a
    // background process that outlives it (ignoring the hangup).
    let h = m
        .start(
            CommandSpec::shell("(trap '' HUP; sleep 0.1; echo late) & seq 1 20000; echo early").pty(24, 80),
        )
        .unwrap();
    let (out, _, exit) = collect(h.attach([0, 0]).unwrap(), LIMIT).await;
    let out = String::from_utf8_lossy(&out);
    let lines: Vec<&str> = out.split("\r\n").collect();
    assert_eq!(lines[..20000], (1..=20000).map(|n| n.to_string()).collect::<Vec<_>>()[..]);
    assert!(out.contains("early"));
    assert!(out.contains("late"), "{:?}", &out[out.len().saturating_sub(100)..]);
    assert_eq!(exit.code, Some(0));
}

#[tokio::test]
async fn a_screen_is_restored_for_a_new_viewer_and_skipped_on_resume() {
    let m = manager();
    let h = m.start(CommandSpec::shell("printf 'hello\\033[3;5Hworld'; sleep 30").pty(5, 20)).unwrap();
    let mut sub = h.attach([0, 0]).unwrap();
    let mut out = Vec::new();
    read_until(&mut sub, &mut out, "world", LIMIT).await;
    let (screen, _sub2) = h.attach_screen(0, None, false).await.unwrap();
    let screen = screen.expect("a new viewer gets the screen");
    assert_eq!(screen.offset, out.len() as u64);
    assert_eq!(screen.size, TermSize { rows: 5, cols: 20 });
    let mut viewer = vt100::Parser::new(5, 20, 0);
    viewer.process(&screen.data);
    assert_eq!(viewer.screen().contents(), "hello\n\n    world");
    assert_eq!(viewer.screen().cursor_position(), (2, 9));
    // A viewer that has seen up to offset 5 resumes there: no screen.
    let (screen, mut resumed) = h.attach_screen(5, None, false).await.unwrap();
    assert!(screen.is_none());
    assert_eq!(resumed.offsets(), [5, 0]);
    let _ = resumed.next(1024).await; // Resized comes first
    match resumed.next(1024).await {
        Some(Event::Output { offset, .. }) => assert_eq!(offset, 5),
        other => panic!("{other:?}"),
    }
    // A viewer with its own size makes it the terminal's size.
    let (screen, _) = h.attach_screen(0, Some(TermSize { rows: 10, cols: 40 }), false).await.unwrap();
    assert_eq!(screen.unwrap().size, TermSize { rows: 10, cols: 40 });
    assert_eq!(h.info().pty, Some(TermSize { rows: 10, cols: 40 }));
    h.kill().await.unwrap();
}

#[tokio::test]
async fn the_screen_model_keeps_up_with_a_flood() {
    let m = manager();
    // About 1.3 MB: more than the model may lag, so reading waits for it.
    // The ring holds it all, so a reader slowed down by a busy machine
    // gets no gap.
    let h = m.start(CommandSpec::shell("seq 1 200000").pty(5, 20).ring_bytes(4 << 20)).unwrap();
    let (out, _, exit) = collect(h.attach([0, 0]).unwrap(), LIMIT).await;
    assert_eq!(exit.code, Some(0));
    assert_eq!(out.len() as u64, exit.ends[0]);
    let (screen, _) = h.attach_screen(0, None, false).await.unwrap();
    let screen = screen.unwrap();
    assert_eq!(screen.offset, exit.ends[0]);
    let mut viewer = vt100::Parser::new(5, 20, 0);
    viewer.process(&screen.data);
    assert_eq!(viewer.screen().contents(), "199997\n199998\n199999\n200000");
}

/// The screen model parses bulk output in a task of its own and a little
/// output, while that task is idle, in the actor: whichever parsed what,
/// every screen a new viewer gets is exactly the output up to its offset.
#[tokio::test]
async fn every_screen_is_the_output_up_to_its_offset_however_it_was_parsed() {
    let m = manager();
    // Bursts of lines (for the task) between short rewrites of the whole
    // screen (for the actor, when it reads one alone); the ring keeps all.
    let script = "for i in $(seq 1 150); do seq 1 1500; printf '\\033[2J\\033[Hstep %d' $i; done; \
                  printf '\\033[2J\\033[1;3Hlast'";
    let h = m.start(CommandSpec::shell(script).pty(5, 20).ring_bytes(4 << 20)).unwrap();
    let reader = tokio::spawn(collect(h.attach([0, 0]).unwrap(), LIMIT));
    let mut screens = Vec::new();
    let taking = async {
        while !reader.is_finished() {
            let (screen, _) = h.attach_screen(0, None, false).await.unwrap();
            screens.push(screen.expect("a screen from offset 0"));
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    tokio::time::timeout(LIMIT, taking).await.expect("the command ends in time");
    let (out, _, exit) = reader.await.unwrap();
    assert_eq!(exit.code, Some(0));
    let (last, _) = h.attach_screen(0, None, false).await.unwrap();
    screens.push(last.unwrap());
    assert!(screens.len() > 2, "only {} screens taken while it ran", screens.len());
    let rendered = |bytes: &[u8]| {
        let mut p = vt100::Parser::new(5, 20, 0);
        p.process(bytes);
        (p.screen().contents(), p.screen().cursor_position())
    };
    for s in &screens {
        let upto = &out[..s.offset as usize];
        assert_eq!(rendered(&s.data), rendered(upto), "the screen at offset {}", s.offset);
    }
    assert_eq!(rendered(&screens.last().unwrap().data), ("  last".to_owned(), (0, 6)));
}

#[tokio::test]
async fn a_lingering_attachment_holds_a_fast_writer_until_its_client_is_back() {
    let m = manager();
    // About 5.4 MB as fast as base64 can go, against a 1 MiB ring.
    let h = m.start(CommandSpec::shell("head -c 4000000 /dev/zero | base64 -w 100")).unwrap();
    let want = 4_000_000usize.div_ceil(3) * 4 + 4_000_000usize.div_ceil(75);
    let mut sub = h.attach_lingering([0, 0], LIMIT).unwrap();
    let first = async {
        let mut got = 0usize;
        while got < 100_000 {
            match sub.next(65536).await.expect("an event") {
                Event::Output { data, .. } => got += data.len(),
                ev => panic!("{ev:?} before 100 kB"),
            }
        }
    };
    tokio::time::timeout(LIMIT, first).await.expect("output in time");
    let at = sub.offsets();
    drop(sub);
    // The client is away for a while: the command must wait for it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(h.exit().is_none(), "the writer ran on without its client");
    let (out, _, exit) = collect(h.attach_lingering(at, LIMIT).unwrap(), LIMIT).await;
    assert_eq!(at[0] as usize + out.len(), want, "nothing lost, nothing twice");
    assert_eq!(exit.code, Some(0));

    // A client that does not come back holds it only for the linger.
    let h = m.start(CommandSpec::shell("head -c 4000000 /dev/zero | base64 -w 100")).unwrap();
    drop(h.attach_lingering([0, 0], Duration::from_millis(300)).unwrap());
    let exit = tokio::time::timeout(LIMIT, h.wait()).await.expect("runs on after the linger");
    assert_eq!(exit.ends[0] as usize, want);
}

/// A kill ends a command at once, whatever its pacing readers do: one that
/// stalls (attached, acknowledging nothing) or one that went away and
/// lingers. The process tree is dead; what its pipes still hold is read
/// into the rings without waiting for them (before, the exit waited for the
/// stalled reader forever, and for the lingering one its whole linger).
#[tokio::test]
async fn a_kill_is_not_held_up_by_pacing_readers() {
    let m = manager();
    for away in [false, true] {
        // Attached before the actor reads a byte, paced by
        // acknowledgements, as the server's attachments are.
        let (h, sub) = m
            .start_then(CommandSpec::shell("while :; do head -c 65536 /dev/zero; done"), |h| {
                h.attach_paced([0, 0], true)
            })
            .unwrap();
        let mut sub = sub.unwrap();
        let _pacer = sub.pace_by_acks(Some("client-1".into()), Duration::from_secs(600)).unwrap();
        match tokio::time::timeout(LIMIT, sub.next(65536)).await.expect("output in time") {
            Some(Event::Output { .. }) => {}
            other => panic!("{other:?}"),
        }
        // Held at about half a ring (of 1 MiB) past what was acknowledged
        // (nothing), with the pipe full behind it.
        tokio::time::timeout(LIMIT, async {
            while h.info().offsets[0].1 < 400 * 1024 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("held at half a ring");
        if away {
            drop(sub);
            h.kill().await.unwrap();
            let exit = tokio::time::timeout(Duration::from_secs(5), h.wait())
                .await
                .expect("the kill took effect without waiting for the lingering client");
            assert_eq!(exit.reason, ExitReason::Killed);
        } else {
            h.kill().await.unwrap();
            let exit = tokio::time::timeout(Duration::from_secs(5), h.wait())
                .await
                .expect("the kill took effect without waiting for the stalled reader");
            assert_eq!(exit.reason, ExitReason::Killed);
            // The reader still gets the exit after what the ring holds. The
            // pipe's last bytes (up to 1 MiB, as full as `head` had made
            // it) are drained into the 1 MiB ring after the kill, so a
            // reader that never acknowledged may find a gap on the way:
            // that is allowed here, only the exit is asked for.
            let exit = tokio::time::timeout(LIMIT, async {
                loop {
                    match sub.next(1 << 20).await {
                        Some(Event::Exit(e)) => return e,
                        Some(_) => {}
                        None => panic!("subscription ended without exit"),
                    }
                }
            })
            .await
            .expect("the reader got the exit");
            assert_eq!(exit.reason, ExitReason::Killed);
        }
    }
}

/// Paced by acknowledgements: the command waits for what the client has
/// taken, not for what was read; a lost attachment lingers from there; and
/// a newer attachment of the same client name replaces an older one that
/// will never acknowledge again (its connection died unnoticed).
#[tokio::test]
async fn pacing_by_acks_holds_to_what_was_taken_and_a_named_reattach_replaces_it() {
    let m = manager();
    // Attached before the actor reads a byte (after `start` returned, the
    // actor, on threads of its own, may have read past half the ring).
    let (h, old) = m
        .start_then(CommandSpec::shell("head -c 4000000 /dev/zero").ring_bytes(65536), |h| {
            h.attach_paced([0, 0], true)
        })
        .unwrap();
    let mut old = old.unwrap();
    let _old_pacer = old.pace_by_acks(Some("client-1".into()), Duration::from_secs(600)).unwrap();
    // Read without acknowledging: the command is held all the same, half
    // a ring past the start.
    let mut read = 0;
    while read < 20_000 {
        match tokio::time::timeout(LIMIT, old.next(65536)).await.unwrap().unwrap() {
            Event::Output { data, .. } => read += data.len(),
            other => panic!("{other:?}"),
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(h.info().offsets[0].1 <= 32_768, "held to the acks, not the reads: {:?}", h.info().offsets);
    // Its client comes back on another connection, under the same name.
    let mut new = h.attach_paced([0, 0], true).unwrap();
    let pacer = new.pace_by_acks(Some("client-1".into()), Duration::from_secs(600)).unwrap();
    let mut total = 0u64;
    let exit = tokio::time::timeout(LIMIT, async {
        loop {
            match new.next(65536).await.unwrap() {
                Event::Output { offset, data, .. } => {
                    total += data.len() as u64;
                    pacer.ack([offset + data.len() as u64, 0]);
                }
                Event::Exit(e) => break e,
                Event::Gap { .. } => panic!("gap"),
                Event::Resized(_) => {}
            }
        }
    })
    .await
    .expect("the older attachment no longer holds the command");
    assert_eq!((total, exit.ends[0]), (4_000_000, 4_000_000));
    drop(old);
}

/// A terminal's screen model (two grids of rows x cols cells) is charged to
/// the same memory budget as the rings, on start and on every resize: 150
/// terminals of 500x500 once took 2.4 GB under a 64 MiB budget.
#[tokio::test]
async fn terminal_screens_count_against_the_memory_budget() {
    let cfg = ManagerConfig { max_total_ring_bytes: 64 << 20, ..ManagerConfig::default() };
    let m = Manager::new(cfg, true);
    let small = 64 << 10;
    let mut held = Vec::new();
    let mut refused = None;
    for _ in 0..150 {
        match m.start(CommandSpec::argv(["sleep", "30"]).ring_bytes(small).pty(500, 500)) {
            Ok(h) => held.push(h),
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let Some(ExecError::ScreenMemory { rows: 500, cols: 500, .. }) = refused else {
        panic!("150 screens of 500x500 fit in 64 MiB: {refused:?}");
    };
    assert!(m.committed_ring_bytes() <= 64 << 20, "{}", m.committed_ring_bytes());
    // A small terminal still fits; growing it past the budget is refused
    // and leaves it as it was.
    for h in held.drain(..) {
        h.kill().await.unwrap();
        h.wait().await;
        m.remove(h.id()).await.ok();
    }
    // A record's memory is released when its actor (on the actors'
    // runtime, in parallel with this test) has let it go: nothing to await
    // but the count itself.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !m.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "{} records left after their removal", m.len());
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let before = m.committed_ring_bytes();
    let h = m.start(CommandSpec::argv(["sleep", "30"]).ring_bytes(small).pty(24, 80)).unwrap();
    let one = m.committed_ring_bytes() - before;
    assert!(one > small, "the screen is charged: {one}");
    let _hog = m.start(CommandSpec::argv(["sleep", "30"]).ring_bytes(60 << 20)).unwrap_err();
    // Fill the budget: 2 MiB commands, then 128 KiB ones, until refused
    // (less than a 500x500 screen is left).
    let fill = |ring: usize| -> Vec<_> {
        (0..64).map_while(|_| m.start(CommandSpec::argv(["sleep", "30"]).ring_bytes(ring)).ok()).collect()
    };
    let (_big, _small) = (fill(1 << 20), fill(small));
    assert!(m.committed_ring_bytes() > (64 << 20) - 2 * small, "{}", m.committed_ring_bytes());
    let err = h.resize(tether_exec::TermSize { rows: 500, cols: 500 }).await.unwrap_err();
    assert!(matches!(err, ExecError::ScreenMemory { .. }), "{err:?}");
    h.resize(tether_exec::TermSize { rows: 30, cols: 100 }).await.unwrap();
    m.shutdown().await;
}

/// An attachment made through `start_then` exists before the actor reads a
/// byte: from `[0, 0]`, paced, it gets every byte of a writer far faster
/// than a 4 KiB ring, with no gap. (Actors run on threads of their own, so
/// an attachment made after `start` returns may come after the actor has
/// read a ring's worth.)
#[tokio::test]
async fn a_first_attachment_sees_every_byte_of_a_fast_writer() {
    let m = manager();
    for _ in 0..5 {
        let spec = CommandSpec::argv(["head", "-c", "4000000", "/dev/zero"]).ring_bytes(4096);
        let (_h, sub) = m.start_then(spec, |h| h.attach_paced([0, 0], true)).unwrap();
        let (out, _, exit) = collect(sub.unwrap(), LIMIT).await;
        assert_eq!((out.len(), exit.code), (4_000_000, Some(0)));
    }
    m.shutdown().await;
}
