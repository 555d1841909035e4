//! The encrypted, content-addressed response store: the one API the proxy and the admin
//! commands use.
//!
//! `Store` seals every record under the keyring's active data key and keeps it in a `Backend`
//! (sled by default). Reads open and authenticate; a value that fails is reported as tampered,
//! counted, and never returned.
//!
//! - `write`: put (durable), delete, re-seal, served notes, the free-space reserve, eviction.
//! - `committer`: group commit — one fsync for every answer completing together.
//! - `integrity`: the sealed count and digest that tell "entries missing" from "store empty".
//! - `verify`: the check at open, `cache verify` and `cache repair`.
//! - `engine`: the byte-level storage trait and the engines behind it: sled (default), redb and
//!   fjall embedded, Redis / Valkey shared by many replicas; reopening an embedded one after a
//!   sticky write failure, without a restart.
//! - `hot_cache`: the sealed in-process cache of recently served entries in front of Redis.
//! - `layout`, `migrate`: the store directory and format upgrades.

pub mod codec;
mod committer;
pub mod crypto;
pub(crate) mod durable;
mod engine;
mod hot_cache;
mod integrity;
pub mod keyring;
mod layout;
mod migrate;
pub mod record;
mod shared;
mod verify;
mod write;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use crate::clock::now_ms;
pub use committer::{DURABLE_WAIT, Durability, RELAXED_INTERVAL};
pub use engine::{
    Backend, BackendError, EntryBytes, EntryFuture, MetaUpdate, RawAddress, RedisBackend, RedisTarget, SledBackend,
    redacted,
};
pub use hot_cache::HotCacheLimits;
pub use layout::{Engine, FORMAT_VERSION};
pub use migrate::{MigrationReport, migrate};
pub use verify::{RepairReport, VerifyReport};

use crate::cache_key::address::{Address, Addresser, Namespace};
use crate::cache_key::normalize::NormalizedRequest;
use crate::secret::StoreSecret;
use crate::store::keyring::{KdfParams, Keyring, KeyringError};
use crate::store::record::{EntryMeta, Record};
use codec::CodecError;
use committer::Committer;
use crypto::EnvelopeError;
use engine::{EngineOpenError, reopen};
use integrity::Tally;
use layout::{Found, Layout};

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

/// Why a store could not be opened. Each says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum StoreOpenError {
    #[error("no store at {path}; create one with `holdfast init` (or let `holdfast serve` create it)")]
    NotFound { path: PathBuf },
    #[error("{path} is not a Holdfast store: {reason}. Point the store path at a new or empty directory")]
    NotAStore { path: PathBuf, reason: String },
    #[error("store at {path} already exists; open it instead, or choose another path")]
    AlreadyExists { path: PathBuf },
    #[error(
        "store at {path} has format {found}, newer than this build supports ({supported}); \
         upgrade holdfast (nothing was changed)"
    )]
    NewerFormat { path: PathBuf, found: u32, supported: u32 },
    #[error("store at {path} has format {found}; run `holdfast migrate` to upgrade it to {current}")]
    OlderFormat { path: PathBuf, found: u32, current: u32 },
    #[error(
        "store at {path} is open in another process (a running `holdfast serve`?); stop it, or run the \
         command against the server with --server URL"
    )]
    InUse { path: PathBuf },
    #[error(
        "store at {path} was created with the {found} engine, but store.engine is {configured}; set \
         store.engine = \"{found}\" (nothing was changed)"
    )]
    EngineMismatch { path: PathBuf, found: Engine, configured: Engine },
    #[error(
        "the {engine} storage engine is not in this build{}; rebuild with `cargo build --release --features {}`",
        .path.as_ref().map(|p| format!(" (the store at {} uses it)", p.display())).unwrap_or_default(),
        .engine.feature().unwrap_or_default()
    )]
    EngineNotBuilt { path: Option<PathBuf>, engine: Engine },
    #[error("store at {path} is damaged: {reason}; restore it from a backup")]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "store at {path} has lost entries: {}. Nothing was served from it. Run `holdfast cache verify` to see \
         what is missing, then restore a backup or run `holdfast cache repair` to go on with what still opens",
        .problems.join("; ")
    )]
    Damaged { path: PathBuf, problems: Vec<String> },
    #[error(
        "the keyring at {path}/keyring belongs to another store: its keys are not this database's. \
         Put this store's own keyring file back (nothing was changed)"
    )]
    ForeignKeyring { path: PathBuf },
    #[error("cannot open store at {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(
        "cannot use the Redis store at {location}: {reason}. Check store.url (or HOLDFAST_STORE_URL) and that \
         Redis is running"
    )]
    Unreachable { location: String, reason: String },
    #[error(transparent)]
    Keyring(#[from] KeyringError),
}

