//! What the proxy reads from a client request: the endpoint, the body (bounded), the model,
//! whether it wants a stream, every input of its cache key, and the cache policy from
//! `x-holdfast-mode`, `Cache-Control` and whether the request is stateful.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::HeaderMap;
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::Value;

use super::AppInner;
use super::errors::ApiError;
use crate::cache_key::normalize::stateful::STATEFUL_FIELDS;
use crate::cache_key::normalize::{
    Dialect, NormalizeError, NormalizedRequest, Statefulness, canonical_headers, canonical_query, normalize_capturing,
};
use crate::config::{CacheConfig, CacheMode, ResilienceConfig, StatefulPolicy, parse_duration};
use crate::wire::dialect::DEFAULT_ANTHROPIC_VERSION;
use crate::wire::sse::StreamKind;

/// The POST endpoints Holdfast answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    Responses,
    Messages,
    CountTokens,
}

impl Endpoint {
    pub const ALL: [Endpoint; 6] = [
        Self::ChatCompletions,
        Self::Completions,
        Self::Embeddings,
        Self::Responses,
        Self::Messages,
        Self::CountTokens,
    ];

    pub fn path(self) -> &'static str {
        match self {
            Self::ChatCompletions => "/v1/chat/completions",
            Self::Completions => "/v1/completions",
            Self::Embeddings => "/v1/embeddings",
            Self::Responses => "/v1/responses",
            Self::Messages => "/v1/messages",
            Self::CountTokens => "/v1/messages/count_tokens",
        }
    }

    pub fn dialect(self) -> Dialect {
        match self {
            Self::Messages | Self::CountTokens => Dialect::Anthropic,
            _ => Dialect::OpenAi,
        }
    }

    /// The operation as the OpenTelemetry GenAI conventions name it (`gen_ai.operation.name`);
    /// counting tokens has no name there and keeps its own.
    pub fn genai_operation(self) -> &'static str {
        match self {
            Self::ChatCompletions | Self::Messages | Self::Responses => "chat",
            Self::Completions => "text_completion",
            Self::Embeddings => "embeddings",
            Self::CountTokens => "count_tokens",
        }
    }

    /// The stream format of this endpoint, if it can stream at all.
    pub fn stream_kind(self) -> Option<StreamKind> {
        StreamKind::from_endpoint(self.path())
    }
}

/// A request body read and checked.
pub struct ParsedRequest {
    /// The exact bytes the client sent; forwarded as they are.
    pub raw: Bytes,
    /// The canonical body (the key without its headers and query; see `key_of`).
    pub key: NormalizedRequest,
    /// The members the proxy reads itself (`read_by_proxy`), as an object.
    pub fields: Value,
    /// The whole body parsed, when an attempt needs it (`json`).
    json: OnceLock<Value>,
    /// The `model` member, non-empty.
    pub model: String,
    /// The endpoint streams and the body asks for it.
    pub wants_stream: bool,
    /// `stream_options.include_usage`: the client wants OpenAI's usage chunk in its stream.
    pub include_usage: bool,
}

impl ParsedRequest {
    /// The whole body as a `Value`, parsed on first use: only a body rewritten for its target
    /// (another model or dialect) needs it.
    pub fn json(&self) -> &Value {
        // `parse` read these bytes with the same parser, so this cannot fail; `Null` would
        // only reach the translators, which refuse it.
        self.json.get_or_init(|| serde_json::from_slice(&self.raw).unwrap_or(Value::Null))
    }

    /// The form the client wants its answer in.
    pub fn form(&self) -> Form {
        Form { stream: self.wants_stream, include_usage: self.include_usage }
    }
}

