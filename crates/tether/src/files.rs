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
        if !conn.allow_insecure_token && !tether_client::token_may_travel(&conn.url) {
            return Err(tether_client::ClientError::InsecureToken { url: conn.url.clone() }.into());
        }
        let token = crate::run::token(conn)?;
        let mut builder = reqwest::Client::builder();
        if conn.url.starts_with("https:") {
            let tls = tether_client::client_config(conn.ca_cert.as_deref())?;
            builder = builder.tls_backend_preconfigured((*tls).clone());
        }
        let client = builder.build().context("setting up HTTP")?;
        Ok(Http { client, base: conn.url.trim_end_matches('/').to_owned(), token })
    }

    fn req(&self, method: reqwest::Method, route: &str) -> reqwest::RequestBuilder {
        self.client.request(method, format!("{}{route}", self.base)).bearer_auth(&self.token)
    }

    /// Sends a request; a non-2xx answer becomes an error with the daemon's
    /// message.
    async fn send(&self, rb: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let r = rb.send().await.context("cannot reach the daemon")?;
        self.check(r).await
    }

    /// A non-2xx answer as an error with the daemon's message.
    async fn check(&self, r: reqwest::Response) -> Result<reqwest::Response> {
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

    /// The path's stat, or `None` if it does not exist.
    async fn stat_opt(&self, path: &str) -> Result<Option<FileStat>> {
        let rb = self.req(reqwest::Method::GET, "/v1/files/stat").query(&[("path", path)]);
        let r = rb.send().await.context("cannot reach the daemon")?;
        if r.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let r = self.check(r).await?;
        Ok(Some(r.json().await?))
    }
}

/// A `:REMOTE` argument's path, or `None` for a local one.
fn remote(arg: &str) -> Option<&str> {
    arg.strip_prefix(':')
}

/// `cp` as `cp -r`, `scp -r` and `docker cp` do it, both ways:
/// - a missing destination becomes the copy (its parent must exist);
/// - an existing directory receives the source inside it;
/// - a source ending in `/.` copies a directory's contents;
/// - a directory never replaces a file, and a destination named with a
///   trailing `/` must be a directory.
pub(crate) async fn cp(conn: &ConnArgs, from: &str, to: &str) -> Result<i32> {
    let http = Http::new(conn)?;
    match (remote(from), remote(to)) {
        (None, Some(dst)) => upload(&http, from, dst).await,
        (Some(src), None) => download(&http, src, to).await,
        (Some(_), Some(_)) => bail!("both sides are remote; copy on the host with `tether exec -- cp`"),
        (None, None) => bail!("neither side is remote: write the daemon's side as :PATH"),
    }
    .map(|()| 0)
}

/// What a source names: the entry, or (`DIR/.`) a directory's contents.
fn contents_of(src: &str) -> bool {
    src == "." || src.ends_with("/.")
}

/// Where a copy goes, once the destination has been looked at.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    /// The destination is the copy (it did not exist, or is a file the
    /// source file replaces).
    Is(String),
    /// The copy goes inside the existing directory, under this name.
    Inside(String),
}

/// Decides where the copy of a source (`src_dir`: a directory; `contents`:
/// its contents) goes, given what the destination is (`None`: missing).
fn target(src_dir: bool, contents: bool, dst: &str, dst_kind: Option<&str>) -> Result<Target> {
    let trailing = dst.ends_with('/');
    Ok(match (src_dir, dst_kind) {
        (false, _) if contents => {
            bail!("not a directory (only a directory's contents can be copied with `/.`)")
        }
        (true, Some("dir")) if contents => Target::Is(dst.to_owned()),
        (_, Some("dir")) => Target::Inside(dst.to_owned()),
        (true, Some(_)) => bail!("cannot overwrite a non-directory with a directory"),
        (false, Some(_)) if trailing => bail!("not a directory"),
        (false, Some(_)) => Target::Is(dst.to_owned()),
        (false, None) if trailing => bail!("no such directory"),
        (_, None) => Target::Is(dst.trim_end_matches('/').to_owned()),
    })
}

/// The parent directory of a (remote, `/`-separated) path: `.` for a bare
/// name, `/` for a top-level one.
fn remote_parent(path: &str) -> &str {
    match path.trim_end_matches('/').rsplit_once('/') {
        Some(("", _)) => "/",
        Some((p, _)) => p,
        None => ".",
    }
}

