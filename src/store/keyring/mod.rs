//! The keyring: the address key and every data key, kept in one file wrapped by a
//! key-encryption key (KEK) derived from the operator's passphrase (Argon2id) or raw key.
//!
//! The keyring lives in its own file beside the database, so unlocking never touches the
//! database: a wrong passphrase leaves every byte of the store as it was.
//!
//! ```text
//! offset  size  field
//! 0       8     magic "HFKEYRNG"
//! 8       2     keyring format version, big-endian (1)
//! 10      1     wrapping: 1 = Argon2id passphrase, 2 = raw key
//! 11      4     Argon2 memory cost in KiB (0 for a raw key)
//! 15      4     Argon2 time cost
//! 19      4     Argon2 parallelism
//! 23      16    Argon2 salt (zero for a raw key)
//! 39      12    nonce
//! 51      4     ciphertext length n (including the 16-byte tag)
//! 55      32    the keyring's identity, in the clear (format 2 on; see below)
//! h       n     AES-256-GCM ciphertext of the contents, associated data = bytes 0..h
//! h+n     32    BLAKE3 of bytes 0..h+n
//! ```
//! `h` is 87 from format 2 on, 55 in format 1 (no identity); both are read, format 2 is written.
//! The trailing checksum tells corruption (checksum wrong) from a wrong secret (checksum right,
//! tag wrong), which the GCM tag alone cannot.
//!
//! The identity ([`KeySet::identity`], a one-way hash of the address key) names the store the
//! keyring belongs to; the database keeps the same value in its settings, in the clear too. It
//! is readable before unlocking so that another store's keyring is refused as such even when
//! the secret given does not unlock it ([`clear_identity`]).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use aes_gcm::aead::AeadInOut;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce, Tag};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::cache_key::address::Addresser;
use crate::secret::{KEY_LEN, SecretKey, StoreSecret, fill_random};
use crate::store::codec;
use crate::store::crypto::DataKey;
use crate::store::durable::write_atomically;

const MAGIC: &[u8; 8] = b"HFKEYRNG";
pub const KEYRING_FORMAT: u16 = 2;
/// The fields every format has (bytes 0..55).
const HEADER_LEN: usize = 55;
/// Length of the clear identity that follows them from format 2 on.
const IDENTITY_LEN: usize = 32;
const CHECKSUM_LEN: usize = 32;
const SALT_LEN: usize = 16;
const RAW_KEY_CONTEXT: &str = "holdfast 2026-11 keyring wrap v1";

/// Seals are counted in blocks that are written to the keyring before use, so a crash can only
/// over-count. 65,536 per block costs one small file write per block.
const SEAL_BLOCK: u64 = 1 << 16;
/// AES-GCM with random 96-bit nonces stays within NIST's collision bound up to 2^32 messages
/// per key; the active key is replaced before it gets there.
pub const SEAL_LIMIT: u64 = 1 << 32;

/// Argon2id cost. Defaults follow OWASP's minimum (m = 19 MiB, t = 2, p = 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl KdfParams {
    /// Bounds on what a keyring may ask for, so a crafted header cannot make unlock allocate
    /// terabytes or spin for hours: up to 4 GiB, 64 passes, 64 lanes.
    pub(crate) fn check_plausible(&self) -> Result<(), String> {
        if self.memory_kib > 4 * 1024 * 1024 || self.iterations > 64 || self.parallelism > 64 {
            return Err(format!(
                "implausible Argon2 parameters m={} KiB, t={}, p={}",
                self.memory_kib, self.iterations, self.parallelism
            ));
        }
        Ok(())
    }
}

impl KdfParams {
    /// OWASP's minimum for Argon2id: m = 19 MiB, t = 2, p = 1.
    pub const DEFAULT: Self = Self { memory_kib: 19 * 1024, iterations: 2, parallelism: 1 };
}

