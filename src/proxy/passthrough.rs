//! Every other path under `/v1/` (files, batches, uploads, vector stores, moderations, images,
//! audio, `responses/{id}`, `messages/batches`, `models/{id}`, …): forwarded to a provider of
//! the request's dialect, never stored (`x-holdfast-cache: bypass`).
//!
//! Bodies stream both ways: a 200 MB upload goes to the provider as it arrives and a file
//! download goes to the client as it arrives; neither is held in memory. Only a small JSON body
//! (within `max_request_bytes`) is read first, for its `model`. The credential and the keyed
//! headers are forwarded exactly as for the cached endpoints (`Provider::request`), plus the
//! body's own `content-type` (a multipart boundary), `content-length` and `accept`.
//!
//! Retries: only idempotent methods (GET, HEAD, PUT, DELETE, OPTIONS) with a body that was read
//! (or none), on the provider's retry policy. A streamed body can be sent once, and a POST may
//! have taken effect even when its answer was lost. There is no failover: a file or batch id
//! means something to one provider only.
//!
//! In `replay` mode nothing is passed through: replay never calls upstream, and nothing here
//! was recorded (404 `not_recorded`), except what the store holds for `GET /v1/responses/{id}`.
//! Circuit breakers are not consulted: they track the cached endpoints' traffic.
//!
//! One exception reads the store: `GET /v1/responses/{id}` of a Responses answer Holdfast
//! stored is served from the store when the provider fails (`x-holdfast-cache: stale`). Each
//! stored Responses answer is also kept under the address of `/v1/responses/{id}` in the same
//! tenant's namespace (`by_id::response_by_id`); the lookup computes that address in the asking
//! client's namespace, so another tenant who knows the id addresses a different, empty entry.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, Uri};
use axum::response::Response;
use bytes::Bytes;
use serde_json::Value;

use super::AppState;
use super::answer::{CacheResult, decorate};
use super::by_id::{by_id_request, response_id};
use super::errors::ApiError;
use super::replay;
use super::request::{CachePolicy, read_body};
use crate::cache_key::normalize::Dialect;
use crate::config::CacheMode;
use crate::proxy::resilience::backoff::next_wait;
use crate::proxy::upstream::{Provider, UpstreamFailure, classify};
use crate::store::record::ResponseBody;
use crate::telemetry::{Outcome, RequestSpan};

/// Metrics label for every passthrough request (ids in paths would explode the label set).
const LABEL: &str = "passthrough";

/// Client headers that describe the body and are sent on with it.
const BODY_HEADERS: &[&str] = &["content-type", "content-length", "accept"];

/// Response headers that belong to one connection, not to the answer.
const HOP_BY_HOP: &[&str] = &["connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"];

/// The span name and `http.route` of every passthrough request (paths carry ids).
const ROUTE: &str = "/v1/{*path}";

pub async fn handle(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let span = state.traces.request_on_route(method.as_str(), ROUTE, uri.path().to_owned(), &headers);
    let mut trace = Passed::default();
    let response = answer(&state, method, &uri, &headers, body, &span, &mut trace).await;
    span.answered(Outcome {
        cache_result: trace.result,
        attempts: trace.attempts,
        provider: trace.provider.as_deref(),
        status: response.status().as_u16(),
        error_type: trace.error,
    });
    span.end_with_body(response)
}

/// What a passthrough did, for its span.
struct Passed {
    /// `bypass`, `stale`, `hit` (replay) or `error`.
    result: &'static str,
    /// Attempts made on the provider.
    attempts: u32,
    /// The provider asked, once one was chosen.
    provider: Option<String>,
    /// The error type of a failed passthrough, for the span.
    error: Option<&'static str>,
}

impl Default for Passed {
    fn default() -> Self {
        Self { result: "error", attempts: 0, provider: None, error: None }
    }
}

