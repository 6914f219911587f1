//! [`CommandHandle`]: the cheap handle through which the manager and
//! connections reach one command.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::ExecError;
use crate::ring::Ring;
use crate::spec::TermSize;
use crate::stdin::StdinSeq;
use crate::sys;

use super::shared::Shared;
use super::stdin_writer::{StdinMsg, Taken};
use super::subscription::Subscription;
use super::subscription::subscribe;
use super::{CommandInfo, Control, ExitInfo, ExitReason, ScreenAttach};

/// A cheap, cloneable handle to one command.
#[derive(Clone)]
pub struct CommandHandle {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for CommandHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandHandle").field("id", &self.shared.ident.id).finish()
    }
}

impl CommandHandle {
    /// The command id.
    pub fn id(&self) -> &str {
        &self.shared.ident.id
    }

    /// The process id (also the process group id).
    pub fn pid(&self) -> u32 {
        self.shared.ident.pid
    }

    /// A snapshot for listings.
    pub fn info(&self) -> CommandInfo {
        let out = self.shared.output();
        CommandInfo {
            id: self.shared.ident.id.clone(),
            name: self.shared.ident.name.clone(),
            labels: self.shared.ident.labels.clone(),
            argv: self.shared.ident.argv.clone(),
            pid: self.shared.ident.pid,
            started_at: self.shared.ident.started_at,
            exit: out.exit.clone(),
            offsets: [0, 1].map(|i| (out.rings[i].first_held(), out.rings[i].end())),
            attached: self.shared.attached.load(Ordering::Relaxed),
            pty: out.size.map(|(s, _)| s),
            shell: self.shared.ident.shell.clone(),
            queued: out.queued,
        }
    }

    /// Whether the command runs on a pseudo-terminal.
    pub fn is_pty(&self) -> bool {
        self.shared.eof_char.is_some()
    }

    /// Sets a PTY command's terminal size; every subscription gets
    /// [`Event::Resized`].
    pub async fn resize(&self, size: TermSize) -> Result<(), ExecError> {
        if !size.is_valid() {
            return Err(ExecError::BadSize { rows: size.rows, cols: size.cols });
        }
        if !self.is_pty() {
            return Err(ExecError::NotAPty(self.shared.ident.id.clone()));
        }
        let (reply, rx) = oneshot::channel();
        self.control(Control::Resize { size, reply }).await?;
        rx.await.unwrap_or_else(|_| Err(self.not_running()))
    }

    /// Attaches to a PTY command to show it on a terminal: after applying
    /// `size` (if given; the newest viewer's size wins), returns the current
    /// screen and a subscription from the offset it reflects. A non-zero
    /// stdout offset `from` that the ring still holds is a reconnect of a
    /// viewer whose terminal is intact: no screen, output from `from`.
    pub async fn attach_screen(
        &self,
        from: u64,
        size: Option<TermSize>,
        pace: bool,
    ) -> Result<ScreenAttach, ExecError> {
        if let Some(s) = size.filter(|s| !s.is_valid()) {
            return Err(ExecError::BadSize { rows: s.rows, cols: s.cols });
        }
        if !self.is_pty() {
            return Err(ExecError::NotAPty(self.shared.ident.id.clone()));
        }
        let (reply, rx) = oneshot::channel();
        self.control(Control::AttachScreen { from, size, pace, reply }).await?;
        rx.await.unwrap_or_else(|_| Err(self.not_running()))
    }

    /// The exit status, if the command has finished.
    pub fn exit(&self) -> Option<ExitInfo> {
        self.shared.output().exit.clone()
    }

    /// Attaches from per-stream offsets (stdout, stderr). An offset older
    /// than the ring yields a [`Event::Gap`] first; one beyond the end is an
    /// error.
    pub fn attach(&self, from: [u64; 2]) -> Result<Subscription, ExecError> {
        self.attach_paced(from, false)
    }

    /// Like [`CommandHandle::attach`]; with `pace`, this subscription paces
    /// the command: when it falls half a ring behind, the actor stops
    /// reading the command's pipes (the command blocks on write) until it
    /// catches up, so it never misses a byte. Other subscriptions never
    /// slow the command; a pacing one stops pacing when dropped.
    pub fn attach_paced(&self, from: [u64; 2], pace: bool) -> Result<Subscription, ExecError> {
        {
            let out = self.shared.output();
            for (ring, &asked) in out.rings.iter().zip(&from) {
                let end = ring.end();
                if asked > end {
                    return Err(ExecError::OffsetBeyondEnd { asked, end });
                }
            }
        }
        Ok(self.subscribe(from, pace, None))
    }

