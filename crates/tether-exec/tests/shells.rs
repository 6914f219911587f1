//! Named shells against a real bash: state, output cleanliness, interrupts,
//! stdin, exit, background jobs, history and close.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use tether_exec::{
    CloseReason, CommandHandle, CommandSpec, ExecError, ExitInfo, ExitReason, JobState, Manager, ShellSpec,
    ShellState,
};

mod support;

use support::manager;
use tether_testkit::rand_u64;

const LIMIT: Duration = Duration::from_secs(30);

/// Reads a command from offset 0 to its exit: (stdout, stderr, exit).
async fn collect(h: &CommandHandle) -> (Vec<u8>, Vec<u8>, ExitInfo) {
    support::collect(h.attach([0, 0]).unwrap(), LIMIT).await
}

async fn shell(m: &Manager, name: &str) {
    let (_, created) = m.create_shell(ShellSpec::named(name)).await.unwrap();
    assert!(created);
}

async fn run(m: &Manager, sh: &str, script: &str) -> (String, String, ExitInfo) {
    let h = match m.shell_run(sh, CommandSpec::shell(script).stdin(Bytes::new(), true)).await {
        Ok(h) => h,
        Err(e) => panic!("{script}: {e}"),
    };
    let (out, err, exit) = collect(&h).await;
    (String::from_utf8_lossy(&out).into_owned(), String::from_utf8_lossy(&err).into_owned(), exit)
}

#[tokio::test]
async fn state_persists_across_commands() {
    let m = manager();
    shell(&m, "state").await;
    let dir = std::env::temp_dir();
    let (out, err, exit) = run(
        &m,
        "state",
        &format!("cd {}; export X=1; y=2; f() {{ echo f:$1; }}; alias ll='echo ALIAS'", dir.display()),
    )
    .await;
    assert_eq!((out.as_str(), err.as_str(), exit.code), ("", "", Some(0)));
    assert_eq!(exit.cwd.as_deref(), Some(dir.to_str().unwrap()));
    let (out, err, exit) = run(&m, "state", "echo \"$PWD $X $y\"; f a; env | grep ^X=; ll").await;
    assert_eq!(out, format!("{} 1 2\nf:a\nX=1\nALIAS\n", dir.display()));
    assert_eq!(err, "");
    assert_eq!(exit.code, Some(0));
    assert_eq!(exit.reason, ExitReason::Exited);
    // $? carries over, as on a terminal.
    run(&m, "state", "false").await;
    let (out, _, _) = run(&m, "state", "echo prev=$?").await;
    assert_eq!(out, "prev=1\n");
    let info = m.shell("state").unwrap().info();
    assert_eq!(info.cwd, dir.to_str().unwrap());
    assert_eq!(info.state, ShellState::Idle);
    assert_eq!(info.commands, 4);
}

#[tokio::test]
async fn output_is_byte_exact_and_clean() {
    let m = manager();
    shell(&m, "clean").await;
    let (out, err, _) = run(&m, "clean", "printf 'no newline'").await;
    assert_eq!((out.as_str(), err.as_str()), ("no newline", ""));
    // Text that looks like the status records, and a write to fd 3.
    let h = m
        .shell_run(
            "clean",
            CommandSpec::shell("echo 'E 1 0 /tmp'; printf 'S 5\\0E 5 0 /x\\0R\\0'; echo x >&3; echo rc=$?"),
        )
        .await
        .unwrap();
    let (out, err, exit) = collect(&h).await;
    assert_eq!(out, b"E 1 0 /tmp\nS 5\0E 5 0 /x\0R\0rc=1\n");
    assert!(String::from_utf8_lossy(&err).contains("Bad file descriptor"), "{err:?}");
    assert_eq!(exit.code, Some(0));
    // Every byte value, on both streams.
    let h = m
        .shell_run(
            "clean",
            CommandSpec::shell(
                "for i in $(seq 0 255); do printf \"\\\\$(printf %o $i)\"; done | tee /dev/stderr",
            ),
        )
        .await
        .unwrap();
    let (out, err, _) = collect(&h).await;
    let all: Vec<u8> = (0..=255).collect();
    assert_eq!(out, all);
    assert_eq!(err, all);
    // No output at all.
    let (out, err, exit) = run(&m, "clean", ":").await;
    assert_eq!((out.as_str(), err.as_str(), exit.code), ("", "", Some(0)));
}

