//! The embedded backend on redb (cargo feature `engine-redb`): a copy-on-write B-tree in one
//! file, `<store>/redb/store.redb`, with checksummed pages and ACID transactions.
//!
//! The tables mirror sled's trees: `entries` holds `m‖address` → metadata, `v‖address` →
//! sealed value and `t` → the integrity record; `settings` holds store-wide settings. Every
//! change is one write transaction, so value, metadata and tally commit together.
//!
//! Writes commit with `Durability::None` (in memory and the page cache, not yet fsync'd);
//! `flush` commits an empty transaction with `Durability::Immediate` and two-phase commit,
//! which makes every earlier commit durable with one round of fsyncs. That is what the
//! committer's group commit needs: many answers, one flush. A crash loses only commits made
//! since the last flush, exactly the window the durability modes document.

use std::ops::Bound;
use std::path::{Path, PathBuf};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::embedded::{EngineOpenError, META, TALLY, VALUE, address_of, entry_keys, guarded, key, range, recovering};
use super::{Backend, BackendError, EntryBytes, MetaUpdate, RawAddress, Result};

const ENTRIES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("entries");
const SETTINGS: TableDefinition<&str, &[u8]> = TableDefinition::new("settings");

/// The database file inside the engine's directory.
const FILE: &str = "store.redb";

pub struct RedbBackend {
    /// The database; each call opens its own transaction on it.
    db: Database,
    /// The database file, whose length is the size on disk.
    file: PathBuf,
}

fn err(e: impl Into<redb::Error>) -> BackendError {
    match e.into() {
        redb::Error::Corrupted(reason) => BackendError::Corrupt(format!("redb reports corruption: {reason}")),
        other => BackendError::Io(other.to_string()),
    }
}

/// Runs `f` in one write transaction that commits without an fsync (see the module docs).
fn write<T>(
    db: &Database,
    f: impl FnOnce(&mut redb::Table<'_, &'static [u8], &'static [u8]>) -> Result<T, redb::Error>,
) -> Result<T> {
    let mut tx = db.begin_write().map_err(err)?;
    tx.set_durability(Durability::None).map_err(err)?;
    let out = {
        let mut table = tx.open_table(ENTRIES).map_err(err)?;
        f(&mut table).map_err(err)?
    };
    tx.commit().map_err(err)?;
    Ok(out)
}

/// `range` with borrowed bounds, as redb's typed range takes them.
fn borrowed(bounds: &(Bound<Vec<u8>>, Bound<Vec<u8>>)) -> (Bound<&[u8]>, Bound<&[u8]>) {
    fn b(bound: &Bound<Vec<u8>>) -> Bound<&[u8]> {
        match bound {
            Bound::Included(k) => Bound::Included(k.as_slice()),
            Bound::Excluded(k) => Bound::Excluded(k.as_slice()),
            Bound::Unbounded => Bound::Unbounded,
        }
    }
    (b(&bounds.0), b(&bounds.1))
}

impl RedbBackend {
    /// Opens (or creates) the database in `dir`. `cache_bytes` bounds redb's page cache.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self, EngineOpenError> {
        std::fs::create_dir_all(dir).map_err(EngineOpenError::Io)?;
        let file = dir.join(FILE);
        let db = recovering("redb", || {
            let db = Database::builder()
                .set_cache_size(usize::try_from(cache_bytes).unwrap_or(usize::MAX))
                .create(&file)
                .map_err(|e| match e {
                    redb::DatabaseError::DatabaseAlreadyOpen => EngineOpenError::Locked,
                    redb::DatabaseError::Storage(redb::StorageError::Io(io)) => EngineOpenError::Io(io),
                    other => EngineOpenError::Corrupt(format!("redb cannot open {}: {other}", file.display())),
                })?;
            // Both tables exist from the start, so readers never meet a missing table.
            let corrupt = |e: redb::Error| EngineOpenError::Corrupt(format!("redb: {e}"));
            let tx = db.begin_write().map_err(|e| corrupt(e.into()))?;
            tx.open_table(ENTRIES).map_err(|e| corrupt(e.into()))?;
            tx.open_table(SETTINGS).map_err(|e| corrupt(e.into()))?;
            tx.commit().map_err(|e| corrupt(e.into()))?;
            Ok(db)
        })?;
        Ok(Self { db, file })
    }

    fn read_entry(&self, k: &[u8]) -> Result<Option<Vec<u8>>> {
        let tx = self.db.begin_read().map_err(err)?;
        let table = tx.open_table(ENTRIES).map_err(err)?;
        Ok(table.get(k).map_err(err)?.map(|v| v.value().to_vec()))
    }

    fn scan(&self, prefix: u8, after: Option<&RawAddress>, limit: usize) -> Result<Vec<(RawAddress, Vec<u8>)>> {
        let tx = self.db.begin_read().map_err(err)?;
        let table = tx.open_table(ENTRIES).map_err(err)?;
        let bounds = range(prefix, after);
        let mut out = Vec::with_capacity(limit.min(4096));
        for item in table.range::<&[u8]>(borrowed(&bounds)).map_err(err)?.take(limit) {
            let (k, v) = item.map_err(err)?;
            // Values are skipped by the caller that wants keys only; metadata is small.
            let v = if prefix == META { v.value().to_vec() } else { Vec::new() };
            out.push((address_of(k.value())?, v));
        }
        Ok(out)
    }
}

