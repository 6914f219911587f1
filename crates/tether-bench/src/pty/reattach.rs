//! Re-attach: a viewer opens a new connection to a running full-screen
//! terminal and waits until it can show the screen. tether restores it
//! (`attach` with `screen: true` is answered by a `screen` frame rendered
//! by its terminal model); terminado has no screen model and replays the
//! raw output it kept (its last 1000 reads) to a client joining a named
//! terminal.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::SinkExt;
use tether_client::{Client, ExecEvent, PtySpec, StartSpec, TermSize};
use tether_proto::{ClientMsg, ServerMsg};
use tokio_tungstenite::tungstenite::Message;

use crate::procs::Daemon;
use crate::report::Latency;
use crate::tetherws::{self, TetherWs};
use crate::wsclient::{self, next_term_msg};

/// The terminal's size.
pub(crate) const ROWS: u16 = 50;
/// The terminal's size.
pub(crate) const COLS: u16 = 200;

/// Fills all 50 lines of a 200-column terminal (no newlines: each
/// 200-character number wraps to the next line), then stays.
pub(crate) const DRAW: &str = r#"for i in $(seq 1 50); do printf "%0200d" $i; done; sleep 600"#;

/// Bytes `DRAW` prints.
const DRAWN: usize = ROWS as usize * COLS as usize;

/// Re-attaches before the measured ones.
const WARMUP: usize = 5;

/// Samples plus the size of what the viewer received.
pub(crate) struct Reattach {
    /// Connect until the screen (or replay) arrived.
    pub(crate) latency: Latency,
    /// Bytes of screen (or replayed output) the viewer got, last sample.
    pub(crate) payload: usize,
    /// The whole frame carrying it, last sample.
    pub(crate) frame: usize,
    /// The part of each sample until the connection was up (`hello`
    /// read), where measured.
    pub(crate) connect: Option<Latency>,
}

fn draw_argv() -> Vec<String> {
    vec!["bash".into(), "-c".into(), DRAW.into()]
}

/// tether through the bare client: starts `DRAW` on a 50x200 PTY, reads
/// it, detaches; then `n` times: connect (TCP + upgrade + `hello`), send
/// `attach {command, screen: true, size: 50x200}`, until the `screen`.
pub(crate) async fn tether_raw(d: &Daemon, n: usize) -> Result<Reattach> {
    let mut setup = TetherWs::connect(d).await?;
    let spec = StartSpec { argv: draw_argv(), pty: tetherws::pty(ROWS, COLS), ..StartSpec::default() };
    let command = setup.start(spec).await?;
    let mut drawn = 0;
    while drawn < DRAWN {
        match setup.recv().await? {
            ServerMsg::Output { data, .. } => drawn += data.len(),
            ServerMsg::Exit { .. } => bail!("the drawing command exited"),
            _ => {}
        }
    }
    setup.request_ok(|id| ClientMsg::Detach { id, command: command.clone() }).await?;
    let r = async {
        let (mut samples, mut connects) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let (mut payload, mut frame) = (0, 0);
        for i in 0..WARMUP + n {
            let t = Instant::now();
            let mut ws = TetherWs::connect(d).await?;
            if i >= WARMUP {
                connects.push(t.elapsed());
            }
            let id = ws.id();
            ws.send(&ClientMsg::Attach {
                id,
                command: command.clone(),
                stdout_offset: 0,
                stderr_offset: 0,
                tail_bytes: None,
                pace: false,
                screen: true,
                size: Some(TermSize { rows: ROWS, cols: COLS }),
                window_bytes: None,
                client: None,
            })
            .await?;
            loop {
                match ws.recv_sized().await? {
                    (ServerMsg::Screen { offset, data, .. }, frame_bytes) => {
                        let d = t.elapsed();
                        if offset != drawn as u64 {
                            bail!("the screen reflects offset {offset}, expected the end, {drawn}");
                        }
                        if i >= WARMUP {
                            samples.push(d);
                        }
                        (payload, frame) = (data.len(), frame_bytes);
                        break;
                    }
                    (ServerMsg::Attached { id: got, .. }, _) if got == id => {}
                    (other, _) if tetherws::is_other(&other) => {}
                    (other, _) => bail!("expected the screen, got {other:?}"),
                }
            }
            ws.close().await;
        }
        if payload < DRAWN {
            bail!("the screen holds {payload} bytes, less than the {DRAWN} characters on it");
        }
        Ok(Reattach {
            latency: Latency::of(samples).context("no samples")?,
            payload,
            frame,
            connect: Latency::of(connects),
        })
    }
    .await;
    let _ = setup.request_ok(|id| ClientMsg::Kill { id, command }).await;
    setup.close().await;
    r
}

