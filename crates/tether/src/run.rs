//! The client subcommands.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use tether_client::{
    Client, ClientError, ClientOptions, CommandId, ExecEvent, Execution, PtySpec, ShellRunSpec, ShellSpec,
    ShellState, StartSpec,
};
use tether_proto::{CommandInfo, CommandState, ErrorCode};

use crate::cli::{Command, ConnArgs, ExecArgs, ShellCommand};
use crate::{token, tty};

/// Exit code for failures of tether itself (as ssh uses 255).
const TETHER_FAILURE: i32 = 255;

pub(crate) async fn client_command(conn: ConnArgs, cmd: Command) -> Result<i32> {
    // The plain HTTP ones need no WebSocket.
    let cmd = match cmd {
        Command::Cp { from, to } => return crate::files::cp(&conn, &from, &to).await,
        Command::Cat { path } => return crate::files::cat(&conn, &path).await,
        Command::RunCode { language, code, file, args, timeout } => {
            return crate::files::run_code(&conn, language, code, file, args, timeout).await;
        }
        cmd => cmd,
    };
    let client = connect(&conn, interactive(&cmd)).await?;
    match cmd {
        Command::Serve(_) | Command::Cp { .. } | Command::Cat { .. } | Command::RunCode { .. } => {
            unreachable!("handled above")
        }
        Command::Exec(args) => exec(&client, args).await,
        Command::Attach { id, tail, raw, detach_keys } => {
            let id = CommandId(id);
            let interactive = !raw && tail.is_none() && std::io::IsTerminal::is_terminal(&std::io::stdout());
            if interactive && client.status(&id).await?.pty.is_some() {
                let signals = Signals::install()?;
                let ex = client.attach_terminal(&id, tty::local_size()).await?;
                return tty::session(&client, ex, signals, detach_keys, true).await;
            }
            let ex = match tail {
                Some(n) => client.attach_tail(&id, n).await?,
                None => client.attach(&id, [0, 0]).await?,
            };
            // Ctrl-C detaches and leaves the command running (caught from
            // here on, before any output is written).
            let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
            tokio::select! {
                code = stream(ex, true) => code,
                _ = int.recv() => {
                    eprintln!("\ntether: detached; `tether attach {id}` to come back");
                    Ok(130)
                }
            }
        }
        Command::Ls { json, limit, cursor } => {
            let list = if limit.is_none() && cursor.is_none() {
                client.list().await?
            } else {
                let (page, next) = client.list_page(limit, cursor.as_deref()).await?;
                if let Some(next) = next {
                    let limit = limit.map(|l| format!(" --limit {l}")).unwrap_or_default();
                    eprintln!("more: tether ls{limit} --cursor {next}");
                }
                page
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print_table(&list);
            }
            Ok(0)
        }
        Command::Kill { id, signal } => {
            let id = CommandId(id);
            match signal {
                Some(s) => client.signal(&id, &s).await?,
                None => client.kill(&id).await?,
            }
            Ok(0)
        }
        Command::Logs { id, follow } => logs(&client, CommandId(id), follow).await,
        Command::Wait { id } => {
            let mut ex = client.attach_tail(&CommandId(id), 0).await?;
            while let Some(ev) = ex.next().await {
                if let ExecEvent::Exit(st) = ev? {
                    return Ok(st.shell_code());
                }
            }
            bail!("the stream ended without an exit status")
        }
        Command::Status { id } => {
            let info = client.status(&CommandId(id)).await?;
            println!("{}", serde_json::to_string_pretty(&info)?);
            Ok(0)
        }
        Command::Rm { id } => {
            client.remove(&CommandId(id)).await?;
            Ok(0)
        }
        Command::Shell(cmd) => shell(&client, cmd).await,
    }
}

