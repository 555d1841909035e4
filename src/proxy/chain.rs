//! The order of resort before the store: each target in turn (primary first), each with its
//! retries, all inside the request's deadline, skipping targets whose breaker is open.
//!
//! A target of the other dialect gets a translated request, and its answer is translated back,
//! so the client (and the store) only ever see the client's dialect.

use axum::body::Body;
use axum::http::HeaderMap;
use bytes::Bytes;
use serde_json::Value;
use std::sync::Arc;
use tokio::time::Instant;

use super::exchange::{Answer, CacheResult, Exchange, decorate, store_record};
use super::relay::relay;
use super::request::{Endpoint, ParsedRequest};
use super::stored;
use crate::normalize::Dialect;
use crate::record::{ResponseBody, StoredResponse};
use crate::resilience::backoff::next_wait;
use crate::resilience::breaker::{Admission, Transition};
use crate::translate::{self, StreamTranslator};
use crate::upstream::{RETURNED_HEADERS, Target, UpstreamFailure, classify};

/// What the chain did, for `x-holdfast-attempts` and the fallback decision.
pub struct ChainOutcome {
    pub attempts: u32,
    pub result: Result<Answer, UpstreamFailure>,
    /// The provider of the last attempt (for error answers).
    pub last_provider: Option<String>,
}

/// Tries every target until one answers or the deadline (less the stale reserve) is spent.
pub async fn run(
    base: &Exchange,
    targets: Vec<Target<'_>>,
    headers: &HeaderMap,
    query: Option<&str>,
    parsed: &ParsedRequest,
    deadline: Instant,
) -> ChainOutcome {
    let state = &base.state;
    let reserve = state.config.resilience.stale_reserve;
    let mut attempts = 0;
    let mut last: Option<UpstreamFailure> = None;
    let mut last_provider = None;
    'targets: for target in targets {
        let provider = target.provider;
        let name = provider.name().to_owned();
        let client = base.endpoint.dialect();
        let translated = provider.dialect() != client;
        let body = match prepare_body(base.endpoint, provider.dialect(), parsed, &target.model) {
            Ok(body) => body,
            Err(reason) => {
                tracing::warn!(provider = %name, model = %target.model, %reason, "skipping failover target");
                note_skip(&mut last, UpstreamFailure::NoTarget(reason));
                continue;
            }
        };
        let path = target_path(base.endpoint, provider.dialect(), query);
        let exchange = Arc::new(Exchange { provider_name: name.clone(), ..base.clone() });
        let provider_key = name.clone();
        let model_key = format!("{name}/{}", target.model);
        let breaker_config = &provider.config.breaker;
        for retry in 0..provider.config.retry.attempts {
            let (provider_gate, t1) = state.breakers.admit(&provider_key, breaker_config);
            log_transition(t1);
            let Admission::Allowed { probe: provider_probe } = provider_gate else {
                tracing::debug!(provider = %name, "circuit open; skipping without a connection attempt");
                note_skip(&mut last, UpstreamFailure::CircuitOpen);
                continue 'targets;
            };
            let (model_gate, t2) = state.breakers.admit(&model_key, breaker_config);
            log_transition(t2);
            let Admission::Allowed { probe: model_probe } = model_gate else {
                state.breakers.report(&provider_key, provider_probe, None);
                note_skip(&mut last, UpstreamFailure::CircuitOpen);
                continue 'targets;
            };
            let Some(budget) = deadline.checked_duration_since(Instant::now()).and_then(|d| d.checked_sub(reserve))
            else {
                state.breakers.report(&provider_key, provider_probe, None);
                state.breakers.report(&model_key, model_probe, None);
                last = Some(UpstreamFailure::Timeout("deadline"));
                break 'targets;
            };
            attempts += 1;
            last_provider = Some(name.clone());
            let attempt = forward(&exchange, &target, headers, &path, body.clone(), parsed.wants_stream, translated);
            let result =
                tokio::time::timeout(budget, attempt).await.unwrap_or(Err(UpstreamFailure::Timeout("deadline")));
            let failure = match result {
                Ok(answer) => {
                    log_transition(state.breakers.report(&provider_key, provider_probe, Some(false)));
                    log_transition(state.breakers.report(&model_key, model_probe, Some(false)));
                    return ChainOutcome { attempts, result: Ok(answer), last_provider };
                }
                Err(failure) => failure,
            };
            state.metrics.count_upstream_failure(&name, failure.label());
            let retryable = failure.is_retryable(&provider.config.retry);
            // Outage-class failures (and statuses the operator lists as retryable, e.g. 408)
            // go on through the chain; any other 4xx is the provider's verdict on the request.
            let outage = failure.kind().is_some() || retryable;
            // Each failure counts against the breaker it implicates and is neutral for the
            // other; a deadline cut says nothing about the provider (the client may have asked
            // for a short one), and a verdict means the provider is up.
            let cut_by_deadline = matches!(failure, UpstreamFailure::Timeout("deadline"));
            let (provider_verdict, model_verdict) = match (outage, cut_by_deadline, failure.is_provider_wide()) {
                (false, _, _) => (Some(false), Some(false)),
                (true, true, _) => (None, None),
                (true, false, true) => (Some(true), None),
                (true, false, false) => (None, Some(true)),
            };
            log_transition(state.breakers.report(&provider_key, provider_probe, provider_verdict));
            log_transition(state.breakers.report(&model_key, model_probe, model_verdict));
            tracing::warn!(provider = %name, model = %target.model, attempt = retry + 1, reason = %failure.reason(),
                "upstream attempt failed");
            if !outage {
                // Another target would say the same, and the client should see it.
                let failure = if translated { failure.in_dialect(client) } else { failure };
                return ChainOutcome { attempts, result: Err(failure), last_provider };
            }
            let wait = next_wait(
                failure.headers(),
                provider.config.retry.backoff_base,
                provider.config.retry.backoff_cap,
                provider.config.retry.retry_after_cap,
                retry,
            );
            let asked_too_long = failure
                .headers()
                .and_then(crate::resilience::backoff::retry_after)
                .is_some_and(|asked| asked > provider.config.retry.retry_after_cap);
            last = Some(if translated { failure.in_dialect(client) } else { failure });
            if !retryable || retry + 1 >= provider.config.retry.attempts || asked_too_long {
                continue 'targets;
            }
            if Instant::now() + wait + reserve >= deadline {
                continue 'targets; // no time to wait here; maybe the next target is quicker
            }
            tokio::time::sleep(wait).await;
        }
    }
    ChainOutcome { attempts, result: Err(last.unwrap_or(UpstreamFailure::CircuitOpen)), last_provider }
}

