//! Talking to providers: routing a model to the provider that serves it, building the
//! upstream request (credentials, dialect headers), and classifying every way it can fail.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use bytes::Bytes;
use zeroize::Zeroizing;

use crate::cache_key::normalize::{Dialect, KEYED_HEADERS};
use crate::config::{Api, FailureKind, ProviderConfig, RetryConfig, RouteConfig};
use crate::edge::credential::client_credential;
use crate::wire::dialect::DEFAULT_ANTHROPIC_VERSION;

/// A provider ready to take requests: its settings and a pooled HTTP client.
pub struct Provider {
    /// Its `[[providers]]` section: URL, dialect, timeouts, retry and breaker settings.
    pub config: ProviderConfig,
    /// A pooled HTTP client of its own, so one provider's slow connections never hold another's.
    client: reqwest::Client,
    /// The key from `api_key_env`, read once at start-up.
    api_key: Option<Zeroizing<String>>,
    /// Whether a client's own key may be sent on when there is no `api_key_env` key. Off when
    /// `[clients]` keys are on: those are Holdfast's keys, never a provider's.
    forward_client_key: bool,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Provider({}, key: {})", self.config.name, if self.api_key.is_some() { "*****" } else { "client's" })
    }
}

/// Why the providers could not be set up. Start-up only.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamInitError {
    #[error(
        "provider `{provider}`: environment variable {var} (its api_key_env) is not set; export it, or remove api_key_env to forward clients' own keys"
    )]
    MissingKey { provider: String, var: String },
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// How an upstream attempt failed. `Status` keeps the provider's answer so a 4xx can be passed
/// through to the client unchanged.
#[derive(Debug)]
pub enum UpstreamFailure {
    Connect(String),
    Timeout(&'static str),
    Status {
        status: u16,
        headers: HeaderMap,
        body: Bytes,
    },
    Invalid(String),
    /// A provider that uses `api_key_env` answered 401/403 (its key was refused) or 404 for
    /// the model: the provider's fault, not the client's, so it fails over and may be served
    /// stale. The answer is kept for the breaker's and the log's sake, never shown as is.
    ProviderAuth {
        status: u16,
        headers: HeaderMap,
        body: Bytes,
    },
    /// Every target was skipped because its circuit breaker is open.
    CircuitOpen,
    /// No target could take the request (e.g. it could not be translated for any of them).
    NoTarget(String),
}

impl UpstreamFailure {
    /// The failure class that `cache.serve_stale_on` names; `None` for a 4xx other than 429,
    /// which is the provider's verdict on the request, not an outage.
    pub fn kind(&self) -> Option<FailureKind> {
        match self {
            Self::Connect(_) => Some(FailureKind::Connect),
            Self::Timeout(_) => Some(FailureKind::Timeout),
            Self::Status { status: 429, .. } => Some(FailureKind::Status429),
            Self::Status { status, .. } if *status >= 500 => Some(FailureKind::Status5xx),
            Self::Status { .. } => None,
            Self::Invalid(_) => Some(FailureKind::Invalid),
            Self::ProviderAuth { .. } => Some(FailureKind::Auth),
            // Breakers open only on outage-class failures, so an open one stands for them.
            Self::CircuitOpen => Some(FailureKind::Connect),
            Self::NoTarget(_) => None,
        }
    }

    /// A short reason for logs and `x-holdfast-upstream-error`; never includes bodies.
    pub fn reason(&self) -> String {
        match self {
            Self::Connect(detail) => format!("connect: {detail}"),
            Self::Timeout(phase) => format!("timeout: {phase}"),
            Self::Status { status, .. } => format!("status {status}"),
            Self::Invalid(detail) => format!("invalid answer: {detail}"),
            Self::ProviderAuth { status, .. } => {
                format!("auth: status {status} (the provider refused the key from its api_key_env, or the model)")
            }
            Self::CircuitOpen => "circuit open".to_owned(),
            Self::NoTarget(detail) => format!("no target: {detail}"),
        }
    }

