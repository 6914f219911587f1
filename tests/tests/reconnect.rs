//! Network loss never costs a byte, a keystroke or a session: resumable
//! stdin, idempotent starts, flow-controlled executions, keepalive under a
//! flood, the LangSmith dialect's connection loop, and the review findings
//! of issue 12, each against a real daemon.
#![allow(missing_docs, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use sha2::{Digest, Sha256};
use tether_client::{ExecEvent, ExitReason, StartSpec};
use tether_proto::{ClientMsg, CommandId, Encoding, ErrorCode, Payload, PtySpec, ReqId, ServerMsg};
use tether_testkit::{FaultProxy, bounded, hex, ls_connect, random_bytes, until};
use tether_tests::{RawWs, TestServer};
use tokio_tungstenite::tungstenite::Message;

fn shell(s: &str) -> StartSpec {
    StartSpec { shell: Some(s.to_owned()), ..StartSpec::default() }
}

// ------------------------------------------------ review finding 3: PTY EOF

/// `close_stdin` on a terminal types end-of-file; the terminal stays open,
/// so later stdin is written, not refused as `stdin_closed`.
#[tokio::test]
async fn a_terminal_takes_stdin_after_close_stdin() {
    let s = TestServer::start().await;
    let mut raw = RawWs::connect(&s, Encoding::MsgPack).await;
    let spec = tether_proto::StartSpec {
        // Two reads of stdin, each ended by an end-of-file.
        shell: Some("cat; echo first-eof; cat; echo second-eof".into()),
        pty: Some(PtySpec::default()),
        ..tether_proto::StartSpec::default()
    };
    raw.send(&ClientMsg::Start { id: ReqId(1), spec }).await;
    let command = loop {
        if let Some(ServerMsg::Started { command, .. }) = raw.recv().await {
            break command;
        }
    };
    let stdin = |id, data: &[u8]| ClientMsg::Stdin {
        id: ReqId(id),
        command: command.clone(),
        data: Payload::from(data),
        writer: None,
        offset: None,
    };
    let close =
        |id| ClientMsg::CloseStdin { id: ReqId(id), command: command.clone(), writer: None, offset: None };
    raw.send(&stdin(2, b"one\n")).await;
    raw.send(&close(3)).await;
    raw.send(&stdin(4, b"two\n")).await;
    raw.send(&close(5)).await;
    let mut oks = Vec::new();
    let mut out = String::new();
    // Until the exit and an `ok` for each request: they come from
    // different tasks, in either order.
    let mut exited = false;
    bounded(async {
        while !exited || oks.len() < 4 {
            match raw.recv().await.unwrap() {
                ServerMsg::Ok { id } => oks.push(id.0),
                ServerMsg::Error { id, code, message, .. } => panic!("{id:?} refused: {code:?} {message}"),
                ServerMsg::Output { data, .. } => out.push_str(&String::from_utf8_lossy(&data.0)),
                ServerMsg::Exit { .. } => exited = true,
                _ => {}
            }
        }
    })
    .await;
    oks.sort();
    assert_eq!(oks, [2, 3, 4, 5]);
    assert!(out.contains("first-eof") && out.contains("two") && out.contains("second-eof"), "{out}");
}

// ------------------------------------------- review finding 4: pings in a flood

