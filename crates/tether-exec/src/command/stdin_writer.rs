//! The stdin writer: a task of its own per command that writes what clients
//! send into the command's stdin (pipe or terminal), so a command that does
//! not read never stalls the actor draining its output.

use std::io;
use std::sync::atomic::Ordering;

use bytes::{Buf, Bytes, BytesMut};
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::shared::Shared;
use crate::pty::PtyWriter;
use crate::stdin::{Admit, StdinSeq};

pub(crate) enum StdinMsg {
    /// Bytes (from a numbered writer, or not), and where to say what
    /// became of them.
    /// Boxed, as is `Eof`: a channel allocates room for 32 messages up
    /// front, which for every command's stdin would be 2.5 KiB unboxed.
    Data(Box<(Bytes, Option<StdinSeq>, oneshot::Sender<Taken>)>),
    /// A terminal's end-of-file character: typed once per writer and offset.
    Eof(Box<(u8, Option<StdinSeq>, oneshot::Sender<Taken>)>),
    Close,
}

/// What became of stdin bytes.
#[derive(Debug)]
pub(crate) enum Taken {
    /// They are in the pipe (or were there already: a resend).
    Written,
    /// Stdin closed before they could be written.
    Closed,
    /// They start past what their writer has given: a client bug.
    Hole(u64),
}

/// Writes stdin in its own task so a command that does not read its stdin
/// never stalls the actor draining its output.
pub(super) struct StdinWriter {
    pub(super) pipe: Option<StdinPipe>,
    /// A shell command's stdin, handed over when the shell starts it.
    /// Nothing is written (or closed) before: closing the FIFO before the
    /// shell has opened it would leave the shell blocked in `open`.
    pub(super) later: Option<oneshot::Receiver<StdinPipe>>,
    /// Its queue, made when the writer starts ([`StdinWriter::start`]).
    pub(super) rx: Option<mpsc::Receiver<StdinMsg>>,
    pub(super) initial: Bytes,
    pub(super) close_after_initial: bool,
    pub(super) shared: std::sync::Weak<Shared>,
    /// Cancelled for a handover: the writer stops between two writes and
    /// returns its pipe and whatever it has not written.
    pub(super) stop: CancellationToken,
}

/// What a stopped stdin writer leaves.
pub(super) struct StdinLeft {
    /// The pipe (`None`: closed).
    pub(super) pipe: Option<StdinPipe>,
    /// Accepted bytes not yet written.
    pub(super) pending: BytesMut,
    /// Close after them.
    pub(super) close: bool,
}

/// How many messages a stdin writer's queue holds.
const QUEUE: usize = 16;

async fn recv(rx: &mut Option<mpsc::Receiver<StdinMsg>>) -> Option<StdinMsg> {
    match rx {
        Some(rx) => rx.recv().await,
        None => None,
    }
}

impl StdinWriter {
    /// Whether the writer has work from the start: bytes to write, a close,
    /// or a shell command's stdin to wait for. Else it starts on the first
    /// write.
    pub(super) fn needed_now(&self) -> bool {
        !self.initial.is_empty() || self.close_after_initial || self.later.is_some()
    }

    /// Makes the writer's queue (its sender goes to `shared.stdin_tx`) and
    /// runs the writer in a task of its own on `on`.
    pub(super) fn start(mut self, shared: &Shared, on: &tokio::runtime::Handle) -> JoinHandle<StdinLeft> {
        let (tx, rx) = mpsc::channel(QUEUE);
        self.rx = Some(rx);
        // Only the actor starts a writer, once.
        let _ = shared.stdin_tx.set(tx);
        on.spawn(self.run())
    }

    /// What an unstarted writer leaves at a handover: its pipe and what it
    /// had to write.
    pub(super) fn unstarted(self) -> StdinLeft {
        let close = self.close_after_initial || (self.pipe.is_none() && self.later.is_none());
        StdinLeft { pipe: self.pipe, pending: BytesMut::from(&self.initial[..]), close }
    }

