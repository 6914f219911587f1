//! The LangSmith sandbox dialect's SSE transport at
//! `/compat/langsmith/execute/stream/{start,resume}`, read at the raw
//! level (`protocol/compat/langsmith.md` §6): event order, base64 payloads at
//! exact raw offsets, heartbeats, refusals, detaching and shutdown.
#![allow(clippy::unwrap_used)]

use base64::Engine;
use serde_json::{Value, json};
use tether_exec::ExitReason;
use tether_testkit::bounded;
use tether_tests::TestServer;

/// One item of an event stream.
#[derive(Debug, PartialEq)]
enum Item {
    /// `event: NAME` with its JSON `data`.
    Event(String, Value),
    /// A comment line (`: text`), a heartbeat.
    Comment(String),
}

/// A response read as an event stream.
struct Sse {
    resp: reqwest::Response,
    buf: Vec<u8>,
}

impl Sse {
    /// POSTs `body` to `path` under the dialect; the response must be a 200
    /// event stream.
    async fn post(s: &TestServer, path: &str, body: Value) -> Sse {
        let resp = post(s, path, body).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        Sse { resp, buf: Vec::new() }
    }

    /// The next item; `None` at the end of the response.
    async fn next(&mut self) -> Option<Item> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buf.drain(..end + 2).collect();
                return Some(parse(std::str::from_utf8(&block[..end]).unwrap()));
            }
            match bounded(self.resp.chunk()).await.unwrap() {
                Some(b) => self.buf.extend_from_slice(&b),
                None => {
                    assert!(self.buf.is_empty(), "a partial event at the end: {:?}", self.buf);
                    return None;
                }
            }
        }
    }

    /// The next item, which must be an event: its name and data.
    async fn event(&mut self) -> (String, Value) {
        match self.next().await {
            Some(Item::Event(name, data)) => (name, data),
            other => panic!("expected an event, got {other:?}"),
        }
    }
}

fn parse(block: &str) -> Item {
    let (mut name, mut data) = (None, Vec::new());
    for line in block.lines() {
        if let Some(c) = line.strip_prefix(':') {
            return Item::Comment(c.trim_start().to_owned());
        }
        let (field, value) = line.split_once(':').unwrap();
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => name = Some(value.to_owned()),
            "data" => data.push(value),
            other => panic!("unexpected field {other:?}"),
        }
    }
    Item::Event(name.expect("every event is named"), serde_json::from_str(&data.join("\n")).unwrap())
}

async fn post(s: &TestServer, path: &str, body: Value) -> reqwest::Response {
    let url = format!("{}/compat/langsmith/execute/stream/{path}", s.url);
    bounded(tether_testkit::http_client().post(url).header("x-api-key", &s.token).json(&body).send())
        .await
        .unwrap()
}

/// The start body the client sends (`_sse_execute.start_payload`).
fn start(command: &str, id: &str) -> Value {
    json!({"command": command, "command_id": id, "shell": "/bin/bash", "timeout_seconds": 60,
           "idle_timeout_seconds": 300, "ttl_seconds": 600})
}

fn resume(id: &str, stdout: i64, stderr: i64) -> Value {
    json!({"command_id": id, "stdout_offset": stdout, "stderr_offset": stderr})
}

/// Reads output events to the end: the raw bytes per stream (checking that
/// each event starts where the stream's bytes so far end, counted from
/// `from`), then the events after the output.
async fn drain(sse: &mut Sse, from: [u64; 2]) -> ([Vec<u8>; 2], Vec<(String, Value)>) {
    let mut out = [Vec::new(), Vec::new()];
    let mut tail = Vec::new();
    while let Some(item) = sse.next().await {
        let Item::Event(name, data) = item else { continue };
        let i = match name.as_str() {
            "stdout" => 0,
            "stderr" => 1,
            _ => {
                tail.push((name, data));
                continue;
            }
        };
        assert!(tail.is_empty(), "output after {tail:?}");
        let bytes = base64::engine::general_purpose::STANDARD.decode(data["data"].as_str().unwrap()).unwrap();
        assert!(bytes.len() <= 64 * 1024, "an event of {} bytes", bytes.len());
        assert_eq!(data["offset"].as_u64().unwrap(), from[i] + out[i].len() as u64, "{name} offset");
        out[i].extend_from_slice(&bytes);
    }
    (out, tail)
}

