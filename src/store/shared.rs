//! Opening and creating a store kept in Redis, shared by every replica.
//!
//! The format marker (`<prefix>format`) is written last at creation, as the HOLDFAST file is
//! for the embedded store: its presence means the store is complete. The keyring is created
//! with SET-if-absent semantics, so two replicas starting at once on an empty Redis make one
//! store: the loser waits for the winner's marker and opens that.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::Store;
use super::engine::Backend;
use super::engine::{RedisBackend, RedisKeyringCell, RedisTarget};
use super::error::StoreOpenError;
use super::layout::FORMAT_VERSION;
use super::open::{Handle, KEYRING_IDENTITY_SETTING};
use super::options::StoreOptions;
use crate::secret::StoreSecret;
use crate::store::keyring::{Keyring, KeyringError};

const MARKER_HEADER: &str = "holdfast store";
/// How long a replica waits for another one that is creating the store right now.
const CREATION_WAIT: Duration = Duration::from_secs(10);

impl Store {
    /// Opens the store in Redis at `target`, creating it if `options.create_if_missing` and
    /// there is none. Refuses a newer format or a wrong secret without writing.
    pub fn open_redis(
        target: &RedisTarget,
        secret: &StoreSecret,
        options: StoreOptions,
    ) -> Result<Self, StoreOpenError> {
        let backend = connect(target)?;
        let deadline = std::time::Instant::now() + CREATION_WAIT;
        loop {
            let location = PathBuf::from(backend.location());
            match read_format(&backend)? {
                Some(format) if format > FORMAT_VERSION => {
                    return Err(StoreOpenError::NewerFormat {
                        path: location,
                        found: format,
                        supported: FORMAT_VERSION,
                    });
                }
                Some(format) if format < FORMAT_VERSION => {
                    return Err(StoreOpenError::OlderFormat { path: location, found: format, current: FORMAT_VERSION });
                }
                Some(_) => return Self::open_in(backend, secret, options),
                None if !options.create_if_missing => {
                    return Err(StoreOpenError::NotFound { path: location });
                }
                None => match Self::create_in(backend.clone(), secret, options.clone()) {
                    // Another replica is creating it right now: wait for its marker.
                    Err(StoreOpenError::AlreadyExists { .. }) if std::time::Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    Err(StoreOpenError::AlreadyExists { path }) => {
                        return Err(StoreOpenError::NotAStore {
                            path,
                            reason: "it has a keyring but no format marker: an earlier `holdfast init` was \
                                     interrupted. Delete the keys under this prefix and run it again"
                                .into(),
                        });
                    }
                    other => return other,
                },
            }
        }
    }

    /// Creates a new store in Redis; fails if one (or a keyring) is already under the prefix.
    pub fn create_redis(
        target: &RedisTarget,
        secret: &StoreSecret,
        options: StoreOptions,
    ) -> Result<Self, StoreOpenError> {
        let backend = connect(target)?;
        if read_format(&backend)?.is_some() {
            return Err(StoreOpenError::AlreadyExists { path: PathBuf::from(backend.location()) });
        }
        Self::create_in(backend, secret, options)
    }

    /// Whether this store is shared with other replicas through Redis.
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// The access trail of a shared store, kept in Redis beside it.
    pub fn shared_trail(&self) -> Option<Arc<dyn crate::store::trail_cell::TrailCell>> {
        let backend = self.shared.clone()?;
        Some(Arc::new(super::engine::RedisTrailCell(backend)))
    }

    /// Where the store is, for logs: its directory, or the Redis URL without secrets.
    pub fn location(&self) -> String {
        match &self.shared {
            Some(backend) => backend.location().to_owned(),
            None => self.path.display().to_string(),
        }
    }

    /// Redis's `maxmemory-policy`, if this store is in Redis and Redis lets us read it.
    pub fn eviction_policy(&self) -> Option<String> {
        self.shared.as_ref()?.eviction_policy()
    }

    fn create_in(
        backend: Arc<RedisBackend>,
        secret: &StoreSecret,
        options: StoreOptions,
    ) -> Result<Self, StoreOpenError> {
        let location = PathBuf::from(backend.location());
        let corrupt = |e: super::BackendError| unreachable(&backend, e);
        let cell = Arc::new(RedisKeyringCell(backend.clone()));
        let keyring = match Keyring::create_shared(cell, secret, options.kdf) {
            Err(KeyringError::Exists { .. }) => return Err(StoreOpenError::AlreadyExists { path: location }),
            other => other?,
        };
        backend.put_setting("format_version", &FORMAT_VERSION.to_be_bytes()).map_err(corrupt)?;
        backend.put_setting(KEYRING_IDENTITY_SETTING, &keyring.snapshot().identity()).map_err(corrupt)?;
        let marker = format!("{MARKER_HEADER}\nformat {FORMAT_VERSION}\n");
        if !backend.swap_named("format", None, marker.as_bytes()).map_err(corrupt)? {
            return Err(StoreOpenError::AlreadyExists { path: location });
        }
        let handle = Handle { backend: backend.clone(), reopenable: None, shared: Some(backend) };
        Self::assemble(&location, handle, keyring, options)
    }

    fn open_in(
        backend: Arc<RedisBackend>,
        secret: &StoreSecret,
        options: StoreOptions,
    ) -> Result<Self, StoreOpenError> {
        let location = PathBuf::from(backend.location());
        let keyring = Keyring::unlock_shared(Arc::new(RedisKeyringCell(backend.clone())), secret)?;
        let setting = |name| backend.get_setting(name).map_err(|e| unreachable(&backend, e));
        match setting("format_version")? {
            Some(v) if v == FORMAT_VERSION.to_be_bytes() => {}
            other => {
                return Err(StoreOpenError::Corrupt {
                    path: location,
                    reason: format!("database format {other:?} disagrees with the format marker"),
                });
            }
        }
        if setting(KEYRING_IDENTITY_SETTING)?.is_some_and(|r| r != keyring.snapshot().identity()) {
            return Err(StoreOpenError::ForeignKeyring { path: location });
        }
        let handle = Handle { backend: backend.clone(), reopenable: None, shared: Some(backend) };
        Self::assemble(&location, handle, keyring, options)
    }
}

fn connect(target: &RedisTarget) -> Result<Arc<RedisBackend>, StoreOpenError> {
    RedisBackend::connect(target)
        .map(Arc::new)
        .map_err(|e| StoreOpenError::Unreachable { location: target.location(), reason: e.to_string() })
}

fn unreachable(backend: &RedisBackend, e: super::BackendError) -> StoreOpenError {
    StoreOpenError::Unreachable { location: backend.location().to_owned(), reason: e.to_string() }
}

/// The format named by the marker, `None` if there is no marker yet.
fn read_format(backend: &RedisBackend) -> Result<Option<u32>, StoreOpenError> {
    let Some(bytes) = backend.get_named("format").map_err(|e| unreachable(backend, e))? else {
        return Ok(None);
    };
    let not_a_store =
        |reason: &str| StoreOpenError::NotAStore { path: PathBuf::from(backend.location()), reason: reason.to_owned() };
    let text = String::from_utf8(bytes).map_err(|_| not_a_store("its format marker is not text"))?;
    let mut lines = text.lines();
    match (lines.next(), lines.next().and_then(|l| l.strip_prefix("format "))) {
        (Some(MARKER_HEADER), Some(n)) => match n.trim().parse::<u32>() {
            Ok(0) | Err(_) => Err(not_a_store("its format marker names no valid format")),
            Ok(n) => Ok(Some(n)),
        },
        _ => Err(not_a_store("its format marker is not one Holdfast wrote")),
    }
}
