//! What Holdfast does before it falls back to the store: retry with backoff, keep within the
//! request's deadline, and stop calling providers that are down.
//!
//! - `backoff`: exponential backoff with full jitter; `Retry-After` / `retry-after-ms`.
//! - `breaker`: circuit breakers per provider and per provider + model; RAII permits.
//! - `verdict`: which breaker an attempt's outcome counts against.

pub mod backoff;
pub mod breaker;
pub mod verdict;
