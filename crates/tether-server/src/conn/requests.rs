//! One handler per request of the native protocol, in the style of
//! mini-redis's `cmd/*.rs`: each takes the connection and the request's
//! fields and returns the reply to send (or none: `attach` and `start`
//! queue their own, an `ack` has none, `stdin` is answered by its pump) or
//! the [`Error`] to answer with. [`Conn::dispatch`] only matches.

use tether_exec::StdinSeq;
use tether_proto::{self as proto, ClientMsg, CommandId, ErrorCode, ReqId, ServerMsg};

use super::attach::How;
use super::{Conn, PumpRefused, PumpReply, STDIN_WINDOW_BYTES, StdinOp, StdinPump, WINDOW_RANGE, encode};
use crate::{Error, map};

/// What a request handler answers: a reply to queue (or none), or an error.
type Reply = Result<Option<ServerMsg>, Error>;

impl Conn {
    /// Answers one request through its handler.
    pub(super) async fn dispatch(&mut self, msg: ClientMsg) {
        let id = msg.id();
        let reply = match msg {
            ClientMsg::Start { id, spec } => self.start(id, spec).await,
            ClientMsg::Attach {
                id,
                command,
                stdout_offset,
                stderr_offset,
                tail_bytes,
                pace,
                screen,
                size,
                window_bytes,
                client,
            } => match How::checked(tail_bytes, pace, screen, size, window_bytes, client) {
                Ok(how) => self.attach_request(id, command, [stdout_offset, stderr_offset], how).await,
                Err(e) => Err(e),
            },
            ClientMsg::Resize { id, command, size } => self.resize(id, command, size).await,
            ClientMsg::Detach { id, command } => self.detach(id, command),
            ClientMsg::Stdin { id, command, data, writer, offset } => {
                seq(writer, offset).and_then(|seq| self.stdin(id, command, StdinOp::Data(data.0, seq)))
            }
            ClientMsg::CloseStdin { id, command, writer, offset } => {
                seq(writer, offset).and_then(|seq| self.stdin(id, command, StdinOp::Close(seq)))
            }
            ClientMsg::Ack { command, stdout_offset, stderr_offset, .. } => {
                self.ack(command, [stdout_offset, stderr_offset])
            }
            ClientMsg::Signal { id, command, signal } => self.signal(id, command, signal).await,
            ClientMsg::Kill { id, command } => self.kill(id, command).await,
            ClientMsg::List { id, limit, cursor } => self.list(id, limit, cursor),
            ClientMsg::Status { id, command } => self.status(id, command),
            ClientMsg::Remove { id, command } => self.remove(id, command).await,
            ClientMsg::ShellCreate { id, spec } => self.shell_create(id, spec).await,
            ClientMsg::ShellRun { id, shell, spec } => self.shell_run(id, shell, spec).await,
            ClientMsg::ShellList { id } => self.shell_list(id),
            ClientMsg::ShellHistory { id, shell } => self.shell_history(id, shell),
            ClientMsg::ShellClose { id, shell } => self.shell_close(id, shell).await,
        };
        match reply {
            Ok(Some(msg)) => self.send(msg).await,
            Ok(None) => {}
            Err(e) => self.send(e.into_native(Some(id))).await,
        }
    }

    async fn start(&mut self, id: ReqId, spec: proto::StartSpec) -> Reply {
        let (attach, pace, window) = (spec.attach, spec.pace, window(spec.window_bytes)?);
        let client = client_name(spec.client.clone())?;
        let spec = map::spec_from_wire(spec)?;
        // Attached before the command's first byte is read, as asked.
        let (h, sub, new) = self.ctx.manager.start_keyed_then(spec, |h| first_attach(h, attach, pace))?;
        let command = CommandId(h.id().to_owned());
        if new {
            tracing::info!(command = %command, pid = h.pid(), "started");
        } else {
            tracing::info!(command = %command, "start repeated (same request key): the command it started");
        }
        self.started(id, &h, sub.transpose()?, window, client).await
    }

    /// `attach`: answered by `attached` (or an error) from [`Conn::attach`].
    async fn attach_request(&mut self, id: ReqId, command: CommandId, from: [u64; 2], how: How) -> Reply {
        self.attach(id, command, from, how).await;
        Ok(None)
    }

