//! Wall-clock time in the one unit stored everywhere (milliseconds since the Unix epoch).
//!
//! Its own module so that the keyring and the store, which both stamp records, need not
//! import each other.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
