//! The keyring: the address key and every data key, unlocked, and the accounting of seals
//! under each data key (reserved in blocks, rotated before the AES-GCM bound), with rotation,
//! retirement and re-wrapping while the server runs.
//!
//! - `file`: the wrapped form it is kept in (its header, the KEK derivation, the envelope).
//! - `error`: why a keyring could not be opened or changed.
//!
//! The keyring lives in its own file beside the database, so unlocking never touches the
//! database: a wrong passphrase leaves every byte of the store as it was. A store shared
//! through Redis keeps it in a `KeyringCell` instead, changed only by compare-and-swap.

mod error;
mod file;
mod keyset;
#[cfg(test)]
mod tests;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};

pub use error::KeyringError;
pub(crate) use file::argon2id;
pub use file::{KEYRING_FORMAT, KdfParams, clear_identity};

use crate::cache_key::address::Addresser;
use crate::secret::{SecretKey, StoreSecret};
use crate::store::durable::write_atomically;
use file::{Contents, Kek, Opener, open_envelope};
pub use keyset::{KeyInfo, KeySet};
use keyset::{contents_of, first_contents, live_key, push_fresh_key};

/// Seals are counted in blocks that are written to the keyring before use, so a crash can only
/// over-count. 65,536 per block costs one small file write per block.
const SEAL_BLOCK: u64 = 1 << 16;
/// AES-GCM with random 96-bit nonces stays within NIST's collision bound up to 2^32 messages
/// per key; the active key is replaced before it gets there.
pub const SEAL_LIMIT: u64 = 1 << 32;

/// An unlocked keyring bound to its file.
pub struct Keyring {
    /// The keyring file (for a shared keyring: where the cell is, for messages).
    path: PathBuf,
    /// The keys now; readers clone the `Arc` and never wait for a change, which swaps it whole.
    current: RwLock<Arc<KeySet>>,
    /// The key-encryption key and how it was made. The lock also serializes every change to
    /// the file (reservations, rotation, retirement, re-wrapping), so a running server can do
    /// all of them while serving.
    writer: Mutex<Kek>,
    /// Seals under one key before it is replaced (`SEAL_LIMIT`; lowered by tests).
    seal_limit: u64,
    /// Set when the keyring is kept in Redis and shared by every replica: each change then
    /// starts from the latest stored keyring and is written by compare-and-swap.
    shared: Option<Shared>,
}

/// Where a shared keyring is kept, and the bytes this process last read or wrote there.
struct Shared {
    /// The Redis key (or other cell) holding the wrapped keyring.
    cell: Arc<dyn KeyringCell>,
    /// The stored bytes as last seen: the expected value of the next compare-and-swap, and
    /// what `refresh` compares against.
    last: Mutex<Vec<u8>>,
}

impl Shared {
    fn lock_last(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.last.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A place outside the store directory that holds the wrapped keyring, written only by
/// compare-and-swap so that replicas and admin commands never overwrite each other's changes.
pub trait KeyringCell: Send + Sync {
    /// Where it is, for messages (never with a password).
    fn describe(&self) -> String;
    /// The wrapped keyring, if there is one.
    fn load(&self) -> Result<Option<Vec<u8>>, String>;
    /// Stores `new` if the cell still holds `expected` (`None`: only if it is empty). Returns
    /// whether it did.
    fn swap(&self, expected: Option<&[u8]>, new: &[u8]) -> Result<bool, String>;
}

/// How many times a change to a shared keyring is retried when another process changed it
/// between our read and our write.
const SHARED_RETRIES: usize = 32;

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keyring({}, *****)", self.path.display())
    }
}

impl Keyring {
    /// Creates a new keyring file with a fresh address key and one data key.
    pub fn create(path: &Path, secret: &StoreSecret, params: KdfParams) -> Result<Self, KeyringError> {
        let kek = Kek::new(secret, params)?;
        let contents = first_contents();
        let keyring = Self::from_contents(path, kek, &contents);
        {
            let kek = keyring.lock_writer();
            keyring.write_file(&contents, &kek)?;
        }
        Ok(keyring)
    }

    /// Reads and unlocks an existing keyring file. Never writes.
    pub fn unlock(path: &Path, secret: &StoreSecret) -> Result<Self, KeyringError> {
        let bytes = fs::read(path).map_err(|source| KeyringError::Io { action: "read", path: path.into(), source })?;
        let (kek, contents) = open_envelope(&bytes, path, Opener::Secret(secret))?;
        Ok(Self::from_contents(path, kek, &contents))
    }

