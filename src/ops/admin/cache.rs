//! The commands over stored entries: `cache stats`, `cache purge`, `cache verify`, `cache
//! repair`.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::Admin;
use super::command::{self, AdminError, Outcome, Progress, PurgeSelector};
use crate::cache_key::address::Address;
use crate::ops::audit;
use crate::store::now_ms;
use crate::store::record::EntryMeta;

impl Admin {
    pub(super) fn cache_stats(&self) -> Result<Value, AdminError> {
        /// `cache stats` groups entries by how often they were served: (name, at most).
        const SERVE_BUCKETS: [(&str, u64); 4] = [("0", 0), ("1", 1), ("2-9", 9), ("10+", u64::MAX)];
        let stats = self.store.stats();
        let mut by_provider: BTreeMap<String, u64> = BTreeMap::new();
        let mut by_model: BTreeMap<String, u64> = BTreeMap::new();
        let (mut served, mut oldest, mut newest) = (0u64, u64::MAX, 0u64);
        // How often entries were asked for: what the size budget keeps longest.
        let mut by_serves: BTreeMap<&'static str, u64> = SERVE_BUCKETS.iter().map(|(name, _)| (*name, 0)).collect();
        let count = audit::for_each_entry(&self.store, |_, entry, _, _| {
            *by_provider.entry(entry.record.provider.clone()).or_default() += 1;
            *by_model.entry(entry.record.model.clone()).or_default() += 1;
            served += entry.meta.times_served;
            let bucket = SERVE_BUCKETS.iter().find(|(_, up_to)| entry.meta.times_served <= *up_to);
            if let Some((name, _)) = bucket {
                *by_serves.entry(name).or_default() += 1;
            }
            oldest = oldest.min(entry.meta.created_ms);
            newest = newest.max(entry.meta.created_ms);
            Ok(())
        })?;
        Ok(json!({
            "entries": stats.entries,
            "readable": count,
            "bytes": stats.bytes,
            "disk_bytes": stats.disk_bytes,
            "times_served": served,
            "oldest_ms": (count > 0).then_some(oldest),
            "newest_ms": (count > 0).then_some(newest),
            "by_provider": by_provider,
            "by_model": by_model,
            "by_times_served": by_serves,
            "eviction": format!(
                "over max_size, entries served least often and longest ago go first \
                 (worth = 1 + times served, halved every {} days without a serve)",
                crate::store::record::KEEP_HALF_LIFE_MS / 86_400_000
            ),
            "count": count,
        }))
    }

    pub(super) fn cache_purge(&self, selector: &PurgeSelector, touched: &mut Vec<String>) -> Result<Value, AdminError> {
        if selector.older_than_ms.is_none() && selector.model.is_none() && selector.address.is_none() && !selector.all {
            return Err(AdminError::Invalid("say what to purge: --older-than, --model, --address or --all".into()));
        }
        let now = now_ms();
        let mut doomed: Vec<Address> = Vec::new();
        if let Some(a) = &selector.address {
            doomed.push(command::parse_address(a)?);
        } else {
            let mut metas: Vec<(Address, EntryMeta)> = Vec::new();
            self.store.for_each_meta(|a, m| metas.push((a, m)))?;
            for (address, meta) in metas {
                let old_enough = selector.older_than_ms.is_none_or(|age| now.saturating_sub(meta.created_ms) >= age);
                if !old_enough {
                    continue;
                }
                if let Some(pattern) = &selector.model {
                    // The model is inside the sealed record: this purge decrypts to decide.
                    match self.store.get(&address) {
                        Ok(Some(e)) if crate::config::glob_match(pattern, &e.record.model) => {}
                        _ => continue,
                    }
                }
                doomed.push(address);
            }
        }
        let mut removed = 0u64;
        for address in doomed {
            if self.store.delete(&address)? {
                removed += 1;
                touched.push(address.to_hex());
            }
        }
        self.store.flush()?;
        Ok(json!({"purged": removed, "count": removed}))
    }

    /// Checks every entry opens and the integrity record agrees; a problem fails verification.
    pub(super) fn cache_verify(&self, progress: Progress<'_>) -> Outcome {
        let report = self.store.verify(progress);
        let failed = report.failed();
        let bad: Vec<Value> =
            report.bad.iter().map(|(address, reason)| json!({"address": address, "reason": reason})).collect();
        let result = json!({
            "checked": report.checked,
            "readable": report.readable,
            "expected": report.expected,
            "missing": report.missing,
            "bad": bad,
            "problems": report.problems,
            "count": report.checked,
        });
        Outcome { result, verification_failed: failed }
    }

    /// Removes entries that do not open and resets the integrity record to what is left.
    pub(super) fn cache_repair(&self, progress: Progress<'_>) -> Result<Value, AdminError> {
        let report = self.store.repair(progress)?;
        Ok(json!({
            "kept": report.kept,
            "removed": report.removed,
            "lost": report.lost,
            "problems": report.problems,
            "count": report.removed,
        }))
    }
}
