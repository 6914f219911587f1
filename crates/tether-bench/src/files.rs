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

use std::future::Future;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;
use tokio_util::io::ReaderStream;

use crate::procs::{self, Daemon};
use crate::report::{Latency, Row, fmt_dur};
use crate::throughput::{self, Runs, Transfer};
use crate::{Args, bounded, failed, progress, tp_row};

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
    let (n, k) = (args.file_bytes, args.repeat);
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
    // Transfers take a few seconds each, plus about a second to compare the
    // result with the source (untimed).
    let limit = 60 + 60 * k as u64;

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

    progress("F2. tether upload: PUT /v1/files");
    let r = bounded(limit, throughput::repeat(k, || upload(&http, d, s, n))).await;
    let extra = format!(
        "one `reqwest::Client`; body `Body::wrap_stream` over a `tokio::fs::File` read in 256 KiB \
         chunks, `Content-Length` set; timed until the JSON answer (the daemon has renamed its \
         temporary file over the target); a new target each run; the answer's `size`, the file's \
         size and its bytes checked against FILE after each run, untimed{}{}",
        pct(&r, dd_rate, "the dd floor"),
        pct(&r, tcp_rate, "the loopback reference"),
    );
    rows.push(tp_row("F2", "tether upload: `PUT /v1/files?path=upload.bin`", n, &r, &extra));

    progress("F3. tether download, counted: GET /v1/files");
    let r = bounded(limit, throughput::repeat(k, || download(&http, d, n, None))).await;
    let extra = format!(
        "`bytes_stream()` of the response, each chunk counted and dropped (no write, no content \
         check); `Content-Length` and the count checked{}{}",
        pct(&r, cat_rate, "the cat floor"),
        pct(&r, tcp_rate, "the loopback reference"),
    );
    rows.push(tp_row("F3", "tether download: `GET /v1/files?path=FILE` to /dev/null", n, &r, &extra));

    progress("F3. tether download, to a file: GET /v1/files");
    let dest = s.join("download.out");
    let r = bounded(limit, throughput::repeat(k, || download(&http, d, n, Some(&dest)))).await;
    let extra = format!(
        "`bytes_stream()` written chunk by chunk to a new `tokio::fs::File` in the same directory, \
         timed until its flush (no fsync); compared with FILE and removed after each run, \
         untimed{}{}",
        pct(&r, dd_rate, "the dd floor"),
        pct(&r, tcp_rate, "the loopback reference"),
    );
    rows.push(tp_row("F3", "tether download: `GET /v1/files?path=FILE` to a file", n, &r, &extra));

    // The big files are done with: free the disk before the exec rows.
    let _ = std::fs::remove_file(&src);

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
    rows
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
        // No proxy from the environment: the daemon is on loopback.
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

/// Writes `n` bytes of a xorshift sequence (so that a lost or misplaced
/// chunk shows in a comparison, which zeros would hide) and syncs it, so
/// that no writeback of it runs during the measurements.
fn write_test_file(path: &Path, n: u64) -> Result<()> {
    let mut f = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = n;
    while left > 0 {
        for w in buf.chunks_exact_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            w.copy_from_slice(&state.to_le_bytes());
        }
        let len = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..len])?;
        left -= len as u64;
    }
    f.sync_all()?;
    Ok(())
}

