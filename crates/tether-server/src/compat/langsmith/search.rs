//! The LangSmith sandbox client's search routes under `/compat/langsmith`
//! (`protocol/compat/langsmith.md` §8.5, §8.6): `POST /glob` (which `ls`
//! uses too, with `*`) and `POST /grep` (a literal string, line by line).
//!
//! Both walk the tree below `path` with [`Files::walk`]: by directory fds
//! from the files root, never through a symlink (a symlink is an entry,
//! `is_dir: false`, and grep skips it), so nothing outside `--files-root`
//! is ever reported. Results come in path order (a directory's entries by
//! name, each directory's contents right after it), so a truncated answer
//! is a prefix of the complete one when the match cap, the entry cap or
//! the deadline cut it. The walk runs on a blocking thread, at most
//! [`MAX_SEARCHES`] at a time (each holds up to one fd per level). The
//! patterns are matched by the `glob` module.
//!
//! Errors have the client's shape (`{"detail": {"error", "message"}}`):
//! a missing `path` is 404 (`ResourceNotFoundError`), outside the root 403
//! (`SandboxOperationError`, `PermissionDenied`), bad input 400 `ReadError`
//! (`SandboxOperationError`, operation `read`); never 429/502/503/504.

// The helpers' error is the finished response itself.
#![allow(clippy::result_large_err)]

use std::borrow::Cow;
use std::io::Read;
use std::path::{Component, Path};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use memchr::memmem;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Number;
use tether_files::{FileError, Files, Kind, Step, WalkEnd, WalkLimits};
use tokio::sync::Semaphore;

use super::glob::{Filter, Pattern};
use super::{detail, file_error};
use crate::AppState;
use crate::compat::rfc3339;

/// Matches returned when the request has no `limit`.
const DEFAULT_LIMIT: usize = 1000;
/// The most matches one request can ask for; larger limits are clamped.
pub(crate) const MAX_LIMIT: usize = 10_000;
/// How long one search may take (the client waits 60 s by default).
const DEADLINE: Duration = Duration::from_secs(10);
/// Most directory entries one search reads.
const MAX_ENTRIES: u64 = 200_000;
/// Deepest level a search descends to.
const MAX_DEPTH: usize = 64;
/// Longest `text` of a grep match, in bytes (longer lines are cut).
const MAX_TEXT: usize = 4096;
/// A file with a NUL byte in its first this many bytes is binary.
const BINARY_PROBE: usize = 8192;
/// Largest request body (a pattern, a path, a glob and a limit).
const MAX_BODY: usize = 64 * 1024;
/// Searches running at once; more wait for a turn (within their deadline).
const MAX_SEARCHES: usize = 4;

/// Turns for [`MAX_SEARCHES`]. Process-wide on purpose: the bound is on
/// the machine's disks and fds, whatever router the request came through.
pub(crate) static SEARCHES: Semaphore = Semaphore::const_new(MAX_SEARCHES);

/// `POST /glob`: entries below `path` whose relative path matches.
pub(crate) async fn glob(State(st): State<Arc<AppState>>, body: Body) -> Response {
    let started = Instant::now();
    let r = async {
        let req: GlobReq = parse_body(body).await?;
        let bounds = Bounds::new(req.limit.as_ref(), started)?;
        let pattern = Pattern::parse(&req.pattern).ok_or_else(|| bad("pattern must not be empty"))?;
        nonempty_path(&req.path)?;
        blocking(&st, bounds, move |files| find_glob(files, &req.path, &pattern, bounds)).await
    };
    r.await.unwrap_or_else(|e| e)
}

/// `POST /grep`: lines containing `pattern` in files below `path`.
pub(crate) async fn grep(State(st): State<Arc<AppState>>, body: Body) -> Response {
    let started = Instant::now();
    let r = async {
        let req: GrepReq = parse_body(body).await?;
        let bounds = Bounds::new(req.limit.as_ref(), started)?;
        if req.pattern.is_empty() {
            return Err(bad("pattern must not be empty"));
        }
        nonempty_path(&req.path)?;
        let filter = match &req.glob {
            None => None,
            Some(g) => Some(Filter::parse(g).ok_or_else(|| bad("glob must not be empty"))?),
        };
        blocking(&st, bounds, move |files| {
            find_grep(files, &req.path, req.pattern.as_bytes(), filter.as_ref(), bounds)
        })
        .await
    };
    r.await.unwrap_or_else(|e| e)
}

