//! `holdfast cache refresh`: ask the providers again for the questions asked most often, so the
//! answers kept for the next outage are recent ones.
//!
//! Opt-in and bounded: a plan is listed first (with the tokens it would cost), only entries
//! older than a threshold and asked at least a few times qualify, at most `limit` are re-asked,
//! one at a time and no faster than `per_minute`. Only entries of clients without an API key of
//! their own can be refreshed (the shared and the anonymous namespace): a tenant's entry was
//! answered under the tenant's key, which Holdfast never keeps.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::command::{AdminError, Progress, RefreshPlan};
use crate::cache_key::address::Address;
use crate::config::{CacheMode, Config};
use crate::proxy::AppState;
use crate::proxy::upstream::Upstreams;
use crate::store::record::{EntryMeta, Record};
use crate::store::{Store, now_ms};

/// Sends re-asked requests through a proxy's own exchange: the same routes, translation,
/// failover and storing as a client's request. Blocking; call it off the async workers.
pub struct Refresher {
    /// The proxy whose exchange sends each re-ask and stores its answer.
    proxy: AppState,
    /// The runtime the exchange runs on; the refresh itself is blocking code.
    runtime: tokio::runtime::Handle,
}

impl Refresher {
    /// Over a running server's proxy (the admin API's `cache refresh`).
    pub fn new(proxy: AppState, runtime: tokio::runtime::Handle) -> Self {
        Self { proxy, runtime }
    }

    /// A proxy of its own over `store`, with the providers `config` names and their keys from
    /// the environment, for `cache refresh` run on the store directly.
    pub fn from_config(
        config: Config,
        store: std::sync::Arc<Store>,
        runtime: tokio::runtime::Handle,
    ) -> Result<Self, AdminError> {
        let upstreams = Upstreams::new(&config.providers, |name| std::env::var(name).ok())
            .map_err(|e| AdminError::Invalid(e.to_string()))?;
        Ok(Self::new(AppState::new(config, store, upstreams), runtime))
    }

    fn refuses(&self) -> Option<String> {
        match self.proxy.config.cache.mode {
            CacheMode::Off | CacheMode::Replay => Some(format!(
                "cache.mode = \"{}\" stores no new answers: nothing can be refreshed",
                self.proxy.config.cache.mode.as_str()
            )),
            _ => None,
        }
    }
}

/// One entry the plan picked.
struct Candidate {
    /// Where it is stored, for the plan's rows and the trail.
    address: Address,
    /// How old and how often asked: what qualified it and how it ranks.
    meta: EntryMeta,
    /// The stored request, sent again, and its last answer's usage, for the cost estimate.
    record: Record,
}

impl Candidate {
    /// Tokens a re-ask costs: what the provider reported last time, or, without a report, the
    /// usual four bytes a token of request and answer.
    fn estimated_tokens(&self) -> (u64, &'static str) {
        match self.record.usage {
            Some(u) => (u.input_tokens.saturating_add(u.output_tokens), "reported"),
            None => {
                let bytes = self.record.request.canonical.len() + self.record.response.body.len();
                ((bytes as u64).div_ceil(4), "from size")
            }
        }
    }

    fn row(&self, now: u64, outcome: &str) -> Value {
        let (tokens, basis) = self.estimated_tokens();
        json!({
            "address": self.address.to_hex(),
            "model": self.record.model,
            "provider": self.record.provider,
            "endpoint": self.record.request.endpoint,
            "times_served": self.meta.times_served,
            "age_ms": now.saturating_sub(self.meta.created_ms),
            "estimated_tokens": tokens,
            "estimate": basis,
            "outcome": outcome,
        })
    }
}