#[tokio::test]
async fn heredocs_syntax_errors_and_long_scripts() {
    let m = manager();
    shell(&m, "syntax").await;
    let script =
        "cat <<'EOF'\nquoted $HOME `x`\nEOF\ncat <<EOF\nexpanded $((1+2))\nEOF\ncat <<-EOF\n\ttabbed\n\tEOF";
    let (out, _, exit) = run(&m, "syntax", script).await;
    assert_eq!(out, "quoted $HOME `x`\nexpanded 3\ntabbed\n");
    assert_eq!(exit.code, Some(0));
    // An unterminated heredoc ends at the end of the script.
    let (out, err, _) = run(&m, "syntax", "cat <<EOF\nno terminator").await;
    assert_eq!(out, "no terminator\n");
    assert!(err.contains("here-document"), "{err}");
    // Unbalanced quote: a syntax error, and the shell carries on.
    let (out, err, exit) = run(&m, "syntax", "x=kept; echo 'unbalanced").await;
    assert_eq!(out, "");
    assert!(err.contains("unexpected EOF"), "{err}");
    assert_eq!(exit.code, Some(2));
    let (out, _, exit) = run(&m, "syntax", "echo still alive").await;
    assert_eq!((out.as_str(), exit.code), ("still alive\n", Some(0)));
    // A long script (1 MiB on one line).
    let long = format!("echo {} | wc -c", "a".repeat(1 << 20));
    let (out, _, _) = run(&m, "syntax", &long).await;
    assert_eq!(out.trim(), ((1 << 20) + 1).to_string());
    // NUL cannot be passed through the script file: refused up front.
    let e = m.shell_run("syntax", CommandSpec::shell("echo a\0b")).await.unwrap_err();
    assert!(matches!(e, ExecError::NulByte { what: "script" }), "{e}");
}

#[tokio::test]
async fn interrupt_and_timeout_keep_the_shell() {
    let m = manager();
    shell(&m, "intr").await;
    run(&m, "intr", "keep=yes").await;
    for script in ["sleep 100; echo next", "while :; do :; done; echo next", "read v; echo next"] {
        let h = m.shell_run("intr", CommandSpec::shell(script)).await.unwrap();
        wait_running(&h).await;
        h.signal("INT").await.unwrap();
        let (out, _, exit) = collect(&h).await;
        assert_eq!(out, b"", "{script}");
        assert_eq!(exit.code, Some(130), "{script}");
    }
    // A timeout interrupts too; the reason says so.
    let h = m
        .shell_run("intr", CommandSpec::shell("sleep 100").timeout(Duration::from_millis(200)))
        .await
        .unwrap();
    let (_, _, exit) = collect(&h).await;
    assert_eq!(exit.reason, ExitReason::TimedOut);
    // A command that ignores SIGINT is killed by escalation; the shell lives.
    let spec = CommandSpec::shell("trap '' INT; sleep 100; echo after").timeout(Duration::from_millis(100));
    let h = m.shell_run("intr", spec.kill_grace(Duration::from_millis(200))).await.unwrap();
    let (_, _, exit) = collect(&h).await;
    assert_eq!(exit.reason, ExitReason::TimedOut);
    run(&m, "intr", "trap - INT").await;
    let (out, _, _) = run(&m, "intr", "echo $keep").await;
    assert_eq!(out, "yes\n");
    // Killing a queued command drops it; it never runs.
    let busy = m.shell_run("intr", CommandSpec::shell("sleep 100")).await.unwrap();
    let queued = m.shell_run("intr", CommandSpec::shell("touch /tmp/never-$$")).await.unwrap();
    assert!(queued.info().queued);
    queued.kill().await.unwrap();
    let (_, _, exit) = collect(&queued).await;
    assert_eq!((exit.code, exit.reason), (None, ExitReason::Killed));
    busy.kill().await.unwrap();
    let (_, _, exit) = collect(&busy).await;
    assert_eq!(exit.reason, ExitReason::Killed);
    assert_eq!(m.shell("intr").unwrap().info().state, ShellState::Idle);
}

