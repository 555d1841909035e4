//! The embedded backend on fjall 3 (cargo feature `engine-fjall`): an LSM tree with a
//! write-ahead journal and checksummed blocks, in `<store>/fjall/`.
//!
//! Keyspace `entries` uses sled's key scheme (`m‖address` → metadata, `v‖address` → sealed
//! value, `t` → integrity record); keyspace `settings` holds store-wide settings. Every change
//! is one single-writer transaction, so value, metadata and tally are journalled as one batch
//! and the metadata a write replaces is read under the same writer lock.
//!
//! Commits go to the journal's buffer; `flush` persists the journal with `fsync`
//! (`PersistMode::SyncAll`), which makes every earlier commit durable at once, as the
//! committer's group commit needs.

use std::path::Path;

use fjall::{KeyspaceCreateOptions, PersistMode, Readable, SingleWriterTxDatabase, SingleWriterTxKeyspace};

use super::embedded::{EngineOpenError, META, TALLY, VALUE, address_of, entry_keys, guarded, key, range, recovering};
use super::{Backend, BackendError, EntryBytes, MetaUpdate, RawAddress, Result};

pub struct FjallBackend {
    /// The database: its single-writer transactions, journal persistence and disk usage.
    db: SingleWriterTxDatabase,
    /// Both halves of every entry and the integrity record (the embedded key scheme).
    entries: SingleWriterTxKeyspace,
    /// Store-wide settings (format version, keyring identity, saved totals).
    settings: SingleWriterTxKeyspace,
}

fn err(e: fjall::Error) -> BackendError {
    match e {
        fjall::Error::Io(io) | fjall::Error::Storage(fjall::LsmError::Io(io)) => BackendError::Io(io.to_string()),
        // A failed journal write: fjall refuses every later write until reopened, which the
        // store's reopen-after-failure does (it acts on `Io`).
        fjall::Error::Poisoned => BackendError::Io("fjall refuses writes after an earlier write failed".into()),
        fjall::Error::Locked => BackendError::Io("the fjall database is locked by another process".into()),
        other => BackendError::Corrupt(format!("fjall reports a damaged database: {other:?}")),
    }
}

impl FjallBackend {
    /// Opens (or creates) the database in `dir`. `cache_bytes` bounds fjall's block cache.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self, EngineOpenError> {
        recovering("fjall", || {
            let open_err = |e: fjall::Error| match e {
                fjall::Error::Locked => EngineOpenError::Locked,
                fjall::Error::Io(io) => EngineOpenError::Io(io),
                other => EngineOpenError::Corrupt(format!("fjall cannot recover {}: {other:?}", dir.display())),
            };
            let db = SingleWriterTxDatabase::builder(dir).cache_size(cache_bytes).open().map_err(open_err)?;
            let entries = db.keyspace("entries", KeyspaceCreateOptions::default).map_err(open_err)?;
            let settings = db.keyspace("settings", KeyspaceCreateOptions::default).map_err(open_err)?;
            Ok(Self { db, entries, settings })
        })
    }

    fn read(&self, keyspace: &SingleWriterTxKeyspace, k: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(keyspace.get(k).map_err(err)?.map(|v| v.to_vec()))
    }
}

impl Backend for FjallBackend {
    fn get_entry(&self, address: &RawAddress) -> Result<EntryBytes> {
        guarded("a read", || {
            // One snapshot: value and metadata from the same point in the journal.
            let snapshot = self.db.read_tx();
            let ks = self.entries.inner();
            let value = snapshot.get(ks, key(VALUE, address)).map_err(err)?.map(|v| v.to_vec());
            let meta = snapshot.get(ks, key(META, address)).map_err(err)?.map(|v| v.to_vec());
            Ok((value, meta))
        })
    }

    fn get_value(&self, address: &RawAddress) -> Result<Option<Vec<u8>>> {
        guarded("a read", || self.read(&self.entries, &key(VALUE, address)))
    }

    fn get_meta(&self, address: &RawAddress) -> Result<Option<Vec<u8>>> {
        guarded("a read", || self.read(&self.entries, &key(META, address)))
    }