impl Default for KdfParams {
    fn default() -> Self {
        Self::DEFAULT
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("wrong passphrase or key{hint}")]
    WrongSecret { hint: &'static str },
    #[error("keyring {path} is corrupt ({reason}); restore it from a backup")]
    Corrupt { path: PathBuf, reason: String },
    #[error("keyring {path} has format {found}, newer than this build reads ({supported}); upgrade holdfast")]
    NewerFormat { path: PathBuf, found: u16, supported: u16 },
    #[error("cannot {action} keyring {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    #[error("Argon2 parameters rejected: {0}")]
    KdfParams(String),
    #[error("key {0} is not in the keyring; `holdfast keys list` shows the ids")]
    UnknownKey(u32),
    #[error("key {0} is the active key; rotate first (`holdfast keys rotate`), then retire it")]
    ActiveKey(u32),
    #[error("a keyring already exists at {path}; open that store instead, or choose another key_prefix")]
    Exists { path: PathBuf },
    #[error("keyring {path} kept changing while this process tried to update it; run the command again")]
    Contended { path: PathBuf },
    /// The shared store holding the keyring did not answer (it logs that itself).
    #[error("keyring {path} cannot be reached: {reason}")]
    Unavailable { path: PathBuf, reason: String },
}

/// What `keys list` shows of one data key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyInfo {
    pub id: u32,
    pub created_ms: u64,
    pub active: bool,
    pub retired: bool,
}

/// Serialized inside the ciphertext. Zeroized on drop so decoded key bytes do not linger.
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
struct Contents {
    address_key: [u8; KEY_LEN],
    /// Keys the hash of a client credential into its tenant namespace. Separate from the
    /// address key so replicas can share tenants (a bundle import adopts it) while keeping
    /// their own address keys.
    namespace_key: [u8; KEY_LEN],
    keys: Vec<StoredKey>,
    active: u32,
}

#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
struct StoredKey {
    id: u32,
    created_ms: u64,
    retired: bool,
    key: [u8; KEY_LEN],
    seals_reserved: u64,
}

/// How the KEK is made from the operator's secret.
#[derive(Clone, Copy)]
enum Wrapping {
    Passphrase { params: KdfParams, salt: [u8; SALT_LEN] },
    RawKey,
}

struct LiveKey {
    info: KeyInfo,
    secret: SecretKey,
    data_key: DataKey,
    /// Seals performed (or attempted) under this key since unlock, plus what earlier runs used.
    sealed: AtomicU64,
    /// Seals the keyring file has already accounted for.
    reserved: AtomicU64,
}

/// One consistent view of the keys, swapped whole on rotation so readers never lock.
pub struct KeySet {
    addresser: Addresser,
    address_key: SecretKey,
    namespace_key: SecretKey,
    keys: Vec<LiveKey>,
    active: u32,
}

impl KeySet {
    pub fn addresser(&self) -> &Addresser {
        &self.addresser
    }

    pub fn data_key(&self, id: u32) -> Option<&DataKey> {
        self.keys.iter().find(|k| k.info.id == id).map(|k| &k.data_key)
    }

    pub fn active_id(&self) -> u32 {
        self.active
    }

    /// Keys the access trail's hash chain. Derived from the address key, which never rotates,
    /// so the chain verifies across data-key rotations.
    pub fn trail_key(&self) -> SecretKey {
        SecretKey::from_bytes(blake3::derive_key("holdfast 2026-11 access trail v1", self.address_key.expose()))
    }

    /// This keyring's identity, kept in its database's settings so that a keyring from another
    /// store is refused by name. Derived from the address key, which never rotates and which
    /// a passphrase change does not touch.
    pub fn identity(&self) -> [u8; 32] {
        identity_of(self.address_key.expose())
    }

    /// Keys the store's integrity record (`store/integrity.rs`). Derived from the address key,
    /// which never rotates, so the record stays valid across data-key rotations.
    pub fn tally_key(&self) -> SecretKey {
        SecretKey::from_bytes(blake3::derive_key("holdfast 2026-12 store tally v1", self.address_key.expose()))
    }

    /// The tenant namespace key, for an export bundle (so an importing replica can adopt it).
    pub fn namespace_key(&self) -> &SecretKey {
        &self.namespace_key
    }

    pub fn infos(&self) -> Vec<KeyInfo> {
        self.keys.iter().map(|k| k.info.clone()).collect()
    }

    fn active_key(&self) -> &LiveKey {
        // `active` always names a key in `keys`: every constructor and rotation ensures it.
        #[allow(clippy::expect_used, reason = "every constructor and rotation keeps `active` in `keys`")]
        self.keys.iter().find(|k| k.info.id == self.active).expect("active key present")
    }
}