    pub(super) async fn run(mut self) -> StdinLeft {
        let pipe = match (self.pipe.take(), self.later.take()) {
            (Some(p), _) => Some(p),
            (None, Some(later)) => tokio::select! {
                p = later => p.ok(),
                _ = self.stop.cancelled() => return self.left(None, Bytes::new(), true),
            },
            (None, None) => None,
        };
        let Some(mut pipe) = pipe else {
            self.closed();
            return self.left(None, Bytes::new(), true);
        };
        // The bytes being written, where to say they are in the pipe, and
        // the numbered writer they came from.
        let mut cur = std::mem::take(&mut self.initial);
        let mut done: Option<oneshot::Sender<Taken>> = None;
        let mut from: Option<String> = None;
        let mut close_when_written = self.close_after_initial;
        loop {
            if cur.is_empty() {
                if let Some(d) = done.take() {
                    let _ = d.send(Taken::Written);
                }
                if close_when_written {
                    return self.left(None, Bytes::new(), true);
                }
                let msg = tokio::select! {
                    m = recv(&mut self.rx) => m,
                    _ = self.stop.cancelled() => return self.left(Some(pipe), cur, false),
                };
                match msg {
                    Some(StdinMsg::Close) | None => close_when_written = true,
                    Some(msg) => {
                        if let Some((b, d, w)) = self.admit(msg) {
                            (cur, done, from) = (b, Some(d), w);
                        }
                    }
                }
                continue;
            }
            // `write` is cancel-safe: a write that did not complete wrote
            // nothing, so stopping here loses no byte.
            let r = tokio::select! {
                r = pipe.write(&cur) => r,
                _ = self.stop.cancelled() => return self.left(Some(pipe), cur, close_when_written),
            };
            match r {
                Ok(n) if n > 0 => cur.advance(n),
                _ => {
                    // EPIPE: the command closed its stdin. What was not
                    // written is not counted as taken.
                    if let (Some(w), Some(s)) = (&from, self.shared.upgrade()) {
                        s.writers().unwrite(w, cur.len());
                    }
                    if let Some(d) = done.take() {
                        let _ = d.send(Taken::Closed);
                    }
                    self.closed();
                    return self.left(None, Bytes::new(), true);
                }
            }
        }
    }

    /// Decides what of a message is to be written: a numbered writer's
    /// bytes that the command has already are answered at once (a resend),
    /// bytes past a hole are refused. Returns the bytes, whom to tell once
    /// they are written, and the numbered writer they came from.
    pub(super) fn admit(&self, msg: StdinMsg) -> Option<(Bytes, oneshot::Sender<Taken>, Option<String>)> {
        let shared = self.shared.upgrade()?;
        let (admit, done, writer) = match msg {
            StdinMsg::Data(m) => match *m {
                (data, None, done) => (Admit::Write(data), done, None),
                (data, Some(seq), done) => (shared.writers().admit(&seq, data), done, Some(seq.writer)),
            },
            StdinMsg::Eof(m) => {
                let (c, seq, done) = *m;
                let eof = Bytes::copy_from_slice(&[c]);
                match seq {
                    None => (Admit::Write(eof), done, None),
                    Some(seq) => match shared.writers().eof(&seq) {
                        Admit::Write(_) => (Admit::Write(eof), done, None),
                        other => (other, done, None),
                    },
                }
            }
            StdinMsg::Close => return None,
        };
        match admit {
            Admit::Write(data) if !data.is_empty() => Some((data, done, writer)),
            Admit::Write(_) | Admit::Duplicate => {
                let _ = done.send(Taken::Written);
                None
            }
            Admit::Hole { have } => {
                let _ = done.send(Taken::Hole(have));
                None
            }
        }
    }

    /// What is left: the pipe, the unwritten rest of the current write and
    /// everything still queued (admitted as if written, so that the next
    /// daemon's table agrees with its bytes), and whether to close after
    /// them. The writers of those bytes are not told (their connections
    /// are gone by the time of a handover).
    pub(super) fn left(&mut self, pipe: Option<StdinPipe>, cur: Bytes, close: bool) -> StdinLeft {
        let mut pending = BytesMut::from(&cur[..]);
        let mut close = close || pipe.is_none();
        while let Some(Ok(msg)) = self.rx.as_mut().map(mpsc::Receiver::try_recv) {
            match msg {
                StdinMsg::Close => close = true,
                msg if !close => {
                    if let Some((b, _, _)) = self.admit(msg) {
                        pending.extend_from_slice(&b);
                    }
                }
                _ => {}
            }
        }
        StdinLeft { pipe, pending, close }
    }

    pub(super) fn closed(&self) {
        if let Some(s) = self.shared.upgrade() {
            s.stdin_open.store(false, Ordering::SeqCst);
        }
    }
}

/// The writing end of a command's stdin.
pub(super) enum StdinPipe {
    Pipe(pipe::Sender),
    Pty(PtyWriter),
}

impl StdinPipe {
    pub(super) async fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        use tokio::io::AsyncWriteExt;
        match self {
            StdinPipe::Pipe(p) => p.write(buf).await,
            StdinPipe::Pty(p) => p.write(buf).await,
        }
    }
}
