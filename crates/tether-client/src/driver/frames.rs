//! Frames from the daemon: replies go to their requests, output, gaps,
//! screens and exits to the watched command's execution, each byte once.

use bytes::Bytes;
use tether_proto::{self as proto, ClientMsg, CommandId, ReqId, ServerMsg, Stream};
use tokio_tungstenite::tungstenite;

use super::connect::send;
use super::requests::reply;
use super::{Delivery, Driver, Watch, Ws};
use crate::client::ExecEvent;
use crate::error::ClientError;

impl Driver {
    /// Registers an execution's watch. One connection has one attachment
    /// per command, so an earlier execution of it ends with an error.
    fn watch(&mut self, command: CommandId, w: Watch) {
        if let Some(old) = self.watches.insert(command, w) {
            let err = ClientError::Protocol(
                "superseded by a newer attach to the same command on this client".into(),
            );
            let _ = old.tx.send(Delivery { ev: Err(err), at: old.next });
        }
    }

    /// Hands an event to a watched command's execution; an execution that
    /// is gone is detached.
    async fn deliver(
        &mut self,
        ws: &mut Ws,
        command: &CommandId,
        ev: ExecEvent,
    ) -> Result<(), tungstenite::Error> {
        let Some(w) = self.watches.get(command) else { return Ok(()) };
        if w.tx.send(Delivery { ev: Ok(ev), at: w.next }).is_err() {
            self.unwatch(ws, command.clone()).await?;
        }
        Ok(())
    }

    pub(super) async fn on_frame(&mut self, ws: &mut Ws, bytes: &[u8]) -> Result<(), tungstenite::Error> {
        let msg: ServerMsg = match proto::decode(bytes, proto::Encoding::MsgPack) {
            Ok(m) => m,
            Err(e) => {
                // A newer daemon may send messages this client does not know.
                tracing::debug!("ignoring undecodable frame: {e}");
                return Ok(());
            }
        };
        match msg {
            ServerMsg::Hello { .. } => {}
            ServerMsg::Screen { command, offset, size, data } => {
                if let Some(w) = self.watches.get_mut(&command) {
                    // The screen replaces whatever the viewer showed; output
                    // continues at its offset.
                    w.next[0] = offset;
                    self.deliver(ws, &command, ExecEvent::Screen { size, data: data.0 }).await?;
                }
            }
            ServerMsg::Resized { command, size } => {
                self.deliver(ws, &command, ExecEvent::Resized(size)).await?;
            }
            ServerMsg::Started { id, ref command, .. } => {
                if let Some(p) = self.pending.remove(&id) {
                    if let Some(tx) = p.watch {
                        let w = Watch { tx, next: [0, 0], killed: false, mode: p.mode, acked: [0, 0] };
                        self.watch(command.clone(), w);
                    }
                    reply(p.reply, Ok(msg));
                }
            }
            ServerMsg::Attached { id, ref command, stdout_offset, stderr_offset } => {
                if let Some(p) = self.pending.remove(&id) {
                    if let Some(tx) = p.watch {
                        let next = [stdout_offset, stderr_offset];
                        let w = Watch { tx, next, killed: false, mode: p.mode, acked: next };
                        self.watch(command.clone(), w);
                    }
                    if p.resume.is_some() {
                        tracing::debug!(%command, stdout_offset, stderr_offset, "resumed");
                    }
                    reply(p.reply, Ok(msg));
                }
            }
            ServerMsg::Output { command, stream, offset, data } => {
                self.deliver_output(ws, command, stream, offset, data.0).await?;
            }
            ServerMsg::Gap { command, stream, requested, first_held } => {
                if let Some(w) = self.watches.get_mut(&command) {
                    let i = stream.index();
                    let from = w.next[i].max(requested);
                    if first_held > w.next[i] {
                        w.next[i] = first_held;
                        let ev = ExecEvent::Gap { stream, from, to: first_held };
                        self.deliver(ws, &command, ev).await?;
                    }
                }
            }
            ServerMsg::Exit { command, status } => {
                if let Some(w) = self.watches.remove(&command) {
                    let _ = w.tx.send(Delivery { ev: Ok(ExecEvent::Exit(status)), at: w.next });
                }
            }
            ServerMsg::Ok { id }
            | ServerMsg::List { id, .. }
            | ServerMsg::Status { id, .. }
            | ServerMsg::Shell { id, .. }
            | ServerMsg::ShellList { id, .. }
            | ServerMsg::ShellHistory { id, .. } => {
                if let Some(p) = self.pending.remove(&id) {
                    reply(p.reply, Ok(msg));
                }
            }
            ServerMsg::Error { id, code, message, errno } => self.on_error(id, code, message, errno),
        }
        Ok(())
    }

    async fn deliver_output(
        &mut self,
        ws: &mut Ws,
        command: CommandId,
        stream: Stream,
        offset: u64,
        mut data: Bytes,
    ) -> Result<(), tungstenite::Error> {
        let Some(w) = self.watches.get_mut(&command) else {
            return Ok(());
        };
        let i = stream.index();
        let end = offset + data.len() as u64;
        if end <= w.next[i] {
            return Ok(()); // already delivered before a reconnect
        }
        if offset > w.next[i] {
            // Bytes missing without a gap frame: say so rather than hide it.
            let ev = ExecEvent::Gap { stream, from: w.next[i], to: offset };
            w.next[i] = offset;
            self.deliver(ws, &command, ev).await?;
        } else {
            data = data.slice((w.next[i] - offset) as usize..);
        }
        let Some(w) = self.watches.get_mut(&command) else {
            return Ok(());
        };
        w.next[i] = end;
        let ev = match stream {
            Stream::Stdout => ExecEvent::Stdout(data),
            Stream::Stderr => ExecEvent::Stderr(data),
        };
        self.deliver(ws, &command, ev).await
    }

    /// The caller dropped its execution: detach from the command.
    async fn unwatch(&mut self, ws: &mut Ws, command: CommandId) -> Result<(), tungstenite::Error> {
        self.watches.remove(&command);
        let id = ReqId(self.next_internal);
        self.next_internal += 1;
        send(ws, &ClientMsg::Detach { id, command }).await
    }
}
