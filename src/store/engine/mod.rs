//! The storage boundary: a narrow, object-safe trait over bytes.
//!
//! Everything above it (encryption, addressing, expiry, eviction) is backend-agnostic, so the
//! embedded sled store and a shared network store can stand side by side behind
//! `Arc<dyn Backend>`. A backend never sees plaintext: values arrive sealed, metadata is
//! content-free.
//!
//! - `Engine` (here): which embedded engine a store uses (`store.engine`).
//! - `embedded`: what the embedded engines share: the key scheme, the panic guard, open errors.
//! - `sled`: the default embedded engine.
//! - `redb`, `fjall`: the alternative embedded engines (cargo features `engine-redb`,
//!   `engine-fjall`; compared in docs/storage.md).
//! - `reopen`: an embedded engine closed and opened again after a sticky write failure.
//! - `redis`: the shared backend on Redis / Valkey (one primary or a cluster) for many
//!   replicas.

mod embedded;
#[cfg(feature = "engine-fjall")]
mod fjall;
#[cfg(feature = "engine-redb")]
mod redb;
mod redis;
pub(super) mod reopen;
mod sled;

pub use self::embedded::EngineOpenError;
#[cfg(feature = "engine-fjall")]
pub(super) use self::fjall::FjallBackend;
#[cfg(feature = "engine-redb")]
pub(super) use self::redb::RedbBackend;
pub use self::redis::cells::{RedisKeyringCell, RedisTrailCell};
pub use self::redis::{RedisBackend, RedisTarget, redacted};
pub use self::sled::SledBackend;

use crate::cache_key::address::ADDRESS_LEN;

/// An entry's address as a backend sees it: the keyed hash's bytes.
pub type RawAddress = [u8; ADDRESS_LEN];

/// The outcome of a backend call (as `std::io::Result` is of an I/O call).
pub type Result<T, E = BackendError> = std::result::Result<T, E>;

/// Why a backend call failed: the store turns these into `StoreError::Backend`.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("storage I/O failed: {0}")]
    Io(String),
    #[error("storage is corrupt: {0}")]
    Corrupt(String),
    /// A network store did not answer (down, slow, failing over). Logged by the backend once
    /// per interval, so callers only count it.
    #[error("{0}")]
    Unavailable(String),
}

/// The embedded database engine under a store (`store.engine`); see docs/storage.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// sled 0.34: the engine of every store made before engines were selectable.
    #[default]
    Sled,
    /// redb: a copy-on-write B-tree in one file (cargo feature `engine-redb`).
    Redb,
    /// fjall: an LSM tree with checksummed blocks (cargo feature `engine-fjall`).
    Fjall,
}

impl Engine {
    pub const ALL: [Engine; 3] = [Engine::Sled, Engine::Redb, Engine::Fjall];

    /// The name used in the configuration and the marker.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Sled => "sled",
            Engine::Redb => "redb",
            Engine::Fjall => "fjall",
        }
    }

    pub fn from_name(name: &str) -> Option<Engine> {
        Engine::ALL.into_iter().find(|e| e.name() == name)
    }

    /// The cargo feature a build needs for this engine (`None`: always built).
    pub fn feature(self) -> Option<&'static str> {
        match self {
            Engine::Sled => None,
            Engine::Redb => Some("engine-redb"),
            Engine::Fjall => Some("engine-fjall"),
        }
    }

    /// Whether this build includes the engine.
    pub fn is_built(self) -> bool {
        match self {
            Engine::Sled => true,
            Engine::Redb => cfg!(feature = "engine-redb"),
            Engine::Fjall => cfg!(feature = "engine-fjall"),
        }
    }

    /// The directory (under the store root) that holds this engine's database.
    pub(in crate::store) fn dir_name(self) -> &'static str {
        match self {
            Engine::Sled => "db",
            Engine::Redb => "redb",
            Engine::Fjall => "fjall",
        }
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An entry's sealed value and metadata, each if present.
pub type EntryBytes = (Option<Vec<u8>>, Option<Vec<u8>>);

