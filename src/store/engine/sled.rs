//! The embedded backend: sled 0.34 (the stable line).
//!
//! One tree, `entries`, holds both halves of every entry under prefixed keys, so a batch on
//! that one tree writes them atomically: `m‖address` → metadata, `v‖address` → sealed value.
//! All metadata sorts before all values, so scanning metadata never reads a sealed value.
//! The store's integrity record sits in the same tree under the one-byte key `t` (between the
//! two ranges), so each entry's transaction writes it too.
//!
//! sled 0.34 panics on some damaged files (e.g. "tried to serialize Uninitialized"); every call
//! into it is wrapped in `catch_unwind` so a damaged database is an error the operator can act
//! on, never a crash of the server or of `cache verify`.
//! A second tree, `settings`, holds store-wide settings such as the format version.

use std::ops::Bound;
use std::path::Path;

use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::{Backend, BackendError, MetaUpdate, RawAddress};
use crate::cache_key::address::ADDRESS_LEN;

// The key scheme is shared by every embedded engine (redb and fjall use it as well).
pub(super) const META: u8 = b'm';
pub(super) const VALUE: u8 = b'v';
pub(super) const TALLY: &[u8] = b"t";

/// Runs a database call, turning a panic inside the engine into a corruption error. (redb's
/// debug builds also panic on some damaged files, so the other engines use it too.)
pub(super) fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, BackendError>) -> Result<T, BackendError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        Err(BackendError::Corrupt(format!("the database failed during {what}: {}", panic_reason(&*panic))))
    })
}

/// The message of a caught panic.
pub(super) fn panic_reason(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

pub struct SledBackend {
    db: sled::Db,
    entries: sled::Tree,
    settings: sled::Tree,
}

/// Why an embedded database could not be opened (any engine); the store turns these into
/// user-facing errors.
#[derive(Debug)]
pub enum EngineOpenError {
    /// Another process has the database open.
    Locked,
    Corrupt(String),
    Io(std::io::Error),
}

pub(super) fn key(prefix: u8, address: &RawAddress) -> [u8; 1 + ADDRESS_LEN] {
    let mut k = [0u8; 1 + ADDRESS_LEN];
    k[0] = prefix;
    k[1..].copy_from_slice(address);
    k
}

fn tx_err(e: TransactionError<()>) -> BackendError {
    match e {
        TransactionError::Storage(e) => err(e),
        // Our transactions never abort; a conflict is retried by sled itself.
        TransactionError::Abort(()) => BackendError::Io("transaction aborted".into()),
    }
}

fn err(e: sled::Error) -> BackendError {
    match e {
        sled::Error::Corruption { at, .. } => BackendError::Corrupt(format!("sled reports corruption at {at:?}")),
        other => BackendError::Io(other.to_string()),
    }
}

impl SledBackend {
    /// Opens (or creates) the database in `dir`. `cache_bytes` bounds sled's page cache.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self, EngineOpenError> {
        let opened = std::panic::catch_unwind(|| {
            let db = sled::Config::new().path(dir).cache_capacity(cache_bytes).open().map_err(|e| match e {
                sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => EngineOpenError::Locked,
                sled::Error::Io(io) => EngineOpenError::Io(io),
                other => EngineOpenError::Corrupt(other.to_string()),
            })?;
            let entries = db.open_tree("entries").map_err(|e| EngineOpenError::Corrupt(e.to_string()))?;
            let settings = db.open_tree("settings").map_err(|e| EngineOpenError::Corrupt(e.to_string()))?;
            Ok(Self { db, entries, settings })
        });
        opened.unwrap_or_else(|panic| {
            Err(EngineOpenError::Corrupt(format!(
                "sled failed while recovering the database: {}",
                panic_reason(&*panic)
            )))
        })
    }

    /// Names of the trees in the database besides sled's default one; a store has exactly ours.
    pub fn tree_names(&self) -> Vec<String> {
        self.db
            .tree_names()
            .into_iter()
            .map(|n| String::from_utf8_lossy(&n).into_owned())
            .filter(|n| n != "__sled__default")
            .collect()
    }
}

impl Backend for SledBackend {
    fn get_value(&self, address: &RawAddress) -> Result<Option<Vec<u8>>, BackendError> {
        guarded("a read", || Ok(self.entries.get(key(VALUE, address)).map_err(err)?.map(|v| v.to_vec())))
    }

    fn get_meta(&self, address: &RawAddress) -> Result<Option<Vec<u8>>, BackendError> {
        guarded("a read", || Ok(self.entries.get(key(META, address)).map_err(err)?.map(|v| v.to_vec())))
    }

