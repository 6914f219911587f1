//! What the exec suites (`manager`, `handover`, `shells`) share: a manager
//! as the daemon makes it, and readers of a subscription that stop at its
//! exit or at a marker in its output, each bounded by the caller's limit.
//! They need exec's own types, so they live here rather than in
//! `tether-testkit` (which exec dev-depends on).
#![allow(dead_code)]

use std::time::Duration;

use tether_exec::{Event, ExitInfo, Manager, ManagerConfig, Stream, Subscription};
use tether_testkit::within;

/// A manager with the default configuration, reaping orphans as the
/// daemon's does.
pub(crate) fn manager() -> Manager {
    Manager::new(ManagerConfig::default(), true)
}

/// Reads a subscription to its exit, returning (stdout, stderr, exit). A
/// gap fails the test.
pub(crate) async fn collect(mut sub: Subscription, limit: Duration) -> (Vec<u8>, Vec<u8>, ExitInfo) {
    let fut = async {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        while let Some(ev) = sub.next(1 << 20).await {
            match ev {
                Event::Output { stream: Stream::Stdout, data, .. } => out.extend_from_slice(&data),
                Event::Output { stream: Stream::Stderr, data, .. } => err.extend_from_slice(&data),
                Event::Gap { .. } => panic!("unexpected gap"),
                Event::Resized(_) => {}
                Event::Exit(e) => return (out, err, e),
            }
        }
        panic!("subscription ended without exit");
    };
    within(limit, "the command finished", fut).await
}

/// Reads output (both streams) into `out` until it contains `want`.
pub(crate) async fn read_until(sub: &mut Subscription, out: &mut Vec<u8>, want: &str, limit: Duration) {
    read_until_after(sub, out, "", want, limit).await;
}

/// Reads output (both streams) into `out` until `want` comes after
/// `first`. An exit before that fails the test.
pub(crate) async fn read_until_after(
    sub: &mut Subscription,
    out: &mut Vec<u8>,
    first: &str,
    want: &str,
    limit: Duration,
) {
    let done = |seen: &[u8]| {
        let text = String::from_utf8_lossy(seen);
        text.find(first).is_some_and(|i| text[i + first.len()..].contains(want))
    };
    let fut = async {
        while !done(out) {
            match sub.next(64 * 1024).await {
                Some(Event::Output { data, .. }) => out.extend_from_slice(&data),
                Some(Event::Exit(e)) => {
                    panic!("exited ({e:?}) before {want:?}; output {:?}", String::from_utf8_lossy(out))
                }
                Some(_) => {}
                None => panic!("ended"),
            }
        }
    };
    if tokio::time::timeout(limit, fut).await.is_err() {
        panic!("no {want:?} in time; output {:?}", String::from_utf8_lossy(out));
    }
}
