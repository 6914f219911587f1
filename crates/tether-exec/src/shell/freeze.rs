//! Handing an idle named shell to a re-executed daemon, and taking it over.
//!
//! `execve` keeps the process id, so the shell's bash stays this process's
//! child; what must cross the exec is the shell's record (name, cwd,
//! history...) and the three fds the actor owns: the control pipe (bash's
//! stdin), the status pipe (its fd 3) and its log pipe. Only an *idle*
//! shell is handed over: no command running or queued, and no process in
//! its session but bash itself (a background job's output would have no
//! reader across the exec). Its status pipe then holds no record, and its
//! private directory no command files. A busy shell is closed as before.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::net::unix::pipe;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::actor::ShellActor;
use super::bootstrap::Started;
use super::records::Records;
use super::{CloseReason, HistoryEntry, ShellClosed, ShellHandle, ShellShared, ShellState, Status};
use crate::handover::Handover;
use crate::sys::{PrivateDir, Process};

/// One idle shell, stopped.
#[derive(Serialize, Deserialize)]
pub(crate) struct FrozenShell {
    name: String,
    program: String,
    pid: u32,
    created_at: SystemTime,
    cwd: String,
    commands: u64,
    last_used: SystemTime,
    history: Vec<HistoryEntry>,
    /// Its private directory (scripts and FIFOs), kept.
    dir: PathBuf,
    next_n: u64,
    idle_ttl: Option<Duration>,
    ttl: Option<Duration>,
    /// The control pipe's writing end (bash's stdin).
    control: RawFd,
    /// The status pipe's reading end (bash's fd 3).
    status: RawFd,
    /// The log pipe's reading end (bash's stdout and stderr), if open.
    log: Option<RawFd>,
}

impl FrozenShell {
    /// The shell's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The shell's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// A record that sets every field (the handover's golden file).
    #[cfg(test)]
    pub(crate) fn sample() -> FrozenShell {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        FrozenShell {
            name: "dev".into(),
            program: "bash".into(),
            pid: 4242,
            created_at: t,
            cwd: "/tmp".into(),
            commands: 1,
            last_used: t,
            history: vec![HistoryEntry {
                id: "c-0123456789abcdef".into(),
                script: "cd /tmp".into(),
                script_truncated: false,
                state: super::JobState::Exited,
                exit_code: Some(0),
                reason: None,
                submitted_at: t,
                started_at: Some(t),
                ended_at: Some(t),
                cwd: Some("/tmp".into()),
            }],
            dir: "/run/user/0/tether-sh-0123456789abcdef".into(),
            next_n: 2,
            idle_ttl: Some(Duration::from_secs(3600)),
            ttl: Some(Duration::from_secs(600)),
            control: 11,
            status: 12,
            log: Some(13),
        }
    }
}

impl ShellActor {
    /// Stops an idle shell for the next daemon: its record, and copies of
    /// the fds it owns (the actor's own close as it ends). `None` when it is
    /// not idle. The shell is marked closed in this daemon (so the actor
    /// ending does not kill it) and its directory is kept.
    pub(super) fn freeze(&mut self) -> Option<(FrozenShell, Vec<OwnedFd>)> {
        let idle = self.current.is_none() && self.queue.is_empty() && self.records.is_empty();
        if !idle || !self.descendants(|_| true).is_empty() {
            return None;
        }
        let dup = |fd: std::os::fd::BorrowedFd<'_>| fd.try_clone_to_owned();
        let fds = (|| -> io::Result<_> {
            let log = self.log.as_ref().map(|l| dup(l.as_fd())).transpose()?;
            Ok((dup(self.control.as_fd())?, dup(self.status.as_fd())?, log))
        })();
        let (control, status, log) = match fds {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(shell = %self.shared.name, "cannot hand the shell over: {e}");
                return None;
            }
        };
        // No command files cross: the next daemon numbers on from `next_n`.
        self.drop_spare();
        let dir = self.dir.take()?.keep();
        let mut st = self.shared.status();
        let frozen = FrozenShell {
            name: self.shared.name.clone(),
            program: self.shared.program.clone(),
            pid: self.shared.pid,
            created_at: self.shared.created_at,
            cwd: st.cwd.clone(),
            commands: st.commands,
            last_used: st.last_used,
            history: st.history.iter().cloned().collect(),
            dir,
            next_n: self.next_n,
            idle_ttl: self.idle_ttl,
            ttl: self.ttl,
            control: control.as_raw_fd(),
            status: status.as_raw_fd(),
            log: log.as_ref().map(AsRawFd::as_raw_fd),
        };
        st.state = ShellState::Closed;
        st.closed = Some(ShellClosed {
            reason: CloseReason::Shutdown,
            code: None,
            signal: None,
            message: "handed over to the next daemon".into(),
        });
        drop(st);
        let mut owned = vec![control, status];
        owned.extend(log);
        tracing::info!(shell = %frozen.name, pid = frozen.pid, "shell ready to hand over");
        Some((frozen, owned))
    }
}

/// Rebuilds a handed-over shell: its handle and its actor (to be run), on
/// the fds the handover carries.
pub(crate) fn thaw(f: FrozenShell, h: &mut Handover) -> io::Result<Started> {
    let missing = |what| io::Error::new(io::ErrorKind::InvalidData, format!("handover: a shell's {what} fd"));
    let control = pipe::Sender::from_owned_fd(h.fd(Some(f.control)).ok_or_else(|| missing("control"))?)?;
    let status = pipe::Receiver::from_owned_fd(h.fd(Some(f.status)).ok_or_else(|| missing("status"))?)?;
    let log = match h.fd(f.log) {
        Some(fd) => Some(pipe::Receiver::from_owned_fd(fd)?),
        None => None,
    };
    let (ctl, ctl_rx) = mpsc::channel(64);
    let shared = Arc::new(ShellShared {
        name: f.name,
        program: f.program,
        pid: f.pid,
        created_at: f.created_at,
        ctl,
        linger: CancellationToken::new(),
        status: Mutex::new(Status {
            state: ShellState::Idle,
            cwd: f.cwd,
            queued: 0,
            running: None,
            commands: f.commands,
            last_used: f.last_used,
            closed: None,
            history: VecDeque::from(f.history),
        }),
    });
    let actor = ShellActor {
        shared: shared.clone(),
        shell: Process::open(f.pid),
        control,
        status,
        log,
        records: Records::default(),
        dir: Some(PrivateDir::adopt(f.dir)),
        ctl_rx,
        queue: VecDeque::new(),
        current: None,
        next_n: f.next_n,
        spare: None,
        stale_script: None,
        idle_ttl: f.idle_ttl,
        ttl: f.ttl,
    };
    Ok(Started { handle: ShellHandle { shared }, actor })
}
