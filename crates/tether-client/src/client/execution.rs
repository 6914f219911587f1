//! [`Execution`], one command's ordered event stream ([`ExecEvent`]) with
//! its acknowledgements, and [`Output`], what it comes to.

use bytes::Bytes;
use tether_proto::{ClientMsg, CommandId, ExitStatus, ServerMsg, Stream, TermSize};
use tokio::sync::mpsc;

use super::{Client, unexpected};
use crate::driver::Delivery;
use crate::error::ClientError;

/// What an execution yields, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExecEvent {
    /// Bytes of stdout, continuing exactly where the last ones ended.
    Stdout(Bytes),
    /// Bytes of stderr, continuing exactly where the last ones ended.
    Stderr(Bytes),
    /// The bytes `[from, to)` of a stream are lost (the daemon's ring no
    /// longer held them); the stream continues at `to`.
    Gap {
        /// Which stream.
        stream: Stream,
        /// First lost offset.
        from: u64,
        /// Where the stream continues.
        to: u64,
    },
    /// A PTY command's screen: reset the terminal, resize it to `size` and
    /// write `data`; `Stdout` bytes continue from there. Comes first on a
    /// terminal attachment ([`Client::attach_terminal`]), and again after a
    /// reconnect that found the viewer's offset gone from the ring.
    Screen {
        /// The size the screen is rendered for.
        size: TermSize,
        /// Bytes that draw it on a reset terminal.
        data: Bytes,
    },
    /// A PTY command's terminal size is now this (first on every
    /// attachment, then after every change by any client).
    Resized(TermSize),
    /// The command ended; the last event.
    Exit(ExitStatus),
}

/// A command's captured output.
#[derive(Clone, Debug)]
pub struct Output {
    /// Everything written to stdout.
    pub stdout: Vec<u8>,
    /// Everything written to stderr.
    pub stderr: Vec<u8>,
    /// How it ended.
    pub status: ExitStatus,
    /// Bytes lost to gaps (0 unless the ring overflowed).
    pub lost_bytes: u64,
}

/// A command this client started or attached to: its ordered event stream
/// plus shortcuts for stdin and signals. Dropping it detaches.
pub struct Execution {
    client: Client,
    id: CommandId,
    pid: Option<u32>,
    events: mpsc::UnboundedReceiver<Delivery>,
    finished: bool,
    /// The attachment's flow control window.
    window: Option<u64>,
    /// Offsets last acknowledged to the daemon.
    acked: [u64; 2],
}

impl std::fmt::Debug for Execution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Execution").field("id", &self.id).field("pid", &self.pid).finish_non_exhaustive()
    }
}

impl Drop for Execution {
    fn drop(&mut self) {
        // Detach at once, so the daemon's idle timeout and
        // kill-on-disconnect see this client leave even if the command
        // prints nothing more.
        if !self.finished {
            self.client.detach_quietly(&self.id);
        }
    }
}

impl Execution {
    /// The command id.
    pub fn id(&self) -> &CommandId {
        &self.id
    }

    /// The process id, when this execution started the command.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// The next event; `None` after the exit. An `Err` means the stream
    /// cannot continue (the command vanished, or reconnecting failed).
    pub async fn next(&mut self) -> Option<Result<ExecEvent, ClientError>> {
        if self.finished {
            return None;
        }
        match self.events.recv().await {
            Some(Delivery { ev: Ok(ev), at }) => {
                if matches!(ev, ExecEvent::Exit(_)) {
                    self.finished = true;
                    self.client.forget_stdin(&self.id);
                } else {
                    // At once past a gap, or when nothing more is queued
                    // (a paced command waits for this), else by quarters.
                    let now = matches!(ev, ExecEvent::Gap { .. }) || self.events.is_empty();
                    self.consumed(at, now);
                }
                Some(Ok(ev))
            }
            Some(Delivery { ev: Err(e), .. }) => {
                self.finished = true;
                Some(Err(e))
            }
            None => {
                self.finished = true;
                Some(Err(ClientError::Disconnected))
            }
        }
    }

    /// Acknowledges what has been taken, a quarter window at a time (and
    /// at once when asked: past a gap, or with nothing more queued), so
    /// the daemon sends more and a paced command goes on.
    fn consumed(&mut self, at: [u64; 2], now: bool) {
        let Some(window) = self.window else { return };
        let taken: u64 = (0..2).map(|i| at[i].saturating_sub(self.acked[i])).sum();
        if (now && taken > 0) || taken >= window / 4 {
            self.acked = [0, 1].map(|i| self.acked[i].max(at[i]));
            self.client.acks.ack(&self.id, self.acked);
        }
    }

    /// Reads every event to the exit, collecting output.
    pub async fn output(mut self) -> Result<Output, ClientError> {
        let (mut stdout, mut stderr, mut lost_bytes) = (Vec::new(), Vec::new(), 0);
        while let Some(ev) = self.next().await {
            match ev? {
                ExecEvent::Stdout(b) => stdout.extend_from_slice(&b),
                ExecEvent::Stderr(b) => stderr.extend_from_slice(&b),
                ExecEvent::Gap { from, to, .. } => lost_bytes += to - from,
                ExecEvent::Screen { .. } | ExecEvent::Resized(_) => {}
                ExecEvent::Exit(status) => {
                    return Ok(Output { stdout, stderr, status, lost_bytes });
                }
            }
        }
        Err(ClientError::Disconnected)
    }

    /// Sends stdin bytes.
    pub async fn write_stdin(&self, data: impl Into<Bytes>) -> Result<(), ClientError> {
        self.client.write_stdin(&self.id, data.into()).await
    }

    /// Closes stdin.
    pub async fn close_stdin(&self) -> Result<(), ClientError> {
        self.client.close_stdin(&self.id).await
    }

    /// Sends a signal to the command's process group.
    pub async fn signal(&self, signal: &str) -> Result<(), ClientError> {
        self.client.signal(&self.id, signal).await
    }

    /// Sets the command's terminal size.
    pub async fn resize(&self, size: TermSize) -> Result<(), ClientError> {
        self.client.resize(&self.id, size).await
    }

    /// Asks for the current screen of this PTY command again, rendered for
    /// `size` (which becomes the terminal's size): an [`ExecEvent::Screen`]
    /// follows, and output continues after it. For a viewer whose display
    /// was disturbed (a notice printed over it, a local resize).
    pub async fn redraw(&self, size: TermSize) -> Result<(), ClientError> {
        let msg = ClientMsg::Attach {
            id: self.client.next_id(),
            command: self.id.clone(),
            stdout_offset: 0,
            stderr_offset: 0,
            tail_bytes: None,
            pace: false,
            screen: true,
            size: Some(size),
            window_bytes: self.window,
            client: None,
        };
        match self.client.request(msg, None).await? {
            ServerMsg::Attached { .. } => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Kills the command; its exit still arrives on this execution.
    pub async fn kill(&self) -> Result<(), ClientError> {
        self.client.kill(&self.id).await
    }

    /// The client this execution belongs to.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

impl Client {
    pub(super) fn execution(
        &self,
        id: CommandId,
        pid: Option<u32>,
        events: mpsc::UnboundedReceiver<Delivery>,
        from: [u64; 2],
    ) -> Execution {
        Execution {
            client: self.clone(),
            id,
            pid,
            events,
            finished: false,
            window: self.window_bytes(),
            acked: from,
        }
    }
}
