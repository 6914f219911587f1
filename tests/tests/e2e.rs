//! End to end: a real daemon on port 0, real processes, real WebSocket
//! clients, a proxy that cuts connections.
#![allow(missing_docs, clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use futures_util::SinkExt;
use sha2::{Digest, Sha256};
use tether_client::{ClientError, ExecEvent, ExitReason, StartSpec};
use tether_proto::{
    ClientMsg, CommandId, CommandState, Encoding, ErrorCode, Payload, ReqId, ServerMsg, Stream,
};
use tether_testkit::{CutProxy, bounded, random_file, running};
use tether_tests::{RawWs, TestServer};
use tokio_tungstenite::tungstenite::Message;

fn argv(a: &[&str]) -> StartSpec {
    StartSpec { argv: a.iter().map(|s| s.to_string()).collect(), ..StartSpec::default() }
}

/// A `stdin` frame from no numbered writer.
fn stdin(id: u64, command: &CommandId, data: Vec<u8>) -> ClientMsg {
    ClientMsg::Stdin {
        id: ReqId(id),
        command: command.clone(),
        data: Payload::from(data),
        writer: None,
        offset: None,
    }
}

fn shell(s: &str) -> StartSpec {
    StartSpec { shell: Some(s.to_owned()), ..StartSpec::default() }
}

