//! The spawn floor, shared by `tether-bench` and the `client_figures` bin
//! (which includes this file by path): no dependency on the rest of the
//! crate.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// `Command::new("true").status()`, `n` times, on a blocking thread: the
/// time of each fork+exec+wait.
pub(crate) async fn spawn_true(n: usize) -> Result<Vec<Duration>> {
    tokio::task::spawn_blocking(move || -> Result<Vec<Duration>> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            let status = std::process::Command::new("true").status()?;
            out.push(t.elapsed());
            if !status.success() {
                bail!("`true` failed: {status}");
            }
        }
        Ok(out)
    })
    .await?
}
