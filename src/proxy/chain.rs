//! The order of resort before the store: each target in turn (primary first), each with its
//! retries, all inside the request's deadline, skipping targets whose breaker is open.
//!
//! A target of the other dialect gets a translated request, and its answer is translated back,
//! so the client (and the store) only ever see the client's dialect.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use bytes::Bytes;
use serde_json::Value;
use std::sync::Arc;
use tokio::time::Instant;

use super::answer::{Answer, CacheResult, Exchange, decorate, store_record};
use super::attempt::{admit, log_transition, prepare_body, stream_kind_of, target_path};
use super::reader::Reader;
use super::relay::{RelayPlan, relay};
use super::replay;
use super::request::ParsedRequest;
use super::rescue::Rescue;
use crate::proxy::resilience::backoff::next_wait;
use crate::proxy::resilience::verdict::AttemptPermits;
use crate::proxy::upstream::{RETURNED_HEADERS, Target, UpstreamFailure, classify};
use crate::store::record::{ResponseBody, StoredResponse};
use crate::wire::dialect::{self, StreamTranslator};
use crate::wire::sse::StreamKind;

/// What the chain did, for `x-holdfast-attempts` and the fallback decision.
pub struct ChainOutcome {
    /// Attempts made over every target, for `x-holdfast-attempts`.
    pub attempts: u32,
    /// The first answer a target gave, or the most telling failure of them all.
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
    'targets: for (position, target) in targets.iter().enumerate() {
        let provider = target.provider;
        let rest = targets.get(position + 1..).unwrap_or_default();
        let name = provider.name().to_owned();
        let client = base.endpoint.dialect();
        let translated = provider.dialect() != client;
        let version = provider.anthropic_version_for(headers);
        let body = match prepare_body(base.endpoint, provider.dialect(), parsed, &target.model, version) {
            Ok(body) => body,
            Err(reason) => {
                tracing::warn!(provider = %name, model = %target.model, %reason, "skipping failover target");
                note_skip(&mut last, UpstreamFailure::NoTarget(reason));
                continue;
            }
        };
        let path = target_path(base.endpoint, provider.dialect(), query);
        let exchange = Arc::new(Exchange { provider_name: name.clone(), ..base.clone() });
        for retry in 0..provider.config.retry.attempts {
            // Permits report the attempt's outcome below; dropped unreported (the client left
            // mid-attempt), they release a half-open probe slot without a verdict.
            let Some(admitted) = admit(state, provider, &target.model) else {
                base.span.skipped(&name, &target.model, "circuit_open");
                note_skip(&mut last, UpstreamFailure::CircuitOpen);
                continue 'targets;
            };
            let probe = admitted.provider.is_probe() || admitted.model.is_probe();
            let mut permits = Some(admitted);
            let Some(budget) = deadline.checked_duration_since(Instant::now()).and_then(|d| d.checked_sub(reserve))
            else {
                last = Some(UpstreamFailure::Timeout("deadline"));
                break 'targets;
            };
            attempts += 1;
            last_provider = Some(name.clone());
            let span = base.span.attempt(
                base.endpoint.genai_operation(),
                || provider.span_target(&target.model),
                attempts,
                probe,
            );
            let trace = span.upstream_headers();
            let upstream = Upstream { target, path: &path, body: body.clone(), translated, rest, trace };
            let attempt = forward(&exchange, upstream, headers, query, parsed, &mut permits);
            let result =
                tokio::time::timeout(budget, attempt).await.unwrap_or(Err(UpstreamFailure::Timeout("deadline")));
            let failure = match result {
                Ok(answer) => {
                    span.succeeded(answer.response.status().as_u16());
                    // A stream's permits went with its relay, which reports when it ends.
                    if let Some(permits) = permits.take() {
                        permits.succeed().into_iter().for_each(log_transition);
                    }
                    return ChainOutcome { attempts, result: Ok(answer), last_provider };
                }
                Err(failure) => failure,
            };
            span.failed(failure.label(), failure.status());
            state.metrics.count_upstream_failure(&name, failure.label());
            let retryable = failure.is_retryable(&provider.config.retry);
            // Outage-class failures (and statuses the operator lists as retryable, e.g. 408)
            // go on through the chain; any other 4xx is the provider's verdict on the request.
            let outage = failure.kind().is_some() || retryable;
            if let Some(permits) = permits.take() {
                permits.fail(&failure, &provider.config.retry).into_iter().for_each(log_transition);
            }
            tracing::warn!(provider = %name, model = %target.model, attempt = retry + 1, reason = %failure.reason(),
                "upstream attempt failed");
            if failure.is_context_length() {
                // This target's context is too small; a later, larger one may take the prompt.
                // The provider is up, so the breakers counted it as a success above.
                last = Some(if translated { failure.in_dialect(client) } else { failure });
                continue 'targets;
            }
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
                .and_then(crate::proxy::resilience::backoff::retry_after)
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

/// Where one attempt goes and what it sends.
struct Upstream<'t, 'p> {
    /// The provider and the model it is asked for.
    target: &'t Target<'p>,
    /// API path (and query) on the target.
    path: &'t str,
    /// The body as this target reads it (its model, its dialect).
    body: Bytes,
    /// The target speaks the other dialect: its answer is translated back.
    translated: bool,
    /// The route's targets after this one, which may continue a stream that breaks.
    rest: &'t [Target<'p>],
    /// The attempt's `traceparent` (and `tracestate`) for the provider.
    trace: Vec<(HeaderName, HeaderValue)>,
}

/// One attempt: send, then relay (streams) or read, check, translate and store (whole answers).
/// A stream is accepted only once its first content arrived, so a failure before it is an
/// ordinary failed attempt; its `permits` then go with the relay, which reports its outcome.
async fn forward(
    exchange: &Arc<Exchange>,
    upstream: Upstream<'_, '_>,
    headers: &HeaderMap,
    query: Option<&str>,
    parsed: &ParsedRequest,
    permits: &mut Option<AttemptPermits>,
) -> Result<Answer, UpstreamFailure> {
    let state = &exchange.state;
    let Upstream { target, path, body, translated, rest, trace } = upstream;
    let provider = target.provider;
    let wants_stream = parsed.wants_stream;
    let form = parsed.form();
    let started = std::time::Instant::now();
    let response = provider.send_traced(reqwest::Method::POST, path, headers, trace, Some(body), wants_stream).await?;
    let status = response.status().as_u16();
    let upstream_type =
        response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or(replay::JSON).to_owned();
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
        let upstream_kind = if translated { stream_kind_of(provider.dialect()) } else { kind };
        let limits = (provider.config.first_token_timeout, provider.config.stream_idle_timeout);
        let mut reader = Reader::new(response, upstream_kind, kind, translator, limits);
        let head = reader.until_content().await?;
        let content_type = if translated { replay::EVENT_STREAM.to_owned() } else { upstream_type };
        let Some(permits) = permits.take() else {
            return Err(UpstreamFailure::Invalid("attempt without breaker permits".into()));
        };
        let continuable = matches!(kind, StreamKind::ChatCompletions | StreamKind::Messages);
        let rescue = (state.config.resilience.resume_streams && continuable).then(|| {
            let targets = rest.iter().map(|t| (t.provider.name().to_owned(), t.model.clone())).collect();
            Rescue::new(targets, headers.clone(), query.map(str::to_owned), parsed.raw.clone())
        });
        let plan = RelayPlan {
            kind,
            content_type: content_type.clone(),
            include_usage: parsed.include_usage,
            permits,
            retry: provider.config.retry.clone(),
            rescue,
        };
        let body = relay(exchange.clone(), reader, head, plan);
        let mut out = replay::response(status, body, &content_type);
        out.headers_mut().extend(passed_headers);
        decorate(&mut out, result, &exchange.address, provider.name(), None, None);
        return Ok(Answer { response: out, cache: result, provider: provider.name().to_owned() });
    }

