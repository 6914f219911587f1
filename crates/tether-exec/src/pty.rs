//! Pseudo-terminals: opening one and starting a session on it, the
//! non-blocking master the actor reads and writes, and the terminal model
//! that renders the current screen for a viewer that (re)attaches.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::pin::Pin;
use std::process::Command;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use portable_pty::{PtySize, native_pty_system};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncWrite, Interest};

use crate::ExecError;
use crate::spec::{PtyOptions, TermSize};
use crate::sys::{self, Process};

/// `TERM` when the start does not name one.
const DEFAULT_TERM: &str = "xterm-256color";

/// The master side of a command's terminal, owned by its actor.
pub(crate) struct Pty {
    /// The master fd, for resizing and asking for the foreground process
    /// group and the termios settings. Our own (not portable-pty's), so a
    /// terminal handed over by a previous daemon (`handover`) is the same.
    master: OwnedFd,
    /// A non-blocking duplicate of the master fd registered with the
    /// runtime: the actor reads output from it and the stdin writer writes
    /// input to it.
    pub(crate) io: Arc<AsyncFd<File>>,
}

impl Pty {
    /// Takes over a master fd: registers a non-blocking duplicate.
    pub(crate) fn from_master(master: OwnedFd) -> io::Result<Pty> {
        let io = sys::register_file(File::from(sys::dup_nonblocking(master.as_fd())?))?;
        Ok(Pty { master, io: Arc::new(io) })
    }

    /// Gives the master fd back (for a handover).
    pub(crate) fn into_master(self) -> OwnedFd {
        self.master
    }

    /// Sets the window size; the kernel sends SIGWINCH to the foreground
    /// process group.
    pub(crate) fn resize(&self, size: TermSize) -> Result<(), ExecError> {
        sys::set_winsize(self.master.as_fd(), size.rows, size.cols)
            .map_err(|source| ExecError::Io { context: "resizing the terminal", source })
    }

    /// The terminal's foreground process group, if it has one.
    pub(crate) fn foreground_group(&self) -> Option<u32> {
        sys::foreground_group(self.master.as_fd())
    }

    /// The end-of-file character (VEOF), normally Ctrl-D.
    pub(crate) fn eof_char(&self) -> u8 {
        sys::veof(self.master.as_fd()).unwrap_or(4).max(1)
    }
}

/// Opens a terminal of `opts.size` and spawns `cmd` on it as the leader of a
/// new session with the terminal as its controlling terminal, in `cgroup`
/// if given (`sys::spawn_on_terminal`, which never forks the daemon). `cmd`
/// has its program, arguments, environment (cleared first if `env_clear`)
/// and cwd set.
pub(crate) fn spawn(
    mut cmd: Command,
    env_clear: bool,
    cgroup: Option<sys::CgroupPaths>,
    program: &str,
    opts: &PtyOptions,
) -> Result<(u32, Pty), ExecError> {
    let pair = native_pty_system()
        .openpty(pty_size(opts.size))
        .map_err(|e| ExecError::Io { context: "openpty", source: other(e) })?;
    let path = pair.master.tty_name().ok_or_else(|| ExecError::Io {
        context: "naming the terminal",
        source: io::Error::other("no tty name"),
    })?;
    // Our own handle on the slave (close-on-exec, not our controlling
    // terminal); portable-pty's slave handle is not needed.
    let slave = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(&path)
        .map_err(|source| ExecError::Io { context: "opening the terminal", source })?;
    drop(pair.slave);
    cmd.env("TERM", opts.term.as_deref().unwrap_or(DEFAULT_TERM));
    let spawn_err = |source| ExecError::Spawn { program: program.to_owned(), source };
    let plan = sys::Plan::of(&cmd, env_clear, cgroup).map_err(spawn_err)?;
    let pid = sys::spawn_on_terminal(&plan, &OwnedFd::from(slave)).map_err(spawn_err)?;
    // The slave was dropped above: the master reads EIO once the last
    // process using it has gone. The child is reaped through its pidfd by
    // the actor.
    let leader = Process::open(pid);
    // Our own copy of the master; portable-pty's is closed with `pair`.
    let pty = pair
        .master
        .as_raw_fd()
        .ok_or_else(|| io::Error::other("master has no fd"))
        .and_then(sys::dup_fd)
        .and_then(Pty::from_master);
    match pty {
        Ok(pty) => Ok((leader.pid(), pty)),
        Err(source) => {
            let _ = leader.signal_group(libc::SIGKILL);
            let _ = sys::wait_blocking(leader.pid());
            Err(ExecError::Io { context: "registering the terminal", source })
        }
    }
}

/// portable-pty reports errors as `anyhow::Error`; keep their text.
fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

fn pty_size(size: TermSize) -> PtySize {
    PtySize { rows: size.rows, cols: size.cols, pixel_width: 0, pixel_height: 0 }
}

