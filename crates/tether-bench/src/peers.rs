//! Starting the peers tether is measured against (websocketd, terminado)
//! as the command line asks, and whether they are installed.

use std::path::Path;

use anyhow::Result;

use crate::Args;
use crate::procs::{self, Peer};

/// The result of a peer's rows when it is missing.
pub(crate) const NOT_INSTALLED: &str = "not installed (run bench/setup-peers.sh)";

/// websocketd's command line: on loopback at `port`, quiet, running `cmd`
/// per connection (`--binary`: binary frames).
fn websocketd_args(port: u16, binary: bool, cmd: &[&str]) -> Vec<String> {
    let mut v = vec![format!("--port={port}"), "--address=127.0.0.1".into(), "--loglevel=error".into()];
    if binary {
        v.push("--binary".into());
    }
    v.extend(cmd.iter().map(|s| s.to_string()));
    v
}

/// Starts websocketd running `cmd` on a free port, logging to
/// `logs/NAME.log`.
pub(crate) async fn start_websocketd(
    args: &Args,
    logs: &Path,
    name: &str,
    binary: bool,
    cmd: &[&str],
) -> Result<Peer> {
    let port = procs::free_port()?;
    Peer::start(
        &args.websocketd,
        &websocketd_args(port, binary, cmd),
        port,
        &logs.join(format!("{name}.log")),
    )
    .await
}

/// Whether the websocketd program is on the `PATH` (or at the given path).
pub(crate) fn has_websocketd(args: &Args) -> bool {
    procs::which(&args.websocketd).is_some()
}

/// Whether the Python interpreter can import terminado and tornado.
pub(crate) fn has_terminado(args: &Args) -> bool {
    std::process::Command::new(&args.python)
        .args(["-c", "import terminado, tornado"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Starts `terminado_server.py` with `command` as its terminals' program
/// (empty: `bash`).
pub(crate) async fn start_terminado(args: &Args, logs: &Path, name: &str, command: &[&str]) -> Result<Peer> {
    let port = procs::free_port()?;
    let mut argv = vec![args.terminado_script.to_string_lossy().into_owned(), port.to_string()];
    argv.extend(command.iter().map(|s| s.to_string()));
    Peer::start(&args.python, &argv, port, &logs.join(format!("{name}.log"))).await
}
