//! What the embedded engines (sled, redb, fjall) share: the key scheme, the panic guard and
//! the errors of opening.
//!
//! Every embedded engine keeps both halves of an entry under prefixed keys in one table, so
//! one transaction writes them together: `m‖address` → metadata, `v‖address` → sealed value,
//! and the store's integrity record under the one-byte key `t` (between the two ranges). All
//! metadata sorts before all values, so scanning metadata never reads a sealed value.

use std::ops::Bound;

use super::{BackendError, RawAddress, Result};
use crate::cache_key::address::ADDRESS_LEN;

pub(super) const META: u8 = b'm';
pub(super) const VALUE: u8 = b'v';
pub(super) const TALLY: &[u8] = b"t";

/// A key of the scheme: one prefix byte, then the address.
pub(super) type Key = [u8; 1 + ADDRESS_LEN];

/// Why an embedded database could not be opened (any engine); the store turns these into
/// user-facing errors.
#[derive(Debug)]
pub enum EngineOpenError {
    /// Another process has the database open.
    Locked,
    Corrupt(String),
    Io(std::io::Error),
}

pub(super) fn key(prefix: u8, address: &RawAddress) -> Key {
    let mut k = [0u8; 1 + ADDRESS_LEN];
    k[0] = prefix;
    k[1..].copy_from_slice(address);
    k
}

/// The metadata key and the value key of the entry at `address`.
pub(super) fn entry_keys(address: &RawAddress) -> (Key, Key) {
    (key(META, address), key(VALUE, address))
}

/// The keys of one prefix, after `after` if given.
pub(super) fn range(prefix: u8, after: Option<&RawAddress>) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let start = match after {
        Some(a) => Bound::Excluded(key(prefix, a).to_vec()),
        None => Bound::Included(vec![prefix]),
    };
    (start, Bound::Excluded(vec![prefix + 1]))
}

pub(super) fn address_of(k: &[u8]) -> Result<RawAddress> {
    k.get(1..)
        .and_then(|a| a.try_into().ok())
        .ok_or_else(|| BackendError::Corrupt(format!("entry key of {} bytes", k.len())))
}

/// Runs a database call, turning a panic inside the engine into a corruption error. sled 0.34
/// panics on some damaged files (e.g. "tried to serialize Uninitialized"), and so do redb's
/// debug builds: a damaged database is an error the operator can act on, never a crash of the
/// server or of `cache verify`.
pub(super) fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        Err(BackendError::Corrupt(format!("the database failed during {what}: {}", panic_reason(&*panic))))
    })
}

/// Runs an engine's open, turning a panic while it recovers a damaged database into a
/// corruption error, as `guarded` does for later calls.
pub(super) fn recovering<T>(
    engine: &str,
    open: impl FnOnce() -> Result<T, EngineOpenError>,
) -> Result<T, EngineOpenError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(open)).unwrap_or_else(|panic| {
        Err(EngineOpenError::Corrupt(format!(
            "{engine} failed while recovering the database: {}",
            panic_reason(&*panic)
        )))
    })
}

/// The message of a caught panic.
fn panic_reason(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}