/// An unlocked keyring bound to its file.
pub struct Keyring {
    path: PathBuf,
    current: RwLock<Arc<KeySet>>,
    /// The key-encryption key and how it was made. The lock also serializes every change to
    /// the file (reservations, rotation, retirement, re-wrapping), so a running server can do
    /// all of them while serving.
    writer: Mutex<Wrap>,
    seal_limit: u64,
    /// Set when the keyring is kept in Redis and shared by every replica: each change then
    /// starts from the latest stored keyring and is written by compare-and-swap.
    shared: Option<Shared>,
}

/// Where a shared keyring is kept, and the bytes this process last read or wrote there.
struct Shared {
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

struct Wrap {
    kek: SecretKey,
    wrapping: Wrapping,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keyring({}, *****)", self.path.display())
    }
}

fn now_ms() -> u64 {
    crate::clock::now_ms()
}

impl Keyring {
    /// Creates a new keyring file with a fresh address key and one data key.
    pub fn create(path: &Path, secret: &StoreSecret, params: KdfParams) -> Result<Self, KeyringError> {
        let (wrapping, kek) = new_wrapping(secret, params)?;
        let contents = first_contents();
        let keyring = Self::from_contents(path, kek, wrapping, &contents);
        {
            let wrap = keyring.lock_writer();
            keyring.write_file(&contents, &wrap)?;
        }
        Ok(keyring)
    }

    /// Reads and unlocks an existing keyring file. Never writes.
    pub fn unlock(path: &Path, secret: &StoreSecret) -> Result<Self, KeyringError> {
        let bytes = fs::read(path).map_err(|source| KeyringError::Io { action: "read", path: path.into(), source })?;
        let (kek, wrapping, contents) = open_envelope(&bytes, path, Opener::Secret(secret))?;
        Ok(Self::from_contents(path, kek, wrapping, &contents))
    }

