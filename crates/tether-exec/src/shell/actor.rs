//! The shell's actor: the task that owns a shell process and its queue,
//! hands it one command at a time, follows its status records, and closes
//! it (by request, idle TTL, shutdown, or when it exits by itself).

use std::collections::{HashSet, VecDeque};
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::bootstrap::{self, Fifos, read_available};
use super::kill::{Escalation, kill_session};
use super::records::{Record, Records, parse};
use super::{
    CloseReason, HISTORY_ENTRIES, HISTORY_SCRIPT_BYTES, HistoryEntry, JobEvent, JobState, QueuedJob,
    ShellClosed, ShellCtl, ShellShared, ShellState, cut,
};
use crate::ExecError;
use crate::command::ExitReason;
use crate::sys::{self, PrivateDir, Process, Reaped};

/// The command the shell is on.
pub(super) struct Current {
    pub(super) job: QueuedJob,
    pub(super) n: u64,
    /// Its control line, to write again if the shell drops it.
    pub(super) line: Vec<u8>,
    /// Its FIFOs, held until the shell has opened its ends (`S`).
    pub(super) files: Option<Fifos>,
    /// Processes of the session before it started (spared by escalation).
    pub(super) before: HashSet<u32>,
    /// Set once it is being killed.
    pub(super) kill: Option<Escalation>,
    /// After an interrupt: when to look for processes that missed it, and
    /// how many more looks.
    pub(super) recheck: Option<(Instant, u32)>,
}

/// The task that owns a shell process and its queue.
pub(crate) struct ShellActor {
    pub(super) shared: Arc<ShellShared>,
    /// The shell (its pid is its process group and session id), held
    /// through a pidfd.
    pub(super) shell: Process,
    pub(super) control: pipe::Sender,
    pub(super) status: pipe::Receiver,
    /// The shell's own stdout and stderr: only its top-level chatter, never
    /// a command's output.
    pub(super) log: Option<pipe::Receiver>,
    pub(super) records: Records,
    /// The scripts and FIFOs; `None` once the shell is gone.
    pub(super) dir: Option<PrivateDir>,
    pub(super) ctl_rx: mpsc::Receiver<ShellCtl>,
    pub(super) queue: VecDeque<QueuedJob>,
    pub(super) current: Option<Current>,
    pub(super) next_n: u64,
    /// FIFOs made ahead for command `next_n` while the shell ran the one
    /// before (`prepare_next`): making them took about a tenth of a
    /// command's round trip.
    pub(super) spare: Option<Fifos>,
    /// A finished command's script, removed while the next one runs
    /// rather than on the way to its exit.
    pub(super) stale_script: Option<u64>,
    pub(super) idle_ttl: Option<Duration>,
    /// How long a closed shell stays listed.
    pub(super) ttl: Option<Duration>,
}

impl Drop for ShellActor {
    fn drop(&mut self) {
        // Dropped without closing (a runtime torn down under it): leave no
        // shell waiting for a command that will never come.
        if self.shared.status().closed.is_none() {
            kill_session(self.shell.pid());
            let _ = self.shell.try_reap();
        }
    }
}

