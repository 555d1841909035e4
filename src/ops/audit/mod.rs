//! What operators see of stored prompts: listing, showing, searching and exporting entries,
//! and the tamper-evident access trail of who looked.

pub mod trail;

use serde::Serialize;
use serde_json::Value;

use crate::cache_key::address::Address;
use crate::store::record::{EntryMeta, Record, ResponseBody};
use crate::store::{Entry, Store, StoreError};

/// One line of `audit list`.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRow {
    /// The entry's hex address: what `audit show` and `cache purge --address` take.
    pub address: String,
    /// When it was stored, in milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// When it was last served from the store (0: never).
    pub last_served_ms: u64,
    /// How often it was served: what the size budget keeps longest.
    pub times_served: u64,
    /// The provider that answered it.
    pub provider: String,
    /// The model that answered it.
    pub model: String,
    /// The API path it was asked on (`/v1/chat/completions`, `/v1/messages`, …).
    pub endpoint: String,
    /// `shared`, or the first bytes of the tenant's keyed hash (never the tenant itself).
    pub tenant: String,
    /// The start of the last user message (or the whole prompt), on one line.
    pub preview: String,
}

/// Which entries `audit list` shows.
#[derive(Debug, Clone, Default, serde::Deserialize, Serialize)]
pub struct AuditFilter {
    /// Entries stored at or after this instant only (`--since`).
    pub since_ms: Option<u64>,
    /// Entries stored before this instant only (the dashboard's time range).
    pub until_ms: Option<u64>,
    /// Entries of models matching this glob only (`--model`).
    pub model: Option<String>,
    /// Entries one provider answered only (`--provider`).
    pub provider: Option<String>,
    /// `shared`, or a hex prefix of the tenant hash as `audit show` prints it.
    pub tenant: Option<String>,
}

impl AuditFilter {
    fn keeps_meta(&self, meta: &EntryMeta) -> bool {
        self.since_ms.is_none_or(|since| meta.created_ms >= since)
            && self.until_ms.is_none_or(|until| meta.created_ms < until)
    }

    fn keeps_record(&self, record: &Record) -> bool {
        self.model.as_ref().is_none_or(|m| crate::config::glob_match(m, &record.model))
            && self.provider.as_ref().is_none_or(|p| p == &record.provider)
            && self.tenant.as_ref().is_none_or(|t| tenant_matches(t, record.namespace.as_ref()))
    }
}

/// Whether `wanted` (`shared`, or hex digits) names the tenant `namespace`.
fn tenant_matches(wanted: &str, namespace: Option<&[u8; 32]>) -> bool {
    let wanted = wanted.trim().trim_end_matches('…').to_ascii_lowercase();
    match namespace {
        None => wanted == "shared",
        Some(hash) => {
            let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
            !wanted.is_empty() && hex.starts_with(&wanted)
        }
    }
}

/// How listings show a tenant: `shared`, or the first four bytes of its keyed hash.
fn tenant_label(namespace: Option<&[u8; 32]>) -> String {
    namespace.map_or("shared".to_owned(), |h| format!("{:02x}{:02x}{:02x}{:02x}…", h[0], h[1], h[2], h[3]))
}

const PREVIEW_CHARS: usize = 80;

/// The text a person would call "the prompt": the last user message, or the prompt/input field.
pub fn prompt_text(record: &Record) -> String {
    let body: Value = serde_json::from_slice(&record.request.canonical).unwrap_or_default();
    let content_text = |content: &Value| -> String {
        match content {
            Value::String(s) => s.clone(),
            Value::Array(parts) => {
                parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join(" ")
            }
            _ => String::new(),
        }
    };
    if let Some(messages) = body.get("messages").and_then(Value::as_array)
        && let Some(last_user) = messages.iter().rev().find(|m| m["role"] == "user")
    {
        return content_text(last_user.get("content").unwrap_or(&Value::Null));
    }
    for field in ["prompt", "input"] {
        match body.get(field).unwrap_or(&Value::Null) {
            Value::String(s) => return s.clone(),
            Value::Array(items) => {
                if let Some(last) = items.iter().rev().find(|i| i["role"] == "user") {
                    return content_text(&last["content"]);
                }
                return items.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" ");
            }
            _ => {}
        }
    }
    String::new()
}

