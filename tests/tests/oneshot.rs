//! One-shot runs over plain HTTP (`POST /v1/exec`, `POST /v1/code`)
//! against a real daemon, in JSON and MessagePack.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use sha2::{Digest, Sha256};
use tether_proto::{
    CodeRequest, Encoding, ErrorCode, ExecRequest, ExecResponse, ExitReason, HttpError, Payload, RunOptions,
};
use tether_testkit::{Http, bounded};
use tether_tests::TestServer;

/// Runs a request that must succeed, in either encoding.
async fn run<T: serde::Serialize>(h: &Http, path: &str, body: &T, enc: Encoding) -> ExecResponse {
    let (status, bytes, ct) = h.post(path, body, enc).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    match enc {
        Encoding::Json => {
            assert_eq!(ct, "application/json");
            ExecResponse::from_json(&bytes).unwrap()
        }
        Encoding::MsgPack => {
            assert_eq!(ct, "application/msgpack");
            tether_proto::decode(&bytes, Encoding::MsgPack).unwrap()
        }
    }
}

async fn fails<T: serde::Serialize>(h: &Http, path: &str, body: &T) -> (u16, HttpError) {
    let (status, bytes, _) = h.post(path, body, Encoding::Json).await;
    (status, serde_json::from_slice(&bytes).unwrap())
}

fn sh(command: &str) -> ExecRequest {
    ExecRequest { command: Some(command.into()), ..ExecRequest::default() }
}

