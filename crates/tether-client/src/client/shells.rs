//! The named-shell requests of [`Client`]: create, run, submit, list,
//! history and close.

use tether_proto::{ClientMsg, CommandId, HistoryEntry, ServerMsg, ShellInfo, ShellRunSpec, ShellSpec};

use tokio::sync::mpsc;

use super::{Client, Execution, Output, unexpected};
use crate::error::ClientError;

impl Client {
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
}
