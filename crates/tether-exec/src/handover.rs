//! Handing commands to a re-executed daemon (a graceful restart or an
//! in-place upgrade).
//!
//! `execve` keeps the process id, so the commands' processes stay this
//! process's children and keep writing into the same pipes; what must cross
//! the exec is each command's state and its fds. [`Manager::handover`]
//! stops every actor and collects a [`Frozen`] record of each (metadata,
//! both rings byte for byte, the exit or the live deadlines as durations
//! left, stdin bytes accepted but not yet written) plus the fds it owned
//! (stdout and stderr pipes, the stdin pipe, a terminal's master). The
//! daemon writes [`Handover::encode`] into a memfd, clears close-on-exec on
//! [`Handover::fds`] and execs itself; the new process reads the memfd back
//! with [`Handover::inherit`] and rebuilds every actor with
//! [`Manager::resume`]. If exec fails, the same `Handover` resumes in the old
//! process. Offsets are preserved exactly, so a client re-attaches at the
//! byte it last saw.
//!
//! Named shells are handed over when idle (`shell::freeze`: the record and
//! the three pipes to bash); a shell running or queueing a command is closed
//! first, its commands ending as `shell_closed`. Not handed over:
//! subscriptions (every connection is closed first, and
//! clients re-attach), pacing (it ends with the connections), a terminal's
//! screen model (rebuilt from the ring, so exact only while the ring still
//! holds the terminal's whole output since its last full redraw).
//!
//! [`Manager::handover`]: crate::Manager::handover
//! [`Manager::resume`]: crate::Manager::resume

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Seek, Write};

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::command::{ExitInfo, Identity, Lifetimes, LiveState};
use crate::shell::FrozenShell;
use crate::spec::TermSize;
use crate::sys;

/// Format version of the encoded state; a daemon refuses another, except
/// [`OLDEST_READ`] and later (an upgrade from a daemon that wrote it).
/// Version 2 added the named shells; version 3 the ring bytes' parts (in
/// memfds of their own, written in parallel or ahead) and each chunk's
/// place in them.
pub const VERSION: u32 = 3;

/// The oldest version this daemon still reads (what it lacks is empty).
pub const OLDEST_READ: u32 = 1;

/// Ring bytes past which they are written by more than one thread, into a
/// memfd each (below it, one thread is as fast).
const PARALLEL_FROM: u64 = 8 << 20;

/// Most threads (and memfds) the ring bytes are written by.
const MAX_PARTS: usize = 4;

/// Most buffers per `writev` (Linux's `IOV_MAX`).
const IOV_MAX: usize = 1024;

/// Everything one daemon hands to the next: commands, their fds, and named
/// fds of the caller's own (a listening socket).
pub struct Handover {
    pub(crate) commands: Vec<Frozen>,
    /// Idle named shells (`crate::shell::FrozenShell`).
    pub(crate) shells: Vec<FrozenShell>,
    /// Every fd the state names, by number.
    pub(crate) fds: BTreeMap<RawFd, OwnedFd>,
    /// The caller's fds, by name.
    named: BTreeMap<String, RawFd>,
    /// Ring bytes written ahead, while the daemon still served.
    precopy: Option<Box<Precopy>>,
}

impl std::fmt::Debug for Handover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handover")
            .field("commands", &self.commands.len())
            .field("fds", &self.fds.len())
            .finish()
    }
}

/// The encoded form, as written (borrowing the state).
#[derive(Serialize)]
struct WireRef<'a> {
    version: u32,
    commands: &'a [Frozen],
    shells: &'a [FrozenShell],
    fds: Vec<RawFd>,
    named: &'a BTreeMap<String, RawFd>,
    /// The memfds holding ring bytes besides the state's own (whose ring
    /// bytes follow the state): part 1, 2, ...
    parts: Vec<RawFd>,
    /// Where each chunk's bytes are, in the state's order: its part (0:
    /// after the state) and the position in it.
    places: Vec<(u32, u64)>,
}

