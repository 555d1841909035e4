//! The embedded backend: sled 0.34 (the stable line).
//!
//! One tree, `entries`, holds both halves of every entry and the integrity record under the
//! embedded key scheme (`embedded`), so a transaction on that one tree writes them atomically.
//! Every call into sled is wrapped in `guarded`: sled 0.34 panics on some damaged files.
//! A second tree, `settings`, holds store-wide settings such as the format version.

use std::path::Path;

use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::embedded::{EngineOpenError, META, TALLY, VALUE, address_of, entry_keys, guarded, key, range, recovering};
use super::{Backend, BackendError, MetaUpdate, RawAddress, Result};

pub struct SledBackend {
    /// The database: flushed for durability, asked for its size and tree names.
    db: sled::Db,
    /// Both halves of every entry and the integrity record, so one transaction writes them.
    entries: sled::Tree,
    /// Store-wide settings (format version, keyring identity, saved totals).
    settings: sled::Tree,
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
        recovering("sled", || {
            let db = sled::Config::new().path(dir).cache_capacity(cache_bytes).open().map_err(|e| match e {
                sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => EngineOpenError::Locked,
                sled::Error::Io(io) => EngineOpenError::Io(io),
                other => EngineOpenError::Corrupt(other.to_string()),
            })?;
            let entries = db.open_tree("entries").map_err(|e| EngineOpenError::Corrupt(e.to_string()))?;
            let settings = db.open_tree("settings").map_err(|e| EngineOpenError::Corrupt(e.to_string()))?;
            Ok(Self { db, entries, settings })
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
    fn get_value(&self, address: &RawAddress) -> Result<Option<Vec<u8>>> {
        guarded("a read", || Ok(self.entries.get(key(VALUE, address)).map_err(err)?.map(|v| v.to_vec())))
    }

    fn get_meta(&self, address: &RawAddress) -> Result<Option<Vec<u8>>> {
        guarded("a read", || Ok(self.entries.get(key(META, address)).map_err(err)?.map(|v| v.to_vec())))
    }

    fn put_entry(&self, address: &RawAddress, meta: &[u8], value: &[u8], tally: &[u8]) -> Result<Option<Vec<u8>>> {
        let (mkey, vkey) = entry_keys(address);
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

    fn replace_entry(&self, address: &RawAddress, expected: &[u8], meta: &[u8], value: &[u8]) -> Result<bool> {
        let (mkey, vkey) = entry_keys(address);
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

    fn update_meta(&self, address: &RawAddress, update: MetaUpdate<'_>) -> Result<()> {
        guarded("a write", || {
            self.entries
                .update_and_fetch(key(META, address), |old| old.map(|o| update(o).unwrap_or_else(|| o.to_vec())))
                .map(|_| ())
                .map_err(err)
        })
    }

    fn delete_entry(&self, address: &RawAddress, tally: &[u8]) -> Result<Option<Vec<u8>>> {
        let (mkey, vkey) = entry_keys(address);
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

    fn get_tally(&self) -> Result<Option<Vec<u8>>> {
        guarded("a read", || Ok(self.entries.get(TALLY).map_err(err)?.map(|v| v.to_vec())))
    }

    fn put_tally(&self, tally: &[u8]) -> Result<()> {
        guarded("a write", || self.entries.insert(TALLY, tally).map(|_| ()).map_err(err))
    }

    fn scan_meta(&self, after: Option<&RawAddress>, limit: usize) -> Result<Vec<(RawAddress, Vec<u8>)>> {
        guarded("a scan", || {
            let mut out = Vec::with_capacity(limit.min(4096));
            for item in self.entries.range::<Vec<u8>, _>(range(META, after)).take(limit) {
                let (k, v) = item.map_err(err)?;
                out.push((address_of(&k)?, v.to_vec()));
            }
            Ok(out)
        })
    }

    fn scan_values(&self, after: Option<&RawAddress>, limit: usize) -> Result<Vec<RawAddress>> {
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

    fn get_setting(&self, name: &str) -> Result<Option<Vec<u8>>> {
        guarded("a read", || Ok(self.settings.get(name).map_err(err)?.map(|v| v.to_vec())))
    }

    fn put_setting(&self, name: &str, value: &[u8]) -> Result<()> {
        guarded("a write", || self.settings.insert(name, value).map(|_| ()).map_err(err))
    }

    fn flush(&self) -> Result<()> {
        guarded("a flush", || self.db.flush().map(|_| ()).map_err(err))
    }

    fn size_on_disk(&self) -> Result<u64> {
        guarded("a size check", || self.db.size_on_disk().map_err(err))
    }
}
