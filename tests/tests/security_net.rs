//! The daemon's network perimeter: connections that never authenticate
//! (idle, slow headers, a flood of them) are bounded and closed, token
//! rotation revokes the old token and the connections that used it, and
//! `Host`/`Origin` headers are checked so a DNS-rebinding page is refused.
#![allow(missing_docs, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use tether_proto::{ClientMsg, Encoding, ReqId, ServerMsg, StartSpec};
use tether_server::Token;
use tether_testkit::bounded;
use tether_tests::{RawWs, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Waits until the daemon closes `s` (EOF or reset), reading and dropping
/// whatever it sends; `false` if it is still open after `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    tokio::time::timeout(within, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// One HTTP/1.1 request on a kept-alive connection; the status code (the
/// body is read by its Content-Length).
async fn request(s: &mut TcpStream, head: &str) -> Option<u16> {
    s.write_all(head.as_bytes()).await.ok()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let text = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let len: usize = text
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            while got.len() < end + 4 + len {
                let n = s.read(&mut buf).await.ok()?;
                if n == 0 {
                    return None;
                }
                got.extend_from_slice(&buf[..n]);
            }
            return text.split(' ').nth(1)?.parse().ok();
        }
        let n = s.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&buf[..n]);
    }
}

/// Runs `echo` through a fresh client; bounded by `within`.
async fn client_runs_a_command(server: &TestServer, within: Duration) {
    let run = async {
        let c = server.client().await;
        let spec = StartSpec { argv: vec!["echo".into(), "still served".into()], ..StartSpec::default() };
        let out = c.start(spec).await.unwrap().output().await.unwrap();
        assert_eq!(out.stdout, b"still served\n".to_vec());
    };
    tokio::time::timeout(within, run).await.expect("a real client got through in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_authenticate_are_closed_within_the_timeout() {
    let server = TestServer::with(|cfg| {
        cfg.unauthenticated_timeout = Duration::from_secs(1);
        cfg.header_timeout = Duration::from_secs(1);
    })
    .await;
    let t0 = Instant::now();
    // Idle: connects and sends nothing.
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    // Slow headers: one byte of a request head at a time, never finished.
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    let addr = server.addr;
    let dribble = tokio::spawn(async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        for b in b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: ".iter().chain([b'a'; 400].iter()) {
            if s.write_all(&[*b]).await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    });
    slow.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    // Busy without the token: a request answered 401 every 200 ms, each
    // well within the header timeout.
    let mut busy = TcpStream::connect(server.addr).await.unwrap();
    let busy_task = tokio::spawn(async move {
        let head = format!("GET /v1/commands HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        while request(&mut busy, &head).await == Some(401) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Instant::now()
    });
    assert!(closed_within(&mut idle, Duration::from_secs(4)).await, "an idle socket was left open");
    assert!(closed_within(&mut slow, Duration::from_secs(4)).await, "a slow-header socket was left open");
    let busy_end = tokio::time::timeout(Duration::from_secs(4), busy_task)
        .await
        .expect("an unauthenticated keep-alive connection was left open")
        .unwrap();
    assert!(busy_end - t0 < Duration::from_secs(4));
    assert!(
        tokio::time::timeout(Duration::from_secs(4), dribble)
            .await
            .expect("the dribbler was cut off")
            .unwrap(),
        "a dribbling client finished its 450-byte head over 9 s"
    );
    // The daemon still serves.
    client_runs_a_command(&server, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unauthenticated_sockets_leaves_room_for_clients_with_the_token() {
    let server = TestServer::with(|cfg| {
        cfg.max_connections = 32;
        cfg.max_unauthenticated = 8;
        cfg.unauthenticated_timeout = Duration::from_secs(60);
        cfg.header_timeout = Duration::from_secs(60);
    })
    .await;
    // An authenticated keep-alive connection, made before the flood.
    let mut authed = TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "GET /v1/commands HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\r\n",
        server.addr, server.token
    );
    assert_eq!(bounded(request(&mut authed, &head)).await, Some(200));
    // Three times the unauthenticated share, half of them with a started
    // request head.
    let mut flood = Vec::new();
    for i in 0..24 {
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        if i % 2 == 1 {
            s.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n").await.unwrap();
        }
        flood.push(s);
    }
    // The oldest unauthenticated sockets were closed, the newest are held.
    let (old, new) = flood.split_at_mut(16);
    for (i, s) in old.iter_mut().enumerate() {
        assert!(closed_within(s, Duration::from_secs(5)).await, "flood socket {i} is still open");
    }
    for (i, s) in new.iter_mut().enumerate() {
        assert!(!closed_within(s, Duration::from_millis(50)).await, "flood socket {} was closed", i + 16);
    }
    // A client with the token connects (its connection closing the oldest
    // flood socket left) and runs a command at once.
    client_runs_a_command(&server, Duration::from_secs(10)).await;
    // The authenticated connection was kept.
    assert_eq!(bounded(request(&mut authed, &head)).await, Some(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_cap_a_new_connection_is_closed_at_once() {
    let server = TestServer::with(|cfg| {
        cfg.max_connections = 4;
        cfg.max_unauthenticated = 2;
    })
    .await;
    let head = format!(
        "GET /v1/commands HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\r\n",
        server.addr, server.token
    );
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        assert_eq!(bounded(request(&mut s, &head)).await, Some(200));
        held.push(s);
    }
    let mut extra = TcpStream::connect(server.addr).await.unwrap();
    assert!(closed_within(&mut extra, Duration::from_secs(5)).await, "a fifth connection was held");
    // One closes: there is room again.
    drop(held.pop());
    let room = async {
        loop {
            let mut s = TcpStream::connect(server.addr).await.unwrap();
            if request(&mut s, &head).await == Some(200) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), room).await.expect("room after a connection closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_token_revokes_the_old_one_and_closes_its_websockets_with_1008() {
    let mut tokens = None;
    let server = TestServer::with(|cfg| tokens = Some(cfg.token.clone())).await;
    let tokens = tokens.unwrap();
    let mut ws = RawWs::connect(&server, Encoding::MsgPack).await;
    // An attachment streaming when the token changes.
    let spec = StartSpec { argv: vec!["sleep".into(), "30".into()], ..StartSpec::default() };
    ws.send(&ClientMsg::Start { id: ReqId(1), spec }).await;
    assert!(matches!(ws.recv().await, Some(ServerMsg::Started { .. })));
    let t = Instant::now();
    assert!(tokens.set(Token::new("rotated-token-0123456789")));
    assert_eq!(ws.close_code().await, Some(1008), "close code after the token changed");
    assert!(t.elapsed() < Duration::from_secs(2), "closed after {:?}", t.elapsed());
    // The old token is refused, the new one accepted.
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let head = |t: &str| {
        format!("GET /v1/commands HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {t}\r\n\r\n", server.addr)
    };
    assert_eq!(bounded(request(&mut s, &head(&server.token))).await, Some(401));
    assert_eq!(bounded(request(&mut s, &head("rotated-token-0123456789"))).await, Some(200));
    let c = tether_client::Client::connect(&server.url, "rotated-token-0123456789").await.unwrap();
    assert!(!c.list().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_ends_when_its_token_is_revoked() {
    let mut tokens = None;
    let server = TestServer::with(|cfg| tokens = Some(cfg.token.clone())).await;
    let tokens = tokens.unwrap();
    let http = tether_testkit::http_client();
    let resp = http
        .post(format!("{}/compat/langsmith/execute/stream/start", server.url))
        .header("X-Api-Key", &server.token)
        .json(&serde_json::json!({"command": "sleep 30", "command_id": "revoked", "shell": "/bin/bash"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    use futures_util::StreamExt;
    // `started` first.
    let first = bounded(body.next()).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("started"), "{first:?}");
    tokens.set(Token::new("rotated-token-0123456789"));
    let ended =
        tokio::time::timeout(Duration::from_secs(3), async { while let Some(Ok(_)) = body.next().await {} })
            .await;
    assert!(ended.is_ok(), "the event stream went on after its token was revoked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_host_or_a_second_origin_is_refused() {
    let server = TestServer::with(|cfg| cfg.allowed_hosts = vec!["box.internal".into()]).await;
    let status = |extra: &str| {
        let head =
            format!("GET /v1/commands HTTP/1.1\r\nAuthorization: Bearer {}\r\n{extra}\r\n", server.token);
        let addr = server.addr;
        async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            bounded(request(&mut s, &head)).await
        }
    };
    let host = |h: &str| format!("Host: {h}\r\n");
    assert_eq!(status(&host(&server.addr.to_string())).await, Some(200));
    assert_eq!(status(&host("localhost:7070")).await, Some(200));
    assert_eq!(status(&host("box.internal")).await, Some(200));
    // A page on a name rebound to 127.0.0.1 sends its own name.
    assert_eq!(status(&host("attacker.example:7070")).await, Some(403));
    assert_eq!(status(&format!("{}{}", host("127.0.0.1"), host("attacker.example"))).await, Some(403));
    // Unauthenticated routes too (the page, health).
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(bounded(request(&mut s, "GET / HTTP/1.1\r\nHost: attacker.example\r\n\r\n")).await, Some(403));
    // Every Origin is checked: a good one first does not carry a bad one.
    let same = format!("http://{}", server.addr);
    let two =
        format!("{}Origin: {same}\r\nOrigin: http://attacker.example\r\n", host(&server.addr.to_string()));
    assert_eq!(status(&two).await, Some(403));
    let one = format!("{}Origin: {same}\r\n", host(&server.addr.to_string()));
    assert_eq!(status(&one).await, Some(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_langsmith_websocket_closes_with_1008_when_its_token_is_revoked() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest, http::HeaderValue};
    let mut tokens = None;
    let server = TestServer::with(|cfg| tokens = Some(cfg.token.clone())).await;
    let tokens = tokens.unwrap();
    let mut req = format!("ws://{}/compat/langsmith/execute/ws", server.addr).into_client_request().unwrap();
    req.headers_mut().insert("x-api-key", HeaderValue::from_str(&server.token).unwrap());
    let (mut ws, _) = bounded(tokio_tungstenite::connect_async(req)).await.unwrap();
    let exec = serde_json::json!({"type": "execute", "command": "sleep 30", "command_id": "revoke-ls",
                                   "shell": "/bin/bash", "timeout_seconds": 60});
    ws.send(Message::Text(exec.to_string().into())).await.unwrap();
    let started = bounded(ws.next()).await.unwrap().unwrap();
    assert!(started.to_text().unwrap().contains("started"), "{started:?}");
    tokens.set(Token::new("rotated-token-0123456789"));
    let code = bounded(async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(c))) => return c.map(|c| u16::from(c.code)),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await;
    assert_eq!(code, Some(1008));
}

/// A request that authenticated keeps its connection past the deadline to
/// authenticate, however long its response takes: the deadline once fired
/// under a streaming response (an event stream's heartbeat, a long
/// `/v1/exec`) because the connection had not been authenticated when the
/// wait for it began.
#[tokio::test]
async fn a_long_authenticated_response_outlives_the_deadline_to_authenticate() {
    let s = TestServer::with(|c| c.unauthenticated_timeout = Duration::from_millis(500)).await;
    let mut tcp = TcpStream::connect(s.addr).await.unwrap();
    let body = r#"{"argv":["sh","-c","sleep 1.5; echo done"]}"#;
    let head = format!(
        "POST /v1/exec HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        s.token,
        body.len()
    );
    let status = bounded(request(&mut tcp, &head)).await;
    assert_eq!(status, Some(200), "the connection was closed under the running request");
}