/// Every input of the request's address but the tenant: the canonical body, the keyed headers
/// and the canonical query. An Anthropic request that sends no `anthropic-version` is keyed on
/// the version its first target will be sent, so it shares the entry of a client that sends
/// that version itself, and a change of the configured version gets new entries.
pub fn key_of(
    state: &AppInner,
    endpoint: Endpoint,
    parsed: &ParsedRequest,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<NormalizedRequest, ApiError> {
    let body = parsed.key.clone();
    let mut keyed = canonical_headers(headers);
    if endpoint.dialect() == Dialect::Anthropic && !keyed.iter().any(|(name, _)| name == "anthropic-version") {
        let targets = state.upstreams.targets(&state.config.routes, Dialect::Anthropic, &parsed.model);
        let version = targets.first().map_or(DEFAULT_ANTHROPIC_VERSION, |t| t.provider.anthropic_version());
        keyed.push(("anthropic-version".to_owned(), version.to_owned()));
        keyed.sort();
    }
    Ok(body.with_context(keyed, canonical_query(query)))
}

/// Reads at most `limit` bytes; a larger body is refused before it is buffered whole.
/// The bytes of request bodies being received at once (`limits.max_body_buffer`), shared by
/// every connection: without it, each slow upload holds what it has sent so far, and thousands
/// of them hold the process's memory.
pub struct BodyBudget {
    /// `limits.max_body_buffer`: bytes all bodies being received may hold at once.
    limit: u64,
    /// Bytes held right now.
    used: AtomicU64,
}

impl BodyBudget {
    pub fn new(limit: u64) -> Self {
        Self { limit, used: AtomicU64::new(0) }
    }

    /// Bytes held by bodies being received right now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }
}

/// One body's share of the budget, given back when the body has been read (or abandoned).
struct BodyShare<'a> {
    /// The budget the share was taken from, and is given back to on drop.
    budget: &'a BodyBudget,
    /// Bytes this body holds.
    held: u64,
}

impl BodyShare<'_> {
    fn take(&mut self, bytes: u64) -> Result<(), ApiError> {
        let before = self.budget.used.fetch_add(bytes, Ordering::Relaxed);
        if before.saturating_add(bytes) > self.budget.limit {
            self.budget.used.fetch_sub(bytes, Ordering::Relaxed);
            return Err(ApiError::BodiesOverloaded);
        }
        self.held += bytes;
        Ok(())
    }
}

impl Drop for BodyShare<'_> {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.held, Ordering::Relaxed);
    }
}

/// A declared body up to this size gets its whole buffer at once.
const SMALL_BODY: u64 = 16 * 1024;

/// Reads a whole request body of at most `limit` bytes within the shared `budget`. Each chunk is
/// copied out as it arrives, so the connection's read buffer is reused rather than pinned by
/// the pieces of a body that trickles in.
pub async fn read_body(headers: &HeaderMap, body: Body, limit: u64, budget: &BodyBudget) -> Result<Bytes, ApiError> {
    let declared = headers.get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::TooLarge { limit });
    }
    // A declared length is only a claim: a small one (up to 16 KiB, most chat requests) is
    // allocated at once; a larger one starts empty and grows with what arrives, so a client
    // that declares megabytes and sends nothing holds nothing. The budget is charged for the
    // buffer's capacity, which is what the body costs in memory.
    let start = declared.filter(|&n| n <= SMALL_BODY).unwrap_or(0);
    let mut buffer = Vec::with_capacity(usize::try_from(start).unwrap_or(0));
    let mut share = BodyShare { budget, held: 0 };
    share.take(buffer.capacity() as u64)?;
    let mut chunks = body.into_data_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| match crate::edge::server::BodyTimeout::find(&e) {
            Some(reason) => ApiError::BodyTimeout(reason.to_string()),
            None => ApiError::BodyRead(e.to_string()),
        })?;
        if (buffer.len() + chunk.len()) as u64 > limit {
            return Err(ApiError::TooLarge { limit });
        }
        let before = buffer.capacity();
        buffer.reserve(chunk.len());
        share.take((buffer.capacity() - before) as u64)?;
        buffer.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buffer))
}

/// Top-level members the proxy reads itself: the model, the form asked for, and the fields
/// that can make a request stateful.
fn read_by_proxy(endpoint: Endpoint, key: &str) -> bool {
    matches!(key, "model" | "stream" | "stream_options")
        || STATEFUL_FIELDS.iter().any(|f| f.name == key && f.endpoints.contains(&endpoint.path()))
}

/// Reads the body once: its canonical form for the key, and the few members the proxy needs.
/// The whole body is parsed into a `Value` only if an attempt must rewrite it.
pub fn parse(endpoint: Endpoint, raw: Bytes) -> Result<ParsedRequest, ApiError> {
    let (key, fields) =
        normalize_capturing(endpoint.path(), &raw, &|k| read_by_proxy(endpoint, k)).map_err(|e| match e {
            NormalizeError::InvalidJson(e) => ApiError::MalformedJson(e.to_string()),
            NormalizeError::NotAnObject(_) => ApiError::NotAnObject,
        })?;
    let fields = Value::Object(fields);
    let model = fields.get("model").and_then(Value::as_str).filter(|m| !m.is_empty()).ok_or(ApiError::MissingModel)?;
    let wants_stream = endpoint.stream_kind().is_some() && fields.get("stream").and_then(Value::as_bool) == Some(true);
    let include_usage = fields.pointer("/stream_options/include_usage").and_then(Value::as_bool) == Some(true);
    Ok(ParsedRequest { model: model.to_owned(), wants_stream, include_usage, fields, key, json: OnceLock::new(), raw })
}

