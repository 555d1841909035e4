//! Prometheus text exposition for `/metrics`, hand-written: a few counters and one histogram do
//! not justify a metrics framework.
//!
//! Every request updates a counter, so the labelled families live in [`Family`]: a fixed table
//! of write-once slots found by hashing the labels. An update is a hash, an atomic load and an
//! atomic add, with no lock shared by all requests (before, every request took one global
//! mutex and scanned the whole map under it).

use std::fmt::Write as _;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use crate::store::StoreStats;

/// Upper bounds (seconds) of the upstream latency histogram: LLM calls range from
/// milliseconds (embeddings, local models) to minutes (long generations).
const LATENCY_BUCKETS: [f64; 14] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];

/// Label sets a family holds without a lock. Labels are configuration names (endpoints,
/// providers, result classes), so real sets are a few hundred at most; past this they go to
/// the family's locked overflow list and are still counted.
const SLOTS: usize = 1024;

#[derive(Default)]
struct Histogram {
    /// Observations per bucket (not cumulative: one add per observation; rendering sums them).
    counts: [AtomicU64; LATENCY_BUCKETS.len()],
    /// The sum of observed seconds, as `f64` bits.
    sum_bits: AtomicU64,
    /// Observations in all buckets, for `_count`.
    total: AtomicU64,
}

impl Histogram {
    fn observe(&self, seconds: f64) {
        if let Some(bucket) = LATENCY_BUCKETS.iter().position(|bound| seconds <= *bound)
            && let Some(count) = self.counts.get(bucket)
        {
            count.fetch_add(1, Ordering::Relaxed);
        }
        // The closure always returns Some, so the update cannot fail.
        let _ = self.sum_bits.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
            Some((f64::from_bits(bits) + seconds).to_bits())
        });
        self.total.fetch_add(1, Ordering::Relaxed);
    }
}

/// Values by label set, updated concurrently without a shared lock: open addressing over
/// write-once slots. A slot, once claimed for a label set, keeps it for the process's life.
struct Family<K, V> {
    /// Open-addressed by the label set's hash; a full table falls back to `overflow`.
    slots: Box<[OnceLock<(K, V)>]>,
    /// Label sets that found no free slot (never expected; kept so nothing goes uncounted).
    overflow: Mutex<Vec<(K, V)>>,
}

impl<K: Ord + Clone, V: Default> Default for Family<K, V> {
    fn default() -> Self {
        Self { slots: (0..SLOTS).map(|_| OnceLock::new()).collect(), overflow: Mutex::new(Vec::new()) }
    }
}

impl<K: Ord + Clone, V: Default> Family<K, V> {
    /// Runs `update` on the value for the label set that `is` recognises (hashing to `hash`),
    /// creating it with `make` the first time. Allocates only on that first time.
    fn with(&self, hash: u64, is: impl Fn(&K) -> bool, make: impl Fn() -> K, update: impl Fn(&V)) {
        let start = usize::try_from(hash % SLOTS as u64).unwrap_or(0);
        for i in 0..SLOTS {
            let Some(slot) = self.slots.get((start + i) % SLOTS) else { break };
            // An empty slot is claimed for this label set; if another thread claims it first
            // (perhaps for another label set), this returns theirs and the probe goes on.
            let (key, value) = slot.get_or_init(|| (make(), V::default()));
            if is(key) {
                update(value);
                return;
            }
        }
        let mut overflow = lock(&self.overflow);
        match overflow.iter().find(|(k, _)| is(k)) {
            Some((_, v)) => update(v),
            None => {
                let value = V::default();
                update(&value);
                overflow.push((make(), value));
            }
        }
    }

    /// Renders each label set with `line`, sorted by labels so the exposition is stable.
    fn render(&self, mut line: impl FnMut(&K, &V)) {
        let overflow = lock(&self.overflow);
        let mut entries: Vec<&(K, V)> = self.slots.iter().filter_map(OnceLock::get).chain(overflow.iter()).collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        for (k, v) in entries {
            line(k, v);
        }
    }
}

fn hash_of(parts: impl Hash) -> u64 {
    let mut h = DefaultHasher::new();
    parts.hash(&mut h);
    h.finish()
}

