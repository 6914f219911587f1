//! Interactive terminal sessions: `tether exec -it` and `tether attach` of a
//! PTY command. The local terminal goes into raw mode, keystrokes go to the
//! command, its output comes back byte for byte, the local window size
//! follows SIGWINCH, a detach key sequence leaves the command running, and a
//! dropped connection shows a one-line notice and then redraws the screen.
//! The local terminal is restored on every way out.

use std::io::Write;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use tether_client::{Client, ClientError, Connection, ExecEvent, Execution, TermSize};
use tokio::io::AsyncReadExt;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

/// A parsed `--detach-keys` sequence, e.g. `ctrl-p,ctrl-q` (docker's
/// syntax): comma-separated keys, each `ctrl-X` or a single character.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DetachKeys(Vec<u8>);

impl std::str::FromStr for DetachKeys {
    type Err = String;

    fn from_str(s: &str) -> Result<DetachKeys, String> {
        let mut keys = Vec::new();
        for part in s.split(',') {
            let lower = part.to_ascii_lowercase();
            let key = match lower.strip_prefix("ctrl-") {
                Some(k) if k.len() == 1 => {
                    let c = k.as_bytes()[0];
                    match c {
                        b'a'..=b'z' | b'@' | b'[' | b'\\' | b']' | b'^' | b'_' => {
                            c.to_ascii_uppercase() & 0x1f
                        }
                        _ => return Err(format!("no control key for {part:?}")),
                    }
                }
                _ if part.len() == 1 && part.is_ascii() => part.as_bytes()[0],
                _ => return Err(format!("{part:?} is not a key (use ctrl-X or one character)")),
            };
            keys.push(key);
        }
        if keys.is_empty() {
            return Err("empty detach key sequence".into());
        }
        Ok(DetachKeys(keys))
    }
}

/// Finds the detach sequence in typed input, holding back a partial match
/// until the next keystroke decides it.
struct DetachScanner {
    keys: Vec<u8>,
    matched: usize,
}

impl DetachScanner {
    /// Returns the bytes to send, and whether the sequence was typed (the
    /// bytes after it are dropped).
    fn feed(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(input.len());
        for &b in input {
            if b == self.keys[self.matched] {
                self.matched += 1;
                if self.matched == self.keys.len() {
                    return (out, true);
                }
                continue;
            }
            if self.matched > 0 {
                out.extend_from_slice(&self.keys[..self.matched]);
                self.matched = 0;
                if b == self.keys[0] {
                    self.matched = 1;
                    continue;
                }
            }
            out.push(b);
        }
        (out, false)
    }
}

/// The local terminal in raw mode; restored on drop, with every mode the
/// remote program may have switched on (alternate screen, hidden cursor,
/// application keys, bracketed paste, mouse reporting) switched off.
struct RawTerminal {
    raw: bool,
    /// The remote output seen so far, to know which modes to undo.
    model: vt100::Parser,
}

impl RawTerminal {
    /// Raw mode only when keystrokes go to the command (`interactive`) and
    /// stdin is a terminal; otherwise Ctrl-C stays a local signal.
    fn enter(size: TermSize, interactive: bool) -> Result<RawTerminal> {
        let raw = interactive && std::io::IsTerminal::is_terminal(&std::io::stdin());
        if raw {
            crossterm::terminal::enable_raw_mode().context("switching the terminal to raw mode")?;
        }
        Ok(RawTerminal { raw, model: vt100::Parser::new(size.rows, size.cols, 0) })
    }

    fn output(&mut self, data: &[u8]) -> Result<()> {
        self.model.process(data);
        let mut out = std::io::stdout().lock();
        out.write_all(data).and_then(|()| out.flush()).context("writing to the terminal")
    }

