//! Prometheus text exposition for `/metrics`, hand-written: a few counters and one histogram do
//! not justify a metrics framework.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::store::StoreStats;

/// Upper bounds (seconds) of the upstream latency histogram: LLM calls range from
/// milliseconds (embeddings, local models) to minutes (long generations).
const LATENCY_BUCKETS: [f64; 14] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];

#[derive(Default)]
struct Histogram {
    counts: [u64; LATENCY_BUCKETS.len()],
    sum: f64,
    total: u64,
}

#[derive(Default)]
pub struct Metrics {
    /// (endpoint, provider, cache result) → requests answered.
    requests: Mutex<BTreeMap<(&'static str, String, &'static str), u64>>,
    /// (provider, failure class) → failed upstream attempts.
    upstream_failures: Mutex<BTreeMap<(String, &'static str), u64>>,
    upstream_latency: Mutex<BTreeMap<String, Histogram>>,
    /// Store reads or writes that failed (the request went on without the store).
    store_errors: AtomicU64,
    /// Streams from upstream that ended before completing (never stored).
    streams_interrupted: AtomicU64,
    streams_rescued: AtomicU64,
    /// Requests refused at the edge because `limits.max_in_flight` were being answered.
    requests_shed: AtomicU64,
    /// Requests refused at the edge for a missing or unknown client key (`[clients]`).
    requests_unauthorized: AtomicU64,
    /// Answers relayed but not stored because they exceeded `max_response_bytes`.
    answers_too_large: AtomicU64,
    /// The last hour of answered requests per second, by cache result, for the dashboard.
    pub recent: crate::admin::ui::rates::RecentRates,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Counters stay meaningful even if a thread panicked while holding the lock.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Metrics {
    pub fn count_request(&self, endpoint: &'static str, provider: &str, cache: &'static str) {
        self.recent.count(cache);
        let mut requests = lock(&self.requests);
        // Look up by borrowed parts first: the hot path then allocates nothing.
        match requests.iter_mut().find(|((e, p, c), _)| *e == endpoint && p == provider && *c == cache) {
            Some((_, n)) => *n += 1,
            None => {
                requests.insert((endpoint, provider.to_owned(), cache), 1);
            }
        }
    }

    pub fn count_upstream_failure(&self, provider: &str, class: &'static str) {
        *lock(&self.upstream_failures).entry((provider.to_owned(), class)).or_insert(0) += 1;
    }

    pub fn observe_upstream_latency(&self, provider: &str, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let mut map = lock(&self.upstream_latency);
        let h = map.entry(provider.to_owned()).or_default();
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                h.counts[i] += 1;
            }
        }
        h.sum += seconds;
        h.total += 1;
    }