/// Keeps the most telling reason when targets are skipped: a real failure over an open
/// circuit (an outage, so the store may answer) over a target that could not take the request.
fn note_skip(last: &mut Option<UpstreamFailure>, skip: UpstreamFailure) {
    let rank = |f: &UpstreamFailure| match f {
        UpstreamFailure::NoTarget(_) => 0,
        UpstreamFailure::CircuitOpen => 1,
        _ => 2,
    };
    if last.as_ref().is_none_or(|l| rank(l) < rank(&skip)) {
        *last = Some(skip);
    }
}

fn log_transition(t: Option<Transition>) {
    if let Some(t) = t {
        tracing::warn!(breaker = %t.key, from = t.from.as_str(), to = t.to.as_str(), "circuit breaker changed state");
    }
}

/// The API path a target of `target` dialect is asked on.
fn target_path(endpoint: Endpoint, target: Dialect, query: Option<&str>) -> String {
    let path = match (endpoint.dialect() == target, endpoint) {
        (true, _) => endpoint.path(),
        (false, Endpoint::ChatCompletions) => Endpoint::Messages.path(),
        (false, _) => Endpoint::ChatCompletions.path(),
    };
    match query {
        Some(q) if !q.is_empty() => format!("{path}?{q}"),
        _ => path.to_owned(),
    }
}

/// The body to send to a target: the client's bytes untouched when nothing changes, else the
/// JSON with the target's model, translated for a target of the other dialect.
fn prepare_body(endpoint: Endpoint, target: Dialect, parsed: &ParsedRequest, model: &str) -> Result<Bytes, String> {
    let client = endpoint.dialect();
    if client == target {
        if model == parsed.model {
            return Ok(parsed.raw.clone());
        }
        let mut json = parsed.json.clone();
        json["model"] = Value::String(model.to_owned());
        return serde_json::to_vec(&json).map(Bytes::from).map_err(|e| e.to_string());
    }
    if !matches!(endpoint, Endpoint::ChatCompletions | Endpoint::Messages) {
        return Err(format!("{} has no counterpart in the other dialect", endpoint.path()));
    }
    let json = translate::request(client, target, &parsed.json, model).map_err(|e| e.to_string())?;
    serde_json::to_vec(&json).map(Bytes::from).map_err(|e| e.to_string())
}

