//! The registry of commands: start, look up, list, remove, shut down.

use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use dashmap::DashMap;
use tokio::net::unix::pipe;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::command::{
    self, Actor, CommandHandle, CommandInfo, HandoverSlot, Lifetimes, Meta, Spawned, SpawnedIo, Stop,
};
use crate::contain::{CgroupChoice, ContainConfig, Containment};
use crate::handover::Handover;
use crate::shell::{self, JobLink, QueuedJob, ShellHandle, ShellInfo, ShellSpec};
use crate::spec::{CommandSpec, ManagerConfig, Program, TermSize};
use crate::{ExecError, process};

/// Pipe buffer asked for on stdout and stderr.
const PIPE_BYTES: i32 = 1 << 20;

/// Smallest ring a command may ask for.
pub const MIN_RING_BYTES: usize = 4096;

/// Longest request key.
pub(crate) const MAX_REQUEST_KEY: usize = 128;

/// Longest drain grace a command may ask for.
const MAX_DRAIN_GRACE: std::time::Duration = std::time::Duration::from_secs(3600);

/// The command manager. Cheap to clone; all clones share one registry.
#[derive(Clone)]
pub struct Manager {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: ManagerConfig,
    commands: DashMap<String, CommandHandle>,
    /// Request keys of held commands, to their ids.
    keys: DashMap<String, String>,
    /// Serialises keyed shell submissions per key (their queueing awaits
    /// the shell), so two of one key make one command. Async mutexes, held
    /// across the submission; an entry lives while someone holds it.
    keyed_runs: DashMap<String, Arc<tokio::sync::Mutex<()>>>,
    shells: DashMap<String, ShellHandle>,
    /// Serialises shell creation, so two clients creating the same name at
    /// once get one shell. An async mutex: held across the shell's start-up.
    creating: tokio::sync::Mutex<()>,
    /// Commands held (running or finished), counted separately from the map
    /// so that the limit check and the reservation are one atomic step.
    count: AtomicUsize,
    /// Memory committed to all held commands: rings (both streams) and
    /// terminal screen models.
    committed: AtomicUsize,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    kill_on_shutdown: bool,
    /// Where actors send their state when the manager hands over.
    handover: HandoverSlot,
    /// A restart has begun ([`Manager::begin_handover`]).
    restarting: Arc<AtomicBool>,
    /// How commands' processes are found and ended.
    contain: Arc<Containment>,
}

/// Committed memory (rings, and a terminal's screen model) and a command
/// slot, given back on drop.
pub(crate) struct Reservation {
    /// Ring bytes.
    bytes: usize,
    /// The part held for the screen model (changes with the terminal's
    /// size).
    screen: AtomicUsize,
    /// Where both are counted, with the command slot.
    inner: Arc<Inner>,
}

impl Reservation {
    fn new(bytes: usize, screen: usize, inner: &Arc<Inner>) -> Reservation {
        Reservation { bytes, screen: AtomicUsize::new(screen), inner: inner.clone() }
    }

    /// Charges the screen model for a terminal of `size` instead of its
    /// previous size; refused (nothing changes) if that exceeds the budget.
    pub(crate) fn charge_screen(&self, size: TermSize) -> Result<(), ExecError> {
        let new = screen_bytes(size);
        let old = self.screen.load(Ordering::SeqCst);
        if new > old {
            let grow = new - old;
            let limit = self.inner.cfg.max_total_ring_bytes;
            self.inner
                .committed
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| (c + grow <= limit).then_some(c + grow))
                .map_err(|c| ExecError::ScreenMemory {
                    rows: size.rows,
                    cols: size.cols,
                    asked: new,
                    available: limit.saturating_sub(c) + old,
                    limit,
                })?;
        } else {
            self.inner.committed.fetch_sub(old - new, Ordering::SeqCst);
        }
        self.screen.store(new, Ordering::SeqCst);
        Ok(())
    }
}