#[derive(Debug, Deserialize)]
struct GlobReq {
    /// Matched against each entry's path relative to `path`.
    pattern: String,
    /// The directory to search below.
    path: String,
    /// At most this many matches.
    #[serde(default)]
    limit: Option<Number>,
}

#[derive(Debug, Deserialize)]
struct GrepReq {
    /// The literal text to find.
    pattern: String,
    /// The directory to search below.
    path: String,
    /// Which files to search ([`Filter`]).
    #[serde(default)]
    glob: Option<String>,
    /// At most this many matching lines.
    #[serde(default)]
    limit: Option<Number>,
}

/// The client's `FileInfo`.
#[derive(Debug, Serialize)]
pub(crate) struct GlobMatch {
    /// Absolute.
    pub(crate) path: String,
    /// A directory (a symlink to one is not).
    is_dir: bool,
    /// From `lstat`.
    size_bytes: u64,
    /// RFC 3339, UTC.
    modified_at: String,
}

/// The client's `GrepMatch`.
#[derive(Debug, Serialize)]
pub(crate) struct GrepMatch {
    /// The file's absolute path.
    pub(crate) path: String,
    /// 1-based.
    pub(crate) line: u64,
    /// The line without its newline, lossy UTF-8, at most [`MAX_TEXT`]
    /// bytes.
    pub(crate) text: String,
}

/// The client's `GlobResult` and `GrepResult`.
#[derive(Debug, Serialize)]
pub(crate) struct Found<M> {
    /// In path order.
    pub(crate) matches: Vec<M>,
    /// A cap or the deadline cut the search short.
    pub(crate) truncated: bool,
}

/// What one search may do.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bounds {
    /// Most matches.
    pub(crate) limit: usize,
    /// When the search gives up.
    pub(crate) deadline: Instant,
    /// Most directory entries read.
    max_entries: u64,
}

impl Bounds {
    fn new(limit: Option<&Number>, started: Instant) -> Result<Bounds, Response> {
        Ok(Bounds::capped(parse_limit(limit)?, started))
    }

    /// At most `limit` matches, the usual deadline and entry cap.
    pub(crate) fn capped(limit: usize, started: Instant) -> Bounds {
        Bounds { limit, deadline: started + DEADLINE, max_entries: MAX_ENTRIES }
    }

    fn walk(&self) -> WalkLimits {
        WalkLimits { max_entries: self.max_entries, max_depth: MAX_DEPTH, deadline: Some(self.deadline) }
    }

    fn expired(&self) -> bool {
        Instant::now() >= self.deadline
    }
}

/// `limit`: absent is [`DEFAULT_LIMIT`]; a positive integer, clamped to
/// [`MAX_LIMIT`] (one too large for 64 bits arrives as a float).
fn parse_limit(n: Option<&Number>) -> Result<usize, Response> {
    let Some(n) = n else { return Ok(DEFAULT_LIMIT) };
    // `as` saturates: a huge integral float becomes u64::MAX.
    let v = n.as_u64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && *f >= 1.0).map(|f| f as u64));
    match v {
        Some(v) if v >= 1 => Ok(v.min(MAX_LIMIT as u64) as usize),
        _ => Err(bad(&format!("limit must be a positive integer, not {n}"))),
    }
}

fn bad(message: &str) -> Response {
    detail(400, "ReadError", message)
}

fn nonempty_path(path: &str) -> Result<(), Response> {
    if path.is_empty() { Err(bad("path must not be empty")) } else { Ok(()) }
}

