//! Wire types <-> command-manager types (errors: `error`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tether_exec as exec;
use tether_proto as proto;

use crate::Error;

/// A wire start spec as a manager spec, with the checks only the wire
/// needs (argv/shell exclusivity, sizes that must fit a `usize`).
pub(crate) fn spec_from_wire(s: proto::StartSpec) -> Result<exec::CommandSpec, Error> {
    let program = match (s.argv.is_empty(), s.shell) {
        (false, None) => exec::Program::Argv(s.argv),
        (true, Some(script)) => exec::Program::Shell { shell: s.shell_program, script },
        (false, Some(_)) => {
            return Err(Error::bad_request("give either argv or shell, not both"));
        }
        (true, None) => return Err(Error::bad_request("give argv or shell: nothing to run")),
    };
    let mut spec = exec::CommandSpec::new(program);
    spec.cwd = s.cwd.map(Into::into);
    spec.env = s.env;
    spec.env_clear = s.env_clear;
    spec.stdin = s.stdin.map(|p| p.0).unwrap_or_default();
    spec.close_stdin = s.close_stdin;
    spec.name = s.name;
    spec.labels = s.labels;
    spec.timeout = s.timeout_ms.map(Duration::from_millis);
    spec.idle_timeout = exec::Lifetime::from_millis(s.idle_timeout_ms);
    spec.ttl = exec::Lifetime::from_millis(s.ttl_ms);
    spec.kill_on_disconnect = s.kill_on_disconnect;
    spec.max_output_bytes = s.max_output_bytes;
    spec.output_limit = output_limit(s.output_limit);
    spec.ring_bytes = ring_bytes(s.ring_bytes)?;
    spec.kill_grace = s.kill_grace_ms.map(Duration::from_millis);
    spec.pty =
        s.pty.map(|p| exec::PtyOptions { size: exec::TermSize { rows: p.rows, cols: p.cols }, term: p.term });
    spec.drain_grace = s.drain_grace_ms.map(Duration::from_millis);
    spec.request_key = s.request_key;
    Ok(spec)
}

fn output_limit(a: Option<proto::OutputLimitAction>) -> exec::OutputLimit {
    match a.unwrap_or_default() {
        proto::OutputLimitAction::Kill => exec::OutputLimit::Kill,
        proto::OutputLimitAction::Truncate => exec::OutputLimit::Truncate,
    }
}

fn ring_bytes(n: Option<u64>) -> Result<Option<usize>, Error> {
    n.map(|n| usize::try_from(n).map_err(|_| Error::bad_request("ring_bytes too large"))).transpose()
}

/// A wire `shell_run` spec as a manager spec for [`exec::Manager::shell_run`].
pub(crate) fn shell_run_from_wire(s: proto::ShellRunSpec) -> Result<exec::CommandSpec, Error> {
    let mut spec = exec::CommandSpec::shell(s.script);
    spec.stdin = s.stdin.map(|p| p.0).unwrap_or_default();
    spec.close_stdin = s.close_stdin;
    spec.labels = s.labels;
    spec.timeout = s.timeout_ms.map(Duration::from_millis);
    spec.idle_timeout = exec::Lifetime::from_millis(s.idle_timeout_ms);
    spec.ttl = exec::Lifetime::from_millis(s.ttl_ms);
    spec.kill_on_disconnect = s.kill_on_disconnect;
    spec.max_output_bytes = s.max_output_bytes;
    spec.output_limit = output_limit(s.output_limit);
    spec.ring_bytes = ring_bytes(s.ring_bytes)?;
    spec.kill_grace = s.kill_grace_ms.map(Duration::from_millis);
    spec.drain_grace = s.drain_grace_ms.map(Duration::from_millis);
    spec.request_key = s.request_key;
    Ok(spec)
}