fn ends(stdout: u64, stderr: u64, last: (&str, Value)) -> Vec<(String, Value)> {
    vec![
        ("stream_end".to_owned(), json!({"stream": "stdout", "offset": stdout})),
        ("stream_end".to_owned(), json!({"stream": "stderr", "offset": stderr})),
        (last.0.to_owned(), last.1),
    ]
}

#[tokio::test]
async fn start_sends_raw_bytes_at_exact_offsets_and_resume_continues_anywhere() {
    let s = TestServer::start().await;
    // Invalid UTF-8 and a character split across writes: the offsets are
    // raw, whatever the bytes.
    let cmd =
        "printf 'ab\\377'; sleep 0.1; printf '\\376\\303'; sleep 0.1; printf '\\251!'; printf 'e\\200' >&2";
    let mut sse = Sse::post(&s, "start", start(cmd, "0190raw")).await;
    let (name, started) = sse.event().await;
    assert_eq!(name, "started");
    let id = started["command_id"].as_str().unwrap().to_owned();
    // The client's own id comes back (as from the real dataplane); tether's
    // id and the client's both name the command.
    assert_eq!(id, "0190raw");
    assert!(s.manager.get(&id).unwrap().id().starts_with("c-"));
    assert!(started["pid"].as_u64().unwrap() > 0);
    let (out, tail) = drain(&mut sse, [0, 0]).await;
    assert_eq!(out, [b"ab\xff\xfe\xc3\xa9!".to_vec(), b"e\x80".to_vec()]);
    assert_eq!(tail, ends(7, 2, ("exit", json!({"exit_code": 0}))));
    assert_eq!(s.manager.get(&id).unwrap().info().labels["langsmith.command_id"], "0190raw");

    // A resume opens with `started` too, then continues at the offsets,
    // even inside a character or between invalid bytes.
    let mut sse = Sse::post(&s, "resume", resume(&id, 3, 1)).await;
    assert_eq!(sse.event().await, ("started".to_owned(), started.clone()));
    let (out, tail) = drain(&mut sse, [3, 1]).await;
    assert_eq!(out, [b"\xfe\xc3\xa9!".to_vec(), b"\x80".to_vec()]);
    assert_eq!(tail, ends(7, 2, ("exit", json!({"exit_code": 0}))));
    // By the client's own id; offsets past the end (or negative) clamped.
    let mut sse = Sse::post(&s, "resume", resume("0190raw", 1000, -5)).await;
    assert_eq!(sse.event().await.0, "started");
    let (out, tail) = drain(&mut sse, [7, 0]).await;
    assert_eq!(out, [Vec::new(), b"e\x80".to_vec()]);
    assert_eq!(tail, ends(7, 2, ("exit", json!({"exit_code": 0}))));
}

#[tokio::test]
async fn large_output_comes_in_bounded_events() {
    let s = TestServer::start().await;
    let mut sse = Sse::post(&s, "start", start("head -c 300000 /dev/zero | tr '\\0' x", "big")).await;
    assert_eq!(sse.event().await.0, "started");
    let (out, tail) = drain(&mut sse, [0, 0]).await;
    assert_eq!(out[0], vec![b'x'; 300_000]);
    assert_eq!(tail, ends(300_000, 0, ("exit", json!({"exit_code": 0}))));
}

#[tokio::test]
async fn unknown_commands_bad_bodies_and_refused_starts() {
    let s = TestServer::start().await;
    // The client turns a 404 on resume into CommandNotFound.
    let r = post(&s, "resume", resume("c-nope", 0, 0)).await;
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["detail"]["error"], "CommandNotFound");
    // Not a request: 400 in the dialect's shape (CommandError).
    let r = post(&s, "start", json!({"no_command": 1})).await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["detail"]["error"], "CommandError");
    // A refused start: one `error` event, as the WebSocket's first frame.
    let mut body = start("true", "other-user");
    body["run_config"] = json!({"user": "someone-else"});
    let mut sse = Sse::post(&s, "start", body).await;
    let (name, data) = sse.event().await;
    assert_eq!((name.as_str(), data["error_type"].as_str()), ("error", Some("CommandError")));
    assert!(sse.next().await.is_none());
    let mut body = start("true", "bad-cwd");
    body["cwd"] = json!("/no/such/dir");
    let mut sse = Sse::post(&s, "start", body).await;
    assert_eq!(sse.event().await.1["error_type"], "CommandError");
    assert!(s.manager.is_empty(), "nothing started");
    // Without the key: 401.
    let url = format!("{}/compat/langsmith/execute/stream/start", s.url);
    let r = bounded(tether_testkit::http_client().post(url).json(&start("true", "x")).send()).await.unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn start_is_idempotent_by_the_clients_command_id() {
    let s = TestServer::start().await;
    let body = start("echo one; sleep 0.3", "idem");
    let mut first = Sse::post(&s, "start", body.clone()).await;
    let (_, a) = first.event().await;
    // The client re-sends a start it saw no `started` for: the same
    // command, from offset 0.
    let mut second = Sse::post(&s, "start", body).await;
    let (_, b) = second.event().await;
    assert_eq!(a, b);
    for sse in [&mut first, &mut second] {
        let (out, tail) = drain(sse, [0, 0]).await;
        assert_eq!(out[0], b"one\n");
        assert_eq!(tail.last().unwrap().1, json!({"exit_code": 0}));
    }
    assert_eq!(s.manager.list().len(), 1);
}

