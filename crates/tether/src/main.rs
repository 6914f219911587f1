//! `tether`: the daemon (`tether serve`) and its command-line client.
//!
//! # Layout
//! - `cli`: the clap definitions.
//! - `config`: flags, `TETHER_*` variables and the TOML file, in that
//!   order; `serve --print-config`.
//! - `serve`: `tether serve`.
//! - `run`: the client subcommands (`exec`, `attach`, `ls`, `kill`, `logs`,
//!   `wait`, `status`, `rm`).
//! - `files`: `cp`, `cat`, `run-code` over the plain HTTP routes.
//! - `token`: finding, generating and storing the bearer token.
//! - `tty`: interactive terminal sessions (`exec -it`, `attach`): raw mode,
//!   detach keys, window size, reconnect notice, terminal restore.
#![forbid(unsafe_code)]

mod cli;
mod config;
mod files;
mod run;
mod serve;
mod token;
mod tty;

fn main() {
    // The process's TLS provider (reqwest builds its TLS settings even for
    // plain HTTP); ring, as everywhere in tether.
    #[allow(deprecated)]
    let _ = rustls::crypto::ring::default_provider().install_default();
    let parsed = match config::parse(std::env::args_os().collect()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("tether: {e:#}");
            std::process::exit(2);
        }
    };
    if matches!(&parsed.cli.command, cli::Command::Serve(a) if a.print_config) {
        print!("{}", config::print(&parsed));
    }
    let cli = parsed.cli;
    if matches!(&cli.command, cli::Command::Serve(a) if a.probe_handover) {
        // The arguments parsed: this binary can take over a state of these
        // versions (see `serve::probe_handover`).
        println!("{}", serve::probe_answer());
        std::process::exit(0);
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tether: cannot start the async runtime: {e}");
            std::process::exit(255);
        }
    };
    let code = rt.block_on(async move {
        match cli.command {
            cli::Command::Serve(args) => serve::serve(args, cli.conn).await.map(|()| 0),
            cmd => run::client_command(cli.conn, cmd).await,
        }
    });
    match code {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("tether: {e:#}");
            std::process::exit(255);
        }
    }
}
