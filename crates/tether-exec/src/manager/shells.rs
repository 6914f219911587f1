//! Named shells in the registry: create, look up, queue commands, close.

use std::sync::Arc;

use tracing::Instrument;

use super::spawn::{new_id, validate_cwd, validate_drain_grace, validate_env};
use super::{Manager, check_key};
use crate::ExecError;
use crate::command::{self, CommandHandle, Meta, Spawned, SpawnedIo};
use crate::shell::{self, JobLink, QueuedJob, ShellHandle, ShellInfo, ShellSpec};
use crate::spec::{CommandSpec, Program};

impl Manager {
    /// Creates a named shell, or returns the live shell of that name
    /// (`false`: it existed). A closed shell of that name is replaced.
    pub async fn create_shell(&self, spec: ShellSpec) -> Result<(ShellHandle, bool), ExecError> {
        let inner = &self.inner;
        if inner.shutdown.is_cancelled() {
            return Err(ExecError::ShuttingDown);
        }
        let name = match &spec.name {
            Some(n) if shell::valid_name(n) => n.clone(),
            Some(n) => return Err(ExecError::BadShellName(n.clone())),
            None => shell::new_name(),
        };
        validate_env(&spec.env)?;
        if let Some(cwd) = &spec.cwd {
            validate_cwd(cwd)?;
        }
        if spec.program.as_deref().is_some_and(|p| p.is_empty() || p.contains('\0')) {
            return Err(ExecError::NulByte { what: "program" });
        }
        let _one_at_a_time = inner.creating.lock().await;
        if let Ok(h) = self.shell(&name) {
            if !h.is_closed() {
                return Ok((h, false));
            }
            inner.shells.remove(&name);
        }
        let live = inner.shells.iter().filter(|s| !s.value().is_closed()).count();
        if live >= inner.cfg.max_shells {
            return Err(ExecError::TooManyShells(inner.cfg.max_shells));
        }
        let idle_ttl = spec.idle_ttl.resolve(inner.cfg.shell_idle_ttl);
        // Marked with the seat, so a crash sweep finds it and its jobs.
        let mut spec = spec.clone();
        if let Some(seat) = &inner.cfg.contain.seat {
            spec.env.insert(crate::SEAT_ENV.to_owned(), seat.clone());
        }
        let started =
            shell::start(name.clone(), &spec, &inner.cfg.env_remove, idle_ttl, inner.cfg.ttl).await?;
        tracing::info!(shell = %name, pid = started.handle.pid(), "shell started");
        Ok((self.run_shell(started), true))
    }

    /// Registers a started (or taken over) shell and runs its actor.
    pub(super) fn run_shell(&self, started: shell::Started) -> ShellHandle {
        let inner = &self.inner;
        let handle = started.handle;
        let name = handle.name().to_owned();
        inner.shells.insert(name.clone(), handle.clone());
        let weak = Arc::downgrade(&self.inner);
        let shutdown = inner.shutdown.clone();
        let span = tracing::info_span!(parent: None, "shell", %name, pid = handle.pid());
        let me = handle.clone();
        let actor = started.actor;
        inner.tracker.spawn(async move {
            actor.run(shutdown).instrument(span).await;
            if let Some(inner) = weak.upgrade() {
                // Only this shell: the name may belong to a newer one now.
                inner.shells.remove_if(&name, |_, h| Arc::ptr_eq(&h.shared, &me.shared));
            }
        });
        handle
    }

    /// A handle to a shell.
    pub fn shell(&self, name: &str) -> Result<ShellHandle, ExecError> {
        self.inner
            .shells
            .get(name)
            .map(|r| r.value().clone())
            .ok_or_else(|| ExecError::ShellNotFound(name.to_owned()))
    }

