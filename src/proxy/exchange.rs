//! One client request, start to finish: read and check it, address it, then answer in the
//! order the cache mode allows — a fresh stored answer, upstream, a stale stored answer, an
//! error in the client's dialect.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Uri};
use axum::response::Response;
use serde_json::Value;

use super::AppState;
use super::chain;
use super::errors::ApiError;
use super::request::{self, CachePolicy, Endpoint};
use super::stored;
use crate::address::{Address, Namespace};
use crate::config::CacheMode;
use crate::normalize::{NormalizedRequest, normalize_value};
use crate::record::{Record, StoredResponse, Usage};
use crate::store::{Entry, now_ms};
use crate::upstream::{RETURNED_HEADERS, UpstreamFailure};

/// What a request carries through its life; shared with the stream relay task.
#[derive(Clone)]
pub struct Exchange {
    pub state: AppState,
    pub endpoint: Endpoint,
    pub address: Address,
    pub policy: CachePolicy,
    pub request: NormalizedRequest,
    /// The tenant's namespace, kept (as its hash) in the record.
    pub namespace: Namespace,
    /// Model the client asked for (the record keeps the one the provider reports, if any).
    pub model: String,
    pub provider_name: String,
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
}

impl CacheResult {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Stale => "stale",
            Self::Miss => "miss",
            Self::Bypass => "bypass",
        }
    }
}

pub async fn handle(state: AppState, endpoint: Endpoint, uri: Uri, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let mut trace = Trace::default();
    let outcome = answer(&state, endpoint, &uri, &headers, body, &mut trace).await;
    let (mut response, result, provider) = match outcome {
        Ok(ok) => ok,
        Err(err) => {
            tracing::info!(endpoint = endpoint.path(), error = %err, "request answered with an error");
            let mut response = err.into_dialect_response(endpoint.dialect());
            if let Some(a) = &trace.address {
                // The store was consulted (or could have been) and had nothing to give.
                set_header(&mut response, "x-holdfast-cache", "miss");
                set_header(&mut response, "x-holdfast-key", &a.to_hex());
            }
            if let Some(p) = &trace.provider {
                set_header(&mut response, "x-holdfast-provider", p);
            }
            if trace.attempts > 0 {
                set_header(&mut response, "x-holdfast-attempts", &trace.attempts.to_string());
                // Holdfast has already retried and failed over; SDK retries would only add load.
                set_header(&mut response, "x-should-retry", "false");
            }
            state.metrics.count_request(endpoint.path(), "-", "error");
            return response;
        }
    };
    if trace.attempts > 0 {
        set_header(&mut response, "x-holdfast-attempts", &trace.attempts.to_string());
        let status = response.status().as_u16();
        if status == 429 || status >= 500 {
            // A provider's failure passed through after Holdfast's own retries and failover.
            set_header(&mut response, "x-should-retry", "false");
        }
    }
    state.metrics.count_request(endpoint.path(), &provider, result.as_str());
    tracing::debug!(endpoint = endpoint.path(), %provider, cache = result.as_str(),
        status = response.status().as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "answered");
    response
}

pub type Answer = (Response, CacheResult, String);

/// What is known about a request when it ends in an error, for the error's headers.
#[derive(Default)]
struct Trace {
    address: Option<Address>,
    attempts: u32,
    provider: Option<String>,
}

async fn answer(
    state: &AppState,
    endpoint: Endpoint,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
    trace: &mut Trace,
) -> Result<Answer, ApiError> {
    let raw = request::read_body(headers, body, state.config.max_request_bytes).await?;
    let parsed = request::parse(endpoint, raw)?;
    let policy = CachePolicy::from_request(headers, &state.config.cache, &state.config.resilience)?;
    let deadline = tokio::time::Instant::now() + policy.deadline;
    // normalize_value only fails for non-objects, which `parse` has already refused.
    let normalized = normalize_value(endpoint.path(), &parsed.json).map_err(|_| ApiError::NotAnObject)?;
    let (namespace, address) = state.locate(headers, &normalized);
    trace.address = Some(address);

    if policy.mode == CacheMode::Replay {
        return match lookup(state, &address) {
            Some(entry) => serve_entry(state, &entry, endpoint, parsed.wants_stream, CacheResult::Hit, &address, None)
                .ok_or(ApiError::NotRecorded { address: address.to_hex() }),
            None => Err(ApiError::NotRecorded { address: address.to_hex() }),
        };
    }
    if policy.mode == CacheMode::CacheFirst
        && !policy.no_cache
        && let Some(entry) = lookup(state, &address)
        && age_of(&entry) <= policy.fresh_for
        && let Some(answer) =
            serve_entry(state, &entry, endpoint, parsed.wants_stream, CacheResult::Hit, &address, None)
    {
        return Ok(answer);
    }

    let targets = state.upstreams.targets(&state.config.routes, endpoint.dialect(), &parsed.model);
    if targets.is_empty() {
        return Err(ApiError::UnknownModel { model: parsed.model, path: endpoint.path().to_owned() });
    }
    let exchange = Exchange {
        state: state.clone(),
        endpoint,
        address,
        policy,
        request: normalized,
        namespace,
        model: parsed.model.clone(),
        provider_name: String::new(),
    };
    let outcome = chain::run(&exchange, targets, headers, uri.query(), &parsed, deadline).await;
    trace.attempts = outcome.attempts;
    trace.provider = outcome.last_provider.clone();
    let provider = outcome.last_provider.unwrap_or_else(|| "every target".to_owned());
    match outcome.result {
        Ok(answer) => Ok(answer),
        Err(failure) => on_failure(&Exchange { provider_name: provider, ..exchange }, failure, parsed.wants_stream),
    }
}

