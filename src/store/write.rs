//! The write side of the store: `put` (durable per `store.durability`), delete and re-seal,
//! each keeping the integrity record exact; served notes; the free-space reserve that keeps a
//! full disk from poisoning the database; expiry and eviction (never inside `put`).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use super::engine::RawAddress;
use super::error::StoreError;
use super::integrity::Tally;
use super::{MIN_FREE_BYTES, SCAN_PAGE, Store, now_ms};
use crate::cache_key::address::Address;
use crate::store::codec;
use crate::store::crypto;
use crate::store::keyring::KeyringError;
use crate::store::record::{EntryMeta, Record};

impl Store {
    /// Notes that the entry was served to a client (for `audit list` and eviction order).
    ///
    /// Only noted in memory here: a database write on every hit would cost more than the hit
    /// itself. `flush_served` writes the notes (the server does so every second, and `flush`,
    /// eviction and admin commands do so first), so a crash loses at most the last second's
    /// counts, never an entry.
    pub fn mark_served(&self, address: &Address) -> Result<(), StoreError> {
        let now = now_ms();
        let mut pending = self.served.lock().unwrap_or_else(|e| e.into_inner());
        let note = pending.entry(*address).or_insert((0, 0));
        note.0 += 1;
        note.1 = note.1.max(now);
        Ok(())
    }

    /// Writes the served notes taken since the last call into the entries' metadata.
    pub fn flush_served(&self) -> Result<usize, StoreError> {
        if self.check_space(0).is_err() {
            // Kept in memory until space returns: a failed write would poison the database.
            return Ok(0);
        }
        let pending = std::mem::take(&mut *self.served.lock().unwrap_or_else(|e| e.into_inner()));
        let written = pending.len();
        for (address, (times, last)) in pending {
            self.backend.update_meta(address.as_bytes(), &|old| {
                let mut meta: EntryMeta = codec::decode(old).ok()?;
                meta.times_served += times;
                meta.last_served_ms = meta.last_served_ms.max(last);
                codec::encode(&meta).ok()
            })?;
        }
        Ok(written)
    }

    /// Seals and stores `record` at `address`, replacing any earlier entry there.
    ///
    /// In durable mode (the default) it returns only once the entry is fsync'd, sharing the
    /// fsync with every other `put` completing at the same time (group commit); the proxy
    /// sends the client's last byte after it returns, so an answer a client has fully
    /// received survives a crash. In relaxed mode it returns once the entry is written and a
    /// flush follows within `RELAXED_INTERVAL`.
    pub fn put(&self, address: &Address, record: &Record) -> Result<(), StoreError> {
        let now = now_ms();
        self.write(address, record, History::Fresh { now_ms: now })?;
        let generation = self.committer.written();
        self.committer.wait(generation).inspect_err(|e| self.note_write_failure(e.to_string()))?;
        *self.write_failure.lock().unwrap_or_else(|e| e.into_inner()) = None;
        Ok(())
    }

    /// Refuses a write of about `incoming` bytes that would leave less than `MIN_FREE_BYTES`
    /// free. If the free space cannot be read, the write is tried.
    fn check_space(&self, incoming: u64) -> Result<(), StoreError> {
        if self.shared.is_some() {
            return Ok(()); // Redis's memory, not this host's disk
        }
        let Ok(free) = fs2::available_space(&self.path) else { return Ok(()) };
        let needed = MIN_FREE_BYTES.saturating_add(incoming.saturating_mul(2));
        if free < needed {
            let e = StoreError::DiskFull { free, needed };
            self.note_write_failure(e.to_string());
            return Err(e);
        }
        Ok(())
    }