/// The encoded form, as read.
#[derive(Deserialize)]
struct Wire {
    commands: Vec<Frozen>,
    /// Missing from a state written before shells were handed over.
    #[serde(default)]
    shells: Vec<FrozenShell>,
    fds: Vec<RawFd>,
    named: BTreeMap<String, RawFd>,
    /// Missing from a state written before version 3: every ring byte
    /// follows the state, in order.
    #[serde(default)]
    parts: Vec<RawFd>,
    #[serde(default)]
    places: Vec<(u32, u64)>,
}

impl Wire {
    /// Decodes an encoded state, reading its version first: a state of
    /// another version is refused as such, whatever the rest holds.
    fn decode(header: &[u8]) -> io::Result<Wire> {
        /// Just the version (the other fields are skipped).
        #[derive(Deserialize)]
        struct Version {
            version: u32,
        }
        let invalid = |e: rmp_serde::decode::Error| io::Error::new(io::ErrorKind::InvalidData, e);
        let Version { version } = rmp_serde::from_slice(header).map_err(invalid)?;
        if !(OLDEST_READ..=VERSION).contains(&version) {
            let e = format!("handover state version {version} (this daemon reads {VERSION})");
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
        rmp_serde::from_slice(header).map_err(invalid)
    }
}

impl Handover {
    pub(crate) fn new(commands: Vec<Frozen>, shells: Vec<FrozenShell>, fds: Vec<OwnedFd>) -> Handover {
        let fds = fds.into_iter().map(|fd| (fd.as_raw_fd(), fd)).collect();
        Handover { commands, shells, fds, named: BTreeMap::new(), precopy: None }
    }

    /// How many commands it carries.
    pub fn len(&self) -> usize {
        self.commands.len()
    }

    /// True when it carries no command.
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// Adds an fd of the caller's own under a name (e.g. the listener).
    pub fn add_fd(&mut self, name: &str, fd: OwnedFd) {
        self.named.insert(name.to_owned(), fd.as_raw_fd());
        self.fds.insert(fd.as_raw_fd(), fd);
    }

    /// Takes back a named fd.
    pub fn take_fd(&mut self, name: &str) -> Option<OwnedFd> {
        let raw = self.named.remove(name)?;
        self.fds.remove(&raw)
    }

    /// Writes the state into a new memfd and marks it and every fd it
    /// names to survive `exec`. Returns the memfds: pass the first one's
    /// number to the next process (see [`Handover::inherit`]) and keep them
    /// and `self` alive until the exec.
    ///
    /// Ring bytes (a quarter of a gigabyte with a thousand full rings) are
    /// most of the time a restart takes. They are written straight from the
    /// rings (`writev`, no copy into a buffer first) and, past
    /// [`PARALLEL_FROM`], split at chunk boundaries into one part per core,
    /// each written by a thread of its own into a memfd of its own (writes
    /// to one file take its lock in turn: two threads writing one memfd are
    /// no faster than one).
    pub fn prepare_exec(&self) -> io::Result<Vec<OwnedFd>> {
        self.write_state(parts_for)
    }

    /// Every ring's chunks, in the state's order.
    fn ring_chunks(&self) -> impl Iterator<Item = &Bytes> {
        self.commands.iter().flat_map(|c| &c.rings).flat_map(|r| &r.data)
    }

    /// Takes the ring bytes [`Precopy::write`] wrote ahead: only chunks
    /// written since are written with the state.
    pub(crate) fn use_precopy(&mut self, p: Precopy) {
        self.precopy = Some(Box::new(p));
    }

