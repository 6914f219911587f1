//! A command's record and fds for a handover: the metadata and rings of
//! every command, and for a running one its [`LiveState`] as it is, its
//! pipes, terminal and stdin, and its lingering pacers.
//!
//! [`LiveState`]: super::state::LiveState

use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;

use tokio::time::Instant;

use crate::handover::{Frozen, FrozenStdin, Live, Phase};
use crate::pty::Pty;
use crate::sys::Reaped;

use super::ExitReason;
use super::actor::Actor;
use super::source::Source;
use super::state::LiveState;
use super::stdin_writer::{StdinLeft, StdinPipe};

impl Actor {
    /// The command's record for a handover, in `phase`.
    pub(super) fn freeze(&self, phase: Phase) -> Frozen {
        let s = &self.shared;
        let out = s.output();
        Frozen {
            ident: s.ident.clone(),
            rings: [out.rings[0].freeze(), out.rings[1].freeze()],
            seq: out.seq,
            size: out.size,
            ever_attached: s.ever_attached.load(Ordering::SeqCst),
            life: self.life.clone(),
            phase,
        }
    }

    /// A running command's record and fds for a handover, with what its
    /// stopped stdin writer left. A running shell command cannot outlive
    /// its shell, which is closed rather than handed over while busy: it
    /// counts as ended (`shell_closed`).
    pub(super) fn freeze_live(&mut self, stdin: Option<StdinLeft>) -> (Frozen, Vec<OwnedFd>) {
        let mut fds = Vec::new();
        let mut keep = |fd: io::Result<OwnedFd>, what: &str| match fd {
            Ok(fd) => {
                let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
                fds.push(fd);
                Some(raw)
            }
            Err(e) => {
                tracing::warn!(command = %self.shared.ident.id, "{what} not handed over: {e}");
                None
            }
        };
        let mut cwd = None;
        if let Some(job) = &mut self.job {
            cwd = job.cwd.take();
            if !self.state.is_reaped() {
                self.state.end_for(ExitReason::ShellClosed);
                self.state.on_reaped(Reaped::unknown(), &self.life);
            }
        }
        let master = self.pty.take().map(Pty::into_master).and_then(|fd| keep(Ok(fd), "terminal"));
        let outputs = [0, 1].map(|i| match self.pipes[i].take() {
            Some(Source::Pipe(p)) => keep(p.into_blocking_fd(), "output pipe"),
            Some(Source::Pty(_)) => master,
            None => None,
        });
        let mut frozen_stdin = FrozenStdin {
            fd: None,
            open: false,
            pending: Default::default(),
            close: true,
            writers: Vec::new(),
        };
        if let Some(left) = stdin {
            frozen_stdin.open = self.shared.stdin_open.load(Ordering::SeqCst);
            frozen_stdin.pending = serde_bytes::ByteBuf::from(left.pending.to_vec());
            frozen_stdin.close = left.close;
            frozen_stdin.fd = match left.pipe {
                Some(StdinPipe::Pipe(p)) => keep(p.into_blocking_fd(), "stdin pipe"),
                _ => None,
            };
        }
        frozen_stdin.writers = self.shared.writers().freeze();
        let live = Live {
            // The actor ends with the handover: its state goes as it is.
            state: std::mem::replace(&mut self.state, LiveState::new(&self.life, true)),
            cwd,
            outputs,
            master,
            stdin: frozen_stdin,
            lingering: {
                let out = self.shared.output();
                let oldest = [out.rings[0].first_held(), out.rings[1].first_held()];
                out.pacing.freeze(Instant::now(), oldest)
            },
        };
        (self.freeze(Phase::Live(Box::new(live))), fds)
    }
}
