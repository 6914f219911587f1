//! Uploads in flight when the daemon stops: a graceful stop (SIGTERM), a
//! restart (SIGUSR2) or a crash (SIGKILL) leaves no temporary file in the
//! target's directory, and the target as it was. A real daemon binary, a
//! real upload stalled mid-body on a raw socket.
#![allow(missing_docs, clippy::unwrap_used)]

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;

use common::daemon;
use tether_testkit::{Daemon, LIMIT, ScratchDir as Tmp};

/// Starts `PUT /v1/files?path=dir/target` announcing a megabyte and sends
/// 1000 bytes of it; the socket is returned open (the upload stalls).
fn stalled_upload(d: &Daemon) -> TcpStream {
    let addr = d.url.strip_prefix("http://").unwrap();
    let mut s = TcpStream::connect(addr).unwrap();
    let head = format!(
        "PUT /v1/files?path=dir/target HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
         Content-Length: 1000000\r\n\r\n",
        d.token
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&[b'n'; 1000]).unwrap();
    s
}

/// Waits until the daemon holds a file of `dir` open for writing: the
/// upload's temporary file, whatever its name.
fn wait_upload_open(pid: i32, dir: &Path) {
    let t0 = Instant::now();
    let dir = dir.to_string_lossy().into_owned();
    loop {
        let open = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten().any(|e| {
            std::fs::read_link(e.path()).is_ok_and(|t| {
                let t = t.to_string_lossy().into_owned();
                t.starts_with(&format!("{dir}/")) && !t.ends_with("/target")
            })
        });
        if open {
            return;
        }
        assert!(t0.elapsed() < LIMIT, "the upload never opened its temporary file");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for a process to end.
fn wait_exit(d: &mut Daemon) {
    let t0 = Instant::now();
    while d.child.try_wait().unwrap().is_none() {
        assert!(t0.elapsed() < LIMIT, "the daemon did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn signal(d: &Daemon, sig: &str) {
    assert!(Command::new("kill").args([sig, &d.pid().to_string()]).status().unwrap().success());
}

/// One stop of the daemon with an upload in flight: the directory holds
/// the old target only, afterwards.
fn stop_during_upload(sig: &str) {
    let t = Tmp::new();
    let root = t.0.join("root");
    std::fs::create_dir_all(root.join("dir")).unwrap();
    std::fs::write(root.join("dir/target"), b"old").unwrap();
    let mut d = daemon(&["--files-root", root.to_str().unwrap()]);
    let s = stalled_upload(&d);
    wait_upload_open(d.pid(), &root.join("dir"));
    signal(&d, sig);
    if sig == "-USR2" {
        // The new daemon is listening: the old one's state is gone.
        d.wait_lines(2);
    } else {
        wait_exit(&mut d);
    }
    drop(s);
    assert_eq!(names(&root.join("dir")), ["target"], "after {sig}");
    assert_eq!(std::fs::read(root.join("dir/target")).unwrap(), b"old");
    if sig == "-KILL" {
        // The next daemon starts on the same root and serves it.
        let d2 = daemon(&["--files-root", root.to_str().unwrap()]);
        assert_eq!(names(&root.join("dir")), ["target"]);
        drop(d2);
    }
}

#[test]
fn an_upload_in_flight_at_sigterm_leaves_no_temporary_file() {
    stop_during_upload("-TERM");
}

#[test]
fn an_upload_in_flight_at_a_restart_leaves_no_temporary_file() {
    stop_during_upload("-USR2");
}

#[test]
fn an_upload_in_flight_at_a_crash_leaves_no_temporary_file() {
    stop_during_upload("-KILL");
}
