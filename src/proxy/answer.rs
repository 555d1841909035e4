//! What an answer is and how it is kept: the exchange a request carries through its life,
//! how the answer relates to the store (`x-holdfast-cache`), Holdfast's response headers, and
//! storing an upstream answer. Below `exchange`, `chain`, `relay` and `flight`, which all use
//! it, so a request's flow reads one way: exchange → flight → chain → reader/relay → answer.

use std::time::Duration;

use axum::http::HeaderValue;
use axum::response::Response;
use serde_json::Value;

use super::AppState;
use super::request::{CachePolicy, Endpoint};
use crate::cache_key::address::{Address, Namespace};
use crate::cache_key::normalize::NormalizedRequest;
use crate::store::now_ms;
use crate::store::record::{Record, StoredResponse, Usage};
use crate::telemetry::RequestSpan;

/// What a request carries through its life; shared with the stream relay task.
#[derive(Clone)]
pub struct Exchange {
    /// The proxy's shared state: the store, the breakers, the metrics.
    pub state: AppState,
    /// Which API was called, which decides the dialect and the stream form.
    pub endpoint: Endpoint,
    /// Where the answer is looked up and stored.
    pub address: Address,
    /// What the cache may do for this request (mode, `no-store`, staleness, deadline).
    pub policy: CachePolicy,
    /// The canonical request the address was computed from, kept in the record for audit.
    pub request: NormalizedRequest,
    /// The tenant's namespace, kept (as its hash) in the record.
    pub namespace: Namespace,
    /// Model the client asked for (the record keeps the one the provider reports, if any).
    pub model: String,
    /// The provider answering (or last tried), for headers, logs and the record.
    pub provider_name: String,
    /// The request's trace span (a no-op when tracing is off).
    pub span: RequestSpan,
}

/// How an answer relates to the store, as `x-holdfast-cache` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheResult {
    /// Served from the store without asking upstream.
    Hit,
    /// Served from the store because upstream failed.
    Stale,
    /// Answered by upstream and stored.
    Miss,
    /// Answered by upstream; the store was not involved (mode `off`, `no-store`).
    Bypass,
    /// The answer of an identical request in flight at the same time (single-flight).
    Coalesced,
}

impl CacheResult {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Stale => "stale",
            Self::Miss => "miss",
            Self::Bypass => "bypass",
            Self::Coalesced => "coalesced",
        }
    }
}

/// A request's answer as the proxy hands it back to the connection.
pub struct Answer {
    /// What the client receives, Holdfast's headers already set.
    pub response: Response,
    /// How the answer relates to the store, for metrics, the span and single-flight.
    pub cache: CacheResult,
    /// The provider whose answer it is (for a stored answer, the one that gave it then).
    pub provider: String,
}

/// Adds Holdfast's response headers.
pub fn decorate(
    response: &mut Response,
    result: CacheResult,
    address: &Address,
    provider: &str,
    age_secs: Option<u64>,
    upstream_error: Option<&str>,
) {
    set_header(response, "x-holdfast-cache", result.as_str());
    set_header(response, "x-holdfast-key", &address.to_hex());
    set_header(response, "x-holdfast-provider", provider);
    if let Some(age) = age_secs {
        set_header(response, "age", &age.to_string());
    }
    if let Some(reason) = upstream_error {
        // Header values must be visible ASCII; reasons from OS errors usually are.
        let clean: String = reason.chars().filter(|c| c.is_ascii_graphic() || *c == ' ').take(200).collect();
        set_header(response, "x-holdfast-upstream-error", &clean);
    }
}

pub(super) fn set_header(response: &mut Response, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, v);
    }
}

impl Exchange {
    /// A record of this exchange holding `response`.
    pub fn record_with(&self, response: StoredResponse) -> Record {
        Record {
            request: self.request.clone(),
            namespace: self.namespace.hash(),
            response,
            provider: self.provider_name.clone(),
            model: self.model.clone(),
            created_ms: now_ms(),
            upstream_latency_ms: 0,
            usage: None,
        }
    }
}

/// Seals and stores an upstream answer off the async workers, returning once the store says
/// it is kept (fsync'd, in durable mode): callers send the client's last byte after this.
/// Failures are logged and counted, never passed to the client: the answer itself is fine.
pub async fn store_record(exchange: &Exchange, response: StoredResponse, latency: Duration) {
    let state = exchange.state.clone();
    let address = exchange.address;
    let mut record = exchange.record_with(response);
    record.upstream_latency_ms = u32::try_from(latency.as_millis()).unwrap_or(u32::MAX);
    let store = state.store.clone();
    let store_span = exchange.span.store("put");
    let outcome = tokio::task::spawn_blocking(move || {
        let mut by_id = None;
        if let Some(json) = record.answer_json() {
            if json.get("object").and_then(Value::as_str) == Some("response")
                && json.get("status").and_then(Value::as_str) == Some("incomplete")
            {
                // A Responses answer cut short (token limit, content filter) is not complete.
                tracing::info!(%address, "incomplete response not stored");
                return Ok(None);
            }
            record.usage = usage_of(&json);
            if let Some(model) = json.get("model").and_then(Value::as_str) {
                record.model = model.to_owned();
            }
            // `GET /v1/responses/{id}` of this answer can then be served in an outage.
            by_id = super::by_id::response_by_id(&record, &json);
        }
        store.put(&address, &record)?;
        if let Some(by_id) = by_id {
            let namespace = crate::cache_key::address::Namespace::from_hash(by_id.namespace);
            store.put(&store.address(&namespace, &by_id.request), &by_id)?;
        }
        Ok::<_, crate::store::StoreError>(record.usage)
    })
    .await;
    store_span.written(!matches!(outcome, Ok(Ok(_))));
    match outcome {
        Ok(Ok(usage)) => {
            if let Some(usage) = usage {
                exchange.span.usage(usage.input_tokens, usage.output_tokens);
            }
        }
        // An unreachable shared store logs once per interval itself.
        Ok(Err(e)) if e.is_unavailable() => state.metrics.count_store_error(),
        Ok(Err(e)) => {
            state.metrics.count_store_error();
            tracing::error!(%address, error = %e, "could not store the answer; it was served but will not be kept");
        }
        Err(e) => {
            state.metrics.count_store_error();
            tracing::error!(%address, error = %e, "store task failed");
        }
    }
}

/// Token counts in either dialect's naming (OpenAI chat: prompt/completion; Responses and
/// Anthropic: input/output).
fn usage_of(json: &Value) -> Option<Usage> {
    let usage = json.get("usage")?;
    let field = |names: &[&str]| names.iter().find_map(|n| usage.get(*n).and_then(Value::as_u64));
    Some(Usage {
        input_tokens: field(&["input_tokens", "prompt_tokens"])?,
        output_tokens: field(&["output_tokens", "completion_tokens"]).unwrap_or(0),
    })
}