async fn parse_body<T: DeserializeOwned>(body: Body) -> Result<T, Response> {
    let bytes = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|e| bad(&format!("request body unreadable or over {MAX_BODY} bytes: {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| bad(&format!("bad request body: {e}")))
}

/// Runs `search` on a blocking thread once a turn is free; a search that
/// gets no turn before its deadline answers nothing, truncated.
async fn blocking<M: Serialize + Send + 'static>(
    st: &AppState,
    bounds: Bounds,
    search: impl FnOnce(&Files) -> Result<Found<M>, FileError> + Send + 'static,
) -> Result<Response, Response> {
    let files = st.files.clone().ok_or_else(|| detail(500, "ReadError", "no usable files root"))?;
    let deadline = tokio::time::Instant::from_std(bounds.deadline);
    let Ok(Ok(permit)) = tokio::time::timeout_at(deadline, SEARCHES.acquire()).await else {
        return Ok(axum::Json(Found::<M> { matches: Vec::new(), truncated: true }).into_response());
    };
    let found = tokio::task::spawn_blocking(move || {
        let _turn = permit;
        search(&files)
    })
    .await
    .map_err(|e| detail(500, "ReadError", &e.to_string()))?
    .map_err(|e| file_error(e, "ReadError"))?;
    Ok(axum::Json(found).into_response())
}

pub(crate) fn find_glob(
    files: &Files,
    path: &str,
    pattern: &Pattern,
    b: Bounds,
) -> Result<Found<GlobMatch>, FileError> {
    let base = files.absolute(path);
    let mut matches = Vec::new();
    let mut truncated = false;
    let end = files.walk(path, b.walk(), |e| {
        let segs = segments(e.rel);
        let is_dir = e.stat.kind == Kind::Dir;
        if pattern.matches(&segs, is_dir) {
            if matches.len() == b.limit {
                truncated = true;
                return Step::Stop;
            }
            matches.push(GlobMatch {
                path: base.join(e.rel).to_string_lossy().into_owned(),
                is_dir,
                size_bytes: e.stat.size,
                modified_at: rfc3339(e.stat.mtime_ms),
            });
        }
        if is_dir && !pattern.may_match_below(&segs) { Step::Prune } else { Step::Continue }
    })?;
    truncated |= matches!(end, WalkEnd::Truncated(_));
    Ok(Found { matches, truncated })
}

pub(crate) fn find_grep(
    files: &Files,
    path: &str,
    needle: &[u8],
    filter: Option<&Filter>,
    b: Bounds,
) -> Result<Found<GrepMatch>, FileError> {
    let base = files.absolute(path);
    let finder = memmem::Finder::new(needle);
    let mut buf = vec![0u8; 64 * 1024];
    let mut matches = Vec::new();
    let mut truncated = false;
    let end = files.walk(path, b.walk(), |e| {
        let segs = segments(e.rel);
        match e.stat.kind {
            Kind::Dir if filter.is_some_and(|f| !f.may_match_below(&segs)) => return Step::Prune,
            Kind::File if filter.is_none_or(|f| f.matches(&segs)) => {}
            // Directories to descend into, files the filter leaves out,
            // symlinks and special files.
            _ => return Step::Continue,
        }
        let Ok(file) = e.open() else { return Step::Continue };
        let shown = base.join(e.rel).to_string_lossy().into_owned();
        let mut lines = LineScan::new(&finder);
        let scan = scan_file(file, &mut lines, &mut buf, b, &mut |line, text| {
            if matches.len() == b.limit {
                return false;
            }
            matches.push(GrepMatch { path: shown.clone(), line, text });
            true
        });
        match scan {
            Scan::Done => Step::Continue,
            Scan::Stopped | Scan::Expired => {
                truncated = true;
                Step::Stop
            }
        }
    })?;
    truncated |= matches!(end, WalkEnd::Truncated(_));
    Ok(Found { matches, truncated })
}

/// A relative path's names, as text (lossy) for matching.
fn segments(rel: &Path) -> Vec<Cow<'_, str>> {
    rel.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_string_lossy()),
            _ => None,
        })
        .collect()
}

/// How scanning one file ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Scan {
    /// Read to the end, or skipped (binary, unreadable).
    Done,
    /// `emit` refused a match: the cap is reached.
    Stopped,
    /// The deadline passed.
    Expired,
}

