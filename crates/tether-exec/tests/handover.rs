//! Handing commands from one manager to the next (`Manager::handover`,
//! `Manager::resume`), in one process: the state and fds that cross a
//! daemon's re-exec, without the exec (the server tests do the exec).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tether_exec::{
    CommandSpec, Event, ExitInfo, ExitReason, Handover, Lifetime, Manager, ManagerConfig, ShellSpec, Stream,
    Subscription, TermSize,
};

mod support;

use support::{collect, manager, read_until, read_until_after};

const LIMIT: Duration = Duration::from_secs(30);

async fn hand_over(m: Manager) -> (Manager, Handover) {
    let mut h = tokio::time::timeout(LIMIT, m.handover()).await.expect("handover in time");
    let next = Manager::resume(ManagerConfig::default(), true, &mut h);
    (next, h)
}

/// Reads until `want` bytes of stdout have come (or the exit).
async fn read_out(sub: &mut Subscription, out: &mut Vec<u8>, want: usize) {
    let fut = async {
        while out.len() < want {
            match sub.next(64 * 1024).await.expect("event") {
                Event::Output { stream: Stream::Stdout, data, .. } => out.extend_from_slice(&data),
                Event::Exit(e) => panic!("exit before {want} bytes: {e:?}"),
                Event::Gap { .. } => panic!("gap"),
                _ => {}
            }
        }
    };
    tokio::time::timeout(LIMIT, fut).await.expect("output in time");
}

async fn rest(sub: Subscription) -> ([Vec<u8>; 2], ExitInfo) {
    let (out, err, exit) = collect(sub, LIMIT).await;
    ([out, err], exit)
}

#[tokio::test]
async fn output_continues_at_the_same_offsets_and_the_exit_is_reported() {
    let m = manager();
    let script = "for i in $(seq 1 3000); do echo out-$i; echo err-$i >&2; done; sleep 0.3; \
                  for i in $(seq 3001 6000); do echo out-$i; done; exit 7";
    let h = m.start(CommandSpec::shell(script)).unwrap();
    let id = h.id().to_owned();
    let pid = h.pid();
    let mut sub = h.attach([0, 0]).unwrap();
    let mut first = Vec::new();
    read_out(&mut sub, &mut first, 1000).await;
    let at = sub.offsets();
    drop(sub);
    let (m2, _) = hand_over(m).await;
    assert!(h.exit().is_none(), "the old handle saw no exit: the command was not stopped");
    let h2 = m2.get(&id).unwrap();
    assert_eq!(h2.pid(), pid);
    let (out, exit) = rest(h2.attach(at).unwrap()).await;
    let mut stdout = first[..at[0] as usize].to_vec();
    stdout.extend_from_slice(&out[0]);
    let want: String = (1..=6000).map(|i| format!("out-{i}\n")).collect();
    assert_eq!(String::from_utf8(stdout).unwrap(), want);
    assert_eq!(exit.code, Some(7));
    assert_eq!(exit.reason, ExitReason::Exited);
    // All of stderr from 0 is still held.
    let (all, _) = rest(h2.attach([0, 0]).unwrap()).await;
    let want_err: String = (1..=3000).map(|i| format!("err-{i}\n")).collect();
    assert_eq!(String::from_utf8(all[1].clone()).unwrap(), want_err);
}

#[tokio::test]
async fn stdin_not_yet_written_is_written_after_the_handover_then_closed() {
    let m = manager();
    // Reads nothing for a while: most of 3 MB of stdin waits in the writer,
    // part of it written into the pipe, the rest handed over.
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let spec = CommandSpec::shell("sleep 1; sha256sum").stdin(Bytes::from(data.clone()), true);
    let h = m.start(spec).unwrap();
    let id = h.id().to_owned();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (m2, _) = hand_over(m).await;
    let h2 = m2.get(&id).unwrap();
    let (out, exit) = rest(h2.attach([0, 0]).unwrap()).await;
    let want = format!("{:x}  -\n", Sha256::digest(&data));
    assert_eq!(String::from_utf8_lossy(&out[0]), want, "every byte once, in order, then EOF");
    assert_eq!(exit.code, Some(0));
}

