//! Requests per second by cache result over the last hour, for the dashboard's chart, and the
//! share answered from the store since the current outage began.
//!
//! `/metrics` has only running totals; a chart needs their recent history, and Prometheus may
//! not be there (the dashboard must work on an air-gapped host with nothing else). So the
//! proxy counts every answered request once more into a ring of one-second slots.
//!
//! Each slot counter packs the second it belongs to (upper 32 bits) with its count (lower 32):
//! a counter left over from an hour ago is recognised by its stamp and restarted in the same
//! compare-and-swap, so counting takes no lock and never mixes two seconds.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// The cache results the chart shows, in its stacking order (`x-holdfast-cache`, plus `error`).
pub const RESULTS: [&str; 6] = ["hit", "stale", "coalesced", "miss", "bypass", "error"];
/// Results answered from the store, for the outage share.
const FROM_STORE: [&str; 2] = ["hit", "stale"];
/// How far back the ring reaches.
pub const HISTORY_SECS: u64 = 3600;

/// One-second counts for the last hour, and running totals, by cache result.
pub struct RecentRates {
    /// Second 0 of the ring's clock (monotonic: a wall-clock jump must not scramble the slots).
    epoch: Instant,
    /// `HISTORY_SECS` slots of one counter per result, each `stamp << 32 | count`.
    slots: Box<[[AtomicU64; RESULTS.len()]]>,
    /// Everything counted since start, for the share over an outage longer than the ring.
    totals: [AtomicU64; RESULTS.len()],
}

impl Default for RecentRates {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            slots: (0..HISTORY_SECS).map(|_| std::array::from_fn(|_| AtomicU64::new(0))).collect(),
            totals: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// A window of the ring, oldest bin first.
#[derive(Debug, Clone, Serialize)]
pub struct RateWindow {
    /// Wall-clock time (ms) at the end of the newest bin.
    pub end_ms: u64,
    /// Seconds per bin.
    pub step_secs: u64,
    /// Names of the columns of each bin, `RESULTS`.
    pub results: [&'static str; RESULTS.len()],
    /// Requests per bin and result (divide by `step_secs` for a rate).
    pub bins: Vec<[u64; RESULTS.len()]>,
}

impl RecentRates {
    /// Counts one answered request; an unknown result is ignored rather than mis-filed.
    pub fn count(&self, result: &str) {
        let Some(column) = RESULTS.iter().position(|r| *r == result) else {
            return;
        };
        let second = self.now_secs();
        let stamp = second & 0xffff_ffff;
        if let (Some(slot), Some(total)) = (self.slot(second), self.totals.get(column))
            && let Some(counter) = slot.get(column)
        {
            // The closure always returns Some, so the update cannot fail.
            let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |packed| {
                Some(if packed >> 32 == stamp { packed + 1 } else { (stamp << 32) | 1 })
            });
            total.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn now_secs(&self) -> u64 {
        self.epoch.elapsed().as_secs()
    }

    fn slot(&self, second: u64) -> Option<&[AtomicU64; RESULTS.len()]> {
        self.slots.get(usize::try_from(second % HISTORY_SECS).ok()?)
    }

    /// The last `span_secs` (at most an hour) in bins of `step_secs`, ending with the current second.
    pub fn window(&self, span_secs: u64, step_secs: u64) -> RateWindow {
        let step = step_secs.clamp(1, HISTORY_SECS);
        let span = span_secs.clamp(step, HISTORY_SECS);
        let now = self.now_secs();
        let bins_wanted = span / step;
        let mut bins = vec![[0u64; RESULTS.len()]; usize::try_from(bins_wanted).unwrap_or(0)];
        for (offset, bin) in bins.iter_mut().rev().enumerate() {
            let newest = now.checked_sub(offset as u64 * step);
            for back in 0..step {
                let Some(second) = newest.and_then(|n| n.checked_sub(back)) else { break };
                let Some(slot) = self.slot(second) else { continue };
                for (sum, counter) in bin.iter_mut().zip(slot) {
                    let packed = counter.load(Ordering::Relaxed);
                    if packed >> 32 == second & 0xffff_ffff {
                        *sum += packed & 0xffff_ffff;
                    }
                }
            }
        }
        RateWindow { end_ms: wall_ms(), step_secs: step, results: RESULTS, bins }
    }

    /// Requests counted in the last `secs` seconds, the current one included.
    fn sum_last(&self, secs: u64) -> [u64; RESULTS.len()] {
        let mut sum = [0u64; RESULTS.len()];
        for bin in self.window(secs, 1).bins {
            sum.iter_mut().zip(bin).for_each(|(s, n)| *s += n);
        }
        sum
    }

    fn totals(&self) -> [u64; RESULTS.len()] {
        std::array::from_fn(|i| self.totals.get(i).map_or(0, |t| t.load(Ordering::Relaxed)))
    }
}

fn wall_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// When the current outage (some breaker not closed) began, and the totals at that moment.
/// It is noticed up to a second late (the breakers are sampled), so its start is dated back
/// to when the longest-open breaker opened, and the requests since then are taken from the
/// ring: the answers that opened the breaker belong to the outage too.
#[derive(Default)]
pub struct OutageClock {
    /// When the current outage began (wall-clock ms) and the ring's totals just before it;
    /// `None` while every breaker is closed.
    started: Mutex<Option<(u64, [u64; RESULTS.len()])>>,
}

/// The current outage as the Now page shows it.
#[derive(Debug, Clone, Serialize)]
pub struct OutageShare {
    /// Wall-clock start (ms): when a breaker was first seen not closed.
    pub since_ms: u64,
    /// Requests answered since then.
    pub requests: u64,
    /// Of those, answered from the store (hit or stale).
    pub from_store: u64,
    /// `from_store / requests`, absent while no request came.
    pub share: Option<f64>,
}

impl OutageClock {
    /// Notes how long the longest-open breaker has been open (`None`: all are closed);
    /// starts or ends the outage.
    pub fn observe(&self, rates: &RecentRates, open_for: Option<Duration>) {
        let mut started = self.started.lock().unwrap_or_else(|e| e.into_inner());
        match (open_for, started.is_some()) {
            (Some(open_for), false) => {
                // Whole seconds, rounded up, and the second before: the ring is per second, and
                // the answers that opened the breaker came just before it opened.
                let back = (open_for.as_secs() + 1).min(HISTORY_SECS - 1);
                let since_then = rates.sum_last(back + 1);
                let mut before = rates.totals();
                before.iter_mut().zip(since_then).for_each(|(b, n)| *b = b.saturating_sub(n));
                *started = Some((wall_ms().saturating_sub(back * 1000), before));
            }
            (None, true) => *started = None,
            _ => {}
        }
    }