/// An entry's bytes on their way from a network backend.
pub type EntryFuture<'a> = std::pin::Pin<Box<dyn Future<Output = Result<EntryBytes>> + Send + 'a>>;

/// A change to apply to one entry's metadata; `None` from the closure leaves it unchanged.
pub type MetaUpdate<'a> = &'a dyn Fn(&[u8]) -> Option<Vec<u8>>;

pub trait Backend: Send + Sync {
    /// The sealed value and the metadata at `address` together: one round trip for a network
    /// backend, whose lookups are bounded by a timeout.
    fn get_entry(&self, address: &RawAddress) -> Result<EntryBytes> {
        Ok((self.get_value(address)?, self.get_meta(address)?))
    }

    /// `get_entry` as a future, for a backend that waits on the network: the request path
    /// awaits it instead of blocking a runtime worker. `None` (the default): call `get_entry`,
    /// which for a local engine is a few microseconds.
    fn get_entry_async(&self, _address: &RawAddress) -> Option<EntryFuture<'_>> {
        None
    }

    /// The sealed value stored at `address`.
    fn get_value(&self, address: &RawAddress) -> Result<Option<Vec<u8>>>;

    /// The plaintext metadata stored at `address`.
    fn get_meta(&self, address: &RawAddress) -> Result<Option<Vec<u8>>>;

    /// Writes value, metadata and the store's sealed integrity record (`tally`) together:
    /// after a crash all three are there or none is. Returns the metadata it replaced, read
    /// in the same atomic step, so callers can keep exact counts under concurrent writers.
    fn put_entry(&self, address: &RawAddress, meta: &[u8], value: &[u8], tally: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Replaces the value only if it is still `expected` (compare-and-swap), together with its
    /// metadata. Returns whether it was replaced. Key rotation re-seals through this so that a
    /// concurrent fresh write always wins.
    fn replace_entry(&self, address: &RawAddress, expected: &[u8], meta: &[u8], value: &[u8]) -> Result<bool>;

    /// Applies `update` to the metadata of an existing entry, atomically with respect to other
    /// updates; does nothing if there is no entry.
    fn update_meta(&self, address: &RawAddress, update: MetaUpdate<'_>) -> Result<()>;

    /// Removes value and metadata together, writing `tally` in the same atomic step. Returns
    /// the metadata removed, if there was an entry.
    fn delete_entry(&self, address: &RawAddress, tally: &[u8]) -> Result<Option<Vec<u8>>>;

    /// The sealed integrity record last written with an entry (or by `put_tally`).
    fn get_tally(&self) -> Result<Option<Vec<u8>>>;

    /// Replaces the integrity record alone (creation, an upgrade, `cache repair`).
    fn put_tally(&self, tally: &[u8]) -> Result<()>;

    /// Up to `limit` addresses that have a sealed value, in order, after `after`. `cache verify`
    /// walks these too: a value whose metadata was lost is invisible to `scan_meta`.
    fn scan_values(&self, after: Option<&RawAddress>, limit: usize) -> Result<Vec<RawAddress>>;

    /// Up to `limit` entries' metadata in address order, starting after `after`. Paged so a
    /// network backend can serve it and so no caller holds an iterator across calls.
    fn scan_meta(&self, after: Option<&RawAddress>, limit: usize) -> Result<Vec<(RawAddress, Vec<u8>)>>;

    /// A store-wide setting (format version and the like).
    fn get_setting(&self, name: &str) -> Result<Option<Vec<u8>>>;

    fn put_setting(&self, name: &str, value: &[u8]) -> Result<()>;

    /// Makes every completed write durable.
    fn flush(&self) -> Result<()>;

    /// Bytes the backend occupies on disk, as far as it can tell.
    fn size_on_disk(&self) -> Result<u64>;

    /// Whether other processes write to the same store at once (a network backend): the
    /// store then keeps no process-local integrity tally or saved totals.
    fn is_shared(&self) -> bool {
        false
    }
}