/// The last component of a source path (`tree/` is `tree`), for a copy
/// made inside a directory.
fn source_name(src: &str, canonical: Option<&Path>) -> Result<String> {
    let trimmed = src.trim_end_matches('/');
    let name = trimmed.rsplit('/').next().unwrap_or(trimmed);
    if !name.is_empty() && name != "." && name != ".." {
        return Ok(name.to_owned());
    }
    canonical
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .with_context(|| format!("{src}: the source has no name to copy it under"))
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

async fn upload(http: &Http, from: &str, dst: &str) -> Result<()> {
    let local = Path::new(from);
    let meta = std::fs::metadata(local).with_context(|| format!("{}", local.display()))?;
    let contents = contents_of(from);
    let dst_kind = http.stat_opt(dst).await?.map(|s| s.kind);
    let to = target(meta.is_dir(), contents, dst, dst_kind.as_deref()).with_context(|| format!(":{dst}"))?;
    if matches!(to, Target::Is(_)) && dst_kind.is_none() {
        let parent = remote_parent(dst);
        if http.stat_opt(parent).await?.is_none_or(|s| s.kind != "dir") {
            bail!(":{dst}: no such directory (:{parent})");
        }
    }
    if meta.is_dir() {
        // The tree goes as a tar stream built by a blocking task: its
        // entries under the source's name when the copy goes inside a
        // directory, else at the top (the destination is the copy).
        let (dir_path, prefix) = match &to {
            Target::Inside(d) => (d.clone(), source_name(from, local.canonicalize().ok().as_deref())?),
            Target::Is(d) => (d.clone(), ".".to_owned()),
        };
        let pb = progress(None, &format!("{} -> :{dst}", local.display()));
        let (w, r) = tokio::io::duplex(256 * 1024);
        let dir = local.to_owned();
        let packer = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut b = tar::Builder::new(SyncIoBridge::new(w));
            b.follow_symlinks(false);
            b.append_dir_all(&prefix, &dir)?;
            b.into_inner()?.flush()
        });
        let pb2 = pb.clone();
        let body = ReaderStream::new(r).inspect(move |c| {
            if let Ok(c) = c {
                pb2.inc(c.len() as u64);
            }
        });
        let rb = http.req(reqwest::Method::PUT, "/v1/files/tar").query(&[("path", dir_path.as_str())]);
        let sent = http.send(rb.body(reqwest::Body::wrap_stream(body))).await;
        packer.await?.context("packing the directory")?;
        sent?;
        pb.finish_and_clear();
        return Ok(());
    }
    let dst = match to {
        Target::Is(d) => d,
        Target::Inside(d) => format!("{}/{}", d.trim_end_matches('/'), source_name(from, None)?),
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
        .query(&[("path", dst.as_str()), ("mode", mode.as_str())])
        .header(reqwest::header::CONTENT_LENGTH, meta.len());
    http.send(rb.body(reqwest::Body::wrap_stream(body))).await?;
    pb.finish_and_clear();
    Ok(())
}

/// What a local path is, in the daemon's words (`None`: missing).
fn local_kind(path: &Path) -> Result<Option<&'static str>> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(Some("dir")),
        Ok(_) => Ok(Some("file")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("{}", path.display())),
    }
}

async fn download(http: &Http, src: &str, to: &str) -> Result<()> {
    let st = http.stat(src).await.with_context(|| format!(":{src}"))?;
    let src_dir = st.kind == "dir";
    let target =
        target(src_dir, contents_of(src), to, local_kind(Path::new(to))?).with_context(|| to.to_owned())?;
    let dest = match &target {
        Target::Is(d) => PathBuf::from(d),
        Target::Inside(d) => Path::new(d).join(source_name(src, None).unwrap_or_else(|_| st.name.clone())),
    };
    if let Target::Is(d) = &target {
        let parent = Path::new(d).parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if !parent.is_dir() {
            bail!("{to}: no such directory ({})", parent.display());
        }
    }
    if src_dir {
        let pb = progress(None, &format!(":{src} -> {}", dest.display()));
        let r = http.send(http.req(reqwest::Method::GET, "/v1/files/tar").query(&[("path", src)])).await?;
        let pb2 = pb.clone();
        let stream = r.bytes_stream().map(move |c| {
            if let Ok(c) = &c {
                pb2.inc(c.len() as u64);
            }
            c.map_err(std::io::Error::other)
        });
        let reader = SyncIoBridge::new(StreamReader::new(stream));
        let top = dest.clone();
        tokio::task::spawn_blocking(move || unpack_stripped(reader, &top))
            .await?
            .with_context(|| format!("unpacking into {}", dest.display()))?;
        pb.finish_and_clear();
        return Ok(());
    }
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
        let _ = std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(st.mode));
        std::fs::rename(&tmp, &dest).with_context(|| format!("{}", dest.display()))
    }
    .await;
    if let Err(e) = copied {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    pb.finish_and_clear();
    Ok(())
}

/// Unpacks the daemon's tar of a directory (entries under the directory's
/// own name) so that the directory becomes `top`: the first component of
/// every entry name is dropped. Names must be relative without `..`, and no
/// entry is written through a symlink an earlier entry made (the checks
/// `tar`'s own `unpack_in` makes).
fn unpack_stripped(reader: impl std::io::Read, top: &Path) -> std::io::Result<()> {
    use std::path::Component;
    let bad = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    match std::fs::create_dir(top) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && top.is_dir() => {}
        Err(e) => return Err(e),
    }
    let mut a = tar::Archive::new(reader);
    a.set_preserve_permissions(true);
    let mut top_mode = None;
    for entry in a.entries()? {
        let mut entry = entry?;
        let name = entry.path()?.into_owned();
        let mut parts = name.components().filter(|c| !matches!(c, Component::CurDir));
        let _own_name = parts.next();
        let mut rel = PathBuf::new();
        for c in parts {
            match c {
                Component::Normal(n) => rel.push(n),
                _ => {
                    return Err(bad(format!(
                        "{}: entry names must be relative, without `..`",
                        name.display()
                    )));
                }
            }
        }
        if rel.as_os_str().is_empty() {
            // The directory itself: its mode, once its entries are in.
            top_mode = entry.header().mode().ok();
            continue;
        }
        // Every directory between `top` and the entry must be a real
        // directory, not a symlink.
        let mut at = top.to_path_buf();
        if let Some(parent) = rel.parent() {
            for c in parent.components() {
                at.push(c);
                match std::fs::symlink_metadata(&at) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => return Err(bad(format!("{}: not a directory on the way", at.display()))),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir(&at)?,
                    Err(e) => return Err(e),
                }
            }
        }
        entry.unpack(top.join(&rel))?;
    }
    if let Some(mode) = top_mode {
        std::fs::set_permissions(top, std::os::unix::fs::PermissionsExt::from_mode(mode & 0o7777))?;
    }
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