/// What a screen model of this size costs: vt100 keeps two grids (the
/// normal and the alternate screen) of `rows x cols` cells, plus a row
/// header each.
pub(crate) fn screen_bytes(size: TermSize) -> usize {
    let cells = usize::from(size.rows) * usize::from(size.cols);
    2 * (cells * std::mem::size_of::<vt100::Cell>() + usize::from(size.rows) * 64)
}

impl Inner {
    /// Drops a command's request key (only if it still names that command).
    fn forget_key(&self, key: Option<&str>, id: &str) {
        if let Some(key) = key {
            self.keys.remove_if(key, |_, v| v == id);
        }
    }
}

/// Refuses a request key that is empty, too long or holds a NUL.
fn check_key(key: &str) -> Result<(), ExecError> {
    if key.is_empty() || key.len() > MAX_REQUEST_KEY || key.contains('\0') {
        return Err(ExecError::BadRequestKey);
    }
    Ok(())
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.inner.committed.fetch_sub(self.bytes + *self.screen.get_mut(), Ordering::SeqCst);
        self.inner.count.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Manager {
    /// A manager with these defaults and limits. `kill_on_shutdown` decides
    /// whether [`Manager::shutdown`] kills running commands.
    pub fn new(cfg: ManagerConfig, kill_on_shutdown: bool) -> Manager {
        let m = Manager::create(cfg, kill_on_shutdown);
        // A daemon that leaves its commands when it stops leaves them when
        // it crashes too; one that ends them ends what a crash left.
        if kill_on_shutdown {
            m.inner.contain.sweep_crashed(&Default::default());
        }
        m
    }

    /// A manager, without the sweep of a crashed predecessor's commands.
    fn create(cfg: ManagerConfig, kill_on_shutdown: bool) -> Manager {
        process::cloexec_inherited_fds();
        process::catch_inherited_ignores();
        process::raise_fd_limit();
        let contain = Containment::new(&cfg.contain).unwrap_or_else(|e| {
            tracing::error!("containment: {e}: commands are contained by process group and environment only");
            let fallback =
                ContainConfig { cgroup: CgroupChoice::Off, subreaper: false, ..cfg.contain.clone() };
            Containment::new(&fallback).expect("containment without cgroups or subreaper cannot fail")
        });
        if contain.subreaper() {
            spawn_orphan_reaper();
        }
        Manager {
            inner: Arc::new(Inner {
                contain: Arc::new(contain),
                cfg,
                commands: DashMap::new(),
                keys: DashMap::new(),
                keyed_runs: DashMap::new(),
                shells: DashMap::new(),
                creating: tokio::sync::Mutex::new(()),
                count: AtomicUsize::new(0),
                committed: AtomicUsize::new(0),
                tracker: TaskTracker::new(),
                shutdown: CancellationToken::new(),
                kill_on_shutdown,
                handover: Arc::new(OnceLock::new()),
                restarting: Arc::new(AtomicBool::new(false)),
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ManagerConfig {
        &self.inner.cfg
    }

    /// Starts a command. Must be called inside a tokio runtime.
    ///
    /// Every failure (bad input, spawn error, limits) leaves nothing behind:
    /// no record, no process, no zombie. A spec with a request key that a
    /// held command was started with returns that command (see
    /// [`Manager::start_keyed`]).
    pub fn start(&self, spec: CommandSpec) -> Result<CommandHandle, ExecError> {
        self.start_keyed(spec).map(|(h, _)| h)
    }

    /// Starts a command, or, when the spec's request key is that of a held
    /// command, returns that one; `true` when it started a new one. Two
    /// starts with one key at once make one command.
    pub fn start_keyed(&self, spec: CommandSpec) -> Result<(CommandHandle, bool), ExecError> {
        let Some(key) = spec.request_key.clone() else {
            return self.start_new(spec).map(|h| (h, true));
        };
        check_key(&key)?;
        // The entry's shard stays locked while the command starts: a
        // second start of the key waits for the first (no `.await` here;
        // a spawn takes about a millisecond).
        match self.inner.keys.entry(key) {
            dashmap::Entry::Occupied(mut e) => {
                // By id only: `get` would look in `keys` too, whose shard
                // this entry holds locked.
                let held = self.inner.commands.get(e.get()).map(|r| r.value().clone());
                if let Some(h) = held {
                    return Ok((h, false));
                }
                let h = self.start_new(spec)?;
                e.insert(h.id().to_owned());
                Ok((h, true))
            }
            dashmap::Entry::Vacant(v) => {
                let h = self.start_new(spec)?;
                v.insert(h.id().to_owned());
                Ok((h, true))
            }
        }
    }

    fn start_new(&self, spec: CommandSpec) -> Result<CommandHandle, ExecError> {
        let inner = &self.inner;
        if inner.shutdown.is_cancelled() {
            return Err(ExecError::ShuttingDown);
        }
        let cfg = &inner.cfg;
        let argv = spec.resolved_argv(cfg);
        validate(&spec, &argv)?;
        let ring_bytes = self.ring_bytes(&spec)?;
        // A terminal has one output stream, so one ring's worth of memory.
        let rings = if spec.pty.is_some() { 1 } else { 2 };
        let reservation = self.reserve(rings * ring_bytes, spec.pty.as_ref().map(|p| p.size))?;

        let id = new_id();
        let spawned = spawn(&id, &spec, &argv, cfg, &inner.contain)?;
        let life = self.lifetimes(&spec);
        let meta = Meta {
            id: id.clone(),
            name: spec.name.clone(),
            labels: spec.labels.clone(),
            argv,
            ring_bytes,
            initial_stdin: spec.stdin.clone(),
            close_stdin: spec.close_stdin,
            pty_size: spec.pty.as_ref().map(|p| p.size),
            shell: None,
            request_key: spec.request_key.clone(),
        };
        tracing::info!(%id, pid = spawned.pid, argv0 = %meta.argv[0], "command started");
        let (handle, actor) = command::new_command(meta, spawned, life, reservation, inner.contain.clone());
        self.launch(&handle, actor);
        Ok(handle)
    }

    /// Registers a command and runs its actor.
    fn launch(&self, handle: &CommandHandle, actor: Actor) {
        let inner = &self.inner;
        let id = handle.id().to_owned();
        inner.commands.insert(id.clone(), handle.clone());
        let weak = Arc::downgrade(&self.inner);
        let stop = Stop {
            token: inner.shutdown.clone(),
            kill: inner.kill_on_shutdown,
            handover: inner.handover.clone(),
            restarting: inner.restarting.clone(),
        };
        // A root span: the command outlives the connection that started it.
        let span = tracing::info_span!(parent: None, "command", %id, pid = handle.pid());
        let key = handle.shared.request_key.clone();
        inner.tracker.spawn(async move {
            actor.run(stop).instrument(span).await;
            if let Some(inner) = weak.upgrade() {
                inner.commands.remove(&id);
                inner.forget_key(key.as_deref(), &id);
            }
        });
    }

    fn ring_bytes(&self, spec: &CommandSpec) -> Result<usize, ExecError> {
        let cfg = &self.inner.cfg;
        match spec.ring_bytes {
            None => Ok(cfg.ring_bytes),
            Some(n) if (MIN_RING_BYTES..=cfg.max_ring_bytes).contains(&n) => Ok(n),
            Some(n) => Err(ExecError::BadRingSize { asked: n as u64, max: cfg.max_ring_bytes as u64 }),
        }
    }

    fn lifetimes(&self, spec: &CommandSpec) -> Lifetimes {
        let cfg = &self.inner.cfg;
        Lifetimes {
            timeout: spec.timeout,
            idle_timeout: spec.resolved_idle(cfg),
            ttl: spec.resolved_ttl(cfg),
            kill_on_disconnect: spec.kill_on_disconnect,
            max_output_bytes: spec.max_output_bytes,
            output_limit: spec.output_limit,
            kill_grace: spec.kill_grace.unwrap_or(cfg.kill_grace),
            drain_grace: spec.drain_grace.unwrap_or(cfg.drain_grace),
        }
    }

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
        let handle = started.handle;
        tracing::info!(shell = %name, pid = handle.pid(), "shell started");
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
        Ok((handle, true))
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
        let Some(key) = spec.request_key.clone() else {
            return self.shell_run_new(shell, spec).await.map(|h| (h, true));
        };
        check_key(&key)?;
        let lock = self.inner.keyed_runs.entry(key.clone()).or_default().value().clone();
        let r = {
            let _one_at_a_time = lock.lock().await;
            let held = self.inner.keys.get(&key).map(|id| id.value().clone());
            match held.and_then(|id| self.get(&id).ok()) {
                Some(h) => Ok((h, false)),
                None => self.shell_run_new(shell, spec).await.map(|h| {
                    self.inner.keys.insert(key.clone(), h.id().to_owned());
                    (h, true)
                }),
            }
        };
        // Ours and the map's: nobody else waits on this key.
        self.inner.keyed_runs.remove_if(&key, |_, l| Arc::strong_count(l) <= 2);
        r
    }

    async fn shell_run_new(&self, shell: &str, spec: CommandSpec) -> Result<CommandHandle, ExecError> {
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
        let id = new_id();
        let (events_tx, events) = tokio::sync::mpsc::channel(4);
        let link = JobLink { shell: sh.shared.ctl.clone(), events, linger: sh.shared.linger.clone() };
        let life = self.lifetimes(&spec);
        let kill_grace = life.kill_grace;
        let meta = Meta {
            id: id.clone(),
            name: spec.name.clone(),
            labels: spec.labels.clone(),
            argv: vec![script.clone()],
            ring_bytes,
            initial_stdin: spec.stdin.clone(),
            close_stdin: spec.close_stdin,
            pty_size: None,
            shell: Some(shell.to_owned()),
            request_key: spec.request_key.clone(),
        };
        let spawned = Spawned { pid: sh.pid(), io: SpawnedIo::Shell(link), leaf: None };
        let (handle, actor) =
            command::new_command(meta, spawned, life, reservation, self.inner.contain.clone());
        // Queue first: a refused command leaves no record behind.
        sh.submit(QueuedJob { id: id.clone(), script, events: events_tx, kill_grace }).await?;
        tracing::info!(%id, shell, "shell command queued");
        self.launch(&handle, actor);
        Ok(handle)
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

    /// Says that a handover is coming: from now on clients going away (the
    /// restart closes every connection) do not trigger
    /// `kill_on_disconnect`. Call it before closing the connections.
    pub fn begin_handover(&self) {
        self.inner.restarting.store(true, Ordering::SeqCst);
    }

    /// Stops every command without touching its process and returns their
    /// state and fds, for the next daemon ([`Manager::resume`], see the
    /// `handover` module). Named shells cannot be handed over: they are
    /// closed first, and their commands handed over finished
    /// (`shell_closed`). The manager accepts nothing afterwards.
    pub async fn handover(&self) -> Handover {
        let inner = &self.inner;
        self.begin_handover();
        let shells: Vec<ShellHandle> = inner.shells.iter().map(|r| r.value().clone()).collect();
        for sh in &shells {
            sh.close().await;
            for id in sh.command_ids() {
                if let Ok(h) = self.get(&id) {
                    // Its end comes once the shell's session is gone.
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), h.wait()).await;
                }
            }
        }
        let (tx, mut rx) = mpsc::unbounded_channel();
        let _ = inner.handover.set(tx);
        inner.shutdown.cancel();
        inner.tracker.close();
        inner.tracker.wait().await;
        let (mut commands, mut fds) = (Vec::new(), Vec::new());
        while let Ok((frozen, owned)) = rx.try_recv() {
            commands.push(frozen);
            fds.extend(owned);
        }
        tracing::info!(commands = commands.len(), fds = fds.len(), "commands ready to hand over");
        Handover::new(commands, fds)
    }

    /// A manager that takes over the commands of a [`Handover`] (their
    /// fds are taken out of it; fds added by the caller stay). Limits are
    /// not applied to them: they were admitted before.
    pub fn resume(cfg: ManagerConfig, kill_on_shutdown: bool, h: &mut Handover) -> Manager {
        let m = Manager::create(cfg, kill_on_shutdown);
        let inner = &m.inner;
        let mut resumed = Vec::new();
        for frozen in std::mem::take(&mut h.commands) {
            // A terminal has one output stream, so one ring's worth.
            let rings = if frozen.size.is_some() { 1 } else { 2 };
            let bytes = rings * frozen.rings[0].cap;
            let screen = frozen.size.map_or(0, |(size, _)| screen_bytes(size));
            inner.count.fetch_add(1, Ordering::SeqCst);
            inner.committed.fetch_add(bytes + screen, Ordering::SeqCst);
            let reservation = Reservation::new(bytes, screen, inner);
            let (handle, actor) = command::thaw(frozen, h, reservation, inner.contain.clone());
            if let Some(key) = &handle.shared.request_key {
                inner.keys.insert(key.clone(), handle.id().to_owned());
            }
            tracing::info!(id = handle.id(), pid = handle.pid(), "command taken over");
            m.launch(&handle, actor);
            resumed.push(handle);
        }
        if kill_on_shutdown {
            let kept = resumed.iter().map(|h| h.id().to_owned()).collect();
            inner.contain.sweep_crashed(&kept);
        }
        // The rings are slices of the handover's mapping: copy each into a
        // buffer of its own, one command at a time, so that the mapping is
        // released and each ring's memory leaves with its command.
        if !resumed.is_empty() {
            tokio::spawn(async move {
                for h in resumed {
                    h.reown_rings();
                    tokio::task::yield_now().await;
                }
                tracing::debug!("handed-over rings copied: the handover mapping is released");
            });
        }
        m
    }

    /// A command slot and `bytes` of rings, plus the screen model of a
    /// terminal of `screen` size.
    fn reserve(&self, bytes: usize, screen: Option<TermSize>) -> Result<Reservation, ExecError> {
        let inner = &self.inner;
        let max = inner.cfg.max_commands;
        inner
            .count
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < max).then_some(n + 1))
            .map_err(|_| ExecError::TooManyCommands(max))?;
        let limit = inner.cfg.max_total_ring_bytes;
        let screen_cost = screen.map_or(0, screen_bytes);
        let total = bytes + screen_cost;
        let committed = inner
            .committed
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| (c + total <= limit).then_some(c + total));
        match committed {
            Ok(_) => Ok(Reservation::new(bytes, screen_cost, inner)),
            Err(c) => {
                inner.count.fetch_sub(1, Ordering::SeqCst);
                let available = limit.saturating_sub(c);
                Err(match screen {
                    // The rings alone fit: the screen is what does not.
                    Some(size) if bytes <= available => ExecError::ScreenMemory {
                        rows: size.rows,
                        cols: size.cols,
                        asked: screen_cost,
                        available: available - bytes,
                        limit,
                    },
                    _ => ExecError::RingMemory { asked: total, available, limit },
                })
            }
        }
    }

    /// A handle to a held command, by its id or by the request key it was
    /// started with.
    pub fn get(&self, id: &str) -> Result<CommandHandle, ExecError> {
        // Clone out of the maps at once: a dashmap `Ref` must never be held
        // across an `.await` by the caller.
        let by_id = |id: &str| self.inner.commands.get(id).map(|r| r.value().clone());
        by_id(id)
            .or_else(|| {
                let real = self.inner.keys.get(id).map(|r| r.value().clone())?;
                by_id(&real)
            })
            .ok_or_else(|| ExecError::NotFound(id.to_owned()))
    }

    /// A held command with this label, if any (without building a
    /// listing of every command).
    pub fn find_by_label(&self, key: &str, value: &str) -> Option<CommandHandle> {
        self.inner
            .commands
            .iter()
            .find(|r| r.value().shared.labels.get(key).is_some_and(|v| v == value))
            .map(|r| r.value().clone())
    }

    /// All held commands, oldest first.
    pub fn list(&self) -> Vec<CommandInfo> {
        let handles: Vec<CommandHandle> = self.inner.commands.iter().map(|r| r.value().clone()).collect();
        let mut infos: Vec<CommandInfo> = handles.iter().map(CommandHandle::info).collect();
        infos.sort_by(|a, b| a.started_at.cmp(&b.started_at).then(a.id.cmp(&b.id)));
        infos
    }

    /// Forgets a command, killing it first if it runs.
    pub async fn remove(&self, id: &str) -> Result<(), ExecError> {
        let h = self.get(id)?;
        let id = h.id();
        self.inner.commands.remove(id);
        self.inner.forget_key(h.shared.request_key.as_deref(), id);
        let _ = h.shared.ctl.send(command::Control::Remove).await;
        Ok(())
    }

    /// Number of held commands.
    pub fn len(&self) -> usize {
        self.inner.count.load(Ordering::SeqCst)
    }

    /// True when no command is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Ring memory committed to held commands.
    pub fn committed_ring_bytes(&self) -> usize {
        self.inner.committed.load(Ordering::SeqCst)
    }

    /// Stops accepting commands, kills running ones (if so configured),
    /// reaps them and waits for every command task to end.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
        if self.inner.kill_on_shutdown {
            let contain = self.inner.contain.clone();
            let _ = tokio::task::spawn_blocking(move || contain.remove_base()).await;
        }
    }
}