/// A client that receives a flood and sends nothing but pongs is pinged
/// even while its outbound queue is full, so it is not dropped as silent.
#[tokio::test]
async fn a_peer_busy_receiving_a_flood_is_still_pinged() {
    // Peer timeout 2 s: before pings jumped the queue, a flooded peer
    // was never pinged and was dropped at it; 2 s also leaves room for a
    // reader slowed by a busy machine (a send the peer takes no part of for
    // the peer timeout drops it, rightly).
    let s = TestServer::with(|c| {
        c.ping_interval = Duration::from_millis(200);
        c.peer_timeout = Duration::from_secs(2);
        c.outbound_queue = 4;
    })
    .await;
    let mut raw = RawWs::connect(&s, Encoding::MsgPack).await;
    let spec = tether_proto::StartSpec {
        shell: Some("exec yes flood-flood-flood-flood-flood-flood".into()),
        ..tether_proto::StartSpec::default()
    };
    raw.send(&ClientMsg::Start { id: ReqId(1), spec }).await;
    // Read slowly (the queue stays full) for several peer timeouts; reading
    // answers pings with pongs, which is all this peer ever sends.
    let start = Instant::now();
    let mut frames = 0;
    while start.elapsed() < Duration::from_secs(6) {
        match bounded(raw.ws.next()).await {
            Some(Ok(Message::Close(c))) => panic!("dropped after {:?}: {c:?}", start.elapsed()),
            Some(Ok(_)) => frames += 1,
            other => panic!("connection ended after {:?}: {other:?}", start.elapsed()),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(frames > 100, "the flood flowed ({frames} frames)");
}

// ----------------------------------- review finding 6: the Rust client's driver

/// An execution nobody reads holds back only its own command: another
/// execution on the same client runs to its end meanwhile.
#[tokio::test]
async fn an_unread_execution_does_not_stall_the_client() {
    let s = TestServer::start().await;
    let c = s.client().await;
    // Paced and never read: it must wait for its reader, alone.
    let flood = c.start(StartSpec { pace: true, ..shell("exec yes unread-unread-unread") }).await.unwrap();
    // Let it fill whatever it can fill (the client's queue for it, the
    // connection): until it stops growing.
    let h = s.manager.get(&flood.id().0).unwrap();
    let mut last = u64::MAX;
    bounded(async {
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let end = h.info().offsets[0].1;
            if end == last {
                break;
            }
            last = end;
        }
    })
    .await;
    let other = bounded(c.run(shell("seq 1 20000"))).await.unwrap();
    let expected: String = (1..=20000).map(|i| format!("{i}\n")).collect();
    assert_eq!(String::from_utf8(other.stdout).unwrap(), expected);
    // The flood was held back by its window, not read into memory.
    assert!(last < 16 << 20, "paced to its reader: {last} bytes");
    c.kill(flood.id()).await.unwrap();
}

/// Writing all of stdin before reading any output does not deadlock: the
/// stdin acknowledgements are not stuck behind unread output (hundreds of
/// output frames here).
#[tokio::test]
async fn writing_all_stdin_before_reading_output_completes() {
    let s = TestServer::start().await;
    let c = s.client().await;
    let data = random_bytes(32 << 20);
    let spec = StartSpec { ring_bytes: Some(64 << 20), ..shell("cat") };
    let ex = c.start(spec).await.unwrap();
    bounded(ex.write_stdin(Bytes::from(data.clone()))).await.unwrap();
    bounded(ex.close_stdin()).await.unwrap();
    let out = bounded(ex.output()).await.unwrap();
    assert_eq!(out.lost_bytes, 0);
    assert_eq!(out.stdout.len(), data.len());
    assert!(out.stdout == data, "byte-exact");
}

// ------------------------------------------------ resumable stdin, end to end

/// Stdin piped through a network that resets every few hundred
/// milliseconds reaches the command byte-exact: bytes in flight at a reset
/// are resent, and the daemon drops those it already has.
#[tokio::test]
async fn stdin_survives_repeated_resets_byte_exact() {
    let s = TestServer::start().await;
    let proxy = FaultProxy::start(s.addr).await;
    let c = s.client_via(&proxy.url()).await;
    let data = random_bytes(16 << 20);
    let want = hex(&Sha256::digest(&data));
    let ex = c.start(shell("sha256sum")).await.unwrap();
    let writer = {
        let ex_id = ex.id().clone();
        let c = c.clone();
        let data = data.clone();
        tokio::spawn(async move {
            for (i, chunk) in data.chunks(256 * 1024).enumerate() {
                c.write_stdin(&ex_id, Bytes::copy_from_slice(chunk)).await.unwrap();
                // Spread over about a second and a half, for many resets.
                if i % 4 == 3 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            c.close_stdin(&ex_id).await.unwrap();
        })
    };
    let chaos = async {
        while !writer.is_finished() {
            tokio::time::sleep(Duration::from_millis(70)).await;
            proxy.reset_all();
        }
    };
    let (out, ()) = bounded(async { tokio::join!(ex.output(), chaos) }).await;
    let out = out.unwrap();
    assert!(proxy.resets() >= 3, "resets happened: {}", proxy.resets());
    let got = String::from_utf8(out.stdout).unwrap();
    assert!(got.starts_with(&want), "sha256 of stdin: {got} != {want}");
}

/// The same for a terminal: keystrokes typed through resets arrive once
/// each, in order.
#[tokio::test]
async fn terminal_stdin_survives_resets_byte_exact() {
    let s = TestServer::start().await;
    let proxy = FaultProxy::start(s.addr).await;
    let c = s.client_via(&proxy.url()).await;
    let dir = tether_testkit::TempPath::new();
    // Raw mode, no echo: the bytes reach `head` as typed.
    let data: Vec<u8> = (0..2_000_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let script = format!("stty raw -echo; head -c {} > {}; echo wrote", data.len(), dir.as_str());
    let spec = StartSpec { pty: Some(PtySpec::default()), ..shell(&script) };
    let ex = c.start(spec).await.unwrap();
    let id = ex.id().clone();
    let writer = {
        let c = c.clone();
        let data = data.clone();
        let id = id.clone();
        tokio::spawn(async move {
            // Wait for the terminal to be raw before typing.
            tokio::time::sleep(Duration::from_millis(300)).await;
            for chunk in data.chunks(4096) {
                c.write_stdin(&id, Bytes::copy_from_slice(chunk)).await.unwrap();
            }
        })
    };
    let chaos = async {
        while !writer.is_finished() {
            tokio::time::sleep(Duration::from_millis(150)).await;
            proxy.reset_all();
        }
    };
    let (out, ()) = bounded(async { tokio::join!(ex.output(), chaos) }).await;
    let out = out.unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("wrote"));
    let got = std::fs::read(&dir.0).unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data, "byte-exact, each keystroke once");
    assert!(proxy.resets() >= 2, "resets happened: {}", proxy.resets());
}

/// At the protocol level: a resend from the same writer is trimmed to the
/// bytes not yet taken, a hole is refused, and a repeated close is `ok`.
#[tokio::test]
async fn a_numbered_stdin_resend_is_trimmed_and_a_hole_refused() {
    let s = TestServer::start().await;
    let mut raw = RawWs::connect(&s, Encoding::MsgPack).await;
    let spec = tether_proto::StartSpec { argv: vec!["cat".into()], ..tether_proto::StartSpec::default() };
    raw.send(&ClientMsg::Start { id: ReqId(1), spec }).await;
    let command = loop {
        if let Some(ServerMsg::Started { command, .. }) = raw.recv().await {
            break command;
        }
    };
    let w = Some("w-test".to_owned());
    let stdin = |id, offset, data: &[u8]| ClientMsg::Stdin {
        id: ReqId(id),
        command: command.clone(),
        data: Payload::from(data),
        writer: w.clone(),
        offset: Some(offset),
    };
    raw.send(&stdin(2, 0, b"hello ")).await;
    raw.send(&stdin(3, 0, b"hello world\n")).await; // a resend plus more
    raw.send(&stdin(4, 6, b"world\n")).await; // all old
    raw.send(&stdin(5, 99, b"hole")).await;
    let close = |id| ClientMsg::CloseStdin {
        id: ReqId(id),
        command: command.clone(),
        writer: w.clone(),
        offset: Some(12),
    };
    raw.send(&close(6)).await;
    raw.send(&close(7)).await; // repeated: ok
    raw.send(&stdin(8, 0, b"hello ")).await; // a resend after the close: ok
    let mut replies = std::collections::BTreeMap::new();
    let mut out = Vec::new();
    // Until the exit and a reply to each of the seven requests: the exit
    // (the attachment's forwarder) and a reply (the stdin path) come from
    // different tasks, in either order.
    let mut exited = false;
    bounded(async {
        while !exited || replies.len() < 7 {
            match raw.recv().await.unwrap() {
                ServerMsg::Ok { id } => {
                    replies.insert(id.0, None);
                }
                ServerMsg::Error { id, code, .. } => {
                    replies.insert(id.unwrap().0, Some(code));
                }
                ServerMsg::Output { data, .. } => out.extend_from_slice(&data.0),
                ServerMsg::Exit { .. } => exited = true,
                _ => {}
            }
        }
    })
    .await;
    assert_eq!(out, b"hello world\n");
    let want: std::collections::BTreeMap<u64, Option<ErrorCode>> =
        [(2, None), (3, None), (4, None), (5, Some(ErrorCode::BadRequest)), (6, None), (7, None), (8, None)]
            .into_iter()
            .collect();
    assert_eq!(replies, want);
}

// ------------------------------------------------------- idempotent starts

/// A start whose reply is lost (the request arrived, the connection died
/// before `started` came back) is sent again after the reconnect with its
/// request key: one command, its whole output, no orphan.
#[tokio::test]
async fn a_start_in_flight_at_a_loss_makes_one_command() {
    let s = TestServer::start().await;
    let proxy = FaultProxy::start(s.addr).await;
    let c = s.client_via(&proxy.url()).await;
    proxy.freeze_replies();
    let mut spec = StartSpec { pace: true, ..shell("sleep 0.3; seq 1 50000") };
    spec.labels.insert("test".into(), "one-start".into());
    let start = tokio::spawn({
        let c = c.clone();
        async move { c.start(spec).await }
    });
    // The daemon has started it; the `started` is stuck in the proxy.
    until("the command started", || s.manager.list().iter().any(|i| i.labels.contains_key("test"))).await;
    proxy.reset_all();
    proxy.restore();
    let ex = bounded(start).await.unwrap().unwrap();
    let out = bounded(ex.output()).await.unwrap();
    let expected: String = (1..=50000).map(|i| format!("{i}\n")).collect();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), expected);
    let started = s.manager.list().iter().filter(|i| i.labels.contains_key("test")).count();
    assert_eq!(started, 1, "one command for one start");
}

