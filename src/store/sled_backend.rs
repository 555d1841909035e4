//! The embedded backend: sled 0.34 (the stable line).
//!
//! One tree, `entries`, holds both halves of every entry under prefixed keys, so a batch on
//! that one tree writes them atomically: `m‖address` → metadata, `v‖address` → sealed value.
//! All metadata sorts before all values, so scanning metadata never reads a sealed value.
//! A second tree, `settings`, holds store-wide settings such as the format version.

use std::ops::Bound;
use std::path::Path;

use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::backend::{Backend, BackendError, MetaUpdate, RawAddress};
use crate::address::ADDRESS_LEN;

const META: u8 = b'm';
const VALUE: u8 = b'v';

pub struct SledBackend {
    db: sled::Db,
    entries: sled::Tree,
    settings: sled::Tree,
}

/// Why the database could not be opened; the store turns these into user-facing errors.
#[derive(Debug)]
pub enum SledOpenError {
    /// Another process has the database open.
    Locked,
    Corrupt(String),
    Io(std::io::Error),
}

fn key(prefix: u8, address: &RawAddress) -> [u8; 1 + ADDRESS_LEN] {
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
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self, SledOpenError> {
        let db = sled::Config::new().path(dir).cache_capacity(cache_bytes).open().map_err(|e| match e {
            sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => SledOpenError::Locked,
            sled::Error::Io(io) => SledOpenError::Io(io),
            other => SledOpenError::Corrupt(other.to_string()),
        })?;
        let entries = db.open_tree("entries").map_err(|e| SledOpenError::Corrupt(e.to_string()))?;
        let settings = db.open_tree("settings").map_err(|e| SledOpenError::Corrupt(e.to_string()))?;
        Ok(Self { db, entries, settings })
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
        Ok(self.entries.get(key(VALUE, address)).map_err(err)?.map(|v| v.to_vec()))
    }

    fn get_meta(&self, address: &RawAddress) -> Result<Option<Vec<u8>>, BackendError> {
        Ok(self.entries.get(key(META, address)).map_err(err)?.map(|v| v.to_vec()))
    }

    fn put_entry(&self, address: &RawAddress, meta: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        let (mkey, vkey) = (key(META, address), key(VALUE, address));
        self.entries
            .transaction(|tx| {
                let previous = tx.insert(&mkey[..], meta)?;
                tx.insert(&vkey[..], value)?;
                Ok::<_, ConflictableTransactionError<()>>(previous.map(|p| p.to_vec()))
            })
            .map_err(tx_err)
    }

    fn replace_entry(
        &self,
        address: &RawAddress,
        expected: &[u8],
        meta: &[u8],
        value: &[u8],
    ) -> Result<bool, BackendError> {
        let (mkey, vkey) = (key(META, address), key(VALUE, address));
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
    }

    fn update_meta(&self, address: &RawAddress, update: MetaUpdate<'_>) -> Result<(), BackendError> {
        self.entries
            .update_and_fetch(key(META, address), |old| old.map(|o| update(o).unwrap_or_else(|| o.to_vec())))
            .map(|_| ())
            .map_err(err)
    }

    fn delete_entry(&self, address: &RawAddress) -> Result<Option<Vec<u8>>, BackendError> {
        let (mkey, vkey) = (key(META, address), key(VALUE, address));
        self.entries
            .transaction(|tx| {
                let previous = tx.remove(&mkey[..])?;
                tx.remove(&vkey[..])?;
                Ok::<_, ConflictableTransactionError<()>>(previous.map(|p| p.to_vec()))
            })
            .map_err(tx_err)
    }

    fn scan_meta(&self, after: Option<&RawAddress>, limit: usize) -> Result<Vec<(RawAddress, Vec<u8>)>, BackendError> {
        let start = match after {
            Some(a) => Bound::Excluded(key(META, a).to_vec()),
            None => Bound::Included(vec![META]),
        };
        let end = Bound::Excluded(vec![META + 1]);
        let mut out = Vec::with_capacity(limit.min(4096));
        for item in self.entries.range::<Vec<u8>, _>((start, end)).take(limit) {
            let (k, v) = item.map_err(err)?;
            let address: RawAddress =
                k[1..].try_into().map_err(|_| BackendError::Corrupt(format!("metadata key of {} bytes", k.len())))?;
            out.push((address, v.to_vec()));
        }
        Ok(out)
    }

    fn get_setting(&self, name: &str) -> Result<Option<Vec<u8>>, BackendError> {
        Ok(self.settings.get(name).map_err(err)?.map(|v| v.to_vec()))
    }

    fn put_setting(&self, name: &str, value: &[u8]) -> Result<(), BackendError> {
        self.settings.insert(name, value).map(|_| ()).map_err(err)
    }

    fn flush(&self) -> Result<(), BackendError> {
        self.db.flush().map(|_| ()).map_err(err)
    }

    fn size_on_disk(&self) -> Result<u64, BackendError> {
        self.db.size_on_disk().map_err(err)
    }
}