    /// The share answered from the store since the outage began; `None` when there is none.
    pub fn share(&self, rates: &RecentRates) -> Option<OutageShare> {
        let (since_ms, before) = (*self.started.lock().unwrap_or_else(|e| e.into_inner()))?;
        let now = rates.totals();
        let delta = |i: usize| now.get(i).zip(before.get(i)).map_or(0, |(n, b)| n.saturating_sub(*b));
        let requests: u64 = (0..RESULTS.len()).map(delta).sum();
        let from_store: u64 =
            RESULTS.iter().enumerate().filter(|(_, r)| FROM_STORE.contains(r)).map(|(i, _)| delta(i)).sum();
        let share = (requests > 0).then(|| from_store as f64 / requests as f64);
        Some(OutageShare { since_ms, requests, from_store, share })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_land_in_the_current_bin_by_result() {
        let rates = RecentRates::default();
        for _ in 0..3 {
            rates.count("hit");
        }
        rates.count("stale");
        rates.count("not-a-result");
        let w = rates.window(60, 10);
        assert_eq!(w.bins.len(), 6);
        let newest = w.bins.last().copied().unwrap_or_default();
        assert_eq!(newest, [3, 1, 0, 0, 0, 0]);
        assert!(w.bins.iter().rev().skip(1).all(|b| b.iter().all(|n| *n == 0)));
    }

    #[test]
    fn a_slot_from_an_hour_ago_restarts_instead_of_adding_up() {
        let Some(an_hour_ago) = Instant::now().checked_sub(std::time::Duration::from_secs(HISTORY_SECS)) else {
            return; // a machine up for less than an hour has no such past to fake
        };
        let rates = RecentRates { epoch: an_hour_ago, ..RecentRates::default() };
        // Second 0 counted 5 hits; the clock has now come round to the same slot.
        rates.slot(0).unwrap()[0].store(5, Ordering::Relaxed);
        rates.count("hit");
        let newest = rates.window(10, 1).bins.last().copied().unwrap_or_default();
        assert_eq!(newest[0], 1, "the old second's 5 must not be added to this one");
    }

    #[test]
    fn the_outage_share_counts_only_requests_since_it_began() {
        let rates = RecentRates::default();
        let clock = OutageClock::default();
        rates.count("miss");
        assert!(clock.share(&rates).is_none());
        clock.observe(&rates, Some(Duration::ZERO));
        rates.count("stale");
        rates.count("stale");
        rates.count("stale");
        rates.count("error");
        let share = clock.share(&rates).unwrap();
        // The miss came in the same second the breaker opened: it counts as the outage's.
        assert_eq!((share.requests, share.from_store), (5, 3));
        assert!((share.share.unwrap() - 0.6).abs() < 1e-9);
        clock.observe(&rates, Some(Duration::from_secs(1)));
        assert_eq!(clock.share(&rates).unwrap().requests, 5, "a second look does not restart it");
        clock.observe(&rates, None);
        assert!(clock.share(&rates).is_none(), "all breakers closed: the outage is over");
    }

    #[test]
    fn an_outage_noticed_late_still_counts_the_requests_since_the_breaker_opened() {
        let Some(a_minute_ago) = Instant::now().checked_sub(Duration::from_secs(60)) else { return };
        let rates = RecentRates { epoch: a_minute_ago, ..RecentRates::default() };
        // 30 s ago, before the breaker opened: a miss; 10 s ago, after: two stale answers.
        let slot = |secs_ago: u64| rates.slot(60 - secs_ago).unwrap();
        slot(30)[3].store(((60 - 30) << 32) | 1, Ordering::Relaxed);
        slot(10)[1].store(((60 - 10) << 32) | 2, Ordering::Relaxed);
        rates.totals[3].store(1, Ordering::Relaxed);
        rates.totals[1].store(2, Ordering::Relaxed);
        let clock = OutageClock::default();
        clock.observe(&rates, Some(Duration::from_secs(15)));
        let share = clock.share(&rates).unwrap();
        assert_eq!((share.requests, share.from_store), (2, 2));
    }
}