fn new_id() -> String {
    format!("c-{:016x}", rand::random::<u64>())
}

fn validate(spec: &CommandSpec, argv: &[String]) -> Result<(), ExecError> {
    if argv.is_empty() || argv[0].is_empty() {
        return Err(ExecError::EmptyArgv);
    }
    if argv.iter().any(|a| a.contains('\0')) {
        return Err(ExecError::NulByte { what: "argv" });
    }
    validate_env(&spec.env)?;
    validate_drain_grace(spec)?;
    spec.check_metadata()?;
    if let Some(pty) = &spec.pty {
        if !pty.size.is_valid() {
            return Err(ExecError::BadSize { rows: pty.size.rows, cols: pty.size.cols });
        }
        if pty.term.as_deref().is_some_and(|t| t.contains('\0')) {
            return Err(ExecError::NulByte { what: "term" });
        }
    }
    if let Some(cwd) = &spec.cwd {
        validate_cwd(cwd)?;
    }
    Ok(())
}

fn validate_drain_grace(spec: &CommandSpec) -> Result<(), ExecError> {
    match spec.drain_grace {
        Some(asked) if asked > MAX_DRAIN_GRACE => {
            Err(ExecError::BadDrainGrace { asked, max: MAX_DRAIN_GRACE })
        }
        _ => Ok(()),
    }
}

