//! How long to wait before trying a provider again: exponential backoff with full jitter
//! (AWS architecture blog, "Exponential Backoff and Jitter"), overridden by the provider's own
//! `Retry-After` / `retry-after-ms` when it gives one, up to a cap.

use std::time::Duration;

use axum::http::HeaderMap;

use crate::secret::fill_random;

/// Full jitter: a uniformly random wait in `[0, min(cap, base · 2^retry))`. `retry` counts from 0
/// for the wait after the first failed attempt.
pub fn full_jitter(base: Duration, cap: Duration, retry: u32) -> Duration {
    let ceiling = base.saturating_mul(1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX)).min(cap);
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    if nanos == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(random_u64() % nanos)
}

fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    fill_random(&mut bytes);
    u64::from_le_bytes(bytes)
}

/// The wait a provider asked for: `retry-after-ms` (OpenAI's, in milliseconds) wins over
/// `Retry-After` (seconds; an HTTP-date is not honoured and falls back to backoff).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(ms) = text("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        return seconds(ms / 1000.0);
    }
    text("retry-after").and_then(|v| v.parse::<f64>().ok()).and_then(seconds)
}

/// A provider's number of seconds as a wait. Negative or NaN asks for nothing; a finite value
/// too large for a `Duration` (`1e20`) saturates rather than panicking — any such wait is far
/// past `retry_after_cap`, so the caller fails over.
fn seconds(value: f64) -> Option<Duration> {
    if value.is_nan() || value < 0.0 {
        return None;
    }
    Some(Duration::try_from_secs_f64(value).unwrap_or(Duration::MAX))
}

/// The wait before the next attempt: the provider's request (capped) if it made one, else
/// jittered backoff.
pub fn next_wait(
    headers: Option<&HeaderMap>,
    base: Duration,
    cap: Duration,
    retry_after_cap: Duration,
    retry: u32,
) -> Duration {
    match headers.and_then(retry_after) {
        Some(asked) => asked.min(retry_after_cap),
        None => full_jitter(base, cap, retry),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn jitter_stays_under_the_exponential_ceiling_and_the_cap() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(1);
        for retry in 0..40 {
            let ceiling = (base * 2u32.saturating_pow(retry.min(20))).min(cap);
            for _ in 0..50 {
                assert!(full_jitter(base, cap, retry) < ceiling.max(Duration::from_nanos(1)));
            }
        }
        // Full jitter really spreads: 200 draws below 100 ms are not all in one 10 ms slice.
        let draws: Vec<_> = (0..200).map(|_| full_jitter(base, cap, 0).as_millis() / 10).collect();
        assert!(draws.iter().any(|d| *d != draws[0]));
    }

    #[test]
    fn retry_after_headers_win_and_are_capped() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert("retry-after-ms", HeaderValue::from_static("150"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(150)));
        let long = {
            let mut h = HeaderMap::new();
            h.insert("retry-after", HeaderValue::from_static("3600"));
            h
        };
        let wait =
            next_wait(Some(&long), Duration::from_millis(1), Duration::from_millis(2), Duration::from_secs(5), 0);
        assert_eq!(wait, Duration::from_secs(5));
        let mut huge = HeaderMap::new();
        huge.insert("retry-after", HeaderValue::from_static("1e20"));
        assert_eq!(retry_after(&huge), Some(Duration::MAX));
        huge.insert("retry-after-ms", HeaderValue::from_static("inf"));
        assert_eq!(retry_after(&huge), Some(Duration::MAX));
        let mut negative = HeaderMap::new();
        negative.insert("retry-after", HeaderValue::from_static("-3"));
        assert_eq!(retry_after(&negative), None);
        let mut date = HeaderMap::new();
        date.insert("retry-after", HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"));
        assert_eq!(retry_after(&date), None);
    }
}
