//! The keys themselves: the unlocked set every reader shares (`KeySet`) and the making of new
//! data keys in the wrapped contents.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use super::file::{Contents, StoredKey, identity_of};
use crate::cache_key::address::Addresser;
use crate::secret::SecretKey;
use crate::store::crypto::DataKey;

/// What `keys list` shows of one data key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyInfo {
    /// The id envelopes sealed under the key carry.
    pub id: u32,
    /// When the key was made (ms since the epoch).
    pub created_ms: u64,
    /// Whether new records are sealed under it (exactly one key is).
    pub active: bool,
    /// Whether it is marked retired (this build removes retired keys instead, so always false).
    pub retired: bool,
}

/// One unlocked data key with its seal counters.
pub(super) struct LiveKey {
    /// What `keys list` shows of it.
    pub(super) info: KeyInfo,
    /// The key bytes, kept to write the keyring again (a reservation, a rotation).
    pub(super) secret: SecretKey,
    /// The same key, ready to seal and open envelopes.
    pub(super) data_key: DataKey,
    /// Seals performed (or attempted) under this key since unlock, plus what earlier runs used.
    pub(super) sealed: AtomicU64,
    /// Seals the keyring file has already accounted for.
    pub(super) reserved: AtomicU64,
}

/// One consistent view of the keys, swapped whole on rotation so readers never lock.
pub struct KeySet {
    /// Computes addresses under the address and namespace keys (built once, not per request).
    pub(super) addresser: Addresser,
    /// Keys every address, and derives the trail key, tally key and identity; never rotates,
    /// so addresses, the access trail and the integrity record outlive data-key rotations.
    pub(super) address_key: SecretKey,
    /// Keys a client credential's hash into its tenant namespace; replaceable on its own
    /// (`adopt_namespace_key`) so replicas can share tenants and keep their own address keys.
    pub(super) namespace_key: SecretKey,
    /// Every data key not retired, so records sealed under an older one still open.
    pub(super) keys: Vec<LiveKey>,
    /// The id of the key new records are sealed under.
    pub(super) active: u32,
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

    pub(super) fn active_key(&self) -> &LiveKey {
        // `active` always names a key in `keys`: every constructor and rotation ensures it.
        #[allow(clippy::expect_used, reason = "every constructor and rotation keeps `active` in `keys`")]
        self.keys.iter().find(|k| k.info.id == self.active).expect("active key present")
    }
}

/// A new keyring's contents: fresh address and namespace keys and one data key.
pub(super) fn first_contents() -> Contents {
    Contents {
        address_key: *SecretKey::generate().expose(),
        namespace_key: *SecretKey::generate().expose(),
        keys: vec![StoredKey {
            id: 1,
            created_ms: crate::clock::now_ms(),
            retired: false,
            key: *SecretKey::generate().expose(),
            seals_reserved: 0,
        }],
        active: 1,
    }
}

/// Adds a fresh data key and makes it active; returns its id.
pub(super) fn push_fresh_key(contents: &mut Contents) -> u32 {
    let id = contents.keys.iter().map(|k| k.id).max().unwrap_or(0) + 1;
    contents.keys.push(StoredKey {
        id,
        created_ms: crate::clock::now_ms(),
        retired: false,
        key: *SecretKey::generate().expose(),
        seals_reserved: 0,
    });
    contents.active = id;
    id
}

pub(super) fn live_key(
    id: u32,
    created_ms: u64,
    retired: bool,
    secret: SecretKey,
    reserved: u64,
    active: u32,
) -> LiveKey {
    LiveKey {
        info: KeyInfo { id, created_ms, active: id == active, retired },
        data_key: DataKey::new(id, &secret),
        secret,
        // Whatever an earlier run reserved is counted as used: it may have been.
        sealed: AtomicU64::new(reserved),
        reserved: AtomicU64::new(reserved),
    }
}

pub(super) fn contents_of(set: &KeySet) -> Contents {
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
