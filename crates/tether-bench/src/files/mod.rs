//! Files and one-shot exec over plain HTTP (issue #5): upload and download
//! throughput of one large file through `/v1/files`, next to `cat` and `dd`
//! of the same file and to the same file sent over a bare loopback TCP
//! connection, in the same run; and one-shot `POST /v1/exec` requests per
//! second from concurrent clients, next to raw fork+exec+wait from as many
//! concurrent tasks. Its rows form a table of their own (sections F1-F4).
//!
//! Everything lives in a scratch directory under `$TMPDIR` (the same disk
//! for the source, the uploads and the downloads), which is the daemon's
//! `--files-root` and is removed at the end.

//!
//! - `transfer`: the file measurements (floors, upload, download) and the
//!   comparisons behind them.
//! - `concurrent`: operations from concurrent tasks, counted per second.

pub(crate) mod concurrent;
mod transfer;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use reqwest::header::CONTENT_TYPE;

use self::concurrent::{concurrent, rate_row, repeat_rates, spawn_true};
use self::transfer::{cat, dd, download, loopback, upload, write_test_file};
use crate::procs::{self, Daemon};
use crate::report::{Row, failed, tp_row};
use crate::throughput::{self, Runs};
use crate::{Args, bounded, progress};

/// A directory of its own under `$TMPDIR`, removed with everything in it
/// on drop (also when a measurement fails half-way).
pub(crate) struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    /// Creates `$TMPDIR/tether-bench-files-PID-N`.
    pub(crate) fn new() -> Result<Scratch> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("tether-bench-files-{}-{n}", std::process::id()));
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Scratch { dir })
    }

    /// A file in the directory.
    fn join(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            progress(&format!("could not remove {}: {e}", self.dir.display()));
        }
    }
}

/// The daemon's extra arguments for this group: its file routes confined to
/// the scratch directory. Otherwise defaults (one-shot commands are
/// forgotten as soon as they end, whatever `--ttl` says).
pub(crate) fn daemon_args(s: &Scratch) -> Vec<String> {
    vec!["--files-root".into(), s.dir.to_string_lossy().into_owned()]
}

/// Runs every measurement of the group against `d`; returns the rows.
pub(crate) async fn rows(args: &Args, d: &Daemon, s: &Scratch) -> Vec<Row> {
    let n = args.file_bytes;
    let mut rows = Vec::new();
    let src = s.join(SOURCE);

    progress(&format!("F. writing the {} test file", crate::report::fmt_bytes(n)));
    let made = bounded(300, async {
        let p = src.clone();
        tokio::task::spawn_blocking(move || write_test_file(&p, n)).await?
    })
    .await;
    if let Err(e) = made {
        rows.push(Row::new("F1", "writing the test file").result(failed(&e)));
        return rows;
    }
    let http = match Http::new(d) {
        Ok(h) => h,
        Err(e) => {
            rows.push(Row::new("F1", "an HTTP client").result(failed(&e)));
            return rows;
        }
    };
    let floors = floor_rows(args, s, &mut rows).await;
    tether_rows(args, d, s, &http, &floors, &mut rows).await;

    // The big files are done with: free the disk before the exec rows.
    let _ = std::fs::remove_file(&src);

    exec_rows(args, d, &http, &mut rows).await;
    rows
}

/// Transfers take a few seconds each, plus about a second to compare the
/// result with the source (untimed).
fn limit(args: &Args) -> u64 {
    60 + 60 * args.repeat as u64
}

/// The F1 rates the tether rows are compared with.
struct Floors {
    /// `cat FILE > /dev/null`.
    cat: Option<f64>,
    /// `dd if=FILE of=OUT bs=1M`.
    dd: Option<f64>,
    /// FILE over a loopback TCP connection.
    tcp: Option<f64>,
}

