//! One client request, start to finish: read and check it, address it, then answer in the
//! order the cache mode allows — a fresh stored answer, upstream, a stale stored answer, an
//! error in the client's dialect.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, Uri};
use axum::response::Response;

use super::AppState;
use super::answer::{Answer, CacheResult, Exchange, decorate, set_header};
use super::chain;
use super::errors::ApiError;
use super::flight::Ticket;
use super::replay;
use super::request::{self, CachePolicy, Endpoint, Form, Stateful};
use crate::cache_key::address::Address;
use crate::cache_key::normalize::statefulness;
use crate::config::CacheMode;
use crate::proxy::upstream::{RETURNED_HEADERS, UpstreamFailure};
use crate::store::{Entry, now_ms};
use crate::telemetry::{Outcome, RequestSpan};

pub async fn handle(state: AppState, endpoint: Endpoint, uri: Uri, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let span = state.traces.request("POST", endpoint.path(), &headers);
    let mut progress = Progress::default();
    let outcome = answer(&state, endpoint, &uri, &headers, body, &mut progress, &span).await;
    let Answer { mut response, cache: result, provider } = match outcome {
        Ok(ok) => ok,
        Err(err) => {
            tracing::info!(endpoint = endpoint.path(), error = %err, "request answered with an error");
            let error_type = err.code();
            let mut response = err.into_dialect_response(endpoint.dialect());
            if let Some(a) = &progress.address {
                // The store was consulted (or could have been) and had nothing to give.
                set_header(&mut response, "x-holdfast-cache", "miss");
                set_header(&mut response, "x-holdfast-key", &a.to_hex());
            }
            if let Some(p) = &progress.provider {
                set_header(&mut response, "x-holdfast-provider", p);
            }
            if progress.attempts > 0 {
                set_header(&mut response, "x-holdfast-attempts", &progress.attempts.to_string());
                // Holdfast has already retried and failed over; SDK retries would only add load.
                set_header(&mut response, "x-should-retry", "false");
            }
            state.metrics.count_request(endpoint.path(), "-", "error");
            span.answered(Outcome {
                cache_result: "error",
                attempts: progress.attempts,
                provider: progress.provider.as_deref(),
                status: response.status().as_u16(),
                error_type: Some(error_type),
            });
            return span.end_with_body(response);
        }
    };
    if progress.attempts > 0 {
        set_header(&mut response, "x-holdfast-attempts", &progress.attempts.to_string());
        let status = response.status().as_u16();
        if status == 429 || status >= 500 {
            // A provider's failure passed through after Holdfast's own retries and failover.
            set_header(&mut response, "x-should-retry", "false");
        }
    }
    state.metrics.count_request(endpoint.path(), &provider, result.as_str());
    tracing::debug!(endpoint = endpoint.path(), %provider, cache = result.as_str(),
        status = response.status().as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "answered");
    let status = response.status().as_u16();
    span.answered(Outcome {
        cache_result: result.as_str(),
        attempts: progress.attempts,
        provider: Some(&provider),
        status,
        error_type: (status >= 400).then_some("upstream_status"),
    });
    span.end_with_body(response)
}

/// How far a request got, filled in as it goes: what its answer's or its error's headers
/// (`x-holdfast-key`, `x-holdfast-attempts`, `x-holdfast-provider`) and its span report.
#[derive(Default)]
struct Progress {
    /// The entry's address, once the request was parsed and addressed.
    address: Option<Address>,
    /// Upstream attempts made, over every target.
    attempts: u32,
    /// The provider of the last attempt.
    provider: Option<String>,
}

async fn answer(
    state: &AppState,
    endpoint: Endpoint,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
    progress: &mut Progress,
    span: &RequestSpan,
) -> Result<Answer, ApiError> {
    let raw = request::read_body(headers, body, state.config.max_request_bytes, &state.bodies).await?;
    let parsed = request::parse(endpoint, raw)?;
    span.asked(endpoint.genai_operation(), &parsed.model, parsed.wants_stream);
    let mut policy = CachePolicy::from_request(headers, &state.config.cache, &state.config.resilience)?;
    policy.stateful = Stateful::new(statefulness(endpoint.path(), &parsed.fields), state.config.cache.stateful);
    let deadline = tokio::time::Instant::now() + policy.deadline;
    let normalized = request::key_of(state, endpoint, &parsed, headers, uri.query())?;
    let (namespace, address) = state.locate(headers, &normalized);
    progress.address = Some(address);
    span.tenant(namespace.hash());

    if policy.mode == CacheMode::Replay {
        if let Stateful::Bypass(reason) = policy.stateful {
            return Err(ApiError::StatefulNotReplayed { reason });
        }
        return match lookup(state, &address, span).await {
            Some(entry) => serve_entry(state, &entry, endpoint, parsed.form(), CacheResult::Hit, &address, None, span)
                .ok_or(ApiError::NotRecorded { address: address.to_hex() }),
            None => Err(ApiError::NotRecorded { address: address.to_hex() }),
        };
    }
    if policy.may_serve_fresh()
        && let Some(entry) = lookup(state, &address, span).await
        && age_of(&entry) <= policy.fresh_for
        && let Some(answer) =
            serve_entry(state, &entry, endpoint, parsed.form(), CacheResult::Hit, &address, None, span)
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
        span: span.clone(),
    };
    // Identical requests in flight share one upstream call (see `flight`).
    let mut leader = None;
    if exchange.policy.may_store() {
        match state.flights.join(address, parsed.form()) {
            Ticket::Lead(lead) => leader = Some(lead),
            Ticket::Follow(follower) => {
                let until = deadline.checked_sub(state.config.resilience.stale_reserve).unwrap_or(deadline);
                if let Some(answer) = follower.follow(until).await {
                    return Ok(answer);
                }
            }
        }
    }
    let outcome = chain::run(&exchange, targets, headers, uri.query(), &parsed, deadline).await;
    progress.attempts = outcome.attempts;
    progress.provider = outcome.last_provider.clone();
    let provider = outcome.last_provider.unwrap_or_else(|| "every target".to_owned());
    let stateful = exchange.policy.stateful.reason();
    let mut answer = match outcome.result {
        Ok(answer) => Ok(answer),
        Err(failure) => on_failure(&Exchange { provider_name: provider, ..exchange }, failure, parsed.form()).await,
    };
    if let (Ok(answer), Some(reason)) = (&mut answer, stateful) {
        // Tells the client why its request bypassed (or only fell back on) the store.
        set_header(&mut answer.response, "x-holdfast-stateful", reason);
    }
    match (leader, answer) {
        (Some(leader), Ok(answer)) => Ok(leader.publish(answer)),
        // An error: dropping the leader sends its followers on alone.
        (_, answer) => answer,
    }
}