/// At the protocol level: the same key twice is the same command, and the
/// key names it wherever a command id goes.
#[tokio::test]
async fn a_repeated_request_key_answers_with_the_same_command() {
    let s = TestServer::start().await;
    let mut raw = RawWs::connect(&s, Encoding::Json).await;
    let spec = tether_proto::StartSpec {
        shell: Some("echo once; sleep 30".into()),
        request_key: Some("k-test-1".into()),
        attach: false,
        ..tether_proto::StartSpec::default()
    };
    let mut ids = Vec::new();
    for id in [1, 2] {
        raw.send(&ClientMsg::Start { id: ReqId(id), spec: spec.clone() }).await;
        match raw.recv().await.unwrap() {
            ServerMsg::Started { command, .. } => ids.push(command),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(ids[0], ids[1]);
    assert_eq!(s.manager.list().len(), 1);
    raw.send(&ClientMsg::Status { id: ReqId(3), command: CommandId("k-test-1".into()) }).await;
    match raw.recv().await.unwrap() {
        ServerMsg::Status { info, .. } => assert_eq!(info.command, ids[0]),
        other => panic!("{other:?}"),
    }
    // Attached by its key, the command is named by its id in every frame.
    raw.send(&ClientMsg::Attach {
        id: ReqId(9),
        command: CommandId("k-test-1".into()),
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
    match raw.recv().await.unwrap() {
        ServerMsg::Attached { command, .. } => assert_eq!(command, ids[0]),
        other => panic!("{other:?}"),
    }
    match raw.recv().await.unwrap() {
        ServerMsg::Output { command, data, .. } => {
            assert_eq!(command, ids[0]);
            assert_eq!(&data.0[..], b"once\n");
        }
        other => panic!("{other:?}"),
    }
    raw.send(&ClientMsg::Detach { id: ReqId(10), command: CommandId("k-test-1".into()) }).await;
    assert!(matches!(raw.recv().await.unwrap(), ServerMsg::Ok { id: ReqId(10) }));
    until("detached by its key", || s.manager.get("k-test-1").unwrap().info().attached == 0).await;
    // A bad key is refused.
    let bad = tether_proto::StartSpec { request_key: Some(String::new()), ..spec };
    raw.send(&ClientMsg::Start { id: ReqId(4), spec: bad }).await;
    assert!(matches!(raw.recv().await.unwrap(), ServerMsg::Error { code: ErrorCode::BadRequest, .. }));
    raw.send(&ClientMsg::Kill { id: ReqId(5), command: ids[0].clone() }).await;

    // The same for a named shell: one command in its history.
    let shell = tether_proto::ShellSpec { name: Some("keyed".into()), ..tether_proto::ShellSpec::default() };
    raw.send(&ClientMsg::ShellCreate { id: ReqId(6), spec: shell }).await;
    let run = tether_proto::ShellRunSpec {
        script: "echo once".into(),
        request_key: Some("k-test-shell".into()),
        attach: false,
        ..tether_proto::ShellRunSpec::default()
    };
    let mut ids = Vec::new();
    for id in [7, 8] {
        raw.send(&ClientMsg::ShellRun { id: ReqId(id), shell: "keyed".into(), spec: run.clone() }).await;
        loop {
            match raw.recv().await.unwrap() {
                ServerMsg::Started { command, .. } => {
                    ids.push(command);
                    break;
                }
                ServerMsg::Error { code, message, .. } => panic!("{code:?} {message}"),
                _ => {}
            }
        }
    }
    assert_eq!(ids[0], ids[1]);
    assert_eq!(s.manager.shell("keyed").unwrap().history().len(), 1);
}

// -------------------------------------- review findings 1 and 2: LangSmith loop

/// A WebSocket to the LangSmith dialect (JSON text frames, no hello).
/// Input streamed to `cat` while its output goes unread fills the stdin
/// queue; a `kill` still gets through at once.
#[tokio::test]
async fn langsmith_kill_gets_through_a_full_stdin_queue() {
    let s = TestServer::start().await;
    let mut ws = ls_connect(s.addr, &s.token).await.unwrap().0;
    let exec = r#"{"type":"execute","command":"cat","command_id":"ls-kill-test","close_stdin":false}"#;
    ws.send(Message::Text(exec.into())).await.unwrap();
    let chunk = "x".repeat(64 * 1024);
    let frame = serde_json::json!({"type": "input", "data": chunk}).to_string();
    // 8 MiB of input, output never read: cat blocks, its stdin fills.
    for _ in 0..128 {
        bounded(ws.send(Message::Text(frame.clone().into()))).await.unwrap();
    }
    bounded(ws.send(Message::Text(r#"{"type":"kill"}"#.into()))).await.unwrap();
    let h = s.manager.get("ls-kill-test").unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(10), h.wait()).await.expect("killed within 10 s");
    assert_eq!(exit.reason, tether_exec::ExitReason::Killed);
}

/// A peer that stops reading (half-open) is dropped after the peer
/// timeout, which detaches it; it does not hold its command for ever.
#[tokio::test]
async fn langsmith_drops_a_peer_that_stops_reading() {
    let s = TestServer::with(|c| {
        c.ping_interval = Duration::from_millis(200);
        c.peer_timeout = Duration::from_secs(1);
    })
    .await;
    let mut ws = ls_connect(s.addr, &s.token).await.unwrap().0;
    let exec = r#"{"type":"execute","command":"exec yes half-open-half-open","command_id":"ls-half-open"}"#;
    ws.send(Message::Text(exec.into())).await.unwrap();
    let h = {
        let start = Instant::now();
        loop {
            if let Ok(h) = s.manager.get("ls-half-open") {
                break h;
            }
            assert!(start.elapsed() < tether_testkit::LIMIT);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    until("attached", || h.info().attached == 1).await;
    // Never read again, never answer a ping: the daemon must give up.
    let start = Instant::now();
    until("the silent peer is dropped", || h.info().attached == 0).await;
    assert!(start.elapsed() < Duration::from_secs(10), "dropped after {:?}", start.elapsed());
    drop(ws);
    h.kill().await.unwrap();
}

// ------------------------------------------------------------- sanity

/// The client's kill survives a reset too: the command ends as killed.
#[tokio::test]
async fn exit_reason_after_kill_through_resets() {
    let s = TestServer::start().await;
    let proxy = FaultProxy::start(s.addr).await;
    let c = s.client_via(&proxy.url()).await;
    let mut ex = c.start(shell("echo ready; sleep 60")).await.unwrap();
    assert!(matches!(bounded(ex.next()).await, Some(Ok(ExecEvent::Stdout(_)))));
    proxy.freeze_replies();
    let kill = tokio::spawn({
        let c = c.clone();
        let id = ex.id().clone();
        async move { c.kill(&id).await }
    });
    until("killed", || s.manager.list().iter().all(|i| i.exit.is_some())).await;
    proxy.reset_all();
    proxy.restore();
    bounded(kill).await.unwrap().unwrap();
    let info = s.manager.list().pop().unwrap();
    assert_eq!(info.exit.unwrap().reason, tether_exec::ExitReason::Killed);
    let _ = ExitReason::Killed;
}

// ---------------------------------------------------------- drain grace

/// Output a background process writes after the command's leader exits is
/// read up to the drain grace, set per command or per daemon, for pipes
/// and terminals alike.
#[tokio::test]
async fn output_after_the_leader_exits_is_read_up_to_the_drain_grace() {
    let s = TestServer::start().await;
    let c = s.client().await;
    // On a terminal the job must outlive the SIGHUP of the session's end:
    // ignored before the fork, so there is no window for it.
    let script = "trap '' HUP; (sleep 0.5; echo late) & echo early";
    for pty in [false, true] {
        let pty_spec = pty.then(PtySpec::default);
        let long = StartSpec { drain_grace_ms: Some(5_000), pty: pty_spec.clone(), ..shell(script) };
        let out = bounded(c.run(long)).await.unwrap();
        let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
        assert_eq!(text, "early\nlate\n", "pty={pty}");
        let short = StartSpec { drain_grace_ms: Some(50), pty: pty_spec, ..shell(script) };
        let out = bounded(c.run(short)).await.unwrap();
        let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
        assert_eq!(text, "early\n", "pty={pty}");
    }
    // A drain grace past the daemon's limit is refused.
    let too_long = StartSpec { drain_grace_ms: Some(10_000_000), ..shell("true") };
    assert!(c.start(too_long).await.is_err());

    // The daemon's default applies to commands that say nothing.
    let s = TestServer::with(|cfg| cfg.manager.drain_grace = Duration::from_secs(5)).await;
    let c = s.client().await;
    let out = bounded(c.run(shell(script))).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "early\nlate\n");
}

/// A paced command writing as fast as it can, read by a client whose
/// connection is reset again and again: every byte arrives once, no gap,
/// although a window of output is in flight at every reset (more than the
/// ring holds).
#[tokio::test]
async fn paced_output_survives_resets_with_a_window_in_flight() {
    let s = TestServer::start().await;
    let proxy = FaultProxy::start(s.addr).await;
    let c = s.client_via(&proxy.url()).await;
    let len: usize = 48 << 20;
    let spec = StartSpec {
        pace: true,
        // The same bytes on both streams.
        ..shell(&format!("head -c {len} /dev/urandom | tee /dev/stderr"))
    };
    let ex = c.start(spec).await.unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    let chaos = async {
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
            proxy.reset_all();
        }
    };
    let read = async {
        let out = ex.output().await;
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        out
    };
    let (out, ()) = bounded(async { tokio::join!(read, chaos) }).await;
    let out = out.unwrap();
    assert_eq!(out.lost_bytes, 0, "no gap ({} resets)", proxy.resets());
    assert!(proxy.resets() >= 3, "resets happened: {}", proxy.resets());
    assert_eq!((out.stdout.len(), out.stderr.len()), (len, len));
    assert!(out.stderr == out.stdout, "both streams byte-exact");
}
