//! The LangSmith sandbox dialect at `/compat/langsmith/execute/ws`, driven
//! with the frames the `langsmith` Python client sends
//! (`protocol/compat/langsmith.md` §5).
#![allow(clippy::unwrap_used)]

use futures_util::StreamExt;
use serde_json::{Value, json};
use tether_testkit::{LsWs, bounded, ls_connect, ls_execute, ls_recv, ls_send};
use tether_tests::TestServer;
use tokio_tungstenite::tungstenite::Message;

async fn connect(s: &TestServer, key: &str) -> Result<LsWs, tokio_tungstenite::tungstenite::Error> {
    let (ws, resp) = ls_connect(s.addr, key).await?;
    // The client refuses a handshake that selects a subprotocol.
    assert!(resp.headers().get("sec-websocket-protocol").is_none());
    Ok(ws)
}

/// Reads to the end: (stdout text, stderr text, the last frame); checks
/// that every frame's offset continues where the client's arithmetic
/// (`offset + len(utf8(data))`) left the stream.
async fn drain(ws: &mut LsWs, mut at: [i64; 2]) -> (String, String, Value, [i64; 2]) {
    let (mut out, mut err) = (String::new(), String::new());
    loop {
        let m = ls_recv(ws).await.expect("a frame before the close");
        let i = match m["type"].as_str().unwrap() {
            "stdout" => 0,
            "stderr" => 1,
            "started" => continue,
            _ => return (out, err, m, at),
        };
        let data = m["data"].as_str().unwrap();
        let offset = m["offset"].as_i64().unwrap();
        if !data.contains('\u{FFFD}') {
            assert_eq!(offset, at[i], "frame offset");
        }
        at[i] = offset + data.len() as i64;
        if i == 0 { out.push_str(data) } else { err.push_str(data) }
    }
}

/// Reconnects to `id` from stdout offset `have` and reads to the end: the
/// rest of stdout, and the last frame.
async fn resume(s: &TestServer, id: &str, have: i64) -> (String, Value) {
    let mut ws = connect(s, &s.token).await.unwrap();
    let reconnect = json!({"type": "reconnect", "command_id": id, "stdout_offset": have, "stderr_offset": 0});
    ls_send(&mut ws, &reconnect).await;
    assert_eq!(ls_recv(&mut ws).await.unwrap()["type"], "started");
    let (rest, _, last, _) = drain(&mut ws, [have, 0]).await;
    (rest, last)
}

#[tokio::test]
async fn execute_streams_with_offsets_and_exit() {
    let s = TestServer::start().await;
    let mut ws = connect(&s, &s.token).await.unwrap();
    ls_send(&mut ws, &ls_execute("echo héllo; echo err >&2; exit 3", "0190aaaa")).await;
    let started = ls_recv(&mut ws).await.unwrap();
    assert_eq!(started["type"], "started");
    let id = started["command_id"].as_str().unwrap().to_owned();
    assert!(started["pid"].as_u64().unwrap() > 0);
    let (out, err, last, ends) = drain(&mut ws, [0, 0]).await;
    assert_eq!((out.as_str(), err.as_str()), ("héllo\n", "err\n"));
    assert_eq!(last, json!({"type": "exit", "exit_code": 3}));
    assert_eq!(ends, [7, 4], "byte offsets: é is two bytes");
    assert!(ls_recv(&mut ws).await.is_none(), "closed after exit");
    // A normal tether command, labelled with the client's id.
    let info = s.manager.get(&id).unwrap().info();
    assert_eq!(info.labels["langsmith.command_id"], "0190aaaa");
    // Wrong key: refused at the upgrade.
    assert!(connect(&s, "wrong").await.is_err());
}