    if !translated && !wants_stream && response.content_length().is_some_and(|n| n > state.config.max_response_bytes) {
        // Too large to store (max_response_bytes): relayed as it arrives, never buffered whole.
        state.metrics.count_answer_too_large();
        tracing::warn!(address = %exchange.address, "answer larger than max_response_bytes: relayed, not stored");
        let mut out = replay::response(status, Body::from_stream(response.bytes_stream()), &upstream_type);
        out.headers_mut().extend(passed_headers);
        decorate(&mut out, CacheResult::Bypass, &exchange.address, provider.name(), None, None);
        return Ok(Answer { response: out, cache: CacheResult::Bypass, provider: provider.name().to_owned() });
    }
    let body = response.bytes().await.map_err(|e| classify(&e))?;
    state.metrics.observe_upstream_latency(provider.name(), started.elapsed());
    let is_json = upstream_type.contains("json");
    let answer: Option<Value> = if is_json { serde_json::from_slice(&body).ok() } else { None };
    if is_json && answer.is_none() {
        return Err(UpstreamFailure::Invalid("body is not valid JSON".into()));
    }
    let (body, content_type) = match (translated, answer) {
        (true, Some(json)) => {
            let client_json = dialect::response(provider.dialect(), exchange.endpoint.dialect(), &json)
                .map_err(|e| UpstreamFailure::Invalid(format!("cannot translate the answer: {e}")))?;
            let bytes = serde_json::to_vec(&client_json).map_err(|e| UpstreamFailure::Invalid(e.to_string()))?;
            (Bytes::from(bytes), replay::JSON.to_owned())
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
            replay::body_for(&record, exchange.endpoint, form).map_err(|e| UpstreamFailure::Invalid(e.to_string()))?;
        replay::response(status, body, &ct)
    } else {
        replay::response(status, Body::from(body), &content_type)
    };
    out.headers_mut().extend(passed_headers);
    decorate(&mut out, result, &exchange.address, provider.name(), None, None);
    Ok(Answer { response: out, cache: result, provider: provider.name().to_owned() })
}
