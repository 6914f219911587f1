//! Issue 13's bounds on what a client can make the daemon hold or send:
//! command metadata (name, labels) on every route that starts a command,
//! the paged listing (native and HTTP), the LangSmith socket's answers to
//! malformed frames and its input window, and the one-shot routes' budget
//! for buffered request bodies.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tether_client::ClientError;
use tether_proto::{
    ClientMsg, CommandInfo, Encoding, ErrorCode, ExecRequest, HttpError, ReqId, RunOptions, ServerMsg,
    ShellRunSpec, ShellSpec, StartSpec,
};
use tether_testkit::{bounded, ls_connect, ls_execute, ls_recv, ls_send};
use tether_tests::{RawWs, TestServer};
use tokio_tungstenite::tungstenite::Message;

fn spec(argv: &[&str]) -> StartSpec {
    StartSpec { argv: argv.iter().map(|a| (*a).to_owned()).collect(), ..StartSpec::default() }
}

fn labels(n: usize, key_len: usize, value_len: usize) -> BTreeMap<String, String> {
    (0..n).map(|i| (format!("{i:0>key_len$}"), "v".repeat(value_len))).collect()
}

/// The code and message of a refused request.
fn refused<T: std::fmt::Debug>(r: Result<T, ClientError>) -> (ErrorCode, String) {
    match r {
        Err(ClientError::Server { code, message, .. }) => (code, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn post_exec(s: &TestServer, req: &ExecRequest) -> (u16, Vec<u8>) {
    let r = bounded(
        tether_testkit::http_client()
            .post(format!("{}/v1/exec", s.url))
            .bearer_auth(&s.token)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(req).unwrap())
            .send(),
    )
    .await
    .unwrap();
    (r.status().as_u16(), bounded(r.bytes()).await.unwrap().to_vec())
}

#[tokio::test]
async fn metadata_over_its_limits_is_refused_on_every_route() {
    let s = TestServer::start().await;
    let c = s.client().await;
    // At the limits: accepted.
    let mut ok = spec(&["true"]);
    ok.name = Some("n".repeat(256));
    ok.labels = labels(16, 8, 1016);
    assert_eq!(ok.labels.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>(), 16 * 1024);
    bounded(c.run(ok)).await.unwrap();

    // Over: each refused with bad_request naming the field.
    type Edit = Box<dyn Fn(&mut StartSpec)>;
    let cases: [(&str, Edit); 5] = [
        ("name", Box::new(|s| s.name = Some("n".repeat(257)))),
        ("labels", Box::new(|s| s.labels = labels(65, 4, 1))),
        ("label key", Box::new(|s| s.labels = labels(1, 129, 1))),
        ("label \"0\"", Box::new(|s| s.labels = labels(1, 1, 1025))),
        ("labels", Box::new(|s| s.labels = labels(17, 8, 1016))),
    ];
    for (field, set) in &cases {
        let mut sp = spec(&["true"]);
        set(&mut sp);
        let (code, message) = refused(bounded(c.start(sp)).await);
        assert_eq!(code, ErrorCode::BadRequest, "{message}");
        assert!(message.starts_with(field), "{message:?} names {field}");
    }

    // A shell run's labels.
    bounded(c.shell_create(ShellSpec { name: Some("meta".to_owned()), ..ShellSpec::default() }))
        .await
        .unwrap();
    let run = ShellRunSpec { script: "true".to_owned(), labels: labels(65, 4, 1), ..ShellRunSpec::default() };
    let (code, message) = refused(bounded(c.shell_submit("meta", run)).await);
    assert_eq!((code, message.starts_with("labels")), (ErrorCode::BadRequest, true), "{message}");

    // `POST /v1/exec`: a typed 400.
    let req = ExecRequest {
        command: Some("true".to_owned()),
        argv: Vec::new(),
        shell_program: None,
        options: RunOptions { name: Some("n".repeat(1 << 20)), ..RunOptions::default() },
    };
    let (status, body) = post_exec(&s, &req).await;
    let err: HttpError = serde_json::from_slice(&body).unwrap();
    assert_eq!((status, err.code), (400, ErrorCode::BadRequest), "{}", err.message);
    assert!(err.message.starts_with("name"), "{}", err.message);

    // The LangSmith dialect keeps the client's id as a label: one too long
    // for a label value is refused in the dialect's error shape.
    let mut ws = ls_connect(s.addr, &s.token).await.unwrap().0;
    ls_send(&mut ws, &ls_execute("true", &"i".repeat(2000))).await;
    let e = ls_recv(&mut ws).await.unwrap();
    assert_eq!((e["type"].as_str(), e["error_type"].as_str()), (Some("error"), Some("CommandError")), "{e}");
    assert!(e["error"].as_str().unwrap().contains("label"), "{e}");
    assert!(ls_recv(&mut ws).await.is_none(), "closed after the error");

    // Nothing of the refused starts is held.
    assert_eq!(s.manager.list().len(), 1, "only the start at the limits is held");
}

/// Starts `n` detached `sleep` commands with the given labels; their ids
/// in start order.
async fn start_many(c: &tether_client::Client, n: usize, labels: &BTreeMap<String, String>) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let mut sp = spec(&["sleep", "60"]);
        sp.labels = labels.clone();
        sp.ring_bytes = Some(4096);
        let (id, _) = bounded(c.start_detached(sp)).await.unwrap();
        ids.push(id.0);
    }
    ids
}

