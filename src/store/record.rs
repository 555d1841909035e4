//! What one stored entry holds. Everything here is sealed; only `EntryMeta` is kept in the clear.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::cache_key::normalize::NormalizedRequest;

impl Record {
    /// The answer as one JSON value, whichever form it was recorded in (a stream is
    /// assembled); `None` if it is not JSON or the stream does not assemble.
    pub fn answer_json(&self) -> Option<serde_json::Value> {
        match &self.response.body {
            ResponseBody::Complete(bytes) => serde_json::from_slice(bytes).ok(),
            ResponseBody::Stream(events) => {
                let kind = crate::wire::sse::StreamKind::from_endpoint(&self.request.endpoint)?;
                serde_json::from_slice(&crate::wire::form::stream_to_json(kind, events).ok()?).ok()
            }
        }
    }
}

/// One exchange with a provider, as stored (encrypted) and served back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The normalized request, so an audit shows exactly what was asked.
    pub request: NormalizedRequest,
    /// The tenant's namespace hash (`None` for the shared namespace). Never the credential:
    /// only its keyed hash, kept so an import can re-address the entry under another store's
    /// address key.
    pub namespace: Option<[u8; 32]>,
    /// The provider's answer, in the form it arrived.
    pub response: StoredResponse,
    /// Configured name of the provider that answered (e.g. `openai`).
    pub provider: String,
    /// Model the provider actually served.
    pub model: String,
    /// When the answer was received, milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// Time from sending the request to the last byte of the answer.
    pub upstream_latency_ms: u32,
    /// Token counts reported by the provider, when it reported them.
    pub usage: Option<Usage>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredResponse {
    /// HTTP status the provider answered with (always a success for stored entries today).
    pub status: u16,
    /// The provider's `content-type`, replayed as is.
    pub content_type: String,
    /// The answer: one JSON body or the stream's events, byte-exact.
    pub body: ResponseBody,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResponseBody {
    /// A non-streamed answer: the body bytes exactly as received.
    Complete(Bytes),
    /// A streamed answer: each server-sent event's raw bytes, including its terminating blank
    /// line, in arrival order, so a replay is byte-for-byte what the provider sent.
    Stream(Vec<Bytes>),
}

impl ResponseBody {
    pub fn len(&self) -> usize {
        match self {
            Self::Complete(b) => b.len(),
            Self::Stream(events) => events.iter().map(Bytes::len).sum(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens of the prompt, as the provider counted them.
    pub input_tokens: u64,
    /// Tokens of the answer.
    pub output_tokens: u64,
}

/// Plaintext bookkeeping for one entry: what maintenance (expiry, eviction, stats, key
/// rotation) needs without the key. Never any prompt or answer content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryMeta {
    /// When the entry was stored, ms since the Unix epoch.
    pub created_ms: u64,
    /// When it was last served to a client (equal to `created_ms` until then).
    pub last_served_ms: u64,
    /// How often the question was asked again after it was first stored: served from the
    /// store, or answered afresh by a provider (the embedded store carries the count over to
    /// the new answer; a Redis store starts it again).
    pub times_served: u64,
    /// Size of the sealed value in bytes.
    pub size: u64,
    /// Data key the value is sealed under; lets rotation and `keys list` count without opening.
    pub key_id: u32,
    /// When the entry expires (ms since the epoch); 0 for never.
    pub expires_ms: u64,
}

/// How long it takes an entry's worth to halve when nobody asks for it (see `keep_score`).
pub const KEEP_HALF_LIFE_MS: u64 = 7 * 24 * 60 * 60 * 1000;

impl EntryMeta {
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_ms != 0 && self.expires_ms <= now_ms
    }

    /// How much the entry is worth keeping when the size budget forces a choice: one more than
    /// the times it was served, halved for every `KEEP_HALF_LIFE_MS` since it was last served
    /// (or stored). A question asked often outlives one asked once, and one nobody has asked
    /// for in weeks gives way in the end, however popular it was.
    pub fn keep_score(&self, now_ms: u64) -> f64 {
        let idle = now_ms.saturating_sub(self.last_served_ms) as f64 / KEEP_HALF_LIFE_MS as f64;
        (1.0 + self.times_served as f64) * 0.5f64.powf(idle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(times_served: u64, last_served_ms: u64) -> EntryMeta {
        EntryMeta { created_ms: 0, last_served_ms, times_served, size: 1, key_id: 1, expires_ms: 0 }
    }

    #[test]
    fn frequency_outweighs_recency_until_it_ages() {
        let now = 100 * KEEP_HALF_LIFE_MS;
        let popular_yesterday = meta(9, now - KEEP_HALF_LIFE_MS / 7);
        let once_just_now = meta(1, now);
        let never_served_new = meta(0, now);
        assert!(popular_yesterday.keep_score(now) > once_just_now.keep_score(now));
        assert!(once_just_now.keep_score(now) > never_served_new.keep_score(now));
        // Ten half-lives later the popular entry is worth less than a fresh one.
        let popular_long_ago = meta(9, now - 10 * KEEP_HALF_LIFE_MS);
        assert!(popular_long_ago.keep_score(now) < never_served_new.keep_score(now));
        // Equal frequency: the more recently served is kept (least recently served goes first).
        assert!(meta(2, now - 1000).keep_score(now) < meta(2, now).keep_score(now));
    }
}