async fn answer(
    state: &AppState,
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
    span: &RequestSpan,
    trace: &mut Passed,
) -> Response {
    let dialect = dialect_of(uri.path(), headers);
    let refused = |e: ApiError, trace: &mut Passed| {
        trace.error = Some(e.code());
        e.into_dialect_response(dialect)
    };
    if !uri.path().starts_with("/v1/") {
        return refused(ApiError::UnsupportedPath(uri.path().to_owned()), trace);
    }
    let policy = match CachePolicy::from_request(headers, &state.config.cache, &state.config.resilience) {
        Ok(policy) => policy,
        Err(e) => return refused(e, trace),
    };
    let lookup = (method == Method::GET).then(|| response_id(uri.path())).flatten().map(str::to_owned);
    if policy.mode == CacheMode::Replay {
        // Replay never calls upstream, and nothing passed through was recorded.
        return match lookup.and_then(|id| stored_response(state, headers, &id, CacheResult::Hit)) {
            Some(stored) => {
                trace.result = "hit";
                stored
            }
            None => refused(ApiError::NotRecordedPath(uri.path().to_owned()), trace),
        };
    }
    let outcome = forward(state, method, uri, headers, body, dialect, span, trace).await;
    let outage = match &outcome {
        Ok((response, _)) => response.status().as_u16() == 429 || response.status().is_server_error(),
        Err(e) => matches!(e, ApiError::UpstreamUnavailable { .. } | ApiError::UpstreamTimeout { .. }),
    };
    if outage
        && let Some(id) = lookup
        && policy.may_serve_stale()
        && let Some(response) = stored_response(state, headers, &id, CacheResult::Stale)
    {
        state.metrics.count_request(LABEL, "-", "stale");
        trace.result = "stale";
        return response;
    }
    match outcome {
        Ok((response, provider)) => {
            state.metrics.count_request(LABEL, &provider, "bypass");
            trace.result = "bypass";
            response
        }
        Err(e) => {
            tracing::info!(path = uri.path(), error = %e, "passthrough answered with an error");
            state.metrics.count_request(LABEL, "-", "error");
            refused(e, trace)
        }
    }
}

/// The stored answer for `GET /v1/responses/{id}` in the asking client's namespace.
fn stored_response(state: &AppState, headers: &HeaderMap, id: &str, result: CacheResult) -> Option<Response> {
    let (_, address) = state.locate(headers, &by_id_request(id));
    let entry = state.store.get(&address).ok()??;
    let ResponseBody::Complete(body) = &entry.record.response.body else { return None };
    let mut out = replay::response(200, Body::from(body.clone()), replay::JSON);
    let reason = (result == CacheResult::Stale).then_some("provider unavailable");
    decorate(&mut out, result, &address, &entry.record.provider, None, reason);
    Some(out)
}

/// Anthropic for its own paths, or when the client sends `anthropic-version` (the Anthropic
/// SDK always does; both APIs have `/v1/files` and `/v1/models/{id}`); else OpenAI.
fn dialect_of(path: &str, headers: &HeaderMap) -> Dialect {
    if path.starts_with("/v1/messages") || path == "/v1/complete" || headers.contains_key("anthropic-version") {
        Dialect::Anthropic
    } else {
        Dialect::OpenAi
    }
}

/// The request body: read (small JSON, or none) or left streaming.
enum Outgoing {
    /// Read whole (or empty): may be sent again on a retry.
    Read(Bytes),
    /// Still arriving; taken on the one attempt it can be sent on.
    Streaming(Option<Body>),
}

