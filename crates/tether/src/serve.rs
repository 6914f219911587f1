//! `tether serve`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tether_server::{Ended, HANDOVER_ENV, Handover, LISTENER_FD, Server, ServerConfig, Stop, Token, Tokens};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::cli::{ConnArgs, LogFormat, ServeArgs};
use crate::token;

pub(crate) async fn serve(args: ServeArgs, conn: ConnArgs) -> Result<()> {
    if args.print_config {
        // Printed by then: check the settings as serving would, without
        // the token (nor creating its file) or binding.
        config(&args, "print-config-check-only".to_owned())?;
        return Ok(());
    }
    init_tracing(args.log_format);
    let weak_ok = args.allow_weak_token;
    let (token, file) = load_token(conn, weak_ok)?;
    let mut cfg = config(&args, token)?;
    // Recorded now: after an upgrade replaced the binary, this path names
    // the new one (`/proc/self/exe` would still name the old).
    let exe = std::env::current_exe().context("finding the daemon's own binary")?;
    let argv: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    // Handlers first: after a restart, SIGUSR2 was ignored across the exec
    // and is handled again from here on (before the "listening" line).
    let stops = stop_signals();
    if let Some(path) = file {
        tokio::spawn(watch_token_file(path, cfg.token.clone(), weak_ok));
    }
    if let Some(tls) = cfg.tls.clone() {
        tokio::spawn(reload_tls_on_hangup(tls));
    }
    let (mut server, mut listener) = start(&args, &mut cfg).await?;
    if let Some(addr) = args.metrics_listen {
        serve_metrics(addr, &server).await?;
    }
    loop {
        let stops = stops.clone();
        let (probe_exe, probe_argv) = (exe.clone(), argv.clone());
        let stop = async move {
            loop {
                let why = stops.lock().await.recv().await.unwrap_or(Stop::Shutdown);
                if why == Stop::Shutdown {
                    return why;
                }
                // Only to a binary that starts: one that cannot would take
                // the commands down with it.
                match probe_handover(&probe_exe, &probe_argv).await {
                    Ok(()) => return why,
                    Err(e) => tracing::error!(
                        exe = %probe_exe.display(),
                        "restart refused: the new binary failed its check ({e:#}); still serving"
                    ),
                }
            }
        };
        // On stdout, one line, so scripts and tests can find a port-0
        // address (again after each restart), once the server holds all it
        // holds while serving. Whoever read it may have closed the pipe
        // since: that is no error.
        let scheme = if cfg.tls.is_some() { "https" } else { "http" };
        let ready = |addr: std::net::SocketAddr| {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "tether: listening on {scheme}://{addr}").and_then(|()| out.flush());
            tracing::info!(%addr, "listening");
        };
        match server.serve(listener, stop, ready).await? {
            Ended::Shutdown => return Ok(()),
            Ended::Restart(mut h) => {
                tracing::info!(commands = h.len(), exe = %exe.display(), "restarting: exec");
                // Returns only if the exec failed: carry on in this process.
                let e = tether_server::exec_restart(&h, &exe, &argv);
                tracing::error!("exec of {} failed: {e}; resuming in this process", exe.display());
                listener = listener_of(&mut h)?;
                server = Server::resume(cfg.clone(), &mut h);
            }
        }
    }
}

/// Reads the certificate and key again on every SIGHUP; a pair that cannot
/// be used is logged and the previous one kept.
async fn reload_tls_on_hangup(tls: Arc<tether_server::Tls>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()).map_err(|e| tracing::error!("cannot watch SIGHUP: {e}"))
    else {
        return;
    };
    while hup.recv().await.is_some() {
        match tls.reload() {
            Ok(()) => tracing::info!("SIGHUP: TLS certificate and key read again"),
            Err(e) => {
                tracing::error!("SIGHUP: TLS certificate not reloaded ({e}); still serving the previous one")
            }
        }
    }
}

/// Serves `/metrics` alone, unauthenticated, on `addr` (`--metrics-listen`)
/// for as long as the process lives; a restart's exec closes it and the
/// new process binds it again.
async fn serve_metrics(addr: std::net::SocketAddr, server: &Server) -> Result<()> {
    let listener = TcpListener::bind(addr).await.with_context(|| format!("--metrics-listen {addr}"))?;
    let local = listener.local_addr()?;
    // (Not on stdout: its one line per start is the main address.)
    tracing::info!(addr = %local, "metrics listening");
    let app = server.metrics_router();
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("metrics listener failed: {e}");
        }
    });
    Ok(())
}