/// Upstream failed: serve the stored answer if the mode and the failure allow it, else an
/// error (a provider's own 4xx is passed through as it is: it is the provider's verdict).
async fn on_failure(exchange: &Exchange, failure: UpstreamFailure, form: Form) -> Result<Answer, ApiError> {
    let state = &exchange.state;
    let reason = failure.reason();
    tracing::warn!(provider = %exchange.provider_name, address = %exchange.address, %reason, "upstream failed");
    let servable = failure.kind().is_some_and(|k| state.config.cache.serve_stale_on.contains(&k));
    if servable
        && exchange.policy.may_serve_stale()
        && let Some(entry) = lookup(state, &exchange.address, &exchange.span).await
        && exchange.policy.stale_if_error.is_none_or(|limit| age_of(&entry) <= limit)
        && let Some(answer) = serve_entry(
            state,
            &entry,
            exchange.endpoint,
            form,
            CacheResult::Stale,
            &exchange.address,
            Some(&reason),
            &exchange.span,
        )
    {
        return Ok(answer);
    }
    let provider = exchange.provider_name.clone();
    match failure {
        UpstreamFailure::Status { status, headers, body } => {
            let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or(replay::JSON);
            let mut out = replay::response(status, Body::from(body), content_type);
            for name in RETURNED_HEADERS {
                if let Some(v) = headers.get(*name) {
                    out.headers_mut().insert(*name, v.clone());
                }
            }
            // The provider's own answer, passed through; the store had nothing to serve instead.
            let result = if exchange.policy.may_serve_stale() { CacheResult::Miss } else { CacheResult::Bypass };
            decorate(&mut out, result, &exchange.address, &provider, None, Some(&reason));
            Ok(Answer { response: out, cache: result, provider })
        }
        UpstreamFailure::Timeout(_) => Err(ApiError::UpstreamTimeout { provider, reason }),
        // A refused server key is Holdfast's problem: its 401 must not tell the client that
        // the client's own key is wrong.
        UpstreamFailure::Connect(_)
        | UpstreamFailure::CircuitOpen
        | UpstreamFailure::NoTarget(_)
        | UpstreamFailure::ProviderAuth { .. } => Err(ApiError::UpstreamUnavailable { provider, reason }),
        UpstreamFailure::Invalid(_) => Err(ApiError::UpstreamInvalid { provider, reason }),
    }
}

/// Reads an entry; a store failure is logged and counted and reads as "nothing stored".
///
/// The embedded store reads inline on the async worker, on measurement: a read is a few µs
/// (sled's page cache, then AES-GCM), while a `spawn_blocking` round trip made the in-process
/// 1 KiB hit 33.8 µs instead of 9.1 µs (`cargo bench --bench hit_path`, docs/performance.md).
/// A Redis read is awaited (`Store::get_async`). Writes, which wait for an fsync, always run
/// on blocking threads (`store_record`).
async fn lookup(state: &AppState, address: &Address, span: &RequestSpan) -> Option<Entry> {
    let store_span = span.store("get");
    let read = state.store.get_async(address).await;
    store_span.read(matches!(read, Ok(Some(_))), read.is_err());
    match read {
        Ok(entry) => entry,
        Err(e) => {
            state.metrics.count_store_error();
            // An unreachable shared store logs once per interval itself.
            if !e.is_unavailable() {
                tracing::error!(%address, error = %e, "store read failed; continuing without it");
            }
            None
        }
    }
}

fn age_of(entry: &Entry) -> Duration {
    Duration::from_millis(now_ms().saturating_sub(entry.meta.created_ms))
}

/// Builds the answer for a stored entry, or `None` if it cannot be given in the form asked.
#[allow(clippy::too_many_arguments)]
fn serve_entry(
    state: &AppState,
    entry: &Entry,
    endpoint: Endpoint,
    form: Form,
    result: CacheResult,
    address: &Address,
    upstream_error: Option<&str>,
    span: &RequestSpan,
) -> Option<Answer> {
    let (body, content_type) = match replay::body_for(&entry.record, endpoint, form) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(%address, error = %e, "stored entry cannot be served in the form asked");
            return None;
        }
    };
    let mut out = replay::response(entry.record.response.status, body, &content_type);
    if let Some(usage) = &entry.record.usage {
        span.usage(usage.input_tokens, usage.output_tokens);
    }
    let age = age_of(entry).as_secs();
    decorate(&mut out, result, address, &entry.record.provider, Some(age), upstream_error);
    if let Err(e) = state.store.mark_served(address) {
        state.metrics.count_store_error();
        tracing::warn!(%address, error = %e, "could not note the entry as served");
    }
    Some(Answer { response: out, cache: result, provider: entry.record.provider.clone() })
}
