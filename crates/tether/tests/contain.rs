//! Containment: no process a command starts outlives it unless asked to,
//! whether it stays in the command's process group, leaves it, or leaves
//! its session and parent (a double fork); orphans are reaped by the
//! daemon; what a crashed daemon left running is ended by the next one on
//! its address. Each runs with a cgroup v2 directory of the test's own
//! (when this host has a writable cgroup v2 hierarchy, as these machines
//! do beside v1), again with the daemon under a seccomp filter that refuses
//! `clone3` as Docker's default profile does, and `close_range` as older
//! profiles do (so commands join their cgroups by writing `cgroup.procs`
//! rather than being started in them, and copy the daemon's whole fd
//! table rather than sharing it),
//! and without cgroups (the fallback: process group, tree and the
//! `TETHER_COMMAND_ID` environment marker, with the daemon a child
//! subreaper).
#![allow(missing_docs, clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use tether_client::{Client, StartSpec};

mod common;

use common::{BIN, client, daemon, shell};
use tether_testkit::{Daemon, LIMIT, rand_u64, running, wait_bounded};

/// A cgroup v2 directory for one test, removed on drop (with whatever the
/// daemon left in it).
struct TestCgroup(PathBuf);

impl TestCgroup {
    /// `None` where this host has no writable cgroup v2 hierarchy.
    fn new() -> Option<TestCgroup> {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        let mount = mounts.lines().find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let mut f = left.split_whitespace();
            let (root, point) = (f.nth(3)?, f.next()?);
            (right.starts_with("cgroup2 ") && root == "/").then(|| PathBuf::from(point))
        })?;
        let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let rel = own.lines().find_map(|l| l.strip_prefix("0::"))?.trim_start_matches('/').to_owned();
        let dir = mount.join(rel).join(format!("tether-test-{:08x}", rand_u64() as u32));
        std::fs::create_dir(&dir).ok()?;
        Some(TestCgroup(dir))
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        /// Kills and removes a cgroup and everything below it.
        fn remove(dir: &std::path::Path) {
            if let Ok(entries) = std::fs::read_dir(dir) {
                for e in entries.flatten().filter(|e| e.path().is_dir()) {
                    remove(&e.path());
                }
            }
            let _ = std::fs::write(dir.join("cgroup.kill"), "1");
            for _ in 0..100 {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        remove(&self.0);
    }
}

/// A containment mode: the daemon's flags, its cgroup directory (removed
/// on drop), and whether it runs with `clone3` and `close_range` refused.
struct Mode {
    name: &'static str,
    flags: Vec<String>,
    cgroup: Option<TestCgroup>,
    restricted: bool,
}

impl Mode {
    /// A daemon in this mode, with `extra` flags besides the mode's.
    fn daemon(&self, extra: &[&str]) -> Daemon {
        let mut flags: Vec<&str> = self.flags.iter().map(String::as_str).collect();
        flags.extend_from_slice(extra);
        let mut cmd = Command::new(BIN);
        if self.restricted {
            refuse_clone3_and_close_range(&mut cmd);
        }
        let d = Daemon::start_cmd(cmd, BIN, &flags, None);
        if self.restricted {
            // The filter is on: seccomp mode 2.
            let status = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).unwrap();
            assert!(status.lines().any(|l| l == "Seccomp:\t2"), "{status}");
        }
        d
    }
}

/// Each containment mode this host offers: a cgroup of the test's own
/// (started in it, and joining it by writing where `clone3` is refused),
/// and none.
fn modes() -> Vec<Mode> {
    let off = vec!["--cgroup".to_owned(), "off".to_owned()];
    let mut out = vec![Mode { name: "no cgroup", flags: off, cgroup: None, restricted: false }];
    for restricted in [false, true] {
        match TestCgroup::new() {
            Some(cg) => {
                let flags = vec!["--cgroup".to_owned(), cg.0.display().to_string()];
                let name = if restricted { "cgroup, clone3 and close_range refused" } else { "cgroup" };
                out.push(Mode { name, flags, cgroup: Some(cg), restricted });
            }
            None => eprintln!("no writable cgroup v2 hierarchy here: the cgroup modes are not tested"),
        }
    }
    out
}