fn validate_env(env: &std::collections::BTreeMap<String, String>) -> Result<(), ExecError> {
    for (k, v) in env {
        if k.contains('\0') || v.contains('\0') {
            return Err(ExecError::NulByte { what: "env" });
        }
        if k.is_empty() || k.contains('=') {
            return Err(ExecError::BadEnvName(k.clone()));
        }
    }
    Ok(())
}

fn validate_cwd(cwd: &std::path::Path) -> Result<(), ExecError> {
    let shown = cwd.to_string_lossy().into_owned();
    if shown.contains('\0') {
        return Err(ExecError::NulByte { what: "cwd" });
    }
    match std::fs::metadata(cwd) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => {
            Err(ExecError::BadCwd { path: shown, source: std::io::Error::from_raw_os_error(libc::ENOTDIR) })
        }
        Err(source) => Err(ExecError::BadCwd { path: shown, source }),
    }
}

fn spawn(
    id: &str,
    spec: &CommandSpec,
    argv: &[String],
    cfg: &ManagerConfig,
    contain: &Containment,
) -> Result<Spawned, ExecError> {
    let mut cmd = command(spec, argv, cfg);
    let leaf = contain
        .prepare(id, &mut cmd)
        .map_err(|source| ExecError::Io { context: "preparing the command's cgroup", source })?;
    let spawned = match &spec.pty {
        Some(opts) => crate::pty::spawn(cmd, &argv[0], opts).map(|(pid, pty)| Spawned {
            pid,
            io: SpawnedIo::Pty(pty),
            leaf: leaf.clone(),
        }),
        None => spawn_piped(cmd, &argv[0]).map(|s| Spawned { leaf: leaf.clone(), ..s }),
    };
    if let (Err(_), Some(leaf)) = (&spawned, &leaf) {
        leaf.kill_and_remove();
    }
    spawned
}

