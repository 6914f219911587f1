//! Memory per idle command: tether with many detached `sleep 600`,
//! websocketd with many open connections, terminado with many terminals.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures_util::{StreamExt, stream};
use tether_client::{Client, CommandId, StartSpec};
use tokio::time::{Instant, sleep};

use crate::procs::{self, Daemon};
use crate::wsclient::{self, Ws};

/// RSS of a server before, while holding `count` idle things, and after
/// letting them go. All in KiB.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Footprint {
    /// How many commands/connections/terminals were held.
    pub(crate) count: usize,
    /// The server's own RSS before.
    pub(crate) own_before: u64,
    /// The server's own RSS while holding them.
    pub(crate) own_during: u64,
    /// The server's own RSS after killing/closing them.
    pub(crate) own_after: u64,
    /// The server plus its descendants, before.
    pub(crate) tree_before: u64,
    /// The server plus its descendants, while holding them.
    pub(crate) tree_during: u64,
}

impl Footprint {
    /// The server's own growth per held thing, in KiB.
    pub(crate) fn own_per(&self) -> f64 {
        self.own_during.saturating_sub(self.own_before) as f64 / self.count.max(1) as f64
    }

    /// The growth of the server and its descendants per held thing, in KiB.
    pub(crate) fn tree_per(&self) -> f64 {
        self.tree_during.saturating_sub(self.tree_before) as f64 / self.count.max(1) as f64
    }
}

/// How many requests the bench keeps in flight at once.
const PARALLEL: usize = 16;

/// Lets allocations and lazily started processes settle before a reading.
const SETTLE: Duration = Duration::from_millis(500);

/// Waits until `root` has at least `want` live descendants, at most `limit`.
pub(crate) async fn wait_descendants(root: u32, want: usize, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let n = procs::descendants(root).len();
        if n >= want {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {n} of {want} processes appeared within {limit:?}");
        }
        sleep(Duration::from_millis(50)).await;
    }
}

fn rss(pid: u32) -> Result<(u64, u64)> {
    let (own, tree, _) = procs::tree_rss(pid).with_context(|| format!("process {pid} is gone"))?;
    Ok((own, tree))
}

/// Starts `count` detached `sleep 600` on a fresh daemon, reads its RSS,
/// kills them all, reads it again.
pub(crate) async fn tether(d: &Daemon, count: usize) -> Result<Footprint> {
    let client = Client::connect(&d.url, &d.token).await?;
    // Warm up the connection and the spawn path.
    for _ in 0..5 {
        client.run(StartSpec { argv: vec!["true".into()], ..Default::default() }).await?;
    }
    sleep(SETTLE).await;
    let (own_before, tree_before) = rss(d.pid)?;
    let ids = start_sleeps(&client, count, None).await?;
    let result = async {
        wait_descendants(d.pid, count, Duration::from_secs(30)).await?;
        sleep(SETTLE).await;
        rss(d.pid)
    }
    .await;
    // Kill whatever started, also when the measurement failed.
    let killed: Vec<_> = stream::iter(ids.iter())
        .map(|id| {
            let c = client.clone();
            async move { c.kill(id).await }
        })
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    let (own_during, tree_during) = result?;
    if let Some(Err(e)) = killed.into_iter().find(|r| r.is_err()) {
        bail!("kill failed: {e}");
    }
    // Wait until the daemon has reaped them (no live descendants left).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !procs::descendants(d.pid).is_empty() {
        if Instant::now() > deadline {
            bail!("killed commands still alive after 30 s");
        }
        sleep(Duration::from_millis(50)).await;
    }
    sleep(SETTLE).await;
    let (own_after, _) = rss(d.pid)?;
    Ok(Footprint { count, own_before, own_during, own_after, tree_before, tree_during })
}

/// Holds `count` connections to `websocketd ... sleep 600` (one process
/// each), reads websocketd's RSS, closes them.
pub(crate) async fn websocketd(pid: u32, port: u16, count: usize) -> Result<Footprint> {
    let url = format!("ws://127.0.0.1:{port}/");
    // Warm up: one connection, closed again.
    {
        let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str()).await?;
        let _ = ws.close(None).await;
    }
    wait_no_descendants(pid, Duration::from_secs(10)).await;
    sleep(SETTLE).await;
    let (own_before, tree_before) = rss(pid)?;
    let conns: Vec<Result<Ws>> = stream::iter(0..count)
        .map(|_| {
            let url = url.clone();
            async move {
                let (ws, _) = tokio_tungstenite::connect_async(url.as_str()).await?;
                anyhow::Ok(ws)
            }
        })
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    let mut open = Vec::with_capacity(count);
    for c in conns {
        open.push(c?);
    }
    wait_descendants(pid, count, Duration::from_secs(30)).await?;
    sleep(SETTLE).await;
    let (own_during, tree_during) = rss(pid)?;
    close_all(open).await;
    wait_no_descendants(pid, Duration::from_secs(10)).await;
    sleep(SETTLE).await;
    let (own_after, _) = rss(pid)?;
    Ok(Footprint { count, own_before, own_during, own_after, tree_before, tree_during })
}