    /// [`Handover::prepare_exec`], the ring bytes not written ahead in at
    /// most `parts(their total)` parts.
    fn write_state(&self, parts: impl FnOnce(u64) -> usize) -> io::Result<Vec<OwnedFd>> {
        let t = std::time::Instant::now();
        let chunks: Vec<&Bytes> = self.ring_chunks().collect();
        let ahead = |c: &Bytes| self.precopy.as_ref().and_then(|p| p.place(c));
        let rest: Vec<&Bytes> = chunks.iter().copied().filter(|c| ahead(c).is_none()).collect();
        let total: u64 = rest.iter().map(|c| c.len() as u64).sum();
        let split = split_evenly(&rest, parts(total));
        let mut files = vec![std::fs::File::from(sys::memfd(c"tether-handover")?)];
        for _ in 1..split.len() {
            files.push(std::fs::File::from(sys::memfd(c"tether-handover-rings")?));
        }
        // The parts written ahead follow (duplicates: the originals stay
        // close-on-exec, in case the exec fails).
        let fresh = files.len() as u32;
        for f in self.precopy.iter().flat_map(|p| &p.files) {
            files.push(f.try_clone()?);
        }
        let here = places_of(&split);
        let places = chunks
            .iter()
            .map(|c| match ahead(c) {
                Some((part, at)) => (fresh + part, at),
                None => here.get(&key(c)).copied().unwrap_or_default(),
            })
            .collect();
        let wire = WireRef {
            version: VERSION,
            commands: &self.commands,
            shells: &self.shells,
            fds: self.fds.keys().copied().collect(),
            named: &self.named,
            parts: files[1..].iter().map(AsRawFd::as_raw_fd).collect(),
            places,
        };
        // Layout: the encoded state's length (u64, little endian), the
        // state, then part 0 of the rings' bytes, raw; the other parts
        // each in a memfd of their own.
        let header = rmp_serde::to_vec_named(&wire).map_err(io::Error::other)?;
        (&files[0]).write_all(&(header.len() as u64).to_le_bytes())?;
        (&files[0]).write_all(&header)?;
        write_parts(&files[..split.len()], &split)?;
        let bytes = 8 + header.len() as u64 + total;
        let mut fds = Vec::with_capacity(files.len());
        for mut file in files {
            file.rewind()?;
            let fd = OwnedFd::from(file);
            sys::keep_on_exec(fd.as_fd())?;
            fds.push(fd);
        }
        for fd in self.fds.values() {
            sys::keep_on_exec(fd.as_fd())?;
        }
        tracing::info!(
            bytes,
            parts = fds.len(),
            written_ahead = self.precopy.as_ref().map_or(0, |p| p.bytes),
            ms = t.elapsed().as_millis() as u64,
            "handover state written"
        );
        Ok(fds)
    }

    /// Replaces this process with `cmd` (normally the daemon's own binary
    /// and arguments), handing it this state: the memfd's number goes in
    /// the environment variable `env`, and `ignore` are signals ignored
    /// across the exec so that one arriving before the next daemon has
    /// installed its handlers cannot kill it. Signals this process was
    /// started with ignored (and catches only so that its children start
    /// with defaults) are ignored across the exec too: the next daemon
    /// starts as this one did. Returns only if the exec failed; the state
    /// is then intact (resume it in this process).
    pub fn exec(&self, mut cmd: std::process::Command, env: &str, ignore: &[i32]) -> io::Error {
        use std::os::unix::process::CommandExt;
        let memfds = match self.prepare_exec() {
            Ok(fds) => fds,
            Err(e) => return e,
        };
        cmd.env(env, memfds[0].as_raw_fd().to_string());
        // Not SIGCHLD: ignored, the kernel would reap a command that ends
        // before the next daemon catches it again, and its exit be lost.
        let inherited = sys::catch_inherited_ignores().iter().filter(|&&s| s != libc::SIGCHLD);
        let ignore: Vec<i32> = ignore.iter().chain(inherited).copied().collect();
        let old = sys::ignore_signals(&ignore);
        let e = cmd.exec();
        sys::restore_signals(old);
        // Still ours: children started from here on must not inherit them.
        for fd in self.fds.values() {
            sys::close_on_exec(fd.as_fd());
        }
        drop(memfds);
        e
    }

