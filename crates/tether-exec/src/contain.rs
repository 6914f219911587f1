//! Containment: which processes belong to a command, and ending all of them.
//!
//! A command's processes are found three ways, strongest first:
//! - **A cgroup v2 leaf** (`<dir>/tether.<seat>/<id>`), when the daemon has a cgroup it
//!   may manage ([`CgroupChoice`]): the child joins it before it execs, so
//!   nothing it starts can leave it (a double-forked `setsid` daemon
//!   included); `cgroup.kill` ends them all at once.
//! - **Its process group and its process tree**, walked through `/proc`
//!   while the leader lives.
//! - **The environment marker** [`COMMAND_ID_ENV`], inherited by everything
//!   the command starts unless a process clears its environment. With the
//!   daemon a child subreaper ([`ContainConfig::subreaper`]), a process that
//!   loses its parent becomes the daemon's child, so the daemon's children
//!   are where leftovers are looked for.
//!
//! When a command ends (its leader exited and its output drained up to the
//! drain grace), what is left of it is killed, unless
//! [`Leftovers::Keep`]. A daemon that starts with a seat
//! ([`ContainConfig::seat`]) kills what a crashed predecessor on the same
//! seat left running ([`Containment::sweep_crashed`]).

use std::collections::HashSet;
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::sys;

/// The environment variable naming the command a process belongs to.
pub const COMMAND_ID_ENV: &str = "TETHER_COMMAND_ID";
/// The environment variable naming the daemon's seat (see
/// [`ContainConfig::seat`]).
pub const SEAT_ENV: &str = "TETHER_SEAT";

/// Where commands' cgroups go.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum CgroupChoice {
    /// No cgroups: process groups, trees and the environment marker.
    #[default]
    Off,
    /// Below the daemon's own cgroup v2 directory, if it can create
    /// cgroups there and move a process into one; else as `Off`.
    Auto,
    /// Below this cgroup v2 directory (created if missing); the daemon does
    /// not start if it cannot be used.
    At(PathBuf),
}

/// What happens to a command's remaining processes once it has ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Leftovers {
    /// Killed (with the whole cgroup, group and marked processes).
    #[default]
    Kill,
    /// Left running; a `kill` of the command still ends them.
    Keep,
}

/// How commands are contained.
#[derive(Clone, Debug, Default)]
pub struct ContainConfig {
    /// Cgroups for commands.
    pub cgroup: CgroupChoice,
    /// Make the daemon a child subreaper (`PR_SET_CHILD_SUBREAPER`), so that
    /// orphaned descendants of commands become its children (and are
    /// reaped by it) instead of init's.
    pub subreaper: bool,
    /// The remaining processes of an ended command.
    pub leftovers: Leftovers,
    /// A name for the daemon's place on the host (e.g. its listening
    /// address), stable across restarts: commands carry it in
    /// [`SEAT_ENV`], and a daemon starting on a seat kills what a crashed
    /// daemon of the same seat left running.
    pub seat: Option<String>,
}

/// The daemon's containment, set up once.
pub(crate) struct Containment {
    cfg: ContainConfig,
    cgroups: Option<CgroupBase>,
}

struct CgroupBase {
    dir: PathBuf,
    /// `cgroup.kill` exists (Linux 5.14+).
    kill_file: bool,
}

/// A command's cgroup.
#[derive(Clone, Debug)]
pub(crate) struct Leaf {
    dir: PathBuf,
    kill_file: bool,
}

impl Containment {
    /// Sets up containment: the subreaper flag, and the cgroup base if one
    /// is asked for and usable.
    pub(crate) fn new(cfg: &ContainConfig) -> io::Result<Containment> {
        if cfg.subreaper {
            sys::become_subreaper()?;
        }
        // The daemon's own directory below the one given, named after its
        // seat: daemons sharing a parent never touch each other's leaves.
        let name = match &cfg.seat {
            Some(seat) => format!("tether.{}", sanitize(seat)),
            None => format!("tether.{}", std::process::id()),
        };
        let cgroups = match &cfg.cgroup {
            CgroupChoice::Off => None,
            CgroupChoice::At(dir) => Some(
                create_dir(dir)
                    .and_then(|()| CgroupBase::open(dir.join(&name)))
                    .map_err(|e| io::Error::new(e.kind(), format!("cgroup {}: {e}", dir.display())))?,
            ),
            CgroupChoice::Auto => match own_cgroup_dir().and_then(|own| CgroupBase::open(own.join(&name))) {
                Ok(b) => Some(b),
                Err(e) => {
                    tracing::info!(
                        "no cgroup for commands ({e}): containing them by process group and environment"
                    );
                    None
                }
            },
        };
        if let Some(b) = &cgroups {
            tracing::info!(dir = %b.dir.display(), kill = b.kill_file, "commands get cgroup v2 leaves");
        }
        Ok(Containment { cfg: cfg.clone(), cgroups })
    }

