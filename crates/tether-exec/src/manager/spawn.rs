//! Validating a command's spec and spawning its process (pipes or a
//! terminal, in its cgroup), and the subreaper's orphan reaper.

use tokio::net::unix::pipe;

use crate::command::{Spawned, SpawnedIo};
use crate::contain::Containment;
use crate::spec::{CommandSpec, ManagerConfig};
use crate::{ExecError, sys};

/// Pipe buffer asked for on stdout and stderr.
pub(super) const PIPE_BYTES: i32 = 1 << 20;

/// Longest drain grace a command may ask for.
pub(super) const MAX_DRAIN_GRACE: std::time::Duration = std::time::Duration::from_secs(3600);

/// A new command id: `c-<16 hex>`, after `NODE.` when the daemon has a
/// node id.
pub(super) fn new_id(node: Option<&str>) -> String {
    let id = format!("c-{:016x}", rand::random::<u64>());
    match node {
        Some(n) => format!("{n}.{id}"),
        None => id,
    }
}

pub(super) fn validate(spec: &CommandSpec, argv: &[String]) -> Result<(), ExecError> {
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

pub(super) fn validate_drain_grace(spec: &CommandSpec) -> Result<(), ExecError> {
    match spec.drain_grace {
        Some(asked) if asked > MAX_DRAIN_GRACE => {
            Err(ExecError::BadDrainGrace { asked, max: MAX_DRAIN_GRACE })
        }
        _ => Ok(()),
    }
}

pub(super) fn validate_env(env: &std::collections::BTreeMap<String, String>) -> Result<(), ExecError> {
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

pub(super) fn validate_cwd(cwd: &std::path::Path) -> Result<(), ExecError> {
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

pub(super) fn spawn(
    id: &str,
    spec: &CommandSpec,
    argv: &[String],
    cfg: &ManagerConfig,
    contain: &Containment,
) -> Result<Spawned, ExecError> {
    let mut cmd = command(spec, argv, cfg);
    let prepared = contain
        .prepare_leaf(id, &mut cmd)
        .map_err(|source| ExecError::Io { context: "preparing the command's cgroup", source })?;
    let (leaf, cgroup) = prepared.map_or((None, None), |(l, p)| (Some(l), Some(p)));
    let spawned = match &spec.pty {
        Some(opts) => crate::pty::spawn(cmd, spec.env_clear, cgroup, &argv[0], opts)
            .map(|(pid, pty)| Spawned { pid, io: SpawnedIo::Pty(pty), leaf: leaf.clone() }),
        None => {
            spawn_piped(&cmd, spec.env_clear, cgroup, &argv[0]).map(|s| Spawned { leaf: leaf.clone(), ..s })
        }
    };
    if let (Err(_), Some(leaf)) = (&spawned, &leaf) {
        leaf.kill_and_remove();
    }
    spawned
}

/// Reaps the orphans the daemon adopts as a subreaper: after a SIGCHLD,
/// and again a second later while some are left (a zombie is reaped once it
/// has been one for a second, so a child someone else is about to wait for
/// is left to them). A look waits [`ORPHAN_SETTLE`] after the SIGCHLD that
/// asked for it, so that a burst of exits makes one look, and a look (which
/// reads every daemon thread's children) does not take the CPU from the
/// command whose exit sent the signal, on its way to its exit frame.
pub(super) fn spawn_orphan_reaper() {
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
            tokio::time::sleep(ORPHAN_SETTLE).await;
            seen = tokio::task::spawn_blocking(move || sys::reap_orphans(seen)).await.unwrap_or_default();
        }
    });
}

/// How long the orphan reaper lets SIGCHLDs gather before it looks.
const ORPHAN_SETTLE: std::time::Duration = std::time::Duration::from_millis(100);

/// The program, arguments, environment and cwd of a command.
pub(super) fn command(spec: &CommandSpec, argv: &[String], cfg: &ManagerConfig) -> std::process::Command {
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

/// Starts a command on three pipes, in its own process group (so signals
/// reach the whole job) and, given its cgroup, in it from its first
/// instruction: see [`sys::spawn_piped`], which never forks the
/// daemon. Every fd the daemon opens is close-on-exec, so only 0/1/2 are
/// inherited.
pub(super) fn spawn_piped(
    cmd: &std::process::Command,
    env_clear: bool,
    cgroup: Option<sys::CgroupPaths>,
    program: &str,
) -> Result<Spawned, ExecError> {
    let spawn_err = |source| ExecError::Spawn { program: program.to_owned(), source };
    let plan = sys::Plan::of(cmd, env_clear, cgroup).map_err(spawn_err)?;
    let sys::Piped { pid, stdin, stdout, stderr } = sys::spawn_piped(&plan).map_err(spawn_err)?;
    let io = move || -> std::io::Result<Spawned> {
        sys::grow_pipe(&stdout, PIPE_BYTES);
        sys::grow_pipe(&stderr, PIPE_BYTES);
        Ok(Spawned {
            pid,
            leaf: None,
            io: SpawnedIo::Pipes {
                stdin: pipe::Sender::from_owned_fd(stdin)?,
                stdout: pipe::Receiver::from_owned_fd(stdout)?,
                stderr: pipe::Receiver::from_owned_fd(stderr)?,
            },
        })
    };
    match io() {
        Ok(s) => Ok(s),
        Err(source) => {
            // Leave no process and no zombie behind.
            let _ = sys::signal_group(pid, libc::SIGKILL);
            let _ = sys::wait_blocking(pid);
            Err(ExecError::Io { context: "registering pipes", source })
        }
    }
}
