//! The registry of commands: start, look up, list, remove, shut down.
//!
//! # Layout
//! - `budget`: [`Reservation`], the memory and command slot each held
//!   command commits.
//! - `spawn`: validating a spec and spawning its process.
//! - `shells`: named shells and the commands queued on them.
//! - `restart`: the handover to a re-executed daemon, and resuming.
//! - `actors`: the runtime commands' actors run on, apart from the
//!   daemon's.

mod actors;
mod budget;
mod restart;
mod shells;
mod spawn;

pub(crate) use actors::handle as actors_handle;
pub(crate) use budget::Reservation;
use spawn::{new_id, spawn_orphan_reaper, validate};

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use dashmap::DashMap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::command::{self, Actor, CommandHandle, CommandInfo, HandoverSlot, Lifetimes, Meta, Stop};
use crate::contain::{CgroupChoice, ContainConfig, Containment};
use crate::shell::ShellHandle;
use crate::spec::{CommandSpec, ManagerConfig};
use crate::{ExecError, sys};

/// Smallest ring a command may ask for.
pub const MIN_RING_BYTES: usize = 4096;

/// Longest request key.
pub(crate) const MAX_REQUEST_KEY: usize = 128;

/// Longest [`Manager::remove`] waits for the command's actor to end (a
/// process in uninterruptible sleep, a shell slow to give up its command).
pub(crate) const REMOVE_WAIT: Duration = Duration::from_secs(5);

/// The command manager. Cheap to clone; all clones share one registry.
#[derive(Clone)]
pub struct Manager {
    inner: Arc<Inner>,
}

pub(super) struct Inner {
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
    /// Held shared by a start from its shutdown check until its actor is
    /// launched, and exclusively to cancel `shutdown`: a start either sees
    /// the cancellation or launches before it, so its actor is tracked
    /// when the tracker is waited for (handed over or killed), never
    /// launched after. A std lock: a start does not await while it holds it.
    launching: std::sync::RwLock<()>,
    kill_on_shutdown: bool,
    /// Where actors send their state when the manager hands over.
    handover: HandoverSlot,
    /// A restart has begun ([`Manager::begin_handover`]).
    restarting: Arc<AtomicBool>,
    /// Ring bytes written ahead of the coming handover
    /// ([`Manager::precopy`]).
    precopy: std::sync::Mutex<Option<crate::handover::Precopy>>,
    /// The copying of handed-over rings off the handover's mapping, while
    /// it runs (see [`Manager::resume`]).
    reowning: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// How commands' processes are found and ended.
    contain: Arc<Containment>,
}

impl Inner {
    /// Cancels `shutdown` once no start is between its check and its
    /// launch (see `launching`).
    pub(super) fn cancel(&self) {
        let _closed = self.launching.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.shutdown.cancel();
    }

    /// Drops a command's request key (only if it still names that command).
    pub(super) fn forget_key(&self, key: Option<&str>, id: &str) {
        if let Some(key) = key {
            self.keys.remove_if(key, |_, v| v == id);
        }
    }
}

/// Refuses a request key that is empty, too long or holds a NUL.
pub(super) fn check_key(key: &str) -> Result<(), ExecError> {
    if key.is_empty() || key.len() > MAX_REQUEST_KEY || key.contains('\0') {
        return Err(ExecError::BadRequestKey);
    }
    Ok(())
}

impl Manager {
    /// A manager with these defaults and limits. `kill_on_shutdown` decides
    /// whether [`Manager::shutdown`] kills running commands.
    pub fn new(cfg: ManagerConfig, kill_on_shutdown: bool) -> Manager {
        let m = Manager::create(cfg, kill_on_shutdown);
        // A daemon that leaves its commands when it stops leaves them when
        // it crashes too; one that ends them ends what a crash left.
        if kill_on_shutdown {
            m.inner.contain.sweep_crashed(&Default::default(), &Default::default());
        }
        m
    }

