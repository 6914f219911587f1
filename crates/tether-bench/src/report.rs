//! Rows of the results table, the row builders the groups share (latency,
//! throughput, failure), latency statistics and number formatting.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Result;

use crate::throughput::Runs;

/// One line of the results table. Every cell is already formatted; a
/// measurement that could not run says why in `result`.
#[derive(Clone, Debug, Default)]
pub(crate) struct Row {
    /// Which section of the table (1..=7).
    pub(crate) section: &'static str,
    /// What was measured.
    pub(crate) what: String,
    /// How many samples (or bytes, commands, connections).
    pub(crate) samples: String,
    /// Median latency, for latency rows.
    pub(crate) p50: String,
    /// 99th-percentile latency, for latency rows.
    pub(crate) p99: String,
    /// The headline number (MiB/s, KiB per command, met/missed...).
    pub(crate) result: String,
    /// Anything a reader needs to interpret the row.
    pub(crate) notes: String,
}

impl Row {
    /// A row with the section and description filled in.
    pub(crate) fn new(section: &'static str, what: impl Into<String>) -> Row {
        Row { section, what: what.into(), ..Row::default() }
    }

    /// Builder-style setter for the sample count.
    pub(crate) fn samples(mut self, s: impl Into<String>) -> Row {
        self.samples = s.into();
        self
    }

    /// Builder-style setter for the headline result.
    pub(crate) fn result(mut self, s: impl Into<String>) -> Row {
        self.result = s.into();
        self
    }

    /// Builder-style setter for the notes.
    pub(crate) fn notes(mut self, s: impl Into<String>) -> Row {
        self.notes = s.into();
        self
    }

    /// Fills p50/p99 from latency samples and puts the mean in `result`.
    pub(crate) fn latency(mut self, l: &Latency) -> Row {
        self.samples = l.n.to_string();
        self.p50 = fmt_dur(l.p50);
        self.p99 = fmt_dur(l.p99);
        self.result = format!("mean {}", fmt_dur(l.mean));
        self
    }
}

/// Summary of latency samples.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Latency {
    /// Number of samples.
    pub(crate) n: usize,
    /// Median (nearest rank).
    pub(crate) p50: Duration,
    /// 99th percentile (nearest rank).
    pub(crate) p99: Duration,
    /// Arithmetic mean.
    pub(crate) mean: Duration,
    /// The slowest sample.
    pub(crate) max: Duration,
}

impl Latency {
    /// Summarises samples; `None` for an empty set.
    pub(crate) fn of(mut samples: Vec<Duration>) -> Option<Latency> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let n = samples.len();
        // Nearest-rank percentile: the smallest sample with at least p% of
        // the samples at or below it.
        let rank = |p: f64| samples[((p * n as f64).ceil() as usize).clamp(1, n) - 1];
        let total: Duration = samples.iter().sum();
        Some(Latency { n, p50: rank(0.50), p99: rank(0.99), mean: total / n as u32, max: samples[n - 1] })
    }
}

/// The result cell of a measurement that failed or timed out.
pub(crate) fn failed(e: &anyhow::Error) -> String {
    format!("FAILED: {e:#}")
}

/// A latency row: p50/p99, and max and mean as the result.
pub(crate) fn lat_row(section: &'static str, what: &str, r: &Result<Latency>, notes: String) -> Row {
    match r {
        Ok(l) => Row::new(section, what)
            .latency(l)
            .result(format!("max {}; mean {}", fmt_dur(l.max), fmt_dur(l.mean)))
            .notes(notes),
        Err(e) => Row::new(section, what).result(failed(e)),
    }
}

/// A throughput row of section `section`: the median run's MiB/s.
pub(crate) fn tp_row(section: &'static str, what: &str, n: u64, r: &Result<Runs>, extra: &str) -> Row {
    let row = Row::new(section, what);
    match r {
        Ok(runs) => {
            let t = runs.median;
            let mut notes = format!(
                "median run: {} in {}; range {:.0}-{:.0} MiB/s",
                fmt_bytes(t.bytes),
                fmt_dur(t.elapsed),
                runs.min,
                runs.max
            );
            if let Some((daemon, client)) = t.cpu {
                notes.push_str(&format!(
                    "; CPU in that run: daemon {}, bench client {}",
                    fmt_dur(daemon),
                    fmt_dur(client)
                ));
            }
            if runs.lost > 0 {
                notes.push_str(&format!(
                    "; {} LOST in gaps over the {} runs",
                    fmt_bytes(runs.lost),
                    runs.count
                ));
            }
            if !extra.is_empty() {
                notes.push_str("; ");
                notes.push_str(extra);
            }
            row.samples(format!("{} x {}", runs.count, fmt_bytes(n)))
                .result(format!("{:.0} MiB/s", t.rate()))
                .notes(notes)
        }
        Err(e) => row.samples(fmt_bytes(n)).result(failed(e)),
    }
}

/// `812 µs`, `1.23 ms`, `2.50 s`.
pub(crate) fn fmt_dur(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else if us < 1e6 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

/// `1 GiB`, `256 MiB`, `12345 B`.
pub(crate) fn fmt_bytes(n: u64) -> String {
    const KIB: u64 = 1 << 10;
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    // Written without `is_multiple_of`, which is newer than the workspace's
    // rust-version.
    let whole = |unit: u64| n >= unit && n / unit * unit == n;
    if whole(GIB) {
        format!("{} GiB", n / GIB)
    } else if whole(MIB) {
        format!("{} MiB", n / MIB)
    } else if n >= MIB {
        format!("{:.1} MiB", n as f64 / MIB as f64)
    } else if n >= KIB {
        format!("{:.1} KiB", n as f64 / KIB as f64)
    } else {
        format!("{n} B")
    }
}

/// Bytes per second as MiB/s.
pub(crate) fn mib_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1u64 << 20) as f64 / d.as_secs_f64().max(1e-9)
}

/// Renders the rows as a GitHub-flavoured markdown table.
pub(crate) fn render(rows: &[Row]) -> String {
    let mut out = String::new();
    out.push_str("| # | measurement | samples | p50 | p99 | result | notes |\n");
    out.push_str("|---|---|---|---|---|---|---|\n");
    for r in rows {
        let cells = [r.section, &r.what, &r.samples, &r.p50, &r.p99, &r.result, &r.notes];
        out.push('|');
        for c in cells {
            // A `|` inside a cell would end it early.
            let c = if c.is_empty() { "-" } else { c };
            let _ = write!(out, " {} |", c.replace('|', "\\|").replace('\n', " "));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let samples = (1..=100).map(Duration::from_millis).collect();
        let l = Latency::of(samples).expect("non-empty");
        assert_eq!(l.p50, Duration::from_millis(50));
        assert_eq!(l.p99, Duration::from_millis(99));
        assert_eq!(l.max, Duration::from_millis(100));
        assert_eq!(l.n, 100);
    }

    #[test]
    fn bytes_are_human_readable() {
        assert_eq!(fmt_bytes(1 << 30), "1 GiB");
        assert_eq!(fmt_bytes(256 << 20), "256 MiB");
        assert_eq!(fmt_bytes(1536), "1.5 KiB");
    }

    #[test]
    fn pipes_in_cells_are_escaped() {
        let t = render(&[Row::new("1", "a | b")]);
        assert!(t.contains("a \\| b"));
    }
}