    /// In the new process: reads the state from the memfd numbered `raw`
    /// and takes ownership of every fd it names (marking each close-on-exec
    /// again). Call it before anything else opens files.
    pub fn inherit(raw: RawFd) -> io::Result<Handover> {
        let file = std::fs::File::from(sys::take_inherited_fd(raw)?);
        // Mapped, not read: the rings' bytes stay where the previous daemon
        // wrote them (the memfd's pages), as slices of one `Bytes`.
        let mut bytes = Bytes::from_owner(sys::Mapped::new(&file)?);
        drop(file);
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("handover state: {what}"));
        if bytes.len() < 8 {
            return Err(bad("truncated"));
        }
        let header_len = u64::from_le_bytes(bytes[..8].try_into().map_err(|_| bad("truncated"))?);
        let header_end =
            usize::try_from(header_len).ok().and_then(|n| n.checked_add(8)).filter(|&e| e <= bytes.len());
        let header_end = header_end.ok_or_else(|| bad("header past the end"))?;
        let mut wire = Wire::decode(&bytes[8..header_end])?;
        // The rings' bytes: slices of the mapping, no copies (the new
        // daemon serves at once; `Manager::resume` then gives each ring its
        // own copy in the background, so that the mapping goes and each
        // ring's memory leaves with its command).
        let first = bytes.split_off(header_end);
        drop(bytes);
        let mut blobs = vec![first];
        for &raw in &wire.parts {
            let file = std::fs::File::from(sys::take_inherited_fd(raw)?);
            blobs.push(Bytes::from_owner(sys::Mapped::new(&file)?));
        }
        if wire.places.is_empty() {
            // Before version 3: the chunks in order, each whole in one part.
            let mut blobs = blobs.into_iter();
            let mut blob = blobs.next().unwrap_or_default();
            for ring in wire.commands.iter_mut().flat_map(|c| &mut c.rings) {
                for &(_, _, n) in &ring.chunks {
                    let n = usize::try_from(n).map_err(|_| bad("ring bytes missing"))?;
                    while blob.is_empty() && n > 0 {
                        blob = blobs.next().ok_or_else(|| bad("ring bytes missing"))?;
                    }
                    if n > blob.len() {
                        return Err(bad("ring bytes missing"));
                    }
                    ring.data.push(blob.split_to(n));
                }
            }
        } else {
            let mut places = wire.places.iter();
            for ring in wire.commands.iter_mut().flat_map(|c| &mut c.rings) {
                for &(_, _, n) in &ring.chunks {
                    let &(part, at) = places.next().ok_or_else(|| bad("a chunk without a place"))?;
                    let blob = blobs.get(part as usize).ok_or_else(|| bad("a chunk in a part missing"))?;
                    let span = usize::try_from(at)
                        .ok()
                        .zip(usize::try_from(n).ok())
                        .and_then(|(at, n)| Some(at..at.checked_add(n)?))
                        .filter(|r| r.end <= blob.len())
                        .ok_or_else(|| bad("ring bytes missing"))?;
                    ring.data.push(blob.slice(span));
                }
            }
        }
        let mut fds = BTreeMap::new();
        for raw in wire.fds {
            fds.insert(raw, sys::take_inherited_fd(raw)?);
        }
        Ok(Handover { commands: wire.commands, shells: wire.shells, fds, named: wire.named, precopy: None })
    }

    /// Takes the fd numbered `raw`, if the state has it.
    pub(crate) fn fd(&mut self, raw: Option<RawFd>) -> Option<OwnedFd> {
        self.fds.remove(&raw?)
    }
}

/// A chunk as the bytes written ahead know it: its buffer's address and
/// length. Held chunks never change, and while [`Precopy`] holds a chunk
/// no other can take its address.
fn key(c: &Bytes) -> (usize, usize) {
    (c.as_ptr() as usize, c.len())
}

/// Where each chunk of `split` goes when part `k` is written in order:
/// `(k, position)`, by the chunk's [`key`].
fn places_of(split: &[&[&Bytes]]) -> HashMap<(usize, usize), (u32, u64)> {
    let mut places = HashMap::with_capacity(split.iter().map(|p| p.len()).sum());
    for (k, part) in split.iter().enumerate() {
        let mut at = 0u64;
        for c in part.iter() {
            places.insert(key(c), (k as u32, at));
            at += c.len() as u64;
        }
    }
    places
}

/// How many parts `total` ring bytes are written in.
fn parts_for(total: u64) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if total >= PARALLEL_FROM { cores.clamp(1, MAX_PARTS) } else { 1 }
}