    /// A manager, without the sweep of a crashed predecessor's commands.
    pub(super) fn create(cfg: ManagerConfig, kill_on_shutdown: bool) -> Manager {
        sys::cloexec_inherited_fds();
        sys::catch_inherited_ignores();
        sys::raise_fd_limit();
        // The actors' runtime starts with the first manager, not with its
        // first command: its fds and threads are part of the daemon from
        // the start (as a leak check that counts fds expects).
        actors::start();
        // Low fd numbers for children's stdio, taken before the daemon
        // holds connections (see `sys::vspawn`).
        sys::reserve_spawn_slots();
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
                launching: std::sync::RwLock::new(()),
                kill_on_shutdown,
                handover: Arc::new(OnceLock::new()),
                restarting: Arc::new(AtomicBool::new(false)),
                precopy: std::sync::Mutex::new(None),
                reowning: std::sync::Mutex::new(None),
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
        self.start_keyed_then(spec, |_| ()).map(|(h, (), new)| (h, new))
    }

    /// [`Manager::start_keyed`], calling `first` with the command's handle
    /// before its actor reads a byte of its output (a repeated start's
    /// command, once found). An attachment made there from `[0, 0]` sees
    /// every byte however fast the command writes; one made after `start`
    /// returned may find a gap, since the actor runs on threads of its own
    /// and may have read a ring's worth already.
    pub fn start_keyed_then<T>(
        &self,
        spec: CommandSpec,
        first: impl FnOnce(&CommandHandle) -> T,
    ) -> Result<(CommandHandle, T, bool), ExecError> {
        let Some(key) = spec.request_key.clone() else {
            return self.start_new(spec, first).map(|(h, t)| (h, t, true));
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
                    let t = first(&h);
                    return Ok((h, t, false));
                }
                let (h, t) = self.start_new(spec, first)?;
                e.insert(h.id().to_owned());
                Ok((h, t, true))
            }
            dashmap::Entry::Vacant(v) => {
                let (h, t) = self.start_new(spec, first)?;
                v.insert(h.id().to_owned());
                Ok((h, t, true))
            }
        }
    }

    /// [`Manager::start`] with [`Manager::start_keyed_then`]'s `first`.
    pub fn start_then<T>(
        &self,
        spec: CommandSpec,
        first: impl FnOnce(&CommandHandle) -> T,
    ) -> Result<(CommandHandle, T), ExecError> {
        self.start_keyed_then(spec, first).map(|(h, t, _)| (h, t))
    }

    pub(super) fn start_new<T>(
        &self,
        spec: CommandSpec,
        first: impl FnOnce(&CommandHandle) -> T,
    ) -> Result<(CommandHandle, T), ExecError> {
        let inner = &self.inner;
        let _open = inner.launching.read().unwrap_or_else(std::sync::PoisonError::into_inner);
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

        let id = new_id(self.inner.cfg.node_id.as_deref());
        // A piped command's pipes and pidfd are registered with the actors'
        // runtime, whose threads poll them (a terminal's stay with the
        // caller's: see `launch`).
        let _actors = spec.pty.is_none().then(actors::enter);
        let t = std::time::Instant::now();
        let spawned = spawn::spawn(&id, &spec, &argv, cfg, &inner.contain).inspect_err(|_| {
            metrics::counter!("tether_spawn_failures_total").increment(1);
        })?;
        metrics::histogram!("tether_spawn_seconds").record(t.elapsed().as_secs_f64());
        metrics::counter!("tether_commands_started_total", "kind" => "process").increment(1);
        let life = self.lifetimes(&spec);
        let meta = Meta::new(&id, &spec, argv, ring_bytes, None);
        tracing::info!(command = %id, pid = spawned.pid, argv0 = %meta.argv[0], "command started");
        let (handle, actor) = command::new_command(meta, spawned, life, reservation, inner.contain.clone());
        let t = first(&handle);
        self.launch(&handle, actor);
        Ok((handle, t))
    }

    /// Registers a command and runs its actor.
    pub(super) fn launch(&self, handle: &CommandHandle, actor: Actor) {
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
        let span = tracing::info_span!(parent: None, "command", command = %id, pid = handle.pid());
        let key = handle.shared.ident.request_key.clone();
        // The task owns the actor and `run` borrows it, so the actor is
        // held once (about 1.9 KiB per running command in all; the first
        // layout, an async block around a `run(self)`, held it three times
        // and took 3.5 KiB).
        let mut actor = actor;
        let fut = async move {
            actor.run(&stop).instrument(span).await;
            if let Some(inner) = weak.upgrade() {
                inner.commands.remove(&id);
                inner.forget_key(key.as_deref(), &id);
            }
            actor.end();
        };
        // A piped command's actor runs on the actors' threads, so that no
        // number of connections delays its drain. A terminal's runs with
        // the connections: it is interactive, and there a keystroke's echo
        // and the terminal's output cross no thread between the actor and
        // its forwarders (P1 echo 162 -> 136 us, P2 `cat` 31 -> 40 MiB/s in
        // one run); a terminal with a thousand viewers would share their
        // workers as every command once did. A named shell's command is as
        // interactive, and its actor talks with the shell's, which runs
        // where the shell was created (usually this same connection's
        // thread): on the actors' threads, its start, end and exit crossed
        // threads three times on the way to the client.
        if handle.is_pty() || handle.shared.ident.shell.is_some() {
            inner.tracker.spawn(fut);
        } else {
            inner.tracker.spawn_on(fut, actors::handle());
        }
    }

    pub(super) fn ring_bytes(&self, spec: &CommandSpec) -> Result<usize, ExecError> {
        let cfg = &self.inner.cfg;
        match spec.ring_bytes {
            None => Ok(cfg.ring_bytes),
            Some(n) if (MIN_RING_BYTES..=cfg.max_ring_bytes).contains(&n) => Ok(n),
            Some(n) => Err(ExecError::BadRingSize { asked: n as u64, max: cfg.max_ring_bytes as u64 }),
        }
    }

    pub(super) fn lifetimes(&self, spec: &CommandSpec) -> Lifetimes {
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
            .find(|r| r.value().shared.ident.labels.get(key).is_some_and(|v| v == value))
            .map(|r| r.value().clone())
    }

    /// All held commands, oldest first.
    pub fn list(&self) -> Vec<CommandInfo> {
        let handles: Vec<CommandHandle> = self.inner.commands.iter().map(|r| r.value().clone()).collect();
        let mut infos: Vec<CommandInfo> = handles.iter().map(CommandHandle::info).collect();
        infos.sort_by(|a, b| a.started_at.cmp(&b.started_at).then(a.id.cmp(&b.id)));
        infos
    }

    /// Forgets a command, killing it first if it runs. Returns once its
    /// actor has ended and given its slot and memory back (a `start` right
    /// after it fits where this one did), or after 5 s (`REMOVE_WAIT`) if
    /// its processes are slow to die.
    pub async fn remove(&self, id: &str) -> Result<(), ExecError> {
        self.removal(id)?.await;
        Ok(())
    }

    /// [`Manager::remove`] in two halves: the command is forgotten at once
    /// (its id answers `NotFound` from here on); the returned future kills
    /// it and waits for its actor's end, as `remove` does.
    pub fn removal(&self, id: &str) -> Result<impl Future<Output = ()> + Send + 'static, ExecError> {
        let h = self.get(id)?;
        self.inner.commands.remove(h.id());
        self.inner.forget_key(h.shared.ident.request_key.as_deref(), h.id());
        Ok(async move {
            let (done, ended) = tokio::sync::oneshot::channel();
            if h.shared.ctl.send(command::Control::Remove(done)).await.is_ok() {
                drop(h);
                // Its slot and memory are free for the next start when this
                // returns, unless its processes are slow to die.
                let _ = tokio::time::timeout(REMOVE_WAIT, ended).await;
            }
        })
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
        // This daemon's commands, for the removal of their cgroups: those
        // held now, and any whose start was launching (none starts after
        // `cancel`).
        let ids = || self.inner.commands.iter().map(|e| e.key().clone()).collect::<Vec<_>>();
        let mut own = ids();
        self.inner.cancel();
        own.extend(ids());
        own.sort_unstable();
        own.dedup();
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
        if self.inner.kill_on_shutdown {
            let contain = self.inner.contain.clone();
            let _ = tokio::task::spawn_blocking(move || contain.remove_base(&own)).await;
        }
    }
}