/// Opens `count` terminado terminals (one bash each), reads the server's
/// RSS, closes them.
pub(crate) async fn terminado(pid: u32, port: u16, count: usize) -> Result<Footprint> {
    {
        let mut ws = wsclient::open_terminal(port).await?;
        let _ = ws.close(None).await;
    }
    wait_no_descendants(pid, Duration::from_secs(10)).await;
    sleep(SETTLE).await;
    let (own_before, tree_before) = rss(pid)?;
    let conns: Vec<Result<Ws>> = stream::iter(0..count)
        .map(|_| wsclient::open_terminal(port))
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    let mut open = Vec::with_capacity(count);
    for c in conns {
        open.push(c?);
    }
    wait_descendants(pid, count, Duration::from_secs(30)).await?;
    sleep(SETTLE).await;
    let (own_during, tree_during) = rss(pid)?;
    close_all(open).await;
    wait_no_descendants(pid, Duration::from_secs(10)).await;
    sleep(SETTLE).await;
    let (own_after, _) = rss(pid)?;
    Ok(Footprint { count, own_before, own_during, own_after, tree_before, tree_during })
}

pub(crate) async fn close_all(conns: Vec<Ws>) {
    stream::iter(conns)
        .for_each_concurrent(PARALLEL, |mut ws| async move {
            let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
        })
        .await;
}

/// Best effort: gives the server up to `limit` to reap what it started.
async fn wait_no_descendants(pid: u32, limit: Duration) {
    let deadline = Instant::now() + limit;
    while !procs::descendants(pid).is_empty() && Instant::now() < deadline {
        sleep(Duration::from_millis(50)).await;
    }
}

/// Holds `count` detached `sleep 600` on a fresh daemon and then one
/// single-command WebSocket attached to each (`/v1/ws?attach=ID`, the
/// connection a browser tab or a log follower keeps open): the daemon's
/// RSS with the commands alone is "before", with the connections too
/// "during", and with the connections closed again "after". The growth
/// per connection is what an idle attached viewer costs.
pub(crate) async fn tether_attached(d: &Daemon, count: usize) -> Result<Footprint> {
    let client = Client::connect(&d.url, &d.token).await?;
    for _ in 0..5 {
        client.run(StartSpec { argv: vec!["true".into()], ..Default::default() }).await?;
    }
    let ids = start_sleeps(&client, count, None).await?;
    let result = async {
        wait_descendants(d.pid, count, Duration::from_secs(60)).await?;
        // Warm up the connection path (the first upgrade allocates the
        // daemon's shared pieces once).
        let warm = attach_one(d, &ids[0]).await?;
        close_all(vec![warm]).await;
        sleep(SETTLE).await;
        let (own_before, tree_before) = rss(d.pid)?;
        let conns: Vec<Result<Ws>> =
            stream::iter(ids.iter()).map(|id| attach_one(d, id)).buffer_unordered(PARALLEL).collect().await;
        let (open, first_err) = split_results(conns);
        sleep(SETTLE).await;
        let during = rss(d.pid);
        close_all(open).await;
        if let Some(e) = first_err {
            return Err(e.context("attaching"));
        }
        let (own_during, tree_during) = during?;
        sleep(SETTLE).await;
        let (own_after, _) = rss(d.pid)?;
        Ok(Footprint { count, own_before, own_during, own_after, tree_before, tree_during })
    }
    .await;
    kill_all(&client, &ids).await;
    result
}