    pub(crate) fn leftovers(&self) -> Leftovers {
        self.cfg.leftovers
    }

    pub(crate) fn subreaper(&self) -> bool {
        self.cfg.subreaper
    }

    /// Marks `cmd` as command `id`'s and, with cgroups, makes a new leaf for
    /// it: the leaf and its paths, for the spawn to start the command in it
    /// or join it before exec (`sys::spawn_piped` or
    /// `sys::join_cgroup_on_exec`), so that nothing it runs is ever outside
    /// it.
    pub(crate) fn prepare_leaf(
        &self,
        id: &str,
        cmd: &mut std::process::Command,
    ) -> io::Result<Option<(Leaf, sys::CgroupPaths)>> {
        cmd.env(COMMAND_ID_ENV, id);
        if let Some(seat) = &self.cfg.seat {
            cmd.env(SEAT_ENV, seat);
        }
        let Some(base) = &self.cgroups else { return Ok(None) };
        let dir = base.dir.join(id);
        // The seat's directory is made again if it went: a daemon that was
        // stopping on this seat as this one started removes it once its
        // own leaves are gone (and this one had none yet).
        for tries_left in (0..3).rev() {
            match std::fs::create_dir(&dir) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound && tries_left > 0 => {
                    tracing::info!(dir = %base.dir.display(), "the seat's cgroup directory went: making it again");
                    let _ = std::fs::create_dir(&base.dir);
                }
                Err(e) => {
                    return Err(io::Error::new(e.kind(), format!("creating cgroup {}: {e}", dir.display())));
                }
            }
        }
        let cstr = |p: &Path| {
            CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::other("cgroup path holds a NUL"))
        };
        let paths = sys::CgroupPaths { dir: cstr(&dir)?, procs: cstr(&dir.join("cgroup.procs"))? };
        Ok(Some((Leaf { dir, kill_file: base.kill_file }, paths)))
    }

    /// At shutdown, the commands killed: removes the leaves of commands
    /// `own` (waiting up to a second for those still emptying), then the
    /// cgroup base unless another daemon's leaves are in it (one started on
    /// this seat while this one was stopping: its leaves are not touched).
    pub(crate) fn remove_base(&self, own: &[String]) {
        let Some(base) = &self.cgroups else { return };
        let mut left: Vec<PathBuf> = own.iter().map(|id| base.dir.join(id)).collect();
        for _ in 0..20 {
            left.retain(|dir| std::fs::remove_dir(dir).is_err_and(|e| e.raw_os_error() == Some(libc::EBUSY)));
            if left.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = std::fs::remove_dir(&base.dir);
    }

    /// The leaf of a command taken over from a previous daemon, if it has one.
    pub(crate) fn leaf_of(&self, id: &str) -> Option<Leaf> {
        let base = self.cgroups.as_ref()?;
        let dir = base.dir.join(id);
        dir.is_dir().then_some(Leaf { dir, kill_file: base.kill_file })
    }

    /// Kills what a crashed daemon on this seat left: every cgroup leaf and
    /// every process marked with the seat, but the commands in `keep` (taken
    /// over from a daemon that restarted gracefully). Returns how many
    /// processes and leaves were found.
    pub(crate) fn sweep_crashed(&self, keep: &HashSet<String>, keep_pids: &HashSet<u32>) -> usize {
        self.sweep_crashed_leaves(keep)
            + self.sweep_crashed_processes(sys::all_pids(), |id| keep.contains(id), keep_pids)
    }

    /// The cgroup leaves of [`Containment::sweep_crashed`]: every leaf but
    /// those named in `keep`.
    pub(crate) fn sweep_crashed_leaves(&self, keep: &HashSet<String>) -> usize {
        let mut found = 0;
        if let Some(base) = &self.cgroups
            && let Ok(entries) = std::fs::read_dir(&base.dir)
        {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                // The kept ones first: a `stat` of each of a thousand kept
                // leaves was a tenth of a restart's takeover.
                if keep.contains(&name) || !e.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let leaf = Leaf { dir: e.path(), kill_file: base.kill_file };
                if leaf.populated() {
                    found += 1;
                    tracing::warn!(command = name, "killing what a crashed daemon left in its cgroup");
                }
                leaf.kill_and_remove();
            }
        }
        found
    }

    /// The processes of [`Containment::sweep_crashed`], among `pids`: those
    /// marked with the seat, but the commands `kept` says are kept and
    /// `keep_pids`.
    pub(crate) fn sweep_crashed_processes(
        &self,
        pids: impl IntoIterator<Item = u32>,
        kept: impl Fn(&str) -> bool,
        keep_pids: &HashSet<u32>,
    ) -> usize {
        let Some(seat) = &self.cfg.seat else { return 0 };
        let seat_entry = format!("{SEAT_ENV}={seat}");
        let me = std::process::id();
        // One pass over each environment: a restart keeps every command,
        // and asking each process about each kept id was quadratic (780 ms
        // of a 1000-command restart).
        let victims: Vec<u32> = pids
            .into_iter()
            .filter(|&p| p != me && !keep_pids.contains(&p))
            .filter(|&p| {
                let env = sys::environ(p);
                let is_kept = sys::env_value(&env, COMMAND_ID_ENV)
                    .and_then(|id| std::str::from_utf8(id).ok())
                    .is_some_and(&kept);
                sys::env_has(&env, &seat_entry) && !is_kept
            })
            .collect();
        if victims.is_empty() {
            return 0;
        }
        tracing::warn!(
            processes = victims.len(),
            seat,
            "killing what a crashed daemon on this seat left running"
        );
        sys::kill_trees(&victims);
        victims.len()
    }
}