    /// Label value for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Connect(_) => "connect",
            Self::Timeout(_) => "timeout",
            Self::Status { status: 429, .. } => "429",
            Self::Status { status, .. } if *status >= 500 => "5xx",
            Self::Status { .. } => "4xx",
            Self::Invalid(_) => "invalid",
            Self::ProviderAuth { .. } => "auth",
            Self::CircuitOpen => "circuit_open",
            Self::NoTarget(_) => "no_target",
        }
    }

    /// Whether the provider as a whole looks down (connection-level), as opposed to one of its
    /// models failing (status-level); picks which circuit breaker the failure counts against.
    /// A refused key is the whole provider's problem; a model it does not have is the model's.
    pub fn is_provider_wide(&self) -> bool {
        matches!(self, Self::Connect(_) | Self::Timeout(_) | Self::ProviderAuth { status: 401 | 403, .. })
    }

    /// The prompt does not fit this target's context window (OpenAI `context_length_exceeded`,
    /// Anthropic "prompt is too long"): retrying is pointless, but a later target in the route
    /// (operators list larger-context models after smaller ones) may take it.
    pub fn is_context_length(&self) -> bool {
        let Self::Status { status: 400 | 413, body, .. } = self else { return false };
        let text = String::from_utf8_lossy(body).to_ascii_lowercase();
        ["context_length_exceeded", "prompt is too long", "maximum context length", "context window"]
            .iter()
            .any(|needle| text.contains(needle))
    }

    /// Whether this provider's retry policy says to try again.
    pub fn is_retryable(&self, policy: &RetryConfig) -> bool {
        match self {
            Self::Connect(_) => policy.connect_errors,
            Self::Timeout(_) => policy.timeouts,
            Self::Status { status, .. } => policy.statuses.contains(status),
            Self::Invalid(_) => true,
            // The same key (or model) would be refused again.
            Self::ProviderAuth { .. } | Self::CircuitOpen | Self::NoTarget(_) => false,
        }
    }

    /// A provider's error answer rewritten in `dialect`'s error shape, so a client whose request
    /// failed over to the other dialect still gets an error its SDK understands.
    pub fn in_dialect(self, dialect: Dialect) -> Self {
        let Self::Status { status, mut headers, body } = self else { return self };
        let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let message = parsed
            .pointer("/error/message")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(500).collect());
        let kind = parsed.pointer("/error/type").and_then(serde_json::Value::as_str).unwrap_or("api_error").to_owned();
        let shaped = match dialect {
            Dialect::OpenAi => {
                serde_json::json!({"error": {"message": message, "type": kind, "code": null, "param": null}})
            }
            Dialect::Anthropic => serde_json::json!({"type": "error", "error": {"type": kind, "message": message}}),
        };
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.remove("content-length");
        Self::Status { status, headers, body: Bytes::from(shaped.to_string()) }
    }

    /// The HTTP status of a provider's error answer, if it gave one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } | Self::ProviderAuth { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn headers(&self) -> Option<&HeaderMap> {
        match self {
            Self::Status { headers, .. } | Self::ProviderAuth { headers, .. } => Some(headers),
            _ => None,
        }
    }
}

/// Response headers passed back to the client on a live answer.
pub const RETURNED_HEADERS: &[&str] = &[
    "x-request-id",
    "request-id",
    "openai-processing-ms",
    "openai-model",
    "anthropic-organization-id",
    "retry-after",
    "retry-after-ms",
    "x-ratelimit-limit-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-requests",
    "x-ratelimit-reset-tokens",
];