/// The successes of `results`, and the first failure if any.
pub(crate) fn split_results<T, E>(results: Vec<Result<T, E>>) -> (Vec<T>, Option<E>) {
    let mut ok = Vec::with_capacity(results.len());
    let mut first_err = None;
    for r in results {
        match r {
            Ok(v) => ok.push(v),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    (ok, first_err)
}

/// Starts `count` detached `sleep 600` (with rings of `ring_bytes`, else
/// the default); all or an error (having killed those that started).
pub(crate) async fn start_sleeps(
    client: &Client,
    count: usize,
    ring_bytes: Option<u64>,
) -> Result<Vec<CommandId>> {
    let spec = StartSpec { argv: vec!["sleep".into(), "600".into()], ring_bytes, ..Default::default() };
    start_all(client, count, &spec).await
}

/// Starts `count` detached commands of `spec`; all or an error (having
/// killed those that started).
pub(crate) async fn start_all(client: &Client, count: usize, spec: &StartSpec) -> Result<Vec<CommandId>> {
    let started: Vec<Result<(CommandId, u32), _>> = stream::iter(0..count)
        .map(|_| {
            let c = client.clone();
            let spec = spec.clone();
            async move { c.start_detached(spec).await }
        })
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    let (started, first_err) = split_results(started);
    let ids: Vec<CommandId> = started.into_iter().map(|(id, _pid)| id).collect();
    if let Some(e) = first_err {
        kill_all(client, &ids).await;
        bail!("{} of {count} starts failed, the first with: {e}", count - ids.len());
    }
    Ok(ids)
}

pub(crate) async fn kill_all(client: &Client, ids: &[CommandId]) {
    stream::iter(ids.iter())
        .for_each_concurrent(PARALLEL, |id| {
            let c = client.clone();
            async move {
                let _ = c.kill(id).await;
            }
        })
        .await;
}

/// One connection attached to `id` on connect: returns once the daemon
/// has answered `attached`.
pub(crate) async fn attach_one(d: &Daemon, id: &CommandId) -> Result<Ws> {
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::{HeaderValue, header};
    let url = format!("{}/v1/ws?attach={}", d.url.replacen("http://", "ws://", 1), id.0);
    let mut req = url.as_str().into_client_request()?;
    req.headers_mut().insert(header::AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {}", d.token))?);
    req.headers_mut()
        .insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(tether_proto::SUBPROTOCOL_MSGPACK));
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(req, None, true).await?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(b))) => {
                match tether_proto::decode::<tether_proto::ServerMsg>(&b, tether_proto::Encoding::MsgPack)? {
                    tether_proto::ServerMsg::Attached { .. } => return Ok(ws),
                    tether_proto::ServerMsg::Error { message, .. } => bail!("attach {}: {message}", id.0),
                    _ => {}
                }
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e).context("attaching"),
            None => bail!("the daemon closed the connection before attached"),
        }
    }
}

/// What finished line-at-a-time writers leave in their rings.
pub(crate) struct Retention {
    pub(crate) count: usize,
    /// Each command's stdout ring size.
    pub(crate) ring: u64,
    /// Bytes each wrote.
    pub(crate) written: u64,
    /// Mean bytes a ring still holds.
    pub(crate) held: u64,
    /// The daemon's own RSS growth per command, in KiB.
    pub(crate) own_per: f64,
}

/// Runs `count` bash loops that `echo` one short line per write (far more
/// than a ring holds), waits for their exits, and reads how much of each
/// ring is held, and what the daemon's RSS grew by for them.
pub(crate) async fn line_writers(d: &Daemon, count: usize, ring: u64) -> Result<Retention> {
    const LINES: u64 = 150_000;
    let client = Client::connect(&d.url, &d.token).await?;
    sleep(SETTLE).await;
    let (own_before, _) = rss(d.pid)?;
    let script = format!(r#"for i in $(seq 1 {LINES}); do echo "line $i"; done"#);
    let spec = StartSpec { shell: Some(script), ring_bytes: Some(ring), ..Default::default() };
    let ids = start_all(&client, count, &spec).await?;
    let measured = async {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut infos = Vec::new();
        for id in &ids {
            loop {
                let info = client.status(id).await?;
                if info.exit.is_some() {
                    infos.push(info);
                    break;
                }
                if Instant::now() > deadline {
                    bail!("the writers did not finish within 120 s");
                }
                sleep(Duration::from_millis(50)).await;
            }
        }
        sleep(SETTLE).await;
        let (own_during, _) = rss(d.pid)?;
        let written = infos[0].stdout.end;
        let held = infos.iter().map(|i| i.stdout.end - i.stdout.first_held).sum::<u64>() / count as u64;
        let own_per = own_during.saturating_sub(own_before) as f64 / count as f64;
        Ok(Retention { count, ring, written, held, own_per })
    }
    .await;
    for id in &ids {
        let _ = client.remove(id).await;
    }
    measured
}
