//! Circuit breakers: stop sending to a provider (or one of its models) that keeps failing, so
//! a dead provider costs a map lookup instead of a connection attempt and a timeout.
//!
//! Closed → Open after `failures` consecutive failures, or when the failure ratio over the
//! sliding `window` reaches `failure_ratio` with at least `min_requests` in it. Open → HalfOpen
//! once `cooldown` has passed; HalfOpen lets `probes` requests through at a time. A probe's
//! success closes the breaker; its failure opens it again for another cooldown.
//!
//! Time comes from `tokio::time::Instant`, so tests drive it with a paused clock.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::config::BreakerConfig;
use crate::telemetry::metrics;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half-open",
        }
    }
}

struct Breaker {
    /// Thresholds and timings, from the provider's `[providers.breaker]`.
    config: BreakerConfig,
    /// Closed, open or half-open.
    state: State,
    /// Failures since the last success; `failures` of them in a row open it.
    consecutive_failures: u32,
    /// Outcomes inside the sliding window: (when, failed).
    window: VecDeque<(Instant, bool)>,
    /// When it last opened, for when a probe may go through.
    opened_at: Option<Instant>,
    /// Half-open probes not yet settled; at most `probes`.
    probes_in_flight: u32,
    /// State changes since start, for `/metrics`.
    transitions: u64,
}

impl Breaker {
    fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            state: State::Closed,
            consecutive_failures: 0,
            window: VecDeque::new(),
            opened_at: None,
            probes_in_flight: 0,
            transitions: 0,
        }
    }

    /// Moves Open → HalfOpen when the cooldown is over; returns the state now in force.
    fn current(&mut self, now: Instant) -> State {
        if self.state == State::Open && self.opened_at.is_some_and(|t| now.duration_since(t) >= self.config.cooldown) {
            self.state = State::HalfOpen;
            self.probes_in_flight = 0;
            self.transitions += 1;
        }
        self.state
    }

    fn record(&mut self, now: Instant, failed: bool) {
        self.window.push_back((now, failed));
        while self.window.front().is_some_and(|(t, _)| now.duration_since(*t) > self.config.window) {
            self.window.pop_front();
        }
        self.consecutive_failures = if failed { self.consecutive_failures + 1 } else { 0 };
    }

    fn should_open(&self) -> bool {
        if self.consecutive_failures >= self.config.failures {
            return true;
        }
        let total = self.window.len() as u32;
        let failed = self.window.iter().filter(|(_, f)| *f).count() as f64;
        total >= self.config.min_requests && total > 0 && failed / f64::from(total) >= self.config.failure_ratio
    }
}

/// Leave to send one request through a breaker. Its outcome is reported with
/// [`Permit::report`]; a permit dropped unreported (the client disconnected, the task was
/// cancelled) releases its probe slot without a verdict, so a half-open breaker can never be
/// left waiting for a probe that will not come back.
#[must_use = "a permit reports the attempt's outcome; dropping it gives no verdict"]
pub struct Permit {
    /// The breakers the permit came from.
    breakers: Breakers,
    /// Which breaker it passes.
    key: String,
    /// Whether it holds one of the half-open breaker's probe slots.
    probe: bool,
    /// Set once reported, so drop does not release the slot twice.
    reported: bool,
}

impl Permit {
    /// Whether this request is a half-open breaker's probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// Reports how the request went: `Some(true)` failed, `Some(false)` succeeded, `None` no
    /// verdict (abandoned, or a failure another breaker answers for).
    pub fn report(mut self, failed: Option<bool>) -> Option<Transition> {
        self.reported = true;
        self.breakers.report(&self.key, self.probe, failed)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.reported {
            self.breakers.report(&self.key, self.probe, None);
        }
    }
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Permit({}, probe: {})", self.key, self.probe)
    }
}

/// A state change, returned so the caller can log it with context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The breaker's key (`provider` or `provider/model`).
    pub key: String,
    /// State before.
    pub from: State,
    /// State after.
    pub to: State,
}

/// All breakers, keyed by provider (`"openai"`) or provider and model (`"openai/gpt-4o"`).
#[derive(Clone, Default)]
pub struct Breakers {
    /// Shared by every request; held only for a state update, never across an await.
    inner: Arc<Mutex<HashMap<String, Breaker>>>,
}