/// Runs (or with `dry_run`, lists) `plan`. The addresses it picked go into `touched` (the
/// access trail), since picking them means opening their records.
pub fn refresh(
    store: &Store,
    refresher: Option<&Refresher>,
    plan: &RefreshPlan,
    progress: Progress<'_>,
    touched: &mut Vec<String>,
) -> Result<Value, AdminError> {
    if plan.per_minute == 0 || plan.limit == 0 {
        return Err(AdminError::Invalid("--per-minute and --limit must be at least 1".into()));
    }
    let refresher = match (refresher, plan.dry_run) {
        (Some(r), _) => {
            if let Some(why) = r.refuses() {
                return Err(AdminError::Invalid(why));
            }
            Some(r)
        }
        (None, true) => None,
        (None, false) => {
            return Err(AdminError::Invalid(
                "this admin endpoint has no providers to ask; run cache refresh on the store directly or through \
                 `holdfast serve`'s admin API"
                    .into(),
            ));
        }
    };
    let now = now_ms();
    let mut eligible: Vec<(Address, EntryMeta)> = Vec::new();
    store.for_each_meta(|address, meta| {
        let old_enough = now.saturating_sub(meta.created_ms) >= plan.older_than_ms;
        if old_enough && meta.times_served >= plan.min_served && !meta.is_expired(now) {
            eligible.push((address, meta));
        }
    })?;
    // Most asked first; between equals, the oldest answer first.
    eligible.sort_by(|(_, a), (_, b)| b.times_served.cmp(&a.times_served).then(a.created_ms.cmp(&b.created_ms)));
    // What a request without a credential is stored under: the shared namespace, or with
    // `cache.scope = "credential"` the anonymous one. A re-ask sends no credential.
    let anonymous = store.keyring().snapshot().addresser().namespace_for_credential(b"").hash();
    let (mut tenant, mut old_rules) = (0u64, 0u64);
    let mut picked = Vec::new();
    for (address, meta) in eligible.iter().copied() {
        if picked.len() == plan.limit {
            break;
        }
        let Some(entry) = store.get(&address)? else { continue };
        if entry.record.namespace.is_some() && entry.record.namespace != anonymous {
            tenant += 1;
        } else if entry.record.request.version != crate::cache_key::normalize::NORMALIZATION_VERSION {
            // Re-asked, it would be stored under today's address and the old one would stay.
            old_rules += 1;
        } else {
            picked.push(Candidate { address, meta, record: entry.record });
        }
    }
    touched.extend(picked.iter().map(|c| c.address.to_hex()));
    let estimated: u64 = picked.iter().map(|c| c.estimated_tokens().0).sum();
    let summary = |rows: Vec<Value>, refreshed: u64, failed: u64, tokens_used: u64| {
        json!({
            "dry_run": plan.dry_run,
            "eligible": eligible.len(),
            "picked": picked.len(),
            "skipped_tenant_entries": tenant,
            "skipped_older_rules": old_rules,
            "estimated_tokens": estimated,
            "refreshed": refreshed,
            "failed": failed,
            "tokens_used": tokens_used,
            "entries": rows,
            "count": refreshed,
        })
    };
    let Some(refresher) = refresher.filter(|_| !plan.dry_run) else {
        let rows = picked.iter().map(|c| c.row(now, "would refresh")).collect();
        return Ok(summary(rows, 0, 0, 0));
    };
    let gap = Duration::from_secs(60) / plan.per_minute;
    let (mut refreshed, mut failed, mut tokens_used) = (0u64, 0u64, 0u64);
    let mut rows = Vec::with_capacity(picked.len());
    let mut last_sent: Option<Instant> = None;
    for (i, candidate) in picked.iter().enumerate() {
        if let Some(sent) = last_sent {
            std::thread::sleep(gap.saturating_sub(sent.elapsed()));
        }
        last_sent = Some(Instant::now());
        let outcome = match refresher.runtime.block_on(crate::proxy::reask(&refresher.proxy, &candidate.record.request))
        {
            Ok(answer) if answer.refreshed() && answer.address.as_deref() == Some(&candidate.address.to_hex()) => {
                refreshed += 1;
                let usage = store.get(&candidate.address)?.and_then(|e| e.record.usage);
                tokens_used += usage.map_or(0, |u| u.input_tokens.saturating_add(u.output_tokens));
                "refreshed".to_owned()
            }
            Ok(answer) if answer.refreshed() => {
                failed += 1;
                "failed: the answer was stored at another address (the request no longer normalizes the same)".into()
            }
            Ok(answer) => {
                failed += 1;
                let cache = answer.cache.as_deref().unwrap_or("-");
                let why = answer.error.unwrap_or_default();
                format!("failed: HTTP {} (x-holdfast-cache: {cache}); stored answer kept. {why}", answer.status)
            }
            Err(why) => {
                failed += 1;
                format!("failed: {why}; stored answer kept")
            }
        };
        rows.push(candidate.row(now, &outcome));
        progress(i as u64 + 1, picked.len() as u64);
    }
    Ok(summary(rows, refreshed, failed, tokens_used))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_describes_itself_as_the_command_line() {
        let plan = RefreshPlan { older_than_ms: 86_400_000, min_served: 2, limit: 10, per_minute: 30, dry_run: true };
        assert_eq!(
            plan.describe(),
            "cache refresh --older-than 86400s --min-served 2 --limit 10 --per-minute 30 --dry-run"
        );
    }
}
