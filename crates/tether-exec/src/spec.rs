//! What to run: [`CommandSpec`] and the manager-wide [`ManagerConfig`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;

use crate::ExecError;

/// The program of a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Program {
    /// Run this argv directly, without a shell (argv[0] is looked up in PATH).
    Argv(Vec<String>),
    /// Run a shell command line as `<shell> -c <script>`; `shell` `None`
    /// means the manager's default shell.
    Shell {
        /// The shell program, e.g. `/bin/bash`.
        shell: Option<String>,
        /// The command line.
        script: String,
    },
}

/// A duration setting that can also be "never" or left to the default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Lifetime {
    /// Use the manager's default.
    #[default]
    Default,
    /// Never fire.
    Never,
    /// Fire after this long.
    After(Duration),
}

impl Lifetime {
    /// From the wire convention: absent = default, negative = never.
    pub fn from_millis(ms: Option<i64>) -> Lifetime {
        match ms {
            None => Lifetime::Default,
            Some(ms) if ms < 0 => Lifetime::Never,
            Some(ms) => Lifetime::After(Duration::from_millis(ms as u64)),
        }
    }

    pub(crate) fn resolve(self, default: Option<Duration>) -> Option<Duration> {
        match self {
            Lifetime::Default => default,
            Lifetime::Never => None,
            Lifetime::After(d) => Some(d),
        }
    }
}

/// What happens when a command's output passes its `max_output_bytes`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum OutputLimit {
    /// Kill the command (exit reason `OutputLimit`).
    #[default]
    Kill,
    /// Keep running and draining, store nothing more.
    Truncate,
}

/// Everything about one command to start. Build with [`CommandSpec::argv`]
/// or [`CommandSpec::shell`] and the chained setters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandSpec {
    /// What to execute.
    pub program: Program,
    /// Working directory (default: the daemon's).
    pub cwd: Option<PathBuf>,
    /// Variables added to the environment.
    pub env: BTreeMap<String, String>,
    /// Start from an empty environment instead of the daemon's.
    pub env_clear: bool,
    /// Bytes written to stdin before anything a client sends.
    pub stdin: Bytes,
    /// Close stdin after `stdin`.
    pub close_stdin: bool,
    /// Optional client-chosen name.
    pub name: Option<String>,
    /// Client-chosen labels.
    pub labels: BTreeMap<String, String>,
    /// Wall-clock limit (`None`: none).
    pub timeout: Option<Duration>,
    /// Kill after this long with no client attached.
    pub idle_timeout: Lifetime,
    /// Keep the finished command attachable this long.
    pub ttl: Lifetime,
    /// Kill when the last attached client goes away.
    pub kill_on_disconnect: bool,
    /// Limit on stdout+stderr bytes.
    pub max_output_bytes: Option<u64>,
    /// What the limit does.
    pub output_limit: OutputLimit,
    /// Ring size per stream (`None`: the manager's default).
    pub ring_bytes: Option<usize>,
    /// SIGTERM-to-SIGKILL grace on timeout (`None`: the manager's default).
    pub kill_grace: Option<Duration>,
    /// Run on a pseudo-terminal instead of pipes.
    pub pty: Option<PtyOptions>,
    /// After the process exits, how long to keep reading output a
    /// background process still writes (`None`: the manager's default).
    pub drain_grace: Option<Duration>,
    /// An idempotency key: while a command started with the same key is
    /// held, starting again returns it instead of a second process
    /// ([`crate::Manager::start_keyed`]).
    pub request_key: Option<String>,
}

/// A terminal size in character cells.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TermSize {
    /// Lines.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

impl TermSize {
    /// Largest accepted number of rows or columns. The screen model holds
    /// two grids of 32-byte cells, so 500x500 bounds it at 16 MiB.
    pub const MAX: u16 = 500;

    /// Whether both dimensions are within 1..=[`TermSize::MAX`].
    pub fn is_valid(self) -> bool {
        (1..=Self::MAX).contains(&self.rows) && (1..=Self::MAX).contains(&self.cols)
    }
}

/// How to set up a command's pseudo-terminal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PtyOptions {
    /// Initial size.
    pub size: TermSize,
    /// `TERM` for the command (`None`: `xterm-256color`).
    pub term: Option<String>,
}