/// F1: `cat` and `dd` of the test file and the loopback reference.
async fn floor_rows(args: &Args, s: &Scratch, rows: &mut Vec<Row>) -> Floors {
    let (n, k, limit) = (args.file_bytes, args.repeat, limit(args));
    let src = s.join(SOURCE);
    progress("F1. physical floor: cat FILE > /dev/null");
    // The file was just written, so it is in the page cache; one read first
    // all the same, so that every timed run reads a warm cache.
    let r = bounded(limit, async {
        cat(&src).await?;
        throughput::repeat(k, || cat(&src)).await
    })
    .await;
    let cat_rate = rate(&r);
    rows.push(tp_row(
        "F1",
        "physical floor: `cat FILE > /dev/null`, page cache warm",
        n,
        &r,
        "coreutils `cat`, stdout on /dev/null; one untimed read first",
    ));

    progress("F1. physical floor: dd if=FILE of=OUT bs=1M");
    let out = s.join("dd.out");
    // One untimed run first, as for cat: the first write of a GiB into new
    // page-cache pages here is often several times slower than the next.
    let r = bounded(limit, async {
        dd(&src, &out).await?;
        throughput::repeat(k, || dd(&src, &out)).await
    })
    .await;
    let dd_rate = rate(&r);
    rows.push(tp_row(
        "F1",
        "physical floor: `dd if=FILE of=OUT bs=1M`, OUT a new file in the same directory",
        n,
        &r,
        "no fsync (tether does none either): the writes land in the page cache; one untimed \
         run first; OUT compared with FILE and removed after each run, untimed",
    ));

    progress("F1. loopback reference: FILE over a TCP connection");
    let r = bounded(limit, throughput::repeat(k, || loopback(&src))).await;
    let tcp_rate = rate(&r);
    rows.push(tp_row(
        "F1",
        "loopback reference: FILE sent over one 127.0.0.1 TCP connection and counted, no HTTP",
        n,
        &r,
        "tokio in the bench process: a sender task reads FILE in 256 KiB chunks (`ReaderStream` \
         over `tokio::fs::File`, as the daemon does) and writes them to the socket, the receiver \
         reads into a 256 KiB buffer and counts",
    ));
    Floors { cat: cat_rate, dd: dd_rate, tcp: tcp_rate }
}

/// F2-F3: upload and download through `/v1/files`.
async fn tether_rows(
    args: &Args,
    d: &Daemon,
    s: &Scratch,
    http: &Http,
    floors: &Floors,
    rows: &mut Vec<Row>,
) {
    let (n, k, limit) = (args.file_bytes, args.repeat, limit(args));
    progress("F2. tether upload: PUT /v1/files");
    let r = bounded(limit, throughput::repeat(k, || upload(http, d, s, n))).await;
    let extra = format!(
        "one `reqwest::Client`; body `Body::wrap_stream` over a `tokio::fs::File` read in 256 KiB \
         chunks, `Content-Length` set; timed until the JSON answer (the daemon has renamed its \
         temporary file over the target); a new target each run; the answer's `size`, the file's \
         size and its bytes checked against FILE after each run, untimed{}{}",
        pct(&r, floors.dd, "the dd floor"),
        pct(&r, floors.tcp, "the loopback reference"),
    );
    rows.push(tp_row("F2", "tether upload: `PUT /v1/files?path=upload.bin`", n, &r, &extra));

    progress("F3. tether download, counted: GET /v1/files");
    let r = bounded(limit, throughput::repeat(k, || download(http, d, n, None))).await;
    let extra = format!(
        "`bytes_stream()` of the response, each chunk counted and dropped (no write, no content \
         check); `Content-Length` and the count checked{}{}",
        pct(&r, floors.cat, "the cat floor"),
        pct(&r, floors.tcp, "the loopback reference"),
    );
    rows.push(tp_row("F3", "tether download: `GET /v1/files?path=FILE` to /dev/null", n, &r, &extra));

    progress("F3. tether download, to a file: GET /v1/files");
    let dest = s.join("download.out");
    let r = bounded(limit, throughput::repeat(k, || download(http, d, n, Some(&dest)))).await;
    let extra = format!(
        "`bytes_stream()` written chunk by chunk to a new `tokio::fs::File` in the same directory, \
         timed until its flush (no fsync); compared with FILE and removed after each run, \
         untimed{}{}",
        pct(&r, floors.dd, "the dd floor"),
        pct(&r, floors.tcp, "the loopback reference"),
    );
    rows.push(tp_row("F3", "tether download: `GET /v1/files?path=FILE` to a file", n, &r, &extra));
}