impl CgroupBase {
    /// Creates `dir` if needed and checks that a child can be moved into a
    /// leaf of it.
    fn open(dir: PathBuf) -> io::Result<CgroupBase> {
        if !is_cgroup2(&dir)? {
            return Err(io::Error::other("not in a cgroup v2 hierarchy"));
        }
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let probe = dir.join(format!("probe-{}", std::process::id()));
        let _ = std::fs::create_dir(&probe);
        let kill_file = probe.join("cgroup.kill").exists();
        let cstr = |p: &Path| {
            CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::other("cgroup path holds a NUL"))
        };
        // Started in the leaf as every command is (`sys::spawn_piped`): a
        // fork of the daemon to join it by writing took a tenth of a
        // restart with a thousand commands.
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.args(["-c", "exit 0"]);
        let paths = sys::CgroupPaths { dir: cstr(&probe)?, procs: cstr(&probe.join("cgroup.procs"))? };
        let r = sys::Plan::of(&cmd, false, Some(paths))
            .and_then(|plan| sys::spawn_piped(&plan))
            .and_then(|child| sys::wait_exit_code(child.pid));
        let _ = std::fs::remove_dir(&probe);
        match r {
            Ok(Some(0)) => Ok(CgroupBase { dir, kill_file }),
            Ok(code) => Err(io::Error::other(format!("a probe process could not run in it (exit {code:?})"))),
            Err(e) => Err(io::Error::new(e.kind(), format!("a probe process could not start in it: {e}"))),
        }
    }
}

impl Leaf {
    /// Whether any process is in the leaf.
    pub(crate) fn populated(&self) -> bool {
        std::fs::read_to_string(self.dir.join("cgroup.events"))
            .map(|s| s.lines().any(|l| l == "populated 1"))
            .unwrap_or(false)
    }

    /// How many processes in the leaf are running (zombies waiting for
    /// their parent are not).
    fn live_members(&self) -> usize {
        self.members().into_iter().filter(|&p| sys::running(p)).count()
    }

