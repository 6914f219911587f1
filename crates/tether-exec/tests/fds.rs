//! What a running command costs in file descriptors: its three pipes and
//! one pidfd (which serves both to signal it and to wait for its exit),
//! nothing more. A test binary of its own: it counts this process's fds,
//! which other tests running beside it would change.

mod support;

use tether_exec::CommandSpec;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_command_holds_its_pipes_and_one_pidfd() {
    const N: usize = 20;
    let m = support::manager();
    // One command first, so that the runtime's and the manager's own fds
    // (the reaper's signal stream, the epoll set) are not counted.
    let first = m.start(CommandSpec::argv(["sleep", "30"])).expect("starts");
    tether_testkit::bounded(first.signal("CONT")).await.expect("signalled");
    let before = open_fds();
    let mut handles = Vec::new();
    for _ in 0..N {
        handles.push(m.start(CommandSpec::argv(["sleep", "30"])).expect("starts"));
    }
    // Each actor is in its running loop (waiting on the pidfd) once it
    // has answered a signal.
    for h in &handles {
        tether_testkit::bounded(h.signal("CONT")).await.expect("signalled");
    }
    let per_command = (open_fds() - before) as f64 / N as f64;
    assert!(per_command <= 4.0, "{per_command} fds per running command (stdin, stdout, stderr, pidfd: 4)");
    for h in handles.iter().chain([&first]) {
        let _ = h.kill().await;
    }
    m.shutdown().await;
}