/// F4: one-shot `POST /v1/exec` from concurrent clients, next to raw
/// spawns from as many tasks.
async fn exec_rows(args: &Args, d: &Daemon, http: &Http, rows: &mut Vec<Row>) {
    let k = args.repeat;
    let (m, c) = (args.exec_requests, args.exec_clients);
    let warmup = (m / 20).max(c);

    progress(&format!("F4. physical floor: raw fork+exec+wait of `true`, {c} concurrent tasks"));
    let r = bounded(120, repeat_rates(k, || concurrent(c, m, warmup, None, spawn_true))).await;
    let raw = r.as_ref().ok().map(|r| r.median.per_sec);
    rows.push(rate_row(
        "F4",
        &format!("physical floor: raw fork+exec+wait of `true`, {c} concurrent tokio tasks"),
        &r,
        "spawns",
        format!(
            "each task a loop of `tokio::process::Command::new(\"true\").status()` with stdio on \
             /dev/null, {m} in all; after {warmup} warm-up spawns"
        ),
    ));

    progress(&format!("F4. tether one-shot exec: POST /v1/exec, {c} concurrent clients"));
    let h = http.clone();
    let op = move || {
        let h = h.clone();
        async move { h.exec_true().await }
    };
    let r = bounded(120, repeat_rates(k, || concurrent(c, m, warmup, Some(d), op.clone()))).await;
    let vs_raw = match (&r, raw) {
        (Ok(t), Some(raw)) => format!("; {:.0}% of the raw spawn rate", 100.0 * t.median.per_sec / raw),
        _ => String::new(),
    };
    rows.push(rate_row(
        "F4",
        &format!("tether one-shot exec: `POST /v1/exec {{\"argv\":[\"true\"]}}`, {c} concurrent clients"),
        &r,
        "requests",
        format!(
            "{c} tasks sharing one `reqwest::Client` (keep-alive pool: {c} connections), each one \
             request at a time, {m} in all; JSON body, 200 and `exit_code: 0` checked on every \
             answer; daemon with default settings; after {warmup} warm-up requests{vs_raw}"
        ),
    ));
}

/// The test file's name in the scratch directory (and on the wire).
const SOURCE: &str = "source.bin";

/// Where uploads go, relative to the daemon's files root.
const UPLOAD: &str = "upload.bin";

/// Read size of the upload body.
const CHUNK: usize = 256 << 10;

/// The one-shot request body.
const EXEC_BODY: &str = r#"{"argv":["true"]}"#;

/// The daemon's HTTP routes through one `reqwest::Client` (cheap to clone:
/// its pool is shared).
#[derive(Clone)]
struct Http {
    client: reqwest::Client,
    /// `http://127.0.0.1:PORT`.
    base: Arc<str>,
    token: Arc<str>,
}

impl Http {
    fn new(d: &Daemon) -> Result<Http> {
        // No proxy from the environment: the daemon is on loopback. (The
        // workspace's reqwest has no TLS provider of its own: ring's.)
        #[allow(deprecated)]
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder().no_proxy().build()?;
        Ok(Http { client, base: d.url.trim_end_matches('/').into(), token: d.token.as_str().into() })
    }

    fn req(&self, method: reqwest::Method, route: &str) -> reqwest::RequestBuilder {
        self.client.request(method, format!("{}{route}", self.base)).bearer_auth(&*self.token)
    }

    /// One `POST /v1/exec {"argv":["true"]}`, checked: 200 and exit code 0.
    async fn exec_true(&self) -> Result<()> {
        let resp = self
            .req(reqwest::Method::POST, "/v1/exec")
            .header(CONTENT_TYPE, "application/json")
            .body(EXEC_BODY)
            .send()
            .await
            .context("POST /v1/exec")?;
        let status = resp.status();
        let body = resp.bytes().await.context("reading the /v1/exec answer")?;
        if !status.is_success() {
            bail!("POST /v1/exec answered {status}: {}", String::from_utf8_lossy(&body));
        }
        let v: serde_json::Value = serde_json::from_slice(&body).context("the /v1/exec answer")?;
        if v.get("exit_code").and_then(serde_json::Value::as_i64) != Some(0) {
            bail!("`true` did not exit with 0: {v}");
        }
        Ok(())
    }
}

/// CPU time of the daemon and of this process so far.
fn cpu_now(d: &Daemon) -> (Option<Duration>, Option<Duration>) {
    (procs::cpu_time(d.pid), procs::cpu_time(std::process::id()))
}

/// CPU time of the daemon and of this process since `before`.
fn cpu_since(d: &Daemon, before: (Option<Duration>, Option<Duration>)) -> Option<(Duration, Duration)> {
    match (before, cpu_now(d)) {
        ((Some(d0), Some(c0)), (Some(d1), Some(c1))) => Some((d1.saturating_sub(d0), c1.saturating_sub(c0))),
        _ => None,
    }
}

/// The median rate of a throughput measurement, if it ran.
fn rate(r: &Result<Runs>) -> Option<f64> {
    r.as_ref().ok().map(|runs| runs.median.rate())
}

/// "; N% of {floor}", when both were measured.
fn pct(r: &Result<Runs>, floor: Option<f64>, what: &str) -> String {
    match (rate(r), floor) {
        (Some(t), Some(f)) => format!("; {:.0}% of {what}", 100.0 * t / f),
        _ => String::new(),
    }
}