/// Upstream failed: serve the stored answer if the mode and the failure allow it, else an
/// error (a provider's own 4xx is passed through as it is: it is the provider's verdict).
fn on_failure(exchange: &Exchange, failure: UpstreamFailure, wants_stream: bool) -> Result<Answer, ApiError> {
    let state = &exchange.state;
    let reason = failure.reason();
    tracing::warn!(provider = %exchange.provider_name, address = %exchange.address, %reason, "upstream failed");
    let servable = failure.kind().is_some_and(|k| state.config.cache.serve_stale_on.contains(&k));
    if servable
        && exchange.policy.may_serve_stale()
        && let Some(entry) = lookup(state, &exchange.address)
        && exchange.policy.stale_if_error.is_none_or(|limit| age_of(&entry) <= limit)
        && let Some(answer) = serve_entry(
            state,
            &entry,
            exchange.endpoint,
            wants_stream,
            CacheResult::Stale,
            &exchange.address,
            Some(&reason),
        )
    {
        return Ok(answer);
    }
    let provider = exchange.provider_name.clone();
    match failure {
        UpstreamFailure::Status { status, headers, body } => {
            let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or(stored::JSON);
            let mut out = stored::response(status, Body::from(body), content_type);
            for name in RETURNED_HEADERS {
                if let Some(v) = headers.get(*name) {
                    out.headers_mut().insert(*name, v.clone());
                }
            }
            // The provider's own answer, passed through; the store had nothing to serve instead.
            let result = if exchange.policy.may_serve_stale() { CacheResult::Miss } else { CacheResult::Bypass };
            decorate(&mut out, result, &exchange.address, &provider, None, Some(&reason));
            Ok((out, result, provider))
        }
        UpstreamFailure::Timeout(_) => Err(ApiError::UpstreamTimeout { provider, reason }),
        UpstreamFailure::Connect(_) | UpstreamFailure::CircuitOpen | UpstreamFailure::NoTarget(_) => {
            Err(ApiError::UpstreamUnavailable { provider, reason })
        }
        UpstreamFailure::Invalid(_) => Err(ApiError::UpstreamInvalid { provider, reason }),
    }
}

/// Reads an entry; a store failure is logged and counted and reads as "nothing stored".
///
/// Inline on the async worker, on measurement: a read is a few µs (sled's page cache, then
/// AES-GCM), while a `spawn_blocking` round trip made the in-process 1 KiB hit 33.8 µs instead
/// of 9.1 µs (`cargo bench --bench hit_path`, docs/performance.md). Writes, which wait for an
/// fsync, always run on blocking threads (`store_record`).
fn lookup(state: &AppState, address: &Address) -> Option<Entry> {
    match state.store.get(address) {
        Ok(entry) => entry,
        Err(e) => {
            state.metrics.count_store_error();
            tracing::error!(%address, error = %e, "store read failed; continuing without it");
            None
        }
    }
}

fn age_of(entry: &Entry) -> Duration {
    Duration::from_millis(now_ms().saturating_sub(entry.meta.created_ms))
}

/// Builds the answer for a stored entry, or `None` if it cannot be given in the form asked.
fn serve_entry(
    state: &AppState,
    entry: &Entry,
    endpoint: Endpoint,
    wants_stream: bool,
    result: CacheResult,
    address: &Address,
    upstream_error: Option<&str>,
) -> Option<Answer> {
    let (body, content_type) = match stored::body_for(&entry.record, endpoint, wants_stream) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(%address, error = %e, "stored entry cannot be served in the form asked");
            return None;
        }
    };
    let mut out = stored::response(entry.record.response.status, body, &content_type);
    let age = age_of(entry).as_secs();
    decorate(&mut out, result, address, &entry.record.provider, Some(age), upstream_error);
    if let Err(e) = state.store.mark_served(address) {
        state.metrics.count_store_error();
        tracing::warn!(%address, error = %e, "could not note the entry as served");
    }
    Some((out, result, entry.record.provider.clone()))
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

fn set_header(response: &mut Response, name: &'static str, value: &str) {
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
    let outcome = tokio::task::spawn_blocking(move || {
        if let Some(json) = record.answer_json() {
            record.usage = usage_of(&json);
            if let Some(model) = json.get("model").and_then(Value::as_str) {
                record.model = model.to_owned();
            }
        }
        store.put(&address, &record)
    })
    .await;
    match outcome {
        Ok(Ok(())) => {}
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