#[tokio::test]
async fn stdin_stays_open_across_the_handover() {
    let m = manager();
    let h = m.start(CommandSpec::argv(["cat"]).stdin(Bytes::new(), false)).unwrap();
    let id = h.id().to_owned();
    h.write_stdin(Bytes::from_static(b"before\n")).await.unwrap();
    let (m2, _) = hand_over(m).await;
    let h2 = m2.get(&id).unwrap();
    h2.write_stdin(Bytes::from_static(b"after\n")).await.unwrap();
    h2.close_stdin().await.unwrap();
    let (out, exit) = rest(h2.attach([0, 0]).unwrap()).await;
    assert_eq!(out[0], b"before\nafter\n");
    assert_eq!(exit.code, Some(0));
}

/// A command nobody had written to has no stdin writer yet (it starts on
/// the first write): its stdin pipe is handed over all the same, open, and
/// the next daemon's first write starts one.
#[tokio::test]
async fn stdin_never_written_is_handed_over_open() {
    let m = manager();
    let h = m.start(CommandSpec::argv(["cat"]).stdin(Bytes::new(), false)).unwrap();
    let id = h.id().to_owned();
    let (m2, _) = hand_over(m).await;
    let h2 = m2.get(&id).unwrap();
    h2.write_stdin(Bytes::from_static(b"after\n")).await.unwrap();
    h2.close_stdin().await.unwrap();
    let (out, exit) = rest(h2.attach([0, 0]).unwrap()).await;
    assert_eq!(out[0], b"after\n");
    assert_eq!(exit.code, Some(0));
}

/// A daemon whose exec fails takes its commands back in the same process
/// (`serve.rs`): they must hand over again at the next restart. The state
/// they were frozen with says they had seen that stop; a thawed actor that
/// believed it would ignore the next one, and that handover would wait for
/// it forever.
#[tokio::test]
async fn a_command_taken_back_in_the_same_process_hands_over_again() {
    let m = manager();
    let h = m.start(CommandSpec::argv(["cat"]).stdin(Bytes::new(), false)).unwrap();
    let id = h.id().to_owned();
    let (m2, _) = hand_over(m).await;
    let (m3, _) = hand_over(m2).await;
    let h3 = m3.get(&id).unwrap();
    h3.write_stdin(Bytes::from_static(b"third\n")).await.unwrap();
    h3.close_stdin().await.unwrap();
    let (out, exit) = rest(h3.attach([0, 0]).unwrap()).await;
    assert_eq!(out[0], b"third\n");
    assert_eq!(exit.code, Some(0));
}

#[tokio::test]
async fn a_finished_command_keeps_its_exit_and_ttl() {
    let m = manager();
    let h = m
        .start(CommandSpec::shell("echo done; exit 3").ttl(Lifetime::After(Duration::from_secs(2))))
        .unwrap();
    let id = h.id().to_owned();
    let exit = tokio::time::timeout(LIMIT, h.wait()).await.unwrap();
    let (m2, _) = hand_over(m).await;
    let h2 = m2.get(&id).unwrap();
    assert_eq!(h2.exit(), Some(exit.clone()));
    let (out, e) = rest(h2.attach([0, 0]).unwrap()).await;
    assert_eq!(out[0], b"done\n");
    assert_eq!(e.code, Some(3));
    // The TTL runs on from where it was.
    let gone = async {
        while m2.get(&id).is_ok() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), gone).await.expect("forgotten after its TTL");
}

