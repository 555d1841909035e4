//! What Holdfast does before it falls back to the store: retry with backoff, keep within the
//! request's deadline, and stop calling providers that are down.
//!
//! - `backoff`: exponential backoff with full jitter; `Retry-After` / `retry-after-ms`.
//! - `breaker`: circuit breakers per provider and per provider + model.

pub mod backoff;
pub mod breaker;