#[derive(Default)]
pub struct Metrics {
    /// (endpoint, provider, cache result) → requests answered.
    requests: Family<(&'static str, String, &'static str), AtomicU64>,
    /// (provider, failure class) → failed upstream attempts.
    upstream_failures: Family<(String, &'static str), AtomicU64>,
    /// Provider → time to a complete upstream answer.
    upstream_latency: Family<String, Histogram>,
    /// Store reads or writes that failed (the request went on without the store).
    store_errors: AtomicU64,
    /// Streams from upstream that ended before completing (never stored).
    streams_interrupted: AtomicU64,
    /// Streams that broke mid-answer and were completed by another target.
    streams_rescued: AtomicU64,
    /// Requests refused at the edge because `limits.max_in_flight` were being answered.
    requests_shed: AtomicU64,
    /// Requests refused at the edge for a missing or unknown client key (`[clients]`).
    requests_unauthorized: AtomicU64,
    /// Answers relayed but not stored because they exceeded `max_response_bytes`.
    answers_too_large: AtomicU64,
    /// The last hour of answered requests per second, by cache result, for the dashboard.
    pub recent: crate::telemetry::rates::RecentRates,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Counters stay meaningful even if a thread panicked while holding the lock.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn add_one(n: &AtomicU64) {
    n.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    pub fn count_request(&self, endpoint: &'static str, provider: &str, cache: &'static str) {
        self.recent.count(cache);
        self.requests.with(
            hash_of((endpoint, provider, cache)),
            |(e, p, c)| *e == endpoint && p == provider && *c == cache,
            || (endpoint, provider.to_owned(), cache),
            add_one,
        );
    }

    pub fn count_upstream_failure(&self, provider: &str, class: &'static str) {
        self.upstream_failures.with(
            hash_of((provider, class)),
            |(p, c)| p == provider && *c == class,
            || (provider.to_owned(), class),
            add_one,
        );
    }

    pub fn observe_upstream_latency(&self, provider: &str, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        self.upstream_latency.with(
            hash_of(provider),
            |p| p == provider,
            || provider.to_owned(),
            |h| h.observe(seconds),
        );
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
        self.requests.render(|(endpoint, provider, cache), n| {
            let _ = writeln!(
                out,
                "holdfast_requests_total{{endpoint=\"{endpoint}\",provider=\"{}\",cache=\"{cache}\"}} {}",
                escape(provider),
                n.load(Ordering::Relaxed)
            );
        });
        out.push_str("# HELP holdfast_upstream_failures_total Failed upstream attempts, by provider and class.\n");
        out.push_str("# TYPE holdfast_upstream_failures_total counter\n");
        self.upstream_failures.render(|(provider, class), n| {
            let _ = writeln!(
                out,
                "holdfast_upstream_failures_total{{provider=\"{}\",class=\"{class}\"}} {}",
                escape(provider),
                n.load(Ordering::Relaxed)
            );
        });
        out.push_str("# HELP holdfast_upstream_latency_seconds Time to a complete upstream answer.\n");
        out.push_str("# TYPE holdfast_upstream_latency_seconds histogram\n");
        self.upstream_latency.render(|provider, h| {
            let p = escape(provider);
            let mut cumulative = 0;
            for (bound, count) in LATENCY_BUCKETS.iter().zip(&h.counts) {
                cumulative += count.load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "holdfast_upstream_latency_seconds_bucket{{provider=\"{p}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let (total, sum) = (h.total.load(Ordering::Relaxed), f64::from_bits(h.sum_bits.load(Ordering::Relaxed)));
            let _ = writeln!(out, "holdfast_upstream_latency_seconds_bucket{{provider=\"{p}\",le=\"+Inf\"}} {total}");
            let _ = writeln!(out, "holdfast_upstream_latency_seconds_sum{{provider=\"{p}\"}} {sum}");
            let _ = writeln!(out, "holdfast_upstream_latency_seconds_count{{provider=\"{p}\"}} {total}");
        });
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

/// Label values are configuration names, but escape anyway so a name can never break the format.
pub fn escape(s: &str) -> String {
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

    #[test]
    fn label_sets_beyond_the_lock_free_table_are_still_counted_in_order() {
        let m = Metrics::default();
        for i in 0..SLOTS + 10 {
            m.count_request("/v1/messages", &format!("p{i:05}"), "hit");
        }
        m.count_request("/v1/messages", "p00003", "hit");
        m.count_request("/v1/messages", &format!("p{:05}", SLOTS + 5), "hit");
        let text = m.render(&StoreStats { entries: 0, bytes: 0, disk_bytes: 0, tampered: 0, lost: 0 });
        let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("holdfast_requests_total")).collect();
        assert_eq!(lines.len(), SLOTS + 10);
        assert!(text.contains("provider=\"p00003\",cache=\"hit\"} 2"));
        assert!(text.contains(&format!("provider=\"p{:05}\",cache=\"hit\"}} 2", SLOTS + 5)));
        assert!(lines.first().is_some_and(|l| l.contains("p00000")), "{:?}", lines.first());
    }

    #[test]
    fn concurrent_updates_are_all_counted() {
        let m = std::sync::Arc::new(Metrics::default());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let m = m.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000 {
                        m.count_request("/v1/chat/completions", if i % 2 == 0 { "a" } else { "b" }, "hit");
                        m.observe_upstream_latency(&format!("p{t}"), Duration::from_millis(1));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let text = m.render(&StoreStats { entries: 0, bytes: 0, disk_bytes: 0, tampered: 0, lost: 0 });
        assert!(text.contains("provider=\"a\",cache=\"hit\"} 20000"), "{text}");
        assert!(text.contains("provider=\"b\",cache=\"hit\"} 20000"), "{text}");
        assert!(text.contains("holdfast_upstream_latency_seconds_count{provider=\"p3\"} 10000"), "{text}");
        assert!(text.contains("holdfast_upstream_latency_seconds_bucket{provider=\"p3\",le=\"0.005\"} 10000"));
    }
}