/// Reads an execution to its exit, hashing stdout (no gap or stderr
/// allowed), pausing `dawdle` after every MiB; asserts the byte count and
/// the hash.
async fn expect_stdout(ex: &mut tether_client::Execution, len: u64, hash: [u8; 32], dawdle: Duration) {
    let mut h = Sha256::new();
    let mut n = 0u64;
    let status = bounded(async {
        loop {
            match ex.next().await.unwrap().unwrap() {
                ExecEvent::Stdout(b) => {
                    n += b.len() as u64;
                    h.update(&b);
                    if !dawdle.is_zero() && n % (1 << 20) < b.len() as u64 {
                        tokio::time::sleep(dawdle).await;
                    }
                }
                ExecEvent::Exit(st) => break st,
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(n, len);
    assert_eq!(status.stdout_bytes, len);
    assert_eq!(<[u8; 32]>::from(h.finalize()), hash);
}

// ---------------------------------------------------------------- basics

#[tokio::test]
async fn streams_are_separate_and_exit_code_is_reported() {
    let s = TestServer::start().await;
    let c = s.client().await;
    let out = bounded(c.run(shell("echo out; echo err >&2; exit 3"))).await.unwrap();
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");
    assert_eq!(out.status.code, Some(3));
    assert_eq!(out.status.reason, ExitReason::Exited);
    assert_eq!((out.status.stdout_bytes, out.status.stderr_bytes), (4, 4));
    assert!(out.status.wall_ms < 10_000);
}

#[tokio::test]
async fn binary_output_is_byte_exact() {
    let s = TestServer::start().await;
    let c = s.client().await;
    let (file, hash) = random_file(3 << 20);
    let out = bounded(c.run(argv(&["cat", file.as_str()]))).await.unwrap();
    assert_eq!(out.lost_bytes, 0);
    assert_eq!(<[u8; 32]>::from(Sha256::digest(&out.stdout)), hash);
}

#[tokio::test]
async fn pacing_makes_a_slow_reader_lossless_with_a_small_ring() {
    let s = TestServer::start().await;
    let c = s.client().await;
    let (file, hash) = random_file(20 << 20);
    // 64 KiB ring, 20 MiB of output, a reader that dawdles: without pacing
    // almost everything would be a gap.
    let spec = StartSpec { ring_bytes: Some(64 << 10), pace: true, ..argv(&["cat", file.as_str()]) };
    let mut ex = c.start(spec).await.unwrap();
    expect_stdout(&mut ex, 20 << 20, hash, Duration::from_millis(20)).await;
}

#[tokio::test]
async fn hundred_megabytes_byte_exact() {
    let s = TestServer::start().await;
    let c = s.client().await;
    let (file, hash) = random_file(100_000_000);
    // A ring as large as the output makes the result independent of how
    // fast this (debug-built) client reads.
    let spec = StartSpec { ring_bytes: Some(128 << 20), ..argv(&["cat", file.as_str()]) };
    let mut ex = c.start(spec).await.unwrap();
    expect_stdout(&mut ex, 100_000_000, hash, Duration::ZERO).await;
}

#[tokio::test]
async fn stdin_and_eof() {
    let s = TestServer::start().await;
    let c = s.client().await;
    let ex = c.start(argv(&["wc", "-c"])).await.unwrap();
    for _ in 0..16 {
        ex.write_stdin(Bytes::from(vec![b'x'; 65536])).await.unwrap();
    }
    ex.close_stdin().await.unwrap();
    let out = bounded(ex.output()).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), (16 * 65536).to_string());
    assert_eq!(out.status.code, Some(0));
}

#[tokio::test]
async fn a_command_that_ignores_stdin_does_not_block_signals() {
    let s = TestServer::start().await;
    let c = s.client().await;
    let ex = c.start(argv(&["sleep", "100"])).await.unwrap();
    let (c2, id) = (c.clone(), ex.id().clone());
    // 16 MiB for a command that never reads: the writer must wait (window),
    // the connection must not.
    let writer = tokio::spawn(async move { c2.write_stdin(&id, Bytes::from(vec![0u8; 16 << 20])).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    ex.signal("INT").await.unwrap();
    let out = bounded(ex.output()).await.unwrap();
    assert_eq!(out.status.signal, Some(2));
    writer.abort();
}

#[tokio::test]
async fn stdin_past_the_window_is_refused_not_buffered() {
    let s = TestServer::start().await;
    let mut raw = RawWs::connect(&s, Encoding::MsgPack).await;
    raw.send(&ClientMsg::Start {
        id: ReqId(1),
        spec: StartSpec { attach: false, ..argv(&["sleep", "100"]) },
    })
    .await;
    let Some(ServerMsg::Started { command, .. }) = raw.recv().await else { panic!("started") };
    // 6 MiB in 512 KiB frames, without waiting for acks.
    for i in 0..12 {
        raw.send(&stdin(10 + i, &command, vec![b'x'; 512 << 10])).await;
    }
    // The pipe takes 64 KiB of the first frame and the window 4 MiB: the
    // last four frames are refused at once, and nothing is acknowledged.
    let mut refused = 0;
    while refused < 4 {
        match raw.recv().await.unwrap() {
            ServerMsg::Error { code: ErrorCode::LimitExceeded, .. } => refused += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    raw.send(&ClientMsg::Kill { id: ReqId(99), command }).await;
}

#[tokio::test]
async fn every_stdin_request_gets_one_reply_even_after_close() {
    let s = TestServer::start().await;
    let mut raw = RawWs::connect(&s, Encoding::MsgPack).await;
    raw.send(&ClientMsg::Start {
        id: ReqId(1),
        spec: StartSpec { attach: false, ..argv(&["sleep", "100"]) },
    })
    .await;
    let Some(ServerMsg::Started { command, .. }) = raw.recv().await else { panic!("started") };
    raw.send(&ClientMsg::CloseStdin { id: ReqId(2), command: command.clone(), writer: None, offset: None })
        .await;
    raw.send(&stdin(3, &command, b"late".to_vec())).await;
    raw.send(&ClientMsg::CloseStdin { id: ReqId(4), command: command.clone(), writer: None, offset: None })
        .await;
    let mut replies = Vec::new();
    while replies.len() < 3 {
        match raw.recv().await.unwrap() {
            ServerMsg::Ok { id } => replies.push((id, None)),
            ServerMsg::Error { id: Some(id), code, .. } => replies.push((id, Some(code))),
            other => panic!("unexpected {other:?}"),
        }
    }
    replies.sort_by_key(|r| r.0);
    assert_eq!(replies[0], (ReqId(2), None));
    assert_eq!(replies[1], (ReqId(3), Some(ErrorCode::StdinClosed)));
    assert_eq!(replies[2], (ReqId(4), Some(ErrorCode::StdinClosed)));
    raw.send(&ClientMsg::Kill { id: ReqId(9), command }).await;
}

/// Many stdin frames sent without waiting for their `ok`s (under the 256
/// a connection may have queued per command) are written in order, whole,
/// and each answered exactly once.
#[tokio::test]
async fn stdin_frames_sent_at_once_are_written_in_order_and_each_answered_once() {
    let s = TestServer::start().await;
    let mut raw = RawWs::connect(&s, Encoding::MsgPack).await;
    raw.send(&ClientMsg::Start { id: ReqId(1), spec: argv(&["cat"]) }).await;
    let Some(ServerMsg::Started { command, .. }) = raw.recv().await else { panic!("started") };
    const FRAMES: u64 = 200;
    let mut sent = Vec::new();
    for i in 0..FRAMES {
        let data = format!("{i:05} {}\n", "x".repeat((i % 97) as usize)).into_bytes();
        sent.extend_from_slice(&data);
        raw.send(&stdin(100 + i, &command, data)).await;
    }
    let (mut answered, mut out) = (vec![0u32; FRAMES as usize], Vec::new());
    bounded(async {
        while answered.contains(&0) || out.len() < sent.len() {
            match raw.recv().await.unwrap() {
                ServerMsg::Ok { id } => answered[(id.0 - 100) as usize] += 1,
                ServerMsg::Output { data, offset, .. } => {
                    assert_eq!(offset, out.len() as u64, "contiguous output");
                    out.extend_from_slice(data.as_bytes());
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await;
    assert!(answered.iter().all(|&n| n == 1), "each frame answered once: {answered:?}");
    assert_eq!(out, sent, "cat echoes the frames in the order they were sent");
    raw.send(&ClientMsg::Kill { id: ReqId(9), command }).await;
}

#[tokio::test]
async fn remove_delivers_the_exit_to_the_attached_requester() {
    let s = TestServer::start().await;
    let c = s.client().await;
    let ex = c.start(argv(&["sleep", "100"])).await.unwrap();
    c.remove(ex.id()).await.unwrap();
    let out = bounded(ex.output()).await.unwrap();
    assert_eq!(out.status.reason, ExitReason::Killed);
}

#[tokio::test]
async fn initial_stdin_in_the_start_request() {
    let s = TestServer::start().await;
    let c = s.client().await;
    let spec = StartSpec { stdin: Some(Payload::from(&b"hello\n"[..])), close_stdin: true, ..argv(&["cat"]) };
    let out = bounded(c.run(spec)).await.unwrap();
    assert_eq!(out.stdout, b"hello\n");
}

#[tokio::test]
async fn signals_reach_the_command() {
    let s = TestServer::start().await;
    let c = s.client().await;
    let mut ex = c
        .start(shell("trap 'echo got-usr1; exit 5' USR1; echo ready; while :; do sleep 0.05; done"))
        .await
        .unwrap();
    assert_eq!(bounded(ex.next()).await.unwrap().unwrap(), ExecEvent::Stdout(Bytes::from_static(b"ready\n")));
    ex.signal("USR1").await.unwrap();
    let out = bounded(ex.output()).await.unwrap();
    assert_eq!(out.stdout, b"got-usr1\n");
    assert_eq!(out.status.code, Some(5));

    let ex = c.start(argv(&["sleep", "100"])).await.unwrap();
    ex.signal("SIGINT").await.unwrap();
    let out = bounded(ex.output()).await.unwrap();
    assert_eq!(out.status.signal, Some(2));
    assert_eq!(out.status.shell_code(), 130);

    let ex = c.start(argv(&["sleep", "100"])).await.unwrap();
    let err = ex.signal("NOTASIGNAL").await.unwrap_err();
    assert!(matches!(err, ClientError::Server { code: ErrorCode::BadRequest, .. }), "{err:?}");
    ex.kill().await.unwrap();
    let out = bounded(ex.output()).await.unwrap();
    assert_eq!(out.status.reason, ExitReason::Killed);
}

#[tokio::test]
async fn kill_leaves_no_descendant() {
    let s = TestServer::start().await;
    let c = s.client().await;
    // A grandchild in the group and one that escaped into its own session.
    let mut ex = c.start(shell("sleep 1000 & echo $!; setsid sleep 1000 & echo $!; wait")).await.unwrap();
    let mut text = String::new();
    while text.lines().count() < 2 {
        match bounded(ex.next()).await.unwrap().unwrap() {
            ExecEvent::Stdout(b) => text.push_str(&String::from_utf8_lossy(&b)),
            other => panic!("unexpected {other:?}"),
        }
    }
    ex.kill().await.unwrap();
    let out = bounded(ex.output()).await.unwrap();
    assert_eq!(out.status.reason, ExitReason::Killed);
    for pid in text.lines().map(|l| l.trim().parse::<i32>().unwrap()) {
        bounded(async {
            while running(pid as u32) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    }
}

#[tokio::test]
async fn timeout_kills_the_whole_group() {
    let s = TestServer::start().await;
    let c = s.client().await;
    let spec = StartSpec {
        timeout_ms: Some(300),
        kill_grace_ms: Some(200),
        ..shell("sleep 1000 & echo $!; trap '' TERM; sleep 1000")
    };
    let out = bounded(c.run(spec)).await.unwrap();
    assert_eq!(out.status.reason, ExitReason::TimedOut);
    let grandchild: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(!running(grandchild as u32), "grandchild {grandchild} survived the timeout");
}

// ------------------------------------------------------------- lifetimes

async fn wait_state(c: &tether_client::Client, id: &CommandId) -> tether_proto::CommandInfo {
    bounded(async {
        loop {
            let info = c.status(id).await.unwrap();
            if info.state == CommandState::Exited {
                return info;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

#[tokio::test]
async fn idle_timeout_kills_an_unattached_command() {
    let s = TestServer::start().await;
    let c = s.client().await;
    let spec = StartSpec { idle_timeout_ms: Some(300), ..argv(&["sleep", "100"]) };
    let (id, _) = c.start_detached(spec).await.unwrap();
    let info = wait_state(&c, &id).await;
    assert_eq!(info.exit.unwrap().reason, ExitReason::IdleTimeout);
}

#[tokio::test]
async fn idle_timeout_does_not_fire_while_attached() {
    let s = TestServer::start().await;
    let c = s.client().await;
    let spec = StartSpec { idle_timeout_ms: Some(200), ..shell("sleep 0.8; echo done") };
    let out = bounded(c.run(spec)).await.unwrap();
    assert_eq!(out.status.reason, ExitReason::Exited);
    assert_eq!(out.stdout, b"done\n");
}

#[tokio::test]
async fn kill_on_disconnect_when_the_client_vanishes() {
    let s = TestServer::start().await;
    let watcher = s.client().await;
    let id = {
        let c = s.client().await;
        let ex = c.start(StartSpec { kill_on_disconnect: true, ..argv(&["sleep", "100"]) }).await.unwrap();
        ex.id().clone()
        // `c` and `ex` drop here: the connection closes.
    };
    let info = wait_state(&watcher, &id).await;
    assert_eq!(info.exit.unwrap().reason, ExitReason::Disconnected);
}

#[tokio::test]
async fn half_open_peer_is_detected_by_ping_timeout() {
    let s = TestServer::with(|cfg| {
        cfg.ping_interval = Duration::from_millis(100);
        cfg.peer_timeout = Duration::from_millis(400);
    })
    .await;
    let watcher = s.client().await;
    let mut raw = RawWs::connect(&s, Encoding::MsgPack).await;
    let spec = StartSpec { kill_on_disconnect: true, ..argv(&["sleep", "100"]) };
    raw.send(&ClientMsg::Start { id: ReqId(1), spec }).await;
    let Some(ServerMsg::Started { command, .. }) = raw.recv().await else { panic!("started") };
    // Stop reading (and so never answer a ping), but keep the socket open.
    let info = wait_state(&watcher, &command).await;
    assert_eq!(info.exit.unwrap().reason, ExitReason::Disconnected);
    drop(raw);
}

#[tokio::test]
async fn half_open_peer_with_a_full_queue_is_dropped_too() {
    let s = TestServer::with(|cfg| {
        cfg.ping_interval = Duration::from_millis(100);
        cfg.peer_timeout = Duration::from_millis(500);
    })
    .await;
    let watcher = s.client().await;
    let mut raw = RawWs::connect(&s, Encoding::MsgPack).await;
    // `yes` fills the socket, the outbound queue and the forwarder; the
    // peer never reads again.
    let spec = StartSpec { kill_on_disconnect: true, ..argv(&["yes"]) };
    raw.send(&ClientMsg::Start { id: ReqId(1), spec }).await;
    let Some(ServerMsg::Started { command, .. }) = raw.recv().await else { panic!("started") };
    let info = wait_state(&watcher, &command).await;
    assert_eq!(info.exit.unwrap().reason, ExitReason::Disconnected);
    drop(raw);
}

#[tokio::test]
async fn ttl_expiry_forgets_the_command() {
    let s = TestServer::start().await;
    let c = s.client().await;
    let out = c.start(StartSpec { ttl_ms: Some(200), ..argv(&["true"]) }).await.unwrap();
    let id = out.id().clone();
    bounded(out.output()).await.unwrap();
    bounded(async {
        loop {
            match c.status(&id).await {
                Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(ClientError::Server { code: ErrorCode::NotFound, .. }) => break,
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await;
    let err = c.attach(&id, [0, 0]).await.unwrap_err();
    assert!(matches!(err, ClientError::Server { code: ErrorCode::NotFound, .. }));
}

#[tokio::test]
async fn output_limit_kills() {
    let s = TestServer::start().await;
    let c = s.client().await;
    let out = bounded(c.run(StartSpec { max_output_bytes: Some(100_000), ..argv(&["yes"]) })).await.unwrap();
    assert_eq!(out.status.reason, ExitReason::OutputLimit);
    assert_eq!(out.stdout.len(), 100_000);
    assert!(out.status.truncated);
}

// ------------------------------------------------------------ fan-out

#[tokio::test]
async fn two_clients_receive_identical_bytes() {
    let s = TestServer::start().await;
    let (a, b) = (s.client().await, s.client().await);
    let spec = StartSpec { ring_bytes: Some(32 << 20), ..shell("head -c 8000000 /dev/urandom; sleep 0.2") };
    let ea = a.start(spec).await.unwrap();
    let eb = b.attach(ea.id(), [0, 0]).await.unwrap();
    let (oa, ob) = bounded(async { tokio::join!(ea.output(), eb.output()) }).await;
    let (oa, ob) = (oa.unwrap(), ob.unwrap());
    assert_eq!(oa.stdout.len(), 8_000_000);
    assert_eq!(Sha256::digest(&oa.stdout), Sha256::digest(&ob.stdout));
    assert_eq!(oa.status, ob.status);
}

#[tokio::test]
async fn a_second_attach_on_one_client_supersedes_the_first() {
    let s = TestServer::start().await;
    let c = s.client().await;
    let (id, _) = c.start_detached(shell("sleep 0.3; echo late")).await.unwrap();
    let mut first = c.attach(&id, [0, 0]).await.unwrap();
    let second = c.attach(&id, [0, 0]).await.unwrap();
    assert!(matches!(bounded(first.next()).await, Some(Err(ClientError::Protocol(_)))));
    drop(first); // must not detach the second
    let out = bounded(second.output()).await.unwrap();
    assert_eq!(out.stdout, b"late\n");
}

#[tokio::test]
async fn a_client_that_stops_reading_does_not_slow_the_other() {
    let s = TestServer::start().await;
    let fast = s.client().await;
    // Start the real producer detached, attach a stalled raw peer first.
    let producer = StartSpec { ring_bytes: Some(64 << 20), ..shell("sleep 0.3; head -c 40000000 /dev/zero") };
    let (id, _) = fast.start_detached(producer).await.unwrap();
    let mut stalled = RawWs::connect(&s, Encoding::MsgPack).await;
    stalled
        .send(&ClientMsg::Attach {
            id: ReqId(1),
            command: id.clone(),
            stdout_offset: 0,
            stderr_offset: 0,
            tail_bytes: None,
            pace: false,
            screen: false,
            size: None,
            window_bytes: None,
            client: None,
        })
        .await;
    // The stalled peer never reads again while the fast one streams.
    let started = std::time::Instant::now();
    let out = bounded(fast.attach(&id, [0, 0]).await.unwrap().output()).await.unwrap();
    assert_eq!(out.stdout.len(), 40_000_000);
    assert_eq!(out.lost_bytes, 0);
    assert!(started.elapsed() < Duration::from_secs(30), "fast client took {:?}", started.elapsed());
    // The command itself ran at full speed: its wall time excludes readers.
    assert!(out.status.wall_ms < 10_000, "command wall time {} ms", out.status.wall_ms);
    drop(stalled);
}

#[tokio::test]
async fn a_reader_too_far_behind_gets_a_gap() {
    let s = TestServer::start().await;
    let c = s.client().await;
    let spec = StartSpec { ring_bytes: Some(64 * 1024), ..shell("head -c 5000000 /dev/zero") };
    let (id, _) = c.start_detached(spec).await.unwrap();
    wait_state(&c, &id).await;
    let mut ex = c.attach(&id, [0, 0]).await.unwrap();
    match bounded(ex.next()).await.unwrap().unwrap() {
        ExecEvent::Gap { stream: Stream::Stdout, from: 0, to } => assert!(to > 4_900_000, "{to}"),
        other => panic!("expected a gap, got {other:?}"),
    }
    let out = bounded(ex.output()).await.unwrap();
    assert!(!out.stdout.is_empty() && out.stdout.len() <= 64 * 1024);
    assert_eq!(out.status.stdout_bytes, 5_000_000);
}

// ------------------------------------------------------------ reconnect

#[tokio::test]
async fn reconnect_through_cutting_proxy_is_byte_exact() {
    let s = TestServer::start().await;
    let proxy = CutProxy::start(s.addr, 200_000, 3_000_000).await;
    let c = s.client_via(&proxy.url()).await;
    let (file, hash) = random_file(50_000_000);
    // The ring holds the whole output, so every resume finds its offset.
    let spec = StartSpec { ring_bytes: Some(64 << 20), ..argv(&["cat", file.as_str()]) };
    let mut ex = c.start(spec).await.unwrap();
    expect_stdout(&mut ex, 50_000_000, hash, Duration::ZERO).await;
    assert!(proxy.cuts() >= 20, "only {} cuts", proxy.cuts());
}

#[tokio::test]
async fn client_notices_a_silent_network_and_resumes() {
    let s = TestServer::start().await;
    let proxy = CutProxy::start(s.addr, u64::MAX - 1, u64::MAX).await;
    let opts = tether_client::ClientOptions {
        keepalive: Duration::from_millis(100),
        peer_timeout: Duration::from_millis(500),
        ..tether_tests::fast_reconnect()
    };
    let c = tether_client::Client::connect_with(&proxy.url(), &s.token, opts).await.unwrap();
    let mut ex = c.start(shell("for i in $(seq 1 30); do echo $i; sleep 0.05; done")).await.unwrap();
    let mut text = String::new();
    let mut froze = false;
    let status = bounded(async {
        loop {
            match ex.next().await.unwrap().unwrap() {
                ExecEvent::Stdout(b) => {
                    text.push_str(&String::from_utf8_lossy(&b));
                    if !froze && text.lines().count() >= 5 {
                        // The network goes silent: no reset, no FIN.
                        proxy.freeze();
                        froze = true;
                    }
                }
                ExecEvent::Exit(st) => break st,
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await;
    assert!(froze);
    let expected: String = (1..=30).map(|i| format!("{i}\n")).collect();
    assert_eq!(text, expected, "every line exactly once across the silent drop");
    assert_eq!(status.code, Some(0));
}

#[tokio::test]
async fn client_reconnects_to_a_restarted_daemon() {
    let s = TestServer::start().await;
    let (addr, token) = (s.addr, s.token.clone());
    let c = s.client().await;
    let ex = c.start(argv(&["sleep", "100"])).await.unwrap();
    s.shutdown().await;
    // The execution's command died with the daemon: its stream says so.
    let restarted = TestServer::on(addr, token, |_| {}).await;
    let mut ex = ex;
    let mut saw_end = false;
    while let Some(ev) = bounded(ex.next()).await {
        match ev {
            Ok(ExecEvent::Exit(st)) => {
                assert_eq!(st.reason, ExitReason::Killed);
                saw_end = true;
            }
            Err(ClientError::Server { code: ErrorCode::NotFound, .. }) => saw_end = true,
            Err(ClientError::Disconnected) => saw_end = true,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(saw_end);
    // The same client object works against the new daemon.
    let out = bounded(c.run(argv(&["echo", "back"]))).await.unwrap();
    assert_eq!(out.stdout, b"back\n");
    drop(restarted);
}

#[tokio::test]
async fn graceful_shutdown_sends_going_away_and_kills_commands() {
    let s = TestServer::start().await;
    let mut raw = RawWs::connect(&s, Encoding::MsgPack).await;
    raw.send(&ClientMsg::Start { id: ReqId(1), spec: argv(&["sleep", "100"]) }).await;
    let Some(ServerMsg::Started { pid, .. }) = raw.recv().await else { panic!("started") };
    let manager = s.manager.clone();
    let shutdown = tokio::spawn(s.shutdown());
    assert_eq!(raw.close_code().await, Some(1001));
    bounded(shutdown).await.unwrap();
    assert!(!running(pid));
    assert!(manager.list().iter().all(|c| c.exit.is_some()));
}

// ------------------------------------------------------------ bad input

async fn still_serves(raw: &mut RawWs) {
    raw.send(&ClientMsg::List { id: ReqId(999), limit: None, cursor: None }).await;
    loop {
        match raw.recv().await {
            Some(ServerMsg::List { id, .. }) => {
                assert_eq!(id, ReqId(999));
                return;
            }
            Some(_) => continue,
            None => panic!("connection closed"),
        }
    }
}

async fn expect_error(raw: &mut RawWs) -> (Option<ReqId>, ErrorCode, String) {
    match raw.recv().await {
        Some(ServerMsg::Error { id, code, message, .. }) => (id, code, message),
        other => panic!("expected an error frame, got {other:?}"),
    }
}

#[tokio::test]
async fn malformed_frames_get_errors_and_the_connection_survives() {
    let s = TestServer::start().await;
    let mut raw = RawWs::connect(&s, Encoding::MsgPack).await;
    // Garbage.
    raw.send_raw(Message::Binary(Bytes::from_static(b"\xc1\xc1garbage"))).await;
    assert_eq!(expect_error(&mut raw).await.1, ErrorCode::BadFrame);
    // Truncated MessagePack.
    let full =
        tether_proto::encode(&ClientMsg::List { id: ReqId(5), limit: None, cursor: None }, Encoding::MsgPack);
    raw.send_raw(Message::Binary(full[..full.len() - 2].to_vec().into())).await;
    assert_eq!(expect_error(&mut raw).await.1, ErrorCode::BadFrame);
    // A header claiming 2^32 - 1 elements.
    raw.send_raw(Message::Binary(Bytes::from_static(&[0xdd, 0xff, 0xff, 0xff, 0xff]))).await;
    assert_eq!(expect_error(&mut raw).await.1, ErrorCode::BadFrame);
    raw.send_raw(Message::Binary(Bytes::from_static(&[0xdf, 0xff, 0xff, 0xff, 0xff, 0xa1, b'a']))).await;
    assert_eq!(expect_error(&mut raw).await.1, ErrorCode::BadFrame);
    // An unknown message type: the id is echoed.
    let unknown = rmp_serde::to_vec_named(&serde_json::json!({"type": "frobnicate", "id": 42})).unwrap();
    raw.send_raw(Message::Binary(unknown.into())).await;
    let (id, code, _) = expect_error(&mut raw).await;
    assert_eq!((id, code), (Some(ReqId(42)), ErrorCode::BadFrame));
    // Wrong frame kind.
    raw.send_raw(Message::Text("{}".into())).await;
    assert_eq!(expect_error(&mut raw).await.1, ErrorCode::BadFrame);
    still_serves(&mut raw).await;
}

#[tokio::test]
async fn oversize_frame_closes_with_1009_and_the_daemon_keeps_serving() {
    let s = TestServer::start().await;
    let mut raw = RawWs::connect(&s, Encoding::MsgPack).await;
    let _ = raw.ws.send(Message::Binary(vec![0u8; 2 << 20].into())).await;
    assert_eq!(raw.close_code().await, Some(1009));
    let mut other = RawWs::connect(&s, Encoding::MsgPack).await;
    still_serves(&mut other).await;
}

#[tokio::test]
async fn auth_and_origin_are_enforced_before_upgrade() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::{HeaderValue, header};
    let s = TestServer::start().await;
    let status = |req| async move {
        match tokio_tungstenite::connect_async(req).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => r.status().as_u16(),
            Ok(_) => 101,
            Err(e) => panic!("{e}"),
        }
    };
    let url = format!("ws://{}/v1/ws", s.addr);
    // No token.
    assert_eq!(status(url.clone().into_client_request().unwrap()).await, 401);
    // Wrong token.
    let mut req = url.clone().into_client_request().unwrap();
    req.headers_mut().insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer nope"));
    assert_eq!(status(req).await, 401);
    // Token in the subprotocol list (browsers).
    let mut req = url.clone().into_client_request().unwrap();
    let protos = format!("tether.v1, tether.token.{}", s.token);
    req.headers_mut().insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_str(&protos).unwrap());
    assert_eq!(status(req).await, 101);
    // Only subprotocols the daemon does not speak.
    let mut req = url.clone().into_client_request().unwrap();
    req.headers_mut()
        .insert(header::AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {}", s.token)).unwrap());
    req.headers_mut().insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("mqtt"));
    assert_eq!(status(req).await, 400);
    // A foreign Origin.
    let mut req = url.clone().into_client_request().unwrap();
    req.headers_mut()
        .insert(header::AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {}", s.token)).unwrap());
    req.headers_mut().insert(header::ORIGIN, HeaderValue::from_static("http://evil.example"));
    assert_eq!(status(req).await, 403);
    // The same origin as the daemon.
    let mut req = url.clone().into_client_request().unwrap();
    req.headers_mut()
        .insert(header::AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {}", s.token)).unwrap());
    req.headers_mut().insert(header::ORIGIN, HeaderValue::from_str(&format!("http://{}", s.addr)).unwrap());
    assert_eq!(status(req).await, 101);
    // Plain HTTP routes are authenticated too; /healthz is not.
    let mut raw = RawWs::connect(&s, Encoding::MsgPack).await;
    still_serves(&mut raw).await;
}

#[tokio::test]
async fn bad_starts_are_typed_errors_and_leave_nothing_running() {
    let s = TestServer::start().await;
    let c = s.client().await;
    let long_arg = "x".repeat(200_000);
    let not_exec = tether_testkit::TempPath::new();
    std::fs::write(&not_exec.0, "#!/bin/sh\necho hi\n").unwrap();
    let cases: Vec<(StartSpec, ErrorCode, Option<i32>)> = vec![
        (argv(&["/nonexistent/program"]), ErrorCode::SpawnFailed, Some(2)),
        (argv(&[not_exec.as_str()]), ErrorCode::SpawnFailed, Some(13)),
        (StartSpec { cwd: Some("/nonexistent".into()), ..argv(&["true"]) }, ErrorCode::SpawnFailed, Some(2)),
        (
            StartSpec { cwd: Some("/etc/hostname".into()), ..argv(&["true"]) },
            ErrorCode::SpawnFailed,
            Some(20),
        ),
        (argv(&["echo", "a\0b"]), ErrorCode::BadRequest, None),
        (
            StartSpec { env: [("K".into(), "v\0".into())].into(), ..argv(&["true"]) },
            ErrorCode::BadRequest,
            None,
        ),
        (argv(&["echo", &long_arg]), ErrorCode::SpawnFailed, Some(7)),
        (StartSpec::default(), ErrorCode::BadRequest, None),
        (StartSpec { shell: Some("true".into()), ..argv(&["true"]) }, ErrorCode::BadRequest, None),
        (StartSpec { ring_bytes: Some(1), ..argv(&["true"]) }, ErrorCode::BadRequest, None),
    ];
    for (spec, code, errno) in cases {
        let dbg = format!("{spec:?}");
        match c.start(spec).await {
            Err(ClientError::Server { code: got, errno: got_errno, message }) => {
                assert_eq!((got, got_errno), (code, errno), "{} -> {message}", &dbg[..dbg.len().min(200)]);
            }
            Ok(_) => panic!("start succeeded: {}", &dbg[..dbg.len().min(200)]),
            Err(e) => panic!("{e}"),
        }
    }
    assert!(c.list().await.unwrap().is_empty(), "failed starts leave no record");
    still_serves(&mut RawWs::connect(&s, Encoding::MsgPack).await).await;
}

#[tokio::test]
async fn json_subprotocol_carries_binary_as_base64() {
    let s = TestServer::start().await;
    let mut raw = RawWs::connect(&s, Encoding::Json).await;
    raw.send(&ClientMsg::Start { id: ReqId(1), spec: shell("printf '\\377\\000abc'") }).await;
    let mut data = Vec::new();
    loop {
        match raw.recv().await.unwrap() {
            ServerMsg::Started { id, .. } => assert_eq!(id, ReqId(1)),
            ServerMsg::Output { data: d, offset, .. } => {
                assert_eq!(offset, data.len() as u64);
                data.extend_from_slice(d.as_bytes());
            }
            ServerMsg::Exit { status, .. } => {
                assert_eq!(status.code, Some(0));
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(data, b"\xff\x00abc");
}

#[tokio::test]
async fn single_command_connection_attaches_and_closes_after_exit() {
    let s = TestServer::start().await;
    let c = s.client().await;
    let (id, _) = c.start_detached(shell("echo one; sleep 0.3; echo two")).await.unwrap();
    bounded(async {
        while c.status(&id).await.unwrap().stdout.end < 4 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let mut raw =
        RawWs::connect_path(&s, &format!("/v1/ws?attach={id}&stdout_offset=2"), Encoding::MsgPack).await;
    let mut got = Vec::new();
    let mut attached = false;
    loop {
        match raw.recv().await {
            Some(ServerMsg::Attached { stdout_offset, .. }) => {
                assert_eq!(stdout_offset, 2);
                attached = true;
            }
            Some(ServerMsg::Output { data, .. }) => got.extend_from_slice(data.as_bytes()),
            Some(ServerMsg::Exit { .. }) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(attached);
    assert_eq!(got, b"e\ntwo\n");
    assert_eq!(raw.close_code().await, Some(1000));
}

#[tokio::test]
async fn healthz_needs_no_token_but_other_routes_do() {
    let s = TestServer::start().await;
    let get = |path: &'static str, auth: Option<String>| {
        let addr = s.addr;
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
            let auth = auth.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
            let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
            sock.write_all(req.as_bytes()).await.unwrap();
            let mut resp = String::new();
            sock.read_to_string(&mut resp).await.unwrap();
            resp
        }
    };
    assert!(get("/healthz", None).await.starts_with("HTTP/1.1 200"));
    assert!(get("/v1/commands", None).await.starts_with("HTTP/1.1 401"));
    let ok = get("/v1/commands", Some(s.token.clone())).await;
    assert!(ok.starts_with("HTTP/1.1 200") && ok.contains("[]"), "{ok}");
}

#[tokio::test]
async fn many_commands_on_one_connection_are_multiplexed() {
    let s = TestServer::start().await;
    let c = s.client().await;
    let mut handles = Vec::new();
    for i in 0..20 {
        let c = c.clone();
        handles.push(tokio::spawn(async move {
            let out = c.run(shell(&format!("for j in 1 2 3; do echo {i}-$j; done"))).await.unwrap();
            assert_eq!(String::from_utf8(out.stdout).unwrap(), format!("{i}-1\n{i}-2\n{i}-3\n"));
        }));
    }
    for h in handles {
        bounded(h).await.unwrap();
    }
}

/// The accept loops run on the connection threads, which outlive any one
/// server: a server whose task is dropped without its stop (its runtime
/// ending) still stops accepting, and its port then refuses connections.
#[tokio::test]
async fn a_server_dropped_without_its_stop_stops_accepting() {
    let s = TestServer::start().await;
    let out = bounded(s.client().await.run(argv(&["true"]))).await.unwrap();
    assert_eq!(out.status.code, Some(0));
    let addr = s.addr;
    s.abort().await;
    // The loops end on their own threads once told: poll until the port
    // refuses (no event tells the end of another thread's loop).
    bounded(async {
        loop {
            match tokio::net::TcpStream::connect(addr).await {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
                Err(e) => panic!("connect: {e}"),
                Ok(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    })
    .await;
}

/// The fds of this process that refer to the socket `fd` refers to.
fn refs_to(fd: std::os::fd::RawFd) -> usize {
    let target = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter(|e| std::fs::read_link(e.path()).is_ok_and(|t| t == target))
        .count()
}

/// `serve`'s `ready` (where the daemon prints "listening") comes once the
/// server holds every fd it holds while it serves: the restart tests take
/// the daemon's open files at that line as what must not grow. The accept
/// loops' duplicates of the listening socket are among them.
#[tokio::test]
async fn ready_comes_once_the_accept_loops_hold_their_sockets() {
    use std::os::fd::AsRawFd;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let fd = listener.as_raw_fd();
    let server = tether_server::Server::new(tether_server::ServerConfig::new(tether_server::Token::new(
        "ready-test-token",
    )));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (at_ready_tx, at_ready) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(server.serve(
        listener,
        async move {
            let _ = stopped.await;
            tether_server::Stop::Shutdown
        },
        move |_| {
            let _ = at_ready_tx.send(refs_to(fd));
        },
    ));
    let at_ready = bounded(at_ready).await.unwrap();
    // Served: the loops run.
    let mut tcp = bounded(tokio::net::TcpStream::connect(addr)).await.unwrap();
    let req = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tokio::io::AsyncWriteExt::write_all(&mut tcp, req.as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    bounded(tokio::io::AsyncReadExt::read_to_end(&mut tcp, &mut reply)).await.unwrap();
    assert!(reply.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&reply));
    assert_eq!(refs_to(fd), at_ready, "the listening socket's fds at `ready` and while serving");
    let _ = stop.send(());
    bounded(task).await.unwrap().unwrap();
}
