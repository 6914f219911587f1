//! The dialect's mapping onto the command manager, shared by its three
//! transports (the WebSocket, server-sent events and the legacy one-shot
//! `POST /execute`): the `execute` body to a `CommandSpec`, the idempotent
//! lookup by the client's `command_id`, clamped reconnects, and exit codes.

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use tether_exec::{self as exec, CommandHandle, ExitReason, Subscription};
use tether_proto::ErrorCode;

use super::ErrorType;
use crate::{AppState, Error};

/// The label that keeps the client's idempotency key on the command.
const ID_LABEL: &str = "langsmith.command_id";

/// Longest client `command_id` used as the command's request key.
const MAX_KEY: usize = 128;

/// Raw bytes per output frame: JSON escaping can grow text up to 6x and the
/// client refuses frames over 1 MiB; small frames also let a connection
/// that keeps dropping get some output through each time.
pub(crate) const FRAME_RAW_BYTES: usize = 64 * 1024;

/// How long a dialect client's attachment goes on holding its command back
/// after its connection is gone (`attach_lingering`): this client cannot
/// notice lost output, and reconnects within about 15.5 s of backoff (0.5,
/// 1, 2, 4, 8 s) or gives up. A fast writer then waits (half a ring of
/// unread output) instead of overwriting what the client has not read.
const LINGER: Duration = Duration::from_secs(20);

/// What to run: the `execute` frame's fields (§5.4), also the body of the
/// SSE `start` (§6), which leaves out `close_stdin`, `pty` and
/// `kill_on_disconnect`.
#[derive(Debug, Deserialize)]
pub(crate) struct Execute {
    /// The command line, run as `shell -c command`.
    command: String,
    /// The shell (the client's default is `/bin/bash`).
    #[serde(default)]
    shell: Option<String>,
    /// Wall-clock limit; `0` (or less) means none.
    #[serde(default)]
    timeout_seconds: Option<i64>,
    /// Kill after this long with nobody attached; negative: never.
    #[serde(default)]
    idle_timeout_seconds: Option<i64>,
    /// Kill when the last client goes away.
    #[serde(default)]
    pub(crate) kill_on_disconnect: bool,
    /// How long a finished command stays reconnectable; negative: forever.
    #[serde(default)]
    ttl_seconds: Option<i64>,
    /// The client's idempotency key.
    #[serde(default)]
    command_id: Option<String>,
    /// Variables for this command (the deprecated spelling of
    /// `run_config.env_vars`).
    #[serde(default)]
    env: std::collections::BTreeMap<String, String>,
    /// Working directory (the deprecated spelling of `run_config.work_dir`).
    #[serde(default)]
    cwd: Option<String>,
    /// User, working directory and environment.
    #[serde(default)]
    run_config: Option<RunConfig>,
    /// Close stdin at spawn.
    #[serde(default)]
    pub(crate) close_stdin: bool,
    /// Run on a terminal.
    #[serde(default)]
    pub(crate) pty: bool,
}

/// `run_config` (§5.4): `user` is accepted only when it names the daemon's
/// own account (§12.5).
#[derive(Debug, Default, Deserialize)]
struct RunConfig {
    /// `name`, `uid`, `name:group` or `uid:gid`.
    #[serde(default)]
    user: Option<String>,
    /// Absolute working directory.
    #[serde(default)]
    work_dir: Option<String>,
    /// Variables for this command.
    #[serde(default)]
    env_vars: std::collections::BTreeMap<String, String>,
}

/// A command the connection is bound to, and the id `started` names.
pub(crate) struct Bound {
    /// The command.
    pub(crate) h: CommandHandle,
    /// The paced, lingering attachment.
    pub(crate) sub: Subscription,
    /// The id the client knows it by: its own `command_id` when it gave
    /// one (the real dataplane echoes it), else tether's.
    pub(crate) echo: String,
}