    pub fn count_store_error(&self) {
        self.store_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_stream_interrupted(&self) {
        self.streams_interrupted.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_stream_rescued(&self) {
        self.streams_rescued.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_shed(&self) {
        self.requests_shed.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_unauthorized(&self) {
        self.requests_unauthorized.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_answer_too_large(&self) {
        self.answers_too_large.fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(&self, store: &StoreStats) -> String {
        let mut out = String::with_capacity(4096);
        out.push_str("# HELP holdfast_requests_total Requests answered, by endpoint, provider and cache result.\n");
        out.push_str("# TYPE holdfast_requests_total counter\n");
        for ((endpoint, provider, cache), n) in lock(&self.requests).iter() {
            let _ = writeln!(
                out,
                "holdfast_requests_total{{endpoint=\"{endpoint}\",provider=\"{}\",cache=\"{cache}\"}} {n}",
                escape(provider)
            );
        }
        out.push_str("# HELP holdfast_upstream_failures_total Failed upstream attempts, by provider and class.\n");
        out.push_str("# TYPE holdfast_upstream_failures_total counter\n");
        for ((provider, class), n) in lock(&self.upstream_failures).iter() {
            let _ = writeln!(
                out,
                "holdfast_upstream_failures_total{{provider=\"{}\",class=\"{class}\"}} {n}",
                escape(provider)
            );
        }
        out.push_str("# HELP holdfast_upstream_latency_seconds Time to a complete upstream answer.\n");
        out.push_str("# TYPE holdfast_upstream_latency_seconds histogram\n");
        for (provider, h) in lock(&self.upstream_latency).iter() {
            let p = escape(provider);
            for (bound, count) in LATENCY_BUCKETS.iter().zip(h.counts) {
                let _ = writeln!(
                    out,
                    "holdfast_upstream_latency_seconds_bucket{{provider=\"{p}\",le=\"{bound}\"}} {count}"
                );
            }
            let _ =
                writeln!(out, "holdfast_upstream_latency_seconds_bucket{{provider=\"{p}\",le=\"+Inf\"}} {}", h.total);
            let _ = writeln!(out, "holdfast_upstream_latency_seconds_sum{{provider=\"{p}\"}} {}", h.sum);
            let _ = writeln!(out, "holdfast_upstream_latency_seconds_count{{provider=\"{p}\"}} {}", h.total);
        }
        let gauges = [
            ("holdfast_store_entries", "gauge", "Entries in the store.", store.entries),
            ("holdfast_store_bytes", "gauge", "Bytes of sealed answers in the store.", store.bytes),
            ("holdfast_store_disk_bytes", "gauge", "Bytes the store occupies on disk.", store.disk_bytes),
            ("holdfast_store_tampered_total", "counter", "Stored entries that failed to open.", store.tampered),
            (
                "holdfast_store_lost_entries",
                "gauge",
                "Entries the store's integrity record expects but that are gone, as last checked.",
                store.lost,
            ),
            (
                "holdfast_store_errors_total",
                "counter",
                "Store reads or writes that failed.",
                self.store_errors.load(Ordering::Relaxed),
            ),
            (
                "holdfast_streams_interrupted_total",
                "counter",
                "Client streams that ended before completion (no target could continue them).",
                self.streams_interrupted.load(Ordering::Relaxed),
            ),
            (
                "holdfast_streams_rescued_total",
                "counter",
                "Streams that broke mid-answer and were completed by another target.",
                self.streams_rescued.load(Ordering::Relaxed),
            ),
            (
                "holdfast_requests_shed_total",
                "counter",
                "Requests refused with 503 because limits.max_in_flight were in flight.",
                self.requests_shed.load(Ordering::Relaxed),
            ),
            (
                "holdfast_requests_unauthorized_total",
                "counter",
                "Requests refused for a missing or unknown client key.",
                self.requests_unauthorized.load(Ordering::Relaxed),
            ),
            (
                "holdfast_answers_too_large_total",
                "counter",
                "Answers relayed but not stored because they exceeded max_response_bytes.",
                self.answers_too_large.load(Ordering::Relaxed),
            ),
        ];
        for (name, kind, help, value) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        }
        out
    }
}

/// Breaker states as gauges (0 closed, 1 half-open, 2 open) and transition counters.
pub fn render_breakers(statuses: &[crate::resilience::breaker::BreakerStatus]) -> String {
    use crate::resilience::breaker::State;
    let mut out = String::from(
        "# HELP holdfast_breaker_state Circuit breaker state: 0 closed, 1 half-open, 2 open.\n\
         # TYPE holdfast_breaker_state gauge\n",
    );
    for s in statuses {
        let value = match s.state {
            State::Closed => 0,
            State::HalfOpen => 1,
            State::Open => 2,
        };
        let _ = writeln!(out, "holdfast_breaker_state{{breaker=\"{}\"}} {value}", escape(&s.key));
    }
    out.push_str("# HELP holdfast_breaker_transitions_total Circuit breaker state changes.\n");
    out.push_str("# TYPE holdfast_breaker_transitions_total counter\n");
    for s in statuses {
        let _ = writeln!(out, "holdfast_breaker_transitions_total{{breaker=\"{}\"}} {}", escape(&s.key), s.transitions);
    }
    out
}

/// Label values are configuration names, but escape anyway so a name can never break the format.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histogram_and_store_gauges() {
        let m = Metrics::default();
        m.count_request("/v1/messages", "anthropic", "hit");
        m.count_request("/v1/messages", "anthropic", "hit");
        m.observe_upstream_latency("openai", Duration::from_millis(300));
        m.count_upstream_failure("openai", "5xx");
        let text = m.render(&StoreStats { entries: 3, bytes: 10, disk_bytes: 20, tampered: 1, lost: 0 });
        assert!(
            text.contains("holdfast_requests_total{endpoint=\"/v1/messages\",provider=\"anthropic\",cache=\"hit\"} 2")
        );
        assert!(text.contains("holdfast_upstream_latency_seconds_bucket{provider=\"openai\",le=\"0.25\"} 0"));
        assert!(text.contains("holdfast_upstream_latency_seconds_bucket{provider=\"openai\",le=\"0.5\"} 1"));
        assert!(text.contains("holdfast_store_entries 3") && text.contains("holdfast_store_tampered_total 1"));
        assert!(text.contains("holdfast_upstream_failures_total{provider=\"openai\",class=\"5xx\"} 1"));
    }
}