/// Everything the client asked of the store for this one request.
#[derive(Debug, Clone, PartialEq)]
pub struct CachePolicy {
    /// `cache.mode`, or the mode the request asked for in `x-holdfast-mode`.
    pub mode: CacheMode,
    /// `Cache-Control: no-store`: do not store this exchange.
    pub no_store: bool,
    /// `Cache-Control: no-cache`: do not serve a fresh stored answer (stale on failure is fine).
    pub no_cache: bool,
    /// Oldest stored answer that counts as fresh (`cache.ttl`, lowered by `max-age`).
    pub fresh_for: Duration,
    /// Oldest stored answer acceptable when upstream fails (`stale-if-error`); `None`: any.
    pub stale_if_error: Option<Duration>,
    /// Time for the whole chain of attempts (`resilience.deadline`, lowered by
    /// `x-holdfast-timeout`).
    pub deadline: Duration,
    /// Whether the answer depends on provider-side state, and what `cache.stateful` says to do.
    pub stateful: Stateful,
}

/// A request's statefulness joined with the operator's `cache.stateful`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stateful {
    /// Cached normally.
    Pure,
    /// Stateful, `bypass`: the store is not involved. The reason names the field.
    Bypass(&'static str),
    /// Stateful, `serve-stale`: stored, served only when upstream fails (or in `replay`).
    ServeStale(&'static str),
}

impl Stateful {
    pub fn new(verdict: Statefulness, policy: StatefulPolicy) -> Self {
        match (verdict, policy) {
            (Statefulness::Pure, _) => Self::Pure,
            (Statefulness::Stateful(why), StatefulPolicy::Bypass) => Self::Bypass(why),
            (Statefulness::Stateful(why), StatefulPolicy::ServeStale) => Self::ServeStale(why),
        }
    }

    /// The field that made the request stateful, for `x-holdfast-stateful`.
    pub fn reason(self) -> Option<&'static str> {
        match self {
            Self::Pure => None,
            Self::Bypass(why) | Self::ServeStale(why) => Some(why),
        }
    }
}

impl CachePolicy {
    pub fn from_request(
        headers: &HeaderMap,
        config: &CacheConfig,
        resilience: &ResilienceConfig,
    ) -> Result<Self, ApiError> {
        let mode = match headers.get("x-holdfast-mode") {
            None => config.mode,
            Some(v) => v.to_str().ok().and_then(CacheMode::parse).ok_or_else(|| {
                ApiError::BadHeader("x-holdfast-mode must be one of fallback, cache-first, replay, record, off".into())
            })?,
        };
        let mut policy = Self {
            mode,
            no_store: false,
            no_cache: false,
            fresh_for: config.ttl,
            stale_if_error: config.stale_if_error,
            deadline: resilience.deadline,
            stateful: Stateful::Pure,
        };
        if let Some(v) = headers.get("x-holdfast-timeout") {
            let asked = v.to_str().ok().and_then(|t| parse_duration(t).ok()).ok_or_else(|| {
                ApiError::BadHeader("x-holdfast-timeout must be a duration such as 30s or 1500ms".into())
            })?;
            // A client may shorten the deadline, never extend it past the operator's.
            policy.deadline = policy.deadline.min(asked);
        }
        for value in headers.get_all("cache-control") {
            let text = value.to_str().map_err(|_| ApiError::BadHeader("Cache-Control is not ASCII".into()))?;
            for directive in text.split(',').map(str::trim).filter(|d| !d.is_empty()) {
                let (name, arg) = match directive.split_once('=') {
                    Some((n, a)) => (n.trim().to_ascii_lowercase(), Some(a.trim().trim_matches('"'))),
                    None => (directive.to_ascii_lowercase(), None),
                };
                let seconds = |arg: Option<&str>| -> Result<Duration, ApiError> {
                    arg.and_then(|a| a.parse::<u64>().ok())
                        .map(Duration::from_secs)
                        .ok_or_else(|| ApiError::BadHeader(format!("Cache-Control {name} needs a number of seconds")))
                };
                match name.as_str() {
                    "no-store" => policy.no_store = true,
                    "no-cache" => policy.no_cache = true,
                    "max-age" => policy.fresh_for = policy.fresh_for.min(seconds(arg)?),
                    "stale-if-error" => policy.stale_if_error = Some(seconds(arg)?),
                    // Other directives (e.g. max-stale, only-if-cached) do not apply to a proxy
                    // whose answers are generated; ignoring them is what HTTP caches do.
                    _ => {}
                }
            }
        }
        Ok(policy)
    }