/// Makes `cmd` run under a seccomp filter that answers `clone3` with
/// ENOSYS, as Docker's default profile does (and a kernel before 5.3), and
/// `close_range` too (profiles older than it, and kernels before 5.9).
#[allow(unsafe_code)]
fn refuse_clone3_and_close_range(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    /// The numbers of `clone3` and `close_range` on x86-64 and arm64.
    const SYS_CLONE3: u32 = 435;
    const SYS_CLOSE_RANGE: u32 = 436;
    let stmt = |code: u32, k: u32| libc::sock_filter { code: code as u16, jt: 0, jf: 0, k };
    let jeq = |k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    };
    let filter = [
        // The system call's number (offset 0 of `struct seccomp_data`).
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0),
        jeq(SYS_CLONE3, 1, 0),
        jeq(SYS_CLOSE_RANGE, 0, 1),
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
    ];
    // SAFETY: between fork and exec the closure makes two prctl calls on
    // data it owns (copied into the closure), and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            let prog = libc::sock_fprog { len: filter.len() as u16, filter: filter.as_ptr().cast_mut() };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A command's processes are in its own leaf of the daemon's cgroup,
/// whether the daemon started it there or it joined by writing (where
/// `clone3` is refused); without cgroups, the daemon's own cgroup. In
/// every mode it starts with fds 0, 1 and 2 only, whether it shared the
/// daemon's fd table or copied it (where `close_range` is refused). The
/// same on a terminal, which is its controlling terminal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_runs_in_its_own_cgroup() {
    for mode in modes() {
        let d = mode.daemon(&[]);
        let c = client(&d).await;
        let ls = StartSpec { argv: vec!["ls".into(), "/proc/self/fd".into()], ..StartSpec::default() };
        let out = tokio::time::timeout(LIMIT, c.run(ls)).await.unwrap().unwrap();
        // `ls`'s own directory is 3.
        assert_eq!(String::from_utf8_lossy(&out.stdout), "0\n1\n2\n3\n", "{}", mode.name);
        let own = std::fs::read_to_string(format!("/proc/{}/cgroup", d.pid())).unwrap();
        let terminal = StartSpec {
            pty: Some(tether_client::PtySpec { rows: 24, cols: 80, term: None }),
            ..shell("cat /proc/self/cgroup; (exec </dev/tty) && echo ctty; echo fds $(ls /proc/self/fd)")
        };
        for spec in [
            StartSpec { argv: vec!["cat".into(), "/proc/self/cgroup".into()], ..StartSpec::default() },
            shell("cat /proc/$$/cgroup; (cat /proc/self/cgroup)"),
            terminal,
        ] {
            let on_terminal = spec.pty.is_some();
            let ex = c.start(spec).await.unwrap();
            let id = ex.id().clone();
            let out = tokio::time::timeout(LIMIT, ex.output()).await.unwrap().unwrap();
            assert_eq!(out.status.code, Some(0), "{}: {:?}", mode.name, out.status);
            let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
            if on_terminal {
                // Opening /dev/tty works only with a controlling terminal;
                // `ls`'s own directory is 3.
                assert!(text.contains("\nctty\nfds 0 1 2 3\n"), "{}: {text}", mode.name);
            }
            let v2: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("0::")).collect();
            assert!(!v2.is_empty(), "{}: {text}", mode.name);
            for line in v2 {
                match &mode.cgroup {
                    Some(cg) => {
                        let leaf = format!("/{}", id.0);
                        let base = cg.0.file_name().unwrap().to_str().unwrap();
                        assert!(
                            line.ends_with(&leaf) && line.contains(base),
                            "{}: {line} ({id:?})",
                            mode.name
                        );
                    }
                    None => assert!(own.contains(line), "{}: {line}, the daemon's: {own}", mode.name),
                }
            }
        }
    }
}

