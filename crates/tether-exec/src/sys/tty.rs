//! Terminals: the window size, the foreground process group, the
//! end-of-file character, read and set on a master fd.

use std::io;
use std::os::fd::BorrowedFd;

/// Sets a terminal's window size (TIOCSWINSZ).
pub(crate) fn set_winsize(fd: BorrowedFd<'_>, rows: u16, cols: u16) -> io::Result<()> {
    let ws = rustix::termios::Winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    Ok(rustix::termios::tcsetwinsize(fd, ws)?)
}

/// A terminal's foreground process group, if it has one.
pub(crate) fn foreground_group(fd: BorrowedFd<'_>) -> Option<u32> {
    let pgrp = rustix::termios::tcgetpgrp(fd).ok()?.as_raw_nonzero().get();
    u32::try_from(pgrp).ok()
}

/// A terminal's end-of-file character (VEOF).
pub(crate) fn veof(fd: BorrowedFd<'_>) -> Option<u8> {
    let t = rustix::termios::tcgetattr(fd).ok()?;
    Some(t.special_codes[rustix::termios::SpecialCodeIndex::VEOF])
}