impl Provider {
    pub fn new(config: ProviderConfig, env: impl Fn(&str) -> Option<String>) -> Result<Self, UpstreamInitError> {
        let api_key =
            match &config.api_key_env {
                Some(var) => Some(Zeroizing::new(env(var).filter(|v| !v.is_empty()).ok_or_else(|| {
                    UpstreamInitError::MissingKey { provider: config.name.clone(), var: var.clone() }
                })?)),
                None => None,
            };
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .user_agent(concat!("holdfast/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| UpstreamInitError::Client(e.to_string()))?;
        Ok(Self { config, client, api_key, forward_client_key: true })
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn dialect(&self) -> Dialect {
        match self.config.api {
            Api::Openai => Dialect::OpenAi,
            Api::Anthropic => Dialect::Anthropic,
        }
    }

    /// Where attempts to this provider go, as a trace span names it (no credentials, no path).
    pub fn span_target<'a>(&'a self, model: &'a str) -> crate::telemetry::AttemptTarget<'a> {
        let url = reqwest::Url::parse(&self.config.base_url).ok();
        crate::telemetry::AttemptTarget {
            provider: self.name(),
            api: match self.config.api {
                Api::Openai => "openai",
                Api::Anthropic => "anthropic",
            },
            model,
            host: url.as_ref().and_then(|u| u.host_str().map(str::to_owned)),
            port: url.as_ref().and_then(reqwest::Url::port_or_known_default),
        }
    }

    /// `base_url` + `path`, without doubling a `/v1` that the operator put in `base_url`.
    pub fn url(&self, path: &str) -> String {
        let base = self.config.base_url.trim_end_matches('/');
        match (base.strip_suffix("/v1"), path.strip_prefix("/v1")) {
            (Some(stem), Some(_)) => format!("{stem}{path}"),
            _ => format!("{base}{path}"),
        }
    }

    /// The `anthropic-version` sent when the client sends none: the configured one, else the
    /// default. (Meaningless for an OpenAI provider, which is sent none.)
    pub fn anthropic_version(&self) -> &str {
        self.config.anthropic_version.as_deref().unwrap_or(DEFAULT_ANTHROPIC_VERSION)
    }

    /// The version an Anthropic request to this provider carries: the client's, else ours.
    pub fn anthropic_version_for<'a>(&'a self, client: &'a HeaderMap) -> &'a str {
        client.get("anthropic-version").and_then(|v| v.to_str().ok()).map_or(self.anthropic_version(), str::trim)
    }

    /// The headers to send: the provider's credential (or the client's), the dialect's keyed
    /// headers (`normalize::KEYED_HEADERS`: only headers in the cache key reach a provider),
    /// and no compression so answers can be recorded as they are.
    pub fn headers(&self, client: &HeaderMap) -> HeaderMap {
        let mut out = HeaderMap::new();
        out.insert("accept-encoding", HeaderValue::from_static("identity"));
        // Conflicting credentials were refused at the edge; here they read as none.
        let client_token = client_credential(client).ok().flatten().filter(|_| self.forward_client_key);
        match self.config.api {
            Api::Openai => {
                let token = self.api_key.as_deref().map(String::as_str).or(client_token);
                if let Some(v) = token.and_then(|t| HeaderValue::from_str(&format!("Bearer {t}")).ok()) {
                    out.insert("authorization", sensitive(v));
                }
                copy_headers(client, &mut out, Dialect::OpenAi);
            }
            Api::Anthropic => {
                let token = self.api_key.as_deref().map(String::as_str).or(client_token);
                if let Some(v) = token.and_then(|t| HeaderValue::from_str(t).ok()) {
                    out.insert("x-api-key", sensitive(v));
                }
                copy_headers(client, &mut out, Dialect::Anthropic);
                if !out.contains_key("anthropic-version")
                    && let Ok(v) = HeaderValue::from_str(self.anthropic_version())
                {
                    out.insert("anthropic-version", v);
                }
            }
        }
        out
    }

    /// A request to `path` (which may carry a query) with this provider's credential and the
    /// client's keyed headers, exactly as `send` would build it, for the caller to add a body
    /// and send: passthrough streams bodies `send` would buffer.
    pub fn request(&self, method: reqwest::Method, path: &str, client_headers: &HeaderMap) -> reqwest::RequestBuilder {
        self.client.request(method, self.url(path)).headers(self.headers(client_headers))
    }

    /// Sends a request and waits for the response headers: within the first-byte timeout for
    /// a stream, within the total timeout otherwise. A non-2xx answer is read whole and
    /// returned as `UpstreamFailure::Status`. `path` may carry a query string.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        client_headers: &HeaderMap,
        body: Option<Bytes>,
        stream: bool,
    ) -> Result<reqwest::Response, UpstreamFailure> {
        self.send_traced(method, path, client_headers, Vec::new(), body, stream).await
    }

    /// As `send`, with the W3C trace-context headers of the attempt (`traceparent`,
    /// `tracestate`): they say where in a trace the call sits, never what it asks, so they
    /// go upstream although they are not part of the cache key.
    pub async fn send_traced(
        &self,
        method: reqwest::Method,
        path: &str,
        client_headers: &HeaderMap,
        trace_headers: Vec<(HeaderName, HeaderValue)>,
        body: Option<Bytes>,
        stream: bool,
    ) -> Result<reqwest::Response, UpstreamFailure> {
        let mut headers = self.headers(client_headers);
        headers.extend(trace_headers.into_iter().map(|(name, value)| (Some(name), value)));
        let mut request = self.client.request(method, self.url(path)).headers(headers);
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body);
        }
        let (wait, phase) =
            if stream { (self.config.first_byte_timeout, "first byte") } else { (self.config.timeout, "total") };
        let response = match tokio::time::timeout(wait, request.send()).await {
            Err(_) => return Err(UpstreamFailure::Timeout(phase)),
            Ok(Err(e)) => return Err(classify(&e)),
            Ok(Ok(r)) => r,
        };
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await.unwrap_or_default();
        if self.api_key.is_some() && refuses_holdfast(status, &body) {
            return Err(UpstreamFailure::ProviderAuth { status, headers, body });
        }
        Err(UpstreamFailure::Status { status, headers, body })
    }
}

