//! [`Client`]: connecting, and the requests about commands (start, attach,
//! list, status, kill, signal). Shells, stdin and executions have files of
//! their own beside this one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tether_proto::{ClientMsg, CommandId, CommandInfo, ReqId, ServerMsg, StartSpec, TermSize};
use tokio::sync::{mpsc, oneshot, watch};

use crate::driver::{self, Acks, Cmd, Driver, EventTx};
use crate::error::ClientError;

mod execution;
mod options;
mod shells;
mod stdin;

pub use execution::{ExecEvent, Execution, Output};
pub use options::{ClientOptions, Connection};
use stdin::StdinWindow;

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

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
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
        if !opts.allow_insecure_token && !crate::token_may_travel(&ws_url) {
            return Err(ClientError::InsecureToken { url: url.to_owned() });
        }
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