#[tokio::test]
async fn a_timeout_set_before_fires_after() {
    let m = manager();
    let h = m.start(CommandSpec::shell("sleep 60").timeout(Duration::from_millis(1500))).unwrap();
    let id = h.id().to_owned();
    let started = tokio::time::Instant::now();
    let (m2, _) = hand_over(m).await;
    let h2 = m2.get(&id).unwrap();
    let exit = tokio::time::timeout(LIMIT, h2.wait()).await.unwrap();
    assert_eq!(exit.reason, ExitReason::TimedOut);
    assert!(started.elapsed() < Duration::from_secs(10), "timed out late: {:?}", started.elapsed());
    assert!(exit.wall >= Duration::from_millis(1400), "wall counts from the first start: {:?}", exit.wall);
}

#[tokio::test]
async fn a_terminal_is_taken_over_with_its_size_and_screen() {
    let m = manager();
    let spec = CommandSpec::argv(["bash", "--norc", "--noprofile", "-i"]).env("PS1", "PROMPT$ ").pty(24, 80);
    let h = m.start(spec).unwrap();
    let id = h.id().to_owned();
    let mut sub = h.attach([0, 0]).unwrap();
    h.write_stdin(Bytes::from_static(b"echo before-$((6*7))\n")).await.unwrap();
    // Up to the next prompt: readline reads the window size and writes it
    // back as it starts a line (`set_winsize` in rltty.c), which would undo
    // a resize landing in between; the prompt comes after that.
    read_until_after(&mut sub, &mut Vec::new(), "before-42\r\n", "PROMPT$ ", LIMIT).await;
    drop(sub);
    let (m2, _) = hand_over(m).await;
    let h2 = m2.get(&id).unwrap();
    assert!(h2.is_pty());
    // The screen model was rebuilt from the ring.
    let (screen, mut sub) = h2.attach_screen(0, None, false).await.unwrap();
    let screen = screen.unwrap();
    assert!(String::from_utf8_lossy(&screen.data).contains("before-42"));
    h2.resize(TermSize { rows: 30, cols: 100 }).await.unwrap();
    h2.write_stdin(Bytes::from_static(b"stty size; echo after-$((6*7))\n")).await.unwrap();
    let mut seen = Vec::new();
    read_until(&mut sub, &mut seen, "after-42", LIMIT).await;
    let seen = String::from_utf8_lossy(&seen);
    assert!(seen.contains("30 100"), "{seen}");
    h2.write_stdin(Bytes::from_static(b"exit 5\n")).await.unwrap();
    let exit = tokio::time::timeout(LIMIT, h2.wait()).await.unwrap();
    assert_eq!((exit.code, exit.reason), (Some(5), ExitReason::Exited));
}

#[tokio::test]
async fn kill_and_signals_reach_a_taken_over_command() {
    let m = manager();
    let script = "trap 'echo got-usr1' USR1; echo ready; while :; do sleep 0.05; done";
    let h = m.start(CommandSpec::shell(script)).unwrap();
    let id = h.id().to_owned();
    let mut out = Vec::new();
    read_out(&mut h.attach([0, 0]).unwrap(), &mut out, b"ready\n".len()).await;
    let (m2, _) = hand_over(m).await;
    let h2 = m2.get(&id).unwrap();
    let mut sub = h2.attach([0, 0]).unwrap();
    h2.signal("USR1").await.unwrap();
    let mut out = Vec::new();
    read_out(&mut sub, &mut out, b"ready\ngot-usr1\n".len()).await;
    assert_eq!(out, b"ready\ngot-usr1\n");
    h2.kill().await.unwrap();
    let (_, exit) = rest(sub).await;
    assert_eq!(exit.reason, ExitReason::Killed);
    assert_eq!(exit.signal, Some(9));
}

/// Runs `script` in shell `name` to its end; its stdout.
async fn shell_out(m: &Manager, name: &str, script: &str) -> (Vec<u8>, ExitInfo) {
    let h = m.shell_run(name, CommandSpec::shell(script)).await.unwrap();
    let (out, exit) = tokio::time::timeout(LIMIT, rest(h.attach([0, 0]).unwrap())).await.expect("in time");
    let [stdout, _] = out;
    (stdout, exit)
}

