//! Operations from concurrent tasks (one-shot requests, raw spawns),
//! timed one by one and counted per second of wall time, over several runs.

use std::future::Future;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::task::JoinSet;

use super::{cpu_now, cpu_since};
use crate::procs::Daemon;
use crate::report::{Latency, Row, failed, fmt_dur};

/// One `true`: fork + exec + wait, stdio on /dev/null.
pub(crate) async fn spawn_true() -> Result<()> {
    let status = tokio::process::Command::new("true")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .context("spawning `true`")?;
    if !status.success() {
        bail!("`true` failed: {status}");
    }
    Ok(())
}

/// One run of many operations from concurrent tasks.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Concurrent {
    /// Operations per second of wall time.
    pub(crate) per_sec: f64,
    /// Wall time from the first start to the last end.
    pub(crate) wall: Duration,
    /// Each operation's own duration.
    pub(crate) lat: Latency,
    /// CPU time of the daemon and of this process during the run, when a
    /// daemon was given.
    pub(crate) cpu: Option<(Duration, Duration)>,
}

/// `warmup` untimed operations, then `n` timed ones, each time from
/// `clients` tasks at once; each task takes the next operation until none
/// is left and runs one at a time. CPU is measured for `d` when given.
pub(crate) async fn concurrent<F, Fut>(
    clients: usize,
    n: usize,
    warmup: usize,
    d: Option<&Daemon>,
    op: F,
) -> Result<Concurrent>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    in_tasks(clients, warmup, op.clone()).await?;
    let cpu0 = d.map(cpu_now);
    let t = Instant::now();
    let samples = in_tasks(clients, n, op).await?;
    let wall = t.elapsed();
    let cpu = d.zip(cpu0).and_then(|(d, c)| cpu_since(d, c));
    let count = samples.len();
    Ok(Concurrent {
        per_sec: count as f64 / wall.as_secs_f64().max(1e-9),
        wall,
        lat: Latency::of(samples).context("no samples")?,
        cpu,
    })
}

/// Runs `op` `n` times in all from `clients` tasks; each call's duration.
/// The first failure ends the run (the other tasks are aborted with the
/// `JoinSet`).
async fn in_tasks<F, Fut>(clients: usize, n: usize, op: F) -> Result<Vec<Duration>>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for _ in 0..clients.max(1) {
        let (next, op) = (next.clone(), op.clone());
        tasks.spawn(async move {
            let mut samples = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let t = Instant::now();
                op().await?;
                samples.push(t.elapsed());
            }
            anyhow::Ok(samples)
        });
    }
    let mut all = Vec::with_capacity(n);
    while let Some(r) = tasks.join_next().await {
        all.extend(r.context("a client task failed")??);
    }
    Ok(all)
}

/// Several runs of a concurrent measurement.
#[derive(Clone, Copy, Debug)]
pub(super) struct Rates {
    /// The run with the median rate.
    pub(super) median: Concurrent,
    /// The slowest run's rate.
    pub(super) min: f64,
    /// The fastest run's rate.
    pub(super) max: f64,
    /// How many runs.
    pub(super) count: usize,
}

/// Runs `run` `count` times, one after the other; any failure fails all.
pub(super) async fn repeat_rates<F, Fut>(count: usize, mut run: F) -> Result<Rates>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Concurrent>>,
{
    let mut runs = Vec::with_capacity(count);
    for _ in 0..count.max(1) {
        runs.push(run().await?);
    }
    runs.sort_by(|a, b| a.per_sec.total_cmp(&b.per_sec));
    let median = runs[runs.len() / 2];
    Ok(Rates { median, min: runs[0].per_sec, max: runs[runs.len() - 1].per_sec, count: runs.len() })
}

/// A rate row: the median run's latency percentiles and rate.
pub(super) fn rate_row(
    section: &'static str,
    what: &str,
    r: &Result<Rates>,
    unit: &str,
    extra: String,
) -> Row {
    match r {
        Ok(rates) => {
            let m = rates.median;
            let mut notes = format!(
                "median run: {} {unit} in {} (p50/p99 are its {unit}); range {:.0}-{:.0}/s over {} runs",
                m.lat.n,
                fmt_dur(m.wall),
                rates.min,
                rates.max,
                rates.count
            );
            if let Some((daemon, client)) = m.cpu {
                notes.push_str(&format!(
                    "; CPU in that run: daemon {}, bench client {}",
                    fmt_dur(daemon),
                    fmt_dur(client)
                ));
            }
            notes.push_str("; ");
            notes.push_str(&extra);
            Row::new(section, what)
                .latency(&m.lat)
                .samples(format!("{} x {}", rates.count, m.lat.n))
                .result(format!("{:.0} {unit}/s", m.per_sec))
                .notes(notes)
        }
        Err(e) => Row::new(section, what).result(failed(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tasks_run_each_operation_once() -> Result<()> {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let op = move || {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        };
        let samples = in_tasks(4, 103, op).await?;
        assert_eq!(samples.len(), 103);
        assert_eq!(calls.load(Ordering::Relaxed), 103);
        Ok(())
    }

    #[tokio::test]
    async fn a_failing_operation_fails_the_run() {
        let op = || async { bail!("no") };
        assert!(in_tasks(3, 10, op).await.is_err());
    }
}