    /// Creates a keyring kept in a shared cell (a Redis key) instead of a file. Refuses if
    /// the cell already holds one: every replica must share the first.
    pub fn create_shared(
        cell: Arc<dyn KeyringCell>,
        secret: &StoreSecret,
        params: KdfParams,
    ) -> Result<Self, KeyringError> {
        let (wrapping, kek) = new_wrapping(secret, params)?;
        let contents = first_contents();
        let mut keyring = Self::from_contents(Path::new(&cell.describe()), kek, wrapping, &contents);
        let bytes = {
            let wrap = keyring.lock_writer();
            keyring.wrap_contents(&contents, &wrap)?
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
        let (kek, wrapping, contents) = open_envelope(&bytes, &path, Opener::Secret(secret))?;
        let mut keyring = Self::from_contents(&path, kek, wrapping, &contents);
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
        let wrap = self.lock_writer();
        let Some(bytes) = shared.cell.load().map_err(|e| self.cell_error(e))? else {
            return Err(KeyringError::Corrupt { path: self.path.clone(), reason: "the keyring is missing".into() });
        };
        if *shared.lock_last() == bytes {
            return Ok(false);
        }
        let (_, _, contents) = open_envelope(&bytes, &self.path, Opener::Kek(&wrap.kek))?;
        self.install(&contents);
        *shared.lock_last() = bytes;
        Ok(true)
    }

    fn cell_error(&self, reason: String) -> KeyringError {
        KeyringError::Unavailable { path: self.path.clone(), reason }
    }

    fn from_contents(path: &Path, kek: SecretKey, wrapping: Wrapping, contents: &Contents) -> Self {
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
            writer: Mutex::new(Wrap { kek, wrapping }),
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

    fn lock_writer(&self) -> std::sync::MutexGuard<'_, Wrap> {
        // A poisoned lock only means a panic elsewhere mid-write; the file is replaced atomically.
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn reserve_block(&self, id: u32) -> Result<(), KeyringError> {
        let wrap = self.lock_writer();
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
            return self.reserve_shared_block(id, &wrap);
        }
        if reserved + SEAL_BLOCK > self.seal_limit {
            return self.rotate_locked(&wrap).map(|_| ());
        }
        let mut contents = contents_of(&set);
        if let Some(k) = contents.keys.iter_mut().find(|k| k.id == id) {
            k.seals_reserved = reserved + SEAL_BLOCK;
        }
        self.write_file(&contents, &wrap)?;
        key.reserved.store(reserved + SEAL_BLOCK, Ordering::Release);
        Ok(())
    }

    /// Reserves the next block of seals for key `id` in a shared keyring. `seals_reserved` there
    /// is the high-water mark of every replica's reservations, so this process takes
    /// `[mark, mark + SEAL_BLOCK)` and moves the mark, by compare-and-swap: two replicas can
    /// never take the same block, and the total sealed under a key stays within the limit.
    fn reserve_shared_block(&self, id: u32, wrap: &Wrap) -> Result<(), KeyringError> {
        let limit = self.seal_limit;
        let (contents, start) = self.update(wrap, wrap, |c| {
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
        let wrap = self.lock_writer();
        self.rotate_locked(&wrap)
    }

    fn rotate_locked(&self, wrap: &Wrap) -> Result<u32, KeyringError> {
        let (contents, id) = self.update(wrap, wrap, |c| Ok(push_fresh_key(c)))?;
        self.install(&contents);
        Ok(id)
    }

    /// Destroys data key `id`. The caller must have checked that no record is sealed under it
    /// (`Store::retire_key` does); the active key cannot be retired.
    pub fn retire(&self, id: u32) -> Result<(), KeyringError> {
        let wrap = self.lock_writer();
        let (contents, ()) = self.update(&wrap, &wrap, |c| {
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
        let wrap = self.lock_writer();
        let (contents, ()) = self.update(&wrap, &wrap, |c| {
            c.namespace_key = *key.expose();
            Ok(())
        })?;
        self.install(&contents);
        Ok(())
    }

    /// Re-wraps the keyring under a new secret. Touches only the keyring file, so it takes the
    /// same time whatever the store's size.
    pub fn change_secret(&self, secret: &StoreSecret, params: KdfParams) -> Result<(), KeyringError> {
        let mut wrap = self.lock_writer();
        let (wrapping, kek) = new_wrapping(secret, params)?;
        let new = Wrap { kek, wrapping };
        self.update(&wrap, &new, |_| Ok(()))?;
        *wrap = new;
        Ok(())
    }

    /// Applies `edit` to the latest keyring and stores it wrapped under `write`. For a file
    /// keyring the latest is this process's (it is the only writer); for a shared one it is
    /// read from the cell and unwrapped with `read`, and the write is a compare-and-swap,
    /// retried from the start when another process changed the keyring in between.
    fn update<T>(
        &self,
        read: &Wrap,
        write: &Wrap,
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
            let (_, _, mut contents) = open_envelope(&expected, &self.path, Opener::Kek(&read.kek))?;
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
    fn write_file(&self, contents: &Contents, wrap: &Wrap) -> Result<(), KeyringError> {
        let file_bytes = self.wrap_contents(contents, wrap)?;
        write_atomically(&self.path, &file_bytes).map_err(|source| KeyringError::Io {
            action: "write",
            path: self.path.clone(),
            source,
        })
    }

    /// The keyring's bytes: `contents` encrypted under the KEK, with header and checksum.
    fn wrap_contents(&self, contents: &Contents, wrap: &Wrap) -> Result<Vec<u8>, KeyringError> {
        self.wrap_contents_as(KEYRING_FORMAT, contents, wrap)
    }

    /// As `wrap_contents`, in `format` (tests write format 1 to check old keyrings still open).
    fn wrap_contents_as(&self, format: u16, contents: &Contents, wrap: &Wrap) -> Result<Vec<u8>, KeyringError> {
        let (kek, wrapping) = (&wrap.kek, wrap.wrapping);
        let plaintext = Zeroizing::new(
            codec::encode(contents)
                .map_err(|e| KeyringError::Corrupt { path: self.path.clone(), reason: e.to_string() })?,
        );
        let mut header = Vec::with_capacity(header_len(format));
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&format.to_be_bytes());
        match wrapping {
            Wrapping::Passphrase { params, salt } => {
                header.push(1);
                for v in [params.memory_kib, params.iterations, params.parallelism] {
                    header.extend_from_slice(&v.to_be_bytes());
                }
                header.extend_from_slice(&salt);
            }
            Wrapping::RawKey => {
                header.push(2);
                header.extend_from_slice(&[0u8; 12 + SALT_LEN]);
            }
        }
        let mut nonce = [0u8; 12];
        fill_random(&mut nonce);
        header.extend_from_slice(&nonce);
        header.extend_from_slice(&((plaintext.len() + 16) as u32).to_be_bytes());
        if format >= 2 {
            header.extend_from_slice(&identity_of(&contents.address_key));
        }
        debug_assert_eq!(header.len(), header_len(format));

        let mut sealed = plaintext.to_vec();
        let cipher = Aes256Gcm::new(kek.expose().into());
        #[allow(clippy::expect_used, reason = "GCM only refuses over 64 GiB; a keyring is kilobytes")]
        let tag = cipher
            .encrypt_inout_detached(&Nonce::from(nonce), &header, sealed.as_mut_slice().into())
            .expect("keyring within AES-GCM limits");
        let mut file_bytes = header.clone();
        file_bytes.append(&mut sealed);
        file_bytes.extend_from_slice(&tag);
        let checksum = blake3::hash(&file_bytes);
        file_bytes.extend_from_slice(checksum.as_bytes());
        Ok(file_bytes)
    }
}

/// The identity of the keyring whose address key is `address_key` (`KeySet::identity`).
fn identity_of(address_key: &[u8; KEY_LEN]) -> [u8; 32] {
    blake3::derive_key("holdfast 2026-12 keyring identity v1", address_key)
}

/// Where the ciphertext starts in a keyring of `format`.
fn header_len(format: u16) -> usize {
    if format >= 2 { HEADER_LEN + IDENTITY_LEN } else { HEADER_LEN }
}

/// The identity in the clear header of wrapped keyring `bytes`, without unlocking them: `None`
/// for a keyring written before format 2, or bytes that are not a whole keyring.
pub fn clear_identity(bytes: &[u8]) -> Option<[u8; 32]> {
    if bytes.get(..8) != Some(&MAGIC[..]) {
        return None;
    }
    let (body, checksum) = bytes.split_at_checked(bytes.len().checked_sub(CHECKSUM_LEN)?)?;
    if blake3::hash(body).as_bytes() != checksum {
        return None;
    }
    let format = u16::from_be_bytes(body.get(8..10)?.try_into().ok()?);
    if !(2..=KEYRING_FORMAT).contains(&format) {
        return None;
    }
    body.get(HEADER_LEN..HEADER_LEN + IDENTITY_LEN)?.try_into().ok()
}

/// A new keyring's contents: fresh address and namespace keys and one data key.
fn first_contents() -> Contents {
    Contents {
        address_key: *SecretKey::generate().expose(),
        namespace_key: *SecretKey::generate().expose(),
        keys: vec![StoredKey {
            id: 1,
            created_ms: now_ms(),
            retired: false,
            key: *SecretKey::generate().expose(),
            seals_reserved: 0,
        }],
        active: 1,
    }
}

/// Adds a fresh data key and makes it active; returns its id.
fn push_fresh_key(contents: &mut Contents) -> u32 {
    let id = contents.keys.iter().map(|k| k.id).max().unwrap_or(0) + 1;
    contents.keys.push(StoredKey {
        id,
        created_ms: now_ms(),
        retired: false,
        key: *SecretKey::generate().expose(),
        seals_reserved: 0,
    });
    contents.active = id;
    id
}

/// What unwraps a keyring: the operator's secret (at unlock) or the KEK already derived from
/// it (re-reading a shared keyring, so Argon2 is not run again).
#[derive(Clone, Copy)]
enum Opener<'a> {
    Secret(&'a StoreSecret),
    Kek(&'a SecretKey),
}

/// Checks and decrypts a wrapped keyring. Returns the KEK, how it was made, and the contents.
fn open_envelope(
    bytes: &[u8],
    path: &Path,
    opener: Opener<'_>,
) -> Result<(SecretKey, Wrapping, Contents), KeyringError> {
    let corrupt = |reason: &str| KeyringError::Corrupt { path: path.into(), reason: reason.into() };
    if bytes.len() < HEADER_LEN + 16 + CHECKSUM_LEN || bytes.get(..8) != Some(&MAGIC[..]) {
        return Err(corrupt("not a Holdfast keyring file"));
    }
    // Checksum first: a damaged version byte must read as corruption, not "upgrade holdfast".
    let (body, checksum) = bytes.split_at(bytes.len().saturating_sub(CHECKSUM_LEN));
    let header = body.first_chunk::<HEADER_LEN>().ok_or_else(|| corrupt("header"))?;
    if blake3::hash(body).as_bytes() != checksum {
        return Err(corrupt("checksum mismatch"));
    }
    let format = u16::from_be_bytes(field(header, 8));
    if format > KEYRING_FORMAT {
        return Err(KeyringError::NewerFormat { path: path.into(), found: format, supported: KEYRING_FORMAT });
    }
    if format == 0 {
        return Err(corrupt("format version 0"));
    }
    let wrapping = match field::<1>(header, 10) {
        [1] => Wrapping::Passphrase {
            params: KdfParams {
                memory_kib: u32::from_be_bytes(field(header, 11)),
                iterations: u32::from_be_bytes(field(header, 15)),
                parallelism: u32::from_be_bytes(field(header, 19)),
            },
            salt: field(header, 23),
        },
        [2] => Wrapping::RawKey,
        [other] => return Err(corrupt(&format!("unknown wrapping kind {other}"))),
    };
    if let Wrapping::Passphrase { params, .. } = wrapping {
        params.check_plausible().map_err(|reason| corrupt(&reason))?;
    }
    let kek = match (wrapping, opener) {
        (_, Opener::Kek(kek)) => kek.clone(),
        (Wrapping::Passphrase { params, salt }, Opener::Secret(StoreSecret::Passphrase(p))) => {
            derive_kek(p.as_bytes(), &salt, params)?
        }
        (Wrapping::RawKey, Opener::Secret(StoreSecret::RawKey(k))) => raw_kek(k),
        (Wrapping::Passphrase { .. }, Opener::Secret(StoreSecret::RawKey(_))) => {
            return Err(KeyringError::WrongSecret {
                hint: " (this store is locked with a passphrase: give HOLDFAST_PASSPHRASE or --passphrase-file, not HOLDFAST_KEY)",
            });
        }
        (Wrapping::RawKey, Opener::Secret(StoreSecret::Passphrase(_))) => {
            return Err(KeyringError::WrongSecret {
                hint: " (this store is locked with a raw key: give HOLDFAST_KEY, not a passphrase)",
            });
        }
    };
    let ct_len = usize::try_from(u32::from_be_bytes(field(header, 51))).unwrap_or(usize::MAX);
    let header_len = header_len(format);
    if header_len.checked_add(ct_len) != Some(body.len()) || ct_len < 16 {
        return Err(corrupt("length field does not match file size"));
    }
    // The whole header, clear identity included, is the associated data.
    let (aad, rest) = body.split_at_checked(header_len).ok_or_else(|| corrupt("header"))?;
    let (sealed, tag) = rest.split_at_checked(rest.len().saturating_sub(16)).ok_or_else(|| corrupt("tag"))?;
    let mut plaintext = Zeroizing::new(sealed.to_vec());
    let tag = Tag::try_from(tag).map_err(|_| corrupt("tag"))?;
    let nonce = Nonce::from(field::<12>(header, 39));
    let cipher = Aes256Gcm::new(kek.expose().into());
    cipher.decrypt_inout_detached(&nonce, aad, plaintext.as_mut_slice().into(), &tag).map_err(|_| {
        KeyringError::WrongSecret {
            hint: if matches!(opener, Opener::Kek(_)) {
                " (the shared keyring was re-wrapped under a new passphrase by another process; restart with it)"
            } else {
                ""
            },
        }
    })?;
    let contents: Contents = codec::decode(&plaintext).map_err(|e| corrupt(&e.to_string()))?;
    if !contents.keys.iter().any(|k| k.id == contents.active && !k.retired) {
        return Err(corrupt("no active data key"));
    }
    if format >= 2 && aad.get(HEADER_LEN..) != Some(&identity_of(&contents.address_key)[..]) {
        return Err(corrupt("the identity in its header is not that of its keys"));
    }
    Ok((kek, wrapping, contents))
}

fn live_key(id: u32, created_ms: u64, retired: bool, secret: SecretKey, reserved: u64, active: u32) -> LiveKey {
    LiveKey {
        info: KeyInfo { id, created_ms, active: id == active, retired },
        data_key: DataKey::new(id, &secret),
        secret,
        // Whatever an earlier run reserved is counted as used: it may have been.
        sealed: AtomicU64::new(reserved),
        reserved: AtomicU64::new(reserved),
    }
}

fn contents_of(set: &KeySet) -> Contents {
    Contents {
        address_key: *set.address_key.expose(),
        namespace_key: *set.namespace_key.expose(),
        keys: set
            .keys
            .iter()
            .map(|k| StoredKey {
                id: k.info.id,
                created_ms: k.info.created_ms,
                retired: k.info.retired,
                key: *k.secret.expose(),
                seals_reserved: k.reserved.load(Ordering::Acquire),
            })
            .collect(),
        active: set.active,
    }
}

fn new_wrapping(secret: &StoreSecret, params: KdfParams) -> Result<(Wrapping, SecretKey), KeyringError> {
    Ok(match secret {
        StoreSecret::Passphrase(p) => {
            let mut salt = [0u8; SALT_LEN];
            fill_random(&mut salt);
            (Wrapping::Passphrase { params, salt }, derive_kek(p.as_bytes(), &salt, params)?)
        }
        StoreSecret::RawKey(k) => (Wrapping::RawKey, raw_kek(k)),
    })
}

fn derive_kek(passphrase: &[u8], salt: &[u8], params: KdfParams) -> Result<SecretKey, KeyringError> {
    let out = argon2id(passphrase, salt, params).map_err(KeyringError::KdfParams)?;
    Ok(SecretKey::from_bytes(*out))
}

/// 32 bytes of Argon2id (v1.3) output; the keyring's KEK and the export bundle's keys.
pub(crate) fn argon2id(passphrase: &[u8], salt: &[u8], params: KdfParams) -> Result<Zeroizing<[u8; KEY_LEN]>, String> {
    let argon_params = argon2::Params::new(params.memory_kib, params.iterations, params.parallelism, Some(KEY_LEN))
        .map_err(|e| e.to_string())?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, argon_params);
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    argon.hash_password_into(passphrase, salt, out.as_mut()).map_err(|e| e.to_string())?;
    Ok(out)
}

fn raw_kek(key: &SecretKey) -> SecretKey {
    SecretKey::from_bytes(blake3::derive_key(RAW_KEY_CONTEXT, key.expose()))
}

/// `N` bytes of the header at `at`; every offset used is inside `HEADER_LEN`, so the zero
/// fallback is never taken (and would only fail authentication if it were).
fn field<const N: usize>(header: &[u8; HEADER_LEN], at: usize) -> [u8; N] {
    header.get(at..at + N).and_then(|b| b.try_into().ok()).unwrap_or([0; N])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cheap Argon2 cost for unit tests; the integration tests use the defaults.
    const FAST: KdfParams = KdfParams { memory_kib: 64, iterations: 1, parallelism: 1 };

    fn pass(p: &str) -> StoreSecret {
        StoreSecret::passphrase(p).unwrap()
    }

    #[test]
    fn unlock_with_right_secret_gives_same_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring");
        let created = Keyring::create(&path, &pass("right one"), FAST).unwrap();
        let opened = Keyring::unlock(&path, &pass("right one")).unwrap();
        let (a, b) = (created.snapshot(), opened.snapshot());
        assert_eq!(a.infos(), b.infos());
        assert_eq!(a.address_key, b.address_key);
    }

    #[test]
    fn wrong_secret_is_told_apart_from_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring");
        Keyring::create(&path, &pass("right one"), FAST).unwrap();
        let before = fs::read(&path).unwrap();
        assert!(matches!(Keyring::unlock(&path, &pass("wrong one")), Err(KeyringError::WrongSecret { .. })));
        let raw = StoreSecret::RawKey(SecretKey::from_bytes([1; 32]));
        let err = Keyring::unlock(&path, &raw).unwrap_err();
        assert!(err.to_string().contains("locked with a passphrase"), "{err}");
        assert_eq!(fs::read(&path).unwrap(), before, "a failed unlock must not write");

        let mut bad = before.clone();
        bad[60] ^= 1;
        fs::write(&path, &bad).unwrap();
        assert!(matches!(Keyring::unlock(&path, &pass("right one")), Err(KeyringError::Corrupt { .. })));
        fs::write(&path, b"hello").unwrap();
        assert!(matches!(Keyring::unlock(&path, &pass("right one")), Err(KeyringError::Corrupt { .. })));
        let mut newer = before.clone();
        newer[9] = 9;
        fs::write(&path, &newer).unwrap();
        assert!(matches!(Keyring::unlock(&path, &pass("right one")), Err(KeyringError::Corrupt { .. })));
        let body_len = newer.len() - CHECKSUM_LEN;
        let checksum = *blake3::hash(&newer[..body_len]).as_bytes();
        newer[body_len..].copy_from_slice(&checksum);
        fs::write(&path, &newer).unwrap();
        assert!(matches!(Keyring::unlock(&path, &pass("right one")), Err(KeyringError::NewerFormat { found: 9, .. })));
    }

    #[test]
    fn a_format_1_keyring_without_a_clear_identity_still_opens_and_is_upgraded_on_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring");
        let ring = Keyring::create(&path, &pass("pw"), FAST).unwrap();
        let old = {
            let wrap = ring.lock_writer();
            ring.wrap_contents_as(1, &contents_of(&ring.snapshot()), &wrap).unwrap()
        };
        assert_eq!(old.len(), fs::read(&path).unwrap().len() - IDENTITY_LEN);
        assert_eq!(clear_identity(&old), None);
        fs::write(&path, &old).unwrap();
        let opened = Keyring::unlock(&path, &pass("pw")).unwrap();
        assert_eq!(opened.snapshot().identity(), ring.snapshot().identity());
        assert_eq!(Keyring::file_identity(&path), None);
        opened.rotate().unwrap();
        assert_eq!(Keyring::file_identity(&path), Some(ring.snapshot().identity()));
    }

    #[test]
    fn a_clear_identity_that_is_not_the_keys_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring");
        Keyring::create(&path, &pass("pw"), FAST).unwrap();
        let mut edited = fs::read(&path).unwrap();
        edited[HEADER_LEN] ^= 1;
        let body_len = edited.len() - CHECKSUM_LEN;
        let checksum = *blake3::hash(&edited[..body_len]).as_bytes();
        edited[body_len..].copy_from_slice(&checksum);
        fs::write(&path, &edited).unwrap();
        // Part of the associated data, so the tag fails as for any edited header.
        assert!(matches!(Keyring::unlock(&path, &pass("pw")), Err(KeyringError::WrongSecret { .. })));
    }

    #[test]
    fn keyring_file_holds_no_key_bytes_in_the_clear() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring");
        let ring = Keyring::create(&path, &pass("pw"), FAST).unwrap();
        let file = fs::read(&path).unwrap();
        let set = ring.snapshot();
        for needle in [set.address_key.expose().as_slice(), set.keys[0].secret.expose().as_slice()] {
            assert!(!file.windows(KEY_LEN).any(|w| w == needle));
        }
    }