    /// Creates a keyring kept in a shared cell (a Redis key) instead of a file. Refuses if
    /// the cell already holds one: every replica must share the first.
    pub fn create_shared(
        cell: Arc<dyn KeyringCell>,
        secret: &StoreSecret,
        params: KdfParams,
    ) -> Result<Self, KeyringError> {
        let kek = Kek::new(secret, params)?;
        let contents = first_contents();
        let mut keyring = Self::from_contents(Path::new(&cell.describe()), kek, &contents);
        let bytes = {
            let kek = keyring.lock_writer();
            keyring.wrap_contents(&contents, &kek)?
        };
        if !cell.swap(None, &bytes).map_err(|e| keyring.cell_error(e))? {
            return Err(KeyringError::Exists { path: keyring.path.clone() });
        }
        keyring.shared = Some(Shared { cell, last: Mutex::new(bytes) });
        Ok(keyring)
    }

    /// The identity in the clear header of the keyring file at `path`, without unlocking it:
    /// `None` for a keyring written before format 2, or one that cannot be read or is damaged.
    pub fn file_identity(path: &Path) -> Option<[u8; 32]> {
        clear_identity(&fs::read(path).ok()?)
    }

    /// Unlocks the keyring kept in a shared cell. Never writes.
    pub fn unlock_shared(cell: Arc<dyn KeyringCell>, secret: &StoreSecret) -> Result<Self, KeyringError> {
        let path = PathBuf::from(cell.describe());
        let bytes = cell
            .load()
            .map_err(|reason| KeyringError::Unavailable { path: path.clone(), reason })?
            .ok_or_else(|| KeyringError::Corrupt { path: path.clone(), reason: "the keyring is missing".into() })?;
        let (kek, contents) = open_envelope(&bytes, &path, Opener::Secret(secret))?;
        let mut keyring = Self::from_contents(&path, kek, &contents);
        keyring.shared = Some(Shared { cell, last: Mutex::new(bytes) });
        Ok(keyring)
    }