    async fn resize(&mut self, id: ReqId, command: CommandId, size: proto::TermSize) -> Reply {
        let h = self.ctx.manager.get(&command.0)?;
        h.resize(map::size_from_wire(size)).await?;
        Ok(Some(ServerMsg::Ok { id }))
    }

    fn detach(&mut self, id: ReqId, command: CommandId) -> Reply {
        let command = self.name(command);
        self.end(&command.0);
        Ok(Some(ServerMsg::Ok { id }))
    }

    /// Queues a stdin operation on the command's pump (created on first
    /// use); its `ok` or error is sent when the command's stdin took it.
    fn stdin(&mut self, id: ReqId, command: CommandId, op: StdinOp) -> Reply {
        // One pump per command, whichever name (id or key) is used.
        let command = self.name(command);
        if self.pumps.get(&command.0).is_none_or(StdinPump::is_closed) {
            self.ctx.manager.get(&command.0)?;
            let enc = self.ctx.encoding;
            let reply: PumpReply<ReqId> = Box::new(move |id, r| {
                let msg = match r {
                    Ok(()) => ServerMsg::Ok { id },
                    Err(e) => Error::from(e).into_native(Some(id)),
                };
                Some(encode(&msg, enc))
            });
            let p = StdinPump::spawn(
                self.ctx.manager.clone(),
                command.0.clone(),
                STDIN_WINDOW_BYTES,
                Some(self.out.clone()),
                reply,
            );
            // Forget the idle pumps of commands that are gone.
            let manager = &self.ctx.manager;
            self.pumps.retain(|id, p| !p.is_idle() || manager.get(id).is_ok());
            self.pumps.insert(command.0.clone(), p);
        }
        let Some(p) = self.pumps.get(&command.0) else { unreachable!("inserted above") };
        match p.push(id, op) {
            Ok(()) => Ok(None),
            Err(PumpRefused::Window(w)) => Err(Error::new(
                ErrorCode::LimitExceeded,
                format!(
                    "stdin window exceeded: more than {w} unacknowledged bytes for {command}; \
                     wait for the ok of earlier stdin frames"
                ),
            )),
            Err(PumpRefused::Ops) => Err(Error::new(
                ErrorCode::LimitExceeded,
                format!("too many unacknowledged stdin frames for {command}"),
            )),
        }
    }

    /// `ack`: never answered; an ack for an attachment without a window
    /// (or none at all) is ignored.
    fn ack(&mut self, command: CommandId, offsets: [u64; 2]) -> Reply {
        let command = self.name(command);
        if let Some(a) = self.attachments.get(&command.0) {
            if let Some(acked) = &a.acked {
                acked.send_modify(|a| {
                    a[0] = a[0].max(offsets[0]);
                    a[1] = a[1].max(offsets[1]);
                });
            }
            if let Some(p) = &a.pacer {
                p.ack(offsets);
            }
        }
        Ok(None)
    }

    async fn signal(&mut self, id: ReqId, command: CommandId, signal: String) -> Reply {
        let h = self.ctx.manager.get(&command.0)?;
        h.signal(&signal).await?;
        Ok(Some(ServerMsg::Ok { id }))
    }

    async fn kill(&mut self, id: ReqId, command: CommandId) -> Reply {
        let h = self.ctx.manager.get(&command.0)?;
        tracing::info!(command = %command, "kill requested");
        h.kill().await?;
        Ok(Some(ServerMsg::Ok { id }))
    }

    fn list(&mut self, id: ReqId, limit: Option<u32>, cursor: Option<String>) -> Reply {
        let (commands, next) = map::list_page(&self.ctx.manager, limit, cursor.as_deref())?;
        Ok(Some(ServerMsg::List { id, commands, next }))
    }

    fn status(&mut self, id: ReqId, command: CommandId) -> Reply {
        let h = self.ctx.manager.get(&command.0)?;
        Ok(Some(ServerMsg::Status { id, info: map::info_to_wire(h.info()) }))
    }