/// Feeds `file` to `lines`, unless a NUL byte in its first
/// [`BINARY_PROBE`] bytes says it is binary. A read error ends the file
/// quietly with what was found before it.
pub(crate) fn scan_file(
    mut file: impl Read,
    lines: &mut LineScan<'_>,
    buf: &mut [u8],
    b: Bounds,
    emit: &mut dyn FnMut(u64, String) -> bool,
) -> Scan {
    let head = BINARY_PROBE.min(buf.len());
    let mut probe = 0;
    let mut eof = false;
    while probe < head {
        match file.read(&mut buf[probe..head]) {
            Ok(0) => {
                eof = true;
                break;
            }
            Ok(n) => probe += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Scan::Done,
        }
    }
    if memchr::memchr(0, &buf[..probe]).is_some() {
        return Scan::Done;
    }
    let mut n = probe;
    loop {
        if !lines.feed(&buf[..n], emit) {
            return Scan::Stopped;
        }
        if eof {
            return if lines.finish(emit) { Scan::Done } else { Scan::Stopped };
        }
        if b.expired() {
            return Scan::Expired;
        }
        n = match file.read(buf) {
            Ok(0) => {
                eof = true;
                0
            }
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => 0,
            Err(_) => return Scan::Done,
        };
    }
}

/// A literal search over a stream of bytes, line by line, in bounded
/// memory whatever the line lengths: it keeps the first [`MAX_TEXT`] bytes
/// of the current line (for `text`) and its last `needle.len() - 1` bytes
/// (for a match across two reads).
pub(crate) struct LineScan<'f> {
    finder: &'f memmem::Finder<'f>,
    /// The current line's number, from 1.
    line: u64,
    /// Whether the current line has any byte yet (a last line without a
    /// newline still counts).
    started: bool,
    /// Its first bytes, up to [`MAX_TEXT`].
    text: Vec<u8>,
    /// Whether `text` lost bytes.
    cut: bool,
    /// The current line's last bytes, fewer than the needle's length.
    tail: Vec<u8>,
    /// Whether the current line holds the needle.
    found: bool,
}

impl<'f> LineScan<'f> {
    pub(crate) fn new(finder: &'f memmem::Finder<'f>) -> LineScan<'f> {
        LineScan {
            finder,
            line: 1,
            started: false,
            text: Vec::new(),
            cut: false,
            tail: Vec::new(),
            found: false,
        }
    }

    /// Scans `chunk`; `false` when `emit` refused a match.
    fn feed(&mut self, mut chunk: &[u8], emit: &mut dyn FnMut(u64, String) -> bool) -> bool {
        while let Some(i) = memchr::memchr(b'\n', chunk) {
            self.push(&chunk[..i]);
            if !self.end_line(emit) {
                return false;
            }
            chunk = &chunk[i + 1..];
        }
        self.push(chunk);
        true
    }

    /// The end of the input: a last line without a newline.
    fn finish(&mut self, emit: &mut dyn FnMut(u64, String) -> bool) -> bool {
        !self.started || self.end_line(emit)
    }

    /// A piece of the current line.
    fn push(&mut self, piece: &[u8]) {
        if piece.is_empty() {
            return;
        }
        self.started = true;
        let keep = self.finder.needle().len() - 1;
        if !self.found {
            if !self.tail.is_empty() {
                let mut joined = self.tail.clone();
                joined.extend_from_slice(&piece[..piece.len().min(keep)]);
                self.found = self.finder.find(&joined).is_some();
            }
            self.found = self.found || self.finder.find(piece).is_some();
            if keep > 0 && !self.found {
                self.tail.extend_from_slice(&piece[piece.len().saturating_sub(keep)..]);
                let extra = self.tail.len().saturating_sub(keep);
                self.tail.drain(..extra);
            }
        }
        let room = MAX_TEXT - self.text.len();
        self.text.extend_from_slice(&piece[..piece.len().min(room)]);
        self.cut |= piece.len() > room;
    }

    fn end_line(&mut self, emit: &mut dyn FnMut(u64, String) -> bool) -> bool {
        let mut go_on = true;
        if self.found {
            if self.cut {
                trim_partial_char(&mut self.text);
            } else if self.text.last() == Some(&b'\r') {
                // A CRLF line: its newline is both bytes.
                self.text.pop();
            }
            go_on = emit(self.line, String::from_utf8_lossy(&self.text).into_owned());
        }
        self.line += 1;
        self.started = false;
        self.text.clear();
        self.cut = false;
        self.tail.clear();
        self.found = false;
        go_on
    }
}