    /// All shells (live and recently closed), oldest first.
    pub fn shells(&self) -> Vec<ShellInfo> {
        let handles: Vec<ShellHandle> = self.inner.shells.iter().map(|r| r.value().clone()).collect();
        let mut infos: Vec<ShellInfo> = handles.iter().map(ShellHandle::info).collect();
        infos.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.name.cmp(&b.name)));
        infos
    }

    /// Queues a script in a shell and returns its command at once (queued
    /// or running). The spec's program must be [`CommandSpec::shell`] with
    /// the default shell; cwd, env and PTY belong to the shell, not to one
    /// command, and are refused.
    pub async fn shell_run(&self, shell: &str, spec: CommandSpec) -> Result<CommandHandle, ExecError> {
        self.shell_run_keyed(shell, spec).await.map(|(h, _)| h)
    }

    /// [`Manager::shell_run`], or, when the spec's request key is that of a
    /// held command, that command; `true` when it queued a new one.
    pub async fn shell_run_keyed(
        &self,
        shell: &str,
        spec: CommandSpec,
    ) -> Result<(CommandHandle, bool), ExecError> {
        self.shell_run_keyed_then(shell, spec, |_| ()).await.map(|(h, (), new)| (h, new))
    }

    /// [`Manager::shell_run_keyed`], calling `first` with the command's
    /// handle before its actor reads a byte of its output, as
    /// [`Manager::start_keyed_then`] does.
    pub async fn shell_run_keyed_then<T>(
        &self,
        shell: &str,
        spec: CommandSpec,
        first: impl FnOnce(&CommandHandle) -> T,
    ) -> Result<(CommandHandle, T, bool), ExecError> {
        let Some(key) = spec.request_key.clone() else {
            return self.shell_run_new(shell, spec, first).await.map(|(h, t)| (h, t, true));
        };
        check_key(&key)?;
        let lock = self.inner.keyed_runs.entry(key.clone()).or_default().value().clone();
        let r = {
            let _one_at_a_time = lock.lock().await;
            let held = self.inner.keys.get(&key).map(|id| id.value().clone());
            match held.and_then(|id| self.get(&id).ok()) {
                Some(h) => {
                    let t = first(&h);
                    Ok((h, t, false))
                }
                None => self.shell_run_new(shell, spec, first).await.map(|(h, t)| {
                    self.inner.keys.insert(key.clone(), h.id().to_owned());
                    (h, t, true)
                }),
            }
        };
        // Ours and the map's: nobody else waits on this key.
        self.inner.keyed_runs.remove_if(&key, |_, l| Arc::strong_count(l) <= 2);
        r
    }

    pub(super) async fn shell_run_new<T>(
        &self,
        shell: &str,
        spec: CommandSpec,
        first: impl FnOnce(&CommandHandle) -> T,
    ) -> Result<(CommandHandle, T), ExecError> {
        let inner = &self.inner;
        if inner.shutdown.is_cancelled() {
            return Err(ExecError::ShuttingDown);
        }
        let sh = self.shell(shell)?;
        let script = match &spec.program {
            Program::Shell { shell: None, script } => script.clone(),
            Program::Shell { shell: Some(_), .. } => return Err(ExecError::NotForShell("a shell program")),
            Program::Argv(_) => return Err(ExecError::NotForShell("argv")),
        };
        if script.contains('\0') {
            return Err(ExecError::NulByte { what: "script" });
        }
        if spec.cwd.is_some() {
            return Err(ExecError::NotForShell("cwd"));
        }
        if !spec.env.is_empty() || spec.env_clear {
            return Err(ExecError::NotForShell("env"));
        }
        if spec.pty.is_some() {
            return Err(ExecError::NotForShell("pty"));
        }
        validate_drain_grace(&spec)?;
        spec.check_metadata()?;
        if sh.is_closed() {
            let why = sh.info().closed.map_or_else(|| "it has closed".to_owned(), |c| c.message);
            return Err(ExecError::ShellClosed { name: shell.to_owned(), why });
        }
        let ring_bytes = self.ring_bytes(&spec)?;
        let reservation = self.reserve(2 * ring_bytes, None)?;
        let id = new_id(self.inner.cfg.node_id.as_deref());
        metrics::counter!("tether_commands_started_total", "kind" => "shell").increment(1);
        let (events_tx, events) = tokio::sync::mpsc::channel(4);
        let link = JobLink { shell: sh.shared.ctl.clone(), events, linger: sh.shared.linger.clone() };
        let life = self.lifetimes(&spec);
        let kill_grace = life.kill_grace;
        let meta = Meta::new(&id, &spec, vec![script.clone()], ring_bytes, Some(shell.to_owned()));
        let spawned = Spawned { pid: sh.pid(), io: SpawnedIo::Shell(link), leaf: None };
        let (handle, actor) =
            command::new_command(meta, spawned, life, reservation, self.inner.contain.clone());
        // Queue first: a refused command leaves no record behind.
        sh.submit(QueuedJob { id: id.clone(), script, events: events_tx, kill_grace }).await?;
        tracing::info!(command = %id, shell, "shell command queued");
        let t = first(&handle);
        self.launch(&handle, actor);
        Ok((handle, t))
    }

    /// Closes a shell (killing what it runs and its background jobs) and
    /// forgets it and its commands.
    pub async fn close_shell(&self, name: &str) -> Result<(), ExecError> {
        let sh = self.shell(name)?;
        sh.close().await;
        self.inner.shells.remove_if(name, |_, h| Arc::ptr_eq(&h.shared, &sh.shared));
        for id in sh.command_ids() {
            let _ = self.remove(&id).await;
        }
        Ok(())
    }
}