    /// A pacing attachment ([`CommandHandle::attach_paced`]) that goes on
    /// pacing for `linger` after it is dropped, from the oldest byte the
    /// rings still hold (what it read may not have reached its client): the
    /// command is held back while its client is away, so that a client that
    /// reconnects within `linger` (and attaches again, which ends the
    /// lingering) misses nothing even of a fast writer, as long as what was
    /// in flight when it went is still in the ring. For clients that cannot
    /// notice a gap (the LangSmith dialect).
    pub fn attach_lingering(&self, from: [u64; 2], linger: Duration) -> Result<Subscription, ExecError> {
        let mut sub = self.attach_paced(from, true)?;
        sub.linger = Some(linger);
        self.shared.output().pacing.hold_when_gone(sub.number, linger, true);
        Ok(sub)
    }

    /// Attaches starting at most `tail` bytes before each stream's end (and
    /// never before the first held byte), pacing or not.
    pub fn attach_tail(&self, tail: u64, pace: bool) -> Subscription {
        let from = {
            let out = self.shared.output();
            [0, 1].map(|i| {
                let r = &out.rings[i];
                r.end().saturating_sub(tail).max(r.first_held())
            })
        };
        self.subscribe(from, pace, None)
    }

    pub(super) fn subscribe(&self, from: [u64; 2], pace: bool, linger: Option<Duration>) -> Subscription {
        let kind = if from == [0, 0] { "start" } else { "offset" };
        metrics::counter!("tether_attaches_total", "from" => kind).increment(1);
        let mut sub = subscribe(&self.shared, from, pace);
        sub.linger = linger;
        sub
    }

    /// Writes bytes to the command's stdin; returns once they are in the
    /// pipe, so a command that does not read makes its writers wait rather
    /// than the manager buffer.
    pub async fn write_stdin(&self, data: Bytes) -> Result<(), ExecError> {
        self.write_stdin_at(data, None).await
    }

    /// [`CommandHandle::write_stdin`] for a numbered writer (resumable
    /// stdin): bytes this writer has given before are dropped, so a resend
    /// after a reconnect neither loses nor doubles any; bytes that start
    /// past what it has given are refused ([`ExecError::StdinHole`]).
    pub async fn write_stdin_at(&self, data: Bytes, seq: Option<StdinSeq>) -> Result<(), ExecError> {
        if let Some(seq) = seq.as_ref().filter(|s| !s.is_valid()) {
            return Err(ExecError::BadWriter(seq.writer.clone()));
        }
        let closed = || ExecError::StdinClosed(self.shared.ident.id.clone());
        // A resend of bytes the command has taken is answered as the first
        // send was, even once stdin has closed or the command has ended.
        if seq.as_ref().is_some_and(|seq| self.shared.writers().has(seq, data.len())) {
            return Ok(());
        }
        if self.exit().is_some() {
            return Err(self.not_running());
        }
        if !self.shared.stdin_open.load(Ordering::SeqCst) {
            return Err(closed());
        }
        let (done, taken) = oneshot::channel();
        let msg = StdinMsg::Data(Box::new((data, seq.clone(), done)));
        self.stdin_queue().await.ok_or_else(closed)?.send(msg).await.map_err(|_| closed())?;
        self.taken(taken.await, seq)
    }

    pub(super) fn taken(
        &self,
        t: Result<Taken, oneshot::error::RecvError>,
        seq: Option<StdinSeq>,
    ) -> Result<(), ExecError> {
        match t {
            Ok(Taken::Written) => Ok(()),
            Ok(Taken::Hole(have)) => {
                let seq = seq.unwrap_or(StdinSeq { writer: String::new(), offset: 0 });
                Err(ExecError::StdinHole { writer: seq.writer, offset: seq.offset, have })
            }
            Ok(Taken::Closed) | Err(_) => Err(ExecError::StdinClosed(self.shared.ident.id.clone())),
        }
    }

    /// Closes stdin after everything queued before (the command reads EOF).
    /// On a terminal this types the end-of-file character (VEOF) instead,
    /// and the terminal stays open for more input.
    pub async fn close_stdin(&self) -> Result<(), ExecError> {
        self.close_stdin_at(None).await
    }