/// A file a script waits for, so that commands can be queued behind it.
struct Gate(std::path::PathBuf);

impl Gate {
    fn new() -> Gate {
        Gate(std::env::temp_dir().join(format!("tether-gate-{:x}", rand_u64())))
    }

    /// Script text that waits for the gate.
    fn wait(&self) -> String {
        format!("while [ ! -e {} ]; do sleep 0.01; done; ", self.0.display())
    }

    fn open(&self) {
        std::fs::write(&self.0, b"").unwrap();
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn wait_running(h: &CommandHandle) {
    let mut sub = h.attach([0, 0]).unwrap();
    tokio::time::timeout(LIMIT, async {
        while h.info().queued {
            let _ = tokio::time::timeout(Duration::from_millis(20), sub.next(1)).await;
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn stdin_goes_to_the_command_not_the_shell() {
    let m = manager();
    shell(&m, "stdin").await;
    let reader =
        m.shell_run("stdin", CommandSpec::shell("read x; echo got:$x; cat; echo done")).await.unwrap();
    // Queued behind it: must not be read by `cat`.
    let next = m.shell_run("stdin", CommandSpec::shell("echo second")).await.unwrap();
    reader.write_stdin(Bytes::from_static(b"line1\nrest")).await.unwrap();
    reader.close_stdin().await.unwrap();
    let (out, _, exit) = collect(&reader).await;
    assert_eq!(out, b"got:line1\nrestdone\n");
    assert_eq!(exit.code, Some(0));
    let (out, _, _) = collect(&next).await;
    assert_eq!(out, b"second\n");
}

#[tokio::test]
async fn exit_closes_the_shell() {
    let m = manager();
    shell(&m, "exit").await;
    let gate = Gate::new();
    let h =
        m.shell_run("exit", CommandSpec::shell(format!("{}echo bye; exit 3", gate.wait()))).await.unwrap();
    let queued = m.shell_run("exit", CommandSpec::shell("echo never")).await.unwrap();
    gate.open();
    let (out, err, exit) = collect(&h).await;
    assert_eq!((out.as_slice(), err.as_slice()), (&b"bye\n"[..], &b""[..]));
    assert_eq!((exit.code, exit.reason), (Some(3), ExitReason::Exited));
    let (out, _, exit) = collect(&queued).await;
    assert_eq!((out.as_slice(), exit.reason), (&b""[..], ExitReason::ShellClosed));
    let info = m.shell("exit").unwrap().info();
    assert_eq!(info.state, ShellState::Closed);
    let closed = info.closed.unwrap();
    assert_eq!((closed.reason, closed.code), (CloseReason::Exited, Some(3)));
    let e = m.shell_run("exit", CommandSpec::shell("true")).await.unwrap_err();
    assert!(matches!(e, ExecError::ShellClosed { .. }), "{e}");
    // The name can be used again: a fresh shell.
    let (_, created) = m.create_shell(ShellSpec::named("exit")).await.unwrap();
    assert!(created);
    let (out, _, _) = run(&m, "exit", "echo again").await;
    assert_eq!(out, "again\n");
}

#[tokio::test]
async fn background_jobs_survive_commands_and_die_with_the_shell() {
    let m = manager();
    shell(&m, "bg").await;
    let (out, _, exit) = run(&m, "bg", "sleep 1000 & echo $!").await;
    assert_eq!(exit.code, Some(0));
    let pid: i32 = out.trim().parse().unwrap();
    let alive = |pid: i32| std::path::Path::new(&format!("/proc/{pid}")).exists();
    assert!(alive(pid));
    // An interrupt of a later command spares it.
    let h = m.shell_run("bg", CommandSpec::shell("sleep 100")).await.unwrap();
    wait_running(&h).await;
    h.signal("INT").await.unwrap();
    collect(&h).await;
    assert!(alive(pid));
    let (out, _, _) = run(&m, "bg", "setsid sleep 1001 >/dev/null 2>&1 & echo $!").await;
    let detached: i32 = out.trim().parse().unwrap();
    m.close_shell("bg").await.unwrap();
    tokio::time::timeout(LIMIT, async {
        while alive(pid) && !is_zombie(pid) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("background job killed with its shell");
    assert!(alive(detached), "a detached job survives");
    unsafe_free_kill(detached);
    assert!(matches!(m.shell("bg"), Err(ExecError::ShellNotFound(_))));
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit(')').next().unwrap().trim_start().starts_with('Z'))
}

fn unsafe_free_kill(pid: i32) {
    let _ = std::process::Command::new("kill").arg("-9").arg(pid.to_string()).status();
}

#[tokio::test]
async fn history_ordering_and_close() {
    let m = manager();
    shell(&m, "hist").await;
    // 50 submissions from 5 tasks at once.
    let mut tasks = Vec::new();
    for t in 0..5 {
        let m = m.clone();
        tasks.push(tokio::spawn(async move {
            let mut hs = Vec::new();
            for i in 0..10 {
                let h = m
                    .shell_run("hist", CommandSpec::shell(format!("echo {t}-{i}; n=$((n+1)); echo $n >&2")))
                    .await
                    .unwrap();
                hs.push((format!("{t}-{i}\n"), h));
            }
            hs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let history = m.shell("hist").unwrap().history();
    assert_eq!(history.len(), 50);
    for (want, h) in &all {
        let (out, err, exit) = collect(h).await;
        assert_eq!(String::from_utf8(out).unwrap(), *want);
        // The counter says where it ran; the history order must agree.
        let n: usize = String::from_utf8(err).unwrap().trim().parse().unwrap();
        assert_eq!(history[n - 1].id, h.id());
        assert_eq!(exit.code, Some(0));
    }
    // Each task's own submissions ran in its order.
    let history = m.shell("hist").unwrap().history();
    assert!(history.iter().all(|e| e.state == JobState::Exited && e.exit_code == Some(0)));
    for t in 0..5 {
        let mine: Vec<&str> = history
            .iter()
            .filter(|e| e.script.starts_with(&format!("echo {t}-")))
            .map(|e| e.script.as_str())
            .collect();
        let want: Vec<String> = (0..10).map(|i| format!("echo {t}-{i}; n=$((n+1)); echo $n >&2")).collect();
        assert_eq!(mine, want);
    }
    assert!(history.windows(2).all(|w| w[0].ended_at <= w[1].started_at));
    let id = all[0].1.id().to_owned();
    m.close_shell("hist").await.unwrap();
    assert!(m.get(&id).is_err(), "the shell's commands are freed");
    assert!(m.shells().is_empty());
}

/// An interrupt that reaches bash between its fork of a child and its wait
/// for it is lost for the child (bash notes it and waits for ever); the
/// shell resends it to processes that cannot have received it.
#[tokio::test]
async fn an_interrupt_right_at_the_start_is_not_lost() {
    let m = manager();
    shell(&m, "early").await;
    for _ in 0..20 {
        let h =
            m.shell_run("early", CommandSpec::shell("echo started; sleep 1000; echo never")).await.unwrap();
        wait_running(&h).await;
        h.signal("INT").await.unwrap();
        let (out, _, exit) = collect(&h).await;
        assert!(out.is_empty() || out == b"started\n", "{out:?}");
        assert_eq!(exit.code, Some(130));
    }
    // Then a timeout, then `exit 3` with a command queued behind it.
    let h = m
        .shell_run("early", CommandSpec::shell("sleep 1000").timeout(Duration::from_millis(50)))
        .await
        .unwrap();
    assert_eq!(collect(&h).await.2.reason, ExitReason::TimedOut);
    let gate = Gate::new();
    let h = m.shell_run("early", CommandSpec::shell(format!("{}exit 3", gate.wait()))).await.unwrap();
    let q = m.shell_run("early", CommandSpec::shell("echo never")).await.unwrap();
    gate.open();
    assert_eq!(collect(&h).await.2.code, Some(3));
    assert_eq!(collect(&q).await.2.reason, ExitReason::ShellClosed);
}

#[tokio::test]
async fn an_idle_shell_closes_after_its_ttl_and_a_busy_one_does_not() {
    let m = manager();
    let spec = ShellSpec {
        idle_ttl: tether_exec::Lifetime::After(Duration::from_millis(300)),
        ..ShellSpec::named("idle")
    };
    m.create_shell(spec).await.unwrap();
    // Busy for longer than the TTL: still open afterwards.
    let (_, _, exit) = run(&m, "idle", "sleep 0.6").await;
    assert_eq!(exit.code, Some(0));
    assert_eq!(m.shell("idle").unwrap().info().state, ShellState::Idle);
    tokio::time::timeout(LIMIT, async {
        while !m.shell("idle").unwrap().is_closed() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    let closed = m.shell("idle").unwrap().info().closed.unwrap();
    assert_eq!(closed.reason, CloseReason::IdleTtl);
    let e = m.shell_run("idle", CommandSpec::shell("true")).await.unwrap_err();
    assert!(matches!(e, ExecError::ShellClosed { .. }), "{e}");
}

#[tokio::test]
async fn a_finished_command_leaves_no_file_in_the_shells_directory() {
    let m = manager();
    shell(&m, "tidy").await;
    let (dir, _, _) = run(&m, "tidy", r#"printf %s "$__tether_D""#).await;
    assert!(dir.starts_with('/'), "{dir:?}");
    // A command's files are named by its number; the shell's own are not.
    // The last command's script may still be there (it goes while the next
    // command runs), and so may the next command's FIFOs (made while the
    // last one ran); every earlier command's files are gone.
    let listing = |dir: &str| {
        let (mut own, mut numbers) = (Vec::new(), std::collections::BTreeSet::new());
        for e in std::fs::read_dir(dir).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            match name.split_once('.').filter(|(n, _)| n.parse::<u64>().is_ok()) {
                Some((n, _)) => numbers.insert(n.to_owned()),
                None => {
                    own.push(name);
                    true
                }
            };
        }
        own.sort();
        (own, numbers)
    };
    let (own, _) = listing(&dir);
    // Ended normally, with output on both streams, with stdin, failing, and
    // interrupted.
    run(&m, "tidy", "echo out; echo err >&2").await;
    let h = m
        .shell_run("tidy", CommandSpec::shell("cat").stdin(Bytes::from_static(b"in\n"), true))
        .await
        .unwrap();
    assert_eq!(collect(&h).await.0, b"in\n");
    run(&m, "tidy", "exit_code() { return 3; }; exit_code").await;
    let h = m.shell_run("tidy", CommandSpec::shell("sleep 30")).await.unwrap();
    h.kill().await.unwrap();
    tokio::time::timeout(LIMIT, h.wait()).await.unwrap();
    run(&m, "tidy", "true").await;
    let (now, numbers) = listing(&dir);
    assert_eq!(now, own, "the shell's own files in {dir}");
    let mut numbers: Vec<u64> = numbers.iter().map(|n| n.parse().unwrap()).collect();
    numbers.sort_unstable();
    let (first, last) = (numbers.first().copied(), numbers.last().copied());
    assert!(
        numbers.len() <= 2 && first.zip(last).is_none_or(|(a, b)| b - a <= 1),
        "files of earlier commands left in {dir}: {numbers:?}"
    );
}

/// `set -x` stays on across commands and traces the user's commands only:
/// the protocol around them (the control line, the start record, the run
/// file, the prompt hook) never shows in a command's stderr.
#[tokio::test]
async fn xtrace_traces_the_commands_and_nothing_of_the_protocol() {
    let m = manager();
    shell(&m, "trace").await;
    let (_, err, exit) = run(&m, "trace", "set -x").await;
    assert_eq!((err.as_str(), exit.code), ("", Some(0)));
    let (out, err, _) = run(&m, "trace", "echo traced").await;
    assert_eq!(out, "traced\n");
    assert_eq!(err, "+++ echo traced\n", "only the command is traced");
    let (_, err, _) = run(&m, "trace", "set +x").await;
    assert_eq!(err, "+++ set +x\n");
    let (_, err, _) = run(&m, "trace", "echo clean").await;
    assert_eq!(err, "", "off again");
}