#[tokio::test]
async fn an_idle_shell_is_handed_over_with_its_state() {
    let m = manager();
    let (sh, _) =
        m.create_shell(ShellSpec { name: Some("idle".into()), ..Default::default() }).await.unwrap();
    let pid = sh.pid();
    let (_, exit) = shell_out(&m, "idle", "cd /tmp; export X=1; f() { echo fn-$1; }").await;
    assert_eq!(exit.code, Some(0));
    let (m2, _) = hand_over(m).await;
    let infos = m2.shells();
    assert_eq!(infos.len(), 1, "the shell crossed");
    assert_eq!((infos[0].name.as_str(), infos[0].pid, infos[0].cwd.as_str()), ("idle", pid, "/tmp"));
    assert_eq!(m2.shell("idle").unwrap().history().len(), 1, "with its history");
    // The same bash: its cwd, variables and functions.
    let (out, exit) = shell_out(&m2, "idle", "echo $PWD:$X; f ok").await;
    assert_eq!(String::from_utf8_lossy(&out), "/tmp:1\nfn-ok\n");
    assert_eq!(exit.code, Some(0));
    // And it can be handed over again, and closed for good.
    let (m3, _) = hand_over(m2).await;
    let (out, _) = shell_out(&m3, "idle", "echo $X").await;
    assert_eq!(out, b"1\n");
    m3.close_shell("idle").await.unwrap();
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "the shell is gone once closed");
}