/// A wire `shell_create` spec as a manager spec.
pub(crate) fn shell_spec_from_wire(s: proto::ShellSpec) -> exec::ShellSpec {
    exec::ShellSpec {
        name: s.name,
        cwd: s.cwd.map(Into::into),
        env: s.env,
        program: s.program,
        idle_ttl: exec::Lifetime::from_millis(s.idle_ttl_ms),
    }
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

pub(crate) fn shell_to_wire(i: exec::ShellInfo) -> proto::ShellInfo {
    proto::ShellInfo {
        name: i.name,
        program: i.program,
        pid: i.pid,
        state: match i.state {
            exec::ShellState::Idle => proto::ShellState::Idle,
            exec::ShellState::Busy => proto::ShellState::Busy,
            exec::ShellState::Closed => proto::ShellState::Closed,
        },
        cwd: i.cwd,
        queued: i.queued as u32,
        running: i.running.map(proto::CommandId),
        commands: i.commands,
        created_at_ms: ms(i.created_at),
        last_used_ms: ms(i.last_used),
        closed: i.closed.map(|c| proto::ShellClosed {
            reason: match c.reason {
                exec::CloseReason::Closed => proto::ShellCloseReason::Closed,
                exec::CloseReason::Exited => proto::ShellCloseReason::Exited,
                exec::CloseReason::IdleTtl => proto::ShellCloseReason::IdleTtl,
                exec::CloseReason::Stuck => proto::ShellCloseReason::Stuck,
                exec::CloseReason::Shutdown => proto::ShellCloseReason::Shutdown,
            },
            code: c.code,
            signal: c.signal,
            message: c.message,
        }),
    }
}

pub(crate) fn history_to_wire(e: exec::HistoryEntry) -> proto::HistoryEntry {
    proto::HistoryEntry {
        command: proto::CommandId(e.id),
        script: e.script,
        script_truncated: e.script_truncated,
        state: match e.state {
            exec::JobState::Queued => proto::CommandState::Queued,
            exec::JobState::Running => proto::CommandState::Running,
            exec::JobState::Exited => proto::CommandState::Exited,
        },
        exit_code: e.exit_code,
        reason: e.reason.map(reason_to_wire),
        submitted_at_ms: ms(e.submitted_at),
        started_at_ms: e.started_at.map(ms),
        ended_at_ms: e.ended_at.map(ms),
        cwd: e.cwd,
    }
}

fn reason_to_wire(r: exec::ExitReason) -> proto::ExitReason {
    use exec::ExitReason as R;
    match r {
        R::Exited => proto::ExitReason::Exited,
        R::TimedOut => proto::ExitReason::TimedOut,
        R::IdleTimeout => proto::ExitReason::IdleTimeout,
        R::Killed => proto::ExitReason::Killed,
        R::Disconnected => proto::ExitReason::Disconnected,
        R::OutputLimit => proto::ExitReason::OutputLimit,
        R::ShellClosed => proto::ExitReason::ShellClosed,
        R::SpawnFailed => proto::ExitReason::SpawnFailed,
    }
}

pub(crate) fn size_to_wire(s: exec::TermSize) -> proto::TermSize {
    proto::TermSize { rows: s.rows, cols: s.cols }
}

pub(crate) fn size_from_wire(s: proto::TermSize) -> exec::TermSize {
    exec::TermSize { rows: s.rows, cols: s.cols }
}

pub(crate) fn stream_to_wire(s: exec::Stream) -> proto::Stream {
    match s {
        exec::Stream::Stdout => proto::Stream::Stdout,
        exec::Stream::Stderr => proto::Stream::Stderr,
    }
}

pub(crate) fn exit_to_wire(e: &exec::ExitInfo) -> proto::ExitStatus {
    proto::ExitStatus {
        code: e.code,
        signal: e.signal,
        core_dumped: e.core_dumped,
        reason: reason_to_wire(e.reason),
        wall_ms: e.wall.as_millis() as u64,
        user_us: e.user_us,
        sys_us: e.sys_us,
        max_rss_kb: e.max_rss_kb,
        stdout_bytes: e.ends[0],
        stderr_bytes: e.ends[1],
        truncated: e.truncated,
        cwd: e.cwd.clone(),
    }
}

pub(crate) fn info_to_wire(i: exec::CommandInfo) -> proto::CommandInfo {
    let stream = |(first_held, end): (u64, u64)| proto::StreamInfo { first_held, end };
    let (argv, argv_truncated) = listed_argv(i.argv);
    proto::CommandInfo {
        command: proto::CommandId(i.id),
        name: i.name,
        labels: i.labels,
        argv,
        argv_truncated,
        pid: i.pid,
        state: match (&i.exit, i.queued) {
            (Some(_), _) => proto::CommandState::Exited,
            (None, true) => proto::CommandState::Queued,
            (None, false) => proto::CommandState::Running,
        },
        started_at_ms: ms(i.started_at),
        exit: i.exit.as_ref().map(exit_to_wire),
        stdout: stream(i.offsets[0]),
        stderr: stream(i.offsets[1]),
        attached: i.attached as u32,
        pty: i.pty.map(size_to_wire),
        shell: i.shell,
    }
}

/// The argv as listed: each element cut to [`proto::LIST_ARGV_ITEM_BYTES`]
/// (at a character boundary), all of them to [`proto::LIST_ARGV_BYTES`];
/// true if anything was cut. A script of megabytes (`/v1/exec` takes
/// 64 MiB) stays the command's, but never makes a listing that large.
fn listed_argv(argv: Vec<String>) -> (Vec<String>, bool) {
    let mut out = Vec::with_capacity(argv.len().min(64));
    let (mut total, mut cut) = (0, false);
    for mut a in argv {
        let room = proto::LIST_ARGV_BYTES.saturating_sub(total).min(proto::LIST_ARGV_ITEM_BYTES);
        if a.len() > room {
            cut = true;
            if room == 0 {
                break;
            }
            let mut end = room;
            while !a.is_char_boundary(end) {
                end -= 1;
            }
            a.truncate(end);
        }
        total += a.len();
        out.push(a);
    }
    (out, cut)
}

/// One page of the command listing (native `list` and `GET /v1/commands`):
/// oldest first, from `cursor`, at most `limit` commands and about
/// [`proto::LIST_PAGE_BYTES`] (at least one), and the next page's cursor.
pub(crate) fn list_page(
    manager: &exec::Manager,
    limit: Option<u32>,
    cursor: Option<&str>,
) -> Result<(Vec<proto::CommandInfo>, Option<String>), Error> {
    let limit = limit.unwrap_or(proto::LIST_DEFAULT_LIMIT);
    if !(1..=proto::LIST_MAX_LIMIT).contains(&limit) {
        return Err(Error::bad_request(format!("list limit {limit} outside 1..={}", proto::LIST_MAX_LIMIT)));
    }
    let after = cursor.map(parse_cursor).transpose()?;
    // The manager's listing is sorted by (start time, id), the cursor's key.
    let mut rest = manager
        .list()
        .into_iter()
        .filter(|i| after.as_ref().is_none_or(|(t, id)| (nanos(i.started_at), &i.id) > (*t, id)))
        .peekable();
    let (mut page, mut bytes, mut last) = (Vec::new(), 0, None);
    while let Some(i) =
        rest.next_if(|_| page.len() < limit as usize && (page.is_empty() || bytes < proto::LIST_PAGE_BYTES))
    {
        last = Some((nanos(i.started_at), i.id.clone()));
        let info = info_to_wire(i);
        bytes += listed_bytes(&info);
        page.push(info);
    }
    let next = rest.peek().and(last).map(|(t, id)| format!("{t}.{id}"));
    Ok((page, next))
}

/// About how many bytes a command takes in a listing frame.
fn listed_bytes(i: &proto::CommandInfo) -> usize {
    const FIXED: usize = 512;
    FIXED
        + i.name.as_ref().map_or(0, String::len)
        + i.labels.iter().map(|(k, v)| k.len() + v.len() + 8).sum::<usize>()
        + i.argv.iter().map(|a| a.len() + 4).sum::<usize>()
        + i.shell.as_ref().map_or(0, String::len)
}

fn nanos(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

/// A cursor as made by [`list_page`]: `<start time in ns>.<command id>`.
fn parse_cursor(c: &str) -> Result<(u128, String), Error> {
    let bad =
        || Error::bad_request(format!("invalid list cursor {:?}", c.chars().take(64).collect::<String>()));
    let (t, id) = c.split_once('.').ok_or_else(bad)?;
    let t = t.parse().map_err(|_| bad())?;
    if id.is_empty() || id.len() > 64 {
        return Err(bad());
    }
    Ok((t, id.to_owned()))
}
