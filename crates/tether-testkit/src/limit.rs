//! Upper bounds for every wait in a test: a test that hangs fails with a
//! message instead of holding up the whole run.

use std::future::Future;
use std::process::Child;
use std::time::{Duration, Instant};

/// Every test's upper bound.
pub const LIMIT: Duration = Duration::from_secs(60);

/// Bounds a future by [`LIMIT`].
pub async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(LIMIT, f).await.expect("test step finished within the limit")
}

/// Bounds a future by `limit` (suites with a tighter bound than
/// [`LIMIT`]); `what` names the step in the failure.
pub async fn within<F: Future>(limit: Duration, what: &str, f: F) -> F::Output {
    tokio::time::timeout(limit, f).await.unwrap_or_else(|_| panic!("{what}: not within {limit:?}"))
}

/// Polls `f` every 10 ms until it holds; fails the test after [`LIMIT`].
pub async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < LIMIT, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits for a child process to exit, failing the test after [`LIMIT`].
pub fn wait_bounded(child: &mut Child) {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(start.elapsed() < LIMIT, "CLI command did not finish within {LIMIT:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}
