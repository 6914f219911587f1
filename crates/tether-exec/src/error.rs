use std::io;

/// Everything that can go wrong asking the command manager for something.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The argv is empty.
    #[error("empty argv: nothing to run")]
    EmptyArgv,
    /// A string that becomes a C string contains a NUL byte.
    #[error("{what} contains a NUL byte")]
    NulByte {
        /// Which input (`argv`, `env`, `cwd`).
        what: &'static str,
    },
    /// An environment variable name is empty or contains `=`.
    #[error("invalid environment variable name {0:?}")]
    BadEnvName(String),
    /// The working directory is unusable.
    #[error("working directory {path:?}: {source}")]
    BadCwd {
        /// The path asked for.
        path: String,
        /// The OS reason.
        #[source]
        source: io::Error,
    },
    /// The process could not be started (missing program, not executable,
    /// argv over the kernel limit, ...).
    #[error("cannot start {program:?}: {source}")]
    Spawn {
        /// argv[0].
        program: String,
        /// The OS reason.
        #[source]
        source: io::Error,
    },
    /// A signal name or number that is not a signal.
    #[error("unknown signal {0:?}")]
    BadSignal(String),
    /// A ring size outside the allowed range.
    #[error("ring size {asked} outside 4096..={max}")]
    BadRingSize {
        /// Size asked for.
        asked: u64,
        /// Largest allowed.
        max: u64,
    },
    /// A terminal size outside 1..=500 in either dimension.
    #[error("terminal size {rows}x{cols} outside 1..=500")]
    BadSize {
        /// Rows asked for.
        rows: u16,
        /// Columns asked for.
        cols: u16,
    },
    /// A terminal operation (resize, screen) on a command without a PTY.
    #[error("command {0} has no terminal")]
    NotAPty(String),
    /// No command with this id (never existed, removed, or expired).
    #[error("no command {0}")]
    NotFound(String),
    /// The command has already exited.
    #[error("command {0} is not running")]
    NotRunning(String),
    /// The command's stdin is closed.
    #[error("stdin of command {0} is closed")]
    StdinClosed(String),
    /// Resumable stdin: bytes that start past what their writer has given
    /// (a client must resend from the first byte not acknowledged).
    #[error(
        "stdin from writer {writer:?} at offset {offset} leaves a hole: {have} bytes taken from it so far"
    )]
    StdinHole {
        /// The writer.
        writer: String,
        /// Where the refused bytes start.
        offset: u64,
        /// Bytes taken from this writer.
        have: u64,
    },
    /// A stdin writer name that is empty or too long.
    #[error("bad stdin writer name {0:?}: 1 to 64 bytes")]
    BadWriter(String),
    /// A request key that is empty or too long.
    #[error("bad request key: 1 to 128 bytes, no NUL")]
    BadRequestKey,
    /// A command's name or labels over their limits
    /// ([`crate::CommandSpec::check_metadata`]).
    #[error("{field} is too large: {len} {unit}, at most {max}")]
    Metadata {
        /// Which field (`name`, `labels`, `label "k"`).
        field: String,
        /// Its size.
        len: usize,
        /// The most allowed.
        max: usize,
        /// What `len` and `max` count (`bytes`, `entries`).
        unit: &'static str,
    },
    /// A drain grace longer than the daemon allows.
    #[error("drain grace {asked:?} is longer than {max:?}")]
    BadDrainGrace {
        /// What was asked.
        asked: std::time::Duration,
        /// The most allowed.
        max: std::time::Duration,
    },
    /// Attaching beyond what the stream has produced.
    #[error("offset {asked} is beyond the end of the stream ({end})")]
    OffsetBeyondEnd {
        /// Offset asked for.
        asked: u64,
        /// Current end of the stream.
        end: u64,
    },
    /// The manager holds its maximum number of commands.
    #[error("too many commands (limit {0})")]
    TooManyCommands(usize),
    /// The ring memory the manager may commit is used up.
    #[error("ring memory exhausted: {asked} bytes asked, {available} of {limit} available")]
    RingMemory {
        /// Bytes this command asked for.
        asked: usize,
        /// Bytes still available.
        available: usize,
        /// The limit.
        limit: usize,
    },
    /// A terminal's screen model of this size does not fit in the memory
    /// budget (shared with the rings).
    #[error(
        "terminal of {rows}x{cols} refused: its screen model needs {asked} bytes, {available} of {limit} available"
    )]
    ScreenMemory {
        /// Rows asked for.
        rows: u16,
        /// Columns asked for.
        cols: u16,
        /// Bytes the screen model needs.
        asked: usize,
        /// Bytes available for it.
        available: usize,
        /// The memory budget.
        limit: usize,
    },
    /// No named shell of this name.
    #[error("no shell {0:?}")]
    ShellNotFound(String),
    /// A shell name outside 1..=64 characters of `[A-Za-z0-9._-]`.
    #[error("invalid shell name {0:?}: use 1 to 64 characters of A-Z a-z 0-9 . _ -")]
    BadShellName(String),
    /// The shell has closed (or closed while the command waited).
    #[error("shell {name:?} is closed: {why}")]
    ShellClosed {
        /// The shell.
        name: String,
        /// How it closed.
        why: String,
    },
    /// The shell program could not be made ready.
    #[error("cannot start shell {program:?}: {why}")]
    ShellStart {
        /// The program.
        program: String,
        /// What went wrong.
        why: String,
    },
    /// An option that a command run in a named shell cannot have (the
    /// shell's own state decides it).
    #[error("{0} cannot be set for a command run in a shell (set it in the script or at shell creation)")]
    NotForShell(&'static str),
    /// The manager holds its maximum number of shells.
    #[error("too many shells (limit {0})")]
    TooManyShells(usize),
    /// The manager is shutting down.
    #[error("the command manager is shutting down")]
    ShuttingDown,
    /// An unexpected OS failure.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl ExecError {
    /// The OS error number behind this error, if any.
    pub fn errno(&self) -> Option<i32> {
        match self {
            ExecError::BadCwd { source, .. }
            | ExecError::Spawn { source, .. }
            | ExecError::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}