    /// Shows a screen from the daemon in place of whatever is shown.
    fn screen(&mut self, size: TermSize, data: &[u8]) -> Result<()> {
        let mut reset = self.undo_modes();
        reset.extend_from_slice(b"\x1b[H\x1b[2J");
        self.model = vt100::Parser::new(size.rows, size.cols, 0);
        self.output(&reset)?;
        self.output(data)
    }

    /// A line of our own (a notice), on a line of its own.
    fn notice(&mut self, text: &str) {
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "\r\n\x1b[0m[tether: {text}]\r\n").and_then(|()| out.flush());
    }

    fn undo_modes(&self) -> Vec<u8> {
        let s = self.model.screen();
        let mut b = Vec::new();
        if s.alternate_screen() {
            b.extend_from_slice(b"\x1b[?1049l");
        }
        // Attributes, cursor, cursor keys, keypad, bracketed paste, mouse.
        b.extend_from_slice(
            b"\x1b[0m\x1b[?25h\x1b[?1l\x1b>\x1b[?2004l\x1b[?1000l\x1b[?1002l\x1b[?1003l\x1b[?1006l",
        );
        b
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        // Output piped to a file or a program gets no terminal sequences
        // of ours.
        if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
            let undo = self.undo_modes();
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&undo).and_then(|()| out.flush());
        }
        if self.raw {
            let _ = crossterm::terminal::disable_raw_mode();
        }
    }
}

/// The local terminal's size (24x80 when stdout is not a terminal).
pub(crate) fn local_size() -> TermSize {
    match crossterm::terminal::size() {
        // The daemon accepts at most 500 in each dimension.
        Ok((cols, rows)) if cols > 0 && rows > 0 => TermSize { rows: rows.min(500), cols: cols.min(500) },
        _ => TermSize { rows: 24, cols: 80 },
    }
}

/// How an interactive session ended.
enum End {
    Exited(i32),
    Detached,
    /// The local terminal went away or we were told to stop; the command
    /// keeps running.
    Signalled(i32),
}

/// Runs an interactive session on `ex` until the command exits (its exit
/// code is returned), the detach keys are typed, or a signal ends us.
pub(crate) async fn session(
    client: &Client,
    mut ex: Execution,
    mut signals: crate::run::Signals,
    keys: DetachKeys,
    stdin: bool,
) -> Result<i32> {
    let id = ex.id().clone();
    let mut size = local_size();
    let mut term = RawTerminal::enter(size, stdin)?;
    let (keys_tx, mut keys_rx) = mpsc::channel::<Bytes>(16);
    if stdin {
        tokio::spawn(read_stdin(keys_tx));
    } else {
        drop(keys_tx);
    }
    let mut scanner = DetachScanner { keys: keys.0, matched: 0 };
    let mut winch = signal(SignalKind::window_change())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut conn = client.connection();
    let mut stdin_open = stdin;
    let end = loop {
        tokio::select! {
            ev = ex.next() => match ev {
                None => bail!("the stream ended without an exit status"),
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(ev)) => match ev {
                    ExecEvent::Stdout(b) | ExecEvent::Stderr(b) => term.output(&b)?,
                    ExecEvent::Screen { size, data } => term.screen(size, &data)?,
                    // Output was lost (the viewer fell a ring behind):
                    // show the screen as it is instead of a torn one.
                    ExecEvent::Gap { .. } => tolerate(ex.redraw(size).await)?,
                    ExecEvent::Resized(_) => {}
                    ExecEvent::Exit(st) => break End::Exited(st.shell_code()),
                },
            },
            k = keys_rx.recv(), if stdin_open => match k {
                Some(k) => {
                    let (send, detach) = scanner.feed(&k);
                    if !send.is_empty() {
                        client.write_stdin(&id, Bytes::from(send)).await?;
                    }
                    if detach {
                        break End::Detached;
                    }
                }
                // Local end of input: type it to the command.
                None => {
                    stdin_open = false;
                    client.close_stdin(&id).await?;
                }
            },
            _ = winch.recv() => {
                let now = local_size();
                if now != size {
                    size = now;
                    tolerate(ex.resize(size).await)?;
                }
            }
            r = conn.changed() => {
                if r.is_err() {
                    bail!("connection closed");
                }
                let state = *conn.borrow_and_update();
                match state {
                    Connection::Reconnecting => term.notice("connection lost; reconnecting..."),
                    // The notice disturbed the screen: draw it afresh.
                    Connection::Connected => tolerate(ex.redraw(size).await)?,
                    Connection::Failed => term.notice("could not reconnect; still trying"),
                }
            }
            _ = hup.recv() => break End::Signalled(129),
            _ = signals.term.recv() => break End::Signalled(143),
            // In raw mode Ctrl-C is a byte for the command, and a SIGINT
            // comes from elsewhere (`kill -INT`): stop, leaving the command.
            // Without raw mode (`-t` without `-i`) Ctrl-C is a SIGINT:
            // forward it, as `exec` does.
            _ = signals.int.recv() => {
                if term.raw {
                    break End::Signalled(130);
                }
                if let Err(e) = client.signal(&id, "INT").await {
                    term.notice(&format!("could not forward SIGINT: {e}"));
                }
            }
        }
    };
    drop(term);
    match end {
        End::Exited(code) => Ok(code),
        End::Detached => {
            eprintln!("\r\ntether: detached from {id}; it keeps running. `tether attach {id}` to come back.");
            Ok(0)
        }
        End::Signalled(code) => {
            eprintln!("\r\ntether: stopped; {id} keeps running. `tether attach {id}` to come back.");
            Ok(code)
        }
    }
}