/// Reaps the orphans the daemon adopts as a subreaper: on every SIGCHLD,
/// and again a second later while some are left (a zombie is reaped once it
/// has been one for a second, so a child someone else is about to wait for
/// is left to them).
fn spawn_orphan_reaper() {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        tracing::warn!("no runtime: orphans adopted by the daemon are not reaped");
        return;
    };
    rt.spawn(async move {
        let Ok(mut sigchld) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()) else {
            tracing::warn!("no SIGCHLD stream: orphans adopted by the daemon are not reaped");
            return;
        };
        let mut seen = std::collections::HashMap::new();
        loop {
            if seen.is_empty() {
                if sigchld.recv().await.is_none() {
                    return;
                }
            } else {
                // Some are too young to reap: look again when they are not.
                tokio::select! {
                    _ = sigchld.recv() => {}
                    _ = tokio::time::sleep(std::time::Duration::from_millis(1100)) => {}
                }
            }
            seen = tokio::task::spawn_blocking(move || process::reap_orphans(seen)).await.unwrap_or_default();
        }
    });
}

/// The program, arguments, environment and cwd of a command.
fn command(spec: &CommandSpec, argv: &[String], cfg: &ManagerConfig) -> std::process::Command {
    let mut cmd = std::process::Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    if spec.env_clear {
        cmd.env_clear();
    }
    for k in &cfg.env_remove {
        cmd.env_remove(k);
    }
    cmd.envs(&spec.env);
    if let Some(cwd) = &spec.cwd {
        cmd.current_dir(cwd);
    }
    cmd
}