#[tokio::test]
async fn exec_returns_status_and_both_streams_in_both_encodings() {
    let s = TestServer::start().await;
    let h = s.http();
    for enc in [Encoding::Json, Encoding::MsgPack] {
        let r = run(&h, "/v1/exec", &sh("echo out; printf '\\377\\0' >&2; exit 3"), enc).await;
        assert_eq!((r.exit_code, r.signal, r.reason), (Some(3), None, ExitReason::Exited));
        assert_eq!(r.stdout.as_bytes(), b"out\n");
        assert_eq!(r.stderr.as_bytes(), b"\xff\0");
        assert!(!r.truncated);
        // Its output was in the response: the daemon lets it (and its ring
        // memory) go as soon as it ended.
        bounded(async {
            while s.manager.get(&r.command.0).is_ok() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
    }
    // JSON: text where it is text, base64 where it is not.
    let (_, body, _) =
        h.post("/v1/exec", &sh("printf 'caf\\303\\251'; printf '\\377' >&2"), Encoding::Json).await;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((v["stdout"].as_str(), v["stdout_encoding"].as_str()), (Some("café"), Some("utf8")));
    assert_eq!((v["stderr"].as_str(), v["stderr_encoding"].as_str()), (Some("/w=="), Some("base64")));
    // argv, cwd, env, stdin (bytes and text).
    let req = ExecRequest {
        argv: vec!["sh".into(), "-c".into(), "pwd; echo $GREETING; cat".into()],
        options: RunOptions {
            cwd: Some("/tmp".into()),
            env: [("GREETING".to_owned(), "hi".to_owned())].into(),
            stdin: Some(Payload::from(&b"\x00in"[..])),
            ..RunOptions::default()
        },
        ..ExecRequest::default()
    };
    let r = run(&h, "/v1/exec", &req, Encoding::MsgPack).await;
    assert_eq!(r.stdout.as_bytes(), b"/tmp\nhi\n\x00in");
    let req = ExecRequest {
        argv: vec!["wc".into(), "-l".into()],
        options: RunOptions { stdin_text: Some("a\nb\n".into()), ..RunOptions::default() },
        ..ExecRequest::default()
    };
    assert_eq!(run(&h, "/v1/exec", &req, Encoding::Json).await.stdout.as_bytes(), b"2\n");
}

#[tokio::test]
async fn large_output_is_complete_and_max_output_bytes_bounds_it() {
    let s = TestServer::start().await;
    let h = s.http();
    // 20 MB, more than the ring: paced, so nothing is lost.
    let req = ExecRequest {
        options: RunOptions { max_output_bytes: Some(64 << 20), ..RunOptions::default() },
        ..sh(
            "head -c 20000000 /dev/urandom | tee /tmp/tether-oneshot-$$ ; sha256sum < /tmp/tether-oneshot-$$ >&2; rm /tmp/tether-oneshot-$$",
        )
    };
    let r = run(&h, "/v1/exec", &req, Encoding::MsgPack).await;
    assert_eq!(r.stdout.len(), 20_000_000);
    let hex = format!("{:x}", Sha256::digest(r.stdout.as_bytes()));
    assert_eq!(&r.stderr.as_bytes()[..64], hex.as_bytes());
    assert!(!r.truncated);
    // Past max_output_bytes: the command runs to its end, the rest is
    // dropped (never held), and the response says so.
    let req = ExecRequest {
        options: RunOptions { max_output_bytes: Some(1000), ..RunOptions::default() },
        ..sh("head -c 50000000 /dev/zero; echo done >&2; exit 7")
    };
    let r = run(&h, "/v1/exec", &req, Encoding::Json).await;
    assert_eq!(r.stdout.len() + r.stderr.len(), 1000);
    assert!(r.truncated);
    assert_eq!(r.exit_code, Some(7));
}

#[tokio::test]
async fn timeouts_and_errors_are_typed() {
    let s = TestServer::start().await;
    let h = s.http();
    let req = ExecRequest {
        options: RunOptions { timeout_ms: Some(200), ..RunOptions::default() },
        ..sh("echo before; sleep 100")
    };
    let r = bounded(run(&h, "/v1/exec", &req, Encoding::Json)).await;
    assert_eq!((r.reason, r.signal, r.stdout.as_bytes()), (ExitReason::TimedOut, Some(15), &b"before\n"[..]));

    let (status, e) = fails(
        &h,
        "/v1/exec",
        &ExecRequest { argv: vec!["/no/such/program".into()], ..ExecRequest::default() },
    )
    .await;
    assert_eq!((status, e.code, e.errno), (422, ErrorCode::SpawnFailed, Some(2)));
    let (status, e) = fails(&h, "/v1/exec", &ExecRequest::default()).await;
    assert_eq!((status, e.code), (400, ErrorCode::BadRequest));
    let both = ExecRequest { argv: vec!["true".into()], ..sh("true") };
    assert_eq!(fails(&h, "/v1/exec", &both).await.0, 400);
    let big = ExecRequest {
        options: RunOptions { max_output_bytes: Some(2 << 30), ..RunOptions::default() },
        ..sh("true")
    };
    assert_eq!(fails(&h, "/v1/exec", &big).await.1.code, ErrorCode::BadRequest);
    let (status, e) = fails(&h, "/v1/exec", &serde_json::json!({"argv": "not a list"})).await;
    assert_eq!((status, e.code), (400, ErrorCode::BadFrame));
    // No token, wrong token, foreign Origin.
    let url = format!("{}/v1/exec", s.url);
    let r = h.client().post(&url).body("{}").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = h.client().post(&url).bearer_auth("wrong").body("{}").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = h
        .client()
        .post(&url)
        .bearer_auth(&s.token)
        .header("origin", "http://evil.example")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
}

#[tokio::test]
async fn a_running_one_shot_command_can_be_attached_over_websocket() {
    let s = TestServer::start().await;
    let h = s.http();
    let c = s.client().await;
    let req =
        sh("echo first; while [ ! -e /tmp/tether-oneshot-gate-$PPID ]; do sleep 0.01; done; echo second");
    let http = tokio::spawn(async move { run(&h, "/v1/exec", &req, Encoding::Json).await });
    // Find it in the list and watch it from another client.
    let id = bounded(async {
        loop {
            if let Some(i) =
                c.list().await.unwrap().into_iter().find(|i| i.state == tether_proto::CommandState::Running)
            {
                break i.command;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let mut ex = c.attach(&id, [0, 0]).await.unwrap();
    let first = bounded(ex.next()).await.unwrap().unwrap();
    assert!(
        matches!(first, tether_client::ExecEvent::Stdout(ref b) if b.as_ref() == b"first\n"),
        "{first:?}"
    );
    std::fs::write(format!("/tmp/tether-oneshot-gate-{}", std::process::id()), b"").unwrap();
    let r = bounded(http).await.unwrap();
    let _ = std::fs::remove_file(format!("/tmp/tether-oneshot-gate-{}", std::process::id()));
    assert_eq!(r.command, id);
    assert_eq!(r.stdout.as_bytes(), b"first\nsecond\n");
    assert_eq!(bounded(ex.output()).await.unwrap().stdout, b"second\n");
}

#[tokio::test]
async fn code_runs_in_each_language_without_quoting_trouble() {
    let s = TestServer::start().await;
    let h = s.http();
    let tricky = r#"it's "quoted" $HOME `x` \n"#;
    let cases = [
        (
            "python3",
            format!("import sys\nprint({tricky:?})\nprint(sys.argv[1:])\nprint(sys.stdin.read())"),
            format!("{tricky}\n['a b', '$c']\nfrom stdin\n"),
        ),
        (
            "bash",
            "printf '%s\\n' \"it's \\\"quoted\\\" \\$HOME \\`x\\` \\\\n\"\necho \"[$1] [$2]\"\ncat"
                .to_owned(),
            format!("{tricky}\n[a b] [$c]\nfrom stdin"),
        ),
        ("sh", "echo \"$#:$1\"\ncat".to_owned(), "2:a b\nfrom stdin".to_owned()),
    ];
    for (language, code, want) in cases {
        let req = CodeRequest {
            language: language.into(),
            code,
            args: vec!["a b".into(), "$c".into()],
            options: RunOptions { stdin_text: Some("from stdin".into()), ..RunOptions::default() },
        };
        let r = run(&h, "/v1/code", &req, Encoding::Json).await;
        assert_eq!(
            String::from_utf8_lossy(r.stdout.as_bytes()),
            want,
            "{language}: {:?}",
            String::from_utf8_lossy(r.stderr.as_bytes())
        );
        assert_eq!(r.exit_code, Some(0), "{language}");
    }
    // node: installed by scripts/test-all.sh, so required in CI.
    let have_node =
        std::process::Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(have_node || std::env::var_os("CI").is_none(), "node is missing in CI");
    if have_node {
        let req = CodeRequest {
            language: "node".into(),
            code: format!("console.log({tricky:?}); console.log(process.argv.slice(2).join('|'))"),
            args: vec!["a b".into()],
            ..CodeRequest::default()
        };
        let r = run(&h, "/v1/code", &req, Encoding::MsgPack).await;
        assert_eq!(String::from_utf8_lossy(r.stdout.as_bytes()), format!("{tricky}\na b\n"));
    }
    // A failing snippet: its exit code and its traceback.
    let req = CodeRequest {
        language: "python3".into(),
        code: "raise SystemExit(4)".into(),
        ..CodeRequest::default()
    };
    assert_eq!(run(&h, "/v1/code", &req, Encoding::Json).await.exit_code, Some(4));
    let req = CodeRequest { language: "python3".into(), code: "1/0".into(), ..CodeRequest::default() };
    let r = run(&h, "/v1/code", &req, Encoding::Json).await;
    assert_eq!(r.exit_code, Some(1));
    assert!(String::from_utf8_lossy(r.stderr.as_bytes()).contains("ZeroDivisionError"));
    let (status, e) =
        fails(&h, "/v1/code", &CodeRequest { language: "cobol".into(), ..CodeRequest::default() }).await;
    assert_eq!((status, e.code), (400, ErrorCode::BadRequest));
    assert!(e.message.contains("python3"), "{}", e.message);
}

/// A background process a snippet leaves running (`sleep &`, detached
/// from the output) is ended with the run: before containment it ran on
/// after the response, outside any command `kill` could reach.
#[tokio::test]
async fn a_snippet_leaves_nothing_running() {
    let s = TestServer::start().await;
    let h = s.http();
    let req = CodeRequest {
        language: "sh".into(),
        code: "sleep 1000 >/dev/null 2>&1 & echo $!".into(),
        ..CodeRequest::default()
    };
    let r = run(&h, "/v1/code", &req, Encoding::Json).await;
    let pid: u32 = String::from_utf8_lossy(r.stdout.as_bytes()).trim().parse().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while tether_testkit::running(pid) {
        assert!(std::time::Instant::now() < deadline, "the snippet's sleep {pid} still runs");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