/// The containment flags: `--cgroup` and `--leftovers`. The daemon is a
/// child subreaper, and its seat (set once it listens) is its address.
fn containment(cgroup: &str, leftovers: &str) -> Result<tether_exec::ContainConfig> {
    use tether_exec::{CgroupChoice, Leftovers};
    let cgroup = match cgroup {
        "auto" => CgroupChoice::Auto,
        "off" => CgroupChoice::Off,
        dir => {
            let dir = std::path::PathBuf::from(dir);
            anyhow::ensure!(
                dir.is_absolute(),
                "--cgroup {dir:?}: expected auto, off or an absolute directory"
            );
            tether_exec::check_cgroup(&dir).with_context(|| format!("--cgroup {}", dir.display()))?;
            CgroupChoice::At(dir)
        }
    };
    let leftovers = match leftovers {
        "kill" => Leftovers::Kill,
        "keep" => Leftovers::Keep,
        other => anyhow::bail!("--leftovers {other:?}: expected kill or keep"),
    };
    Ok(tether_exec::ContainConfig { cgroup, subreaper: true, leftovers, seat: None })
}

/// How long a new binary gets to pass its check.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// What `--probe-handover` prints: the handover versions this binary
/// reads.
pub(crate) fn probe_answer() -> String {
    format!("tether handover {}-{}", tether_exec::HANDOVER_OLDEST_READ, tether_exec::HANDOVER_VERSION)
}

/// Runs `exe` with the daemon's arguments and `--probe-handover` (parse
/// them, print the handover versions it reads, and exit 0), without the
/// handover or any of the daemon's files. A binary that cannot read the
/// state this one writes (an older one: a downgrade) is refused here, while
/// the commands are still this daemon's, rather than fail after the exec
/// with them.
async fn probe_handover(exe: &std::path::Path, argv: &[std::ffi::OsString]) -> Result<()> {
    let mut cmd = tokio::process::Command::new(exe);
    cmd.args(argv)
        .arg("--probe-handover")
        .env_remove(HANDOVER_ENV)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().with_context(|| format!("starting {}", exe.display()))?;
    let out = tokio::time::timeout(PROBE_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {PROBE_TIMEOUT:?}"))??;
    anyhow::ensure!(out.status.success(), "it ended with {}", out.status);
    let answer = String::from_utf8_lossy(&out.stdout);
    let reads = answer.lines().rev().find_map(|l| l.strip_prefix("tether handover ")).and_then(|r| {
        let (lo, hi) = r.trim().split_once('-')?;
        Some((lo.parse::<u32>().ok()?, hi.parse::<u32>().ok()?))
    });
    let v = tether_exec::HANDOVER_VERSION;
    match reads {
        Some((lo, hi)) if (lo..=hi).contains(&v) => Ok(()),
        Some((lo, hi)) => {
            anyhow::bail!("it reads handover states of versions {lo} to {hi}, this daemon writes {v}")
        }
        None => anyhow::bail!(
            "it does not say which handover states it reads (a tether older than handover version {v} cannot \
             read this daemon's)"
        ),
    }
}

/// How often the token file is read again (SIGHUP reads it at once).
const TOKEN_POLL: Duration = Duration::from_secs(1);

/// Reads the token file again every [`TOKEN_POLL`] and on SIGHUP; a new
/// token replaces the old one, which is revoked at once (connections that
/// used it close with 1008). A new token that is weak and not allowed
/// revokes the old one and accepts none until the file is fixed. An
/// unreadable or empty file (being rewritten) changes nothing.
async fn watch_token_file(path: std::path::PathBuf, tokens: Tokens, weak_ok: bool) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup()).map_err(|e| tracing::error!("cannot watch SIGHUP: {e}")).ok();
    let mut tick = tokio::time::interval(TOKEN_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<String> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                tracing::info!("SIGHUP: reading the token file again");
            }
        }
        let Ok(t) = token::read(&path) else { continue };
        if last.as_deref() == Some(t.as_str()) {
            continue;
        }
        let first = last.is_none();
        last = Some(t.clone());
        let problem = match token::exposure(&path) {
            Ok(Some(why)) => Some(why),
            _ => token::weakness(&t, &path.display().to_string()),
        };
        if let Some(why) = &problem {
            if !weak_ok {
                tokens.revoke();
                tracing::error!("{why}: refusing every request until the token file is fixed");
                continue;
            }
            tracing::warn!("WEAK TOKEN: {why}");
        }
        if tokens.set(Token::new(t)) && !first {
            tracing::info!(file = %path.display(), "token file changed: the previous token is revoked");
        }
    }
}

/// The listening socket handed over with the commands.
fn listener_of(h: &mut Handover) -> Result<TcpListener> {
    let fd = h.take_fd(LISTENER_FD).context("the handover has no listening socket")?;
    let std = std::net::TcpListener::from(fd);
    std.set_nonblocking(true)?;
    Ok(TcpListener::from_std(std)?)
}

