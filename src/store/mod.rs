//! The encrypted, content-addressed response store: the one API the proxy and the admin
//! commands use.
//!
//! `Store` seals every record under the keyring's active data key and keeps it in a `Backend`
//! (sled by default). Reads open and authenticate; a value that fails is reported as tampered,
//! counted, and never returned.
//!
//! - `options`, `error`: how a store is opened and kept; why opening or an operation failed.
//! - `open`: opening, creating and closing the embedded store; `shared`: the same for Redis.
//! - `write`: put (durable), delete, re-seal, served notes, the free-space reserve, eviction.
//! - `committer`: group commit — one fsync for every answer completing together.
//! - `integrity`: the sealed count and digest that tell "entries missing" from "store empty".
//! - `verify`: the check at open, `cache verify` and `cache repair`.
//! - `engine`: the byte-level storage trait and the engines behind it: sled (default), redb and
//!   fjall embedded, Redis / Valkey shared by many replicas; reopening an embedded one after a
//!   sticky write failure, without a restart.
//! - `hot_cache`: the sealed in-process cache of recently served entries in front of Redis.
//! - `layout`, `migrate`: the store directory and format upgrades.
//! - `keyring`, `crypto`, `record`, `codec`, `durable`: the keys, the sealed envelope, what an
//!   entry holds, its encoding, and atomic file writes.

pub mod codec;
mod committer;
pub mod crypto;
pub(crate) mod durable;
mod engine;
mod error;
mod hot_cache;
mod integrity;
pub mod keyring;
mod layout;
mod migrate;
mod open;
mod options;
pub mod record;
mod shared;
pub mod trail_cell;
mod verify;
mod write;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub use crate::clock::now_ms;
pub use committer::{DURABLE_WAIT, Durability, RELAXED_INTERVAL};
pub use engine::{
    Backend, BackendError, Engine, EntryBytes, EntryFuture, MetaUpdate, RawAddress, RedisBackend, RedisTarget,
    SledBackend, redacted,
};
pub use error::{StoreError, StoreOpenError};
pub use hot_cache::HotCacheLimits;
pub use layout::FORMAT_VERSION;
pub use migrate::{MigrationReport, migrate};
pub use options::StoreOptions;
pub use verify::{RepairReport, VerifyReport};

use crate::cache_key::address::{Address, Addresser, Namespace};
use crate::cache_key::normalize::NormalizedRequest;
use crate::store::keyring::Keyring;
use crate::store::record::{EntryMeta, Record};
use committer::Committer;
use crypto::EnvelopeError;
use engine::reopen;
use integrity::Tally;

/// A record together with its bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The answer as it was recorded, opened and decoded.
    pub record: Record,
    /// Its bookkeeping: when stored, expiry, size, how often and when last served.
    pub meta: EntryMeta,
}

/// Totals for `cache stats`, /metrics and /readyz.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StoreStats {
    /// Entries present, as this process counts them.
    pub entries: u64,
    /// Sum of sealed value sizes.
    pub bytes: u64,
    /// What the database occupies on disk, as the engine tells it (0 for Redis).
    pub disk_bytes: u64,
    /// Reads that found a tampered or corrupt value since the store was opened.
    pub tampered: u64,
    /// Entries the integrity record expected but the store no longer holds, as last found by
    /// an open or `cache verify` (0 when nothing is known to be lost).
    pub lost: u64,
}