fn spawn_piped(mut cmd: std::process::Command, program: &str) -> Result<Spawned, ExecError> {
    // Its own process group, so signals reach the whole job. std resets
    // SIGPIPE and the signal mask in the child, and every fd the daemon
    // opens is close-on-exec, so only 0/1/2 are inherited.
    cmd.process_group(0).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| ExecError::Spawn { program: program.to_owned(), source })?;
    let pid = child.id();
    process::register_leader(pid);
    let pipes = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let io = move || -> std::io::Result<Spawned> {
        let (Some(stdin), Some(stdout), Some(stderr)) = pipes else {
            return Err(std::io::Error::other("missing stdio pipe"));
        };
        process::grow_pipe(&stdout, PIPE_BYTES);
        process::grow_pipe(&stderr, PIPE_BYTES);
        Ok(Spawned {
            pid,
            leaf: None,
            io: SpawnedIo::Pipes {
                stdin: pipe::Sender::from_owned_fd(OwnedFd::from(stdin))?,
                stdout: pipe::Receiver::from_owned_fd(OwnedFd::from(stdout))?,
                stderr: pipe::Receiver::from_owned_fd(OwnedFd::from(stderr))?,
            },
        })
    };
    match io() {
        Ok(s) => Ok(s),
        Err(source) => {
            // Leave no process and no zombie behind.
            let _ = process::signal_group(pid, libc::SIGKILL);
            let _ = child.wait();
            Err(ExecError::Io { context: "registering pipes", source })
        }
    }
}