    /// [`CommandHandle::close_stdin`] for a numbered writer: a repeated
    /// close is answered `Ok` and does nothing more (on a terminal, the
    /// end-of-file character is typed once per writer and offset).
    pub async fn close_stdin_at(&self, seq: Option<StdinSeq>) -> Result<(), ExecError> {
        if let Some(seq) = seq.as_ref().filter(|s| !s.is_valid()) {
            return Err(ExecError::BadWriter(seq.writer.clone()));
        }
        // A repeated close is answered as the first was.
        let repeat = match (&seq, self.shared.eof_char) {
            (Some(seq), Some(_)) => self.shared.writers().has_eof(seq),
            (Some(_), None) => !self.shared.stdin_open.load(Ordering::SeqCst),
            (None, _) => false,
        };
        if repeat {
            return Ok(());
        }
        if self.exit().is_some() {
            return Err(self.not_running());
        }
        if let Some(c) = self.shared.eof_char {
            let (done, taken) = oneshot::channel();
            let msg = StdinMsg::Eof(Box::new((c, seq.clone(), done)));
            let closed = || ExecError::StdinClosed(self.shared.ident.id.clone());
            self.stdin_queue().await.ok_or_else(closed)?.send(msg).await.map_err(|_| closed())?;
            return self.taken(taken.await, seq);
        }
        if !self.shared.stdin_open.swap(false, Ordering::SeqCst) {
            if seq.is_some() {
                return Ok(());
            }
            return Err(ExecError::StdinClosed(self.shared.ident.id.clone()));
        }
        // If the writer is gone, stdin is closed already: that is success.
        if let Some(q) = self.stdin_queue().await {
            let _ = q.send(StdinMsg::Close).await;
        }
        Ok(())
    }

    /// The stdin writer's queue, asking the actor to start the writer the
    /// first time; `None` once stdin is gone.
    async fn stdin_queue(&self) -> Option<mpsc::Sender<StdinMsg>> {
        if let Some(tx) = self.shared.stdin_tx.get() {
            return Some(tx.clone());
        }
        let (reply, rx) = oneshot::channel();
        // The writer runs where its writers are (the connections' runtime
        // in the daemon): a keystroke reaches the terminal without waking
        // a thread of the actors' runtime, and its `ok` comes back the same
        // way (two thread hand-offs less per keystroke).
        // (Outside a tokio runtime, on the actors' own.)
        let on =
            tokio::runtime::Handle::try_current().unwrap_or_else(|_| crate::manager::actors_handle().clone());
        let open = super::OpenStdin { on, reply };
        self.shared.ctl.send(Control::OpenStdin(Box::new(open))).await.ok()?;
        rx.await.ok().flatten()
    }

    /// Sends a signal (name or number) to the command's process group.
    pub async fn signal(&self, sig: &str) -> Result<(), ExecError> {
        let n = sys::parse_signal(sig).ok_or_else(|| ExecError::BadSignal(sig.to_owned()))?;
        let (reply, rx) = oneshot::channel();
        self.control(Control::Signal { sig: n, reply }).await?;
        rx.await.unwrap_or_else(|_| Err(self.not_running()))
    }

    /// Kills the command and every descendant (SIGKILL). Returns once the
    /// signal is sent; the exit follows on subscriptions.
    pub async fn kill(&self) -> Result<(), ExecError> {
        self.kill_for(ExitReason::Killed).await
    }

    /// [`CommandHandle::kill`], then waits for the command's end, at most
    /// `limit` (every process it started has its SIGKILL, so the end
    /// comes in milliseconds): for answers that say "killed".
    pub async fn kill_and_wait(&self, limit: std::time::Duration) -> Result<(), ExecError> {
        self.kill().await?;
        let _ = tokio::time::timeout(limit, self.wait()).await;
        Ok(())
    }

    pub(crate) async fn kill_for(&self, reason: ExitReason) -> Result<(), ExecError> {
        let (reply, rx) = oneshot::channel();
        self.control(Control::Kill { reason, reply: Some(reply) }).await?;
        rx.await.unwrap_or_else(|_| Err(self.not_running()))
    }

    /// Waits until the command has finished and all its output is drained.
    pub async fn wait(&self) -> ExitInfo {
        let mut rx = self.shared.changed.subscribe();
        loop {
            rx.borrow_and_update();
            if let Some(e) = self.exit() {
                return e;
            }
            if rx.changed().await.is_err() {
                // Unreachable while we hold `shared`, which owns the sender.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Both rings' chunks as they are now (shared, not copied).
    pub(crate) fn ring_chunks(&self) -> Vec<bytes::Bytes> {
        let out = self.shared.output();
        out.rings.iter().flat_map(Ring::chunk_data).cloned().collect()
    }

    /// Replaces each ring chunk `to` has a copy of by that copy.
    pub(crate) fn rebase_rings(&self, to: impl Fn(&bytes::Bytes) -> Option<bytes::Bytes>) {
        let mut out = self.shared.output();
        out.rings.iter_mut().for_each(|r| r.rebase(&to));
    }

    /// Gives both rings buffers of their own (after a handover).
    pub(crate) fn reown_rings(&self) {
        let mut out = self.shared.output();
        out.rings.iter_mut().for_each(Ring::reown);
    }

    pub(super) async fn control(&self, msg: Control) -> Result<(), ExecError> {
        self.shared.ctl.send(msg).await.map_err(|_| self.not_running())
    }

    pub(super) fn not_running(&self) -> ExecError {
        ExecError::NotRunning(self.shared.ident.id.clone())
    }
}