    /// `remove`: the attachment stays, and delivers the exit (reason
    /// `killed`). The `ok` waits until the command's slot and memory are
    /// free (up to 5 s for processes slow to die), in a task of its own so
    /// that this connection's other requests and acks go on meanwhile.
    async fn remove(&mut self, id: ReqId, command: CommandId) -> Reply {
        // Forgotten now, in order with this connection's other requests (an
        // unknown name is answered now too); only the wait is deferred.
        let removed = self.ctx.manager.removal(&command.0)?;
        let (out, enc) = (self.out.clone(), self.ctx.encoding);
        tokio::spawn(async move {
            removed.await;
            let _ = out.send(encode(&ServerMsg::Ok { id }, enc)).await;
        });
        Ok(None)
    }

    async fn shell_create(&mut self, id: ReqId, spec: proto::ShellSpec) -> Reply {
        let (h, created) = self.ctx.manager.create_shell(map::shell_spec_from_wire(spec)).await?;
        tracing::info!(shell = %h.name(), created, "shell");
        Ok(Some(ServerMsg::Shell { id, info: map::shell_to_wire(h.info()), created }))
    }

    /// Queues a script in a shell; answered like `start`.
    async fn shell_run(&mut self, id: ReqId, shell: String, spec: proto::ShellRunSpec) -> Reply {
        let (attach, pace, window) = (spec.attach, spec.pace, window(spec.window_bytes)?);
        let client = client_name(spec.client.clone())?;
        let spec = map::shell_run_from_wire(spec)?;
        let (h, sub, new) =
            self.ctx.manager.shell_run_keyed_then(&shell, spec, |h| first_attach(h, attach, pace)).await?;
        if new {
            tracing::info!(command = h.id(), %shell, "queued in shell");
        } else {
            tracing::info!(command = h.id(), %shell, "shell_run repeated (same request key): the command it queued");
        }
        self.started(id, &h, sub.transpose()?, window, client).await
    }

    fn shell_list(&mut self, id: ReqId) -> Reply {
        let shells = self.ctx.manager.shells().into_iter().map(map::shell_to_wire).collect();
        Ok(Some(ServerMsg::ShellList { id, shells }))
    }

    fn shell_history(&mut self, id: ReqId, shell: String) -> Reply {
        let h = self.ctx.manager.shell(&shell)?;
        let entries = h.history().into_iter().map(map::history_to_wire).collect();
        Ok(Some(ServerMsg::ShellHistory { id, shell, entries }))
    }

    async fn shell_close(&mut self, id: ReqId, shell: String) -> Reply {
        tracing::info!(%shell, "shell close requested");
        self.ctx.manager.close_shell(&shell).await?;
        Ok(Some(ServerMsg::Ok { id }))
    }
}

/// A `stdin`/`close_stdin`'s writer and offset: both or neither.
fn seq(writer: Option<String>, offset: Option<u64>) -> Result<Option<StdinSeq>, Error> {
    match (writer, offset) {
        (None, None) => Ok(None),
        (Some(writer), Some(offset)) => {
            let seq = StdinSeq { writer, offset };
            if !seq.is_valid() {
                return Err(Error::bad_request(format!(
                    "stdin writer {:?}: 1 to {} bytes",
                    seq.writer,
                    StdinSeq::MAX_WRITER
                )));
            }
            Ok(Some(seq))
        }
        _ => Err(Error::bad_request("give both writer and offset, or neither")),
    }
}

/// A client name (`attach.client`), checked.
pub(super) fn client_name(c: Option<String>) -> Result<Option<String>, Error> {
    match c {
        Some(c) if c.is_empty() || c.len() > 64 => {
            Err(Error::bad_request(format!("client name {c:?}: 1 to 64 bytes")))
        }
        c => Ok(c),
    }
}

/// A `window_bytes`, checked.
pub(super) fn window(w: Option<u64>) -> Result<Option<u64>, Error> {
    match w {
        Some(w) if !WINDOW_RANGE.contains(&w) => Err(Error::bad_request(format!(
            "window_bytes {w} is outside {}..={}",
            WINDOW_RANGE.start(),
            WINDOW_RANGE.end()
        ))),
        w => Ok(w),
    }
}

/// The attachment a `start` or `shell_run` asks for, made before the
/// command's first byte is read (see [`tether_exec::Manager::start_keyed_then`]).
fn first_attach(
    h: &tether_exec::CommandHandle,
    attach: bool,
    pace: bool,
) -> Option<Result<tether_exec::Subscription, tether_exec::ExecError>> {
    attach.then(|| h.attach_paced([0, 0], pace))
}