/// Reads what the master has, without blocking: `Ok(0)` is the end of the
/// terminal's output (the kernel reports EIO once no process holds the
/// slave), `WouldBlock` means nothing is there yet (and clears readiness).
pub(crate) fn try_read(io: &AsyncFd<File>, buf: &mut [u8]) -> io::Result<usize> {
    match io.try_io(Interest::READABLE, |mut f| f.read(buf)) {
        Err(e) if e.raw_os_error() == Some(libc::EIO) => Ok(0),
        r => r,
    }
}

/// The writing side of the master, for the stdin writer.
pub(crate) struct PtyWriter(pub(crate) Arc<AsyncFd<File>>);

impl AsyncWrite for PtyWriter {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.0.poll_write_ready(cx))?;
            match guard.try_io(|f| f.get_ref().write(buf)) {
                Ok(r) => return Poll::Ready(r),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A terminal emulator fed with everything the command writes, so that the
/// current screen can be rendered for a viewer at any time.
pub(crate) struct Term {
    parser: vt100::Parser,
}

impl Term {
    pub(crate) fn new(size: TermSize) -> Term {
        // No scrollback: a restored screen is the visible lines.
        Term { parser: vt100::Parser::new(size.rows, size.cols, 0) }
    }

    pub(crate) fn feed(&mut self, bytes: &[u8]) {
        self.parser.process(bytes);
    }

    pub(crate) fn resize(&mut self, size: TermSize) {
        self.parser.screen_mut().set_size(size.rows, size.cols);
    }

    pub(crate) fn size(&self) -> TermSize {
        let (rows, cols) = self.parser.screen().size();
        TermSize { rows, cols }
    }

    /// Bytes that, written to a reset terminal of this size, reproduce the
    /// screen: contents with attributes, cursor position and visibility,
    /// input modes. A program in the alternate screen (vim, less) is drawn
    /// over the normal screen as it is underneath, so that when the program
    /// quits the viewer sees the shell's screen as it was.
    pub(crate) fn render(&self) -> Vec<u8> {
        let screen = self.parser.screen();
        let mut out = Vec::new();
        if screen.alternate_screen() {
            // The model keeps both grids but shows only the active one:
            // a copy of it, switched back, shows the normal one (with the
            // cursor saved when the program entered the alternate screen).
            let mut normal = vt100::Parser::new(1, 1, 0);
            *normal.screen_mut() = screen.clone();
            normal.process(b"\x1b[?1049l");
            out.extend_from_slice(&normal.screen().contents_formatted());
            out.extend_from_slice(&normal.screen().cursor_state_formatted());
            // Saves that cursor, switches and clears, as the program did.
            out.extend_from_slice(b"\x1b[?1049h");
        }
        out.extend_from_slice(&screen.state_formatted());
        out
    }

    /// The visible text, for tests.
    #[cfg(test)]
    pub(crate) fn text(&self) -> String {
        self.parser.screen().contents()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(rows: u16, cols: u16) -> TermSize {
        TermSize { rows, cols }
    }

    #[test]
    fn a_rendered_screen_reproduces_itself() {
        let mut t = Term::new(size(5, 20));
        t.feed(b"\x1b[1;31mred\x1b[m line\r\nsecond\r\n\x1b[?1hthird");
        let mut copy = Term::new(size(5, 20));
        copy.feed(&t.render());
        assert_eq!(copy.text(), t.text());
        assert_eq!(copy.parser.screen().cursor_position(), t.parser.screen().cursor_position());
        assert!(copy.parser.screen().application_cursor());
        assert_eq!(copy.parser.screen().cell(0, 0).map(|c| c.fgcolor()), Some(vt100::Color::Idx(1)));
    }

    #[test]
    fn the_normal_screen_under_an_alternate_one_comes_back_when_it_ends() {
        let mut t = Term::new(size(4, 12));
        t.feed(b"$ ls\r\nfile-a\r\n$ vi\x1b[?1049h\x1b[H\x1b[2Jeditor\x1b[2;3H");
        let mut copy = Term::new(size(4, 12));
        copy.feed(b"old junk");
        copy.feed(&t.render());
        assert!(copy.parser.screen().alternate_screen());
        assert_eq!(copy.text().trim_end(), "editor");
        assert_eq!(copy.parser.screen().cursor_position(), (1, 2));
        // The program quits: both show the shell's screen, cursor included.
        t.feed(b"\x1b[?1049l\r\n$ ");
        copy.feed(b"\x1b[?1049l\r\n$ ");
        assert_eq!(copy.text(), t.text());
        assert_eq!(copy.parser.screen().cursor_position(), t.parser.screen().cursor_position());
        assert!(copy.text().contains("file-a"), "{}", copy.text());
    }

    #[test]
    fn the_alternate_screen_is_restored_as_such() {
        let mut t = Term::new(size(4, 10));
        t.feed(b"shell$ vi\r\n\x1b[?1049h\x1b[H\x1b[2Jeditor");
        let mut copy = Term::new(size(4, 10));
        copy.feed(b"old junk");
        copy.feed(&t.render());
        assert!(copy.parser.screen().alternate_screen());
        assert_eq!(copy.text().trim_end(), "editor");
    }
}
