//! Starting a shell: the bash it runs (the bootstrap script and the run
//! file each command's control line sources), its pipes and fd 3, waiting
//! for its first ready record; and each command's files: its script and
//! its three FIFOs in the shell's private directory.

use std::collections::VecDeque;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::actor::ShellActor;
use super::records::Records;
use super::{ShellHandle, ShellShared, ShellSpec, ShellState, Status};
use crate::ExecError;
use crate::sys::{self, PrivateDir, Process};

/// The one-line file each command's control line sources. One line, so
/// that error line numbers are those of the script (as with `bash -c`).
const RUN_FILE: &str = r#"IFS= builtin read -r -d '' __tether_c <"$__tether_D/$__tether_cur.sh"; if [[ -n $__tether_xt ]]; then __tether_c="set -x;$__tether_c"; fi; __tether_ret "$__tether_rc"; builtin eval "$__tether_c""#;

/// Written to the shell once, in braces so that it is one command and
/// produces exactly one `R`.
const BOOTSTRAP: &str = r#"{
PS1= PS2= PS0= PS4='+ ' PROMPT_COMMAND=
export -n PS1 PS2
set +o history +H +m
unset HISTFILE MAIL MAILPATH MAILCHECK
shopt -s expand_aliases
__tether_rc=0 __tether_cur= __tether_xt= __tether_c=
__tether_s() { __tether_cur=$1; }
__tether_b() { builtin printf 'S %s\0' "$__tether_cur" >&3; }
__tether_ret() { return "$1"; }
__tether_p() {
  local __tether_x=$?
  case $- in *x*) __tether_xt=1; set +x ;; *) __tether_xt= ;; esac
  __tether_c=
  if [[ -n $__tether_cur ]]; then
    builtin printf 'E %s %s %s\0' "$__tether_cur" "$__tether_x" "${PWD-}" >&3
    __tether_rc=$__tether_x __tether_cur=
  else
    builtin printf 'R\0' >&3
  fi
}
readonly -f __tether_s __tether_b __tether_ret __tether_p
PROMPT_COMMAND=__tether_p
readonly PROMPT_COMMAND
}
"#;

/// How long a new shell may take to report ready.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A started shell, before its actor runs.
pub(crate) struct Started {
    pub(crate) handle: ShellHandle,
    pub(crate) actor: ShellActor,
}

/// Spawns the shell, bootstraps it and waits until it is ready.
pub(crate) async fn start(
    name: String,
    spec: &ShellSpec,
    env_remove: &[String],
    idle_ttl: Option<Duration>,
    ttl: Option<Duration>,
) -> Result<Started, ExecError> {
    let program = spec.program.clone().unwrap_or_else(|| "bash".to_owned());
    let dir = PrivateDir::new("tether-sh")
        .map_err(|source| ExecError::Io { context: "creating the shell's directory", source })?;
    std::fs::write(dir.path().join("run"), RUN_FILE)
        .map_err(|source| ExecError::Io { context: "writing the shell's run file", source })?;
    let mut shell = spawn(&program, spec, env_remove)?;
    let mut records = Records::default();
    if let Err(why) = bootstrap(&mut shell, &mut records, dir.path()).await {
        shell.kill();
        return Err(ExecError::ShellStart { program, why });
    }
    // Start-up chatter ("no job control in this shell") is not anyone's.
    let _ = read_available(&shell.log);

    let now = SystemTime::now();
    let cwd = match &spec.cwd {
        Some(c) => c.to_string_lossy().into_owned(),
        None => std::env::current_dir().map(|c| c.to_string_lossy().into_owned()).unwrap_or_default(),
    };
    let (ctl, ctl_rx) = mpsc::channel(64);
    let shared = Arc::new(ShellShared {
        name,
        program,
        pid: shell.process.pid(),
        created_at: now,
        ctl,
        linger: CancellationToken::new(),
        status: Mutex::new(Status {
            state: ShellState::Idle,
            cwd,
            queued: 0,
            running: None,
            commands: 0,
            last_used: now,
            closed: None,
            history: VecDeque::new(),
        }),
    });
    let Spawned { process, control, status, log } = shell;
    let actor = ShellActor {
        shared: shared.clone(),
        shell: process,
        control,
        status,
        log: Some(log),
        records,
        dir: Some(dir),
        ctl_rx,
        queue: VecDeque::new(),
        current: None,
        next_n: 1,
        spare: None,
        stale_script: None,
        idle_ttl,
        ttl,
    };
    Ok(Started { handle: ShellHandle { shared }, actor })
}

/// A shell process just spawned, with our ends of its pipes.
struct Spawned {
    process: Process,
    /// Its stdin: one control line per command.
    control: pipe::Sender,
    /// Its fd 3: status records.
    status: pipe::Receiver,
    /// Its stdout and stderr: the shell's own chatter.
    log: pipe::Receiver,
}

impl Spawned {
    /// Kills a shell that failed to start (with anything it started) and
    /// reaps it.
    fn kill(&self) {
        let _ = self.process.signal_group(libc::SIGKILL);
        let _ = sys::wait_blocking(self.process.pid());
    }
}