/// Waits (bounded) until none of `pids` runs.
async fn gone(pids: &[u32], what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<u32> = pids.iter().copied().filter(|&p| running(p)).collect();
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {left:?} still run");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The running processes marked as command `id`'s.
fn marked(id: &str) -> Vec<u32> {
    let entry = format!("TETHER_COMMAND_ID={id}");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| running(p))
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|e| e == entry.as_bytes()))
        })
        .collect()
}

/// The pids the command printed, one per line, once it printed `n`.
async fn printed_pids(c: &Client, id: &tether_proto::CommandId, n: usize) -> Vec<u32> {
    let mut ex = c.attach(id, [0, 0]).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(LIMIT, async {
        while out.iter().filter(|&&b| b == b'\n').count() < n {
            match ex.next().await {
                Some(Ok(tether_client::ExecEvent::Stdout(b))) => out.extend_from_slice(&b),
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("{e}"),
                None => panic!("ended before printing {n} pids: {:?}", String::from_utf8_lossy(&out)),
            }
        }
    })
    .await
    .unwrap();
    String::from_utf8_lossy(&out).lines().filter_map(|l| l.trim().parse().ok()).take(n).collect()
}

/// A process that left the command's group, session and parent (a double
/// fork through `setsid`) dies with a `kill` of the command, as does one
/// that stayed in the group. Before containment the escaped one ran on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_ends_processes_that_left_the_group_and_the_tree() {
    for mode in modes() {
        let d = mode.daemon(&[]);
        let c = client(&d).await;
        let script = "( setsid sh -c 'echo $$; exec sleep 1000' & ); sleep 1000 & echo $!; wait";
        let (id, _) = c.start_detached(shell(script)).await.unwrap();
        let pids = printed_pids(&c, &id, 2).await;
        assert!(pids.iter().all(|&p| running(p)), "{}: {pids:?}", mode.name);
        c.kill(&id).await.unwrap();
        gone(&pids, &format!("{}: after kill", mode.name)).await;
    }
}

/// Once a command has ended by itself, what it left running (a background
/// job, 300 of them, a double-forked daemon) is killed, unless the daemon
/// keeps leftovers; then a `kill` of the ended command still ends them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leftovers_end_with_the_command_unless_kept() {
    for mode in modes() {
        for keep in [false, true] {
            let d = mode.daemon(if keep { &["--leftovers", "keep"] } else { &[] });
            let c = client(&d).await;
            // The escaped one writes its pid to a file the leader waits for.
            let script = "sleep 1000 >/dev/null 2>&1 & echo $!; f=$(mktemp); \
                          ( setsid sh -c \"echo \\$\\$ > $f; exec sleep 1000 >/dev/null 2>&1\" & ); \
                          while [ ! -s $f ]; do sleep 0.01; done; cat $f; rm $f; \
                          for i in $(seq 300); do sleep 1000 >/dev/null 2>&1 & done; echo $!";
            let ex = c.start(StartSpec { drain_grace_ms: Some(0), ..shell(script) }).await.unwrap();
            let id = ex.id().clone();
            let out = tokio::time::timeout(LIMIT, ex.output()).await.unwrap().unwrap();
            let pids: Vec<u32> =
                String::from_utf8_lossy(&out.stdout).lines().map(|l| l.trim().parse().unwrap()).collect();
            assert_eq!(pids.len(), 3, "{}: {:?}", mode.name, String::from_utf8_lossy(&out.stdout));
            let what = format!("{}, keep={keep}", mode.name);
            if keep {
                assert!(pids.iter().all(|&p| running(p)), "{what}: kept leftovers run");
                c.kill(&id).await.unwrap_or_else(|e| panic!("{what}: kill of the leftovers: {e}"));
            }
            gone(&pids, &what).await;
            // All 300 and the rest: no process carries the command's id.
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let left = marked(&id.0);
                if left.is_empty() {
                    break;
                }
                let stats: Vec<String> = left
                    .iter()
                    .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
                    .collect();
                assert!(Instant::now() < deadline, "{what}: {} marked processes run: {stats:?}", left.len());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // Nothing is left: a second kill finds nothing.
            let again = c.kill(&id).await.unwrap_err();
            assert!(again.to_string().contains("NotRunning"), "{what}: {again}");
        }
    }
}