/// Fails unless `got` holds exactly the bytes of `want`.
fn same_bytes(want: &Path, got: &Path) -> Result<()> {
    let mut a = std::fs::File::open(want).with_context(|| format!("opening {}", want.display()))?;
    let mut b = std::fs::File::open(got).with_context(|| format!("opening {}", got.display()))?;
    let (la, lb) = (a.metadata()?.len(), b.metadata()?.len());
    if la != lb {
        bail!("{} has {lb} bytes, expected {la}", got.display());
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut at = 0u64;
    while at < la {
        let len = (la - at).min(ba.len() as u64) as usize;
        a.read_exact(&mut ba[..len])?;
        b.read_exact(&mut bb[..len])?;
        if ba[..len] != bb[..len] {
            bail!("{} differs from {} in the MiB at offset {at}", got.display(), want.display());
        }
        at += len as u64;
    }
    Ok(())
}

/// [`same_bytes`] off the runtime, then removes `got` either way.
async fn check_and_remove(want: &Path, got: &Path) -> Result<()> {
    let (want, got) = (want.to_owned(), got.to_owned());
    tokio::task::spawn_blocking(move || {
        let r = same_bytes(&want, &got);
        let _ = std::fs::remove_file(&got);
        r
    })
    .await?
}

/// Runs a program to its end, stdin and stdout on /dev/null; its elapsed
/// time as a transfer of `n` bytes.
async fn timed(program: &str, args: &[&std::ffi::OsStr], n: u64) -> Result<Transfer> {
    let t = Instant::now();
    let status = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status()
        .await
        .with_context(|| format!("starting {program}"))?;
    let elapsed = t.elapsed();
    if !status.success() {
        bail!("{program} failed: {status}");
    }
    Ok(Transfer { bytes: n, lost: 0, elapsed, cpu: None, frames: 0 })
}

/// `cat FILE > /dev/null`.
async fn cat(src: &Path) -> Result<Transfer> {
    let n = tokio::fs::metadata(src).await?.len();
    timed("cat", &[src.as_os_str()], n).await
}

/// `dd if=FILE of=OUT bs=1M` into a new OUT, then (untimed) OUT compared
/// with FILE and removed.
async fn dd(src: &Path, out: &Path) -> Result<Transfer> {
    let n = tokio::fs::metadata(src).await?.len();
    let _ = tokio::fs::remove_file(out).await;
    let (i, o) = (format!("if={}", src.display()), format!("of={}", out.display()));
    let args = [i.as_ref(), o.as_ref(), "bs=1M".as_ref(), "status=none".as_ref()];
    let t = timed("dd", &args, n).await?;
    check_and_remove(src, out).await?;
    Ok(t)
}

/// The loopback reference: the file sent over a 127.0.0.1 TCP connection
/// by a task of this process and counted by another, timed from the
/// connect to the receiver's EOF. What crossing a socket costs without
/// HTTP; not a bound (two processes may beat two tasks of one runtime).
async fn loopback(src: &Path) -> Result<Transfer> {
    let n = tokio::fs::metadata(src).await?.len();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let file = tokio::fs::File::open(src).await.with_context(|| format!("opening {}", src.display()))?;
    let t = Instant::now();
    // A task of its own, so that sender and receiver can use both cores,
    // as the daemon and the bench client do; in a `JoinSet`, so that an
    // early error here aborts it.
    let mut sender = JoinSet::new();
    sender.spawn(async move {
        let (mut sock, _) = listener.accept().await?;
        let mut chunks = ReaderStream::with_capacity(file, CHUNK);
        while let Some(chunk) = chunks.next().await {
            sock.write_all(&chunk?).await?;
        }
        sock.shutdown().await?;
        anyhow::Ok(())
    });
    let mut sock = tokio::net::TcpStream::connect(addr).await?;
    let mut buf = vec![0u8; CHUNK];
    let mut bytes = 0u64;
    loop {
        match sock.read(&mut buf).await? {
            0 => break,
            r => bytes += r as u64,
        }
    }
    let elapsed = t.elapsed();
    sender.join_next().await.context("no sender task")?.context("the sender task failed")??;
    if bytes != n {
        bail!("received {bytes} bytes, expected {n}");
    }
    Ok(Transfer { bytes, lost: 0, elapsed, cpu: None, frames: 0 })
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

/// `PUT /v1/files?path=upload.bin` of the test file, streamed from disk,
/// timed until the daemon's answer; then (untimed) the answer's size, the
/// file's size and its bytes checked, and the file removed.
async fn upload(h: &Http, d: &Daemon, s: &Scratch, n: u64) -> Result<Transfer> {
    let (src, target) = (s.join(SOURCE), s.join(UPLOAD));
    // A new file each run, as for dd: no old inode freed by the rename.
    let _ = tokio::fs::remove_file(&target).await;
    let cpu0 = cpu_now(d);
    let t = Instant::now();
    let file = tokio::fs::File::open(&src).await.with_context(|| format!("opening {}", src.display()))?;
    let body = reqwest::Body::wrap_stream(ReaderStream::with_capacity(file, CHUNK));
    let resp = h
        .req(reqwest::Method::PUT, "/v1/files")
        .query(&[("path", UPLOAD)])
        .header(CONTENT_LENGTH, n)
        .body(body)
        .send()
        .await
        .context("PUT /v1/files")?;
    let status = resp.status();
    let answer = resp.bytes().await.context("reading the PUT answer")?;
    let elapsed = t.elapsed();
    let cpu = cpu_since(d, cpu0);
    if !status.is_success() {
        bail!("PUT /v1/files answered {status}: {}", String::from_utf8_lossy(&answer));
    }
    let stat: serde_json::Value = serde_json::from_slice(&answer).context("the PUT answer")?;
    if stat.get("size").and_then(serde_json::Value::as_u64) != Some(n) {
        bail!("the PUT answer reports {stat}, expected size {n}");
    }
    check_and_remove(&src, &target).await?;
    Ok(Transfer { bytes: n, lost: 0, elapsed, cpu, frames: 0 })
}

/// `GET /v1/files?path=source.bin`: with `to`, written to that new file
/// (timed until flushed; then compared with the source and removed,
/// untimed), else counted and dropped.
async fn download(h: &Http, d: &Daemon, n: u64, to: Option<&Path>) -> Result<Transfer> {
    if let Some(p) = to {
        let _ = tokio::fs::remove_file(p).await;
    }
    let cpu0 = cpu_now(d);
    let t = Instant::now();
    let resp = h
        .req(reqwest::Method::GET, "/v1/files")
        .query(&[("path", SOURCE)])
        .send()
        .await
        .context("GET /v1/files")?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp.text().await.unwrap_or_default();
        bail!("GET /v1/files answered {status}: {body}");
    }
    if resp.content_length() != Some(n) {
        bail!("GET /v1/files announced {:?} bytes, expected {n}", resp.content_length());
    }
    let mut out = match to {
        Some(p) => {
            Some(tokio::fs::File::create(p).await.with_context(|| format!("creating {}", p.display()))?)
        }
        None => None,
    };
    let mut stream = resp.bytes_stream();
    let mut bytes = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.context("the download was cut")?;
        bytes += chunk.len() as u64;
        if let Some(f) = &mut out {
            f.write_all(&chunk).await?;
        }
    }
    if let Some(f) = &mut out {
        f.flush().await?;
    }
    drop(out);
    let elapsed = t.elapsed();
    let cpu = cpu_since(d, cpu0);
    if bytes != n {
        bail!("received {bytes} bytes, expected {n}");
    }
    if let Some(p) = to {
        // The source is the file the daemon read.
        let src = p.with_file_name(SOURCE);
        check_and_remove(&src, p).await?;
    }
    Ok(Transfer { bytes, lost: 0, elapsed, cpu, frames: 0 })
}