/// Starts the command, or finds the one this `command_id` started before,
/// and attaches paced from the start.
pub(crate) fn execute(st: &AppState, e: Execute) -> Result<Bound, Error> {
    // An id that cannot be a request key (too long, a NUL) is still found
    // by its label (not atomically: two such starts at once make two).
    let key = e.command_id.clone().filter(|k| k.len() <= MAX_KEY && !k.contains('\0'));
    if let Some(id) = e.command_id.as_deref().filter(|_| key.is_none())
        && let Some(h) = find(st, id)
    {
        let sub = h.attach_lingering([0, 0], LINGER)?;
        return Ok(Bound { h, sub, echo: id.to_owned() });
    }
    let rc = e.run_config.unwrap_or_default();
    if let Some(user) = rc.user.filter(|u| !is_me(u)) {
        return Err(Error::bad_request(format!("run_config.user {user:?} is not supported by this daemon")));
    }
    let mut spec = exec::CommandSpec::new(exec::Program::Shell { shell: e.shell, script: e.command });
    spec.cwd = rc.work_dir.or(e.cwd).map(Into::into);
    spec.env = if rc.env_vars.is_empty() { e.env } else { rc.env_vars };
    spec.timeout = timeout(e.timeout_seconds).map_err(Error::bad_request)?;
    spec.idle_timeout = exec::Lifetime::from_millis(e.idle_timeout_seconds.map(|s| s.saturating_mul(1000)));
    spec.ttl = exec::Lifetime::from_millis(e.ttl_seconds.map(|s| s.saturating_mul(1000)));
    spec.ring_bytes = st.cfg.langsmith_ring_bytes;
    spec.kill_on_disconnect = e.kill_on_disconnect;
    spec.close_stdin = e.close_stdin && !e.pty;
    if e.pty {
        spec = spec.pty(24, 80);
    }
    if let Some(id) = &e.command_id {
        spec.labels.insert(ID_LABEL.to_owned(), id.clone());
        // The client's id is the request key: a repeated `execute` finds
        // the command, and the native API takes the client's id too.
        spec.request_key = key;
    }
    // Attached before the command's first byte is read.
    let (h, sub, new) = st.manager.start_keyed_then(spec, |h| h.attach_lingering([0, 0], LINGER))?;
    let sub = sub?;
    if new {
        tracing::info!(command = %h.id(), "started through the LangSmith dialect");
    }
    let echo = e.command_id.unwrap_or_else(|| h.id().to_owned());
    Ok(Bound { h, sub, echo })
}

/// A `timeout_seconds` as a limit: `0` or less means none (as upstream's
/// `timeout=0`); past what milliseconds in a `u64` hold (about 584 million
/// years) it is refused, since a deadline that far would overflow the
/// clock. Non-integers (`1.5`, `1e300`, `NaN`) never get here: the frame
/// is malformed.
pub(crate) fn timeout(seconds: Option<i64>) -> Result<Option<Duration>, String> {
    match seconds {
        Some(s) if s > 0 => match s.checked_mul(1000) {
            Some(ms) => Ok(Some(Duration::from_millis(ms as u64))),
            None => Err(format!("timeout_seconds {s} is too large")),
        },
        _ => Ok(None),
    }
}

/// Attaches paced from the client's offsets (clamped to what the stream
/// has). `id` is tether's id or the client's `command_id`.
pub(crate) fn reconnect(st: &AppState, id: &str, from: [i64; 2]) -> Result<Bound, Error> {
    let Some(h) = st.manager.get(id).ok().or_else(|| find(st, id)) else {
        return Err(Error::new(ErrorCode::NotFound, format!("Command not found: {id}")));
    };
    let info = h.info();
    let at = [0, 1].map(|i| (from[i].max(0) as u64).min(info.offsets[i].1));
    let sub = h.attach_lingering(at, LINGER)?;
    Ok(Bound { h, sub, echo: id.to_owned() })
}

/// The command started with this client `command_id`, if still held.
fn find(st: &AppState, client_id: &str) -> Option<CommandHandle> {
    st.manager.find_by_label(ID_LABEL, client_id)
}

/// Whether a `run_config.user` names the daemon's own user: its uid, or
/// its name in `/etc/passwd` (`$USER` only when the uid has no entry there,
/// as in a container run with an arbitrary uid; `$USER` is often unset, for
/// a service or root, and can name someone else after `su`).
fn is_me(user: &str) -> bool {
    let uid = my_uid();
    let first = user.split(':').next().unwrap_or("");
    if first == uid.to_string() {
        return true;
    }
    let name = passwd_name(uid).or_else(|| std::env::var("USER").ok()).unwrap_or_default();
    !name.is_empty() && first == name
}

/// The name of `uid` in `/etc/passwd`.
fn passwd_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let entry_uid: u32 = fields.nth(1)?.parse().ok()?;
        (entry_uid == uid).then(|| name.to_owned())
    })
}

fn my_uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(u32::MAX)
}

/// The last message for a command that ended: its name (`exit`, or
/// `error` with `CommandTimeout` for a timeout) and its fields.
pub(crate) fn ending(e: &exec::ExitInfo) -> (&'static str, serde_json::Value) {
    match e.reason {
        ExitReason::TimedOut => {
            ("error", json!({"error_type": ErrorType::CommandTimeout.as_str(), "error": "Command timed out"}))
        }
        _ => ("exit", json!({"exit_code": e.shell_code()})),
    }
}

#[cfg(test)]
mod tests {
    use super::{is_me, my_uid, passwd_name};

    #[test]
    fn run_config_user_must_name_the_daemons_own_account() {
        let uid = my_uid();
        assert!(is_me(&uid.to_string()));
        assert!(is_me(&format!("{uid}:12345")), "the group part is not checked");
        // By name too, whether or not `$USER` is set.
        if let Some(name) = passwd_name(uid) {
            assert!(is_me(&name));
        }
        assert!(!is_me("no-such-user-for-tether"));
        assert!(!is_me(&uid.wrapping_add(1).to_string()));
        assert_eq!(passwd_name(0).as_deref(), Some("root"));
    }
}