async fn shell(client: &Client, cmd: ShellCommand) -> Result<i32> {
    match cmd {
        ShellCommand::Create { name, cwd, env, program, idle_ttl } => {
            let spec =
                ShellSpec { name, cwd, env: parse_env(&env)?, program, idle_ttl_ms: lifetime_ms(idle_ttl) };
            let (info, created) = client.shell_create(spec).await?;
            if !created {
                eprintln!("tether: shell {} exists; using it", info.name);
            }
            println!("{}", info.name);
            Ok(0)
        }
        ShellCommand::Run { name, timeout, ttl, detach, no_stdin, script } => {
            let spec = ShellRunSpec {
                script: script.join(" "),
                timeout_ms: timeout_ms(timeout),
                ttl_ms: lifetime_ms(ttl),
                close_stdin: no_stdin || detach,
                pace: !detach,
                ..ShellRunSpec::default()
            };
            if detach {
                println!("{}", client.shell_submit(&name, spec).await?);
                return Ok(0);
            }
            // Ctrl-C interrupts the script (the shell stays), as on a terminal.
            let signals = Signals::install()?;
            let ex = client.shell_run(&name, spec).await?;
            let id = ex.id().clone();
            if !no_stdin {
                tokio::spawn(forward_stdin(client.clone(), id.clone()));
            }
            let signals = signals.forward(client.clone(), id);
            tokio::select! {
                code = stream(ex, false) => code,
                r = signals => r.map(|()| TETHER_FAILURE),
            }
        }
        ShellCommand::Ls { json } => {
            let shells = client.shells().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&shells)?);
                return Ok(0);
            }
            println!(
                "{:<24} {:>8} {:<7} {:>6} {:>8} {:>8} CWD",
                "NAME", "PID", "STATE", "QUEUED", "AGE", "USED"
            );
            let now = now_ms();
            for s in shells {
                let state = match s.state {
                    ShellState::Idle => "idle",
                    ShellState::Busy => "busy",
                    ShellState::Closed => "closed",
                    ShellState::Unknown => "?",
                };
                println!(
                    "{:<24} {:>8} {:<7} {:>6} {:>8} {:>8} {}",
                    s.name,
                    s.pid,
                    state,
                    s.queued,
                    human_age(now.saturating_sub(s.created_at_ms) / 1000),
                    human_age(now.saturating_sub(s.last_used_ms) / 1000),
                    s.cwd
                );
            }
            Ok(0)
        }
        ShellCommand::History { name, json } => {
            let entries = client.shell_history(&name).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&entries)?);
                return Ok(0);
            }
            println!("{:<20} {:<7} {:>5} {:>9} {:>9} SCRIPT", "ID", "STATE", "EXIT", "STARTED", "TOOK");
            let now = now_ms();
            for e in entries {
                let state = state_name(e.state);
                let exit = match (e.exit_code, e.reason) {
                    (Some(c), _) => c.to_string(),
                    (None, Some(_)) => "-".to_owned(),
                    (None, None) => String::new(),
                };
                let started = e
                    .started_at_ms
                    .map_or(String::new(), |t| human_age(now.saturating_sub(t) / 1000) + " ago");
                let took = match (e.started_at_ms, e.ended_at_ms) {
                    (Some(a), Some(b)) => format!("{}ms", b.saturating_sub(a)),
                    _ => String::new(),
                };
                let mut line = e.script.replace('\n', "; ");
                if line.len() > 60 {
                    line.truncate(line.floor_char_boundary(57));
                    line.push_str("...");
                }
                println!("{:<20} {:<7} {:>5} {:>9} {:>9} {}", e.command, state, exit, started, took, line);
            }
            Ok(0)
        }
        ShellCommand::Rm { name } => {
            client.shell_close(&name).await?;
            Ok(0)
        }
    }
}

fn state_name(s: CommandState) -> &'static str {
    match s {
        CommandState::Queued => "queued",
        CommandState::Running => "running",
        CommandState::Exited => "exited",
    }
}

/// Seconds from a flag as the wire's milliseconds, negative meaning never.
fn lifetime_ms(secs: Option<f64>) -> Option<i64> {
    secs.map(|s| if s < 0.0 { -1 } else { (s * 1000.0) as i64 })
}

/// Seconds from a flag as the wire's milliseconds (never negative).
fn timeout_ms(secs: Option<f64>) -> Option<u64> {
    secs.map(|s| (s * 1000.0).max(0.0) as u64)
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_millis() as u64
}

fn parse_env(kvs: &[String]) -> Result<BTreeMap<String, String>> {
    let mut env = BTreeMap::new();
    for kv in kvs {
        let (k, v) = kv.split_once('=').with_context(|| format!("--env {kv:?}: expected K=V"))?;
        env.insert(k.to_owned(), v.to_owned());
    }
    Ok(env)
}

/// Whether the command shows an interactive terminal (a person watching:
/// a lost connection must show within seconds).
fn interactive(cmd: &Command) -> bool {
    match cmd {
        Command::Exec(a) => a.tty,
        Command::Attach { raw, tail, .. } => !raw && tail.is_none(),
        _ => false,
    }
}