    /// Whether the keyring is shared with other processes (kept in Redis).
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Picks up a change another replica or an admin command made to a shared keyring (a
    /// rotation, a retirement). `Ok(true)` if the keys changed. A file keyring never changes
    /// underneath its one process: always `Ok(false)`.
    pub fn refresh(&self) -> Result<bool, KeyringError> {
        let Some(shared) = &self.shared else { return Ok(false) };
        let kek = self.lock_writer();
        let Some(bytes) = shared.cell.load().map_err(|e| self.cell_error(e))? else {
            return Err(KeyringError::Corrupt { path: self.path.clone(), reason: "the keyring is missing".into() });
        };
        if *shared.lock_last() == bytes {
            return Ok(false);
        }
        let (_, contents) = open_envelope(&bytes, &self.path, Opener::Kek(&kek))?;
        self.install(&contents);
        *shared.lock_last() = bytes;
        Ok(true)
    }

    fn cell_error(&self, reason: String) -> KeyringError {
        KeyringError::Unavailable { path: self.path.clone(), reason }
    }

    fn from_contents(path: &Path, kek: Kek, contents: &Contents) -> Self {
        let address_key = SecretKey::from_bytes(contents.address_key);
        let namespace_key = SecretKey::from_bytes(contents.namespace_key);
        let keys = contents
            .keys
            .iter()
            .map(|k| {
                live_key(k.id, k.created_ms, k.retired, SecretKey::from_bytes(k.key), k.seals_reserved, contents.active)
            })
            .collect();
        let set = KeySet {
            addresser: Addresser::new(address_key.clone(), namespace_key.clone()),
            address_key,
            namespace_key,
            keys,
            active: contents.active,
        };
        Self {
            path: path.to_owned(),
            current: RwLock::new(Arc::new(set)),
            writer: Mutex::new(kek),
            seal_limit: SEAL_LIMIT,
            shared: None,
        }
    }

    /// The keys as they are now. Cheap: one `Arc` clone.
    pub fn snapshot(&self) -> Arc<KeySet> {
        // A poisoned lock only means a panic elsewhere mid-swap; the Arc inside is still whole.
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Lowers the seal limit so tests can watch automatic rotation without 2^32 writes.
    #[doc(hidden)]
    pub fn set_seal_limit_for_tests(&mut self, limit: u64) {
        self.seal_limit = limit;
    }

    /// The key set and data key id to seal the next record with. Accounts for the seal first:
    /// when the active key's reserved block is used up it reserves another in the file, and
    /// when the key nears the AES-GCM bound it rotates to a fresh key.
    pub fn key_for_seal(&self) -> Result<(Arc<KeySet>, u32), KeyringError> {
        loop {
            let set = self.snapshot();
            let active = set.active_key();
            let n = active.sealed.fetch_add(1, Ordering::Relaxed);
            if n < active.reserved.load(Ordering::Acquire) {
                let id = active.info.id;
                return Ok((set, id));
            }
            // This attempt did not seal: take it back, so the count stays exact. Not for a
            // shared keyring: there a reservation moves the counter to the start of a block
            // other replicas never use, and a late take-back could step into theirs. Counting
            // one seal too many is safe; one too few is not.
            if self.shared.is_none() {
                active.sealed.fetch_sub(1, Ordering::Relaxed);
            }
            self.reserve_block(active.info.id)?;
        }
    }

    fn lock_writer(&self) -> std::sync::MutexGuard<'_, Kek> {
        // A poisoned lock only means a panic elsewhere mid-write; the file is replaced atomically.
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn reserve_block(&self, id: u32) -> Result<(), KeyringError> {
        let kek = self.lock_writer();
        let set = self.snapshot();
        if set.active != id {
            return Ok(()); // someone rotated meanwhile
        }
        let key = set.active_key();
        let reserved = key.reserved.load(Ordering::Acquire);
        if key.sealed.load(Ordering::Relaxed) < reserved {
            return Ok(()); // another thread reserved meanwhile
        }
        if self.shared.is_some() {
            return self.reserve_shared_block(id, &kek);
        }
        if reserved + SEAL_BLOCK > self.seal_limit {
            return self.rotate_locked(&kek).map(|_| ());
        }
        let mut contents = contents_of(&set);
        if let Some(k) = contents.keys.iter_mut().find(|k| k.id == id) {
            k.seals_reserved = reserved + SEAL_BLOCK;
        }
        self.write_file(&contents, &kek)?;
        key.reserved.store(reserved + SEAL_BLOCK, Ordering::Release);
        Ok(())
    }

    /// Reserves the next block of seals for key `id` in a shared keyring. `seals_reserved` there
    /// is the high-water mark of every replica's reservations, so this process takes
    /// `[mark, mark + SEAL_BLOCK)` and moves the mark, by compare-and-swap: two replicas can
    /// never take the same block, and the total sealed under a key stays within the limit.
    fn reserve_shared_block(&self, id: u32, kek: &Kek) -> Result<(), KeyringError> {
        let limit = self.seal_limit;
        let (contents, start) = self.update(kek, kek, |c| {
            if c.active != id {
                return Ok(None); // another replica rotated: the next seal uses its key
            }
            let Some(key) = c.keys.iter_mut().find(|k| k.id == id) else { return Ok(None) };
            let start = key.seals_reserved;
            if start + SEAL_BLOCK > limit {
                push_fresh_key(c);
                return Ok(None);
            }
            key.seals_reserved = start + SEAL_BLOCK;
            Ok(Some(start))
        })?;
        self.install(&contents);
        if let Some(start) = start {
            let set = self.snapshot();
            if let Some(key) = set.keys.iter().find(|k| k.info.id == id) {
                // Counter first: a seal that sees the new limit also sees the new start.
                key.sealed.store(start, Ordering::Relaxed);
                key.reserved.store(start + SEAL_BLOCK, Ordering::Release);
            }
        }
        Ok(())
    }

    /// Makes a fresh data key active for all new writes; older keys stay for reading.
    pub fn rotate(&self) -> Result<u32, KeyringError> {
        let kek = self.lock_writer();
        self.rotate_locked(&kek)
    }

    fn rotate_locked(&self, kek: &Kek) -> Result<u32, KeyringError> {
        let (contents, id) = self.update(kek, kek, |c| Ok(push_fresh_key(c)))?;
        self.install(&contents);
        Ok(id)
    }

    /// Destroys data key `id`. The caller must have checked that no record is sealed under it
    /// (`Store::retire_key` does); the active key cannot be retired.
    pub fn retire(&self, id: u32) -> Result<(), KeyringError> {
        let kek = self.lock_writer();
        let (contents, ()) = self.update(&kek, &kek, |c| {
            if c.active == id {
                return Err(KeyringError::ActiveKey(id));
            }
            if !c.keys.iter().any(|k| k.id == id) {
                return Err(KeyringError::UnknownKey(id));
            }
            c.keys.retain(|k| k.id != id);
            Ok(())
        })?;
        self.install(&contents);
        Ok(())
    }

    /// Replaces the tenant namespace key (a bundle import into an empty store adopts the
    /// source's, so its tenants find their answers here too).
    pub fn adopt_namespace_key(&self, key: &SecretKey) -> Result<(), KeyringError> {
        let kek = self.lock_writer();
        let (contents, ()) = self.update(&kek, &kek, |c| {
            c.namespace_key = *key.expose();
            Ok(())
        })?;
        self.install(&contents);
        Ok(())
    }

    /// Re-wraps the keyring under a new secret. Touches only the keyring file, so it takes the
    /// same time whatever the store's size.
    pub fn change_secret(&self, secret: &StoreSecret, params: KdfParams) -> Result<(), KeyringError> {
        let mut kek = self.lock_writer();
        let new = Kek::new(secret, params)?;
        self.update(&kek, &new, |_| Ok(()))?;
        *kek = new;
        Ok(())
    }

    /// Applies `edit` to the latest keyring and stores it wrapped under `write`. For a file
    /// keyring the latest is this process's (it is the only writer); for a shared one it is
    /// read from the cell and unwrapped with `read`, and the write is a compare-and-swap,
    /// retried from the start when another process changed the keyring in between.
    fn update<T>(
        &self,
        read: &Kek,
        write: &Kek,
        mut edit: impl FnMut(&mut Contents) -> Result<T, KeyringError>,
    ) -> Result<(Contents, T), KeyringError> {
        let Some(shared) = &self.shared else {
            let mut contents = contents_of(&self.snapshot());
            let outcome = edit(&mut contents)?;
            self.write_file(&contents, write)?;
            return Ok((contents, outcome));
        };
        for _ in 0..SHARED_RETRIES {
            let Some(expected) = shared.cell.load().map_err(|e| self.cell_error(e))? else {
                return Err(KeyringError::Corrupt { path: self.path.clone(), reason: "the keyring is missing".into() });
            };
            let (_, mut contents) = open_envelope(&expected, &self.path, Opener::Kek(read))?;
            let outcome = edit(&mut contents)?;
            let bytes = self.wrap_contents(&contents, write)?;
            if shared.cell.swap(Some(&expected), &bytes).map_err(|e| self.cell_error(e))? {
                *shared.lock_last() = bytes;
                return Ok((contents, outcome));
            }
        }
        Err(KeyringError::Contended { path: self.path.clone() })
    }

    /// Swaps in a new key set, carrying over live seal counters of keys that remain.
    fn install(&self, contents: &Contents) {
        let old = self.snapshot();
        let keys = contents
            .keys
            .iter()
            .map(|k| {
                let live = live_key(
                    k.id,
                    k.created_ms,
                    k.retired,
                    SecretKey::from_bytes(k.key),
                    k.seals_reserved,
                    contents.active,
                );
                if let Some(prev) = old.keys.iter().find(|p| p.info.id == k.id) {
                    live.sealed.store(prev.sealed.load(Ordering::Relaxed), Ordering::Relaxed);
                    live.reserved.store(prev.reserved.load(Ordering::Acquire), Ordering::Release);
                }
                live
            })
            .collect();
        let namespace_key = SecretKey::from_bytes(contents.namespace_key);
        let set = KeySet {
            addresser: Addresser::new(old.address_key.clone(), namespace_key.clone()),
            address_key: old.address_key.clone(),
            namespace_key,
            keys,
            active: contents.active,
        };
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
    }

    /// Writes the whole file to a temporary sibling, syncs it, and renames it into place, so a
    /// crash leaves either the old keyring or the new one, never a torn one.
    fn write_file(&self, contents: &Contents, kek: &Kek) -> Result<(), KeyringError> {
        let file_bytes = self.wrap_contents(contents, kek)?;
        write_atomically(&self.path, &file_bytes).map_err(|source| KeyringError::Io {
            action: "write",
            path: self.path.clone(),
            source,
        })
    }

    /// The keyring's bytes: `contents` encrypted under the KEK, with header and checksum.
    fn wrap_contents(&self, contents: &Contents, kek: &Kek) -> Result<Vec<u8>, KeyringError> {
        kek.wrap(KEYRING_FORMAT, contents, &self.path)
    }
}