#[allow(clippy::too_many_arguments)] // one request's parts, its span and its record of attempts
async fn forward(
    state: &AppState,
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
    dialect: Dialect,
    span: &RequestSpan,
    trace: &mut Passed,
) -> Result<(Response, String), ApiError> {
    let path = uri.path();
    let declared = headers.get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let is_json = headers.get("content-type").and_then(|v| v.to_str().ok()).is_some_and(|t| t.contains("json"));
    let mut model =
        path.strip_prefix("/v1/models/").filter(|id| !id.is_empty() && !id.contains('/')).map(str::to_owned);
    let mut outgoing = if declared == Some(0) || (declared.is_none() && !headers.contains_key("transfer-encoding")) {
        // HTTP/1.1: a request with neither header has no body.
        Outgoing::Read(Bytes::new())
    } else if is_json && declared.is_some_and(|n| n <= state.config.max_request_bytes) {
        let bytes = read_body(headers, body, state.config.max_request_bytes, &state.bodies).await?;
        let json: Option<Value> = serde_json::from_slice(&bytes).ok();
        if let Some(m) = json.as_ref().and_then(|j| j.get("model")).and_then(Value::as_str).filter(|m| !m.is_empty()) {
            model = Some(m.to_owned());
        }
        Outgoing::Read(bytes)
    } else {
        Outgoing::Streaming(Some(body))
    };
    let provider = pick(state, dialect, model.as_deref())
        .ok_or_else(|| ApiError::NoProvider { dialect: dialect_name(dialect), path: path.to_owned() })?;
    let target = match uri.query() {
        Some(q) if !q.is_empty() => format!("{path}?{q}"),
        _ => path.to_owned(),
    };
    let idempotent = matches!(method, Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS);
    let retry = &provider.config.retry;
    let attempts = if idempotent && matches!(outgoing, Outgoing::Read(_)) { retry.attempts.max(1) } else { 1 };
    let name = provider.name().to_owned();
    trace.provider = Some(name.clone());
    let model = model.unwrap_or_default();
    for attempt in 0..attempts {
        trace.attempts = attempt + 1;
        let attempt_span = span.attempt("passthrough", || provider.span_target(&model), attempt + 1, false);
        let mut request = provider.request(method.clone(), &target, headers);
        for (name, value) in attempt_span.upstream_headers() {
            request = request.header(name, value);
        }
        for header in BODY_HEADERS {
            if let Some(v) = headers.get(*header) {
                request = request.header(*header, v.clone());
            }
        }
        request = match &mut outgoing {
            Outgoing::Read(bytes) if bytes.is_empty() => request,
            Outgoing::Read(bytes) => request.body(bytes.clone()),
            Outgoing::Streaming(body) => match body.take() {
                Some(body) => request.body(reqwest::Body::wrap_stream(body.into_data_stream())),
                None => break, // sent once already; cannot happen with `attempts` = 1
            },
        };
        let last = attempt + 1 >= attempts;
        let failure = match request.send().await {
            Ok(response) if last || !retry.statuses.contains(&response.status().as_u16()) => {
                attempt_span.succeeded(response.status().as_u16());
                return Ok((relay(response, &name, attempt + 1), name));
            }
            Ok(response) => UpstreamFailure::Status {
                status: response.status().as_u16(),
                headers: response.headers().clone(),
                body: Bytes::new(),
            },
            Err(e) => classify(&e),
        };
        attempt_span.failed(failure.label(), failure.status());
        tracing::warn!(provider = %name, path, attempt = attempt + 1, reason = %failure.reason(), "passthrough attempt failed");
        if last || !failure.is_retryable(retry) {
            return Err(match failure {
                UpstreamFailure::Timeout(_) => ApiError::UpstreamTimeout { provider: name, reason: failure.reason() },
                _ => ApiError::UpstreamUnavailable { provider: name, reason: failure.reason() },
            });
        }
        let wait = next_wait(failure.headers(), retry.backoff_base, retry.backoff_cap, retry.retry_after_cap, attempt);
        tokio::time::sleep(wait).await;
    }
    Err(ApiError::UpstreamUnavailable { provider: name, reason: "no attempt could be made".into() })
}

/// The provider that serves `model` in this dialect, else the first of the dialect (a
/// passthrough cannot be translated, so a route to the other dialect does not count).
fn pick<'a>(state: &'a AppState, dialect: Dialect, model: Option<&str>) -> Option<&'a Provider> {
    let serving = model.and_then(|m| {
        state
            .upstreams
            .targets(&state.config.routes, dialect, m)
            .into_iter()
            .map(|t| t.provider)
            .find(|p| p.dialect() == dialect)
    });
    serving.or_else(|| state.upstreams.of_dialect(dialect).next())
}

fn dialect_name(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::OpenAi => "openai",
        Dialect::Anthropic => "anthropic",
    }
}

/// The provider's answer as it is, its body streamed; Holdfast's headers added.
fn relay(response: reqwest::Response, provider: &str, attempts: u32) -> Response {
    let status = response.status();
    let upstream_headers = response.headers().clone();
    let mut out = Response::new(Body::from_stream(response.bytes_stream()));
    *out.status_mut() = status;
    for (name, value) in &upstream_headers {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            out.headers_mut().append(name.clone(), value.clone());
        }
    }
    let ours = [
        ("x-holdfast-cache", "bypass".to_owned()),
        ("x-holdfast-provider", provider.to_owned()),
        ("x-holdfast-attempts", attempts.to_string()),
    ];
    for (name, value) in ours {
        if let Ok(v) = HeaderValue::from_str(&value) {
            out.headers_mut().insert(name, v);
        }
    }
    out
}