/// A request that a reconnect takes care of: a redraw or resize cut off
/// by a drop is repeated by the client once connected (and a reconnect
/// redraws anyway), so a drop is not the session's end.
fn tolerate(r: Result<(), ClientError>) -> Result<(), ClientError> {
    match r {
        Err(ClientError::Disconnected) => Ok(()),
        r => r,
    }
}

/// Reads the local stdin (keystrokes, or piped input for `exec`) in chunks
/// until EOF or until the receiver goes.
pub(crate) async fn read_stdin(tx: mpsc::Sender<Bytes>) {
    let mut stdin = tokio::io::stdin();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stdin.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if tx.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(keys: &str, chunks: &[&[u8]]) -> (Vec<u8>, bool) {
        let keys: DetachKeys = keys.parse().expect("valid keys");
        let mut s = DetachScanner { keys: keys.0, matched: 0 };
        let mut sent = Vec::new();
        for c in chunks {
            let (out, detach) = s.feed(c);
            sent.extend(out);
            if detach {
                return (sent, true);
            }
        }
        (sent, false)
    }

    #[test]
    fn parses_detach_keys() {
        assert_eq!("ctrl-p,ctrl-q".parse(), Ok(DetachKeys(vec![0x10, 0x11])));
        assert_eq!("ctrl-a,d".parse(), Ok(DetachKeys(vec![0x01, b'd'])));
        assert!("ctrl-,".parse::<DetachKeys>().is_err());
        assert!("ctrl-pq".parse::<DetachKeys>().is_err());
        assert!("".parse::<DetachKeys>().is_err());
    }

    #[test]
    fn finds_the_sequence_across_reads_and_passes_near_misses() {
        assert_eq!(scan("ctrl-p,ctrl-q", &[b"ab\x10", b"\x11zz"]), (b"ab".to_vec(), true));
        assert_eq!(scan("ctrl-p,ctrl-q", &[b"\x10x"]), (b"\x10x".to_vec(), false));
        assert_eq!(scan("ctrl-p,ctrl-q", &[b"\x10\x10\x11"]), (b"\x10".to_vec(), true));
        assert_eq!(scan("ctrl-p,ctrl-q", &[b"plain"]), (b"plain".to_vec(), false));
    }
}