/// Spawns `program` as an interactive bash without a terminal, in a session
/// of its own, with the control, status and log pipes.
fn spawn(program: &str, spec: &ShellSpec, env_remove: &[String]) -> Result<Spawned, ExecError> {
    let io_err = |context| move |source| ExecError::Io { context, source };
    let (control_r, control_w) = std::io::pipe().map_err(io_err("pipe(2)"))?;
    let (status_r, status_w) = std::io::pipe().map_err(io_err("pipe(2)"))?;
    let (log_r, log_w) = std::io::pipe().map_err(io_err("pipe(2)"))?;
    let log_w2 = log_w.try_clone().map_err(io_err("dup(2)"))?;

    let mut cmd = std::process::Command::new(program);
    cmd.args(["--norc", "--noprofile", "--noediting", "-i"]);
    for k in env_remove {
        cmd.env_remove(k);
    }
    cmd.envs(&spec.env).env("PS1", "").env("PS2", "");
    if let Some(cwd) = &spec.cwd {
        cmd.current_dir(cwd);
    }
    cmd.stdin(control_r).stdout(log_w).stderr(log_w2);
    sys::new_session_with_fd3(&mut cmd, std::os::fd::AsRawFd::as_raw_fd(&status_w));
    let child = cmd.spawn().map_err(|source| ExecError::Spawn { program: program.to_owned(), source })?;
    // Our copies of the child's ends go with `cmd` and `status_w`.
    drop(cmd);
    drop(status_w);
    // Reaped through its pidfd by the actor; the std handle is not needed.
    let process = Process::open(child.id());
    drop(child);
    let pipes = (|| -> io::Result<_> {
        Ok((
            pipe::Sender::from_owned_fd(control_w.into())?,
            pipe::Receiver::from_owned_fd(status_r.into())?,
            pipe::Receiver::from_owned_fd(log_r.into())?,
        ))
    })();
    match pipes {
        Ok((control, status, log)) => Ok(Spawned { process, control, status, log }),
        Err(source) => {
            let _ = process.signal_group(libc::SIGKILL);
            let _ = sys::wait_blocking(process.pid());
            Err(ExecError::Io { context: "registering pipes", source })
        }
    }
}

/// Writes the bootstrap and waits (bounded) for the shell's first `R`.
/// Says why it failed, with what the shell said if it exited.
async fn bootstrap(shell: &mut Spawned, records: &mut Records, dir: &Path) -> Result<(), String> {
    let mut boot = format!("__tether_D={}; readonly __tether_D\n", quote(dir)).into_bytes();
    boot.extend_from_slice(BOOTSTRAP.as_bytes());
    let ready = async {
        shell.control.write_all(&boot).await?;
        loop {
            match records.next(&shell.status).await? {
                Some(r) if r == b"R" => return Ok::<bool, io::Error>(true),
                Some(_) => {}
                None => return Ok(false),
            }
        }
    };
    match tokio::time::timeout(START_TIMEOUT, ready).await {
        Ok(Ok(true)) => Ok(()),
        Ok(Ok(false)) => {
            let said = read_available(&shell.log);
            Err(format!("it exited during start-up: {}", said.trim()))
        }
        Ok(Err(e)) => Err(format!("talking to it failed: {e}")),
        Err(_) => Err("it did not get ready in 10 s (is it bash?)".into()),
    }
}

/// The control line that runs command `n`: it records its number, reports
/// its start and sources the run file with the command's FIFOs as stdio.
pub(super) fn control_line(n: u64) -> Vec<u8> {
    format!(
        "\\__tether_s {n}; {{ \\__tether_b; \\. \"$__tether_D/run\" 3>&-; }} \
         <\"$__tether_D/{n}.in\" >\"$__tether_D/{n}.out\" 2>\"$__tether_D/{n}.err\"\n"
    )
    .into_bytes()
}

/// Command `n`'s FIFOs, our ends.
pub(super) struct Fifos {
    pub(super) stdin: pipe::Sender,
    pub(super) stdout: pipe::Receiver,
    pub(super) stderr: pipe::Receiver,
}

/// Writes command `n`'s script into `d`.
pub(super) fn write_script(d: &Path, n: u64, script: &str) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(d.join(format!("{n}.sh")))?;
    io::Write::write_all(&mut f, script.as_bytes())
}

/// Makes and opens command `n`'s FIFOs in `d`: the readers non-blocking
/// and stdin read-write, so that the shell's opens of the other ends never
/// block. Removed again (names only) if any step fails.
pub(super) fn make_fifos(d: &Path, n: u64) -> io::Result<Fifos> {
    let made = (|| {
        for x in ["in", "out", "err"] {
            sys::mkfifo(&d.join(format!("{n}.{x}")), 0o600)?;
        }
        let stdout = pipe::OpenOptions::new().open_receiver(d.join(format!("{n}.out")))?;
        let stderr = pipe::OpenOptions::new().open_receiver(d.join(format!("{n}.err")))?;
        sys::grow_pipe(&stdout, 1 << 20);
        sys::grow_pipe(&stderr, 1 << 20);
        let stdin = pipe::OpenOptions::new().read_write(true).open_sender(d.join(format!("{n}.in")))?;
        Ok(Fifos { stdin, stdout, stderr })
    })();
    if made.is_err() {
        remove_fifos(d, n);
    }
    made
}

/// Removes command `n`'s FIFOs (open ends keep working).
pub(super) fn remove_fifos(d: &Path, n: u64) {
    for x in ["in", "out", "err"] {
        let _ = std::fs::remove_file(d.join(format!("{n}.{x}")));
    }
}

/// Removes command `n`'s files (open FIFO ends keep working).
pub(super) fn clean(d: &Path, n: u64) {
    remove_script(d, n);
    remove_fifos(d, n);
}

/// Removes command `n`'s script file.
pub(super) fn remove_script(d: &Path, n: u64) {
    let _ = std::fs::remove_file(d.join(format!("{n}.sh")));
}

/// A path as a single-quoted bash word.
fn quote(p: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let s = String::from_utf8_lossy(p.as_os_str().as_bytes());
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Whatever a pipe holds right now, as text (for error messages).
pub(super) fn read_available(p: &pipe::Receiver) -> String {
    let mut buf = vec![0u8; 4096];
    let mut out = Vec::new();
    while out.len() < 4096 {
        match p.try_read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
