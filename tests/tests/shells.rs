//! Named shells end to end: a real daemon on port 0, real bash, real
//! WebSocket clients (the Rust client and raw frames), a cutting proxy.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tether_client::{
    Client, ClientError, CommandState, ExecEvent, ExitReason, ShellCloseReason, ShellRunSpec, ShellSpec,
    ShellState,
};
use tether_proto::{ClientMsg, Encoding, ErrorCode, ReqId, ServerMsg};
use tether_testkit::{CutProxy, bounded};
use tether_tests::{RawWs, TestServer};

fn named(name: &str) -> ShellSpec {
    ShellSpec { name: Some(name.to_owned()), ..ShellSpec::default() }
}

fn script(s: &str) -> ShellRunSpec {
    ShellRunSpec { script: s.to_owned(), close_stdin: true, ..ShellRunSpec::default() }
}

async fn exec(c: &Client, shell: &str, s: &str) -> (String, String, tether_client::ExitStatus) {
    let out = bounded(c.shell_exec(shell, s)).await.unwrap();
    (String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap(), out.status)
}

fn server_code(e: &ClientError) -> Option<ErrorCode> {
    match e {
        ClientError::Server { code, .. } => Some(*code),
        _ => None,
    }
}

#[tokio::test]
async fn state_persists_and_create_reattaches_by_name() {
    let s = TestServer::start().await;
    let c = s.client().await;
    let (info, created) = c.shell_create(named("dev")).await.unwrap();
    assert!(created);
    assert_eq!(info.state, ShellState::Idle);
    let (out, err, st) =
        exec(&c, "dev", "cd /usr && export X=1; y=2; f() { echo f:$1; }; alias ll='echo ALIAS'").await;
    assert_eq!((out.as_str(), err.as_str(), st.code), ("", "", Some(0)));
    assert_eq!(st.cwd.as_deref(), Some("/usr"));
    // A second client creating the same name gets the same shell and state.
    let c2 = s.client().await;
    let (info, created) = c2.shell_create(named("dev")).await.unwrap();
    assert!(!created);
    assert_eq!(info.cwd, "/usr");
    let (out, _, st) = exec(&c2, "dev", "echo \"$PWD $X $y\"; f a; env | grep ^X=; ll").await;
    assert_eq!(out, "/usr 1 2\nf:a\nX=1\nALIAS\n");
    assert_eq!((st.code, st.reason), (Some(0), ExitReason::Exited));
    // Generated names are unguessable and distinct.
    let (a, _) = c.shell_create(ShellSpec::default()).await.unwrap();
    let (b, _) = c.shell_create(ShellSpec::default()).await.unwrap();
    assert_ne!(a.name, b.name);
    assert!(a.name.starts_with("sh-") && a.name.len() == 19, "{}", a.name);
    // Create options: cwd and env.
    let spec = ShellSpec {
        name: Some("opts".into()),
        cwd: Some("/tmp".into()),
        env: [("GREETING".to_owned(), "hi".to_owned())].into(),
        ..ShellSpec::default()
    };
    c.shell_create(spec).await.unwrap();
    let (out, _, _) = exec(&c, "opts", "echo $PWD $GREETING").await;
    assert_eq!(out, "/tmp hi\n");
    // Bad input: typed errors.
    let e = c.shell_create(named("a/b")).await.unwrap_err();
    assert_eq!(server_code(&e), Some(ErrorCode::BadRequest), "{e}");
    let e = c.shell_exec("nope", "true").await.unwrap_err();
    assert_eq!(server_code(&e), Some(ErrorCode::NotFound), "{e}");
    let e = c.shell_exec("dev", "echo a\0b").await.unwrap_err();
    assert_eq!(server_code(&e), Some(ErrorCode::BadRequest), "{e}");
    let spec = ShellSpec {
        name: Some("nobash".into()),
        program: Some("/nonexistent/sh".into()),
        ..ShellSpec::default()
    };
    let e = c.shell_create(spec).await.unwrap_err();
    assert_eq!(server_code(&e), Some(ErrorCode::SpawnFailed), "{e}");
}