/// SIGTERM or Ctrl-C: shut down. SIGUSR2: restart in place (re-exec the
/// binary, keeping commands and the listening socket). The handlers are
/// installed before this returns; stops arrive on the channel.
fn stop_signals() -> Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Stop>>> {
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, rx) = mpsc::unbounded_channel();
    let term = signal(SignalKind::terminate()).map_err(|e| tracing::error!("cannot watch SIGTERM: {e}")).ok();
    let usr2 = signal(SignalKind::user_defined2())
        .map_err(|e| tracing::error!("cannot watch SIGUSR2 (no restart): {e}"))
        .ok();
    let int = signal(SignalKind::interrupt()).map_err(|e| tracing::error!("cannot watch SIGINT: {e}")).ok();
    tokio::spawn(async move {
        async fn next(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        let (mut term, mut usr2, mut int) = (term, usr2, int);
        loop {
            let stop = tokio::select! {
                _ = next(&mut term) => {
                    tracing::info!("SIGTERM");
                    Stop::Shutdown
                }
                _ = next(&mut int) => {
                    tracing::info!("SIGINT");
                    Stop::Shutdown
                }
                _ = next(&mut usr2) => {
                    tracing::info!("SIGUSR2");
                    Stop::Restart
                }
            };
            if tx.send(stop).is_err() {
                return;
            }
        }
    });
    Arc::new(tokio::sync::Mutex::new(rx))
}

/// Logs on stderr, filtered by `TETHER_LOG`; human logs are coloured only
/// on a terminal (and never with `NO_COLOR` set), so that a file or a
/// journal gets plain text.
fn init_tracing(format: LogFormat) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("TETHER_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colour);
    match format {
        LogFormat::Human => b.init(),
        LogFormat::Json => b.json().init(),
    }
}

/// The token to serve with (from `--token` / `TETHER_TOKEN`, else the token
/// file, created if need be) and the file to watch for a new one. A weak
/// or exposed token is refused unless `weak_ok`, and said loudly if so.
fn load_token(conn: ConnArgs, weak_ok: bool) -> Result<(String, Option<std::path::PathBuf>)> {
    // Refused unless allowed; allowed, it is still said loudly.
    let weak = |why: String| -> Result<()> {
        anyhow::ensure!(weak_ok, "{why}; refusing to serve (--allow-weak-token to accept it)");
        tracing::warn!("WEAK TOKEN: {why}");
        eprintln!("tether: WARNING: {why}");
        Ok(())
    };
    match conn.token.filter(|t| !t.is_empty()) {
        Some(t) => {
            tracing::info!("using the token from TETHER_TOKEN / --token");
            if let Some(why) = token::weakness(&t, "TETHER_TOKEN / --token") {
                weak(why)?;
            }
            Ok((t, None))
        }
        None => {
            let path = match conn.token_file {
                Some(p) => p,
                None => token::default_path()?,
            };
            let (t, created) = token::load_or_create(&path)?;
            let verb = if created { "wrote a new token to" } else { "using the token in" };
            eprintln!("tether: {verb} {} (clients read it from there)", path.display());
            if let Some(why) = token::exposure(&path)? {
                weak(why)?;
            }
            if let Some(why) = token::weakness(&t, &path.display().to_string()) {
                weak(why)?;
            }
            Ok((t, Some(path)))
        }
    }
}

