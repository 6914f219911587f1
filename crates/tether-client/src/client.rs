//! The public API.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tether_proto::{
    ClientMsg, CommandId, CommandInfo, ExitStatus, HistoryEntry, ReqId, ServerMsg, ShellInfo, ShellRunSpec,
    ShellSpec, StartSpec, Stream, TermSize,
};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};

use crate::driver::{self, Acks, Cmd, Delivery, Driver, EventTx};
use crate::error::ClientError;

/// Connection and reconnect settings.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Limit for one connection attempt (TCP + upgrade + hello).
    pub connect_timeout: Duration,
    /// First reconnect delay; doubles per failed attempt.
    pub initial_backoff: Duration,
    /// Largest reconnect delay.
    pub max_backoff: Duration,
    /// Give up reconnecting after this long.
    pub reconnect_for: Duration,
    /// Flow control per execution: the daemon sends at most this many
    /// output bytes that the execution's reader has not taken yet. An
    /// execution nobody reads therefore holds back only its own command (a
    /// paced one waits, another falls behind its ring and gets a gap),
    /// never the connection or other executions.
    pub window_bytes: u64,
    /// How often to ping the daemon.
    pub keepalive: Duration,
    /// Reconnect when nothing (not even a pong) arrived for this long.
    pub peer_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: driver::secs(10),
            initial_backoff: Duration::from_millis(100),
            // Reconnect attempts are cheap; a person waits for the next.
            max_backoff: driver::secs(2),
            reconnect_for: driver::secs(300),
            window_bytes: 2 << 20,
            keepalive: driver::secs(15),
            peer_timeout: driver::secs(45),
        }
    }
}

/// What an execution yields, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExecEvent {
    /// Bytes of stdout, continuing exactly where the last ones ended.
    Stdout(Bytes),
    /// Bytes of stderr, continuing exactly where the last ones ended.
    Stderr(Bytes),
    /// The bytes `[from, to)` of a stream are lost (the daemon's ring no
    /// longer held them); the stream continues at `to`.
    Gap {
        /// Which stream.
        stream: Stream,
        /// First lost offset.
        from: u64,
        /// Where the stream continues.
        to: u64,
    },
    /// A PTY command's screen: reset the terminal, resize it to `size` and
    /// write `data`; `Stdout` bytes continue from there. Comes first on a
    /// terminal attachment ([`Client::attach_terminal`]), and again after a
    /// reconnect that found the viewer's offset gone from the ring.
    Screen {
        /// The size the screen is rendered for.
        size: TermSize,
        /// Bytes that draw it on a reset terminal.
        data: Bytes,
    },
    /// A PTY command's terminal size is now this (first on every
    /// attachment, then after every change by any client).
    Resized(TermSize),
    /// The command ended; the last event.
    Exit(ExitStatus),
}

/// The state of a client's connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Connection {
    /// Connected to the daemon.
    Connected,
    /// The connection dropped; reconnecting with backoff. Executions resume
    /// when it is back.
    Reconnecting,
    /// Reconnecting failed for good (see [`ClientOptions::reconnect_for`]);
    /// the next request tries again.
    Failed,
}

/// A connection to a tether daemon. Cheap to clone; clones share it.
#[derive(Clone)]
pub struct Client {
    tx: mpsc::Sender<Cmd>,
    state: watch::Receiver<Connection>,
    ids: Arc<AtomicU64>,
    opts: ClientOptions,
    /// Stdin flow control and numbering per command. A std mutex: held only
    /// to look up or insert an entry, never across an `.await`.
    stdin: Arc<Mutex<HashMap<CommandId, Arc<StdinWindow>>>>,
    /// Consumed offsets for the driver to acknowledge.
    acks: Arc<Acks>,
    /// This client's name, random: the stem of its stdin writer names and
    /// request keys.
    name: Arc<str>,
}

