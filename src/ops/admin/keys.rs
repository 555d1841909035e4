//! The keyring commands: `keys list`, `keys rotate [--reencrypt]`, `keys retire`, `keys
//! passphrase`.

use serde_json::{Value, json};

use super::Admin;
use super::command::{AdminError, NewSecret, Progress};
use crate::secret::StoreSecret;
use crate::store::StoreError;
use crate::store::keyring::KdfParams;

/// Setting marking an unfinished `keys rotate --reencrypt`: the key being re-encrypted to.
const REENCRYPT_SETTING: &str = "reencrypt_to";

impl Admin {
    pub(super) fn keys_list(&self) -> Result<Value, AdminError> {
        let counts = self.store.count_by_key()?;
        let keys: Vec<Value> = self
            .store
            .keyring()
            .snapshot()
            .infos()
            .into_iter()
            .map(|k| {
                json!({
                    "id": k.id,
                    "created_ms": k.created_ms,
                    "status": if k.active { "active" } else { "retired" },
                    "records": counts.get(&k.id).copied().unwrap_or(0),
                })
            })
            .collect();
        Ok(json!({"keys": keys}))
    }

    /// Rotates (unless an interrupted re-encryption is being resumed) and, with `reencrypt`,
    /// re-seals every entry not under the active key. Resumable: the work left is exactly the
    /// entries under other keys, and a marker remembers the target key across a kill.
    pub(super) fn keys_rotate(&self, reencrypt: bool, progress: Progress<'_>) -> Result<Value, AdminError> {
        /// Sweeps over the entries still under another key; see below.
        const REENCRYPT_PASSES: usize = 4;
        let keyring = self.store.keyring();
        let pending = self
            .store
            .setting(REENCRYPT_SETTING)?
            .and_then(|v| <[u8; 4]>::try_from(v.as_slice()).ok())
            .map(u32::from_be_bytes);
        let active = keyring.snapshot().active_id();
        let (key, resumed) = match pending {
            Some(target) if reencrypt && target == active => (target, true),
            _ => (keyring.rotate().map_err(StoreError::from)?, false),
        };
        if !reencrypt {
            return Ok(json!({"active": key, "resumed": false, "resealed": 0, "count": 0}));
        }
        self.store.set_setting(REENCRYPT_SETTING, &key.to_be_bytes())?;
        // A write sealed under the old key just before the rotation may land after the pass
        // went by its address; later passes catch those (only writes already sealing when the
        // key changed can add any, so they end quickly).
        let mut resealed = 0u64;
        for pass in 0..REENCRYPT_PASSES {
            if pass > 0 {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            let mut todo = Vec::new();
            self.store.for_each_meta(|a, m| {
                if m.key_id != key {
                    todo.push(a);
                }
            })?;
            if todo.is_empty() {
                break;
            }
            let total = todo.len() as u64;
            for (i, address) in todo.iter().enumerate() {
                match self.store.reseal(address) {
                    Ok(true) => resealed += 1,
                    Ok(false) => {}
                    // A tampered entry cannot be re-sealed; `cache verify` names it.
                    Err(StoreError::Tampered { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
                if i % 64 == 0 || i as u64 + 1 == total {
                    progress(i as u64 + 1, total);
                }
            }
        }
        self.store.flush()?;
        self.store.clear_setting(REENCRYPT_SETTING)?;
        Ok(json!({"active": key, "resumed": resumed, "resealed": resealed, "count": resealed}))
    }

    /// Destroys data key `id` (the store refuses the active key, or one entries are sealed under).
    pub(super) fn keys_retire(&self, id: u32) -> Result<Value, AdminError> {
        self.store.retire_key(id)?;
        Ok(json!({"retired": id, "count": 0}))
    }

    /// Re-wraps the keyring under a new passphrase or raw key.
    pub(super) fn keys_passphrase(&self, secret: &NewSecret) -> Result<Value, AdminError> {
        let secret = match (&secret.passphrase, &secret.raw_key) {
            (Some(p), None) => StoreSecret::passphrase(p.0.as_str()),
            (None, Some(k)) => StoreSecret::raw_key_base64(&k.0),
            _ => return Err(AdminError::Invalid("give exactly one of a passphrase or a raw key".into())),
        }
        .map_err(|e| AdminError::Invalid(e.to_string()))?;
        let kind = if matches!(secret, StoreSecret::RawKey(_)) { "raw key" } else { "passphrase" };
        self.store.keyring().change_secret(&secret, KdfParams::default()).map_err(StoreError::from)?;
        Ok(json!({"rewrapped": true, "now_unlocked_by": kind, "count": 0}))
    }
}