/// One breaker's state for `/admin/health` and `/metrics`.
#[derive(Debug, Clone, Serialize)]
pub struct BreakerStatus {
    /// The breaker's key (`provider` or `provider/model`).
    pub key: String,
    /// Closed, open or half-open.
    pub state: State,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// Outcomes inside the sliding window.
    pub recent_requests: usize,
    /// Failures among them.
    pub recent_failures: usize,
    /// State changes since start.
    pub transitions: u64,
    /// Seconds until an open breaker lets a probe through.
    pub retry_in_secs: Option<f64>,
}

impl Breakers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Breaker>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks to send one request through `key`: a permit, or `None` while the breaker is open
    /// (or half-open with every probe slot taken).
    pub fn admit(&self, key: &str, config: &BreakerConfig) -> (Option<Permit>, Option<Transition>) {
        let now = Instant::now();
        let mut map = self.lock();
        let breaker = map.entry(key.to_owned()).or_insert_with(|| Breaker::new(config.clone()));
        let before = breaker.state;
        let probe = match breaker.current(now) {
            State::Closed => Some(false),
            State::Open => None,
            State::HalfOpen if breaker.probes_in_flight < breaker.config.probes => {
                breaker.probes_in_flight += 1;
                Some(true)
            }
            State::HalfOpen => None,
        };
        let change = transition(key, before, breaker.state);
        drop(map);
        let permit = probe.map(|probe| Permit { breakers: self.clone(), key: key.to_owned(), probe, reported: false });
        (permit, change)
    }

    /// Reports how an admitted request went. `failed: None` releases a probe without a
    /// verdict (the attempt was abandoned, e.g. the deadline passed).
    fn report(&self, key: &str, probe: bool, failed: Option<bool>) -> Option<Transition> {
        let now = Instant::now();
        let mut map = self.lock();
        let breaker = map.get_mut(key)?;
        let before = breaker.state;
        if probe {
            breaker.probes_in_flight = breaker.probes_in_flight.saturating_sub(1);
        }
        let failed = failed?;
        breaker.record(now, failed);
        match (breaker.state, failed) {
            (State::HalfOpen, false) => {
                breaker.state = State::Closed;
                breaker.window.clear();
                breaker.consecutive_failures = 0;
            }
            (State::HalfOpen, true) => {
                breaker.state = State::Open;
                breaker.opened_at = Some(now);
            }
            (State::Closed, true) if breaker.should_open() => {
                breaker.state = State::Open;
                breaker.opened_at = Some(now);
            }
            _ => {}
        }
        if breaker.state != before {
            breaker.transitions += 1;
        }
        transition(key, before, breaker.state)
    }

    /// A read-only view: an open breaker whose cooldown is over shows as half-open, but the
    /// transition itself happens (and is logged) when the next request asks to pass.
    pub fn statuses(&self) -> Vec<BreakerStatus> {
        let now = Instant::now();
        let map = self.lock();
        let mut out: Vec<BreakerStatus> = map
            .iter()
            .map(|(key, b)| {
                let cooled = b.opened_at.is_some_and(|t| now.duration_since(t) >= b.config.cooldown);
                let state = if b.state == State::Open && cooled { State::HalfOpen } else { b.state };
                BreakerStatus {
                    key: key.clone(),
                    state,
                    consecutive_failures: b.consecutive_failures,
                    recent_requests: b.window.len(),
                    recent_failures: b.window.iter().filter(|(_, f)| *f).count(),
                    transitions: b.transitions,
                    retry_in_secs: (state == State::Open).then(|| {
                        let since = b.opened_at.map_or(Duration::ZERO, |t| now.duration_since(t));
                        b.config.cooldown.saturating_sub(since).as_secs_f64()
                    }),
                }
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }
}

fn transition(key: &str, from: State, to: State) -> Option<Transition> {
    (from != to).then(|| Transition { key: key.to_owned(), from, to })
}

/// Breaker states as gauges (0 closed, 1 half-open, 2 open) and transition counters.
pub fn render_metrics(statuses: &[BreakerStatus]) -> String {
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
        let _ = writeln!(out, "holdfast_breaker_state{{breaker=\"{}\"}} {value}", metrics::escape(&s.key));
    }
    out.push_str("# HELP holdfast_breaker_transitions_total Circuit breaker state changes.\n");
    out.push_str("# TYPE holdfast_breaker_transitions_total counter\n");
    for s in statuses {
        let _ = writeln!(
            out,
            "holdfast_breaker_transitions_total{{breaker=\"{}\"}} {}",
            metrics::escape(&s.key),
            s.transitions
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BreakerConfig {
        BreakerConfig {
            failures: 3,
            failure_ratio: 0.5,
            window: Duration::from_secs(30),
            min_requests: 10,
            cooldown: Duration::from_secs(10),
            probes: 1,
        }
    }

    fn fail(b: &Breakers, key: &str) -> Option<Transition> {
        b.admit(key, &config()).0.expect("rejected").report(Some(true))
    }

    fn probe_of(b: &Breakers, key: &str) -> Option<bool> {
        b.admit(key, &config()).0.map(|p| p.is_probe())
    }

    #[tokio::test(start_paused = true)]
    async fn closed_open_half_open_closed() {
        let b = Breakers::default();
        assert!(fail(&b, "p").is_none());
        assert!(fail(&b, "p").is_none());
        let opened = fail(&b, "p").expect("third consecutive failure opens");
        assert_eq!((opened.from, opened.to), (State::Closed, State::Open));
        assert_eq!(probe_of(&b, "p"), None);
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(probe_of(&b, "p"), None, "still cooling down");
        tokio::time::advance(Duration::from_secs(1)).await;
        let (permit, t) = b.admit("p", &config());
        let permit = permit.expect("a probe after the cooldown");
        assert!(permit.is_probe());
        assert_eq!(t.unwrap().to, State::HalfOpen);
        assert_eq!(probe_of(&b, "p"), None, "one probe at a time");
        let closed = permit.report(Some(false)).unwrap();
        assert_eq!(closed.to, State::Closed);
        assert_eq!(probe_of(&b, "p"), Some(false));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens_for_another_cooldown() {
        let b = Breakers::default();
        for _ in 0..3 {
            fail(&b, "p");
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        let reopened = fail(&b, "p").unwrap();
        assert_eq!((reopened.from, reopened.to), (State::HalfOpen, State::Open));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(probe_of(&b, "p"), None);
        let status = &b.statuses()[0];
        assert_eq!(status.state, State::Open);
        assert!((status.retry_in_secs.unwrap() - 5.0).abs() < 0.01);
    }

    #[tokio::test(start_paused = true)]
    async fn failure_ratio_over_the_window_opens_without_a_streak() {
        let b = Breakers::default();
        // Alternate success and failure: never 3 in a row, but 50% over 10 requests.
        for i in 0..10 {
            let t = b.admit("p", &config()).0.unwrap().report(Some(i % 2 == 1));
            if i < 9 {
                assert!(t.is_none(), "opened too early at {i}");
            } else {
                assert_eq!(t.unwrap().to, State::Open);
            }
        }
        // Old outcomes leave the window: after 31 s the ratio starts afresh.
        let b = Breakers::default();
        for i in 0..9 {
            b.admit("q", &config()).0.unwrap().report(Some(i % 2 == 1));
        }
        tokio::time::advance(Duration::from_secs(31)).await;
        assert!(b.admit("q", &config()).0.unwrap().report(Some(true)).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn abandoned_probe_frees_its_slot() {
        let b = Breakers::default();
        for _ in 0..3 {
            fail(&b, "p");
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        let permit = b.admit("p", &config()).0.unwrap();
        assert!(permit.is_probe());
        assert!(permit.report(None).is_none());
        assert_eq!(probe_of(&b, "p"), Some(true));
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_probe_permit_frees_its_slot() {
        let b = Breakers::default();
        for _ in 0..3 {
            fail(&b, "p");
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        let permit = b.admit("p", &config()).0.unwrap();
        assert_eq!(probe_of(&b, "p"), None, "the only slot is taken");
        drop(permit); // as when the client disconnects mid-probe
        let again = b.admit("p", &config()).0.expect("the slot came back");
        assert!(again.is_probe());
        assert_eq!(again.report(Some(false)).unwrap().to, State::Closed);
    }
}