/// Unacknowledged stdin bytes per command (the daemon allows 4 MiB).
const STDIN_WINDOW: usize = 1 << 20;
/// Unacknowledged stdin frames per command (the daemon queues at most 256
/// per command and connection): many small writes are bounded too.
const STDIN_FRAMES: usize = 128;
/// Largest stdin frame payload (well under the daemon's 1 MiB frame limit).
const STDIN_CHUNK: usize = 256 * 1024;

/// Client-side stdin for one command: at most [`STDIN_WINDOW`] bytes in
/// flight until the daemon's `ok`s come back, the numbering of resumable
/// stdin, and the first failure reported by the next call.
struct StdinWindow {
    credit: Arc<Semaphore>,
    /// Frames in flight (see [`STDIN_FRAMES`]).
    frames: Arc<Semaphore>,
    /// The writer name this client's bytes to this command go under.
    writer: String,
    /// The next byte's number. An async mutex: held while the frame is
    /// handed to the driver, so that numbers and request ids follow the
    /// order in which frames are sent (a resend goes out in id order).
    next: tokio::sync::Mutex<u64>,
    error: Mutex<Option<ClientError>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

/// A command's captured output.
#[derive(Clone, Debug)]
pub struct Output {
    /// Everything written to stdout.
    pub stdout: Vec<u8>,
    /// Everything written to stderr.
    pub stderr: Vec<u8>,
    /// How it ended.
    pub status: ExitStatus,
    /// Bytes lost to gaps (0 unless the ring overflowed).
    pub lost_bytes: u64,
}

impl Client {
    /// Connects with default options. `url` is the daemon's base URL
    /// (`http://127.0.0.1:7070`) or a full `ws://.../v1/ws` URL.
    pub async fn connect(url: &str, token: &str) -> Result<Client, ClientError> {
        Client::connect_with(url, token, ClientOptions::default()).await
    }

    /// Connects with the given options.
    pub async fn connect_with(url: &str, token: &str, opts: ClientOptions) -> Result<Client, ClientError> {
        let ws_url = driver::ws_url(url)?;
        let ws = driver::connect(&ws_url, token, &opts).await?;
        let (tx, rx) = mpsc::channel(64);
        let (state_tx, state) = watch::channel(Connection::Connected);
        let acks = Arc::new(Acks::default());
        let name: Arc<str> = format!("{:016x}", rand::random::<u64>()).into();
        let d = Driver::new(ws_url, token.to_owned(), opts.clone(), name.clone(), rx, acks.clone(), state_tx);
        // The driver ends when every Client clone is dropped (its command
        // channel closes), so nothing leaks.
        tokio::spawn(d.run(ws));
        Ok(Client { tx, state, ids: Arc::new(AtomicU64::new(1)), opts, stdin: Arc::default(), acks, name })
    }

    /// A fresh request key: a repeat of a start after a reconnect is
    /// recognised by the daemon and answered with the command it started.
    fn request_key(&self) -> String {
        format!("k-{}-{}", self.name, self.ids.fetch_add(1, Ordering::Relaxed))
    }

    fn window_bytes(&self) -> Option<u64> {
        Some(self.opts.window_bytes.clamp(4096, 1 << 30))
    }

    /// The connection's state, to show it (`changed().await` to follow it).
    pub fn connection(&self) -> watch::Receiver<Connection> {
        self.state.clone()
    }

    fn next_id(&self) -> ReqId {
        ReqId(self.ids.fetch_add(1, Ordering::Relaxed))
    }

