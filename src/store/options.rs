//! How a store is opened and kept: creation, retention, size budget, durability, engine.

use std::time::Duration;

use super::committer::Durability;
use super::engine::Engine;
use crate::store::keyring::KdfParams;

/// How a store is opened and kept.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Create the store if the path is missing or an empty directory.
    pub create_if_missing: bool,
    /// Argon2id cost for a new passphrase-wrapped keyring.
    pub kdf: KdfParams,
    /// Entries are deleted this long after they were stored; `None` keeps them until evicted.
    pub retention: Option<Duration>,
    /// Size budget for sealed values; the least recently served entries go first beyond it.
    pub max_bytes: Option<u64>,
    /// Memory for the database's page cache.
    pub cache_bytes: u64,
    /// Whether `put` waits for its entry to be fsync'd (see `Durability`).
    pub durability: Durability,
    /// Open a store whose integrity check failed instead of refusing (for `cache verify` and
    /// `cache repair`, which report or fix the damage); the findings are in `Store::damage`.
    pub accept_damage: bool,
    /// The embedded engine: the one a new store is created with, and the one an existing
    /// store must have been created with (refused otherwise). `None`: sled for a new store,
    /// whatever the marker records for an existing one.
    pub engine: Option<Engine>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            create_if_missing: false,
            kdf: KdfParams::default(),
            retention: None,
            max_bytes: None,
            cache_bytes: 64 * 1024 * 1024,
            durability: Durability::Durable,
            accept_damage: false,
            engine: None,
        }
    }
}