/// The open store: seals, addresses, reads, writes and counts; shared by every request.
pub struct Store {
    /// Where the sealed bytes go: an embedded engine (behind `Reopenable`) or Redis.
    backend: Arc<dyn Backend>,
    /// The unlocked keys: what seals new entries and opens old ones.
    keyring: Keyring,
    /// The store directory (for a shared store, its location), for messages and the
    /// integrity file.
    path: PathBuf,
    /// How it was opened: retention, size budget and durability are read on every write.
    options: StoreOptions,
    /// Entries present, kept in memory so /metrics and the budget check never scan.
    entries: AtomicU64,
    /// Sum of sealed value sizes, against `options.max_bytes`.
    bytes: AtomicU64,
    /// Reads that failed to open since the store was opened (`StoreStats::tampered`).
    tampered: AtomicU64,
    /// Held while evicting, so concurrent writers over budget start one eviction, not many.
    evicting: Mutex<()>,
    /// Served notes not yet written: address → (times served, last served ms).
    served: Mutex<std::collections::HashMap<Address, (u64, u64)>>,
    /// Group commit: `put` waits on it until its entry is durable.
    committer: Arc<Committer>,
    /// The committer's thread, joined on drop so the backend is closed when the store is.
    commit_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Count and digest of the entries present; its lock also orders every write that adds
    /// or removes an entry, so the record written with each one is exact.
    tally: Arc<Mutex<Tally>>,
    /// Key of the integrity record's MAC and digest.
    tally_key: crate::secret::SecretKey,
    /// What the integrity check at open found wrong (empty: nothing).
    damage: Vec<String>,
    /// Entries expected but missing, as last found (for /metrics).
    lost: AtomicU64,
    /// The entries an open-time scan counted (after an unclean close), for the check at open.
    scanned: Option<Tally>,
    /// Why the last write was refused or failed (`None` once a write succeeds again), for
    /// /readyz.
    write_failure: Mutex<Option<String>>,
    /// Signalled by a write that takes the store over its size budget; the server's evictor
    /// task waits on it (`eviction_wanted`) and runs `evict_to_budget` off the request path.
    eviction: tokio::sync::Notify,
    /// The same backend, typed, for the sled store: reopened after a sticky write failure.
    reopenable: Option<Arc<reopen::Reopenable>>,
    /// The same backend, typed, for a store shared through Redis: its trail, reachability and
    /// eviction policy. Other replicas write too, so no integrity tally or totals are kept.
    shared: Option<Arc<RedisBackend>>,
    /// Recently served entries of a shared store, sealed, in front of Redis (`hot_cache`);
    /// `None` for the embedded store or when turned off.
    hot: Option<hot_cache::HotCache>,
}

/// Space kept free on the store's filesystem. Below it, answers are served but not stored: a
/// write sled cannot finish for lack of space poisons the whole database (every later write,
/// and some reads, fail until it is reopened), so it is refused before it starts.
pub const MIN_FREE_BYTES: u64 = 4 * 1024 * 1024;

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.path.display())
    }
}

const SCAN_PAGE: usize = 4096;

impl Store {
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// The address of `request` in `namespace` under this store's address key.
    pub fn address(&self, namespace: &Namespace, request: &NormalizedRequest) -> Address {
        self.keyring.snapshot().addresser().address(namespace, request)
    }

    /// Address computation without a keyring lookup per call (for the request path).
    pub fn addresser(&self) -> Addresser {
        self.keyring.snapshot().addresser().clone()
    }

    /// Reads, authenticates and decodes the entry at `address`. Expired entries are absent.
    pub fn get(&self, address: &Address) -> Result<Option<Entry>, StoreError> {
        if let Some(hot) = &self.hot {
            if let Some(entry) = self.get_hot(hot, address) {
                return Ok(Some(entry));
            }
            let start = hot.begin_read();
            let bytes = self.backend.get_entry(address.as_bytes())?;
            return self.open_and_admit(hot, start, address, bytes);
        }
        let (value, meta) = self.backend.get_entry(address.as_bytes())?;
        self.open_entry(address, value, meta)
    }

    /// As `get`, for the request path: a network backend's read is awaited, so a slow Redis
    /// holds only this request, never a runtime worker. The embedded store reads inline (a
    /// few microseconds, cheaper than any hand-off).
    pub async fn get_async(&self, address: &Address) -> Result<Option<Entry>, StoreError> {
        if let Some(hot) = &self.hot
            && let Some(entry) = self.get_hot(hot, address)
        {
            return Ok(Some(entry));
        }
        let start = self.hot.as_ref().map(|hot| hot.begin_read());
        let Some(read) = self.backend.get_entry_async(address.as_bytes()) else { return self.get(address) };
        let bytes = read.await?;
        match (&self.hot, start) {
            (Some(hot), Some(start)) => self.open_and_admit(hot, start, address, bytes),
            _ => self.open_entry(address, bytes.0, bytes.1),
        }
    }