#[tokio::test]
async fn execute_is_idempotent_and_reconnect_resumes_at_byte_offsets() {
    let s = TestServer::start().await;
    let cmd = "for i in $(seq 1 5); do printf 'l%s \\303\\251\\n' $i; sleep 0.05; done";
    let mut ws = connect(&s, &s.token).await.unwrap();
    ls_send(&mut ws, &ls_execute(cmd, "idem-1")).await;
    let id = ls_recv(&mut ws).await.unwrap()["command_id"].as_str().unwrap().to_owned();
    drop(ws);
    // The same execute again (the client re-sends when the connection ends
    // before `started`): the same command, from offset 0.
    let mut ws = connect(&s, &s.token).await.unwrap();
    ls_send(&mut ws, &ls_execute(cmd, "idem-1")).await;
    let again = ls_recv(&mut ws).await.unwrap();
    assert_eq!(again["command_id"], id.as_str());
    let first = ls_recv(&mut ws).await.unwrap();
    assert_eq!((first["type"].as_str(), first["offset"].as_i64()), (Some("stdout"), Some(0)));
    let have = first["data"].as_str().unwrap().len() as i64;
    drop(ws);
    // Reconnect from the client's offset: the rest, once, to the exit.
    let (rest, last) = resume(&s, &id, have).await;
    let all = format!("{}{rest}", first["data"].as_str().unwrap());
    assert_eq!(all, (1..=5).map(|i| format!("l{i} é\n")).collect::<String>());
    assert_eq!(last["exit_code"], 0);
    assert_eq!(s.manager.list().len(), 1, "one command for the two executes");
    // Offsets past the end are clamped; an unknown id is CommandNotFound.
    let mut ws = connect(&s, &s.token).await.unwrap();
    ls_send(
        &mut ws,
        &json!({"type": "reconnect", "command_id": "idem-1", "stdout_offset": 1_000_000, "stderr_offset": 0}),
    )
    .await;
    assert_eq!(ls_recv(&mut ws).await.unwrap()["type"], "started");
    assert_eq!(drain(&mut ws, [all.len() as i64, 0]).await.2["type"], "exit");
    let mut ws = connect(&s, &s.token).await.unwrap();
    ls_send(
        &mut ws,
        &json!({"type": "reconnect", "command_id": "nope", "stdout_offset": 0, "stderr_offset": 0}),
    )
    .await;
    let e = ls_recv(&mut ws).await.unwrap();
    assert_eq!((e["type"].as_str(), e["error_type"].as_str()), (Some("error"), Some("CommandNotFound")));
}

#[tokio::test]
async fn invalid_and_split_utf8_keep_the_clients_offsets_exact() {
    let s = TestServer::start().await;
    let mut ws = connect(&s, &s.token).await.unwrap();
    // An é split across two writes, then an invalid byte, then text.
    ls_send(&mut ws, &ls_execute("printf 'a\\303'; sleep 0.1; printf '\\251b\\377c'", "utf8")).await;
    ls_recv(&mut ws).await.unwrap();
    let (out, _, last, ends) = drain(&mut ws, [0, 0]).await;
    assert_eq!(out, "aéb\u{FFFD}c");
    assert_eq!(last["exit_code"], 0);
    // The client's own count lands on the raw end: 6 bytes.
    assert_eq!(ends[0], 6);
}

#[tokio::test]
async fn input_close_stdin_kill_and_timeout() {
    let s = TestServer::start().await;
    // stdin: input then close_stdin (the client sends them unanswered).
    let mut ws = connect(&s, &s.token).await.unwrap();
    let mut e = ls_execute("read a; echo got:$a; cat", "stdin");
    e.as_object_mut().unwrap().remove("close_stdin");
    ls_send(&mut ws, &e).await;
    let id = ls_recv(&mut ws).await.unwrap()["command_id"].as_str().unwrap().to_owned();
    ls_send(&mut ws, &json!({"type": "input", "data": "first\nrest"})).await;
    ls_send(&mut ws, &json!({"type": "close_stdin"})).await;
    let (out, _, last, _) = drain(&mut ws, [0, 0]).await;
    assert_eq!((out.as_str(), last["exit_code"].as_i64()), ("got:first\nrest", Some(0)));
    let _ = id;
    // A queued close_stdin arrives before `reconnect`: applied after binding.
    let mut ws = connect(&s, &s.token).await.unwrap();
    let mut e = ls_execute("cat; echo eof", "early");
    e.as_object_mut().unwrap().remove("close_stdin");
    ls_send(&mut ws, &e).await;
    let id = ls_recv(&mut ws).await.unwrap()["command_id"].as_str().unwrap().to_owned();
    drop(ws);
    let mut ws = connect(&s, &s.token).await.unwrap();
    ls_send(&mut ws, &json!({"type": "close_stdin"})).await;
    ls_send(&mut ws, &json!({"type": "reconnect", "command_id": id, "stdout_offset": 0, "stderr_offset": 0}))
        .await;
    assert_eq!(ls_recv(&mut ws).await.unwrap()["type"], "started");
    assert_eq!(drain(&mut ws, [0, 0]).await.0, "eof\n");
    // kill: the client sends it and closes at once; a reconnect reads 137.
    let mut ws = connect(&s, &s.token).await.unwrap();
    ls_send(&mut ws, &ls_execute("sleep 100", "kill")).await;
    let id = ls_recv(&mut ws).await.unwrap()["command_id"].as_str().unwrap().to_owned();
    ls_send(&mut ws, &json!({"type": "kill"})).await;
    drop(ws);
    let mut ws = connect(&s, &s.token).await.unwrap();
    ls_send(&mut ws, &json!({"type": "reconnect", "command_id": id, "stdout_offset": 0, "stderr_offset": 0}))
        .await;
    assert_eq!(drain(&mut ws, [0, 0]).await.2, json!({"type": "exit", "exit_code": 137}));
    // A timeout is an error frame, not an exit.
    let mut ws = connect(&s, &s.token).await.unwrap();
    let mut e = ls_execute("sleep 100", "timeout");
    e["timeout_seconds"] = json!(1);
    ls_send(&mut ws, &e).await;
    ls_recv(&mut ws).await.unwrap();
    let last = drain(&mut ws, [0, 0]).await.2;
    assert_eq!((last["type"].as_str(), last["error_type"].as_str()), (Some("error"), Some("CommandTimeout")));
    // A start that fails is a CommandError before any `started`.
    let mut ws = connect(&s, &s.token).await.unwrap();
    let mut e = ls_execute("true", "badcwd");
    e["cwd"] = json!("/no/such/dir");
    ls_send(&mut ws, &e).await;
    let m = ls_recv(&mut ws).await.unwrap();
    assert_eq!((m["type"].as_str(), m["error_type"].as_str()), (Some("error"), Some("CommandError")));
}

