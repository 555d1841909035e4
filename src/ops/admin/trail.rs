//! The access trail as the commands use it: the entry each command appends (opening the trail
//! on first use), and the `audit trail [--verify]` command that reads it back.

use std::path::PathBuf;

use serde_json::json;

use super::Admin;
use super::command::{AdminError, Outcome};
use crate::ops::audit::trail::{self as access, Action, Trail, TrailError};

/// Setting holding the sequence number of the last trail entry written.
const TRAIL_SEQ_SETTING: &str = "trail_seq";

impl Admin {
    /// Appends `action` to the trail, opening it first if needed; logs a repair it had to make.
    pub(super) fn append_trail(&self, action: &Action<'_>) -> Result<(), AdminError> {
        if let Some(cell) = &self.shared_trail {
            let key = self.store.keyring().snapshot().trail_key();
            let entry = access::append_shared(cell.as_ref(), &key, action)?;
            self.store.set_setting(TRAIL_SEQ_SETTING, &entry.seq.to_be_bytes())?;
            return Ok(());
        }
        self.open_trail()?;
        let guard = self.trail.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(trail) = guard.as_ref() {
            let entry = trail.record(action)?;
            // The store remembers how long the trail is, so deleting the trail files (which
            // the chain alone cannot reveal) shows up in `audit trail --verify`.
            self.store.set_setting(TRAIL_SEQ_SETTING, &entry.seq.to_be_bytes())?;
        }
        Ok(())
    }

    /// Opens the file trail if it is not open yet (a shared trail needs no opening).
    pub(super) fn open_trail(&self) -> Result<(), AdminError> {
        if self.shared_trail.is_some() {
            return Ok(());
        }
        let mut guard = self.trail.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            let opened = Trail::open(&self.trail_path, self.store.keyring().snapshot().trail_key())?;
            if let Some(recovery) = opened.recovery() {
                tracing::warn!(%recovery, "access trail repaired on open");
            }
            *guard = Some(opened);
        }
        Ok(())
    }

    /// Entries the store says the trail should have (0 before the first).
    fn expected_trail_len(&self) -> Result<u64, AdminError> {
        Ok(self
            .store
            .setting(TRAIL_SEQ_SETTING)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
            .map_or(0, u64::from_be_bytes))
    }

    /// `audit trail`: every entry, and with `verify` the first break in the chain (or the
    /// entries the store says are missing), which fails verification.
    pub(super) fn audit_trail(&self, verify: bool) -> Result<Outcome, AdminError> {
        let store = &self.store;
        let expected = self.expected_trail_len()?;
        let trail_key = store.keyring().snapshot().trail_key();
        let exists = match &self.shared_trail {
            Some(cell) => {
                cell.tail()
                    .map_err(|e| TrailError::Io {
                        action: "read",
                        path: PathBuf::from(cell.describe()),
                        source: std::io::Error::other(e),
                    })?
                    .0
                    > 0
            }
            None => self.trail_path.exists(),
        };
        // Verify first: a damaged line must not stop the check that names it.
        let verification = match (verify, exists, &self.shared_trail) {
            (true, true, Some(cell)) => Some(access::verify_shared(cell.as_ref(), &trail_key)?),
            (true, true, None) => Some(access::verify(&self.trail_path, &trail_key)?),
            _ => None,
        };
        let mut broken = verification
            .as_ref()
            .and_then(|v| v.first_broken.as_ref())
            .map(|b| json!({"line": b.line, "seq": b.seq, "kind": format!("{:?}", b.kind), "reason": b.reason}));
        if verify && broken.is_none() {
            let found = verification.as_ref().map_or(0, |v| v.entries);
            if found < expected {
                broken = Some(json!({"line": found + 1, "seq": null, "kind": "Removed",
                    "reason": format!("the store recorded {expected} trail entries but the trail holds {found}: \
                                       entries or the whole trail were deleted")}));
            }
        }
        if !exists && broken.is_none() {
            return Ok(Outcome {
                verification_failed: false,
                result: json!({"entries": [], "verified": verify, "first_broken": null, "count": 0}),
            });
        }
        let read = match &self.shared_trail {
            Some(cell) => access::read_shared(cell.as_ref()),
            None => access::read(&self.trail_path),
        };
        let (entries, unreadable) = match read {
            Ok(entries) => (entries, None),
            Err(e) if broken.is_some() => (Vec::new(), Some(e.to_string())),
            Err(e) => return Err(e.into()),
        };
        Ok(Outcome {
            verification_failed: broken.is_some(),
            result: json!({
                "entries": entries,
                "verified": verification.is_some(),
                "first_broken": broken,
                "unreadable": unreadable,
                "count": entries.len(),
            }),
        })
    }
}