#[tokio::test]
async fn the_native_listing_is_paged_and_each_page_bounded() {
    let s = TestServer::start().await;
    let c = s.client().await;
    let ids = start_many(&c, 130, &BTreeMap::new()).await;

    // Without a limit: the default page, and a cursor for the rest.
    let (first, next) = bounded(c.list_page(None, None)).await.unwrap();
    assert_eq!(first.len(), tether_proto::LIST_DEFAULT_LIMIT as usize);
    assert!(next.is_some(), "more after the first page");
    // Small pages, followed to the end: every command once, oldest first.
    let (mut seen, mut cursor) = (Vec::new(), None::<String>);
    let mut pages = 0;
    loop {
        let (page, next) = bounded(c.list_page(Some(7), cursor.as_deref())).await.unwrap();
        assert!(page.len() <= 7);
        seen.extend(page.into_iter().map(|i| i.command.0));
        pages += 1;
        match next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    assert_eq!(pages, 130_usize.div_ceil(7));
    // A command removed meanwhile does not shift the next page.
    let (page, next) = bounded(c.list_page(Some(10), None)).await.unwrap();
    bounded(c.remove(&page[9].command)).await.unwrap();
    let (after, _) = bounded(c.list_page(Some(1), next.as_deref())).await.unwrap();
    assert_eq!(after[0].command.0, ids[10]);
    // `list` follows every page.
    assert_eq!(bounded(c.list()).await.unwrap().len(), 129);

    // Bad limits and cursors are typed errors.
    for (limit, cursor) in
        [(Some(0), None), (Some(1001), None), (None, Some("nonsense")), (None, Some("12."))]
    {
        let (code, message) = refused(bounded(c.list_page(limit, cursor)).await);
        assert_eq!(code, ErrorCode::BadRequest, "{message}");
    }

    // Pages of commands with the largest labels stay about a mebibyte,
    // and a long argv is cut in the listing.
    let big = labels(16, 8, 1016);
    start_many(&c, 80, &big).await;
    let script = format!("sleep 60 # {}", "x".repeat(100_000));
    let mut sp = StartSpec { shell: Some(script), ring_bytes: Some(4096), ..StartSpec::default() };
    sp.attach = false;
    bounded(c.start_detached(sp)).await.unwrap();
    let mut raw = RawWs::connect(&s, Encoding::MsgPack).await;
    let mut cursor = None;
    let mut sizes = Vec::new();
    let mut truncated = 0;
    loop {
        raw.send(&ClientMsg::List { id: ReqId(1), limit: Some(1000), cursor: cursor.take() }).await;
        let Some(ServerMsg::List { commands, next, .. }) = raw.recv().await else { panic!("a list reply") };
        let frame = tether_proto::encode(
            &ServerMsg::List { id: ReqId(1), commands: commands.clone(), next: next.clone() },
            Encoding::MsgPack,
        );
        sizes.push(frame.len());
        truncated += commands.iter().filter(|i: &&CommandInfo| i.argv_truncated).count();
        for i in &commands {
            assert!(i.argv.iter().map(String::len).sum::<usize>() <= tether_proto::LIST_ARGV_BYTES);
        }
        match next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    assert!(sizes.len() >= 2, "the large labels split the listing: {sizes:?}");
    assert!(sizes.iter().all(|&n| n < tether_proto::LIST_PAGE_BYTES + 64 * 1024), "page sizes {sizes:?}");
    assert_eq!(truncated, 1, "the long script is cut in the listing");
}

#[tokio::test]
async fn the_http_listing_is_paged_with_a_link_header() {
    let s = TestServer::start().await;
    let c = s.client().await;
    let ids = start_many(&c, 25, &BTreeMap::new()).await;
    let http = tether_testkit::http_client();
    let get = |q: String| {
        let req = http.get(format!("{}/v1/commands{q}", s.url)).bearer_auth(&s.token);
        async move { bounded(req.send()).await.unwrap() }
    };
    let mut seen = Vec::new();
    let mut q = "?limit=10".to_owned();
    let mut pages = 0;
    loop {
        let r = get(q.clone()).await;
        assert_eq!(r.status(), 200);
        let link = r.headers().get("link").map(|l| l.to_str().unwrap().to_owned());
        let page: Vec<CommandInfo> = r.json().await.unwrap();
        seen.extend(page.into_iter().map(|i| i.command.0));
        pages += 1;
        let Some(link) = link else { break };
        // `</v1/commands?limit=10&cursor=...>; rel="next"`
        assert!(link.ends_with("; rel=\"next\""), "{link}");
        q = link.trim_start_matches("</v1/commands").split('>').next().unwrap().to_owned();
    }
    assert_eq!((seen, pages), (ids.clone(), 3));
    // Without a query: the default page (all 25 here), no Link.
    let r = get(String::new()).await;
    assert!(r.headers().get("link").is_none());
    assert_eq!(r.json::<Vec<CommandInfo>>().await.unwrap().len(), 25);
    // A bad limit or cursor: a typed 400.
    for q in ["?limit=0", "?limit=x", "?cursor=nonsense"] {
        let r = get(q.to_owned()).await;
        assert_eq!(r.status(), 400, "{q}");
        let e: HttpError = r.json().await.unwrap();
        assert_eq!(e.code, ErrorCode::BadRequest, "{q}: {}", e.message);
    }
}

#[tokio::test]
async fn status_and_list_cut_a_long_argv_at_a_character_boundary() {
    let s = TestServer::start().await;
    let c = s.client().await;
    // "é" is two bytes: 4095 bytes of "a" then "é" straddles the cut.
    let arg = format!("{}é{}", "a".repeat(4095), "b".repeat(10));
    let mut sp = spec(&["sleep", "60", &arg]);
    sp.ring_bytes = Some(4096);
    let (id, _) = bounded(c.start_detached(sp)).await.unwrap();
    let info = bounded(c.status(&id)).await.unwrap();
    assert!(info.argv_truncated);
    assert_eq!(info.argv[2], "a".repeat(4095));
    // The command itself got the whole argument.
    assert_eq!(s.manager.get(&id.0).unwrap().info().argv[2], arg);
}

#[tokio::test]
async fn langsmith_malformed_frames_and_bad_timeouts_get_an_error_frame() {
    let s = TestServer::start().await;
    // Not JSON, a known type with a mistyped field, NaN (what Python's
    // json.dumps writes for float("nan")), 1e300, an integer timeout too
    // large for the clock: each answered with CommandError and a close.
    let frames = [
        "{not json".to_owned(),
        json!({"type": "execute", "command": 12}).to_string(),
        r#"{"type": "execute", "command": "true", "timeout_seconds": NaN}"#.to_owned(),
        r#"{"type": "execute", "command": "true", "timeout_seconds": 1e300}"#.to_owned(),
        json!({"type": "execute", "command": "true", "timeout_seconds": i64::MAX}).to_string(),
    ];
    for f in &frames {
        let mut ws = ls_connect(s.addr, &s.token).await.unwrap().0;
        ws.send(Message::Text(f.clone().into())).await.unwrap();
        let e = ls_recv(&mut ws).await.unwrap_or_else(|| panic!("an answer to {f}"));
        assert_eq!(
            (e["type"].as_str(), e["error_type"].as_str()),
            (Some("error"), Some("CommandError")),
            "{f}: {e}"
        );
        assert!(ls_recv(&mut ws).await.is_none(), "closed after the error to {f}");
    }
    assert_eq!(s.manager.list().len(), 0, "nothing started");

    // A negative timeout means none (documented), and an unknown type is
    // ignored: the command runs.
    let mut ws = ls_connect(s.addr, &s.token).await.unwrap().0;
    ls_send(&mut ws, &json!({"type": "hello-from-the-future"})).await;
    let mut e = ls_execute("echo ok", "neg-1");
    e["timeout_seconds"] = json!(-5);
    ls_send(&mut ws, &e).await;
    assert_eq!(ls_recv(&mut ws).await.unwrap()["type"], "started");
    // A malformed frame once bound: an error frame, and the connection ends.
    ls_send(&mut ws, &json!({"type": "input", "data": 5})).await;
    let mut last = Value::Null;
    while let Some(m) = ls_recv(&mut ws).await {
        last = m;
    }
    assert!(
        last["type"] == "exit" || (last["type"] == "error" && last["error_type"] == "CommandError"),
        "{last}"
    );

    // The SSE start and the legacy route: typed 400s.
    let http = tether_testkit::http_client();
    for (path, body) in [
        (
            "/compat/langsmith/execute/stream/start",
            r#"{"command": "true", "timeout_seconds": NaN}"#.to_owned(),
        ),
        (
            "/compat/langsmith/execute/stream/start",
            r#"{"command": "true", "timeout_seconds": 1e300}"#.to_owned(),
        ),
        ("/compat/langsmith/execute", r#"{"command": "true", "timeout": 1e300}"#.to_owned()),
        ("/compat/langsmith/execute", json!({"command": "true", "timeout": i64::MAX}).to_string()),
    ] {
        let r = bounded(
            http.post(format!("{}{path}", s.url))
                .header("x-api-key", &s.token)
                .header("content-type", "application/json")
                .body(body.clone())
                .send(),
        )
        .await
        .unwrap();
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap();
        assert_eq!(status, 400, "{path} {body}: {v}");
        assert_eq!(v["detail"]["error"], "CommandError", "{path} {body}: {v}");
    }
}

#[tokio::test]
async fn langsmith_input_before_execute_past_the_window_is_refused() {
    let s = TestServer::start().await;
    let mut ws = ls_connect(s.addr, &s.token).await.unwrap().0;
    // Frames of 1 MiB past the 4 MiB window, before any execute: refused
    // as soon as the window is passed (so 300 of them cannot be held).
    let chunk = "x".repeat(1 << 20);
    for _ in 0..5 {
        ls_send(&mut ws, &json!({"type": "input", "data": chunk})).await;
    }
    let e = ls_recv(&mut ws).await.expect("an error frame");
    assert_eq!((e["type"].as_str(), e["error_type"].as_str()), (Some("error"), Some("CommandError")), "{e}");
    assert!(e["error"].as_str().unwrap().contains("window"), "{e}");
    assert!(ls_recv(&mut ws).await.is_none(), "closed");

    // Within the window, input before execute reaches the command in order.
    let mut ws = ls_connect(s.addr, &s.token).await.unwrap().0;
    for _ in 0..3 {
        ls_send(&mut ws, &json!({"type": "input", "data": chunk})).await;
    }
    ls_send(&mut ws, &json!({"type": "close_stdin"})).await;
    let mut e = ls_execute("wc -c", "win-1");
    e["close_stdin"] = json!(false);
    ls_send(&mut ws, &e).await;
    let mut out = String::new();
    while let Some(m) = ls_recv(&mut ws).await {
        if m["type"] == "stdout" {
            out.push_str(m["data"].as_str().unwrap());
        }
    }
    assert_eq!(out.trim(), (3 << 20).to_string());
}

#[tokio::test]
async fn langsmith_socket_that_never_executes_is_closed() {
    let s = TestServer::with(|c| {
        c.ping_interval = Duration::from_millis(100);
        c.peer_timeout = Duration::from_millis(800);
    })
    .await;
    // A silent peer (never reads, so never answers a ping): closed by the
    // peer timeout; reading afterwards finds the close.
    let mut silent = ls_connect(s.addr, &s.token).await.unwrap().0;
    // A peer that answers pings (tungstenite pongs while reading) but
    // never sends execute: told, and closed.
    let mut chatty = ls_connect(s.addr, &s.token).await.unwrap().0;
    let t = std::time::Instant::now();
    let e = bounded(ls_recv(&mut chatty)).await.expect("an error frame");
    assert_eq!(e["error_type"], "CommandError", "{e}");
    assert!(e["error"].as_str().unwrap().contains("no execute"), "{e}");
    assert!(ls_recv(&mut chatty).await.is_none());
    assert!(t.elapsed() < Duration::from_secs(5), "closed after about the peer timeout: {:?}", t.elapsed());
    let mut pings = 0;
    // The whole read is bounded: a daemon that never closed it would ping
    // it for ever.
    let closed = bounded(async {
        loop {
            match silent.next().await {
                Some(Ok(Message::Ping(_))) => pings += 1,
                Some(Ok(Message::Close(c))) => break c.map(|c| u16::from(c.code)),
                Some(Ok(_)) => {}
                // Answering the pings now finds the connection gone.
                Some(Err(_)) | None => break Some(1008),
            }
        }
    })
    .await;
    assert!(pings >= 1, "pinged before the close");
    assert_eq!(closed, Some(1008), "closed as a silent peer");
}

#[tokio::test]
async fn one_shot_bodies_share_a_daemon_wide_budget() {
    // A 16 MiB budget; 12 concurrent bodies of 6 MiB (72 MiB asked).
    let s = TestServer::with(|c| c.max_body_memory = 16 << 20).await;
    let big = ExecRequest {
        command: Some("sleep 1; wc -c".to_owned()),
        argv: Vec::new(),
        shell_program: None,
        options: RunOptions { stdin_text: Some("y".repeat(6 << 20)), ..RunOptions::default() },
    };
    let body = serde_json::to_vec(&big).unwrap();
    let http = tether_testkit::http_client();
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let req = http
            .post(format!("{}/v1/exec", s.url))
            .bearer_auth(&s.token)
            .header("content-type", "application/json")
            .body(body.clone());
        tasks.push(tokio::spawn(async move {
            let r = req.send().await.unwrap();
            let retry = r.headers().get("retry-after").is_some();
            (r.status().as_u16(), retry, r.bytes().await.unwrap())
        }));
    }
    let (mut ok, mut refused) = (0, 0);
    for t in tasks {
        let (status, retry, body) = bounded(t).await.unwrap();
        match status {
            200 => ok += 1,
            429 => {
                let e: HttpError = serde_json::from_slice(&body).unwrap();
                assert_eq!(e.code, ErrorCode::LimitExceeded, "{}", e.message);
                assert!(retry, "Retry-After on a refusal");
                refused += 1;
            }
            other => panic!("status {other}: {}", String::from_utf8_lossy(&body)),
        }
    }
    assert!(ok >= 2 && refused > 0, "{ok} served, {refused} refused");
    // With the budget free again, a normal request goes through, and a
    // chunked body (no Content-Length) is charged too.
    let (status, _) = post_exec(
        &s,
        &ExecRequest {
            command: Some("echo hi".to_owned()),
            argv: Vec::new(),
            shell_program: None,
            options: RunOptions::default(),
        },
    )
    .await;
    assert_eq!(status, 200);
    let stream = futures_util::stream::iter(
        body.chunks(1 << 20).map(|c| Ok::<_, std::io::Error>(c.to_vec())).collect::<Vec<_>>(),
    );
    let r = bounded(
        http.post(format!("{}/v1/exec", s.url))
            .bearer_auth(&s.token)
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(stream))
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    // A body larger than the whole budget: refused at once.
    let huge = vec![b' '; 20 << 20];
    let r = bounded(http.post(format!("{}/v1/exec", s.url)).bearer_auth(&s.token).body(huge).send())
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
}

#[tokio::test]
async fn a_start_right_after_a_remove_gets_the_removed_commands_slot() {
    // A client that keeps at the daemon's command limit removes one
    // command and starts the next as soon as the `ok` comes: running ones
    // (killed by the remove), finished ones, and one that an attached
    // execution of the same connection still reads.
    let s = TestServer::with(|cfg| cfg.manager.max_commands = 2).await;
    let c = s.client().await;
    let (_held, _) = bounded(c.start_detached(spec(&["sleep", "30"]))).await.unwrap();
    for round in 0..12 {
        let (id, attached) = if round % 3 == 2 {
            let e = bounded(c.start(spec(&["sleep", "30"]))).await.unwrap();
            (e.id().clone(), Some(e))
        } else {
            let (id, _) = bounded(c.start_detached(spec(&["sleep", "30"]))).await.unwrap();
            (id, None)
        };
        if round % 3 == 1 {
            bounded(c.kill(&id)).await.unwrap();
            while bounded(c.status(&id)).await.unwrap().exit.is_none() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        let (code, _) = refused(bounded(c.start_detached(spec(&["true"]))).await);
        assert_eq!(code, ErrorCode::LimitExceeded, "round {round}: at the limit");
        bounded(c.remove(&id)).await.unwrap();
        let (next, _) = bounded(c.start_detached(spec(&["sleep", "30"])))
            .await
            .unwrap_or_else(|e| panic!("round {round}: the start after the remove: {e}"));
        bounded(c.remove(&next)).await.unwrap();
        drop(attached);
    }
}

/// A body over a route's limit is answered 413, not reset, to a client
/// that sends its whole body before it reads (Python's httpx, curl without
/// `Expect`): closed with the body still arriving, a socket is reset and
/// such a client gets a broken pipe instead of the answer. The 413 is
/// given before the body is read; hyper reads the rest before it closes.
#[tokio::test]
async fn a_body_over_the_routes_limit_is_answered_not_reset() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = TestServer::start().await;
    let len = (64 << 20) + 1;
    let mut tcp = bounded(tokio::net::TcpStream::connect(s.addr)).await.unwrap();
    let head = format!(
        "POST /v1/exec HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nConnection: close\r\nContent-Length: {len}\r\n\r\n",
        s.addr, s.token
    );
    let mut req = head.into_bytes();
    req.resize(req.len() + len, b'x');
    // All of it, then the answer.
    bounded(tcp.write_all(&req)).await.expect("the whole body is taken");
    let mut answer = Vec::new();
    bounded(tcp.read_to_end(&mut answer)).await.expect("the answer, not a reset");
    assert!(answer.starts_with(b"HTTP/1.1 413"), "{}", String::from_utf8_lossy(&answer));
}
