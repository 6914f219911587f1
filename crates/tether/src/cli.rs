//! Command-line definitions.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::tty::DetachKeys;

/// Run commands on this host over WebSocket; re-attach after network loss.
#[derive(Parser, Debug)]
#[command(name = "tether", version, about)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) conn: ConnArgs,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Where the daemon is and how to authenticate (client subcommands).
#[derive(Args, Debug, Clone)]
pub(crate) struct ConnArgs {
    /// Daemon URL.
    #[arg(long, global = true, env = "TETHER_URL", default_value = "http://127.0.0.1:7070")]
    pub(crate) url: String,
    /// Bearer token (default: the daemon's token file). Prefer the
    /// environment variable: a flag is visible to other users in `ps`.
    #[arg(long, global = true, env = "TETHER_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// Token file (default: $XDG_CONFIG_HOME/tether/token or ~/.config/tether/token).
    #[arg(long, global = true, env = "TETHER_TOKEN_FILE")]
    pub(crate) token_file: Option<PathBuf>,
    /// Treat a connection on which nothing arrived for this many seconds as
    /// lost, and reconnect (default: 6 for interactive terminals, so the
    /// "reconnecting" notice comes within seconds; 45 otherwise). Pings go
    /// out at a third of it.
    #[arg(long, global = true, env = "TETHER_SILENCE_TIMEOUT", value_name = "SECS")]
    pub(crate) silence_timeout: Option<f64>,
    /// Trust this CA certificate (PEM) for an https:// or wss:// daemon,
    /// besides the system's roots.
    #[arg(long, global = true, env = "TETHER_CA_CERT", value_name = "FILE")]
    pub(crate) ca_cert: Option<PathBuf>,
    /// Send the token over plain http:// to a daemon that is not on this
    /// host (refused otherwise: anyone on the path could read it).
    #[arg(long, global = true, env = "TETHER_ALLOW_INSECURE_TOKEN")]
    pub(crate) allow_insecure_token: bool,
}

// Made once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Run the daemon.
    Serve(ServeArgs),
    /// Run a command on the daemon's host and stream its output.
    Exec(ExecArgs),
    /// Re-attach to a command: a terminal (PTY) command is shown with its
    /// screen restored, interactively; others stream their output.
    Attach {
        /// Command id.
        id: String,
        /// Start at most N bytes before the end of each stream.
        #[arg(long)]
        tail: Option<u64>,
        /// Stream a terminal command's raw output instead of attaching
        /// interactively.
        #[arg(long)]
        raw: bool,
        /// Key sequence that detaches and leaves the command running.
        #[arg(long, env = "TETHER_DETACH_KEYS", default_value = "ctrl-p,ctrl-q")]
        detach_keys: DetachKeys,
    },
    /// List commands (every page of the listing, unless --limit or
    /// --cursor asks for one).
    Ls {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Show one page of at most this many commands (1..=1000); the
        /// next page's cursor goes to stderr.
        #[arg(long)]
        limit: Option<u32>,
        /// Show the page that starts at this cursor (printed by an earlier
        /// `ls --limit`).
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Kill a command (every process of it), or send it a signal.
    Kill {
        /// Command id.
        id: String,
        /// Send this signal instead of killing (TERM, INT, HUP, 9, ...).
        #[arg(long, short)]
        signal: Option<String>,
    },
    /// Print the output a command's ring still holds.
    Logs {
        /// Command id.
        id: String,
        /// Keep streaming until the command exits.
        #[arg(long, short)]
        follow: bool,
    },
    /// Wait for a command to exit; exit with its exit code.
    Wait {
        /// Command id.
        id: String,
    },
    /// Show one command's status as JSON.
    Status {
        /// Command id.
        id: String,
    },
    /// Forget a command (killing it if it runs).
    Rm {
        /// Command id.
        id: String,
    },
    /// Copy a file or a directory tree to or from the daemon's host: write
    /// the remote side as `:PATH` (`tether cp build.tar :/srv/`, `tether cp
    /// :/var/log/app ./logs`). As `cp -r` and `docker cp`: a missing
    /// destination becomes the copy, an existing directory receives the
    /// source inside it, `DIR/.` copies the directory's contents.
    Cp {
        /// Source (`:PATH` on the daemon's host).
        from: String,
        /// Destination (`:PATH` on the daemon's host).
        to: String,
    },
    /// Print a file of the daemon's host.
    Cat {
        /// `:PATH` (the colon is optional).
        path: String,
    },
    /// Run a snippet with an interpreter on the daemon's host (python3,
    /// node, bash, sh, or one the daemon was configured with); exits with
    /// its exit code.
    RunCode {
        /// The language.
        language: String,
        /// The code (or use --file).
        code: Option<String>,
        /// Read the code from this file (`-`: stdin).
        #[arg(long, short, conflicts_with = "code")]
        file: Option<PathBuf>,
        /// Arguments for the code (after `--`).
        #[arg(last = true)]
        args: Vec<String>,
        /// Wall-clock timeout in seconds.
        #[arg(long)]
        timeout: Option<f64>,
    },
    /// Named shells: cwd, variables, functions and aliases persist from one
    /// command to the next; commands queue and run one at a time.
    #[command(subcommand)]
    Shell(ShellCommand),
}

