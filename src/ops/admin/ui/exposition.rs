//! The latency histogram and failure counts for the Now page, read back from the same
//! Prometheus exposition `/metrics` serves: the dashboard then can never disagree with what
//! Prometheus scrapes, and the metrics code needs no second way to be read.

use std::collections::BTreeMap;

use serde::Serialize;

/// One sample line: `name{label="value",…} number`.
struct Sample<'a> {
    /// The metric's name, with any `_bucket`/`_sum`/`_count` suffix.
    name: &'a str,
    /// Its labels, in the order written.
    labels: Vec<(&'a str, String)>,
    /// The number after them.
    value: f64,
}

impl Sample<'_> {
    fn label(&self, name: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }
}

/// Parses one line; comments, blank lines and anything malformed are `None`.
fn sample(line: &str) -> Option<Sample<'_>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (name, rest) = match line.find('{') {
        Some(open) => (line.get(..open)?, line.get(open + 1..)?),
        None => {
            let (name, value) = line.split_once(' ')?;
            return Some(Sample { name, labels: Vec::new(), value: number(value)? });
        }
    };
    let mut labels = Vec::new();
    let mut rest = rest;
    loop {
        rest = rest.trim_start_matches([',', ' ']);
        if let Some(after) = rest.strip_prefix('}') {
            return Some(Sample { name, labels, value: number(after)? });
        }
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((key.trim(), value));
        rest = after.get(end + 1..)?;
    }
}

/// The value of a sample (a timestamp after it is ignored).
fn number(text: &str) -> Option<f64> {
    let value = text.split_whitespace().next()?;
    match value {
        "+Inf" => Some(f64::INFINITY),
        other => other.parse().ok(),
    }
}

/// One provider's upstream latency: per-bucket (not cumulative) counts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LatencyHistogram {
    /// Upper bounds in seconds, ascending; the last bucket (`+Inf`) is the overflow.
    pub bounds: Vec<f64>,
    /// Answers whose latency fell in each bucket, `bounds.len() + 1` of them.
    pub counts: Vec<u64>,
    /// All answers measured: the page's denominator.
    pub count: u64,
    /// Their latencies added up, for the mean.
    pub sum_secs: f64,
}

/// What the Now page reads out of the exposition.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Readout {
    /// Provider → its latency histogram.
    pub latency: BTreeMap<String, LatencyHistogram>,
    /// Provider → failure class → failed upstream attempts since start.
    pub failures: BTreeMap<String, BTreeMap<String, u64>>,
}

pub fn read(exposition: &str) -> Readout {
    let mut cumulative: BTreeMap<String, Vec<(f64, u64)>> = BTreeMap::new();
    let mut readout = Readout::default();
    for s in exposition.lines().filter_map(sample) {
        let Some(provider) = s.label("provider").map(str::to_owned) else { continue };
        let whole = s.value.max(0.0) as u64;
        match s.name {
            "holdfast_upstream_latency_seconds_bucket" => {
                if let Some(le) = s.label("le").and_then(number) {
                    cumulative.entry(provider).or_default().push((le, whole));
                }
            }
            "holdfast_upstream_latency_seconds_count" => readout.latency.entry(provider).or_default().count = whole,
            "holdfast_upstream_latency_seconds_sum" => readout.latency.entry(provider).or_default().sum_secs = s.value,
            "holdfast_upstream_failures_total" | "holdfast_upstream_failures" => {
                let class = s.label("class").unwrap_or("other").to_owned();
                *readout.failures.entry(provider).or_default().entry(class).or_default() += whole;
            }
            _ => {}
        }
    }
    for (provider, mut buckets) in cumulative {
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let histogram = readout.latency.entry(provider).or_default();
        let mut below = 0;
        for (bound, count) in buckets {
            if bound.is_finite() {
                histogram.bounds.push(bound);
            }
            histogram.counts.push(count.saturating_sub(below));
            below = below.max(count);
        }
    }
    readout
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_histogram_and_failures_that_metrics_renders() {
        let m = crate::telemetry::metrics::Metrics::default();
        m.observe_upstream_latency("open\"ai", std::time::Duration::from_millis(300));
        m.observe_upstream_latency("open\"ai", std::time::Duration::from_millis(40));
        m.observe_upstream_latency("open\"ai", std::time::Duration::from_secs(500));
        m.count_upstream_failure("open\"ai", "5xx");
        m.count_upstream_failure("open\"ai", "5xx");
        let text = m.render(&crate::store::StoreStats::default());
        let readout = read(&text);
        let h = &readout.latency["open\"ai"];
        assert_eq!(h.count, 3);
        assert_eq!(h.counts.len(), h.bounds.len() + 1);
        assert_eq!(h.counts.iter().sum::<u64>(), 3, "{h:?}");
        let at = |bound: f64| h.bounds.iter().position(|b| (*b - bound).abs() < 1e-9).map(|i| h.counts[i]);
        assert_eq!(at(0.05), Some(1));
        assert_eq!(at(0.5), Some(1));
        assert_eq!(h.counts.last(), Some(&1), "500 s is past the last bound");
        assert_eq!(readout.failures["open\"ai"]["5xx"], 2);
    }

    #[test]
    fn malformed_lines_are_skipped() {
        for line in ["x{", "x{a=\"1\"", "x{a=\"1\"} notanumber", "{}", "x{a=1} 2"] {
            assert!(sample(line).is_none(), "{line}");
        }
        let s = sample("x{a=\"q\\\"uote\",b=\"2\"} 7 1700000000").unwrap();
        assert_eq!((s.name, s.label("a"), s.label("b"), s.value), ("x", Some("q\"uote"), Some("2"), 7.0));
    }
}