    #[test]
    fn seals_are_reserved_in_blocks_and_rotate_before_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring");
        let mut ring = Keyring::create(&path, &pass("pw"), FAST).unwrap();
        ring.set_seal_limit_for_tests(2 * SEAL_BLOCK);
        for _ in 0..2 * SEAL_BLOCK {
            assert_eq!(ring.key_for_seal().unwrap().1, 1);
        }
        // The 2·BLOCK+1-th seal would pass the limit: a new key takes over.
        assert_eq!(ring.key_for_seal().unwrap().1, 2);
        let reopened = Keyring::unlock(&path, &pass("pw")).unwrap();
        let infos = reopened.snapshot().infos();
        assert_eq!(infos.iter().map(|k| (k.id, k.active)).collect::<Vec<_>>(), vec![(1, false), (2, true)]);
        // After reopening, key 1's reservation counts as fully used.
        assert_eq!(reopened.snapshot().keys[0].sealed.load(Ordering::Relaxed), 2 * SEAL_BLOCK);
    }

    #[test]
    fn change_secret_rewraps_without_changing_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring");
        let ring = Keyring::create(&path, &pass("old"), FAST).unwrap();
        let raw = StoreSecret::RawKey(SecretKey::from_bytes([5; 32]));
        ring.change_secret(&raw, FAST).unwrap();
        assert!(Keyring::unlock(&path, &pass("old")).is_err());
        let reopened = Keyring::unlock(&path, &raw).unwrap();
        assert_eq!(reopened.snapshot().address_key, ring.snapshot().address_key);
    }
}
