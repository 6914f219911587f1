//! What a piped command starts with, now that the daemon starts it itself
//! (clone with a shared address space, then exec) rather than through std:
//! exactly fds 0, 1 and 2; default signal actions and an empty signal mask
//! (SIGPIPE included, which Rust ignores in the daemon); its own process
//! group; the cwd and environment asked for, the program found along the
//! command's own PATH; and the errors std gave for a missing or a
//! non-executable program.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use tether_exec::{CommandSpec, ExecError};

use support::{collect, manager};

const LIMIT: Duration = Duration::from_secs(20);

/// A field of `/proc/self/status` as the command saw it.
fn field<'a>(status: &'a str, name: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {name} in {status}"))
}

#[tokio::test]
async fn a_command_starts_with_stdio_only_default_signals_and_its_own_group() {
    let m = manager();
    // The daemon ignores SIGPIPE (Rust does), and the spawning thread has
    // every signal blocked across the clone: the child must undo both.
    let h = m
        .start(
            CommandSpec::shell(
                "cat /proc/self/status; echo fds $(ls /proc/self/fd | tr '\\n' ' '); \
             echo pgid $(ps -o pgid= -p $$ | tr -d ' ') pid $$; echo cwd $(pwd); echo tag $TAG",
            )
            .cwd("/tmp")
            .env("TAG", "x y"),
        )
        .expect("starts");
    let (out, _, exit) = collect(h.attach([0, 0]).expect("attach"), LIMIT).await;
    assert_eq!(exit.code, Some(0));
    let out = String::from_utf8(out).expect("utf-8");
    // The shell's own status: nothing ignored, nothing blocked (SigIgn
    // would have bit 13 set, 0x1000, if SIGPIPE were still ignored).
    assert_eq!(field(&out, "SigIgn:"), "0000000000000000", "{out}");
    assert_eq!(field(&out, "SigBlk:"), "0000000000000000", "{out}");
    // `ls` lists its own directory fd (3) beside 0, 1, 2.
    assert_eq!(field(&out, "fds"), "0 1 2 3", "{out}");
    let pg = field(&out, "pgid");
    let (pgid, pid) = pg.split_once(" pid ").expect("pgid and pid");
    assert_eq!(pgid, pid, "the command leads its own process group: {out}");
    assert_eq!(field(&out, "cwd"), "/tmp");
    assert_eq!(field(&out, "tag"), "x y");
    m.shutdown().await;
}

#[tokio::test]
async fn the_program_is_found_along_the_commands_path_and_errors_are_stds() {
    let dir = std::env::temp_dir().join(format!("tether-spawn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let script = dir.join("tether-spawn-probe");
    std::fs::write(&script, "#!/bin/sh\necho found \"$@\"\n").expect("write");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let plain = dir.join("not-executable");
    std::fs::write(&plain, "echo no\n").expect("write");

    let m = manager();
    // A bare name: searched along the PATH the command gets, past a
    // directory that does not exist.
    let path = format!("/nonexistent:{}:/usr/bin:/bin", dir.display());
    let h = m
        .start(CommandSpec::argv(["tether-spawn-probe", "a b", "c"]).env("PATH", path))
        .expect("found along PATH");
    let (out, _, exit) = collect(h.attach([0, 0]).expect("attach"), LIMIT).await;
    assert_eq!((exit.code, out), (Some(0), b"found a b c\n".to_vec()));

    // Not found anywhere, a missing path, a file that is not executable.
    for (argv0, kind) in [
        ("tether-no-such-program", std::io::ErrorKind::NotFound),
        ("/nonexistent/program", std::io::ErrorKind::NotFound),
        (plain.to_str().expect("utf-8"), std::io::ErrorKind::PermissionDenied),
    ] {
        match m.start(CommandSpec::argv([argv0])) {
            Err(ExecError::Spawn { program, source }) => {
                assert_eq!((program.as_str(), source.kind()), (argv0, kind), "{source}");
            }
            Err(other) => panic!("{argv0}: {other:?}"),
            Ok(h) => panic!("{argv0} started as {}", h.id()),
        }
    }
    // No child is left behind by the failures (each is reaped at once).
    // The other tests of this binary run in this process too, and a child
    // of theirs that just ended is a zombie until its actor reaps it (a
    // moment, longer on a loaded machine): a leak is a zombie that stays.
    let zombies = || -> Vec<String> {
        std::fs::read_dir("/proc")
            .expect("proc")
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
            .filter(|s| {
                let after = s.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
                let ppid = after.split(' ').nth(1).and_then(|p| p.parse::<u32>().ok());
                after.starts_with('Z') && ppid == Some(std::process::id())
            })
            .collect()
    };
    let settled = async {
        while !zombies().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(10), settled).await.is_err() {
        panic!("zombies left: {:?}", zombies());
    }
    m.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Commands started at once from several threads, by a daemon holding
/// thousands of fds (as one holding thousands of sessions does), each get
/// their own stdio and nothing else: the child shares the daemon's fd table
/// and copies only its lowest entries, its pipe ends passed on low slots
/// that several spawns take at once. The daemon's own fds are as before
/// once they have ended (no slot keeps a pipe's far end).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commands_started_at_once_by_a_daemon_holding_many_fds_get_their_own_stdio_only() {
    let m = manager();
    let held: Vec<std::fs::File> =
        (0..6000).map(|_| std::fs::File::open("/dev/null").expect("open /dev/null")).collect();
    let count = || std::fs::read_dir("/proc/self/fd").expect("fd dir").count();
    let before = count();
    let tasks: Vec<_> = (0..4)
        .map(|t| {
            let m = m.clone();
            tokio::spawn(async move {
                for i in 0..25 {
                    let token = format!("{t}-{i}");
                    let h = m
                        .start(
                            CommandSpec::shell("echo $TOKEN; ls /proc/self/fd | tr '\\n' ' '")
                                .env("TOKEN", &token),
                        )
                        .expect("starts");
                    let (out, err, exit) = collect(h.attach([0, 0]).expect("attach"), LIMIT).await;
                    assert_eq!(exit.code, Some(0), "{token}: {}", String::from_utf8_lossy(&err));
                    // Its own output (not another command's), and fds 0-2
                    // (and `ls`'s directory) only.
                    assert_eq!(String::from_utf8_lossy(&out), format!("{token}\n0 1 2 3 "), "{token}");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    // The ended commands' pipes are closed (each `collect` saw its EOF);
    // what is left of them goes with their records.
    assert!(count() <= before + 16, "fds before {before}, after {}", count());
    drop(held);
    m.shutdown().await;
}