/// One `true`: fork + exec + wait, stdio on /dev/null.
async fn spawn_true() -> Result<()> {
    let status = tokio::process::Command::new("true")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .context("spawning `true`")?;
    if !status.success() {
        bail!("`true` failed: {status}");
    }
    Ok(())
}

/// One run of many operations from concurrent tasks.
#[derive(Clone, Copy, Debug)]
struct Concurrent {
    /// Operations per second of wall time.
    per_sec: f64,
    /// Wall time from the first start to the last end.
    wall: Duration,
    /// Each operation's own duration.
    lat: Latency,
    /// CPU time of the daemon and of this process during the run, when a
    /// daemon was given.
    cpu: Option<(Duration, Duration)>,
}

/// `warmup` untimed operations, then `n` timed ones, each time from
/// `clients` tasks at once; each task takes the next operation until none
/// is left and runs one at a time. CPU is measured for `d` when given.
async fn concurrent<F, Fut>(
    clients: usize,
    n: usize,
    warmup: usize,
    d: Option<&Daemon>,
    op: F,
) -> Result<Concurrent>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    in_tasks(clients, warmup, op.clone()).await?;
    let cpu0 = d.map(cpu_now);
    let t = Instant::now();
    let samples = in_tasks(clients, n, op).await?;
    let wall = t.elapsed();
    let cpu = d.zip(cpu0).and_then(|(d, c)| cpu_since(d, c));
    let count = samples.len();
    Ok(Concurrent {
        per_sec: count as f64 / wall.as_secs_f64().max(1e-9),
        wall,
        lat: Latency::of(samples).context("no samples")?,
        cpu,
    })
}