    /// The processes in the leaf (`cgroup.procs`; none if it is gone).
    fn members(&self) -> Vec<u32> {
        std::fs::read_to_string(self.dir.join("cgroup.procs"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// Kills every process in the leaf.
    pub(crate) fn kill(&self) {
        if self.kill_file && std::fs::write(self.dir.join("cgroup.kill"), "1").is_ok() {
            return;
        }
        // Before cgroup.kill: kill the members until none is left (a member
        // forking meanwhile is caught by the next round).
        for _ in 0..100 {
            let pids = self.members();
            if pids.is_empty() {
                return;
            }
            sys::signal_pids(&pids, libc::SIGKILL);
        }
    }

    /// Kills every process in the leaf and removes it once it is empty
    /// (in the background: dying processes leave it asynchronously).
    pub(crate) fn kill_and_remove(&self) {
        self.kill();
        if std::fs::remove_dir(&self.dir).is_ok() {
            return;
        }
        let dir = self.dir.clone();
        let remove = move || {
            for _ in 0..100 {
                match std::fs::remove_dir(&dir) {
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    _ => return,
                }
            }
            tracing::warn!(dir = %dir.display(), "cgroup still busy after 5 s: left");
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(remove)),
            Err(_) => remove(),
        }
    }
}

/// Kills what is left of command `id`: its cgroup leaf, or else the
/// processes marked with its id and their descendants. `thorough` scans
/// every process for the marker; otherwise only the daemon's own children
/// are looked at (enough when it is a subreaper: a process that lost its
/// parent is one of them, and the rest hang below those). Returns how many
/// were found (a populated cgroup counts one).
pub(crate) fn sweep(id: &str, leaf: Option<&Leaf>, thorough: bool) -> usize {
    if let Some(leaf) = leaf {
        // An empty leaf is removed at once (the kernel refuses to remove a
        // populated one): one system call where listing its members,
        // killing them and removing it took seven, on the way from a
        // command's end to its exit frame.
        if std::fs::remove_dir(&leaf.dir).is_ok() {
            return 0;
        }
        let found = leaf.live_members();
        leaf.kill_and_remove();
        return found;
    }
    let entry = format!("{COMMAND_ID_ENV}={id}");
    let marked = |p: &u32| sys::env_has(&sys::environ(*p), &entry);
    let me = std::process::id();
    let victims: Vec<u32> = if thorough {
        sys::all_pids().filter(|&p| p != me).filter(marked).collect()
    } else {
        sys::children(me).into_iter().filter(|p| !sys::is_leader(*p)).filter(marked).collect()
    };
    // Zombies are dead already (and have no environment to match).
    let victims: Vec<u32> = victims.into_iter().filter(|&p| sys::running(p)).collect();
    if !victims.is_empty() {
        tracing::debug!(command = %id, processes = victims.len(), "killing what is left of the command");
        sys::kill_trees(&victims);
    }
    victims.len()
}

/// Checks that `dir` can hold commands' cgroups (created if missing): a
/// probe process is moved into a leaf of it.
pub fn check_cgroup(dir: &Path) -> io::Result<()> {
    CgroupBase::open(dir.to_owned()).map(drop)
}

/// The daemon's own cgroup v2 directory.
fn own_cgroup_dir() -> io::Result<PathBuf> {
    let cg = std::fs::read_to_string("/proc/self/cgroup")?;
    let rel = cg
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or_else(|| io::Error::other("no cgroup v2 entry in /proc/self/cgroup"))?;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
    // Fields: id parent major:minor root mountpoint options ... - fstype ...
    let mount = mounts
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let fstype = right.split_whitespace().next()?;
            let mut f = left.split_whitespace();
            let root = f.nth(3)?;
            let point = f.next()?;
            (fstype == "cgroup2" && root == "/").then(|| PathBuf::from(point))
        })
        .next()
        .ok_or_else(|| io::Error::other("no cgroup v2 file system mounted"))?;
    Ok(mount.join(rel.trim_start_matches('/')))
}

/// Whether `dir` (or, if it does not exist yet, its parent) is in a
/// cgroup v2 file system.
fn is_cgroup2(dir: &Path) -> io::Result<bool> {
    let probe = if dir.exists() { dir } else { dir.parent().unwrap_or(dir) };
    sys::is_cgroup2_fs(probe)
}

/// Creates a directory unless it exists.
fn create_dir(dir: &Path) -> io::Result<()> {
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

/// A seat name as a cgroup directory name.
fn sanitize(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '-' }).collect()
}
