//! Stdin from a [`Client`]: a window of bytes and frames in flight per
//! command, numbered so that a reconnect resends without loss or doubling.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tether_proto::{ClientMsg, CommandId, ServerMsg};
use tokio::sync::{Semaphore, oneshot};

use super::{Client, unexpected};
use crate::driver::Cmd;
use crate::error::ClientError;

impl Client {
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
    pub(super) fn forget_stdin(&self, command: &CommandId) {
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
pub(super) struct StdinWindow {
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

impl StdinWindow {
    fn error(&self) -> Option<ClientError> {
        self.error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