/// Why a store operation failed. The proxy logs these and carries on as if the store were
/// empty: a store failure never fails a request upstream can answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("entry {address} is tampered or corrupt: {reason}")]
    Tampered { address: Address, reason: String },
    #[error("cannot encode record: {0}")]
    Encode(CodecError),
    #[error(transparent)]
    Keyring(#[from] KeyringError),
    #[error("key {id} still seals {records} records; re-encrypt them first (`holdfast keys rotate --reencrypt`)")]
    KeyInUse { id: u32, records: u64 },
    #[error(
        "the disk holding the store has {free} bytes free and {needed} are kept in reserve; answers are \
         served but not stored until space is freed (no restart needed)"
    )]
    DiskFull { free: u64, needed: u64 },
}

impl StoreError {
    /// Whether a network store did not answer (it logs that itself, once per interval).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Backend(BackendError::Unavailable(_)) | Self::Keyring(KeyringError::Unavailable { .. }))
    }
}

/// A record together with its bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub record: Record,
    pub meta: EntryMeta,
}

/// Totals for `cache stats`, /metrics and /readyz.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StoreStats {
    pub entries: u64,
    /// Sum of sealed value sizes.
    pub bytes: u64,
    pub disk_bytes: u64,
    /// Reads that found a tampered or corrupt value since the store was opened.
    pub tampered: u64,
    /// Entries the integrity record expected but the store no longer holds, as last found by
    /// an open or `cache verify` (0 when nothing is known to be lost).
    pub lost: u64,
}

