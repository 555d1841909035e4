//! The commands that write or read a file: `audit export` (JSON Lines), `cache export` and
//! `cache import` (an encrypted bundle, see [`crate::ops::bundle`]).

use std::path::Path;

use serde_json::{Value, json};

use super::Admin;
use super::command::{AdminError, Progress};
use crate::cache_key::address::Namespace;
use crate::ops::audit;
use crate::ops::bundle::content::{BundleHeader, BundleItem};
use crate::ops::bundle::{BundleError, BundleReader, BundleWriter, MAX_FRAME};
use crate::secret::SecretKey;
use crate::store::{StoreError, codec, now_ms};

impl Admin {
    /// `audit export` to a new file at `path`; a half-written file is removed again.
    pub(super) fn audit_export(&self, path: &Path, progress: Progress<'_>) -> Result<Value, AdminError> {
        remove_on_error(path, self.write_audit_export(path, progress))
    }

    /// `cache export` to a new bundle at `to`; a half-written bundle is removed again.
    pub(super) fn cache_export(&self, to: &Path, pass: &[u8], progress: Progress<'_>) -> Result<Value, AdminError> {
        let existed = to.exists();
        let result = self.write_bundle(to, pass, progress);
        // The writer refuses an existing file; only a file it created is ours to remove.
        if existed { result } else { remove_on_error(to, result) }
    }

    /// Writes every entry, decrypted, as one JSON line each, to a new file at `path`.
    fn write_audit_export(&self, path: &Path, progress: Progress<'_>) -> Result<Value, AdminError> {
        use std::io::Write as _;
        let io = |source| AdminError::Io { path: path.to_owned(), source };
        let file = create_new(path).map_err(io)?;
        let mut out = std::io::BufWriter::new(file);
        let mut write_error = None;
        let count = audit::for_each_entry(&self.store, |address, entry, done, total| {
            let line = audit::detail(address, entry).to_string();
            if let Err(e) = writeln!(out, "{line}") {
                write_error.get_or_insert(e);
            }
            if done % 256 == 0 || done == total {
                progress(done, total);
            }
            Ok(())
        })?;
        if let Some(e) = write_error {
            return Err(io(e));
        }
        out.flush().map_err(io)?;
        out.get_ref().sync_all().map_err(io)?;
        Ok(json!({"exported": count, "path": path, "count": count}))
    }

    /// Writes every entry into a new bundle at `path`, encrypted under the passphrase `pass`.
    fn write_bundle(&self, path: &Path, pass: &[u8], progress: Progress<'_>) -> Result<Value, AdminError> {
        let mut writer = BundleWriter::create(path, pass)?;
        let header = BundleHeader::new(now_ms(), *self.store.keyring().snapshot().namespace_key().expose());
        writer.append(&header.encode().map_err(StoreError::Encode)?)?;
        let mut bundle_error = None;
        let mut too_large = 0u64;
        let count = audit::for_each_entry(&self.store, |address, entry, done, total| {
            let item = BundleItem { record: entry.record.clone(), meta: entry.meta };
            match codec::encode(&item) {
                // One entry too large for a frame (stored before max_response_bytes existed)
                // is left out and counted; it must not cost the export of every other entry.
                Ok(bytes) if bytes.len() > MAX_FRAME => {
                    too_large += 1;
                    tracing::warn!(%address, bytes = bytes.len(), "entry too large for a bundle frame; not exported");
                }
                Ok(bytes) => {
                    if let Err(e) = writer.append(&zeroize::Zeroizing::new(bytes)) {
                        bundle_error.get_or_insert(e);
                    }
                }
                Err(e) => return Err(StoreError::Encode(e)),
            }
            if done % 256 == 0 || done == total {
                progress(done, total);
            }
            Ok(())
        })?;
        if let Some(e) = bundle_error {
            return Err(e.into());
        }
        writer.finish()?;
        let exported = count - too_large;
        Ok(json!({"exported": exported, "skipped_too_large": too_large, "path": path, "count": exported}))
    }

    /// Re-seals every bundled entry under this store's keys and re-addresses it under this
    /// store's address key. Tenant entries need the source's namespace key: an empty store
    /// adopts it; a store that already has entries keeps its own and skips them (their tenants
    /// could not find them here).
    pub(super) fn cache_import(&self, from: &Path, pass: &[u8], progress: Progress<'_>) -> Result<Value, AdminError> {
        let mut reader = BundleReader::open(from, pass)?;
        let header = BundleHeader::decode(reader.next_frame()?).map_err(|e| AdminError::Invalid(e.to_string()))?;
        let theirs = SecretKey::from_bytes(header.namespace_key);
        let same_tenants = self.store.keyring().snapshot().namespace_key() == &theirs;
        let adopted = !same_tenants && self.store.stats().entries == 0;
        if adopted {
            self.store.keyring().adopt_namespace_key(&theirs).map_err(StoreError::from)?;
        }
        let tenants_ok = same_tenants || adopted;
        let addresser = self.store.addresser();
        let (mut imported, mut skipped) = (0u64, 0u64);
        // Each frame is authentic on its own, so entries before a damaged frame are kept; the
        // error says how many, so the operator knows what the store now holds.
        let partial = |imported: u64, e: BundleError| {
            AdminError::Invalid(format!("{e}; {imported} entries were imported before the bundle turned out damaged"))
        };
        while let Some(frame) = reader.next_frame().map_err(|e| partial(imported, e))? {
            let item = BundleItem::decode(frame).map_err(|e| AdminError::Invalid(e.to_string()))?;
            if item.record.namespace.is_some() && !tenants_ok {
                skipped += 1;
                continue;
            }
            let address = addresser.address(&Namespace::from_hash(item.record.namespace), &item.record.request);
            self.store.put_as_of(
                &address,
                &item.record,
                item.meta.created_ms,
                item.meta.last_served_ms,
                item.meta.times_served,
            )?;
            imported += 1;
            if imported % 256 == 0 {
                progress(imported, 0);
            }
        }
        // Writes no longer evict inline; an import over budget trims here, once.
        self.store.evict_to_budget()?;
        self.store.flush()?;
        Ok(json!({
            "imported": imported,
            "skipped_tenant_entries": skipped,
            "adopted_tenant_key": adopted,
            "count": imported,
        }))
    }
}

/// Removes a half-written export so a retry can use the same path.
fn remove_on_error(path: &Path, result: Result<Value, AdminError>) -> Result<Value, AdminError> {
    if result.is_err() {
        let _ = std::fs::remove_file(path);
    }
    result
}

/// Creates `path`, refusing to overwrite (an export must never clobber a file), mode 0600.
pub(super) fn create_new(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}