/// Writes `split[k]` to `files[k]`, each part by a thread of its own.
fn write_parts(files: &[std::fs::File], split: &[&[&Bytes]]) -> io::Result<()> {
    std::thread::scope(|s| {
        let others: Vec<_> = files[1..]
            .iter()
            .zip(&split[1..])
            .map(|(f, part)| s.spawn(move || write_chunks(f, part)))
            .collect();
        let first = write_chunks(&files[0], split[0]);
        others
            .into_iter()
            .try_for_each(|h| h.join().unwrap_or_else(|_| Err(io::Error::other("writer panicked"))))?;
        first
    })
}

/// Ring bytes written ahead of a handover, while the daemon still serves,
/// so that the stop only writes what came since: one memfd per part.
pub(crate) struct Precopy {
    files: Vec<std::fs::File>,
    /// Each part's bytes, mapped: rings take their chunks from here
    /// ([`Precopy::mapped`]), so that their own copies are freed before the
    /// exec rather than by it.
    maps: Vec<Bytes>,
    /// Where each chunk written is: its part (of `files`) and position.
    placed: HashMap<(usize, usize), (u32, u64)>,
    /// The chunks written, held until the rings take the mapped ones: an
    /// address names the same bytes meanwhile.
    held: Vec<Bytes>,
    bytes: u64,
}

impl Precopy {
    /// Writes `chunks` (each ring's, as they are now).
    pub(crate) fn write(chunks: Vec<Bytes>) -> io::Result<Precopy> {
        let t = std::time::Instant::now();
        let refs: Vec<&Bytes> = chunks.iter().collect();
        let bytes: u64 = refs.iter().map(|c| c.len() as u64).sum();
        let split = split_evenly(&refs, parts_for(bytes));
        let mut files = Vec::with_capacity(split.len());
        for _ in 0..split.len() {
            files.push(std::fs::File::from(sys::memfd(c"tether-handover-rings")?));
        }
        write_parts(&files, &split)?;
        let placed = places_of(&split);
        let maps =
            files.iter().map(|f| Ok(Bytes::from_owner(sys::Mapped::new(f)?))).collect::<io::Result<_>>()?;
        tracing::info!(
            bytes,
            parts = files.len(),
            ms = t.elapsed().as_millis() as u64,
            "ring bytes written ahead"
        );
        Ok(Precopy { files, maps, placed, held: chunks, bytes })
    }

    /// The written copy of `c`, if it was written: the same bytes, in the
    /// memfd's pages.
    pub(crate) fn mapped(&self, c: &Bytes) -> Option<Bytes> {
        let &(part, at) = self.placed.get(&key(c))?;
        let at = usize::try_from(at).ok()?;
        let map = self.maps.get(part as usize)?;
        (at + c.len() <= map.len()).then(|| map.slice(at..at + c.len()))
    }

    /// Lets go of the chunks as they were when written (once the rings
    /// hold their mapped copies).
    pub(crate) fn release_held(&mut self) {
        self.held = Vec::new();
    }

    /// Where `c`'s bytes were written: its part and position. A chunk
    /// written, or taken from the mapping ([`Precopy::mapped`]).
    fn place(&self, c: &Bytes) -> Option<(u32, u64)> {
        if let Some(&p) = self.placed.get(&key(c)) {
            return Some(p);
        }
        let addr = c.as_ptr() as usize;
        self.maps.iter().enumerate().find_map(|(k, m)| {
            let base = m.as_ptr() as usize;
            (!m.is_empty() && addr >= base && addr + c.len() <= base + m.len())
                .then(|| (k as u32, (addr - base) as u64))
        })
    }
}