impl CommandSpec {
    /// A command run from an argv, without a shell.
    pub fn argv<I, S>(argv: I) -> CommandSpec
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        CommandSpec::new(Program::Argv(argv.into_iter().map(Into::into).collect()))
    }

    /// A command line run by the default shell.
    pub fn shell(script: impl Into<String>) -> CommandSpec {
        CommandSpec::new(Program::Shell { shell: None, script: script.into() })
    }

    /// A spec for `program` with every option at its default.
    pub fn new(program: Program) -> CommandSpec {
        CommandSpec {
            program,
            cwd: None,
            env: BTreeMap::new(),
            env_clear: false,
            stdin: Bytes::new(),
            close_stdin: false,
            name: None,
            labels: BTreeMap::new(),
            timeout: None,
            idle_timeout: Lifetime::Default,
            ttl: Lifetime::Default,
            kill_on_disconnect: false,
            max_output_bytes: None,
            output_limit: OutputLimit::Kill,
            ring_bytes: None,
            kill_grace: None,
            pty: None,
            drain_grace: None,
            request_key: None,
        }
    }

    /// Sets the working directory.
    pub fn cwd(mut self, cwd: impl Into<PathBuf>) -> Self {
        self.cwd = Some(cwd.into());
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.env.insert(k.into(), v.into());
        self
    }

    /// Sets the initial stdin bytes and whether stdin closes after them.
    pub fn stdin(mut self, data: impl Into<Bytes>, close: bool) -> Self {
        self.stdin = data.into();
        self.close_stdin = close;
        self
    }

    /// Sets the wall-clock timeout.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }

    /// Sets the idle timeout.
    pub fn idle_timeout(mut self, l: Lifetime) -> Self {
        self.idle_timeout = l;
        self
    }

    /// Sets the TTL.
    pub fn ttl(mut self, l: Lifetime) -> Self {
        self.ttl = l;
        self
    }

    /// Sets kill-on-disconnect.
    pub fn kill_on_disconnect(mut self, yes: bool) -> Self {
        self.kill_on_disconnect = yes;
        self
    }

    /// Sets the output limit and its action.
    pub fn max_output(mut self, bytes: u64, action: OutputLimit) -> Self {
        self.max_output_bytes = Some(bytes);
        self.output_limit = action;
        self
    }

    /// Sets the ring size per stream.
    pub fn ring_bytes(mut self, bytes: usize) -> Self {
        self.ring_bytes = Some(bytes);
        self
    }

    /// Runs the command on a pseudo-terminal of this size.
    pub fn pty(mut self, rows: u16, cols: u16) -> Self {
        self.pty = Some(PtyOptions { size: TermSize { rows, cols }, term: None });
        self
    }

    /// Sets the SIGTERM-to-SIGKILL grace.
    pub fn kill_grace(mut self, d: Duration) -> Self {
        self.kill_grace = Some(d);
        self
    }

    /// Sets how long output is read after the process exits.
    pub fn drain_grace(mut self, d: Duration) -> Self {
        self.drain_grace = Some(d);
        self
    }

    /// Sets the idempotency key.
    pub fn request_key(mut self, key: impl Into<String>) -> Self {
        self.request_key = Some(key.into());
        self
    }

    /// Longest `name`, in bytes.
    pub const MAX_NAME_BYTES: usize = 256;
    /// Most labels.
    pub const MAX_LABELS: usize = 64;
    /// Longest label key, in bytes.
    pub const MAX_LABEL_KEY_BYTES: usize = 128;
    /// Longest label value, in bytes.
    pub const MAX_LABEL_VALUE_BYTES: usize = 1024;
    /// Most bytes of all label keys and values together.
    pub const MAX_LABELS_BYTES: usize = 16 * 1024;

    /// Checks the client-chosen metadata (`name`, `labels`) against the
    /// limits above. The daemon keeps it for the command's whole life and
    /// sends it in every listing, so unbounded metadata would let one
    /// client hold any amount of the daemon's memory and make a listing
    /// frame of any size.
    pub fn check_metadata(&self) -> Result<(), ExecError> {
        let over = |field: String, len: usize, max: usize, unit: &'static str| {
            Err(ExecError::Metadata { field, len, max, unit })
        };
        if let Some(name) = &self.name
            && name.len() > Self::MAX_NAME_BYTES
        {
            return over("name".to_owned(), name.len(), Self::MAX_NAME_BYTES, "bytes");
        }
        if self.labels.len() > Self::MAX_LABELS {
            return over("labels".to_owned(), self.labels.len(), Self::MAX_LABELS, "entries");
        }
        let mut total = 0;
        for (k, v) in &self.labels {
            if k.len() > Self::MAX_LABEL_KEY_BYTES {
                let shown: String = k.chars().take(32).collect();
                return over(format!("label key {shown:?}..."), k.len(), Self::MAX_LABEL_KEY_BYTES, "bytes");
            }
            if v.len() > Self::MAX_LABEL_VALUE_BYTES {
                return over(format!("label {k:?}"), v.len(), Self::MAX_LABEL_VALUE_BYTES, "bytes");
            }
            total += k.len() + v.len();
        }
        if total > Self::MAX_LABELS_BYTES {
            return over("labels".to_owned(), total, Self::MAX_LABELS_BYTES, "bytes");
        }
        Ok(())
    }

    /// The argv that will be executed.
    pub(crate) fn resolved_argv(&self, cfg: &ManagerConfig) -> Vec<String> {
        match &self.program {
            Program::Argv(v) => v.clone(),
            Program::Shell { shell, script } => vec![
                shell.clone().unwrap_or_else(|| cfg.default_shell.clone()),
                "-c".to_owned(),
                script.clone(),
            ],
        }
    }

    pub(crate) fn resolved_idle(&self, cfg: &ManagerConfig) -> Option<Duration> {
        self.idle_timeout.resolve(cfg.idle_timeout)
    }

    pub(crate) fn resolved_ttl(&self, cfg: &ManagerConfig) -> Option<Duration> {
        self.ttl.resolve(cfg.ttl)
    }
}