/// Drops a UTF-8 sequence that a cut left incomplete at the end (so the
/// text does not end in U+FFFD for a character that was fine).
fn trim_partial_char(text: &mut Vec<u8>) {
    let from = text.len().saturating_sub(3);
    if let Some(i) = (from..text.len()).rev().find(|&i| text[i] & 0xC0 != 0x80) {
        let want = match text[i] {
            b if b >= 0xF0 => 4,
            b if b >= 0xE0 => 3,
            b if b >= 0xC0 => 2,
            _ => 1,
        };
        if text.len() - i < want {
            text.truncate(i);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Every (line, text) found in `chunks` fed one by one.
    fn scan(needle: &str, chunks: &[&[u8]]) -> Vec<(u64, String)> {
        let finder = memmem::Finder::new(needle.as_bytes());
        let mut lines = LineScan::new(&finder);
        let mut out = Vec::new();
        let mut emit = |l: u64, t: String| {
            out.push((l, t));
            true
        };
        for c in chunks {
            assert!(lines.feed(c, &mut emit));
        }
        assert!(lines.finish(&mut emit));
        out
    }

    #[test]
    fn lines() {
        let got = scan("a.b", &[b"xa.by\nnope aXb\n\na.b"]);
        assert_eq!(got, [(1, "xa.by".into()), (4, "a.b".into())]);
        // A match across reads, at every split point.
        let text = b"one\nhello needle here\nthree needle\n";
        for cut in 0..text.len() {
            let got = scan("needle", &[&text[..cut], &text[cut..]]);
            assert_eq!(got, [(2, "hello needle here".into()), (3, "three needle".into())], "cut {cut}");
        }
        // One byte at a time.
        let bytes: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(scan("needle", &bytes).len(), 2);
        // No match across lines, and a pattern cannot span a newline.
        assert!(scan("ab", &[b"a\nb\n"]).is_empty());
        // A long line: the match far past the kept text, the text cut to
        // MAX_TEXT without a broken character.
        let long = format!("{}{}needle", "é".repeat(MAX_TEXT), "x".repeat(100_000));
        let got = scan("needle", &[long.as_bytes()]);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1, "é".repeat(MAX_TEXT / 2));
        let long = format!("a{}needle", "é".repeat(MAX_TEXT));
        assert_eq!(scan("needle", &[long.as_bytes()])[0].1, format!("a{}", "é".repeat(MAX_TEXT / 2 - 1)));
        assert!(scan("needle", &[b"needl", b"\ne"]).is_empty());
        // Invalid UTF-8 is shown lossily.
        assert_eq!(scan("x", &[b"\xffx\n"]), [(1, "\u{fffd}x".into())]);
        // CRLF lines lose both bytes of their newline, a lone CR stays.
        assert_eq!(scan("x", &[b"x\r\n\rx\rx\r", b"\n"]), [(1, "x".into()), (2, "\rx\rx".into())]);
    }

    #[test]
    fn limits() {
        let n = |s: &str| serde_json::from_str::<Number>(s).unwrap();
        assert_eq!(parse_limit(None).unwrap(), DEFAULT_LIMIT);
        assert_eq!(parse_limit(Some(&n("5"))).unwrap(), 5);
        assert_eq!(parse_limit(Some(&n("5.0"))).unwrap(), 5);
        assert_eq!(parse_limit(Some(&n("99999999"))).unwrap(), MAX_LIMIT);
        assert_eq!(parse_limit(Some(&n("1000000000000000000000000000000"))).unwrap(), MAX_LIMIT);
        for bad in ["0", "-3", "2.5", "-1e30"] {
            assert_eq!(parse_limit(Some(&n(bad))).unwrap_err().status(), 400, "{bad}");
        }
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_735_689_600_999), "2025-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(4_107_542_399_000), "2100-02-28T23:59:59Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
    }

    /// A directory removed on drop.
    struct Tmp(std::path::PathBuf);

    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn tree() -> (Tmp, Files) {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let t = Tmp(std::env::temp_dir().join(format!("tether-search-{}-{nanos}", std::process::id())));
        for (p, data) in [
            ("a/x.rs", &b"fn x() {}\n"[..]),
            ("a/y.txt", b"fn? no\nyes fn\n"),
            ("b/c/z.rs", b"// fn\n"),
            ("bin.rs", b"fn\0binary\n"),
        ] {
            let p = t.0.join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, data).unwrap();
        }
        std::os::unix::fs::symlink("a/x.rs", t.0.join("link.rs")).unwrap();
        let f = Files::new(&t.0, true).unwrap();
        (t, f)
    }

    fn bounds(limit: usize) -> Bounds {
        Bounds { limit, deadline: Instant::now() + DEADLINE, max_entries: MAX_ENTRIES }
    }

    #[test]
    fn glob_and_grep_over_a_tree() {
        let (t, f) = tree();
        let rel = |p: &str| p.strip_prefix(t.0.to_str().unwrap()).unwrap().to_owned();
        let g = find_glob(&f, "", &Pattern::parse("**/*.rs").unwrap(), bounds(100)).unwrap();
        let paths: Vec<_> = g.matches.iter().map(|m| rel(&m.path)).collect();
        assert_eq!(paths, ["/a/x.rs", "/b/c/z.rs", "/bin.rs", "/link.rs"]);
        assert!(!g.truncated);
        // The cap: a prefix, and truncated only when there was more.
        let g = find_glob(&f, "", &Pattern::parse("**/*.rs").unwrap(), bounds(2)).unwrap();
        assert_eq!((g.matches.len(), g.truncated), (2, true));
        let g = find_glob(&f, "", &Pattern::parse("**/*.rs").unwrap(), bounds(4)).unwrap();
        assert_eq!((g.matches.len(), g.truncated), (4, false));
        // The entry cap and the deadline.
        let few = Bounds { max_entries: 3, ..bounds(100) };
        assert!(find_glob(&f, "", &Pattern::parse("**").unwrap(), few).unwrap().truncated);
        let late = Bounds { deadline: Instant::now(), ..bounds(100) };
        let g = find_glob(&f, "", &Pattern::parse("**").unwrap(), late).unwrap();
        assert!(g.truncated && g.matches.is_empty());
        // grep: literal, binary and symlinked files skipped, filters.
        let found = |glob: Option<&str>, limit| {
            let filter = glob.map(|g| Filter::parse(g).unwrap());
            let g = find_grep(&f, "", b"fn", filter.as_ref(), bounds(limit)).unwrap();
            let lines = g.matches.iter().map(|m| (rel(&m.path), m.line, m.text.clone())).collect::<Vec<_>>();
            (lines, g.truncated)
        };
        let all = vec![
            ("/a/x.rs".to_owned(), 1, "fn x() {}".to_owned()),
            ("/a/y.txt".into(), 1, "fn? no".into()),
            ("/a/y.txt".into(), 2, "yes fn".into()),
            ("/b/c/z.rs".into(), 1, "// fn".into()),
        ];
        assert_eq!(found(None, 100), (all.clone(), false));
        assert_eq!(found(None, 3), (all[..3].to_vec(), true));
        assert_eq!(found(None, 4), (all.clone(), false));
        assert_eq!(found(Some("*.rs"), 100).0, [all[0].clone(), all[3].clone()]);
        assert_eq!(found(Some("b/**"), 100).0, [all[3].clone()]);
        let late = Bounds { deadline: Instant::now(), ..bounds(100) };
        assert!(find_grep(&f, "", b"fn", None, late).unwrap().truncated);
        // The start must be a directory inside the root.
        let err = |p: &str| find_glob(&f, p, &Pattern::parse("*").unwrap(), bounds(1)).unwrap_err().status();
        assert_eq!((err("a/x.rs"), err("nope"), err("..")), (400, 404, 403));
    }
}