/// Runs `op` `n` times in all from `clients` tasks; each call's duration.
/// The first failure ends the run (the other tasks are aborted with the
/// `JoinSet`).
async fn in_tasks<F, Fut>(clients: usize, n: usize, op: F) -> Result<Vec<Duration>>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for _ in 0..clients.max(1) {
        let (next, op) = (next.clone(), op.clone());
        tasks.spawn(async move {
            let mut samples = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let t = Instant::now();
                op().await?;
                samples.push(t.elapsed());
            }
            anyhow::Ok(samples)
        });
    }
    let mut all = Vec::with_capacity(n);
    while let Some(r) = tasks.join_next().await {
        all.extend(r.context("a client task failed")??);
    }
    Ok(all)
}

/// Several runs of a concurrent measurement.
#[derive(Clone, Copy, Debug)]
struct Rates {
    /// The run with the median rate.
    median: Concurrent,
    /// The slowest run's rate.
    min: f64,
    /// The fastest run's rate.
    max: f64,
    /// How many runs.
    count: usize,
}

/// Runs `run` `count` times, one after the other; any failure fails all.
async fn repeat_rates<F, Fut>(count: usize, mut run: F) -> Result<Rates>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Concurrent>>,
{
    let mut runs = Vec::with_capacity(count);
    for _ in 0..count.max(1) {
        runs.push(run().await?);
    }
    runs.sort_by(|a, b| a.per_sec.total_cmp(&b.per_sec));
    let median = runs[runs.len() / 2];
    Ok(Rates { median, min: runs[0].per_sec, max: runs[runs.len() - 1].per_sec, count: runs.len() })
}

/// A rate row: the median run's latency percentiles and rate.
fn rate_row(section: &'static str, what: &str, r: &Result<Rates>, unit: &str, extra: String) -> Row {
    match r {
        Ok(rates) => {
            let m = rates.median;
            let mut notes = format!(
                "median run: {} {unit} in {} (p50/p99 are its {unit}); range {:.0}-{:.0}/s over {} runs",
                m.lat.n,
                fmt_dur(m.wall),
                rates.min,
                rates.max,
                rates.count
            );
            if let Some((daemon, client)) = m.cpu {
                notes.push_str(&format!(
                    "; CPU in that run: daemon {}, bench client {}",
                    fmt_dur(daemon),
                    fmt_dur(client)
                ));
            }
            notes.push_str("; ");
            notes.push_str(&extra);
            Row::new(section, what)
                .latency(&m.lat)
                .samples(format!("{} x {}", rates.count, m.lat.n))
                .result(format!("{:.0} {unit}/s", m.per_sec))
                .notes(notes)
        }
        Err(e) => Row::new(section, what).result(failed(e)),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_compares_equal_and_a_changed_byte_does_not() -> Result<()> {
        let s = Scratch::new()?;
        let (a, b) = (s.join("a"), s.join("b"));
        write_test_file(&a, (1 << 20) + 5)?;
        std::fs::copy(&a, &b)?;
        same_bytes(&a, &b)?;
        let mut bytes = std::fs::read(&b)?;
        bytes[(1 << 20) + 2] ^= 1;
        std::fs::write(&b, &bytes)?;
        assert!(same_bytes(&a, &b).is_err());
        std::fs::write(&b, &bytes[..10])?;
        assert!(same_bytes(&a, &b).is_err());
        let dir = s.dir.clone();
        drop(s);
        assert!(!dir.exists(), "the scratch directory outlived its guard");
        Ok(())
    }

    #[tokio::test]
    async fn tasks_run_each_operation_once() -> Result<()> {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let op = move || {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        };
        let samples = in_tasks(4, 103, op).await?;
        assert_eq!(samples.len(), 103);
        assert_eq!(calls.load(Ordering::Relaxed), 103);
        Ok(())
    }

    #[tokio::test]
    async fn a_failing_operation_fails_the_run() {
        let op = || async { bail!("no") };
        assert!(in_tasks(3, 10, op).await.is_err());
    }
}
