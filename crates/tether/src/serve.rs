//! `tether serve`.

use std::time::Duration;

use anyhow::{Context, Result};
use tether_server::{Server, ServerConfig, Token};
use tokio::net::TcpListener;

use crate::cli::{ConnArgs, LogFormat, ServeArgs};
use crate::token;

pub(crate) async fn serve(args: ServeArgs, conn: ConnArgs) -> Result<()> {
    init_tracing(args.log_format);
    let token = match conn.token.filter(|t| !t.is_empty()) {
        Some(t) => {
            tracing::info!("using the token from TETHER_TOKEN / --token");
            t
        }
        None => {
            let path = match conn.token_file {
                Some(p) => p,
                None => token::default_path()?,
            };
            let (t, created) = token::load_or_create(&path)?;
            let verb = if created { "wrote a new token to" } else { "using the token in" };
            eprintln!("tether: {verb} {} (clients read it from there)", path.display());
            t
        }
    };
    let secs = |s: i64| (s >= 0).then(|| Duration::from_secs(s as u64));
    let mut cfg = ServerConfig::new(Token::new(token));
    cfg.allowed_origins = args.allow_origins;
    cfg.kill_on_shutdown = !args.keep_commands_on_shutdown;
    cfg.ping_interval = Duration::from_secs_f64(args.ping_interval.max(0.05));
    cfg.peer_timeout = Duration::from_secs_f64(args.peer_timeout.max(0.1));
    cfg.manager.ring_bytes = args.ring_bytes;
    cfg.manager.max_total_ring_bytes = args.max_ring_total;
    cfg.manager.max_commands = args.max_commands;
    cfg.manager.idle_timeout = secs(args.idle_timeout);
    cfg.manager.ttl = secs(args.ttl);
    cfg.manager.default_shell = args.shell;
    if let Some(root) = &args.files_root {
        if !root.is_dir() {
            anyhow::bail!("--files-root {}: not a directory", root.display());
        }
        cfg.files_root = Some(root.clone());
    }
    for spec in &args.interpreters {
        let (name, program) = spec
            .split_once('=')
            .filter(|(n, p)| !n.is_empty() && !p.trim().is_empty())
            .with_context(|| format!("--interpreter {spec:?}: expected NAME=PROGRAM [ARGS...]"))?;
        cfg.interpreters.insert(name.to_owned(), program.split_whitespace().map(str::to_owned).collect());
    }

    let listener =
        TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    // On stdout, one line, so scripts and tests can find a port-0 address.
    println!("tether: listening on http://{addr}");
    tracing::info!(%addr, "listening");
    let server = Server::new(cfg);
    server.run(listener, shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot watch SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT"),
    }
}

fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("TETHER_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Human => b.init(),
        LogFormat::Json => b.json().init(),
    }
}
