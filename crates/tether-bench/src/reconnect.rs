//! Resume latency: a new connection plus `attach` from an earlier offset,
//! until the first resumed stdout byte arrives.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use tether_client::{Client, ExecEvent, StartSpec};

use crate::procs::Daemon;
use crate::report::Latency;

/// Lines of output read before the measurement starts.
const WARM_EVENTS: usize = 5;

/// Starts a command that prints a line every 10 ms, reads a few lines, then
/// `n` times: `Client::connect` + `attach(id, [offset, 0])` until the first
/// `Stdout` event. `offset` is where the first reader stopped, so the bytes
/// after it are in the ring and the daemon replays them at once: this is a
/// client that lost its connection catching up.
pub(crate) async fn tether(d: &Daemon, n: usize) -> Result<Latency> {
    let client = Client::connect(&d.url, &d.token).await?;
    let mut exec = client
        .start(StartSpec {
            argv: vec!["sh".into(), "-c".into(), "while :; do echo tick; sleep 0.01; done".into()],
            ..Default::default()
        })
        .await?;
    let id = exec.id().clone();
    let result = async {
        let mut offset = 0u64;
        let mut seen = 0;
        while seen < WARM_EVENTS {
            match exec.next().await.context("the ticker's events ended")?? {
                ExecEvent::Stdout(b) => {
                    offset += b.len() as u64;
                    seen += 1;
                }
                ExecEvent::Exit(s) => bail!("the ticker exited: {s:?}"),
                _ => {}
            }
        }
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            let c = Client::connect(&d.url, &d.token).await?;
            let mut resumed = c.attach(&id, [offset, 0]).await?;
            loop {
                match resumed.next().await.context("the resumed events ended")?? {
                    ExecEvent::Stdout(_) => break,
                    ExecEvent::Exit(s) => bail!("the ticker exited: {s:?}"),
                    _ => {}
                }
            }
            samples.push(t.elapsed());
        }
        Latency::of(samples).context("no samples")
    }
    .await;
    let _ = client.kill(&id).await;
    result
}