#[tokio::test]
async fn timeout_is_an_error_event_after_the_stream_ends() {
    let s = TestServer::start().await;
    let mut body = start("echo hi; sleep 30", "timeout");
    body["timeout_seconds"] = json!(1);
    let mut sse = Sse::post(&s, "start", body).await;
    assert_eq!(sse.event().await.0, "started");
    let (out, tail) = drain(&mut sse, [0, 0]).await;
    assert_eq!(out[0], b"hi\n");
    let error = json!({"error_type": "CommandTimeout", "error": "Command timed out"});
    assert_eq!(tail, ends(3, 0, ("error", error)));
}

#[tokio::test]
async fn a_heartbeat_comment_goes_out_while_nothing_happens() {
    let s = TestServer::start().await;
    let mut sse = Sse::post(&s, "start", start("sleep 30", "quiet")).await;
    assert_eq!(sse.event().await.0, "started");
    // After 15 s without an event: `: ping`.
    assert_eq!(sse.next().await, Some(Item::Comment("ping".to_owned())));
}

#[tokio::test]
async fn a_client_that_goes_away_detaches_and_the_idle_timeout_applies() {
    let s = TestServer::start().await;
    let mut body = start("sleep 100", "idle");
    body["idle_timeout_seconds"] = json!(1);
    let mut sse = Sse::post(&s, "start", body).await;
    let id = sse.event().await.1["command_id"].as_str().unwrap().to_owned();
    let h = s.manager.get(&id).unwrap();
    assert_eq!(h.info().attached, 1);
    drop(sse);
    let exit = bounded(h.wait()).await;
    assert_eq!(exit.reason, ExitReason::IdleTimeout);
    assert_eq!(h.info().attached, 0);
}

#[tokio::test]
async fn shutdown_ends_every_stream_with_server_shutting_down() {
    let s = TestServer::start().await;
    let mut sse = Sse::post(&s, "start", start("sleep 100", "shutdown")).await;
    assert_eq!(sse.event().await.0, "started");
    let stopped = tokio::spawn(s.shutdown());
    let (name, data) = sse.event().await;
    assert_eq!(name, "error");
    assert_eq!(data, json!({"error_type": "ServerShuttingDown", "error": "the daemon is shutting down"}));
    assert!(sse.next().await.is_none(), "the response ends");
    bounded(stopped).await.unwrap();
}

#[tokio::test]
async fn resume_is_answered_while_the_command_runs() {
    // Two readers of one running command: both get everything, paced.
    let s = TestServer::start().await;
    let cmd = "for i in $(seq 1 20); do echo line-$i; sleep 0.01; done";
    let mut a = Sse::post(&s, "start", start(cmd, "two")).await;
    let id = a.event().await.1["command_id"].as_str().unwrap().to_owned();
    let mut b = Sse::post(&s, "resume", resume(&id, 0, 0)).await;
    assert_eq!(b.event().await.0, "started");
    let want: String = (1..=20).map(|i| format!("line-{i}\n")).collect();
    let (ra, rb) = tokio::join!(drain(&mut a, [0, 0]), drain(&mut b, [0, 0]));
    for (out, tail) in [ra, rb] {
        assert_eq!(String::from_utf8(out[0].clone()).unwrap(), want);
        assert_eq!(tail.last().unwrap().0, "exit");
    }
}