#[tokio::test]
async fn a_shell_with_a_background_job_is_closed_not_handed_over() {
    let m = manager();
    let (sh, _) = m.create_shell(ShellSpec { name: Some("bg".into()), ..Default::default() }).await.unwrap();
    let pid = sh.pid();
    let (_, exit) = shell_out(&m, "bg", "sleep 60 >/dev/null 2>&1 &").await;
    assert_eq!(exit.code, Some(0));
    let (m2, _) = hand_over(m).await;
    assert!(m2.shells().is_empty(), "its job's output would have no reader across the exec");
    let gone = async {
        while std::path::Path::new(&format!("/proc/{pid}")).exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(LIMIT, gone).await.expect("the shell was killed");
}

#[tokio::test]
async fn busy_shells_are_closed_and_their_commands_handed_over_finished() {
    let m = manager();
    let (sh, _) = m.create_shell(ShellSpec { name: Some("s1".into()), ..Default::default() }).await.unwrap();
    let h = m.shell_run(sh.name(), CommandSpec::shell("echo in-shell; sleep 60")).await.unwrap();
    let id = h.id().to_owned();
    let mut sub = h.attach([0, 0]).unwrap();
    let mut out = Vec::new();
    read_out(&mut sub, &mut out, b"in-shell\n".len()).await;
    drop(sub);
    let (m2, _) = hand_over(m).await;
    assert!(m2.shells().is_empty());
    let h2 = m2.get(&id).unwrap();
    let (out, exit) = rest(h2.attach([0, 0]).unwrap()).await;
    assert_eq!(out[0], b"in-shell\n");
    assert_eq!(exit.reason, ExitReason::ShellClosed);
}

#[tokio::test]
async fn named_fds_go_back_to_the_caller() {
    let m = manager();
    let h = m.start(CommandSpec::shell("head -c 500000 /dev/urandom | base64")).unwrap();
    let id = h.id().to_owned();
    let mut hv = tokio::time::timeout(LIMIT, m.handover()).await.unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    hv.add_fd("listener", listener.into());
    let m2 = Manager::resume(ManagerConfig::default(), true, &mut hv);
    let back = std::net::TcpListener::from(hv.take_fd("listener").unwrap());
    assert_eq!(back.local_addr().unwrap(), addr);
    let h2 = m2.get(&id).unwrap();
    let (out, exit) = rest(h2.attach([0, 0]).unwrap()).await;
    assert_eq!(exit.code, Some(0));
    // The whole output (within the ring), nothing twice: base64 lines of
    // 76 characters.
    let text = String::from_utf8(out[0].clone()).unwrap();
    assert_eq!(text.len(), 500_000usize.div_ceil(3) * 4 + 500_000usize.div_ceil(57));
}

#[tokio::test]
async fn the_restart_disconnecting_every_client_does_not_trigger_kill_on_disconnect() {
    let m = manager();
    let h = m.start(CommandSpec::shell("sleep 60").kill_on_disconnect(true)).unwrap();
    let id = h.id().to_owned();
    let sub = h.attach([0, 0]).unwrap();
    // The order a restart goes in: announce, close every connection, hand over.
    m.begin_handover();
    drop(sub);
    let (m2, _) = hand_over(m).await;
    let h2 = m2.get(&id).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(h2.exit().is_none(), "killed by the restart's disconnect: {:?}", h2.exit());
    // A client that comes back and leaves is a disconnect again.
    drop(h2.attach([0, 0]).unwrap());
    let exit = tokio::time::timeout(LIMIT, h2.wait()).await.unwrap();
    assert_eq!(exit.reason, ExitReason::Disconnected);
}

/// A command's request key and its stdin writers' counts cross a
/// handover: the key still names the command, a repeated keyed start finds
/// it, and a resend of stdin the old daemon had taken is not written twice.
#[tokio::test]
async fn request_keys_and_stdin_counts_cross_a_handover() {
    use tether_exec::StdinSeq;
    let m = manager();
    let spec = CommandSpec::argv(["cat"]).request_key("k-handover-1");
    let h = m.start(spec.clone()).unwrap();
    let id = h.id().to_owned();
    let seq = |offset| Some(StdinSeq { writer: "w-1".into(), offset });
    h.write_stdin_at(Bytes::from_static(b"one\n"), seq(0)).await.unwrap();
    let mut sub = h.attach([0, 0]).unwrap();
    read_until(&mut sub, &mut Vec::new(), "one\n", LIMIT).await;
    drop(sub);

    let (m, _h) = hand_over(m).await;
    let h = m.get("k-handover-1").expect("the key names the command after the handover");
    assert_eq!(h.id(), id);
    let (again, new) = m.start_keyed(spec).unwrap();
    assert!(!new, "a repeated keyed start finds it");
    assert_eq!(again.id(), id);
    // A resend of "one\n" plus new bytes: only the new ones are written.
    h.write_stdin_at(Bytes::from_static(b"one\ntwo\n"), seq(0)).await.unwrap();
    h.close_stdin_at(seq(8)).await.unwrap();
    h.close_stdin_at(seq(8)).await.unwrap();
    let (out, exit) = rest(h.attach([0, 0]).unwrap()).await;
    assert_eq!(String::from_utf8_lossy(&out[0]), "one\ntwo\n");
    assert_eq!(exit.reason, ExitReason::Exited);
}

/// A start that passed the shutdown check as a handover began used to
/// launch its command after the handover had collected every command: it
/// was neither handed over nor killed, and its process lost its pipes at
/// the exec. Every start that succeeds must now be handed over.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_command_started_while_a_handover_begins_is_handed_over() {
    let m = manager();
    let starters: Vec<_> = (0..4)
        .map(|_| {
            let m = m.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                loop {
                    match m.start(CommandSpec::argv(["sleep", "30"])) {
                        Ok(h) => ids.push(h.id().to_owned()),
                        Err(tether_exec::ExecError::ShuttingDown) => return ids,
                        Err(e) => panic!("start: {e:?}"),
                    }
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    tokio::time::timeout(LIMIT, async {
        while m.len() < 20 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the starters got going");
    let (next, _) = hand_over(m).await;
    let mut started = 0;
    for s in starters {
        for id in tokio::time::timeout(LIMIT, s).await.unwrap().unwrap() {
            started += 1;
            assert!(next.get(&id).is_ok(), "{id} started but was not handed over");
        }
    }
    assert_eq!(next.len(), started);
    next.shutdown().await;
}
