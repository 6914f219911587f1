//! The bare WebSocket floors (P1's echo, row 4's stream): a
//! tokio-tungstenite server with nothing behind it, either a task of the
//! bench process or a process of its own (this binary again, with the
//! hidden `--ws-echo-server` flag), which is the topology of a client and
//! the daemon.
//!
//! On a connection the server echoes every binary message; a text message
//! `N` makes it send N bytes as 64 KiB binary frames and close.

use std::net::SocketAddr;
use std::process::Stdio;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncReadExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

/// The size of the stream's binary frames: that of tether's output chunks
/// (`max_chunk_bytes`).
const FRAME: usize = 64 << 10;

/// Where the floor's server runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Place {
    /// A task of this process: no wake-up crosses a process, and on a
    /// multi-thread runtime both ends often run on one thread.
    InProcess,
    /// A process of its own: as a client and the daemon are.
    OwnProcess,
}

/// A running floor server.
pub(crate) enum Server {
    Task { addr: SocketAddr, task: JoinHandle<Result<()>> },
    Process { addr: SocketAddr, child: Child },
}

impl Server {
    /// Starts a server that takes one connection (in process) or any
    /// number (its own process).
    pub(crate) async fn start(place: Place) -> Result<Server> {
        match place {
            Place::InProcess => {
                let listener = TcpListener::bind("127.0.0.1:0").await?;
                let addr = listener.local_addr()?;
                let task = tokio::spawn(async move {
                    let (tcp, _) = listener.accept().await?;
                    connection(tcp).await
                });
                Ok(Server::Task { addr, task })
            }
            Place::OwnProcess => {
                let exe = std::env::current_exe().context("this binary's path")?;
                let mut child = Command::new(exe)
                    .arg("--ws-echo-server")
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .kill_on_drop(true)
                    .spawn()
                    .context("starting the floor's server process")?;
                let stdout = child.stdout.take().context("the server's stdout")?;
                let mut line = String::new();
                tokio::io::BufReader::new(stdout).read_line(&mut line).await?;
                let addr = line.trim().parse().with_context(|| format!("the server printed {line:?}"))?;
                Ok(Server::Process { addr, child })
            }
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        match self {
            Server::Task { addr, .. } | Server::Process { addr, .. } => *addr,
        }
    }

    /// Waits for the server to end (the task once its connection closed;
    /// the process once its stdin is closed) and returns its error.
    pub(crate) async fn finish(self) -> Result<()> {
        match self {
            Server::Task { task, .. } => task.await?,
            Server::Process { mut child, .. } => {
                drop(child.stdin.take());
                let status = child.wait().await?;
                if !status.success() {
                    bail!("the floor's server process ended with {status}");
                }
                Ok(())
            }
        }
    }
}

/// `tether-bench --ws-echo-server`: prints its address, serves every
/// connection, and returns when its stdin ends.
pub(crate) async fn serve() -> Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("{}", listener.local_addr()?);
    let accept = async {
        loop {
            let (tcp, _) = listener.accept().await?;
            tokio::spawn(connection(tcp));
        }
    };
    let (mut stdin, mut sink) = (tokio::io::stdin(), Vec::new());
    tokio::select! {
        r = accept => r,
        _ = stdin.read_to_end(&mut sink) => Ok(()),
    }
}

async fn connection(tcp: TcpStream) -> Result<()> {
    tcp.set_nodelay(true)?;
    let mut ws = tokio_tungstenite::accept_async(tcp).await?;
    while let Some(msg) = ws.next().await {
        match msg? {
            m @ Message::Binary(_) => ws.send(m).await?,
            Message::Text(n) => {
                let n: u64 = n.as_str().parse().context("a stream request that is not a number")?;
                let frame = Bytes::from(vec![0u8; FRAME]);
                let mut left = n;
                while left > 0 {
                    let len = left.min(FRAME as u64) as usize;
                    ws.send(Message::Binary(frame.slice(..len))).await?;
                    left -= len as u64;
                }
                // Not waiting for the client's close reply: the bench's
                // client stops reading at the close.
                ws.close(None).await?;
                break;
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    Ok(())
}