    /// Whether an answer from upstream may be stored.
    pub fn may_store(&self) -> bool {
        !self.no_store && !matches!(self.mode, CacheMode::Off) && !matches!(self.stateful, Stateful::Bypass(_))
    }

    /// Whether a fresh stored answer may be served without asking upstream (`cache-first`).
    /// Never for a stateful request: its answer may no longer be the provider's.
    pub fn may_serve_fresh(&self) -> bool {
        self.mode == CacheMode::CacheFirst && !self.no_cache && self.stateful == Stateful::Pure
    }

    /// Whether a stored answer may be served when upstream fails.
    pub fn may_serve_stale(&self) -> bool {
        matches!(self.mode, CacheMode::Fallback | CacheMode::CacheFirst)
            && !matches!(self.stateful, Stateful::Bypass(_))
    }
}

/// The form a client asked for: what a replay has to follow, since neither `stream` nor
/// `stream_options` is part of the address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Form {
    /// A stream rather than one JSON body.
    pub stream: bool,
    /// `stream_options.include_usage`: OpenAI's usage chunk (`choices: []`) in the stream.
    pub include_usage: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn policy(pairs: &[(&'static str, &'static str)]) -> Result<CachePolicy, ApiError> {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        CachePolicy::from_request(&h, &CacheConfig::default(), &ResilienceConfig::default())
    }

    #[test]
    fn cache_control_directives_are_honoured() {
        let p = policy(&[("cache-control", "no-store, max-age=60"), ("cache-control", "stale-if-error=600")]).unwrap();
        assert!(p.no_store && !p.no_cache);
        assert_eq!(p.fresh_for, Duration::from_secs(60));
        assert_eq!(p.stale_if_error, Some(Duration::from_secs(600)));
        assert!(!p.may_store());
        assert!(policy(&[("cache-control", "NO-CACHE")]).unwrap().no_cache);
        assert!(policy(&[("cache-control", "max-age=abc")]).is_err());
    }

    #[test]
    fn timeout_header_can_only_shorten_the_deadline() {
        assert_eq!(policy(&[("x-holdfast-timeout", "2s")]).unwrap().deadline, Duration::from_secs(2));
        assert_eq!(policy(&[("x-holdfast-timeout", "9999s")]).unwrap().deadline, ResilienceConfig::default().deadline);
        assert!(policy(&[("x-holdfast-timeout", "soon")]).is_err());
    }

    #[test]
    fn mode_header_overrides_config() {
        assert_eq!(policy(&[("x-holdfast-mode", "replay")]).unwrap().mode, CacheMode::Replay);
        assert_eq!(policy(&[]).unwrap().mode, CacheMode::Fallback);
        assert!(policy(&[("x-holdfast-mode", "sometimes")]).is_err());
    }

    #[test]
    fn stateful_requests_are_never_fresh_hits_and_bypass_leaves_the_store_alone() {
        let mut p = policy(&[("x-holdfast-mode", "cache-first")]).unwrap();
        assert!(p.may_serve_fresh() && p.may_store() && p.may_serve_stale());
        let stateful = Statefulness::Stateful("store");
        p.stateful = Stateful::new(stateful, StatefulPolicy::ServeStale);
        assert!(!p.may_serve_fresh() && p.may_store() && p.may_serve_stale());
        p.stateful = Stateful::new(stateful, StatefulPolicy::Bypass);
        assert!(!p.may_serve_fresh() && !p.may_store() && !p.may_serve_stale());
        assert_eq!(p.stateful.reason(), Some("store"));
    }

    #[test]
    fn body_checks() {
        assert!(matches!(parse(Endpoint::ChatCompletions, Bytes::from_static(b"{")), Err(ApiError::MalformedJson(_))));
        assert!(matches!(parse(Endpoint::ChatCompletions, Bytes::from_static(b"[]")), Err(ApiError::NotAnObject)));
        assert!(matches!(parse(Endpoint::ChatCompletions, Bytes::from_static(b"{}")), Err(ApiError::MissingModel)));
        let p = parse(Endpoint::Embeddings, Bytes::from_static(br#"{"model":"m","stream":true}"#)).unwrap();
        assert!(!p.wants_stream, "embeddings never stream");
        let p = parse(Endpoint::Messages, Bytes::from_static(br#"{"model":"m","stream":true}"#)).unwrap();
        assert!(p.wants_stream);
    }
}