/// The answer as JSON, whichever form it was recorded in (streams are assembled).
/// An answer that is not JSON (or a stream that does not assemble) is shown as its raw text, so
/// an audit never hides what was stored.
pub fn answer_json(record: &Record) -> Value {
    record.answer_json().unwrap_or_else(|| match &record.response.body {
        ResponseBody::Complete(bytes) => Value::String(String::from_utf8_lossy(bytes).into_owned()),
        ResponseBody::Stream(events) => {
            Value::String(events.iter().map(|e| String::from_utf8_lossy(e).into_owned()).collect())
        }
    })
}

fn one_line(text: &str, max: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max { flat } else { format!("{}…", flat.chars().take(max - 1).collect::<String>()) }
}

pub fn row(address: &Address, entry: &Entry) -> AuditRow {
    AuditRow {
        address: address.to_hex(),
        created_ms: entry.meta.created_ms,
        last_served_ms: entry.meta.last_served_ms,
        times_served: entry.meta.times_served,
        provider: entry.record.provider.clone(),
        model: entry.record.model.clone(),
        endpoint: entry.record.request.endpoint.clone(),
        tenant: tenant_label(entry.record.namespace.as_ref()),
        preview: one_line(&prompt_text(&entry.record), PREVIEW_CHARS),
    }
}

/// The full view of one entry for `audit show` and `audit export`.
pub fn detail(address: &Address, entry: &Entry) -> Value {
    let request: Value = serde_json::from_slice(&entry.record.request.canonical).unwrap_or_default();
    serde_json::json!({
        "address": address.to_hex(),
        "created_ms": entry.meta.created_ms,
        "last_served_ms": entry.meta.last_served_ms,
        "times_served": entry.meta.times_served,
        "key_id": entry.meta.key_id,
        "provider": entry.record.provider,
        "model": entry.record.model,
        "endpoint": entry.record.request.endpoint,
        "tenant": tenant_label(entry.record.namespace.as_ref()),
        "streamed": matches!(entry.record.response.body, ResponseBody::Stream(_)),
        "upstream_latency_ms": entry.record.upstream_latency_ms,
        "usage": entry.record.usage.map(|u| serde_json::json!({"input_tokens": u.input_tokens, "output_tokens": u.output_tokens})),
        "request": request,
        "response": answer_json(&entry.record),
    })
}

/// Visits every readable entry (tampered ones are counted by the store and skipped), with the
/// number visited so far and the total for progress.
pub fn for_each_entry(
    store: &Store,
    mut visit: impl FnMut(&Address, &Entry, u64, u64) -> Result<(), StoreError>,
) -> Result<u64, StoreError> {
    let mut metas = Vec::new();
    store.for_each_meta(|a, m| metas.push((a, m)))?;
    let total = metas.len() as u64;
    let mut seen = 0;
    for (i, (address, _)) in metas.iter().enumerate() {
        match store.get(address) {
            Ok(Some(entry)) => {
                seen += 1;
                visit(address, &entry, i as u64 + 1, total)?;
            }
            Ok(None) | Err(StoreError::Tampered { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(seen)
}

/// Entries passing `filter`, newest first.
pub fn list(store: &Store, filter: &AuditFilter) -> Result<Vec<AuditRow>, StoreError> {
    let mut rows = Vec::new();
    for_each_entry(store, |address, entry, _, _| {
        if filter.keeps_meta(&entry.meta) && filter.keeps_record(&entry.record) {
            rows.push(row(address, entry));
        }
        Ok(())
    })?;
    rows.sort_by_key(|r| std::cmp::Reverse(r.created_ms));
    Ok(rows)
}

/// Entries passing `filter` whose request or answer contains `text` (case-insensitive).
pub fn search(store: &Store, text: &str, filter: &AuditFilter) -> Result<Vec<AuditRow>, StoreError> {
    let needle = text.to_lowercase();
    let mut rows = Vec::new();
    for_each_entry(store, |address, entry, _, _| {
        if !(filter.keeps_meta(&entry.meta) && filter.keeps_record(&entry.record)) {
            return Ok(());
        }
        let request = String::from_utf8_lossy(&entry.record.request.canonical).to_lowercase();
        let answer = answer_json(&entry.record).to_string().to_lowercase();
        if request.contains(&needle) || answer.contains(&needle) {
            rows.push(row(address, entry));
        }
        Ok(())
    })?;
    rows.sort_by_key(|r| std::cmp::Reverse(r.created_ms));
    Ok(rows)
}
