//! Requests from the public API: what each one changes in the driver's
//! watches, how it attaches, whether it may be sent again after a drop, and
//! its reply or error.

use tether_proto::{ClientMsg, ErrorCode, ReqId, ServerMsg, TermSize};
use tokio_tungstenite::tungstenite;

use super::connect::send;
use super::{Cmd, Delivery, Driver, Mode, Pending, Reply, Ws};
use crate::error::ClientError;

impl Driver {
    pub(super) async fn send_cmd(&mut self, ws: &mut Ws, c: Cmd) -> Result<(), tungstenite::Error> {
        match &c.msg {
            ClientMsg::Kill { command, .. } | ClientMsg::Remove { command, .. } => {
                if let Some(w) = self.watches.get_mut(command) {
                    w.killed = true;
                }
            }
            // Sent when an `Execution` is dropped. Another, live execution
            // of the same command (a later attach) keeps the attachment.
            ClientMsg::Detach { command, .. } => match self.watches.get(command) {
                Some(w) if w.tx.is_closed() => {
                    self.watches.remove(command);
                }
                _ => return Ok(()),
            },
            ClientMsg::Resize { command, size, .. } => {
                if let Some(w) = self.watches.get_mut(command) {
                    w.mode.size = Some(*size);
                }
            }
            // A redraw of a watched terminal: its size is the viewer's now.
            ClientMsg::Attach { command, size: Some(size), .. } if c.watch.is_none() => {
                if let Some(w) = self.watches.get_mut(command) {
                    w.mode.size = Some(*size);
                }
            }
            _ => {}
        }
        let id = c.msg.id();
        let mode = match &c.msg {
            ClientMsg::Start { spec, .. } => Mode {
                pace: spec.pace,
                terminal: spec.pty.is_some(),
                size: spec.pty.as_ref().map(|p| TermSize { rows: p.rows, cols: p.cols }),
                window: spec.window_bytes,
            },
            ClientMsg::ShellRun { spec, .. } => {
                Mode { pace: spec.pace, window: spec.window_bytes, ..Mode::default() }
            }
            ClientMsg::Attach { pace, screen, size, window_bytes, .. } => {
                Mode { pace: *pace, terminal: *screen, size: *size, window: *window_bytes }
            }
            _ => Mode::default(),
        };
        if c.reply.is_some() || c.watch.is_some() {
            let again = retryable(&c.msg).then(|| c.msg.clone());
            let p = Pending { reply: c.reply, watch: c.watch, resume: None, mode, again, repeated: false };
            self.pending.insert(id, p);
        }
        send(ws, &c.msg).await
    }

    /// An error from the daemon: the failed request's reply (or, for the
    /// driver's own re-attach, the end of that execution).
    pub(super) fn on_error(
        &mut self,
        id: Option<ReqId>,
        code: ErrorCode,
        message: String,
        errno: Option<i32>,
    ) {
        let err = ClientError::Server { code, message, errno };
        match id.and_then(|id| self.pending.remove(&id)) {
            Some(p) => {
                if let Some(command) = p.resume {
                    // The command is gone (removed, TTL expired).
                    tracing::warn!(%command, "cannot resume: {err}");
                    if let Some(w) = self.watches.remove(&command) {
                        let _ = w.tx.send(Delivery { ev: Err(err.clone()), at: w.next });
                    }
                }
                // A repeated kill or remove that finds its work done.
                let done_before = p.repeated
                    && matches!(
                        (&p.again, code),
                        (Some(ClientMsg::Kill { .. }), ErrorCode::NotRunning)
                            | (
                                Some(ClientMsg::Remove { .. } | ClientMsg::ShellClose { .. }),
                                ErrorCode::NotFound
                            )
                    );
                if done_before {
                    let id = id.unwrap_or_default();
                    reply(p.reply, Ok(ServerMsg::Ok { id }));
                    return;
                }
                if let Some(tx) = p.watch {
                    let _ = tx.send(Delivery { ev: Err(err.clone()), at: [0, 0] });
                }
                reply(p.reply, Err(err));
            }
            None => {
                if code != ErrorCode::NotFound {
                    tracing::warn!("daemon error: {err}");
                }
            }
        }
    }
}

/// Whether a request can be sent again after a drop without doing twice
/// what it asks: keyed starts and numbered stdin (the daemon recognises the
/// repeat), and requests that mean the same the second time. A signal, an
/// unkeyed start or an unnamed shell would happen twice: they fail instead.
fn retryable(msg: &ClientMsg) -> bool {
    match msg {
        ClientMsg::Start { spec, .. } => spec.request_key.is_some(),
        ClientMsg::ShellRun { spec, .. } => spec.request_key.is_some(),
        ClientMsg::ShellCreate { spec, .. } => spec.name.is_some(),
        ClientMsg::Stdin { writer, offset, .. } | ClientMsg::CloseStdin { writer, offset, .. } => {
            writer.is_some() && offset.is_some()
        }
        ClientMsg::Attach { .. }
        | ClientMsg::Detach { .. }
        | ClientMsg::Resize { .. }
        | ClientMsg::Kill { .. }
        | ClientMsg::Remove { .. }
        | ClientMsg::List { .. }
        | ClientMsg::Status { .. }
        | ClientMsg::ShellList { .. }
        | ClientMsg::ShellHistory { .. }
        | ClientMsg::ShellClose { .. } => true,
        ClientMsg::Signal { .. } | ClientMsg::Ack { .. } => false,
    }
}

pub(super) fn fail(p: Pending, e: &ClientError) {
    if let Some(tx) = p.watch {
        let _ = tx.send(Delivery { ev: Err(e.clone()), at: [0, 0] });
    }
    reply(p.reply, Err(e.clone()));
}

pub(super) fn reply(r: Option<Reply>, v: Result<ServerMsg, ClientError>) {
    if let Some(r) = r {
        let _ = r.send(v);
    }
}