/// `chunks` cut into at most `n` runs of consecutive chunks with about as
/// many bytes each (never an empty run but the only one).
fn split_evenly<'a>(chunks: &'a [&'a Bytes], n: usize) -> Vec<&'a [&'a Bytes]> {
    let total: u64 = chunks.iter().map(|c| c.len() as u64).sum();
    let mut parts = Vec::with_capacity(n);
    let (mut start, mut sum) = (0, 0u64);
    for (i, c) in chunks.iter().enumerate() {
        sum += c.len() as u64;
        // The end of part k is the first chunk boundary at or past k/n of
        // the bytes.
        let k = parts.len() as u64 + 1;
        if k < n as u64 && sum * n as u64 >= total * k {
            parts.push(&chunks[start..=i]);
            start = i + 1;
        }
    }
    if start < chunks.len() || parts.is_empty() {
        parts.push(&chunks[start..]);
    }
    parts
}

/// Writes `chunks`, in order, to `file`: up to [`IOV_MAX`] of them per
/// `writev`, straight from their buffers.
fn write_chunks(mut file: &std::fs::File, chunks: &[&Bytes]) -> io::Result<()> {
    let (mut i, mut done) = (0, 0);
    loop {
        while i < chunks.len() && done == chunks[i].len() {
            (i, done) = (i + 1, 0);
        }
        if i == chunks.len() {
            return Ok(());
        }
        let batch: Vec<io::IoSlice<'_>> = chunks[i..]
            .iter()
            .take(IOV_MAX)
            .enumerate()
            .map(|(k, c)| io::IoSlice::new(if k == 0 { &c[done..] } else { c }))
            .collect();
        let mut n = match file.write_vectored(&batch) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        while n > 0 {
            let left = chunks[i].len() - done;
            if n < left {
                done += n;
                break;
            }
            n -= left;
            (i, done) = (i + 1, 0);
        }
    }
}

/// One command, stopped.
#[derive(Serialize, Deserialize)]
pub(crate) struct Frozen {
    /// Flattened: its fields are this struct's first ones in the encoded
    /// form.
    #[serde(flatten)]
    pub(crate) ident: Identity,
    pub(crate) rings: [FrozenRing; 2],
    pub(crate) seq: u64,
    /// A terminal's size and how many times it was set.
    pub(crate) size: Option<(TermSize, u64)>,
    pub(crate) ever_attached: bool,
    pub(crate) life: Lifetimes,
    pub(crate) phase: Phase,
}

/// A ring's held bytes.
#[derive(Serialize, Deserialize)]
pub(crate) struct FrozenRing {
    pub(crate) cap: usize,
    pub(crate) end: u64,
    /// `(offset, seq, length)` of each chunk, in order.
    pub(crate) chunks: Vec<(u64, u64, u64)>,
    /// The chunks' bytes (shared, not copied). Not in the encoded state:
    /// they follow it raw in the memfd, in order, and come back as slices
    /// of one buffer.
    #[serde(skip)]
    pub(crate) data: Vec<Bytes>,
}

/// Where a command was in its life.
#[derive(Serialize, Deserialize)]
pub(crate) enum Phase {
    /// Running, or ended with output still draining.
    Live(Box<Live>),
    /// Finished; attachable until its TTL runs out (`None`: forever).
    Held { exit: ExitInfo, ttl_left: Option<Duration> },
}

/// A running command's state: the actor's [`LiveState`] (deadlines are
/// encoded as the time left) and what it owned.
#[derive(Serialize, Deserialize)]
pub(crate) struct Live {
    /// Flattened: its fields are this struct's in the encoded form (as they
    /// were in version 1, before `LiveState` existed).
    #[serde(flatten)]
    pub(crate) state: LiveState,
    /// The shell's working directory at the end (a shell command).
    pub(crate) cwd: Option<String>,
    /// Output fds still open, stdout then stderr (pipes).
    pub(crate) outputs: [Option<RawFd>; 2],
    /// A terminal's master.
    pub(crate) master: Option<RawFd>,
    pub(crate) stdin: FrozenStdin,
    /// Lingering pacers (their clients were away at the restart, or were
    /// disconnected by it): next offsets and time left.
    pub(crate) lingering: Vec<([u64; 2], Duration)>,
}

/// A command's stdin.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct FrozenStdin {
    /// The pipe's writing end (`None`: closed, or a terminal's master).
    pub(crate) fd: Option<RawFd>,
    /// Whether stdin is still open to clients.
    pub(crate) open: bool,
    /// Accepted bytes not yet written.
    pub(crate) pending: serde_bytes::ByteBuf,
    /// Close after writing `pending`.
    pub(crate) close: bool,
    /// Resumable stdin: what each numbered writer has given.
    #[serde(default)]
    pub(crate) writers: Vec<(String, crate::stdin::WriterPos)>,
}

#[cfg(test)]
mod tests;