/// Whether an error answer to a request sent with Holdfast's own key blames that key (401,
/// 403) or the model the operator routed to (404 "model not found"): the client can do nothing
/// about either. A 404 for anything else (an unknown path) stays a verdict.
fn refuses_holdfast(status: u16, body: &[u8]) -> bool {
    match status {
        401 | 403 => true,
        404 => {
            let text = String::from_utf8_lossy(body).to_ascii_lowercase();
            text.contains("model_not_found")
                || (text.contains("model") && text.contains("not found"))
                || text.contains("does not exist")
        }
        _ => false,
    }
}

/// Classifies a transport error from reqwest: a timeout, or else a connection that could not
/// be made or broke (refused, reset, DNS, TLS) — both are outages, not verdicts.
pub fn classify(e: &reqwest::Error) -> UpstreamFailure {
    if e.is_timeout() {
        UpstreamFailure::Timeout(if e.is_connect() { "connect" } else { "total" })
    } else {
        UpstreamFailure::Connect(root_cause(e))
    }
}

/// The innermost error message (e.g. "Connection refused (os error 111)"), without URLs.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut current = e;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

fn sensitive(mut v: HeaderValue) -> HeaderValue {
    v.set_sensitive(true);
    v
}

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap, dialect: Dialect) {
    for keyed in KEYED_HEADERS.iter().filter(|k| k.dialect == dialect) {
        for v in from.get_all(keyed.name) {
            to.append(HeaderName::from_static(keyed.name), v.clone());
        }
    }
}

/// One place a request may be sent: a provider and the model to ask it for.
pub struct Target<'a> {
    /// The provider to send to.
    pub provider: &'a Provider,
    /// The model to ask it for (the route may map the client's model to another).
    pub model: String,
}

/// All configured providers, in configuration order (the order routing tries them).
pub struct Upstreams {
    /// Every provider, in configuration order.
    pub providers: Vec<Provider>,
}

impl Upstreams {
    pub fn new(configs: &[ProviderConfig], env: impl Fn(&str) -> Option<String>) -> Result<Self, UpstreamInitError> {
        let providers = configs.iter().map(|c| Provider::new(c.clone(), &env)).collect::<Result<_, _>>()?;
        Ok(Self { providers })
    }

    /// Never sends clients' keys on (with `[clients]` keys, they are Holdfast's own).
    pub fn stop_forwarding_client_keys(&mut self) {
        self.providers.iter_mut().for_each(|p| p.forward_client_key = false);
    }

    /// Whether some provider sends the operator's own key (`api_key_env`).
    pub fn uses_operator_keys(&self) -> bool {
        self.providers.iter().any(|p| p.api_key.is_some())
    }

    pub fn by_name(&self, name: &str) -> Option<&Provider> {
        self.providers.iter().find(|p| p.config.name == name)
    }