async fn connect(conn: &ConnArgs, interactive: bool) -> Result<Client> {
    let mut opts = ClientOptions::default();
    let silence = conn.silence_timeout.unwrap_or(if interactive { 6.0 } else { 45.0 });
    opts.peer_timeout = Duration::from_secs_f64(silence.clamp(0.3, 3600.0));
    opts.keepalive = opts.peer_timeout / 3;
    opts.ca_cert = conn.ca_cert.clone();
    opts.allow_insecure_token = conn.allow_insecure_token;
    Ok(Client::connect_with(&conn.url, &token(conn)?, opts).await?)
}

/// The token: given, or from the token file.
pub(crate) fn token(conn: &ConnArgs) -> Result<String> {
    match &conn.token {
        Some(t) if !t.is_empty() => Ok(t.clone()),
        _ => {
            let path = match &conn.token_file {
                Some(p) => p.clone(),
                None => token::default_path()?,
            };
            token::read(&path).context("no TETHER_TOKEN and no readable token file")
        }
    }
}

fn spec_from_args(args: &ExecArgs) -> Result<StartSpec> {
    let mut spec = StartSpec::default();
    match (&args.shell, args.argv.is_empty()) {
        (Some(s), true) => spec.shell = Some(s.clone()),
        (None, false) => spec.argv = args.argv.clone(),
        (None, true) => {
            bail!("nothing to run: give `-- PROGRAM ARGS...` or `--shell 'command line'`")
        }
        (Some(_), false) => bail!("give either --shell or an argv, not both"),
    }
    spec.cwd = args.cwd.clone();
    spec.env = parse_env(&args.env)?;
    spec.timeout_ms = timeout_ms(args.timeout);
    spec.idle_timeout_ms = lifetime_ms(args.idle_timeout);
    spec.ttl_ms = lifetime_ms(args.ttl);
    spec.kill_on_disconnect = args.kill_on_disconnect;
    spec.max_output_bytes = args.max_output;
    spec.ring_bytes = args.ring_bytes;
    spec.drain_grace_ms = timeout_ms(args.drain_grace);
    spec.name = args.name.clone();
    spec.close_stdin = args.no_stdin || args.detach;
    spec.pace = !args.no_pace && !args.detach;
    if args.tty {
        let size = tty::local_size();
        let term = std::env::var("TERM").ok().filter(|t| !t.is_empty() && t != "dumb");
        spec.pty = Some(PtySpec { rows: size.rows, cols: size.cols, term });
        // Closing a terminal's input types end-of-file: never do it unasked.
        spec.close_stdin = false;
    }
    Ok(spec)
}

async fn exec(client: &Client, args: ExecArgs) -> Result<i32> {
    let spec = spec_from_args(&args)?;
    if args.detach {
        let (id, _pid) = client.start_detached(spec).await?;
        println!("{id}");
        return Ok(0);
    }
    // Ctrl-C (and SIGTERM) go to the command, as ssh does; its exit ends us.
    let signals = Signals::install()?;
    let ex = match client.start(spec).await {
        Ok(ex) => ex,
        // Like a shell: 127 for "not found", 126 for "cannot execute".
        Err(e @ ClientError::Server { code: ErrorCode::SpawnFailed, errno, .. }) => {
            eprintln!("tether: {e}");
            return Ok(if errno == Some(2) { 127 } else { 126 });
        }
        Err(e) => return Err(e.into()),
    };
    if args.tty {
        return tty::session(client, ex, signals, args.detach_keys, args.interactive && !args.no_stdin).await;
    }
    let id = ex.id().clone();
    if !args.no_stdin {
        tokio::spawn(forward_stdin(client.clone(), id.clone()));
    }
    let signals = signals.forward(client.clone(), id);
    tokio::select! {
        code = stream(ex, false) => code,
        r = signals => r.map(|()| TETHER_FAILURE),
    }
}

async fn forward_stdin(client: Client, id: CommandId) {
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(tty::read_stdin(tx));
    while let Some(chunk) = rx.recv().await {
        if let Err(e) = client.write_stdin(&id, chunk).await {
            // Stdin survives reconnects (it is numbered and resent); this
            // is the command closing its stdin, or the daemon gone for
            // good. Close it rather than leave the command waiting.
            eprintln!("tether: stdin forwarding stopped: {e}");
            break;
        }
    }
    let _ = client.close_stdin(&id).await;
}

