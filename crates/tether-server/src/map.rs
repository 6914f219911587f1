//! Wire types <-> command-manager types.

use std::time::{Duration, UNIX_EPOCH};

use tether_exec as exec;
use tether_proto as proto;

/// A wire error: code, message, errno.
pub(crate) struct WireError {
    pub(crate) code: proto::ErrorCode,
    pub(crate) message: String,
    pub(crate) errno: Option<i32>,
}

impl WireError {
    pub(crate) fn bad_request(message: impl Into<String>) -> WireError {
        WireError { code: proto::ErrorCode::BadRequest, message: message.into(), errno: None }
    }

    pub(crate) fn into_msg(self, id: Option<proto::ReqId>) -> proto::ServerMsg {
        proto::ServerMsg::Error { id, code: self.code, message: self.message, errno: self.errno }
    }
}

impl From<exec::ExecError> for WireError {
    fn from(e: exec::ExecError) -> WireError {
        use exec::ExecError as E;
        use proto::ErrorCode as C;
        let code = match &e {
            E::EmptyArgv
            | E::NulByte { .. }
            | E::BadEnvName(_)
            | E::BadSignal(_)
            | E::BadRingSize { .. }
            | E::BadSize { .. }
            | E::NotAPty(_)
            | E::OffsetBeyondEnd { .. } => C::BadRequest,
            E::BadCwd { .. } | E::Spawn { .. } => C::SpawnFailed,
            E::NotFound(_) => C::NotFound,
            E::NotRunning(_) => C::NotRunning,
            E::StdinClosed(_) => C::StdinClosed,
            E::TooManyCommands(_) | E::RingMemory { .. } => C::LimitExceeded,
            E::ShuttingDown => C::ShuttingDown,
            E::Io { .. } => C::Internal,
        };
        WireError { code, errno: e.errno(), message: e.to_string() }
    }
}

/// A wire start spec as a manager spec, with the checks only the wire
/// needs (argv/shell exclusivity, sizes that must fit a `usize`).
pub(crate) fn spec_from_wire(s: proto::StartSpec) -> Result<exec::CommandSpec, WireError> {
    let program = match (s.argv.is_empty(), s.shell) {
        (false, None) => exec::Program::Argv(s.argv),
        (true, Some(script)) => exec::Program::Shell { shell: s.shell_program, script },
        (false, Some(_)) => {
            return Err(WireError::bad_request("give either argv or shell, not both"));
        }
        (true, None) => return Err(WireError::bad_request("give argv or shell: nothing to run")),
    };
    let ring_bytes = match s.ring_bytes {
        None => None,
        Some(n) => Some(usize::try_from(n).map_err(|_| WireError::bad_request("ring_bytes too large"))?),
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
    spec.output_limit = match s.output_limit.unwrap_or_default() {
        proto::OutputLimitAction::Kill => exec::OutputLimit::Kill,
        proto::OutputLimitAction::Truncate => exec::OutputLimit::Truncate,
    };
    spec.ring_bytes = ring_bytes;
    spec.kill_grace = s.kill_grace_ms.map(Duration::from_millis);
    spec.pty =
        s.pty.map(|p| exec::PtyOptions { size: exec::TermSize { rows: p.rows, cols: p.cols }, term: p.term });
    Ok(spec)
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
    use exec::ExitReason as R;
    proto::ExitStatus {
        code: e.code,
        signal: e.signal,
        core_dumped: e.core_dumped,
        reason: match e.reason {
            R::Exited => proto::ExitReason::Exited,
            R::TimedOut => proto::ExitReason::TimedOut,
            R::IdleTimeout => proto::ExitReason::IdleTimeout,
            R::Killed => proto::ExitReason::Killed,
            R::Disconnected => proto::ExitReason::Disconnected,
            R::OutputLimit => proto::ExitReason::OutputLimit,
        },
        wall_ms: e.wall.as_millis() as u64,
        user_us: e.user_us,
        sys_us: e.sys_us,
        max_rss_kb: e.max_rss_kb,
        stdout_bytes: e.ends[0],
        stderr_bytes: e.ends[1],
        truncated: e.truncated,
    }
}

pub(crate) fn info_to_wire(i: exec::CommandInfo) -> proto::CommandInfo {
    let stream = |(first_held, end): (u64, u64)| proto::StreamInfo { first_held, end };
    proto::CommandInfo {
        command: proto::CommandId(i.id),
        name: i.name,
        labels: i.labels,
        argv: i.argv,
        pid: i.pid,
        state: if i.exit.is_some() { proto::CommandState::Exited } else { proto::CommandState::Running },
        started_at_ms: i.started_at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
        exit: i.exit.as_ref().map(exit_to_wire),
        stdout: stream(i.offsets[0]),
        stderr: stream(i.offsets[1]),
        attached: i.attached as u32,
        pty: i.pty.map(size_to_wire),
    }
}
