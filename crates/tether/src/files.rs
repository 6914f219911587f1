//! `tether cp`, `tether cat` and `tether run-code`: the plain HTTP routes.
//! Files and trees stream both ways (trees as tar); a progress bar shows on
//! a terminal and nowhere else.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use tether_proto::{CodeRequest, ExecResponse, FileStat, RunOptions};
use tokio::io::AsyncWriteExt;
use tokio_util::io::{ReaderStream, StreamReader, SyncIoBridge};

use crate::cli::ConnArgs;

/// The daemon's HTTP side.
pub(crate) struct Http {
    client: reqwest::Client,
    base: String,
    token: String,
}

impl Http {
    pub(crate) fn new(conn: &ConnArgs) -> Result<Http> {
        let token = crate::run::token(conn)?;
        Ok(Http { client: reqwest::Client::new(), base: conn.url.trim_end_matches('/').to_owned(), token })
    }

    fn req(&self, method: reqwest::Method, route: &str) -> reqwest::RequestBuilder {
        self.client.request(method, format!("{}{route}", self.base)).bearer_auth(&self.token)
    }

    /// Sends a request; a non-2xx answer becomes an error with the daemon's
    /// message.
    async fn send(&self, rb: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let r = rb.send().await.context("cannot reach the daemon")?;
        if r.status().is_success() {
            return Ok(r);
        }
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        let msg = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_owned))
            .unwrap_or(body);
        bail!("{msg} (HTTP {})", status.as_u16())
    }

    async fn stat(&self, path: &str) -> Result<FileStat> {
        let r = self.send(self.req(reqwest::Method::GET, "/v1/files/stat").query(&[("path", path)])).await?;
        Ok(r.json().await?)
    }
}

/// A `:REMOTE` argument's path, or `None` for a local one.
fn remote(arg: &str) -> Option<&str> {
    arg.strip_prefix(':')
}

pub(crate) async fn cp(conn: &ConnArgs, from: &str, to: &str) -> Result<i32> {
    let http = Http::new(conn)?;
    match (remote(from), remote(to)) {
        (None, Some(dst)) => upload(&http, Path::new(from), dst).await,
        (Some(src), None) => download(&http, src, Path::new(to)).await,
        (Some(_), Some(_)) => bail!("both sides are remote; copy on the host with `tether exec -- cp`"),
        (None, None) => bail!("neither side is remote: write the daemon's side as :PATH"),
    }
    .map(|()| 0)
}

fn progress(total: Option<u64>, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = match total {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::no_length(),
    };
    let style = if total.is_some() {
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
    } else {
        "{msg} {bytes} {bytes_per_sec} {elapsed}"
    };
    pb.set_style(ProgressStyle::with_template(style).unwrap_or_else(|_| ProgressStyle::default_bar()));
    pb.set_message(what.to_owned());
    pb
}

async fn upload(http: &Http, local: &Path, dst: &str) -> Result<()> {
    let meta = std::fs::metadata(local).with_context(|| format!("{}", local.display()))?;
    if meta.is_dir() {
        // The tree goes as a tar stream built by a blocking task.
        let pb = progress(None, &format!("{} -> :{dst}", local.display()));
        let (w, r) = tokio::io::duplex(256 * 1024);
        let dir = local.to_owned();
        let name = dir.canonicalize()?.file_name().map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
        let packer = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut b = tar::Builder::new(SyncIoBridge::new(w));
            b.follow_symlinks(false);
            b.append_dir_all(&name, &dir)?;
            b.into_inner()?.flush()
        });
        let pb2 = pb.clone();
        let body = ReaderStream::new(r).inspect(move |c| {
            if let Ok(c) = c {
                pb2.inc(c.len() as u64);
            }
        });
        let rb = http.req(reqwest::Method::PUT, "/v1/files/tar").query(&[("path", dst)]);
        let sent = http.send(rb.body(reqwest::Body::wrap_stream(body))).await;
        packer.await?.context("packing the directory")?;
        sent?;
        pb.finish_and_clear();
        return Ok(());
    }
    // Into an existing remote directory, as cp does.
    let into_dir =
        dst.ends_with('/') || dst.is_empty() || http.stat(dst).await.is_ok_and(|s| s.kind == "dir");
    let dst = if into_dir {
        let dst = if dst.is_empty() || dst.ends_with('/') { dst.to_owned() } else { format!("{dst}/") };
        let name = local.file_name().context("the local path has no file name")?.to_string_lossy();
        format!("{dst}{name}")
    } else {
        dst.to_owned()
    };
    let pb = progress(Some(meta.len()), &format!("{} -> :{dst}", local.display()));
    let file = tokio::fs::File::open(local).await?;
    let pb2 = pb.clone();
    let body = ReaderStream::with_capacity(file, 256 * 1024).inspect(move |c| {
        if let Ok(c) = c {
            pb2.inc(c.len() as u64);
        }
    });
    let mode = format!("{:o}", std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777);
    let rb = http
        .req(reqwest::Method::PUT, "/v1/files")
        .query(&[("path", dst.as_str()), ("parents", "true"), ("mode", mode.as_str())])
        .header(reqwest::header::CONTENT_LENGTH, meta.len());
    http.send(rb.body(reqwest::Body::wrap_stream(body))).await?;
    pb.finish_and_clear();
    Ok(())
}