pub struct Store {
    backend: Arc<dyn Backend>,
    keyring: Keyring,
    path: PathBuf,
    options: StoreOptions,
    entries: AtomicU64,
    bytes: AtomicU64,
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

/// A backend and, when it can be reopened or is shared, its typed handle for that.
struct Handle {
    backend: Arc<dyn Backend>,
    reopenable: Option<Arc<reopen::Reopenable>>,
    shared: Option<Arc<RedisBackend>>,
}

/// Wraps an embedded backend so the committer can reopen it after a failed write.
fn reopenable(backend: Arc<dyn Backend>, layout: &Layout, engine: Engine, options: &StoreOptions) -> Handle {
    let (layout, options) = (layout.clone(), options.clone());
    let opener: reopen::Opener = Box::new(move || open_engine(&layout, engine, &options).map_err(|e| e.to_string()));
    let reopenable = Arc::new(reopen::Reopenable::new(backend, opener));
    Handle { backend: reopenable.clone(), reopenable: Some(reopenable), shared: None }
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
    /// Opens the store at `path`, creating it first if `options.create_if_missing` and there is
    /// none. Refuses a foreign directory, a newer format, or a wrong secret without writing.
    pub fn open(path: &Path, secret: &StoreSecret, options: StoreOptions) -> Result<Self, StoreOpenError> {
        let layout = Layout::new(path);
        match layout.inspect()? {
            Found::Nothing if options.create_if_missing => Self::create_at(&layout, secret, options),
            Found::Nothing => Err(StoreOpenError::NotFound { path: path.to_owned() }),
            Found::Store { format, .. } if format < FORMAT_VERSION => {
                Err(StoreOpenError::OlderFormat { path: path.to_owned(), found: format, current: FORMAT_VERSION })
            }
            Found::Store { engine, .. } => {
                if let Some(configured) = options.engine.filter(|c| *c != engine) {
                    return Err(StoreOpenError::EngineMismatch { path: path.to_owned(), found: engine, configured });
                }
                if !engine.is_built() {
                    return Err(StoreOpenError::EngineNotBuilt { path: Some(path.to_owned()), engine });
                }
                let keyring_path = layout.keyring();
                if !keyring_path.exists() {
                    return Err(StoreOpenError::Corrupt {
                        path: path.to_owned(),
                        reason: "the keyring file is missing".into(),
                    });
                }
                // Before unlocking, so a secret that does not unlock another store's keyring
                // does not read as a wrong one, and nothing is opened or written.
                if keyring_of_another_store(&layout) {
                    return Err(StoreOpenError::ForeignKeyring { path: path.to_owned() });
                }
                let keyring = Keyring::unlock(&keyring_path, secret)?;
                if !layout.db(engine).is_dir() {
                    return Err(StoreOpenError::Corrupt {
                        path: path.to_owned(),
                        reason: format!("the {engine} database directory {} is missing", layout.db(engine).display()),
                    });
                }
                let backend = open_engine(&layout, engine, &options)?;
                match backend.get_setting("format_version").map_err(|e| corrupt(path, e))? {
                    Some(v) if v == FORMAT_VERSION.to_be_bytes() => {}
                    other => {
                        return Err(StoreOpenError::Corrupt {
                            path: path.to_owned(),
                            reason: format!("database format {other:?} disagrees with the HOLDFAST marker"),
                        });
                    }
                }
                let identity = keyring.snapshot().identity();
                let recorded = backend.get_setting(KEYRING_IDENTITY_SETTING).map_err(|e| corrupt(path, e))?;
                if recorded.as_deref().is_some_and(|r| r != identity) {
                    return Err(StoreOpenError::ForeignKeyring { path: path.to_owned() });
                }
                if recorded.is_none() {
                    // Stores made before the identity was kept learn it at their first open.
                    backend.put_setting(KEYRING_IDENTITY_SETTING, &identity).map_err(|e| corrupt(path, e))?;
                }
                keep_identity_file(&layout, &identity)?;
                let accept_damage = options.accept_damage;
                let reopenable = reopenable(backend, &layout, engine, &options);
                let mut store = Self::assemble(path, reopenable, keyring, options)?;
                store.check_at_open()?;
                if !store.damage.is_empty() && !accept_damage {
                    return Err(StoreOpenError::Damaged { path: path.to_owned(), problems: store.damage.clone() });
                }
                Ok(store)
            }
        }
    }

    /// Creates a new store; fails if one (or anything else) is already at `path`.
    pub fn create(path: &Path, secret: &StoreSecret, options: StoreOptions) -> Result<Self, StoreOpenError> {
        let layout = Layout::new(path);
        match layout.inspect()? {
            Found::Nothing => Self::create_at(&layout, secret, options),
            Found::Store { .. } => Err(StoreOpenError::AlreadyExists { path: path.to_owned() }),
        }
    }

    fn create_at(layout: &Layout, secret: &StoreSecret, options: StoreOptions) -> Result<Self, StoreOpenError> {
        let engine = options.engine.unwrap_or_default();
        if !engine.is_built() {
            return Err(StoreOpenError::EngineNotBuilt { path: None, engine });
        }
        layout.create_root()?;
        let keyring = Keyring::create(&layout.keyring(), secret, options.kdf)?;
        let backend = open_engine(layout, engine, &options)?;
        let path = &layout.root;
        backend.put_setting("format_version", &FORMAT_VERSION.to_be_bytes()).map_err(|e| corrupt(path, e))?;
        let identity = keyring.snapshot().identity();
        backend.put_setting(KEYRING_IDENTITY_SETTING, &identity).map_err(|e| corrupt(path, e))?;
        keep_identity_file(layout, &identity)?;
        let tally_key = keyring.snapshot().tally_key();
        backend.put_tally(&Tally::default().seal(tally_key.expose())).map_err(|e| corrupt(path, e))?;
        backend.flush().map_err(|e| corrupt(path, e))?;
        integrity::write_file(path, tally_key.expose(), &Tally::default())
            .map_err(|source| StoreOpenError::Io { path: path.to_owned(), source })?;
        layout.write_marker(FORMAT_VERSION, engine)?;
        let reopenable = reopenable(backend, layout, engine, &options);
        Self::assemble(path, reopenable, keyring, options)
    }

    /// Wraps an already opened backend (a test double, or a future network backend).
    pub fn with_backend(
        path: &Path,
        backend: Arc<dyn Backend>,
        keyring: Keyring,
        options: StoreOptions,
    ) -> Result<Self, StoreOpenError> {
        let store = Self::assemble(path, Handle { backend, reopenable: None, shared: None }, keyring, options)?;
        // Carry on from the backend's integrity record, so the next write extends it.
        if let Ok(Some(bytes)) = store.backend.get_tally()
            && let Ok(tally) = Tally::open(store.tally_key.expose(), &bytes)
        {
            *store.lock_tally() = tally;
        }
        Ok(store)
    }

    fn assemble(path: &Path, handle: Handle, keyring: Keyring, options: StoreOptions) -> Result<Self, StoreOpenError> {
        let Handle { backend, reopenable, shared } = handle;
        let flusher = backend.clone();
        let tally = Arc::new(Mutex::new(Tally::default()));
        let tally_key = keyring.snapshot().tally_key();
        let mut write_integrity: Box<dyn FnMut() + Send> = match shared {
            None => integrity_writer(backend.clone(), tally.clone(), tally_key.clone(), path.to_owned()),
            Some(_) => Box::new(|| {}),
        };
        let healer = reopenable.clone();
        let idle: Box<dyn FnMut() + Send> = Box::new(move || {
            if let Some(healer) = &healer {
                match healer.try_reopen() {
                    Ok(true) => tracing::warn!("the database was reopened after a write failure; recording resumes"),
                    Ok(false) => {}
                    Err(e) => tracing::error!(error = %e, "the database failed a write and cannot be reopened yet"),
                }
            }
            write_integrity();
        });
        let (committer, thread) = Committer::start(options.durability, Box::new(move || flusher.flush()), idle)
            .map_err(|source| StoreOpenError::Io { path: path.to_owned(), source })?;
        let mut store = Self {
            backend,
            keyring,
            path: path.to_owned(),
            options,
            entries: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            tampered: AtomicU64::new(0),
            evicting: Mutex::new(()),
            served: Mutex::new(std::collections::HashMap::new()),
            committer,
            commit_thread: Mutex::new(Some(thread)),
            tally,
            tally_key,
            damage: Vec::new(),
            lost: AtomicU64::new(0),
            scanned: None,
            write_failure: Mutex::new(None),
            eviction: tokio::sync::Notify::new(),
            reopenable,
            hot: shared.as_ref().and_then(|b| hot_cache::HotCache::new(b.hot_cache_limits())),
            shared,
        };
        let corrupt =
            |e: &dyn std::fmt::Display| StoreOpenError::Corrupt { path: path.to_owned(), reason: e.to_string() };
        // Totals saved by a clean close spare a scan of every entry (seconds at a million);
        // after a crash they may be stale, so count.
        // A shared store's totals move with every replica's writes and Redis's own expiry:
        // always counted.
        let saved = match store.shared {
            None => store.backend.get_setting(TOTALS_SETTING).map_err(|e| corrupt(&e))?,
            Some(_) => None,
        };
        let (entries, bytes) = match saved.as_deref().and_then(parse_totals) {
            Some(totals) => totals,
            None => {
                let (mut entries, mut bytes, mut scanned) = (0, 0, Tally::default());
                let key = *store.tally_key.expose();
                store
                    .for_each_meta(|address, meta| {
                        entries += 1;
                        bytes += meta.size;
                        scanned.apply(&key, &address.0, true);
                    })
                    .map_err(|e| corrupt(&e))?;
                store.scanned = Some(scanned);
                (entries, bytes)
            }
        };
        store.entries.store(entries, Ordering::Relaxed);
        store.bytes.store(bytes, Ordering::Relaxed);
        if saved.is_some_and(|s| !s.is_empty()) {
            // While open the totals move; an empty value means "count at the next open".
            store.backend.put_setting(TOTALS_SETTING, &[]).map_err(|e| corrupt(&e))?;
        }
        Ok(store)
    }

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

/// The identity of the keyring this database belongs to (`KeySet::identity`).
const KEYRING_IDENTITY_SETTING: &str = "keyring_identity";

/// Entry count and sealed bytes, saved by a clean close: 16 bytes, both u64 big-endian.
const TOTALS_SETTING: &str = "totals";

fn parse_totals(bytes: &[u8]) -> Option<(u64, u64)> {
    let b: &[u8; 16] = bytes.try_into().ok()?;
    Some((u64::from_be_bytes(b[..8].try_into().ok()?), u64::from_be_bytes(b[8..].try_into().ok()?)))
}

impl Drop for Store {
    fn drop(&mut self) {
        self.committer.stop();
        if let Some(thread) = self.commit_thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = thread.join();
        }
        if self.shared.is_some() {
            // Nothing of this process's own to save: see `shared`.
            if let Err(e) = self.flush_served() {
                tracing::warn!(error = %e, "could not write the last served counts to the Redis store");
            }
            return;
        }
        let mut totals = self.entries.load(Ordering::Relaxed).to_be_bytes().to_vec();
        totals.extend_from_slice(&self.bytes.load(Ordering::Relaxed).to_be_bytes());
        if let Err(e) = self.backend.put_setting(TOTALS_SETTING, &totals) {
            tracing::warn!(error = %e, "could not save the store's totals; the next open will count them");
        }
        match self.flush() {
            // Only a damaged store opened for inspection keeps its old record: writing the
            // current one would hide from the next open what `cache verify` was shown.
            Ok(()) if self.damage.is_empty() => {
                let tally = *self.lock_tally();
                if let Err(e) = integrity::write_file(&self.path, self.tally_key.expose(), &tally) {
                    tracing::warn!(error = %e, "could not write the store's integrity record");
                }
            }
            Ok(()) => {}
            Err(e) => tracing::error!(error = %e, path = %self.path.display(), "final flush of the store failed"),
        }
    }
}

/// The committer's housekeeping: about once a second, if entries were added or removed since
/// the last time, flush and then write the file copy of the integrity record. The snapshot is
/// taken before the flush, so the file never claims more than the database has made durable.
fn integrity_writer(
    backend: Arc<dyn Backend>,
    tally: Arc<Mutex<Tally>>,
    key: crate::secret::SecretKey,
    dir: PathBuf,
) -> Box<dyn FnMut() + Send> {
    let mut written: Option<Tally> = None;
    Box::new(move || {
        let snapshot = *tally.lock().unwrap_or_else(|e| e.into_inner());
        if written == Some(snapshot) || (written.is_none() && snapshot.generation == 0) {
            return;
        }
        if backend.flush().is_err() {
            return;
        }
        match integrity::write_file(&dir, key.expose(), &snapshot) {
            Ok(()) => written = Some(snapshot),
            Err(e) => tracing::warn!(error = %e, "could not write the store's integrity record"),
        }
    })
}

/// A clear copy of `settings["keyring_identity"]` beside the database, in hex: read when a secret
/// does not unlock the keyring, so that another store's keyring is named as such without opening
/// the database (opening sled writes to it, and a failed unlock must leave every byte alone).
const KEYRING_IDENTITY_FILE: &str = "keyring-identity";

/// Whether the keyring at `layout` belongs to another store than its database: the identity in
/// the keyring's clear header differs from the one kept beside the database. `false` when
/// either is missing (a keyring from before format 2; a store this build has not opened yet).
fn keyring_of_another_store(layout: &Layout) -> bool {
    let Some(identity) = Keyring::file_identity(&layout.keyring()) else { return false };
    let kept = std::fs::read_to_string(layout.root.join(KEYRING_IDENTITY_FILE)).unwrap_or_default();
    !kept.trim().is_empty() && kept.trim() != hex(&identity)
}

/// Keeps the clear copy of the keyring identity up to date (written at creation, and at the
/// first open of a store made before it existed).
fn keep_identity_file(layout: &Layout, identity: &[u8; 32]) -> Result<(), StoreOpenError> {
    let path = layout.root.join(KEYRING_IDENTITY_FILE);
    let text = format!("{}\n", hex(identity));
    if std::fs::read_to_string(&path).is_ok_and(|kept| kept == text) {
        return Ok(());
    }
    crate::store::durable::write_atomically(&path, text.as_bytes())
        .map_err(|source| StoreOpenError::Io { path: layout.root.clone(), source })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Opens (or creates) the database of `engine` in its directory of the store.
fn open_engine(layout: &Layout, engine: Engine, options: &StoreOptions) -> Result<Arc<dyn Backend>, StoreOpenError> {
    match engine {
        Engine::Sled => open_sled(layout, options).map(|b| Arc::new(b) as Arc<dyn Backend>),
        #[cfg(feature = "engine-redb")]
        Engine::Redb => engine::RedbBackend::open(&layout.db(engine), options.cache_bytes)
            .map(|b| Arc::new(b) as Arc<dyn Backend>)
            .map_err(|e| engine_open_error(&layout.root, e)),
        #[cfg(feature = "engine-fjall")]
        Engine::Fjall => engine::FjallBackend::open(&layout.db(engine), options.cache_bytes)
            .map(|b| Arc::new(b) as Arc<dyn Backend>)
            .map_err(|e| engine_open_error(&layout.root, e)),
        // Only reachable in a build without one of the engine features.
        #[allow(unreachable_patterns)]
        other => Err(StoreOpenError::EngineNotBuilt { path: Some(layout.root.clone()), engine: other }),
    }
}

fn engine_open_error(path: &Path, e: EngineOpenError) -> StoreOpenError {
    let path = path.to_owned();
    match e {
        EngineOpenError::Locked => StoreOpenError::InUse { path },
        EngineOpenError::Corrupt(reason) => StoreOpenError::Corrupt { path, reason },
        EngineOpenError::Io(source) => StoreOpenError::Io { path, source },
    }
}

fn open_sled(layout: &Layout, options: &StoreOptions) -> Result<SledBackend, StoreOpenError> {
    let path = layout.root.clone();
    let backend =
        SledBackend::open(&layout.db(Engine::Sled), options.cache_bytes).map_err(|e| engine_open_error(&path, e))?;
    let unexpected: Vec<String> =
        backend.tree_names().into_iter().filter(|n| n != "entries" && n != "settings").collect();
    if !unexpected.is_empty() {
        return Err(StoreOpenError::NotAStore {
            path,
            reason: format!("its database has foreign trees {unexpected:?}"),
        });
    }
    Ok(backend)
}

fn corrupt(path: &Path, e: BackendError) -> StoreOpenError {
    StoreOpenError::Corrupt { path: path.to_owned(), reason: e.to_string() }
}