/// The daemon is a child subreaper: a process orphaned by a command's
/// exit becomes its child, and is reaped when it exits (no zombie is left).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_reaps_the_orphans_it_adopts() {
    let d = daemon(&["--cgroup", "off", "--leftovers", "keep"]);
    let c = client(&d).await;
    let script = "( sleep 0.3 & echo $! ) ; echo done";
    let (id, _) = c.start_detached(StartSpec { drain_grace_ms: Some(0), ..shell(script) }).await.unwrap();
    let pid = printed_pids(&c, &id, 1).await[0];
    // Adopted by the daemon, not by init.
    let ppid = |p: u32| {
        let s = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
        s[s.rfind(')')? + 2..].split(' ').nth(1)?.parse::<i32>().ok()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while running(pid) && ppid(pid) != Some(d.pid()) {
        assert!(Instant::now() < deadline, "not adopted: parent {:?}", ppid(pid));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    gone(&[pid], "the orphan").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d.zombie_children().is_empty() {
        assert!(Instant::now() < deadline, "zombies left: {:?}", d.zombie_children());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A daemon killed with SIGKILL leaves its commands running (nothing can
/// end them at that moment); the next daemon on the same address ends them
/// as it starts, with or without a cgroup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_daemon_on_the_address_ends_what_a_crashed_one_left() {
    for mode in modes() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let listen = format!("127.0.0.1:{port}");
        let mut d = mode.daemon(&["--listen", &listen]);
        let c = client(&d).await;
        // Silent: no write will kill it with SIGPIPE once the daemon is gone.
        let (id, _) = c.start_detached(shell("sleep 1000 & echo $!; wait")).await.unwrap();
        let pids = printed_pids(&c, &id, 1).await;
        drop(c);
        d.child.kill().unwrap();
        d.child.wait().unwrap();
        assert!(running(pids[0]), "{}: a crash itself ends nothing", mode.name);
        let _d2 = mode.daemon(&["--listen", &listen]);
        gone(&pids, &format!("{}: after the next daemon started", mode.name)).await;
    }
}

/// A graceful restart keeps its commands and ends what a crashed daemon on
/// the same address left (the processes are looked at once the daemon
/// serves again), and never a command started since.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_ends_what_a_crashed_daemon_left_and_nothing_it_keeps() {
    for mode in modes() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let listen = format!("127.0.0.1:{port}");
        let d = mode.daemon(&["--listen", &listen]);
        let c = client(&d).await;
        let (_, kept) = c.start_detached(shell("exec sleep 1000")).await.unwrap();
        // Marked as a crashed daemon on this address marks its commands'
        // processes, under an id nobody keeps.
        let mut left = Command::new("sleep")
            .arg("1000")
            .env("TETHER_SEAT", &listen)
            .env("TETHER_COMMAND_ID", "c-left-by-a-crash")
            .spawn()
            .unwrap();
        drop(c);
        let usr2 = Command::new("kill").args(["-USR2", &d.pid().to_string()]).status().unwrap();
        assert!(usr2.success());
        d.wait_lines(2);
        let c = client(&d).await;
        let (_, fresh) = c.start_detached(shell("exec sleep 1000")).await.unwrap();
        let waited = tokio::task::spawn_blocking(move || left.wait());
        let status = tokio::time::timeout(LIMIT, waited).await.expect("the leftover ended in time");
        assert!(!status.unwrap().unwrap().success(), "{}: the leftover was killed", mode.name);
        assert!(running(kept) && running(fresh), "{}: a command the daemon keeps was killed", mode.name);
    }
}