    fn put_entry(
        &self,
        address: &RawAddress,
        meta: &[u8],
        value: &[u8],
        tally: &[u8],
    ) -> Result<Option<Vec<u8>>, BackendError> {
        let (mkey, vkey) = (key(META, address), key(VALUE, address));
        guarded("a write", || {
            self.entries
                .transaction(|tx| {
                    let previous = tx.insert(&mkey[..], meta)?;
                    tx.insert(&vkey[..], value)?;
                    tx.insert(TALLY, tally)?;
                    Ok::<_, ConflictableTransactionError<()>>(previous.map(|p| p.to_vec()))
                })
                .map_err(tx_err)
        })
    }

    fn replace_entry(
        &self,
        address: &RawAddress,
        expected: &[u8],
        meta: &[u8],
        value: &[u8],
    ) -> Result<bool, BackendError> {
        let (mkey, vkey) = (key(META, address), key(VALUE, address));
        guarded("a write", || {
            let outcome = self.entries.transaction(|tx| {
                match tx.get(vkey)? {
                    Some(current) if current.as_ref() == expected => {}
                    _ => return Ok(false),
                }
                tx.insert(&mkey[..], meta)?;
                tx.insert(&vkey[..], value)?;
                Ok::<bool, ConflictableTransactionError<()>>(true)
            });
            outcome.map_err(tx_err)
        })
    }

    fn update_meta(&self, address: &RawAddress, update: MetaUpdate<'_>) -> Result<(), BackendError> {
        guarded("a write", || {
            self.entries
                .update_and_fetch(key(META, address), |old| old.map(|o| update(o).unwrap_or_else(|| o.to_vec())))
                .map(|_| ())
                .map_err(err)
        })
    }

    fn delete_entry(&self, address: &RawAddress, tally: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        let (mkey, vkey) = (key(META, address), key(VALUE, address));
        guarded("a delete", || {
            self.entries
                .transaction(|tx| {
                    let previous = tx.remove(&mkey[..])?;
                    tx.remove(&vkey[..])?;
                    tx.insert(TALLY, tally)?;
                    Ok::<_, ConflictableTransactionError<()>>(previous.map(|p| p.to_vec()))
                })
                .map_err(tx_err)
        })
    }

    fn get_tally(&self) -> Result<Option<Vec<u8>>, BackendError> {
        guarded("a read", || Ok(self.entries.get(TALLY).map_err(err)?.map(|v| v.to_vec())))
    }

    fn put_tally(&self, tally: &[u8]) -> Result<(), BackendError> {
        guarded("a write", || self.entries.insert(TALLY, tally).map(|_| ()).map_err(err))
    }

    fn scan_meta(&self, after: Option<&RawAddress>, limit: usize) -> Result<Vec<(RawAddress, Vec<u8>)>, BackendError> {
        guarded("a scan", || {
            let mut out = Vec::with_capacity(limit.min(4096));
            for item in self.entries.range::<Vec<u8>, _>(range(META, after)).take(limit) {
                let (k, v) = item.map_err(err)?;
                out.push((address_of(&k)?, v.to_vec()));
            }
            Ok(out)
        })
    }

    fn scan_values(&self, after: Option<&RawAddress>, limit: usize) -> Result<Vec<RawAddress>, BackendError> {
        guarded("a scan", || {
            let mut out = Vec::with_capacity(limit.min(4096));
            // Keys only: sled still reads each value, but nothing is copied out.
            for item in self.entries.range::<Vec<u8>, _>(range(VALUE, after)).take(limit) {
                let (k, _) = item.map_err(err)?;
                out.push(address_of(&k)?);
            }
            Ok(out)
        })
    }

    fn get_setting(&self, name: &str) -> Result<Option<Vec<u8>>, BackendError> {
        guarded("a read", || Ok(self.settings.get(name).map_err(err)?.map(|v| v.to_vec())))
    }

    fn put_setting(&self, name: &str, value: &[u8]) -> Result<(), BackendError> {
        guarded("a write", || self.settings.insert(name, value).map(|_| ()).map_err(err))
    }

    fn flush(&self) -> Result<(), BackendError> {
        guarded("a flush", || self.db.flush().map(|_| ()).map_err(err))
    }

    fn size_on_disk(&self) -> Result<u64, BackendError> {
        guarded("a size check", || self.db.size_on_disk().map_err(err))
    }
}

/// The keys of one prefix, after `after` if given.
pub(super) fn range(prefix: u8, after: Option<&RawAddress>) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let start = match after {
        Some(a) => Bound::Excluded(key(prefix, a).to_vec()),
        None => Bound::Included(vec![prefix]),
    };
    (start, Bound::Excluded(vec![prefix + 1]))
}

pub(super) fn address_of(k: &[u8]) -> Result<RawAddress, BackendError> {
    k.get(1..)
        .and_then(|a| a.try_into().ok())
        .ok_or_else(|| BackendError::Corrupt(format!("entry key of {} bytes", k.len())))
}
