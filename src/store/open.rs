//! Opening, creating and closing the embedded store: every check before a byte is written,
//! the engine, the keyring's identity, and putting a `Store` together (the Redis store's
//! opening, in `shared`, ends in the same `assemble`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::committer::Committer;
use super::engine::{Backend, BackendError, Engine, EngineOpenError, RedisBackend, SledBackend, reopen};
use super::error::StoreOpenError;
use super::integrity::{self, Tally};
use super::layout::{FORMAT_VERSION, Found, Layout};
use super::options::StoreOptions;
use super::{Store, hot_cache};
use crate::secret::StoreSecret;
use crate::store::keyring::Keyring;

/// A backend and, when it can be reopened or is shared, its typed handle for that.
pub(super) struct Handle {
    /// What the store calls: the engine itself, or the reopenable wrapper around it.
    pub(super) backend: Arc<dyn Backend>,
    /// The same backend as a `Reopenable`, for an embedded store (see `Store::reopenable`).
    pub(super) reopenable: Option<Arc<reopen::Reopenable>>,
    /// The same backend as Redis, for a shared store (see `Store::shared`).
    pub(super) shared: Option<Arc<RedisBackend>>,
}

/// Wraps an embedded backend so the committer can reopen it after a failed write.
fn reopenable(backend: Arc<dyn Backend>, layout: &Layout, engine: Engine, options: &StoreOptions) -> Handle {
    let (layout, options) = (layout.clone(), options.clone());
    let opener: reopen::Opener = Box::new(move || open_engine(&layout, engine, &options).map_err(|e| e.to_string()));
    let reopenable = Arc::new(reopen::Reopenable::new(backend, opener));
    Handle { backend: reopenable.clone(), reopenable: Some(reopenable), shared: None }
}

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

    pub(super) fn assemble(
        path: &Path,
        handle: Handle,
        keyring: Keyring,
        options: StoreOptions,
    ) -> Result<Self, StoreOpenError> {
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
}

/// The identity of the keyring this database belongs to (`KeySet::identity`).
pub(super) const KEYRING_IDENTITY_SETTING: &str = "keyring_identity";

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
        Engine::Redb => super::engine::RedbBackend::open(&layout.db(engine), options.cache_bytes)
            .map(|b| Arc::new(b) as Arc<dyn Backend>)
            .map_err(|e| engine_open_error(&layout.root, e)),
        #[cfg(feature = "engine-fjall")]
        Engine::Fjall => super::engine::FjallBackend::open(&layout.db(engine), options.cache_bytes)
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