async fn download(http: &Http, src: &str, local: &Path) -> Result<()> {
    let st = http.stat(src).await?;
    if st.kind == "dir" {
        let pb = progress(None, &format!(":{src} -> {}", local.display()));
        let r = http.send(http.req(reqwest::Method::GET, "/v1/files/tar").query(&[("path", src)])).await?;
        let pb2 = pb.clone();
        let stream = r.bytes_stream().map(move |c| {
            if let Ok(c) = &c {
                pb2.inc(c.len() as u64);
            }
            c.map_err(std::io::Error::other)
        });
        let reader = SyncIoBridge::new(StreamReader::new(stream));
        let dest = local.to_owned();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::create_dir_all(&dest)?;
            let mut a = tar::Archive::new(reader);
            a.set_preserve_permissions(true);
            a.unpack(&dest)
        })
        .await?
        .with_context(|| format!("unpacking into {}", local.display()))?;
        pb.finish_and_clear();
        return Ok(());
    }
    let dest = if local.is_dir() { local.join(&st.name) } else { local.to_owned() };
    let pb = progress(Some(st.size), &format!(":{src} -> {}", dest.display()));
    let r = http.send(http.req(reqwest::Method::GET, "/v1/files").query(&[("path", src)])).await?;
    // Into a temporary file next to the destination, renamed when complete.
    let tmp = dest.with_file_name(format!(
        ".{}.tether-part",
        dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    ));
    let mut out = tokio::fs::File::create(&tmp).await.with_context(|| format!("{}", tmp.display()))?;
    let mut stream = r.bytes_stream();
    let copied = async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.context("the download was cut")?;
            out.write_all(&chunk).await?;
            pb.inc(chunk.len() as u64);
        }
        out.flush().await?;
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = copied {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let _ = std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(st.mode));
    std::fs::rename(&tmp, &dest).with_context(|| format!("{}", dest.display()))?;
    pb.finish_and_clear();
    Ok(())
}

pub(crate) async fn cat(conn: &ConnArgs, path: &str) -> Result<i32> {
    let http = Http::new(conn)?;
    let path = remote(path).unwrap_or(path);
    let r = http.send(http.req(reqwest::Method::GET, "/v1/files").query(&[("path", path)])).await?;
    let mut stream = r.bytes_stream();
    let mut out = tokio::io::stdout();
    while let Some(chunk) = stream.next().await {
        out.write_all(&chunk.context("the download was cut")?).await?;
    }
    out.flush().await?;
    Ok(0)
}

pub(crate) async fn run_code(
    conn: &ConnArgs,
    language: String,
    code: Option<String>,
    file: Option<PathBuf>,
    args: Vec<String>,
    timeout: Option<f64>,
) -> Result<i32> {
    let code = match (code, file) {
        (Some(c), None) => c,
        (None, Some(f)) if f.as_os_str() == "-" => std::io::read_to_string(std::io::stdin())?,
        (None, Some(f)) => std::fs::read_to_string(&f).with_context(|| format!("{}", f.display()))?,
        _ => bail!("give the code as an argument or with --file (- for stdin)"),
    };
    let http = Http::new(conn)?;
    let req = CodeRequest {
        language,
        code,
        args,
        options: RunOptions {
            timeout_ms: timeout.map(|s| (s * 1000.0).max(0.0) as u64),
            ..RunOptions::default()
        },
    };
    let rb = http
        .req(reqwest::Method::POST, "/v1/code")
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(&req)?);
    let r = http.send(rb).await?;
    let resp = ExecResponse::from_json(&r.bytes().await?)?;
    std::io::stdout().write_all(resp.stdout.as_bytes())?;
    std::io::stderr().write_all(resp.stderr.as_bytes())?;
    if resp.truncated {
        eprintln!("tether: output past the limit was dropped");
    }
    Ok(tether_proto::shell_code(resp.exit_code, resp.signal))
}