    /// Where to send a request for `model`, in order: the targets of the first route whose
    /// pattern matches, else every provider of the client's dialect that serves the model.
    /// Cross-dialect targets only come from explicit routes.
    pub fn targets(&self, routes: &[RouteConfig], dialect: Dialect, model: &str) -> Vec<Target<'_>> {
        if let Some(route) = routes.iter().find(|r| crate::config::glob_match(&r.model, model)) {
            return route
                .parsed_targets()
                .filter_map(|(name, target_model)| {
                    Some(Target { provider: self.by_name(name)?, model: target_model.unwrap_or(model).to_owned() })
                })
                .collect();
        }
        self.providers
            .iter()
            .filter(|p| p.dialect() == dialect && p.config.serves(model))
            .map(|provider| Target { provider, model: model.to_owned() })
            .collect()
    }

    pub fn of_dialect(&self, dialect: Dialect) -> impl Iterator<Item = &Provider> {
        self.providers.iter().filter(move |p| p.dialect() == dialect)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn provider(base_url: &str, api: Api, key_env: Option<&str>) -> Provider {
        let mut c = Config::default().providers[0].clone();
        c.base_url = base_url.into();
        c.api = api;
        c.api_key_env = key_env.map(str::to_owned);
        Provider::new(c, |_| Some("sk-provider".into())).unwrap()
    }

    #[test]
    fn urls_do_not_double_v1() {
        assert_eq!(provider("http://h:1", Api::Openai, None).url("/v1/models"), "http://h:1/v1/models");
        assert_eq!(provider("http://h:1/v1/", Api::Openai, None).url("/v1/models"), "http://h:1/v1/models");
        assert_eq!(provider("http://h/openai", Api::Openai, None).url("/v1/x"), "http://h/openai/v1/x");
    }

    #[test]
    fn credentials_are_forwarded_in_the_providers_dialect() {
        let mut client = HeaderMap::new();
        client.insert("authorization", HeaderValue::from_static("Bearer sk-client"));
        let h = provider("http://h", Api::Anthropic, None).headers(&client);
        assert_eq!(h["x-api-key"], "sk-client");
        assert_eq!(h["anthropic-version"], DEFAULT_ANTHROPIC_VERSION);
        assert!(h["x-api-key"].is_sensitive());
        let h = provider("http://h", Api::Openai, Some("KEY")).headers(&client);
        assert_eq!(h["authorization"], "Bearer sk-provider");
    }

    #[test]
    fn missing_key_env_is_a_clear_start_up_error() {
        let mut c = Config::default().providers[0].clone();
        c.api_key_env = Some("NOPE_KEY".into());
        let err = Provider::new(c, |_| None).unwrap_err().to_string();
        assert!(err.contains("NOPE_KEY") && err.contains("openai"), "{err}");
    }

    #[test]
    fn four_hundreds_are_told_apart() {
        let status = |status: u16, body: &str| UpstreamFailure::Status {
            status,
            headers: HeaderMap::new(),
            body: Bytes::from(body.to_owned()),
        };
        let openai = r#"{"error":{"message":"This model's maximum context length is 8192 tokens.","code":"context_length_exceeded"}}"#;
        let anthropic = r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}}"#;
        let policy = r#"{"error":{"message":"Your request was rejected by the safety system.","code":"content_policy_violation"}}"#;
        assert!(status(400, openai).is_context_length());
        assert!(status(400, anthropic).is_context_length());
        assert!(!status(400, policy).is_context_length());
        assert!(status(400, policy).kind().is_none(), "a content-policy refusal is the provider's verdict");
        assert!(!status(500, openai).is_context_length());
        assert!(refuses_holdfast(401, b"{}") && refuses_holdfast(403, b""));
        assert!(refuses_holdfast(404, br#"{"error":{"code":"model_not_found"}}"#));
        assert!(refuses_holdfast(
            404,
            br#"{"error":{"type":"not_found_error","message":"model: claude-x not found"}}"#
        ));
        assert!(!refuses_holdfast(404, b"Unknown request URL: POST /v1/nothing."));
        assert!(!refuses_holdfast(400, b"{}"));
        let auth = UpstreamFailure::ProviderAuth { status: 401, headers: HeaderMap::new(), body: Bytes::new() };
        assert_eq!(auth.kind(), Some(FailureKind::Auth));
        assert!(auth.is_provider_wide() && !auth.is_retryable(&RetryConfig::default()));
        assert!(!auth.reason().contains("sk-"), "{}", auth.reason());
    }

    #[test]
    fn debug_never_prints_the_key() {
        let p = provider("http://h", Api::Openai, Some("KEY"));
        assert!(!format!("{p:?}").contains("sk-provider"));
    }
}
