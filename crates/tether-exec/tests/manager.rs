//! Command manager tests against real processes.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use tether_exec::{
    CommandSpec, Event, ExecError, ExitInfo, ExitReason, Lifetime, Manager, ManagerConfig, OutputLimit,
    Stream, Subscription,
};

const LIMIT: Duration = Duration::from_secs(20);

fn manager() -> Manager {
    Manager::new(ManagerConfig::default(), true)
}

/// Reads a subscription to its exit, returning (stdout, stderr, exit).
async fn collect(mut sub: Subscription) -> (Vec<u8>, Vec<u8>, ExitInfo) {
    let fut = async {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        while let Some(ev) = sub.next(64 * 1024).await {
            match ev {
                Event::Output { stream: Stream::Stdout, data, .. } => out.extend_from_slice(&data),
                Event::Output { stream: Stream::Stderr, data, .. } => err.extend_from_slice(&data),
                Event::Gap { .. } => panic!("unexpected gap"),
                Event::Exit(e) => return (out, err, e),
            }
        }
        panic!("subscription ended without exit");
    };
    tokio::time::timeout(LIMIT, fut).await.expect("command finished in time")
}

#[tokio::test]
async fn separates_streams_and_reports_exit_code() {
    let m = manager();
    let h = m.start(CommandSpec::shell("echo out; echo err >&2; exit 7")).unwrap();
    let (out, err, exit) = collect(h.attach([0, 0]).unwrap()).await;
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
    let (out, _, exit) = collect(sub).await;
    assert_eq!(String::from_utf8_lossy(&out).trim(), "7");
    assert_eq!(exit.code, Some(0));
    assert!(matches!(h.write_stdin(Bytes::from_static(b"x")).await, Err(ExecError::NotRunning(_))));
}

#[tokio::test]
async fn children_inherit_only_stdio() {
    let m = manager();
    // ls opens one fd of its own for /proc/self/fd.
    let h = m.start(CommandSpec::shell("ls /proc/self/fd | wc -l")).unwrap();
    let (out, _, _) = collect(h.attach([0, 0]).unwrap()).await;
    // 0, 1, 2 and the directory fd of ls itself.
    assert_eq!(String::from_utf8_lossy(&out).trim(), "4");
}

#[tokio::test]
async fn children_start_with_default_sigpipe_and_an_empty_signal_mask() {
    let m = manager();
    // The daemon (a Rust program) ignores SIGPIPE; its children must not.
    let h = m.start(CommandSpec::shell("yes | head -c1 >/dev/null; echo ${PIPESTATUS[0]}")).unwrap();
    let (out, _, _) = collect(h.attach([0, 0]).unwrap()).await;
    assert_eq!(String::from_utf8_lossy(&out).trim(), "141", "yes must die of SIGPIPE");
    let h = m.start(CommandSpec::argv(["grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"])).unwrap();
    let (out, _, _) = collect(h.attach([0, 0]).unwrap()).await;
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
    let (out, _, exit) = collect(h.attach([0, 0]).unwrap()).await;
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

#[tokio::test]
async fn output_limit_kills_or_truncates() {
    let m = manager();
    let h = m.start(CommandSpec::argv(["yes"]).max_output(10_000, OutputLimit::Kill)).unwrap();
    let (out, _, exit) = collect(h.attach([0, 0]).unwrap()).await;
    assert_eq!(exit.reason, ExitReason::OutputLimit);
    assert_eq!(out.len(), 10_000);
    assert!(exit.truncated);

    let h = m
        .start(
            CommandSpec::shell("head -c 50000 /dev/zero; echo done >&2")
                .max_output(1000, OutputLimit::Truncate),
        )
        .unwrap();
    let (out, err, exit) = collect(h.attach([0, 0]).unwrap()).await;
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