impl Backend for RedbBackend {
    fn get_entry(&self, address: &RawAddress) -> Result<EntryBytes> {
        guarded("a read", || {
            // One read transaction: value and metadata from the same commit.
            let tx = self.db.begin_read().map_err(err)?;
            let table = tx.open_table(ENTRIES).map_err(err)?;
            let value = table.get(&key(VALUE, address)[..]).map_err(err)?.map(|v| v.value().to_vec());
            let meta = table.get(&key(META, address)[..]).map_err(err)?.map(|v| v.value().to_vec());
            Ok((value, meta))
        })
    }

    fn get_value(&self, address: &RawAddress) -> Result<Option<Vec<u8>>> {
        guarded("a read", || self.read_entry(&key(VALUE, address)))
    }

    fn get_meta(&self, address: &RawAddress) -> Result<Option<Vec<u8>>> {
        guarded("a read", || self.read_entry(&key(META, address)))
    }

    fn put_entry(&self, address: &RawAddress, meta: &[u8], value: &[u8], tally: &[u8]) -> Result<Option<Vec<u8>>> {
        let (mkey, vkey) = entry_keys(address);
        guarded("a write", || {
            write(&self.db, |table| {
                let previous = table.insert(&mkey[..], meta)?.map(|p| p.value().to_vec());
                table.insert(&vkey[..], value)?;
                table.insert(TALLY, tally)?;
                Ok(previous)
            })
        })
    }

    fn replace_entry(&self, address: &RawAddress, expected: &[u8], meta: &[u8], value: &[u8]) -> Result<bool> {
        let (mkey, vkey) = entry_keys(address);
        guarded("a write", || {
            // redb has one writer at a time: the read and the writes below are one atomic step.
            write(&self.db, |table| {
                let current_matches = table.get(&vkey[..])?.is_some_and(|c| c.value() == expected);
                if !current_matches {
                    return Ok(false);
                }
                table.insert(&mkey[..], meta)?;
                table.insert(&vkey[..], value)?;
                Ok(true)
            })
        })
    }

    fn update_meta(&self, address: &RawAddress, update: MetaUpdate<'_>) -> Result<()> {
        let mkey = key(META, address);
        guarded("a write", || {
            write(&self.db, |table| {
                let old = table.get(&mkey[..])?.map(|o| o.value().to_vec());
                if let Some(new) = old.and_then(|o| update(&o)) {
                    table.insert(&mkey[..], new.as_slice())?;
                }
                Ok(())
            })
        })
    }

    fn delete_entry(&self, address: &RawAddress, tally: &[u8]) -> Result<Option<Vec<u8>>> {
        let (mkey, vkey) = entry_keys(address);
        guarded("a delete", || {
            write(&self.db, |table| {
                let previous = table.remove(&mkey[..])?.map(|p| p.value().to_vec());
                table.remove(&vkey[..])?;
                table.insert(TALLY, tally)?;
                Ok(previous)
            })
        })
    }

    fn get_tally(&self) -> Result<Option<Vec<u8>>> {
        guarded("a read", || self.read_entry(TALLY))
    }

    fn put_tally(&self, tally: &[u8]) -> Result<()> {
        guarded("a write", || write(&self.db, |table| table.insert(TALLY, tally).map(|_| ()).map_err(Into::into)))
    }

    fn scan_meta(&self, after: Option<&RawAddress>, limit: usize) -> Result<Vec<(RawAddress, Vec<u8>)>> {
        guarded("a scan", || self.scan(META, after, limit))
    }

    fn scan_values(&self, after: Option<&RawAddress>, limit: usize) -> Result<Vec<RawAddress>> {
        guarded("a scan", || Ok(self.scan(VALUE, after, limit)?.into_iter().map(|(a, _)| a).collect()))
    }

    fn get_setting(&self, name: &str) -> Result<Option<Vec<u8>>> {
        guarded("a read", || {
            let tx = self.db.begin_read().map_err(err)?;
            let table = tx.open_table(SETTINGS).map_err(err)?;
            Ok(table.get(name).map_err(err)?.map(|v| v.value().to_vec()))
        })
    }

    fn put_setting(&self, name: &str, value: &[u8]) -> Result<()> {
        guarded("a write", || {
            let mut tx = self.db.begin_write().map_err(err)?;
            tx.set_durability(Durability::None).map_err(err)?;
            tx.open_table(SETTINGS).map_err(err)?.insert(name, value).map_err(err)?;
            tx.commit().map_err(err)
        })
    }

    fn flush(&self) -> Result<()> {
        guarded("a flush", || {
            let mut tx = self.db.begin_write().map_err(err)?;
            tx.set_durability(Durability::Immediate).map_err(err)?;
            // Two-phase commit: a commit is never trusted on its checksum alone, so a damaged
            // commit slot cannot pass for a good one after a crash.
            tx.set_two_phase_commit(true);
            tx.commit().map_err(err)
        })
    }

    fn size_on_disk(&self) -> Result<u64> {
        std::fs::metadata(&self.file).map(|m| m.len()).map_err(|e| BackendError::Io(e.to_string()))
    }
}