/// The server's configuration from the flags.
fn config(args: &ServeArgs, token: String) -> Result<ServerConfig> {
    let secs = |s: i64| (s >= 0).then(|| Duration::from_secs(s as u64));
    let mut cfg = ServerConfig::new(Token::new(token));
    cfg.allowed_origins = args
        .allow_origins
        .iter()
        .map(|o| tether_server::normalize_origin(o))
        .collect::<Result<_, _>>()
        .context("--allow-origin")?;
    cfg.allowed_hosts = args
        .allow_hosts
        .iter()
        .map(|h| tether_server::normalize_host(h))
        .collect::<Result<_, _>>()
        .context("--allow-host")?;
    if let Some(n) = args.max_connections {
        anyhow::ensure!(n > 0, "--max-connections must be at least 1");
        cfg.max_connections = n;
        cfg.max_unauthenticated = (n / 4).max(1);
    }
    if let Some(n) = args.max_unauthenticated {
        anyhow::ensure!(n > 0, "--max-unauthenticated must be at least 1");
        cfg.max_unauthenticated = n.min(cfg.max_connections);
    }
    let timeout = |flag: &str, s: f64| -> Result<Duration> {
        anyhow::ensure!(
            s.is_finite() && s > 0.0 && s <= 86400.0,
            "{flag} {s}: expected seconds in (0, 86400]"
        );
        Ok(Duration::from_secs_f64(s))
    };
    cfg.unauthenticated_timeout = timeout("--unauthenticated-timeout", args.unauthenticated_timeout)?;
    cfg.header_timeout = timeout("--header-timeout", args.header_timeout)?;
    cfg.kill_on_shutdown = !args.keep_commands_on_shutdown;
    cfg.ping_interval = Duration::from_secs_f64(args.ping_interval.max(0.05));
    cfg.peer_timeout = Duration::from_secs_f64(args.peer_timeout.max(0.1));
    for (flag, n) in
        [("--ring-bytes", args.ring_bytes), ("--langsmith-ring-bytes", args.langsmith_ring_bytes)]
    {
        let (min, max) = (tether_exec::MIN_RING_BYTES, cfg.manager.max_ring_bytes);
        anyhow::ensure!((min..=max).contains(&n), "{flag} {n}: expected {min}..={max} bytes");
    }
    cfg.manager.ring_bytes = args.ring_bytes;
    cfg.manager.drain_grace = Duration::from_secs_f64(args.drain_grace.clamp(0.0, 3600.0));
    cfg.langsmith_ring_bytes = Some(args.langsmith_ring_bytes);
    cfg.max_body_memory = args.max_body_memory;
    cfg.manager.max_total_ring_bytes = args.max_ring_total;
    cfg.manager.max_commands = args.max_commands;
    cfg.manager.idle_timeout = secs(args.idle_timeout);
    cfg.manager.ttl = secs(args.ttl);
    cfg.manager.default_shell = args.shell.clone();
    cfg.manager.contain = containment(&args.cgroup, &args.leftovers)?;
    if let Some(root) = &args.files_root {
        if !root.is_dir() {
            anyhow::bail!("--files-root {}: not a directory", root.display());
        }
        cfg.files_root = Some(root.clone());
    }
    if let Some(id) = &args.sandbox_id {
        let ok = (1..=64).contains(&id.len())
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !ok {
            anyhow::bail!("--sandbox-id {id:?}: expected 1..=64 of [A-Za-z0-9._-]");
        }
        cfg.sandbox_id = Some(id.clone());
    }
    let node_ok = |n: &str| {
        (1..=64).contains(&n.len())
            && n.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
    };
    cfg.manager.node_id = match (&args.node_id, &args.sandbox_id) {
        (Some(n), _) if node_ok(n) => Some(n.clone()),
        (Some(n), _) => anyhow::bail!("--node-id {n:?}: expected 1..=64 of [A-Za-z0-9_-]"),
        (None, Some(s)) if node_ok(s) => Some(s.clone()),
        _ => None,
    };
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        cfg.tls = Some(tether_server::Tls::load(cert, key).context("--tls-cert/--tls-key")?);
    }
    for spec in &args.interpreters {
        let (name, program) = spec
            .split_once('=')
            .filter(|(n, p)| !n.is_empty() && !p.trim().is_empty())
            .with_context(|| format!("--interpreter {spec:?}: expected NAME=PROGRAM [ARGS...]"))?;
        cfg.interpreters.insert(name.to_owned(), program.split_whitespace().map(str::to_owned).collect());
    }

    Ok(cfg)
}

/// The server and its listener: taken over from the previous daemon after
/// a restart (the handover's memfd is named in the environment), else new
/// on `--listen`. The daemon's seat (whose leftovers it sweeps) is its
/// address.
async fn start(args: &ServeArgs, cfg: &mut ServerConfig) -> Result<(Server, TcpListener)> {
    Ok(match std::env::var(HANDOVER_ENV).ok() {
        Some(fd) => {
            let fd = fd.parse().with_context(|| format!("{HANDOVER_ENV}={fd:?}: not an fd number"))?;
            let t = std::time::Instant::now();
            let mut h = Handover::inherit(fd).context("reading the previous daemon's handover")?;
            let read_ms = t.elapsed().as_millis() as u64;
            let listener = listener_of(&mut h)?;
            cfg.manager.contain.seat = Some(listener.local_addr()?.to_string());
            let n = h.len();
            let server = Server::resume(cfg.clone(), &mut h);
            let ms = t.elapsed().as_millis() as u64;
            tracing::info!(commands = n, read_ms, ms, "restarted: took over the previous daemon's commands");
            (server, listener)
        }
        None => {
            let listener =
                TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
            cfg.manager.contain.seat = Some(listener.local_addr()?.to_string());
            (Server::new(cfg.clone()), listener)
        }
    })
}