#[tokio::test]
async fn large_output_comes_in_frames_under_a_mebibyte() {
    let s = TestServer::start().await;
    let mut ws = connect(&s, &s.token).await.unwrap();
    // Control bytes escape to 6 characters each in JSON.
    ls_send(&mut ws, &ls_execute("head -c 3000000 /dev/zero", "big")).await;
    ls_recv(&mut ws).await.unwrap();
    let mut n = 0;
    loop {
        let msg = bounded(ws.next()).await.unwrap().unwrap();
        let Message::Text(t) = msg else { continue };
        assert!(t.len() < 1 << 20, "a frame of {} bytes", t.len());
        let v: Value = serde_json::from_str(&t).unwrap();
        match v["type"].as_str().unwrap() {
            "stdout" => {
                assert_eq!(v["offset"].as_i64().unwrap(), n);
                n += v["data"].as_str().unwrap().len() as i64;
            }
            "exit" => break,
            _ => {}
        }
    }
    assert_eq!(n, 3_000_000);
}

/// A client that acknowledges nothing loses nothing of a fast writer when
/// its network path stops forwarding and then drops: what the daemon sent
/// but the path never delivered is still in the ring when the client comes
/// back from what it got. The daemon paces such a client by what its socket
/// delivered (the peer's TCP acknowledged), not by what it read: the frames
/// queued for the socket and the socket's own send buffer (on loopback more
/// than a MiB) are not the client's.
#[tokio::test]
async fn a_path_that_stalls_then_drops_loses_nothing_of_a_fast_writer() {
    const RING: usize = 1 << 20;
    let s = TestServer::with(|c| c.langsmith_ring_bytes = Some(RING)).await;
    // 6.9 MB, a line for every number: a skipped byte shows.
    let lines = 1_000_000;
    let want: String = (1..=lines).map(|i| format!("{i}\n")).collect();
    let proxy = tether_testkit::CutProxy::bounded(s.addr, 64 << 10).await;
    let mut ws = connect_to(proxy.addr, &s.token).await;
    ls_send(&mut ws, &ls_execute(&format!("seq 1 {lines}"), "stall-1")).await;
    let id = ls_recv(&mut ws).await.unwrap()["command_id"].as_str().unwrap().to_owned();
    let mut got = String::new();
    while got.len() < 200_000 {
        let m = ls_recv(&mut ws).await.expect("output");
        assert_eq!(m["type"], "stdout", "{m}");
        assert_eq!(m["offset"].as_u64().unwrap(), got.len() as u64, "frame offset");
        got.push_str(m["data"].as_str().unwrap());
    }
    // The path stops forwarding; the command runs on until it is held
    // back (its output's end stops moving).
    proxy.freeze();
    let h = s.manager.get(&id).unwrap();
    let held = tether_testkit::bounded(async {
        let mut last = (h.info().offsets[0].1, 0);
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            let end = h.info().offsets[0].1;
            last = if end == last.0 { (end, last.1 + 1) } else { (end, 0) };
            if last.1 == 3 {
                return end;
            }
        }
    })
    .await;
    assert!(held < want.len() as u64, "held back before its end: {held}");
    // The path drops. What it had delivered still reaches the client.
    proxy.cut_all();
    while let Some(m) = ls_recv(&mut ws).await {
        assert_eq!(m["type"], "stdout", "{m}");
        assert_eq!(m["offset"].as_u64().unwrap(), got.len() as u64, "frame offset");
        got.push_str(m["data"].as_str().unwrap());
    }
    let first = h.info().offsets[0].0;
    assert!(
        first <= got.len() as u64,
        "the ring no longer holds what the client missed: it has {} bytes, the ring starts at {first} \
         (the output had reached {held}, half a ring past where it was paced)",
        got.len()
    );
    // Back, from where it was: the rest, whole.
    let (rest, last) = resume(&s, &id, got.len() as i64).await;
    got.push_str(&rest);
    assert_eq!(last["exit_code"], 0);
    assert!(
        got == want,
        "{} bytes of {}, first difference at {:?}",
        got.len(),
        want.len(),
        got.bytes().zip(want.bytes()).position(|(a, b)| a != b)
    );
}

async fn connect_to(addr: std::net::SocketAddr, key: &str) -> LsWs {
    ls_connect(addr, key).await.unwrap().0
}
