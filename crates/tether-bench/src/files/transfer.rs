//! The file measurements: `cat` and `dd` of the test file, the same file
//! over a loopback TCP connection, and its upload and download through
//! `/v1/files`, each checked against the source (untimed).

use std::io::{Read, Write};
use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use reqwest::header::CONTENT_LENGTH;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;
use tokio_util::io::ReaderStream;

use super::{CHUNK, Http, SOURCE, Scratch, UPLOAD, cpu_now, cpu_since};
use crate::procs::Daemon;
use crate::throughput::Transfer;

/// Writes `n` bytes of a xorshift sequence (so that a lost or misplaced
/// chunk shows in a comparison, which zeros would hide) and syncs it, so
/// that no writeback of it runs during the measurements.
pub(super) fn write_test_file(path: &Path, n: u64) -> Result<()> {
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
pub(super) async fn cat(src: &Path) -> Result<Transfer> {
    let n = tokio::fs::metadata(src).await?.len();
    timed("cat", &[src.as_os_str()], n).await
}

/// `dd if=FILE of=OUT bs=1M` into a new OUT, then (untimed) OUT compared
/// with FILE and removed.
pub(super) async fn dd(src: &Path, out: &Path) -> Result<Transfer> {
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
pub(super) async fn loopback(src: &Path) -> Result<Transfer> {
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

/// `PUT /v1/files?path=upload.bin` of the test file, streamed from disk,
/// timed until the daemon's answer; then (untimed) the answer's size, the
/// file's size and its bytes checked, and the file removed.
pub(super) async fn upload(h: &Http, d: &Daemon, s: &Scratch, n: u64) -> Result<Transfer> {
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
pub(super) async fn download(h: &Http, d: &Daemon, n: u64, to: Option<&Path>) -> Result<Transfer> {
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
}