    /// After a reopen the database holds what it had made durable, which may be less than the
    /// counters say: take the integrity record and the totals from it again.
    fn reload(&self, tally: &mut Tally) -> Result<(), StoreError> {
        if let Some(bytes) = self.backend.get_tally()?
            && let Ok(t) = Tally::open(self.tally_key.expose(), &bytes)
        {
            *tally = t;
        }
        let (mut entries, mut bytes) = (0, 0);
        self.for_each_meta(|_, meta| {
            entries += 1;
            bytes += meta.size;
        })?;
        self.entries.store(entries, Ordering::Relaxed);
        self.bytes.store(bytes, Ordering::Relaxed);
        Ok(())
    }

    fn note_write_failure(&self, reason: String) {
        *self.write_failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
    }

    /// Whether a new answer could be stored now: `Err` says why not (a full disk, a failing
    /// one). For /readyz; it never writes.
    pub fn writable(&self) -> Result<(), String> {
        if self.reopenable.as_ref().is_some_and(|r| r.failed()) {
            return Err("a write failed; the database is reopened every second until it works".into());
        }
        match self.check_space(0) {
            Err(e) => Err(e.to_string()),
            Ok(()) => match self.write_failure.lock().unwrap_or_else(|e| e.into_inner()).clone() {
                // The space is back; the next write will tell whether the failure was space.
                Some(reason) if !reason.contains("bytes free") => Err(reason),
                _ => Ok(()),
            },
        }
    }

    /// As `put`, keeping bookkeeping from elsewhere (an imported entry keeps its history).
    /// Does not wait for durability: bulk writers (import) call `flush` once at the end.
    pub fn put_as_of(
        &self,
        address: &Address,
        record: &Record,
        created_ms: u64,
        last_served_ms: u64,
        times_served: u64,
    ) -> Result<(), StoreError> {
        self.write(address, record, History::Given { created_ms, last_served_ms, times_served })
    }