    async fn request(&self, msg: ClientMsg, watch: Option<EventTx>) -> Result<ServerMsg, ClientError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Cmd { msg, reply: Some(reply), watch }).await.map_err(|_| ClientError::Closed)?;
        rx.await.map_err(|_| ClientError::Closed)?
    }

    async fn ok(&self, msg: ClientMsg) -> Result<(), ClientError> {
        match self.request(msg, None).await? {
            ServerMsg::Ok { .. } => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    fn execution(
        &self,
        id: CommandId,
        pid: Option<u32>,
        events: mpsc::UnboundedReceiver<Delivery>,
        from: [u64; 2],
    ) -> Execution {
        Execution {
            client: self.clone(),
            id,
            pid,
            events,
            finished: false,
            window: self.window_bytes(),
            acked: from,
        }
    }

    /// Starts a command and attaches to it from the first byte. The start
    /// carries a request key (one is made unless the spec has one), so a
    /// start in flight when the connection drops is sent again and finds
    /// the command if the first one made it.
    pub async fn start(&self, mut spec: StartSpec) -> Result<Execution, ClientError> {
        spec.attach = true;
        spec.request_key.get_or_insert_with(|| self.request_key());
        spec.window_bytes = self.window_bytes();
        spec.client = Some(self.name.to_string());
        let (etx, erx) = mpsc::unbounded_channel();
        match self.request(ClientMsg::Start { id: self.next_id(), spec }, Some(etx)).await? {
            ServerMsg::Started { command, pid, .. } => Ok(self.execution(command, Some(pid), erx, [0, 0])),
            other => Err(unexpected(&other)),
        }
    }

    /// Starts a command without attaching; returns its id and pid.
    pub async fn start_detached(&self, mut spec: StartSpec) -> Result<(CommandId, u32), ClientError> {
        spec.attach = false;
        spec.request_key.get_or_insert_with(|| self.request_key());
        match self.request(ClientMsg::Start { id: self.next_id(), spec }, None).await? {
            ServerMsg::Started { command, pid, .. } => Ok((command, pid)),
            other => Err(unexpected(&other)),
        }
    }

    /// Attaches to a command from per-stream offsets (stdout, stderr).
    pub async fn attach(&self, command: &CommandId, from: [u64; 2]) -> Result<Execution, ClientError> {
        self.attach_inner(command, from, None, None).await
    }

    /// Attaches starting at most `tail` bytes before each stream's end.
    pub async fn attach_tail(&self, command: &CommandId, tail: u64) -> Result<Execution, ClientError> {
        self.attach_inner(command, [0, 0], Some(tail), None).await
    }

    /// Attaches to a PTY command as a terminal of `size`: the first events
    /// are [`ExecEvent::Resized`] and [`ExecEvent::Screen`] (the screen as
    /// it is now, rendered for `size`, which becomes the terminal's size),
    /// then `Stdout`. After a reconnect the terminal resumes exactly where
    /// it was, or gets a fresh `Screen` if those bytes are gone.
    pub async fn attach_terminal(
        &self,
        command: &CommandId,
        size: TermSize,
    ) -> Result<Execution, ClientError> {
        self.attach_inner(command, [0, 0], None, Some(size)).await
    }

    async fn attach_inner(
        &self,
        command: &CommandId,
        from: [u64; 2],
        tail_bytes: Option<u64>,
        terminal: Option<TermSize>,
    ) -> Result<Execution, ClientError> {
        let (etx, erx) = mpsc::unbounded_channel();
        let msg = ClientMsg::Attach {
            id: self.next_id(),
            command: command.clone(),
            stdout_offset: from[0],
            stderr_offset: from[1],
            tail_bytes,
            pace: false,
            screen: terminal.is_some(),
            size: terminal,
            window_bytes: self.window_bytes(),
            client: None,
        };
        match self.request(msg, Some(etx)).await? {
            ServerMsg::Attached { command, stdout_offset, stderr_offset, .. } => {
                Ok(self.execution(command, None, erx, [stdout_offset, stderr_offset]))
            }
            other => Err(unexpected(&other)),
        }
    }

    /// Runs a command to its end and returns its captured output. The
    /// command is paced to this client (`spec.pace`), so no byte is lost
    /// however large the output.
    pub async fn run(&self, mut spec: StartSpec) -> Result<Output, ClientError> {
        spec.pace = true;
        self.start(spec).await?.output().await
    }

    /// Creates a named shell, or returns the live shell of that name
    /// (`false`: it already existed; its state is kept).
    pub async fn shell_create(&self, spec: ShellSpec) -> Result<(ShellInfo, bool), ClientError> {
        match self.request(ClientMsg::ShellCreate { id: self.next_id(), spec }, None).await? {
            ServerMsg::Shell { info, created, .. } => Ok((info, created)),
            other => Err(unexpected(&other)),
        }
    }

    /// Queues a script in a shell and attaches to it from its first byte.
    /// Returns as soon as the daemon has queued it (it may wait behind
    /// other commands); the [`Execution`] is like any other: stream it,
    /// write its stdin, signal (`INT` interrupts it), kill it.
    pub async fn shell_run(&self, shell: &str, mut spec: ShellRunSpec) -> Result<Execution, ClientError> {
        spec.attach = true;
        spec.request_key.get_or_insert_with(|| self.request_key());
        spec.window_bytes = self.window_bytes();
        spec.client = Some(self.name.to_string());
        let (etx, erx) = mpsc::unbounded_channel();
        let msg = ClientMsg::ShellRun { id: self.next_id(), shell: shell.to_owned(), spec };
        match self.request(msg, Some(etx)).await? {
            ServerMsg::Started { command, pid, .. } => Ok(self.execution(command, Some(pid), erx, [0, 0])),
            other => Err(unexpected(&other)),
        }
    }

    /// Queues a script in a shell without attaching; returns its command id
    /// at once (attach, wait or fetch its output later by id).
    pub async fn shell_submit(&self, shell: &str, mut spec: ShellRunSpec) -> Result<CommandId, ClientError> {
        spec.attach = false;
        spec.request_key.get_or_insert_with(|| self.request_key());
        let msg = ClientMsg::ShellRun { id: self.next_id(), shell: shell.to_owned(), spec };
        match self.request(msg, None).await? {
            ServerMsg::Started { command, .. } => Ok(command),
            other => Err(unexpected(&other)),
        }
    }

    /// Runs a script in a shell to its end and returns its captured output
    /// (paced to this client, so no byte is lost). Stdin is closed.
    pub async fn shell_exec(&self, shell: &str, script: impl Into<String>) -> Result<Output, ClientError> {
        let spec =
            ShellRunSpec { script: script.into(), close_stdin: true, pace: true, ..ShellRunSpec::default() };
        self.shell_run(shell, spec).await?.output().await
    }

    /// All shells the daemon holds (live and recently closed).
    pub async fn shells(&self) -> Result<Vec<ShellInfo>, ClientError> {
        match self.request(ClientMsg::ShellList { id: self.next_id() }, None).await? {
            ServerMsg::ShellList { shells, .. } => Ok(shells),
            other => Err(unexpected(&other)),
        }
    }

    /// A shell's history: its last commands in execution order.
    pub async fn shell_history(&self, shell: &str) -> Result<Vec<HistoryEntry>, ClientError> {
        match self
            .request(ClientMsg::ShellHistory { id: self.next_id(), shell: shell.to_owned() }, None)
            .await?
        {
            ServerMsg::ShellHistory { entries, .. } => Ok(entries),
            other => Err(unexpected(&other)),
        }
    }

    /// Closes a shell: kills what it runs and its background jobs (except
    /// ones started with `setsid`), and frees it and its commands.
    pub async fn shell_close(&self, shell: &str) -> Result<(), ClientError> {
        self.ok(ClientMsg::ShellClose { id: self.next_id(), shell: shell.to_owned() }).await
    }

    /// All commands the daemon holds, oldest first: every page of the
    /// listing, one request each (see [`Client::list_page`]).
    pub async fn list(&self) -> Result<Vec<CommandInfo>, ClientError> {
        let (mut all, mut next) = self.list_page(None, None).await?;
        while let Some(cursor) = next.take() {
            let (page, after) = self.list_page(None, Some(&cursor)).await?;
            all.extend(page);
            // A daemon that answered the same cursor again would loop.
            next = after.filter(|a| *a != cursor);
        }
        Ok(all)
    }

    /// One page of the listing: at most `limit` commands (the daemon's
    /// default page when `None`) from `cursor` (the oldest when `None`),
    /// and the cursor of the next page, `None` after the last.
    pub async fn list_page(
        &self,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<(Vec<CommandInfo>, Option<String>), ClientError> {
        let msg = ClientMsg::List { id: self.next_id(), limit, cursor: cursor.map(str::to_owned) };
        match self.request(msg, None).await? {
            ServerMsg::List { commands, next, .. } => Ok((commands, next)),
            other => Err(unexpected(&other)),
        }
    }

    /// One command's status.
    pub async fn status(&self, command: &CommandId) -> Result<CommandInfo, ClientError> {
        match self.request(ClientMsg::Status { id: self.next_id(), command: command.clone() }, None).await? {
            ServerMsg::Status { info, .. } => Ok(info),
            other => Err(unexpected(&other)),
        }
    }

    /// Kills a command (and every descendant). Executions of it on this
    /// client are not re-attached after a drop.
    pub async fn kill(&self, command: &CommandId) -> Result<(), ClientError> {
        self.ok(ClientMsg::Kill { id: self.next_id(), command: command.clone() }).await
    }

    /// Sends a signal (`TERM`, `INT`, `9`, ...) to a command's process group.
    pub async fn signal(&self, command: &CommandId, signal: &str) -> Result<(), ClientError> {
        self.ok(ClientMsg::Signal { id: self.next_id(), command: command.clone(), signal: signal.to_owned() })
            .await
    }

    /// Sets a PTY command's terminal size (the newest request wins; every
    /// attachment gets [`ExecEvent::Resized`]).
    pub async fn resize(&self, command: &CommandId, size: TermSize) -> Result<(), ClientError> {
        self.ok(ClientMsg::Resize { id: self.next_id(), command: command.clone(), size }).await
    }

    /// Forgets a command, killing it if it runs.
    pub async fn remove(&self, command: &CommandId) -> Result<(), ClientError> {
        self.ok(ClientMsg::Remove { id: self.next_id(), command: command.clone() }).await
    }

    /// Sends stdin bytes. Returns once they are sent; at most 1 MiB per
    /// command is in flight, so a command that reads slowly (or not at all)
    /// makes this wait rather than the daemon buffer without bound. Stdin
    /// is numbered (resumable): bytes in flight when the connection drops
    /// are sent again after the reconnect and the daemon drops those it
    /// already has, so none is lost or doubled. A failure (stdin closed,
    /// command gone, reconnecting given up) is returned by the next
    /// `write_stdin` or `close_stdin`.
    pub async fn write_stdin(&self, command: &CommandId, data: Bytes) -> Result<(), ClientError> {
        let w = self.window(command);
        let mut rest = data;
        while !rest.is_empty() {
            let piece = rest.split_to(rest.len().min(STDIN_CHUNK));
            if let Some(e) = w.error() {
                return Err(e);
            }
            let frame = w.frames.clone().acquire_owned().await.map_err(|_| ClientError::Closed)?;
            let permit = w
                .credit
                .clone()
                .acquire_many_owned(piece.len() as u32)
                .await
                .map_err(|_| ClientError::Closed)?;
            let (reply, rx) = oneshot::channel();
            {
                let mut next = w.next.lock().await;
                let msg = ClientMsg::Stdin {
                    id: self.next_id(),
                    command: command.clone(),
                    writer: Some(w.writer.clone()),
                    offset: Some(*next),
                    data: piece.clone().into(),
                };
                *next += piece.len() as u64;
                self.tx
                    .send(Cmd { msg, reply: Some(reply), watch: None })
                    .await
                    .map_err(|_| ClientError::Closed)?;
            }
            let w = w.clone();
            // Ends when the reply (or the driver's giving up) arrives.
            tokio::spawn(async move {
                let failed = match rx.await {
                    Ok(Ok(ServerMsg::Ok { .. })) => None,
                    Ok(Ok(other)) => Some(unexpected(&other)),
                    Ok(Err(e)) => Some(e),
                    Err(_) => Some(ClientError::Closed),
                };
                if let Some(e) = failed {
                    w.error.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
                }
                drop((permit, frame));
            });
        }
        Ok(())
    }

    fn window(&self, command: &CommandId) -> Arc<StdinWindow> {
        let mut map = self.stdin.lock().unwrap_or_else(|p| p.into_inner());
        let serial = map.len();
        map.entry(command.clone())
            .or_insert_with(|| {
                Arc::new(StdinWindow {
                    credit: Arc::new(Semaphore::new(STDIN_WINDOW)),
                    frames: Arc::new(Semaphore::new(STDIN_FRAMES)),
                    // A new name for every new count: numbers restart at 0.
                    writer: format!("w-{}-{serial}-{}", self.name, rand::random::<u32>()),
                    next: tokio::sync::Mutex::new(0),
                    error: Mutex::new(None),
                })
            })
            .clone()
    }

    /// Forgets a command's stdin state (its exit was seen).
    fn forget_stdin(&self, command: &CommandId) {
        self.stdin.lock().unwrap_or_else(|p| p.into_inner()).remove(command);
    }

    /// Closes stdin (EOF) after all bytes sent before. On a terminal this
    /// types the end-of-file character, and more stdin may follow.
    pub async fn close_stdin(&self, command: &CommandId) -> Result<(), ClientError> {
        let w = self.window(command);
        // Wait until every earlier stdin frame is acknowledged.
        let all = w.credit.acquire_many(STDIN_WINDOW as u32).await.map_err(|_| ClientError::Closed)?;
        let frames = w.frames.acquire_many(STDIN_FRAMES as u32).await.map_err(|_| ClientError::Closed)?;
        let offset = *w.next.lock().await;
        drop((all, frames));
        // Close even after a failed write, so the command is not left
        // waiting for input; then report the earlier failure.
        let msg = ClientMsg::CloseStdin {
            id: self.next_id(),
            command: command.clone(),
            writer: Some(w.writer.clone()),
            offset: Some(offset),
        };
        let closed = self.ok(msg).await;
        match w.error() {
            Some(e) => Err(e),
            None => closed,
        }
    }

    /// Tells the driver to stop watching a command (best effort, no reply).
    fn detach_quietly(&self, command: &CommandId) {
        let msg = ClientMsg::Detach { id: self.next_id(), command: command.clone() };
        let _ = self.tx.try_send(Cmd { msg, reply: None, watch: None });
    }
}

fn unexpected(m: &ServerMsg) -> ClientError {
    match m {
        ServerMsg::Error { code, message, errno, .. } => {
            ClientError::Server { code: *code, message: message.clone(), errno: *errno }
        }
        other => ClientError::Protocol(format!("unexpected reply: {other:?}")),
    }
}

/// A command this client started or attached to: its ordered event stream
/// plus shortcuts for stdin and signals. Dropping it detaches.
pub struct Execution {
    client: Client,
    id: CommandId,
    pid: Option<u32>,
    events: mpsc::UnboundedReceiver<Delivery>,
    finished: bool,
    /// The attachment's flow control window.
    window: Option<u64>,
    /// Offsets last acknowledged to the daemon.
    acked: [u64; 2],
}

impl std::fmt::Debug for Execution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Execution").field("id", &self.id).field("pid", &self.pid).finish_non_exhaustive()
    }
}