/// tether through `tether-client`: `Client::connect` +
/// `attach_terminal(id, 50x200)` until the `Screen` event.
pub(crate) async fn tether_client(d: &Daemon, n: usize) -> Result<Reattach> {
    let client = Client::connect(&d.url, &d.token).await?;
    let spec = StartSpec {
        argv: draw_argv(),
        pty: Some(PtySpec { rows: ROWS, cols: COLS, term: None }),
        ..Default::default()
    };
    let mut exec = client.start(spec).await?;
    let id = exec.id().clone();
    let mut drawn = 0;
    while drawn < DRAWN {
        match exec.next().await.context("the events ended")?? {
            ExecEvent::Stdout(b) => drawn += b.len(),
            ExecEvent::Exit(_) => bail!("the drawing command exited"),
            _ => {}
        }
    }
    drop(exec);
    let r = async {
        let mut samples = Vec::with_capacity(n);
        let mut payload = 0;
        for i in 0..WARMUP + n {
            let t = Instant::now();
            let c = Client::connect(&d.url, &d.token).await?;
            let mut viewer = c.attach_terminal(&id, TermSize { rows: ROWS, cols: COLS }).await?;
            loop {
                match viewer.next().await.context("the events ended")?? {
                    ExecEvent::Screen { data, .. } => {
                        let d = t.elapsed();
                        if i >= WARMUP {
                            samples.push(d);
                        }
                        payload = data.len();
                        break;
                    }
                    ExecEvent::Resized(_) => {}
                    other => bail!("expected the screen, got {other:?}"),
                }
            }
        }
        Ok(Reattach {
            latency: Latency::of(samples).context("no samples")?,
            payload,
            frame: 0,
            connect: None,
        })
    }
    .await;
    let _ = client.kill(&id).await;
    r
}

/// terminado started with `bash -c DRAW`: the first connection to
/// `/named/bench` creates the terminal (and sets 50x200) and reads the
/// drawing; then `n` times: connect to it until the first `stdout` message
/// (terminado's replay of what it kept; `setup` comes before it).
pub(crate) async fn terminado(port: u16, n: usize) -> Result<Reattach> {
    const PATH: &str = "/named/bench";
    let mut setup = wsclient::connect_nodelay(port, PATH).await?;
    setup.send(Message::text(serde_json::json!(["set_size", ROWS, COLS]).to_string())).await?;
    let mut drawn = 0;
    while drawn < DRAWN {
        match next_term_msg(&mut setup).await? {
            (kind, text) if kind == "stdout" => drawn += text.len(),
            (kind, _) if kind == "disconnect" => bail!("the drawing command exited"),
            _ => {}
        }
    }
    let _ = setup.close(None).await;
    let mut samples = Vec::with_capacity(n);
    let (mut payload, mut frame) = (0, 0);
    for i in 0..WARMUP + n {
        let t = Instant::now();
        let mut ws = wsclient::connect_nodelay(port, PATH).await?;
        loop {
            match next_term_msg(&mut ws).await? {
                (kind, text) if kind == "stdout" => {
                    let d: Duration = t.elapsed();
                    if i >= WARMUP {
                        samples.push(d);
                    }
                    payload = text.len();
                    frame = serde_json::json!(["stdout", text]).to_string().len();
                    break;
                }
                (kind, _) if kind == "disconnect" => bail!("the terminal closed"),
                _ => {}
            }
        }
        let _ = ws.close(None).await;
    }
    if payload < DRAWN {
        bail!("terminado replayed {payload} bytes, less than the {DRAWN} drawn");
    }
    Ok(Reattach { latency: Latency::of(samples).context("no samples")?, payload, frame, connect: None })
}