    fn write(&self, address: &Address, record: &Record, history: History) -> Result<(), StoreError> {
        let (sealed, key_id) = self.seal(address, record)?;
        self.check_space(sealed.len() as u64)?;
        let meta = |previous: Option<&[u8]>| {
            let (created_ms, last_served_ms, times_served) = match history {
                History::Given { created_ms, last_served_ms, times_served } => {
                    (created_ms, last_served_ms, times_served)
                }
                // A question answered again keeps how often it was asked: the size budget keeps
                // what is asked often, and in fallback mode every ask is a fresh answer.
                History::Fresh { now_ms } => {
                    let before = previous.and_then(|m| codec::decode::<EntryMeta>(m).ok());
                    (now_ms, now_ms, before.map_or(0, |m| m.times_served.saturating_add(1)))
                }
            };
            let meta = EntryMeta {
                created_ms,
                last_served_ms,
                times_served,
                size: sealed.len() as u64,
                key_id,
                expires_ms: self.options.retention.map_or(0, |r| created_ms.saturating_add(r.as_millis() as u64)),
            };
            codec::encode(&meta).map(|encoded| (meta, encoded)).map_err(StoreError::Encode)
        };
        self.forget_hot(address);
        let (meta, previous) = if self.shared.is_some() {
            // Other replicas write too: no tally of this process's own to keep (see `shared`),
            // and no read before the write (Redis's own eviction ignores the ask count).
            let (meta, encoded) = meta(None)?;
            (meta, self.backend.put_entry(address.as_bytes(), &encoded, &sealed, &[])?)
        } else {
            let mut tally = self.lock_tally();
            if self.reopenable.as_ref().is_some_and(|r| r.take_reopened()) {
                self.reload(&mut tally)?;
            }
            let before = self.backend.get_meta(address.as_bytes())?;
            let (meta, encoded) = meta(before.as_deref())?;
            let mut next = *tally;
            if before.is_none() {
                next.apply(self.tally_key.expose(), address.as_bytes(), true);
            }
            let previous =
                self.backend.put_entry(address.as_bytes(), &encoded, &sealed, &next.seal(self.tally_key.expose()))?;
            *tally = next;
            (meta, previous)
        };
        match previous.and_then(|m| codec::decode::<EntryMeta>(&m).ok()) {
            Some(old) => {
                self.bytes.fetch_sub(old.size.min(self.bytes.load(Ordering::Relaxed)), Ordering::Relaxed);
            }
            None => {
                self.entries.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.bytes.fetch_add(meta.size, Ordering::Relaxed);
        if self.over_budget() {
            // Never here: eviction scans and sorts every entry (seconds at a million), and the
            // client is waiting for its last byte. The server's evictor task does it.
            self.eviction.notify_one();
        }
        Ok(())
    }

    fn seal(&self, address: &Address, record: &Record) -> Result<(Vec<u8>, u32), StoreError> {
        let plaintext = zeroize::Zeroizing::new(codec::encode(record).map_err(StoreError::Encode)?);
        let (keys, key_id) = self.keyring.key_for_seal()?;
        let key = keys.data_key(key_id).ok_or(KeyringError::UnknownKey(key_id))?;
        Ok((crypto::seal(key, address, &plaintext), key_id))
    }

    /// Re-seals the entry at `address` under the active data key if it is sealed under another.
    /// Compare-and-swap: if the entry changed meanwhile (a fresh answer was stored), the fresh
    /// one wins and nothing is written. Returns whether it re-sealed.
    pub fn reseal(&self, address: &Address) -> Result<bool, StoreError> {
        let Some(old_value) = self.backend.get_value(address.as_bytes())? else { return Ok(false) };
        let Some(old_meta) = self.backend.get_meta(address.as_bytes())? else { return Ok(false) };
        let meta: EntryMeta = self.decode_meta(address, &old_meta)?;
        let active = self.keyring.snapshot().active_id();
        if crypto::envelope_key_id(&old_value).ok() == Some(active) {
            return Ok(false);
        }
        let record = self.open_value(address, &mut old_value.clone())?;
        let (sealed, key_id) = self.seal(address, &record)?;
        let new_meta = EntryMeta { size: sealed.len() as u64, key_id, ..meta };
        let encoded = codec::encode(&new_meta).map_err(StoreError::Encode)?;
        self.forget_hot(address);
        let replaced = self.backend.replace_entry(address.as_bytes(), &old_value, &encoded, &sealed)?;
        if replaced {
            let delta = new_meta.size as i64 - meta.size as i64;
            if delta >= 0 {
                self.bytes.fetch_add(delta as u64, Ordering::Relaxed);
            } else {
                self.bytes.fetch_sub((-delta as u64).min(self.bytes.load(Ordering::Relaxed)), Ordering::Relaxed);
            }
        }
        Ok(replaced)
    }

    /// Destroys data key `id` once no entry is sealed under it.
    pub fn retire_key(&self, id: u32) -> Result<(), StoreError> {
        if self.keyring.snapshot().active_id() == id {
            return Err(KeyringError::ActiveKey(id).into());
        }
        let records = self.count_by_key()?.get(&id).copied().unwrap_or(0);
        if records > 0 {
            return Err(StoreError::KeyInUse { id, records });
        }
        Ok(self.keyring.retire(id)?)
    }

    /// Deletes the entry at `address`. Returns whether there was one.
    pub fn delete(&self, address: &Address) -> Result<bool, StoreError> {
        self.forget_hot(address);
        let removed = if self.shared.is_some() {
            self.backend.delete_entry(address.as_bytes(), &[])?
        } else {
            let mut tally = self.lock_tally();
            let had_meta = self.backend.get_meta(address.as_bytes())?.is_some();
            if !had_meta && self.backend.get_value(address.as_bytes())?.is_none() {
                return Ok(false);
            }
            let mut next = *tally;
            if had_meta {
                next.apply(self.tally_key.expose(), address.as_bytes(), false);
            }
            let removed = self.backend.delete_entry(address.as_bytes(), &next.seal(self.tally_key.expose()))?;
            *tally = next;
            removed
        };
        let Some(removed) = removed else { return Ok(false) };
        self.entries.fetch_sub(1.min(self.entries.load(Ordering::Relaxed)), Ordering::Relaxed);
        if let Ok(m) = codec::decode::<EntryMeta>(&removed) {
            self.bytes.fetch_sub(m.size.min(self.bytes.load(Ordering::Relaxed)), Ordering::Relaxed);
        }
        Ok(true)
    }

    /// Visits every entry's metadata in address order, a page at a time. An undecodable
    /// metadata value is reported as tampered and skipped.
    pub fn for_each_meta(&self, mut visit: impl FnMut(Address, EntryMeta)) -> Result<(), StoreError> {
        let mut after: Option<RawAddress> = None;
        loop {
            let page = self.backend.scan_meta(after.as_ref(), SCAN_PAGE)?;
            let Some((last, _)) = page.last() else {
                return Ok(());
            };
            after = Some(*last);
            for (raw, bytes) in page {
                let address = Address(raw);
                match self.decode_meta(&address, &bytes) {
                    Ok(meta) => visit(address, meta),
                    Err(_) => continue,
                }
            }
        }
    }

    /// Deletes every expired entry. Returns how many went.
    pub fn purge_expired(&self) -> Result<u64, StoreError> {
        let now = now_ms();
        let mut expired = Vec::new();
        self.for_each_meta(|a, m| {
            if m.is_expired(now) {
                expired.push(a);
            }
        })?;
        let mut removed = 0;
        for address in expired {
            removed += u64::from(self.delete(&address)?);
        }
        Ok(removed)
    }

    /// Whether the sealed bytes are over `max_bytes`.
    pub fn over_budget(&self) -> bool {
        self.options.max_bytes.is_some_and(|max| self.bytes.load(Ordering::Relaxed) > max)
    }

    /// Resolves when a write has taken the store over its budget (at once if one did since
    /// the last call).
    pub async fn eviction_wanted(&self) {
        self.eviction.notified().await;
    }

    /// Evicts the entries least worth keeping (`EntryMeta::keep_score`: served least often,
    /// longest ago) until the store is back to 90% of its budget (the slack stops every further
    /// write from triggering another full scan).
    pub fn evict_to_budget(&self) -> Result<u64, StoreError> {
        let Some(max) = self.options.max_bytes else {
            return Ok(0);
        };
        let Ok(_guard) = self.evicting.try_lock() else {
            return Ok(0);
        };
        self.flush_served()?;
        let mut all = Vec::new();
        let now = now_ms();
        self.for_each_meta(|a, m| all.push((m.keep_score(now), m.size, a)))?;
        let mut total: u64 = all.iter().map(|(_, size, _)| size).sum();
        let target = max - max / 10;
        all.sort_unstable_by(|x, y| x.0.total_cmp(&y.0));
        let mut evicted = 0;
        for (_, size, address) in all {
            if total <= target {
                break;
            }
            if self.delete(&address)? {
                evicted += 1;
            }
            total = total.saturating_sub(size);
        }
        if evicted > 0 {
            tracing::info!(evicted, budget_bytes = max, "evicted the entries served least often and longest ago");
        }
        Ok(evicted)
    }

    /// How many entries each data key seals (for `keys list` and rotation progress).
    pub fn count_by_key(&self) -> Result<BTreeMap<u32, u64>, StoreError> {
        let mut counts = BTreeMap::new();
        self.for_each_meta(|_, m| *counts.entry(m.key_id).or_insert(0) += 1)?;
        Ok(counts)
    }
}

/// Where a write's bookkeeping comes from.
#[derive(Clone, Copy)]
enum History {
    /// A fresh answer from a provider, stored at `now_ms`.
    Fresh { now_ms: u64 },
    /// Carried over from elsewhere (an import).
    Given { created_ms: u64, last_served_ms: u64, times_served: u64 },
}