#[tokio::test]
async fn fifty_submissions_from_five_clients_run_in_order() {
    let s = TestServer::start().await;
    let c = s.client().await;
    c.shell_create(named("order")).await.unwrap();
    // Five clients each pipeline ten submissions without waiting.
    let mut tasks = Vec::new();
    for t in 0..5 {
        let client = s.client().await;
        tasks.push(tokio::spawn(async move {
            let mut pending = Vec::new();
            for i in 0..10 {
                // Each command counts, so its output says where it ran.
                let sc = format!("n=$((n+1)); echo {t}-{i} $n");
                let c = client.clone();
                pending.push(tokio::spawn(async move { c.shell_run("order", script(&sc)).await.unwrap() }));
                tokio::task::yield_now().await;
            }
            let mut runs = Vec::new();
            for (i, p) in pending.into_iter().enumerate() {
                let ex = p.await.unwrap();
                runs.push((format!("{t}-{i}"), ex.id().clone(), ex.output().await.unwrap()));
            }
            runs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(bounded(t).await.unwrap());
    }
    let history = c.shell_history("order").await.unwrap();
    assert_eq!(history.len(), 50);
    let mut seen = [false; 50];
    for (label, id, out) in &all {
        let text = String::from_utf8(out.stdout.clone()).unwrap();
        let (got, n) = text.trim().split_once(' ').unwrap();
        // Each result belongs to its command ...
        assert_eq!(got, label);
        assert_eq!(out.status.code, Some(0));
        // ... and ran at the position the history gives it.
        let n: usize = n.parse().unwrap();
        assert_eq!(&history[n - 1].command, id, "{label} ran {n}th");
        assert!(!seen[n - 1]);
        seen[n - 1] = true;
    }
    // Executed in the order the daemon received them: the history order is
    // the execution order, and within one connection submission order holds
    // for those submitted one after the other.
    for w in history.windows(2) {
        assert!(w[0].ended_at_ms <= w[1].started_at_ms);
        assert!(w[0].submitted_at_ms <= w[1].submitted_at_ms);
    }
}

#[tokio::test]
async fn output_is_byte_exact_whatever_it_looks_like() {
    let s = TestServer::start().await;
    let c = s.client().await;
    c.shell_create(named("bytes")).await.unwrap();
    // Marker-like text, NULs, no trailing newline, a write to fd 3.
    let out = bounded(
        c.shell_exec("bytes", "echo 'E 1 0 /tmp'; printf 'S 5\\0E 5 0 /x\\0R\\0'; echo x >&3; printf tail"),
    )
    .await
    .unwrap();
    assert_eq!(out.stdout, b"E 1 0 /tmp\nS 5\0E 5 0 /x\0R\0tail");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Bad file descriptor"));
    // 3 MB of random bytes on stderr and stdout, checked by hash.
    let out = bounded(c.shell_exec(
        "bytes",
        "head -c 3000000 /dev/urandom > r.bin; cat r.bin; cat r.bin >&2; sha256sum < r.bin; rm r.bin",
    ))
    .await
    .unwrap();
    assert_eq!(out.stdout.len(), 3_000_000 + 68);
    let (data, sum) = out.stdout.split_at(3_000_000);
    let hex = format!("{:x}", Sha256::digest(data));
    assert_eq!(&sum[..64], hex.as_bytes());
    assert_eq!(out.stderr, data);
    // A command with no output.
    let out = bounded(c.shell_exec("bytes", "true")).await.unwrap();
    assert!(out.stdout.is_empty() && out.stderr.is_empty());
}

#[tokio::test]
async fn heredoc_and_syntax_errors_leave_the_shell_working() {
    let s = TestServer::start().await;
    let c = s.client().await;
    c.shell_create(named("syn")).await.unwrap();
    let (out, _, st) = exec(&c, "syn", "cat <<'EOF'\nline $HOME\nEOF\ncat <<EOF\n$((6*7))\nEOF").await;
    assert_eq!((out.as_str(), st.code), ("line $HOME\n42\n", Some(0)));
    let (out, err, st) = exec(&c, "syn", "kept=1; echo 'unbalanced").await;
    assert_eq!(out, "");
    assert!(err.contains("unexpected EOF"), "{err}");
    assert_eq!(st.code, Some(2));
    let (out, err, st) = exec(&c, "syn", "if true; then echo x").await;
    assert!(out.is_empty() && err.contains("syntax error"), "{err}");
    assert_eq!(st.code, Some(2));
    let (out, _, st) = exec(&c, "syn", "echo working").await;
    assert_eq!((out.as_str(), st.code), ("working\n", Some(0)));
}

#[tokio::test]
async fn interrupt_keeps_the_shell_and_exit_closes_it() {
    let s = TestServer::start().await;
    let c = s.client().await;
    c.shell_create(named("life")).await.unwrap();
    exec(&c, "life", "cd /tmp; keep=yes").await;
    let mut ex = c.shell_run("life", script("echo started; sleep 1000; echo never")).await.unwrap();
    let first = bounded(ex.next()).await.unwrap().unwrap();
    assert!(matches!(first, ExecEvent::Stdout(ref b) if b.as_ref() == b"started\n"), "{first:?}");
    ex.signal("INT").await.unwrap();
    let out = bounded(ex.output()).await.unwrap();
    assert_eq!(out.stdout, b"");
    assert_eq!(out.status.code, Some(130));
    let (out, _, _) = exec(&c, "life", "echo $keep $PWD").await;
    assert_eq!(out, "yes /tmp\n");
    // A timeout interrupts as well; the shell stays.
    let spec = ShellRunSpec { timeout_ms: Some(200), ..script("sleep 1000") };
    let out = bounded(c.shell_run("life", spec).await.unwrap().output()).await.unwrap();
    assert_eq!(out.status.reason, ExitReason::TimedOut);
    // `exit 3`: the command reports 3, queued ones never run, the shell is
    // closed with that reason, and later submissions get a clear error.
    let gate = std::env::temp_dir().join(format!("tether-gate-{:x}", rand::random::<u64>()));
    let ex = c
        .shell_run("life", script(&format!("while [ ! -e {} ]; do sleep 0.01; done; exit 3", gate.display())))
        .await
        .unwrap();
    let queued = c.shell_run("life", script("echo never")).await.unwrap();
    std::fs::write(&gate, b"").unwrap();
    let out = bounded(ex.output()).await.unwrap();
    let _ = std::fs::remove_file(&gate);
    assert_eq!((out.status.code, out.status.reason), (Some(3), ExitReason::Exited));
    let out = bounded(queued.output()).await.unwrap();
    assert_eq!((out.stdout.as_slice(), out.status.reason), (&b""[..], ExitReason::ShellClosed));
    let info = c.shells().await.unwrap().into_iter().find(|i| i.name == "life").unwrap();
    assert_eq!(info.state, ShellState::Closed);
    let closed = info.closed.unwrap();
    assert_eq!((closed.reason, closed.code), (ShellCloseReason::Exited, Some(3)));
    let e = c.shell_exec("life", "true").await.unwrap_err();
    assert_eq!(server_code(&e), Some(ErrorCode::ShellClosed), "{e}");
}

#[tokio::test]
async fn stdin_reaches_the_command_and_never_the_next_one() {
    let s = TestServer::start().await;
    let c = s.client().await;
    c.shell_create(named("in")).await.unwrap();
    let spec =
        ShellRunSpec { script: "read a; echo got:$a; cat; echo end".into(), ..ShellRunSpec::default() };
    let reader = c.shell_run("in", spec).await.unwrap();
    // Queued behind the reader: `cat` must not swallow it.
    let next = c.shell_run("in", script("echo second")).await.unwrap();
    // Stdin sent while the reader may still be queued is kept for it.
    reader.write_stdin(Bytes::from_static(b"one\ntwo\n")).await.unwrap();
    reader.close_stdin().await.unwrap();
    let out = bounded(reader.output()).await.unwrap();
    assert_eq!(out.stdout, b"got:one\ntwo\nend\n");
    let out = bounded(next.output()).await.unwrap();
    assert_eq!(out.stdout, b"second\n");
}

#[tokio::test]
async fn a_queued_command_is_reattached_after_a_network_cut() {
    let s = TestServer::start().await;
    let proxy = CutProxy::start(s.addr, u64::MAX - 1, u64::MAX).await;
    let c = s.client_via(&proxy.url()).await;
    c.shell_create(named("cut")).await.unwrap();
    // Something runs for a while; the command under test waits behind it.
    let gate = std::env::temp_dir().join(format!("tether-gate-{:x}", rand::random::<u64>()));
    let blocker = c
        .shell_run("cut", script(&format!("while [ ! -e {} ]; do sleep 0.02; done", gate.display())))
        .await
        .unwrap();
    let mut ex = c
        .shell_run(
            "cut",
            script("for i in $(seq 1 200); do echo line-$i; done; head -c 100000 /dev/zero | tr '\\0' z"),
        )
        .await
        .unwrap();
    let info = c.status(ex.id()).await.unwrap();
    assert_eq!(info.state, CommandState::Queued);
    assert_eq!(info.shell.as_deref(), Some("cut"));
    // The network goes away while it is queued; it starts while we are cut.
    proxy.cut_all();
    std::fs::write(&gate, b"").unwrap();
    let mut stdout = Vec::new();
    let status = bounded(async {
        loop {
            match ex.next().await.unwrap().unwrap() {
                ExecEvent::Stdout(b) => {
                    stdout.extend_from_slice(&b);
                    // And once more mid-stream.
                    if stdout.len() > 1000 && proxy.cuts() < 2 {
                        proxy.cut_all();
                    }
                }
                ExecEvent::Exit(st) => break st,
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await;
    let _ = std::fs::remove_file(&gate);
    let mut want: Vec<u8> = (1..=200).flat_map(|i| format!("line-{i}\n").into_bytes()).collect();
    want.extend(std::iter::repeat_n(b'z', 100_000));
    assert_eq!(stdout.len(), want.len());
    assert!(stdout == want, "every byte exactly once across the cuts");
    assert_eq!(status.code, Some(0));
    assert!(proxy.cuts() >= 2);
    assert_eq!(bounded(blocker.output()).await.unwrap().status.code, Some(0));
}

#[tokio::test]
async fn history_and_close() {
    let s = TestServer::start().await;
    let c = s.client().await;
    c.shell_create(named("h")).await.unwrap();
    exec(&c, "h", "echo one").await;
    exec(&c, "h", "false").await;
    let id = c.shell_submit("h", script("sleep 1000 & echo $!; wait")).await.unwrap();
    // Wait until it runs and has printed its background job's pid.
    let mut ex = c.attach(&id, [0, 0]).await.unwrap();
    let pid: i32 = match bounded(ex.next()).await.unwrap().unwrap() {
        ExecEvent::Stdout(b) => String::from_utf8_lossy(&b).trim().parse().unwrap(),
        other => panic!("unexpected {other:?}"),
    };
    let h = c.shell_history("h").await.unwrap();
    assert_eq!(h.len(), 3);
    assert_eq!(
        (h[0].script.as_str(), h[0].exit_code, h[0].state),
        ("echo one", Some(0), CommandState::Exited)
    );
    assert_eq!((h[1].script.as_str(), h[1].exit_code), ("false", Some(1)));
    assert!(h[1].started_at_ms.is_some() && h[1].ended_at_ms.is_some());
    assert_eq!((h[2].command.clone(), h[2].state), (id.clone(), CommandState::Running));
    let list = c.shells().await.unwrap();
    let info = list.iter().find(|i| i.name == "h").unwrap();
    assert_eq!((info.state, info.running.clone(), info.commands), (ShellState::Busy, Some(id.clone()), 3));
    // Close: the running command ends, its background job dies, the shell
    // and its commands are gone.
    c.shell_close("h").await.unwrap();
    let out = bounded(ex.output()).await.unwrap();
    assert_eq!(out.status.reason, ExitReason::ShellClosed);
    bounded(async {
        while std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z")) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(c.shells().await.unwrap().iter().all(|i| i.name != "h"));
    let e = c.shell_history("h").await.unwrap_err();
    assert_eq!(server_code(&e), Some(ErrorCode::NotFound));
    let e = c.status(&id).await.unwrap_err();
    assert_eq!(server_code(&e), Some(ErrorCode::NotFound));
}

#[tokio::test]
async fn raw_frames_in_both_encodings() {
    let s = TestServer::start().await;
    for enc in [Encoding::MsgPack, Encoding::Json] {
        let mut ws = RawWs::connect(&s, enc).await;
        let name = format!("raw-{enc:?}").to_lowercase();
        let spec = ShellSpec { name: Some(name.clone()), ..ShellSpec::default() };
        ws.send(&ClientMsg::ShellCreate { id: ReqId(1), spec }).await;
        assert!(matches!(ws.recv().await, Some(ServerMsg::Shell { id: ReqId(1), created: true, .. })));
        ws.send(&ClientMsg::ShellRun {
            id: ReqId(2),
            shell: name.clone(),
            spec: script("printf hi; exit 0"),
        })
        .await;
        let Some(ServerMsg::Started { id: ReqId(2), command, .. }) = ws.recv().await else {
            panic!("started")
        };
        let mut data = Vec::new();
        loop {
            match ws.recv().await.unwrap() {
                ServerMsg::Output { data: d, .. } => data.extend_from_slice(&d.0),
                ServerMsg::Exit { command: c, status } => {
                    assert_eq!(c, command);
                    assert_eq!(status.code, Some(0));
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(data, b"hi");
        ws.send(&ClientMsg::ShellHistory { id: ReqId(3), shell: name.clone() }).await;
        let Some(ServerMsg::ShellHistory { entries, .. }) = ws.recv().await else { panic!("history") };
        assert_eq!(entries.len(), 1);
        ws.send(&ClientMsg::ShellClose { id: ReqId(4), shell: name.clone() }).await;
        assert!(matches!(ws.recv().await, Some(ServerMsg::Ok { id: ReqId(4) })));
        ws.send(&ClientMsg::ShellClose { id: ReqId(5), shell: name }).await;
        assert!(matches!(ws.recv().await, Some(ServerMsg::Error { code: ErrorCode::NotFound, .. })));
    }
}