#[derive(Subcommand, Debug)]
pub(crate) enum ShellCommand {
    /// Create a shell (or find the live one of that name); prints its name.
    Create {
        /// Its name (default: a generated, unguessable one).
        name: Option<String>,
        /// Initial working directory.
        #[arg(long)]
        cwd: Option<String>,
        /// Environment variable (repeatable).
        #[arg(long = "env", short = 'e', value_name = "K=V")]
        env: Vec<String>,
        /// The shell program (bash-compatible).
        #[arg(long)]
        program: Option<String>,
        /// Close the shell after this many idle seconds (-1: never).
        #[arg(long, allow_negative_numbers = true)]
        idle_ttl: Option<f64>,
    },
    /// Run a script in a shell and stream its output; exits with its exit
    /// code. Ctrl-C interrupts the script, not the shell.
    Run {
        /// The shell's name.
        name: String,
        /// Wall-clock timeout in seconds (the script is interrupted).
        #[arg(long)]
        timeout: Option<f64>,
        /// Keep the finished command this many seconds (-1: until removed).
        #[arg(long, allow_negative_numbers = true)]
        ttl: Option<f64>,
        /// Queue the script, print its command id and return.
        #[arg(long, short)]
        detach: bool,
        /// Do not forward local stdin (the script's stdin is closed).
        #[arg(long)]
        no_stdin: bool,
        /// The script (words are joined with spaces).
        #[arg(last = true, required = true)]
        script: Vec<String>,
    },
    /// List shells.
    Ls {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show a shell's commands: id, exit code, start and end, script.
    History {
        /// The shell's name.
        name: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Close a shell: kill what it runs and its background jobs, forget it.
    Rm {
        /// The shell's name.
        name: String,
    },
}

#[derive(Args, Debug)]
pub(crate) struct ServeArgs {
    /// A TOML file of settings: its keys are these flags' long names
    /// (`listen = "0.0.0.0:7070"`, `allow-host = ["a.example"]`). Flags
    /// win over `TETHER_*` variables (each flag has one: `TETHER_LISTEN`,
    /// `TETHER_MAX_COMMANDS`, ...), which win over the file.
    #[arg(long, env = "TETHER_CONFIG", value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Print the effective settings (and where each came from) as TOML,
    /// check them, and exit; the token is never printed.
    #[arg(long)]
    pub(crate) print_config: bool,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "TETHER_LISTEN", default_value = "127.0.0.1:7070")]
    pub(crate) listen: SocketAddr,
    /// Also serve Prometheus metrics at `/metrics` on this address, without
    /// the token (for a scraper on a private network); `/metrics` on the
    /// main address always needs the token.
    #[arg(long, value_name = "ADDR")]
    pub(crate) metrics_listen: Option<SocketAddr>,
    /// Serve HTTPS and WSS with this certificate chain (PEM; with
    /// --tls-key). Both files are read again on SIGHUP: a renewed
    /// certificate is taken without a restart.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
    /// Extra allowed browser Origins (e.g. http://localhost:3000); `*` allows any.
    #[arg(long = "allow-origin")]
    pub(crate) allow_origins: Vec<String>,
    /// A host name clients may reach the daemon by (the `Host` header,
    /// repeatable); IP addresses and `localhost` always pass, any other
    /// name is refused (DNS rebinding). `*` allows any.
    #[arg(long = "allow-host", value_name = "NAME")]
    pub(crate) allow_hosts: Vec<String>,
    /// Accept a token shorter than 16 characters, or a token file that
    /// group or others can read (refused otherwise).
    #[arg(long)]
    pub(crate) allow_weak_token: bool,
    /// Most client connections held at once (default: half the open-file
    /// limit); past it a new connection is closed at once.
    #[arg(long, value_name = "N")]
    pub(crate) max_connections: Option<usize>,
    /// Most connections held that have not made an authenticated request
    /// (default: a quarter of --max-connections); a new one past it closes
    /// the oldest.
    #[arg(long, value_name = "N")]
    pub(crate) max_unauthenticated: Option<usize>,
    /// Close a connection that has made no authenticated request this many
    /// seconds after it was accepted.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub(crate) unauthenticated_timeout: f64,
    /// Close a connection whose request headers take longer than this many
    /// seconds to arrive (idle keep-alive included).
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub(crate) header_timeout: f64,
    /// Parse the arguments and exit 0: the running daemon checks a new
    /// binary this way before a restart hands its commands over to it.
    #[arg(long, hide = true)]
    pub(crate) probe_handover: bool,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Human)]
    pub(crate) log_format: LogFormat,
    /// Leave running commands alive when the daemon stops (they lose their
    /// output pipes: a command that writes afterwards gets SIGPIPE).
    #[arg(long)]
    pub(crate) keep_commands_on_shutdown: bool,
    /// Default ring buffer size per stream, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    pub(crate) ring_bytes: usize,
    /// Ring size per stream for commands started by the LangSmith client
    /// (`/compat/langsmith`), in bytes: it cannot notice lost output.
    #[arg(long, default_value_t = 4 << 20)]
    pub(crate) langsmith_ring_bytes: usize,
    /// Bytes of request bodies the one-shot routes (/v1/exec, /v1/code,
    /// LangSmith execute, ConTree runs and uploads) may hold at once,
    /// daemon-wide; past it a request gets 429 with Retry-After.
    #[arg(long, default_value_t = 256 << 20)]
    pub(crate) max_body_memory: usize,
    /// Total ring memory the daemon may commit, in bytes.
    #[arg(long, default_value_t = 4 << 30)]
    pub(crate) max_ring_total: usize,
    /// Most commands held at once.
    #[arg(long, default_value_t = 4096)]
    pub(crate) max_commands: usize,
    /// Where commands' cgroups go: `auto` (below the daemon's own cgroup v2
    /// directory when it may create them there, else none), `off`, or a
    /// cgroup v2 directory (the daemon refuses to start if it cannot use
    /// it). A command's cgroup holds everything it starts; a kill ends
    /// them all.
    #[arg(long, value_name = "auto|off|DIR", default_value = "auto")]
    pub(crate) cgroup: String,
    /// What happens to the processes a command leaves running once it has
    /// ended (its leader exited and its output drained): `kill` or `keep`
    /// (a `kill` of the command still ends them).
    #[arg(long, value_name = "kill|keep", default_value = "kill")]
    pub(crate) leftovers: String,
    /// Default idle timeout in seconds (-1: never).
    #[arg(long, default_value_t = 300, allow_negative_numbers = true)]
    pub(crate) idle_timeout: i64,
    /// Default TTL of finished commands in seconds (-1: until removed).
    #[arg(long, default_value_t = 600, allow_negative_numbers = true)]
    pub(crate) ttl: i64,
    /// Shell for shell-string commands.
    #[arg(long, default_value = "/bin/bash")]
    pub(crate) shell: String,
    /// Confine the file routes to this directory tree (default: not
    /// confined; relative paths start at the daemon's working directory).
    #[arg(long, env = "TETHER_FILES_ROOT")]
    pub(crate) files_root: Option<PathBuf>,
    /// The name the sandbox SDK dialects (Daytona) know this host by,
    /// besides `local`: 1..=64 of `[A-Za-z0-9._-]`.
    #[arg(long, env = "TETHER_SANDBOX_ID")]
    pub(crate) sandbox_id: Option<String>,
    /// This daemon's name among many behind one router: new command ids
    /// become `NAME.c-<16 hex>`, so the router (or a person) can tell which
    /// daemon holds a command. 1..=64 of `[A-Za-z0-9_-]` (default: the
    /// --sandbox-id, when it has no dot).
    #[arg(long, env = "TETHER_NODE_ID", value_name = "NAME")]
    pub(crate) node_id: Option<String>,
    /// A language for `POST /v1/code` (repeatable), e.g. `ruby=ruby` or
    /// `py=python3 -X utf8`; the code file and its arguments follow. Built
    /// in: python3, python, node, bash, sh.
    #[arg(long = "interpreter", value_name = "NAME=PROGRAM")]
    pub(crate) interpreters: Vec<String>,
    /// Seconds between WebSocket pings.
    #[arg(long, default_value_t = 15.0)]
    pub(crate) ping_interval: f64,
    /// Drop a peer silent for this many seconds.
    #[arg(long, default_value_t = 45.0)]
    pub(crate) peer_timeout: f64,
    /// After a command's process exits, keep reading output a background
    /// process still writes for this many seconds (per command:
    /// `exec --drain-grace`). Long enough for the last lines a job writes
    /// as its parent exits; short, because until it passes a command whose
    /// daemonised child holds its stdout open does not end.
    #[arg(long, default_value_t = 0.25)]
    pub(crate) drain_grace: f64,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LogFormat {
    Human,
    Json,
}