/// Manager-wide defaults and limits.
#[derive(Clone, Debug)]
pub struct ManagerConfig {
    /// Shell for [`Program::Shell`] without an explicit shell.
    pub default_shell: String,
    /// Default ring size per stream.
    pub ring_bytes: usize,
    /// Largest ring size per stream a command may ask for.
    pub max_ring_bytes: usize,
    /// Sum of all commands' ring capacities (both streams) the manager will
    /// commit to; a start past it fails with a typed error.
    pub max_total_ring_bytes: usize,
    /// Most commands held at once, running or finished.
    pub max_commands: usize,
    /// Default idle timeout (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// Default TTL of finished commands (`None`: until removed).
    pub ttl: Option<Duration>,
    /// Default SIGTERM-to-SIGKILL grace.
    pub kill_grace: Duration,
    /// After the process exits, how long to keep draining pipes that a
    /// background descendant still holds open before declaring the end
    /// (default 250 ms: long enough for a background job's last lines
    /// written as its parent exits, short enough that a command whose
    /// daemonised child keeps stdout open still ends promptly).
    pub drain_grace: Duration,
    /// Environment variables never passed to children (the daemon's own
    /// secrets, e.g. `TETHER_TOKEN`).
    pub env_remove: Vec<String>,
    /// Most named shells alive at once.
    pub max_shells: usize,
    /// Default idle TTL of a named shell (`None`: never).
    pub shell_idle_ttl: Option<Duration>,
    /// How commands' processes are contained and ended.
    pub contain: crate::contain::ContainConfig,
    /// The name of this daemon among many (`--node-id`): new command ids
    /// start with it and a dot (`NAME.c-<16 hex>`), so that a router in
    /// front of many daemons can tell from an id which one holds it.
    /// `None`: ids are `c-<16 hex>`.
    pub node_id: Option<String>,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        ManagerConfig {
            default_shell: "/bin/bash".to_owned(),
            ring_bytes: 1 << 20,
            max_ring_bytes: 1 << 30,
            max_total_ring_bytes: 4 << 30,
            max_commands: 4096,
            idle_timeout: Some(Duration::from_secs(300)),
            ttl: Some(Duration::from_secs(600)),
            kill_grace: Duration::from_secs(2),
            drain_grace: Duration::from_millis(250),
            env_remove: Vec::new(),
            max_shells: 64,
            shell_idle_ttl: Some(Duration::from_secs(3600)),
            contain: Default::default(),
            node_id: None,
        }
    }
}
