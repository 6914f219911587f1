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

use std::collections::BTreeMap;
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
/// Version 2 added the named shells.
const VERSION: u32 = 2;

/// The oldest version this daemon still reads (what it lacks is empty).
const OLDEST_READ: u32 = 1;

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
        Handover { commands, shells, fds, named: BTreeMap::new() }
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
    /// names to survive `exec`. Returns the memfd: pass its number to the
    /// next process (see [`Handover::inherit`]) and keep both it and `self`
    /// alive until the exec.
    pub fn prepare_exec(&self) -> io::Result<OwnedFd> {
        let t = std::time::Instant::now();
        let wire = WireRef {
            version: VERSION,
            commands: &self.commands,
            shells: &self.shells,
            fds: self.fds.keys().copied().collect(),
            named: &self.named,
        };
        // Layout: the encoded state's length (u64, little endian), the
        // state, then every ring's bytes, raw, in the state's order.
        let header = rmp_serde::to_vec_named(&wire).map_err(io::Error::other)?;
        let mut file = std::fs::File::from(sys::memfd(c"tether-handover")?);
        {
            let mut w = io::BufWriter::with_capacity(1 << 20, &mut file);
            w.write_all(&(header.len() as u64).to_le_bytes())?;
            w.write_all(&header)?;
            for ring in self.commands.iter().flat_map(|c| &c.rings) {
                for chunk in &ring.data {
                    w.write_all(chunk)?;
                }
            }
            w.flush()?;
        }
        let bytes = file.stream_position()?;
        file.rewind()?;
        for fd in self.fds.values() {
            sys::keep_on_exec(fd.as_fd())?;
        }
        let fd = OwnedFd::from(file);
        sys::keep_on_exec(fd.as_fd())?;
        tracing::info!(bytes, ms = t.elapsed().as_millis() as u64, "handover state written");
        Ok(fd)
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
        let memfd = match self.prepare_exec() {
            Ok(fd) => fd,
            Err(e) => return e,
        };
        cmd.env(env, memfd.as_raw_fd().to_string());
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
        drop(memfd);
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
        let mut blob = bytes.split_off(header_end);
        drop(bytes);
        for ring in wire.commands.iter_mut().flat_map(|c| &mut c.rings) {
            for &(_, _, n) in &ring.chunks {
                let n = usize::try_from(n)
                    .ok()
                    .filter(|&n| n <= blob.len())
                    .ok_or_else(|| bad("ring bytes missing"))?;
                ring.data.push(blob.split_to(n));
            }
        }
        let mut fds = BTreeMap::new();
        for raw in wire.fds {
            fds.insert(raw, sys::take_inherited_fd(raw)?);
        }
        Ok(Handover { commands: wire.commands, shells: wire.shells, fds, named: wire.named })
    }

    /// Takes the fd numbered `raw`, if the state has it.
    pub(crate) fn fd(&mut self, raw: Option<RawFd>) -> Option<OwnedFd> {
        self.fds.remove(&raw?)
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
