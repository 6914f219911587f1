//! The chaos matrix's fault proxy as a program, for the tests written in
//! other languages (the browser's, the Python clients'):
//!
//! ```text
//! tether-faultproxy 127.0.0.1:7070
//! listening on 127.0.0.1:40123
//! ```
//!
//! then one command per line on stdin, each answered by one line on stdout:
//! `reset` (RST every open connection), `refuse` (reset new connections),
//! `freeze` (no byte passes, nothing closes), `freeze-replies` (requests
//! pass, replies do not), `restore` (forward again),
//! `stats` (a JSON object: `accepted`, `refused`, `resets`, `mode`, and
//! `reconnected_ms`, the time from the last `restore` to the first
//! daemon-to-client byte on a new connection, or null). EOF ends it.
#![allow(clippy::unwrap_used)]

use std::io::Write;

use tether_testkit::{FaultProxy, ProxyMode};
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let upstream =
        std::env::args().nth(1).ok_or_else(|| anyhow::anyhow!("usage: tether-faultproxy HOST:PORT"))?;
    let upstream = upstream.trim_start_matches("http://").parse()?;
    let proxy = FaultProxy::start(upstream).await;
    let out = |line: String| {
        let mut o = std::io::stdout().lock();
        let _ = writeln!(o, "{line}").and_then(|()| o.flush());
    };
    out(format!("listening on {}", proxy.addr));
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let reply = match line.trim() {
            "reset" => {
                proxy.reset_all();
                "ok".to_owned()
            }
            "refuse" => {
                proxy.refuse();
                "ok".to_owned()
            }
            "freeze" => {
                proxy.freeze();
                "ok".to_owned()
            }
            "freeze-replies" => {
                proxy.freeze_replies();
                "ok".to_owned()
            }
            "restore" => {
                proxy.restore();
                "ok".to_owned()
            }
            "stats" => serde_json::json!({
                "accepted": proxy.accepted(),
                "refused": proxy.refused(),
                "resets": proxy.resets(),
                "mode": match proxy.mode() {
                    ProxyMode::Forward => "forward",
                    ProxyMode::Refuse => "refuse",
                    ProxyMode::Freeze => "freeze",
                    ProxyMode::FreezeReplies => "freeze-replies",
                },
                "reconnected_ms": proxy.reconnected_after().map(|d| d.as_secs_f64() * 1000.0),
            })
            .to_string(),
            "" => continue,
            other => format!("error: unknown command {other:?}"),
        };
        out(reply);
    }
    Ok(())
}