    fn put_entry(&self, address: &RawAddress, meta: &[u8], value: &[u8], tally: &[u8]) -> Result<Option<Vec<u8>>> {
        let (mkey, vkey) = entry_keys(address);
        guarded("a write", || {
            let mut tx = self.db.write_tx();
            let previous = tx.get(self.entries.inner(), mkey).map_err(err)?.map(|p| p.to_vec());
            tx.insert(&self.entries, mkey, meta);
            tx.insert(&self.entries, vkey, value);
            tx.insert(&self.entries, TALLY, tally);
            tx.commit().map_err(err)?;
            Ok(previous)
        })
    }

    fn replace_entry(&self, address: &RawAddress, expected: &[u8], meta: &[u8], value: &[u8]) -> Result<bool> {
        let (mkey, vkey) = entry_keys(address);
        guarded("a write", || {
            // The single-writer transaction holds the write lock from this read to the commit.
            let mut tx = self.db.write_tx();
            let current = tx.get(self.entries.inner(), vkey).map_err(err)?;
            if current.as_deref() != Some(expected) {
                return Ok(false);
            }
            tx.insert(&self.entries, mkey, meta);
            tx.insert(&self.entries, vkey, value);
            tx.commit().map_err(err)?;
            Ok(true)
        })
    }

    fn update_meta(&self, address: &RawAddress, update: MetaUpdate<'_>) -> Result<()> {
        let mkey = key(META, address);
        guarded("a write", || {
            let mut tx = self.db.write_tx();
            let old = tx.get(self.entries.inner(), mkey).map_err(err)?;
            if let Some(new) = old.and_then(|o| update(&o)) {
                tx.insert(&self.entries, mkey, new);
                tx.commit().map_err(err)?;
            }
            Ok(())
        })
    }

    fn delete_entry(&self, address: &RawAddress, tally: &[u8]) -> Result<Option<Vec<u8>>> {
        let (mkey, vkey) = entry_keys(address);
        guarded("a delete", || {
            let mut tx = self.db.write_tx();
            let previous = tx.get(self.entries.inner(), mkey).map_err(err)?.map(|p| p.to_vec());
            tx.remove(&self.entries, mkey);
            tx.remove(&self.entries, vkey);
            tx.insert(&self.entries, TALLY, tally);
            tx.commit().map_err(err)?;
            Ok(previous)
        })
    }

    fn get_tally(&self) -> Result<Option<Vec<u8>>> {
        guarded("a read", || self.read(&self.entries, TALLY))
    }

    fn put_tally(&self, tally: &[u8]) -> Result<()> {
        guarded("a write", || self.entries.insert(TALLY, tally).map_err(err))
    }

    fn scan_meta(&self, after: Option<&RawAddress>, limit: usize) -> Result<Vec<(RawAddress, Vec<u8>)>> {
        guarded("a scan", || {
            let mut out = Vec::with_capacity(limit.min(4096));
            for item in self.db.read_tx().range(self.entries.inner(), range(META, after)).take(limit) {
                let (k, v) = item.into_inner().map_err(err)?;
                out.push((address_of(&k)?, v.to_vec()));
            }
            Ok(out)
        })
    }

    fn scan_values(&self, after: Option<&RawAddress>, limit: usize) -> Result<Vec<RawAddress>> {
        guarded("a scan", || {
            let mut out = Vec::with_capacity(limit.min(4096));
            for item in self.db.read_tx().range(self.entries.inner(), range(VALUE, after)).take(limit) {
                out.push(address_of(&item.key().map_err(err)?)?);
            }
            Ok(out)
        })
    }

    fn get_setting(&self, name: &str) -> Result<Option<Vec<u8>>> {
        guarded("a read", || self.read(&self.settings, name.as_bytes()))
    }

    fn put_setting(&self, name: &str, value: &[u8]) -> Result<()> {
        guarded("a write", || self.settings.insert(name, value).map_err(err))
    }

    fn flush(&self) -> Result<()> {
        guarded("a flush", || self.db.persist(PersistMode::SyncAll).map_err(err))
    }

    fn size_on_disk(&self) -> Result<u64> {
        guarded("a size check", || self.db.disk_space().map_err(err))
    }
}