#[derive(Args, Debug)]
pub(crate) struct ExecArgs {
    /// Working directory on the daemon's host.
    #[arg(long)]
    pub(crate) cwd: Option<String>,
    /// Environment variable for the command (repeatable).
    #[arg(long = "env", short = 'e', value_name = "K=V")]
    pub(crate) env: Vec<String>,
    /// Wall-clock timeout in seconds.
    #[arg(long)]
    pub(crate) timeout: Option<f64>,
    /// Kill after this many seconds with no client attached (-1: never).
    #[arg(long, allow_negative_numbers = true)]
    pub(crate) idle_timeout: Option<f64>,
    /// Keep the finished command this many seconds (-1: until removed).
    #[arg(long, allow_negative_numbers = true)]
    pub(crate) ttl: Option<f64>,
    /// Kill the command when this client disconnects.
    #[arg(long)]
    pub(crate) kill_on_disconnect: bool,
    /// Kill the command past this many output bytes.
    #[arg(long)]
    pub(crate) max_output: Option<u64>,
    /// Ring buffer size per stream, in bytes.
    #[arg(long)]
    pub(crate) ring_bytes: Option<u64>,
    /// After the command's process exits, keep reading output a background
    /// process still writes for this many seconds (default: the daemon's,
    /// 0.25).
    #[arg(long, value_name = "SECS")]
    pub(crate) drain_grace: Option<f64>,
    /// A name shown in `tether ls`.
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Run this shell command line instead of an argv.
    #[arg(long, conflicts_with = "argv")]
    pub(crate) shell: Option<String>,
    /// Start the command, print its id and return.
    #[arg(long, short)]
    pub(crate) detach: bool,
    /// Do not forward local stdin (the command's stdin is closed).
    #[arg(long)]
    pub(crate) no_stdin: bool,
    /// Let the command run ahead of this client: if the client reads slower
    /// than the command writes, output older than the ring is skipped (and
    /// reported) instead of the command being slowed down.
    #[arg(long)]
    pub(crate) no_pace: bool,
    /// Run the command on a terminal (PTY) the size of this one; with -i,
    /// this terminal goes into raw mode and keystrokes go to the command.
    #[arg(short = 't', long)]
    pub(crate) tty: bool,
    /// Keep stdin open and forward it (the default without -t; with -t,
    /// type into the remote terminal).
    #[arg(short = 'i', long)]
    pub(crate) interactive: bool,
    /// Key sequence that detaches from a -t session and leaves the command
    /// running (docker's syntax: ctrl-X or single characters, comma-separated).
    #[arg(long, env = "TETHER_DETACH_KEYS", default_value = "ctrl-p,ctrl-q")]
    pub(crate) detach_keys: DetachKeys,
    /// The program and its arguments.
    #[arg(last = true)]
    pub(crate) argv: Vec<String>,
}