async fn at(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

async fn readable(p: &Option<pipe::Receiver>) -> io::Result<()> {
    match p {
        Some(p) => p.readable().await,
        None => std::future::pending().await,
    }
}

impl ShellActor {
    /// Runs the shell until it closes, then keeps its record listed for the
    /// TTL. Returns when the record should go.
    pub(crate) async fn run(mut self, shutdown: CancellationToken) {
        let closed = self.live(&shutdown).await;
        tracing::info!(shell = %self.shared.name, reason = ?closed, "shell closed");
        // Keep the closed shell listed (with its history) for the TTL,
        // unless it was closed on request.
        if closed != CloseReason::Closed {
            self.listed(&shutdown).await;
        }
    }

    /// The shell's life: runs queued commands one at a time until it closes.
    async fn live(&mut self, shutdown: &CancellationToken) -> CloseReason {
        let mut idle_at = self.idle_ttl.map(|d| Instant::now() + d);
        loop {
            if self.current.is_none() {
                if let Some(job) = self.queue.pop_front() {
                    self.begin(job).await;
                    idle_at = None;
                    continue;
                }
                if idle_at.is_none() {
                    idle_at = self.idle_ttl.map(|d| Instant::now() + d);
                }
            }
            let escalate_at = self.current.as_ref().and_then(|c| c.kill.as_ref()).map(|k| k.next_at);
            let recheck_at = self.current.as_ref().and_then(|c| c.recheck).map(|(t, _)| t);
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    return self.close(CloseReason::Shutdown, "the daemon shut down".into(), None).await;
                }
                Some(ctl) = self.ctl_rx.recv() => {
                    if let Some(closed) = self.control(ctl, &mut idle_at).await {
                        return closed;
                    }
                }
                r = self.status.readable() => {
                    if let Some(closed) = self.status_readable(r).await {
                        return closed;
                    }
                }
                r = readable(&self.log) => {
                    let said = if r.is_ok() { read_available(self.log.as_ref().expect("polled")) } else { String::new() };
                    if said.is_empty() {
                        self.log = None;
                    } else {
                        tracing::debug!(shell = %self.shared.name, "shell said: {}", said.trim_end());
                    }
                }
                _ = at(recheck_at) => self.recheck_interrupt(),
                _ = at(escalate_at) => {
                    if !self.escalate() {
                        let msg = "a command could not be interrupted; the shell was killed".to_owned();
                        return self.close(CloseReason::Stuck, msg, None).await;
                    }
                }
                _ = at(idle_at), if self.current.is_none() => {
                    let msg = "nothing ran for its idle TTL".to_owned();
                    return self.close(CloseReason::IdleTtl, msg, None).await;
                }
            }
        }
    }

    /// A control message while the shell lives; `Some` once it closed.
    async fn control(&mut self, ctl: ShellCtl, idle_at: &mut Option<Instant>) -> Option<CloseReason> {
        match ctl {
            ShellCtl::Submit { job, reply } => {
                self.queued(job);
                *idle_at = None;
                let _ = reply.send(Ok(()));
            }
            ShellCtl::Signal { id, sig, reply } => {
                let _ = reply.send(self.signal(&id, sig));
            }
            ShellCtl::Kill { id, reason } => self.kill(&id, reason),
            ShellCtl::Close { reply } => {
                return Some(self.close(CloseReason::Closed, "closed by a client".into(), Some(reply)).await);
            }
            ShellCtl::Freeze { reply } => {
                let frozen = self.freeze();
                let handed = frozen.is_some();
                let _ = reply.send(frozen);
                if handed {
                    return Some(CloseReason::Shutdown);
                }
            }
        }
        None
    }

    /// The status pipe is readable: takes its records; `Some` once the
    /// shell has exited (end of file).
    async fn status_readable(&mut self, r: io::Result<()>) -> Option<CloseReason> {
        let open = match r.and_then(|()| self.records.fill(&self.status)) {
            Ok(open) => open,
            Err(e) => {
                tracing::warn!(shell = %self.shared.name, "status pipe failed: {e}");
                false
            }
        };
        while let Some(rec) = self.records.pop() {
            self.record(parse(&rec)).await;
        }
        if open { None } else { Some(self.exited().await) }
    }

    /// After the shell closed by itself: answers control messages until the
    /// TTL is up, a client closes it or the daemon shuts down.
    async fn listed(&mut self, shutdown: &CancellationToken) {
        let ttl_at = self.ttl.map(|d| Instant::now() + d);
        loop {
            tokio::select! {
                _ = at(ttl_at) => return,
                _ = shutdown.cancelled() => return,
                ctl = self.ctl_rx.recv() => match ctl {
                    None => return,
                    Some(ShellCtl::Close { reply }) => {
                        let _ = reply.send(());
                        return;
                    }
                    Some(ShellCtl::Submit { reply, .. }) => {
                        let _ = reply.send(Err(self.closed_error()));
                    }
                    Some(ShellCtl::Signal { id, reply, .. }) => {
                        let _ = reply.send(Err(ExecError::NotRunning(id)));
                    }
                    Some(ShellCtl::Kill { .. }) => {}
                    Some(ShellCtl::Freeze { reply }) => {
                        let _ = reply.send(None);
                    }
                },
            }
        }
    }

    fn closed_error(&self) -> ExecError {
        let why = self
            .shared
            .status()
            .closed
            .as_ref()
            .map_or_else(|| "it has closed".to_owned(), |c| c.message.clone());
        ExecError::ShellClosed { name: self.shared.name.clone(), why }
    }

    fn queued(&mut self, job: QueuedJob) {
        let (script, script_truncated) = cut(&job.script, HISTORY_SCRIPT_BYTES);
        {
            let mut st = self.shared.status();
            st.commands += 1;
            st.last_used = SystemTime::now();
            st.queued = self.queue.len() + 1;
            if st.history.len() == HISTORY_ENTRIES {
                st.history.pop_front();
            }
            st.history.push_back(HistoryEntry {
                id: job.id.clone(),
                script,
                script_truncated,
                state: JobState::Queued,
                exit_code: None,
                reason: None,
                submitted_at: SystemTime::now(),
                started_at: None,
                ended_at: None,
                cwd: None,
            });
        }
        self.queue.push_back(job);
    }

    /// Hands the next command to the shell: its script file and FIFOs, then
    /// its control line.
    async fn begin(&mut self, job: QueuedJob) {
        let n = self.next_n;
        self.next_n += 1;
        {
            let mut st = self.shared.status();
            st.queued = self.queue.len();
            st.running = Some(job.id.clone());
            st.state = ShellState::Busy;
        }
        let spare = self.spare.take();
        let files = bootstrap::write_script(self.dir(), n, &job.script).and_then(|()| match spare {
            Some(f) => Ok(f),
            None => bootstrap::make_fifos(self.dir(), n),
        });
        let files = match files {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(shell = %self.shared.name, command = %job.id, "cannot hand the command to the shell: {e}");
                self.end_job(&job, None, None, None, Some(ExitReason::SpawnFailed));
                bootstrap::clean(self.dir(), n);
                self.idle();
                return;
            }
        };
        let line = bootstrap::control_line(n);
        // Taken before the shell can read the line, so every process the
        // command starts is new (taken at `S`, a fast command may already
        // have forked).
        let before = self.descendants(|_| true).into_iter().collect();
        if let Err(e) = self.control.write_all(&line).await {
            // The shell is gone; its status pipe reports that next.
            tracing::warn!(shell = %self.shared.name, "control pipe: {e}");
        }
        self.current = Some(Current { job, n, line, files: Some(files), before, kill: None, recheck: None });
    }

    /// Follows a status record: a command started or ended, or the shell
    /// is idle.
    async fn record(&mut self, rec: Record) {
        match rec {
            Record::Started(n) => {
                let Some(cur) = self.current.as_mut().filter(|c| c.n == n) else { return };
                let Some(files) = cur.files.take() else { return };
                let _ = cur
                    .job
                    .events
                    .send(JobEvent::Started {
                        stdin: files.stdin,
                        stdout: files.stdout,
                        stderr: files.stderr,
                    })
                    .await;
                let id = cur.job.id.clone();
                self.shared.entry(&id, |e| {
                    e.state = JobState::Running;
                    e.started_at = Some(SystemTime::now());
                });
                bootstrap::remove_fifos(self.dir(), n);
                // Asked to die before it started: interrupt it now.
                if self.current.as_ref().is_some_and(|c| c.kill.is_some()) {
                    let _ = self.interrupt();
                }
                self.prepare_next();
            }
            Record::Ended { n, rc, cwd } => {
                let Some(cur) = self.current.take_if(|c| c.n == n) else { return };
                self.end_job(&cur.job, Some(rc), None, Some(cwd.clone()), None);
                self.shared.status().cwd = cwd;
                if cur.files.is_some() {
                    bootstrap::clean(self.dir(), n);
                } else {
                    // Its FIFOs went at `S`; its script goes while the
                    // next command runs.
                    if let Some(old) = self.stale_script.replace(n) {
                        bootstrap::remove_script(self.dir(), old);
                    }
                }
                self.idle();
            }
            Record::Ready => {
                let Some(cur) = &self.current else { return };
                if cur.files.is_some() {
                    if cur.kill.is_some() {
                        // Dropped by an interrupt before it ran: that is
                        // the kill done.
                        let cur = self.current.take().expect("checked");
                        self.end_job(&cur.job, None, None, None, None);
                        bootstrap::clean(self.dir(), cur.n);
                        self.idle();
                    } else {
                        // A stray SIGINT made the shell drop the line
                        // before running it: nothing of it ran, send it
                        // again.
                        let line = cur.line.clone();
                        let _ = self.control.write_all(&line).await;
                    }
                } else {
                    // The command's bookkeeping was clobbered by user code.
                    let cur = self.current.take().expect("checked");
                    self.end_job(&cur.job, None, None, None, None);
                    bootstrap::clean(self.dir(), cur.n);
                    self.idle();
                }
            }
            Record::Unknown => tracing::warn!(shell = %self.shared.name, "unknown status record"),
        }
    }

    /// While the shell runs a command (after its `S`): removes the script
    /// of the one before and makes the FIFOs of the next one, work that
    /// otherwise lies between a request and its exit.
    fn prepare_next(&mut self) {
        if self.dir.is_none() {
            return;
        }
        if let Some(old) = self.stale_script.take() {
            bootstrap::remove_script(self.dir(), old);
        }
        if self.spare.is_none() {
            match bootstrap::make_fifos(self.dir(), self.next_n) {
                Ok(f) => self.spare = Some(f),
                // `begin` tries again, and reports.
                Err(e) => tracing::debug!(shell = %self.shared.name, "cannot make FIFOs ahead: {e}"),
            }
        }
    }

    /// Removes what `prepare_next` made or left (the shell is handed over
    /// or stops).
    pub(super) fn drop_spare(&mut self) {
        if self.spare.take().is_some() {
            bootstrap::remove_fifos(self.dir(), self.next_n);
        }
        if let Some(old) = self.stale_script.take() {
            bootstrap::remove_script(self.dir(), old);
        }
    }

    fn idle(&mut self) {
        let mut st = self.shared.status();
        st.running = None;
        st.state = ShellState::Idle;
        st.last_used = SystemTime::now();
    }

    /// Tells a command's actor that it ended and records it in the history.
    pub(super) fn end_job(
        &self,
        job: &QueuedJob,
        code: Option<i32>,
        signal: Option<i32>,
        cwd: Option<String>,
        reason: Option<ExitReason>,
    ) {
        self.shared.entry(&job.id, |e| {
            e.state = JobState::Exited;
            e.exit_code = code;
            e.ended_at = Some(SystemTime::now());
            e.cwd = cwd.clone();
            e.reason = reason;
        });
        // The actor's channel has room: it holds at most a start and an end.
        let _ = job.events.try_send(JobEvent::Ended { code, signal, cwd, reason });
    }
    /// The shell exited by itself: its status pipe reached end of file.
    async fn exited(&mut self) -> CloseReason {
        let r = self.reap(Duration::from_secs(5)).await;
        let (code, signal) = r.map_or((None, None), |r| (r.code, r.signal));
        let message = match (code, signal) {
            (Some(c), _) => format!("the shell exited with code {c}"),
            (None, Some(s)) => format!("the shell was killed by signal {s}"),
            (None, None) => "the shell ended".to_owned(),
        };
        if let Some(cur) = self.current.take() {
            if cur.files.is_none() {
                // It ran and ended the shell (`exit 3`): its status is the
                // shell's.
                self.end_job(&cur.job, code, signal, None, None);
            } else {
                self.end_job(&cur.job, None, None, None, Some(ExitReason::ShellClosed));
            }
        }
        self.finish(ShellClosed { reason: CloseReason::Exited, code, signal, message });
        CloseReason::Exited
    }

    /// Kills every process of the shell's session and reaps the shell.
    async fn close(
        &mut self,
        reason: CloseReason,
        message: String,
        reply: Option<oneshot::Sender<()>>,
    ) -> CloseReason {
        kill_session(self.shell.pid());
        let r = self.reap(Duration::from_secs(5)).await;
        if let Some(cur) = self.current.take() {
            self.end_job(&cur.job, None, None, None, Some(ExitReason::ShellClosed));
        }
        let (code, signal) = r.map_or((None, None), |r| (r.code, r.signal));
        self.finish(ShellClosed { reason, code, signal, message });
        if let Some(reply) = reply {
            let _ = reply.send(());
        }
        reason
    }

    /// After the shell is gone: ends queued commands, kills what is left of
    /// its session, frees the directory.
    fn finish(&mut self, closed: ShellClosed) {
        // Background jobs die with their shell (only `setsid` ones escape).
        kill_session(self.shell.pid());
        for job in std::mem::take(&mut self.queue) {
            self.end_job(&job, None, None, None, Some(ExitReason::ShellClosed));
        }
        self.shared.linger.cancel();
        self.spare = None;
        self.dir = None;
        let mut st = self.shared.status();
        st.state = ShellState::Closed;
        st.queued = 0;
        st.running = None;
        st.closed = Some(closed);
    }

    /// Waits (bounded) for the shell process to exit and reaps it.
    async fn reap(&mut self, limit: Duration) -> Option<Reaped> {
        let deadline = Instant::now() + limit;
        loop {
            match self.shell.try_reap() {
                Ok(Some(r)) => return Some(r),
                Ok(None) => {}
                Err(_) => return None,
            }
            if tokio::time::timeout_at(deadline, self.shell.ready()).await.is_err() {
                tracing::warn!(shell = %self.shared.name, "shell did not exit: killing it");
                kill_session(self.shell.pid());
                let _ = self.shell.signal(libc::SIGKILL);
                // By pid: the shell is not reaped, so its pid is its own.
                let pid = self.shell.pid();
                return tokio::task::spawn_blocking(move || sys::wait_blocking(pid))
                    .await
                    .ok()
                    .and_then(|r| r.ok())
                    .map(|()| Reaped::unknown());
            }
        }
    }

    /// The shell's private directory.
    fn dir(&self) -> &Path {
        self.dir.as_ref().map_or(Path::new("/nonexistent"), PrivateDir::path)
    }
}