/// SIGINT and SIGTERM, caught from the moment `install` returns: one that
/// arrives before the command's output is being read (it may already be on
/// the screen) is held for whoever handles it (`forward`, a terminal
/// session), never the default action that would kill us and leave the
/// command running.
pub(crate) struct Signals {
    pub(crate) int: tokio::signal::unix::Signal,
    pub(crate) term: tokio::signal::unix::Signal,
}

impl Signals {
    pub(crate) fn install() -> Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals { int: signal(SignalKind::interrupt())?, term: signal(SignalKind::terminate())? })
    }

    /// Forwards the signals to the command until an error; never returns
    /// `Ok` otherwise.
    async fn forward(mut self, client: Client, id: CommandId) -> Result<()> {
        loop {
            let name = tokio::select! {
                _ = self.int.recv() => "INT",
                _ = self.term.recv() => "TERM",
            };
            if let Err(e) = client.signal(&id, name).await {
                eprintln!("tether: could not forward SIG{name}: {e}");
            }
        }
    }
}

/// Writes an execution's output to the local stdout/stderr; returns the
/// command's shell-style exit code.
async fn stream(mut ex: Execution, quiet_gaps_at_start: bool) -> Result<i32> {
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    let mut seen_data = false;
    while let Some(ev) = ex.next().await {
        match ev? {
            ExecEvent::Stdout(b) => {
                seen_data = true;
                out.write_all(&b).and_then(|()| out.flush()).context("writing stdout")?;
            }
            ExecEvent::Stderr(b) => {
                seen_data = true;
                err.write_all(&b).context("writing stderr")?;
            }
            ExecEvent::Gap { stream, from, to } => {
                if !quiet_gaps_at_start || seen_data {
                    let s = stream.name();
                    eprintln!(
                        "\ntether: {} bytes of {s} lost (offsets {from}..{to}): the daemon's ring no longer held them",
                        to - from
                    );
                }
            }
            ExecEvent::Screen { data, .. } => {
                seen_data = true;
                out.write_all(&data).and_then(|()| out.flush()).context("writing stdout")?;
            }
            ExecEvent::Resized(_) => {}
            ExecEvent::Exit(st) => {
                out.flush().ok();
                return Ok(st.shell_code());
            }
        }
    }
    bail!("the stream ended without an exit status")
}

async fn logs(client: &Client, id: CommandId, follow: bool) -> Result<i32> {
    let info = client.status(&id).await?;
    let ex = client.attach(&id, [0, 0]).await?;
    if follow || info.state == CommandState::Exited {
        return stream(ex, true).await.map(|_| 0);
    }
    // Print up to the ends as of now, then stop.
    let ends = [info.stdout.end, info.stderr.end];
    let mut ex = ex;
    let mut at = [info.stdout.first_held, info.stderr.first_held];
    let mut out = std::io::stdout();
    while at[0] < ends[0] || at[1] < ends[1] {
        let Some(ev) = ex.next().await else { break };
        match ev? {
            ExecEvent::Stdout(b) => {
                at[0] += b.len() as u64;
                out.write_all(&b)?;
            }
            ExecEvent::Stderr(b) => {
                at[1] += b.len() as u64;
                std::io::stderr().write_all(&b)?;
            }
            ExecEvent::Gap { stream, to, .. } => at[stream.index()] = to,
            ExecEvent::Screen { .. } | ExecEvent::Resized(_) => {}
            ExecEvent::Exit(_) => break,
        }
    }
    out.flush()?;
    Ok(0)
}

fn print_table(list: &[CommandInfo]) {
    let now = now_ms();
    println!("{:<20} {:>8} {:<8} {:>6} {:>8} {:<12} COMMAND", "ID", "PID", "STATE", "EXIT", "AGE", "NAME");
    for c in list {
        let state = state_name(c.state);
        let exit = c.exit.as_ref().map_or(String::new(), |e| e.shell_code().to_string());
        let age = human_age(now.saturating_sub(c.started_at_ms) / 1000);
        let mut cmdline = c.argv.join(" ").replace('\n', " ");
        if cmdline.len() > 60 {
            cmdline.truncate(cmdline.floor_char_boundary(57));
            cmdline.push_str("...");
        }
        println!(
            "{:<20} {:>8} {:<8} {:>6} {:>8} {:<12} {}",
            c.command,
            c.pid,
            state,
            exit,
            age,
            c.name.as_deref().unwrap_or(""),
            cmdline
        );
    }
}

fn human_age(s: u64) -> String {
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}