/// A daemon started on an address while the one before it there is still
/// stopping (ending its commands, then removing the seat's cgroup
/// directory) starts commands once that one has gone: the one stopping
/// removes only its own leaves, and the directory if nobody else's are in
/// it; the new one makes the directory again if it went.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_started_while_the_one_before_it_stops_keeps_starting_commands() {
    for mode in modes().into_iter().filter(|m| m.cgroup.is_some()) {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let listen = format!("127.0.0.1:{port}");
        let mut old = mode.daemon(&["--listen", &listen]);
        let c = client(&old).await;
        // Enough commands that ending them takes a while.
        for _ in 0..200 {
            let spec = StartSpec { ring_bytes: Some(4096), ..shell("exec sleep 1000") };
            c.start_detached(spec).await.unwrap();
        }
        drop(c);
        // Stopped as a service manager stops it.
        let term = Command::new("kill").args(["-TERM", &old.pid().to_string()]).status().unwrap();
        assert!(term.success());
        // The new one, as soon as the old one has let go of the address.
        let deadline = Instant::now() + LIMIT;
        while std::net::TcpListener::bind(&listen).is_err() {
            assert!(Instant::now() < deadline, "{}: the old daemon kept the address", mode.name);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let new = mode.daemon(&["--listen", &listen]);
        let status = tokio::task::spawn_blocking(move || {
            let r = old.child.wait();
            (r, old)
        })
        .await
        .unwrap();
        assert!(status.0.unwrap().success(), "{}: the old daemon's exit", mode.name);
        let c = client(&new).await;
        for i in 0..3 {
            let spec = StartSpec { argv: vec!["true".into()], ..StartSpec::default() };
            let out = tokio::time::timeout(LIMIT, c.run(spec))
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("{}: start {i} after the old daemon left: {e}", mode.name));
            assert_eq!(out.status.code, Some(0), "{}", mode.name);
        }
    }
}

/// Commands that exit at once, run back to back, each report their own exit
/// status: the orphan reaper never takes a command's leader (a burst of
/// SIGCHLD once made it reap a `true` its actor had not yet waited for,
/// which then ended with no status: wait4 ECHILD).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_orphan_reaper_never_takes_a_commands_leader() {
    let d = daemon(&[]);
    let c = client(&d).await;
    for i in 0..500 {
        let spec = StartSpec { argv: vec!["true".into()], ..StartSpec::default() };
        let out = tokio::time::timeout(LIMIT, c.run(spec)).await.unwrap().unwrap();
        assert_eq!(out.status.code, Some(0), "run {i}: {:?}", out.status);
    }
}

/// Flags that could not work are refused at start with a message naming
/// them: a cgroup directory outside any cgroup v2 hierarchy, a leftovers
/// policy that does not exist, a ring too small to hold anything (every
/// reader would get only gaps).
#[test]
fn unusable_containment_and_ring_flags_are_refused_at_start() {
    let tmp = std::env::temp_dir().join(format!("tether-not-a-cgroup-{:08x}", rand_u64() as u32));
    std::fs::create_dir_all(&tmp).unwrap();
    let cases: [(&[&str], &str); 4] = [
        (&["--cgroup", tmp.to_str().unwrap()], "--cgroup"),
        (&["--cgroup", "relative/dir"], "--cgroup"),
        (&["--leftovers", "maybe"], "--leftovers"),
        (&["--ring-bytes", "10"], "--ring-bytes"),
    ];
    for (flags, named) in cases {
        let mut child = std::process::Command::new(common::BIN)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(flags)
            .env("TETHER_TOKEN", "cli-test-0123456789abcdef")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        wait_bounded(&mut child);
        let o = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(255), "{flags:?} started: {err}");
        assert!(err.contains(named), "{flags:?}: {err}");
    }
    let _ = std::fs::remove_dir(&tmp);
}