    /// Opens what a read of Redis returned and keeps it in the hot cache if it opened.
    fn open_and_admit(
        &self,
        hot: &hot_cache::HotCache,
        start: hot_cache::ReadStart,
        address: &Address,
        (value, meta): EntryBytes,
    ) -> Result<Option<Entry>, StoreError> {
        // Opening decrypts in place: keep the sealed bytes to admit once they opened.
        let sealed = value.clone().zip(meta.clone());
        let entry = self.open_entry(address, value, meta)?;
        if let (Some(_), Some((value, meta))) = (&entry, sealed) {
            hot.admit(address, start, &value, &meta);
        }
        Ok(entry)
    }

    /// An entry from the hot cache, opened as a Redis read would be. `None` sends the caller
    /// to Redis: not cached, too old, expired, or sealed under a key retired meanwhile.
    fn get_hot(&self, hot: &hot_cache::HotCache, address: &Address) -> Option<Entry> {
        let (mut value, meta) = hot.get(address)?;
        let known_key = crypto::envelope_key_id(&value).is_ok_and(|id| self.keyring.snapshot().data_key(id).is_some());
        if !known_key {
            hot.invalidate(address);
            return None;
        }
        let meta: EntryMeta = codec::decode(&meta).ok()?;
        if meta.is_expired(now_ms()) {
            return None;
        }
        let record = self.open_value(address, &mut value).ok()?;
        Some(Entry { record, meta })
    }

    /// Authenticates and decodes an entry's bytes as read from the backend.
    fn open_entry(
        &self,
        address: &Address,
        value: Option<Vec<u8>>,
        meta: Option<Vec<u8>>,
    ) -> Result<Option<Entry>, StoreError> {
        let Some(mut value) = value else {
            return Ok(None);
        };
        let meta = match meta {
            Some(m) => self.decode_meta(address, &m)?,
            None => return Err(self.tampered(address, "value without metadata".into())),
        };
        if meta.is_expired(now_ms()) {
            return Ok(None);
        }
        let record = self.open_value(address, &mut value)?;
        Ok(Some(Entry { record, meta }))
    }

    /// Drops the hot-cache copy of an entry this process is changing.
    fn forget_hot(&self, address: &Address) {
        if let Some(hot) = &self.hot {
            hot.invalidate(address);
        }
    }

    fn open_value(&self, address: &Address, value: &mut Vec<u8>) -> Result<Record, StoreError> {
        let keys = self.keyring.snapshot();
        let key_id = crypto::envelope_key_id(value).map_err(|e| self.tampered(address, e.to_string()))?;
        let key = keys
            .data_key(key_id)
            .ok_or_else(|| self.tampered(address, EnvelopeError::UnknownKey(key_id).to_string()))?;
        crypto::open_in_place(key, address, value).map_err(|e| self.tampered(address, e.to_string()))?;
        codec::decode(value).map_err(|e| self.tampered(address, format!("record does not decode: {e}")))
    }

    fn decode_meta(&self, address: &Address, bytes: &[u8]) -> Result<EntryMeta, StoreError> {
        codec::decode(bytes).map_err(|e| self.tampered(address, format!("metadata does not decode: {e}")))
    }

    fn tampered(&self, address: &Address, reason: String) -> StoreError {
        self.tampered.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%address, %reason, "stored entry failed to open; treating it as absent");
        StoreError::Tampered { address: *address, reason }
    }

    /// A store-wide setting (e.g. the marker of an unfinished re-encryption).
    pub fn setting(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.backend.get_setting(name)?)
    }

    pub fn set_setting(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        self.backend.put_setting(name, value)?;
        Ok(self.backend.flush()?)
    }

    pub fn clear_setting(&self, name: &str) -> Result<(), StoreError> {
        self.backend.put_setting(name, &[])?;
        Ok(self.backend.flush()?)
    }

    pub fn stats(&self) -> StoreStats {
        StoreStats {
            entries: self.entries.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            disk_bytes: self.backend.size_on_disk().unwrap_or(0),
            tampered: self.tampered.load(Ordering::Relaxed),
            lost: self.lost.load(Ordering::Relaxed),
        }
    }

    /// What the integrity check at open found wrong (only ever non-empty when the store was
    /// opened with `accept_damage`).
    pub fn damage(&self) -> &[String] {
        &self.damage
    }

    fn lock_tally(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.tally.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes every completed write durable now (`put` in durable mode already waits for its
    /// own entry; this is for bulk writers and shutdown).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.flush_served()?;
        Ok(self.backend.flush()?)
    }
}