/// One attempt: send, then relay (streams) or read, check, translate and store (whole answers).
async fn forward(
    exchange: &Arc<Exchange>,
    target: &Target<'_>,
    headers: &HeaderMap,
    path: &str,
    body: Bytes,
    wants_stream: bool,
    translated: bool,
) -> Result<Answer, UpstreamFailure> {
    let state = &exchange.state;
    let provider = target.provider;
    let started = std::time::Instant::now();
    let response = provider.send(reqwest::Method::POST, path, headers, Some(body), wants_stream).await?;
    let status = response.status().as_u16();
    let upstream_type =
        response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or(stored::JSON).to_owned();
    let mut passed_headers = HeaderMap::new();
    for name in RETURNED_HEADERS {
        if let Some(v) = response.headers().get(*name) {
            passed_headers.insert(*name, v.clone());
        }
    }
    let result = if exchange.policy.may_store() { CacheResult::Miss } else { CacheResult::Bypass };
    let client_kind = exchange.endpoint.stream_kind();

    if let (true, Some(kind), true) = (wants_stream, client_kind, upstream_type.starts_with("text/event-stream")) {
        let translator = translated.then(|| StreamTranslator::new(provider.dialect(), exchange.endpoint.dialect()));
        let content_type = if translated { stored::EVENT_STREAM.to_owned() } else { upstream_type };
        let body = relay(exchange.clone(), kind, response, content_type.clone(), translator);
        let mut out = stored::response(status, body, &content_type);
        out.headers_mut().extend(passed_headers);
        decorate(&mut out, result, &exchange.address, provider.name(), None, None);
        return Ok((out, result, provider.name().to_owned()));
    }

    if !translated && !wants_stream && response.content_length().is_some_and(|n| n > state.config.max_response_bytes) {
        // Too large to store (max_response_bytes): relayed as it arrives, never buffered whole.
        state.metrics.count_answer_too_large();
        tracing::warn!(address = %exchange.address, "answer larger than max_response_bytes: relayed, not stored");
        let mut out = stored::response(status, Body::from_stream(response.bytes_stream()), &upstream_type);
        out.headers_mut().extend(passed_headers);
        decorate(&mut out, CacheResult::Bypass, &exchange.address, provider.name(), None, None);
        return Ok((out, CacheResult::Bypass, provider.name().to_owned()));
    }
    let body = response.bytes().await.map_err(|e| classify(&e))?;
    state.metrics.observe_upstream_latency(provider.name(), started.elapsed());
    let is_json = upstream_type.contains("json");
    let parsed: Option<Value> = if is_json { serde_json::from_slice(&body).ok() } else { None };
    if is_json && parsed.is_none() {
        return Err(UpstreamFailure::Invalid("body is not valid JSON".into()));
    }
    let (body, content_type) = match (translated, parsed) {
        (true, Some(json)) => {
            let client_json = translate::response(provider.dialect(), exchange.endpoint.dialect(), &json)
                .map_err(|e| UpstreamFailure::Invalid(format!("cannot translate the answer: {e}")))?;
            let bytes = serde_json::to_vec(&client_json).map_err(|e| UpstreamFailure::Invalid(e.to_string()))?;
            (Bytes::from(bytes), stored::JSON.to_owned())
        }
        (true, None) => return Err(UpstreamFailure::Invalid("a translated answer must be JSON".into())),
        (false, _) => (body, upstream_type),
    };
    let recorded =
        StoredResponse { status, content_type: content_type.clone(), body: ResponseBody::Complete(body.clone()) };
    if exchange.policy.may_store() {
        store_record(exchange, recorded.clone(), started.elapsed()).await;
    }
    let mut out = if wants_stream {
        // The target answered a stream request with whole JSON (some local servers do): the
        // client still gets the stream it asked for.
        let record = exchange.record_with(recorded);
        let (body, ct) =
            stored::body_for(&record, exchange.endpoint, true).map_err(|e| UpstreamFailure::Invalid(e.to_string()))?;
        stored::response(status, body, &ct)
    } else {
        stored::response(status, Body::from(body), &content_type)
    };
    out.headers_mut().extend(passed_headers);
    decorate(&mut out, result, &exchange.address, provider.name(), None, None);
    Ok((out, result, provider.name().to_owned()))
}