impl StdinWindow {
    fn error(&self) -> Option<ClientError> {
        self.error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for Execution {
    fn drop(&mut self) {
        // Detach at once, so the daemon's idle timeout and
        // kill-on-disconnect see this client leave even if the command
        // prints nothing more.
        if !self.finished {
            self.client.detach_quietly(&self.id);
        }
    }
}

impl Execution {
    /// The command id.
    pub fn id(&self) -> &CommandId {
        &self.id
    }

    /// The process id, when this execution started the command.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// The next event; `None` after the exit. An `Err` means the stream
    /// cannot continue (the command vanished, or reconnecting failed).
    pub async fn next(&mut self) -> Option<Result<ExecEvent, ClientError>> {
        if self.finished {
            return None;
        }
        match self.events.recv().await {
            Some(Delivery { ev: Ok(ev), at }) => {
                if matches!(ev, ExecEvent::Exit(_)) {
                    self.finished = true;
                    self.client.forget_stdin(&self.id);
                } else {
                    // At once past a gap, or when nothing more is queued
                    // (a paced command waits for this), else by quarters.
                    let now = matches!(ev, ExecEvent::Gap { .. }) || self.events.is_empty();
                    self.consumed(at, now);
                }
                Some(Ok(ev))
            }
            Some(Delivery { ev: Err(e), .. }) => {
                self.finished = true;
                Some(Err(e))
            }
            None => {
                self.finished = true;
                Some(Err(ClientError::Disconnected))
            }
        }
    }

    /// Acknowledges what has been taken, a quarter window at a time (and
    /// at once when asked: past a gap, or with nothing more queued), so
    /// the daemon sends more and a paced command goes on.
    fn consumed(&mut self, at: [u64; 2], now: bool) {
        let Some(window) = self.window else { return };
        let taken: u64 = (0..2).map(|i| at[i].saturating_sub(self.acked[i])).sum();
        if (now && taken > 0) || taken >= window / 4 {
            self.acked = [0, 1].map(|i| self.acked[i].max(at[i]));
            self.client.acks.ack(&self.id, self.acked);
        }
    }

    /// Reads every event to the exit, collecting output.
    pub async fn output(mut self) -> Result<Output, ClientError> {
        let (mut stdout, mut stderr, mut lost_bytes) = (Vec::new(), Vec::new(), 0);
        while let Some(ev) = self.next().await {
            match ev? {
                ExecEvent::Stdout(b) => stdout.extend_from_slice(&b),
                ExecEvent::Stderr(b) => stderr.extend_from_slice(&b),
                ExecEvent::Gap { from, to, .. } => lost_bytes += to - from,
                ExecEvent::Screen { .. } | ExecEvent::Resized(_) => {}
                ExecEvent::Exit(status) => {
                    return Ok(Output { stdout, stderr, status, lost_bytes });
                }
            }
        }
        Err(ClientError::Disconnected)
    }

    /// Sends stdin bytes.
    pub async fn write_stdin(&self, data: impl Into<Bytes>) -> Result<(), ClientError> {
        self.client.write_stdin(&self.id, data.into()).await
    }

    /// Closes stdin.
    pub async fn close_stdin(&self) -> Result<(), ClientError> {
        self.client.close_stdin(&self.id).await
    }

    /// Sends a signal to the command's process group.
    pub async fn signal(&self, signal: &str) -> Result<(), ClientError> {
        self.client.signal(&self.id, signal).await
    }

    /// Sets the command's terminal size.
    pub async fn resize(&self, size: TermSize) -> Result<(), ClientError> {
        self.client.resize(&self.id, size).await
    }

    /// Asks for the current screen of this PTY command again, rendered for
    /// `size` (which becomes the terminal's size): an [`ExecEvent::Screen`]
    /// follows, and output continues after it. For a viewer whose display
    /// was disturbed (a notice printed over it, a local resize).
    pub async fn redraw(&self, size: TermSize) -> Result<(), ClientError> {
        let msg = ClientMsg::Attach {
            id: self.client.next_id(),
            command: self.id.clone(),
            stdout_offset: 0,
            stderr_offset: 0,
            tail_bytes: None,
            pace: false,
            screen: true,
            size: Some(size),
            window_bytes: self.window,
            client: None,
        };
        match self.client.request(msg, None).await? {
            ServerMsg::Attached { .. } => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Kills the command; its exit still arrives on this execution.
    pub async fn kill(&self) -> Result<(), ClientError> {
        self.client.kill(&self.id).await
    }

    /// The client this execution belongs to.
    pub fn client(&self) -> &Client {
        &self.client
    }
}
