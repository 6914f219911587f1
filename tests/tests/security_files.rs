//! The file routes' findings of issue #13, against a real daemon: silent
//! FIFOs cannot wedge the routes, a write over a symlink does not copy the
//! link's 0777, `/proc` and `/sys` files download whole, and a path that
//! vanishes during a listing or a tar download is a clean answer.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tether_testkit::bounded;
use tether_tests::TestServer;

use tether_testkit::ScratchDir as Tmp;

async fn rooted(root: PathBuf) -> TestServer {
    TestServer::with(move |c| c.files_root = Some(root)).await
}

fn mkfifo(p: &std::path::Path) {
    assert!(std::process::Command::new("mkfifo").arg(p).status().unwrap().success());
}

/// A runtime whose blocking pool is small, so that readers stuck on a
/// blocking thread each show at once.
fn small_pool() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(16)
        .enable_all()
        .build()
        .unwrap()
}

/// Finding: `GET /v1/files?special=true` of a FIFO whose writer never
/// writes held a blocking thread for ever, so enough of them hung every
/// file route, even after their clients left. Now: no thread is held, the
/// special reads beyond the cap are refused with a typed 503, the routes
/// answer at once, and readers whose clients left give their place back.
#[test]
fn silent_fifo_readers_neither_wedge_the_file_routes_nor_outlive_their_clients() {
    small_pool().block_on(async {
        let t = Tmp::new();
        let s = rooted(t.root()).await;
        let h = s.http();
        std::fs::write(t.root().join("plain"), b"plain").unwrap();
        mkfifo(&t.root().join("fifo"));
        // The silent writer: open for reading and writing (which does not
        // wait for a reader) and never write.
        let _writer = std::fs::OpenOptions::new().read(true).write(true).open(t.root().join("fifo")).unwrap();
        let q = [("path", "fifo"), ("special", "true")];
        let readers = (0..100).map(|_| {
            let r = h.req(reqwest::Method::GET, "/v1/files", &q);
            async move { tokio::time::timeout(Duration::from_secs(5), r.send()).await }
        });
        let answers = futures_util::future::join_all(readers).await;
        let mut open = Vec::new();
        let mut busy = 0;
        for a in answers {
            match a {
                Ok(Ok(r)) if r.status() == 200 => open.push(r),
                Ok(Ok(r)) => {
                    assert_eq!(r.status().as_u16(), 503);
                    let body: serde_json::Value = r.json().await.unwrap();
                    assert_eq!(body["code"], "busy", "{body}");
                    busy += 1;
                }
                Ok(Err(e)) => panic!("a special read failed: {e}"),
                Err(_) => {}
            }
        }
        // While they wait, the other routes answer promptly.
        let t0 = Instant::now();
        let r =
            tokio::time::timeout(Duration::from_secs(3), h.fetch("/v1/files", &[("path", "plain")])).await;
        let (status, _, body) = r.expect("a plain read answers while FIFO readers wait");
        assert_eq!((status, &body.unwrap()[..]), (200, &b"plain"[..]));
        let r = h.req(reqwest::Method::GET, "/v1/files/stat", &[("path", "plain")]).send();
        let r = tokio::time::timeout(Duration::from_secs(3), r).await.expect("stat answers").unwrap();
        assert_eq!(r.status(), 200);
        assert!(t0.elapsed() < Duration::from_secs(3));
        assert_eq!(open.len() + busy, 100, "every special read was answered at once");
        assert!(busy > 0 && open.len() <= 64, "the cap refuses some: {} open, {busy} busy", open.len());
        // The clients leave: their reads end, and a new one gets a place
        // (well before the idle deadline of 10 s).
        drop(open);
        let t0 = Instant::now();
        loop {
            let r = h.req(reqwest::Method::GET, "/v1/files", &[("path", "fifo"), ("special", "true")]);
            let r = bounded(r.send()).await.unwrap();
            if r.status() == 200 {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(5), "the readers of gone clients still hold places");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

/// A silent FIFO read ends at its idle deadline; data written before is
/// delivered, and a read of a FIFO whose writer closes ends at once.
#[tokio::test]
async fn a_special_read_ends_at_its_idle_deadline_or_at_eof() {
    let t = Tmp::new();
    let s = rooted(t.root()).await;
    let h = s.http();
    mkfifo(&t.root().join("fifo"));
    let mut writer = std::fs::OpenOptions::new().read(true).write(true).open(t.root().join("fifo")).unwrap();
    std::io::Write::write_all(&mut writer, b"some bytes").unwrap();
    let t0 = Instant::now();
    let q = [("path", "fifo"), ("special", "true"), ("idle_timeout", "0.5")];
    let (status, _, body) = h.fetch("/v1/files", &q).await;
    assert_eq!((status, &body.unwrap()[..]), (200, &b"some bytes"[..]));
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(450) && took < Duration::from_secs(5), "{took:?}");
    // A bad deadline is a typed error.
    let q = [("path", "fifo"), ("special", "true"), ("idle_timeout", "-1")];
    let r = bounded(h.req(reqwest::Method::GET, "/v1/files", &q).send()).await.unwrap();
    assert_eq!(r.status(), 400);
    // The writer closes: EOF ends the read without waiting.
    let w2 = std::thread::spawn({
        let p = t.root().join("fifo");
        move || {
            let mut w = std::fs::OpenOptions::new().write(true).open(p).unwrap();
            std::io::Write::write_all(&mut w, b"last").unwrap();
        }
    });
    drop(writer);
    let t0 = Instant::now();
    let (status, _, body) = h.fetch("/v1/files", &[("path", "fifo"), ("special", "true")]).await;
    w2.join().unwrap();
    assert_eq!(status, 200);
    let body = body.unwrap();
    assert!(body.is_empty() || &body[..] == b"last", "{body:?}");
    assert!(t0.elapsed() < Duration::from_secs(5));
}

/// A multipart body with one part `file`.
fn multipart(data: &[u8]) -> (String, Vec<u8>) {
    let boundary = "tether-boundary-4f1c";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// Finding: a write over a symlink copied the link's own 0777 onto the
/// new regular file (the native PUT and the LangSmith upload alike).
#[tokio::test]
async fn a_write_over_a_symlink_is_not_world_writable() {
    let t = Tmp::new();
    let s = rooted(t.root()).await;
    let h = s.http();
    let root = t.root();
    std::fs::write(root.join("target"), b"old").unwrap();
    std::fs::set_permissions(root.join("target"), std::fs::Permissions::from_mode(0o600)).unwrap();
    symlink("target", root.join("link")).unwrap();
    symlink("target", root.join("link2")).unwrap();
    symlink("nowhere", root.join("dangling")).unwrap();
    let mode = |n: &str| std::fs::symlink_metadata(root.join(n)).unwrap().mode();
    assert_eq!(mode("link") & 0o777, 0o777, "a symlink's own mode");

    let r = h.req(reqwest::Method::PUT, "/v1/files", &[("path", "link")]).body("new");
    assert_eq!(bounded(r.send()).await.unwrap().status(), 200);
    let r = h.req(reqwest::Method::PUT, "/v1/files", &[("path", "dangling")]).body("new");
    assert_eq!(bounded(r.send()).await.unwrap().status(), 200);
    let (ctype, body) = multipart(b"new");
    let r = h
        .req(reqwest::Method::POST, "/compat/langsmith/upload", &[("path", "link2")])
        .header("content-type", ctype)
        .body(body);
    let r = bounded(r.send()).await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    for n in ["link", "link2", "dangling"] {
        let m = mode(n);
        assert_eq!(m & 0o170000, 0o100000, "{n} is now a regular file");
        assert_eq!(m & 0o7777, 0o644, "{n}: {:o}", m & 0o7777);
        assert_eq!(std::fs::read(root.join(n)).unwrap(), b"new");
    }
    // The link's target is untouched, and a regular file keeps its mode.
    assert_eq!(std::fs::read(root.join("target")).unwrap(), b"old");
    let r = h.req(reqwest::Method::PUT, "/v1/files", &[("path", "target")]).body("newer");
    assert_eq!(bounded(r.send()).await.unwrap().status(), 200);
    assert_eq!(mode("target") & 0o7777, 0o600);
}

/// A file of `/sys` that is always there (its stat says 4096 bytes).
const SYS_FILE: &str = "/sys/devices/system/cpu/online";

/// Finding: `/proc` files (stat size 0) downloaded as 0 bytes and `/sys`
/// files (stat size 4096) sent less than their Content-Length.
#[tokio::test]
async fn proc_and_sys_files_download_whole() {
    let s = rooted(PathBuf::from("/")).await;
    let h = s.http();
    for path in ["/proc/version", "/proc/self/cmdline", SYS_FILE] {
        let want = std::fs::read(path).unwrap();
        assert!(!want.is_empty());
        let (status, headers, body) = h.fetch("/v1/files", &[("path", path)]).await;
        let body = body.unwrap_or_else(|e| panic!("{path}: the body was cut: {e}"));
        assert_eq!(status, 200, "{path}");
        assert_eq!(body, want, "{path}");
        if let Some(len) = headers.get("content-length") {
            assert_eq!(len.to_str().unwrap(), want.len().to_string(), "{path}");
        }
        // The LangSmith download, whole and a range.
        let (status, headers, body) = h.fetch("/compat/langsmith/download", &[("path", path)]).await;
        let body = body.unwrap_or_else(|e| panic!("{path}: the download was cut: {e}"));
        assert_eq!((status, &body[..]), (200, &want[..]), "{path}");
        assert_eq!(headers["content-length"].to_str().unwrap(), want.len().to_string());
        let r = h
            .req(reqwest::Method::GET, "/compat/langsmith/download", &[("path", path)])
            .header("range", "bytes=1-2");
        let r = bounded(r.send()).await.unwrap();
        assert_eq!(r.status(), 206, "{path}");
        assert_eq!(bounded(r.bytes()).await.unwrap(), want[1..3], "{path}");
    }
    // `max_bytes` still bounds such a read.
    let (status, _, body) = h.fetch("/v1/files", &[("path", "/proc/version"), ("max_bytes", "5")]).await;
    assert_eq!((status, &body.unwrap()[..]), (200, &std::fs::read("/proc/version").unwrap()[..5]));
}

/// Finding: a listing raced by deletes failed (an entry gone between the
/// directory read and its stat answered 404 for the directory).
#[tokio::test]
async fn a_listing_raced_by_deletes_never_fails() {
    let t = Tmp::new();
    let s = rooted(t.root()).await;
    let h = s.http();
    let dir = t.root().join("churn");
    std::fs::create_dir(&dir).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn = std::thread::spawn({
        let (dir, stop) = (dir.clone(), stop.clone());
        move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for i in 0..200 {
                    let _ = std::fs::write(dir.join(format!("f{i}")), b"x");
                }
                for i in 0..200 {
                    let _ = std::fs::remove_file(dir.join(format!("f{i}")));
                }
            }
        }
    });
    let mut failures = Vec::new();
    for _ in 0..300 {
        let (status, _, body) = h.fetch("/v1/files/list", &[("path", "churn")]).await;
        if status != 200 {
            failures.push(String::from_utf8_lossy(&body.unwrap()).into_owned());
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    churn.join().unwrap();
    assert!(failures.is_empty(), "{} of 300 listings failed, e.g. {}", failures.len(), failures[0]);
}

/// Finding: a tar download of a tree removed during the request dropped
/// the connection after its 200. Now every answer is either a complete
/// archive or a typed 404 (or, for a tree that vanishes under a walk
/// already streaming, an archive of what was still there).
#[tokio::test]
async fn a_tar_download_of_a_vanishing_tree_is_an_archive_or_a_404() {
    let t = Tmp::new();
    let s = rooted(t.root()).await;
    let h = s.http();
    let dir = t.root().join("tree");
    let (mut whole, mut gone) = (0, 0);
    for round in 0..150 {
        std::fs::create_dir_all(dir.join("a/b")).unwrap();
        for i in 0..20 {
            std::fs::write(dir.join(format!("a/b/f{i}")), vec![b'x'; 3000]).unwrap();
        }
        let req = h.fetch("/v1/files/tar", &[("path", "tree")]);
        let remover = tokio::task::spawn_blocking({
            let dir = dir.clone();
            move || {
                // Vary where in the request the tree goes.
                for _ in 0..(round % 10) * 200 {
                    std::hint::spin_loop();
                }
                let _ = std::fs::remove_dir_all(&dir);
            }
        });
        let (status, _, body) = req.await;
        remover.await.unwrap();
        let body = body.unwrap_or_else(|e| panic!("round {round}: the response was cut after {status}: {e}"));
        match status {
            200 => {
                // A complete archive: every entry readable to the end.
                let mut a = tar::Archive::new(&body[..]);
                for e in a.entries().unwrap() {
                    let mut e = e.unwrap();
                    std::io::copy(&mut e, &mut std::io::sink()).unwrap();
                }
                whole += 1;
            }
            404 => {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(v["code"], "not_found");
                gone += 1;
            }
            other => panic!("round {round}: {other}: {}", String::from_utf8_lossy(&body)),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    assert_eq!(whole + gone, 150);
}
