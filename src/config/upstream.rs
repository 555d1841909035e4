//! Who is asked and how hard: `[[providers]]` with their retries and breakers, `[[routes]]`
//! for failover, and `[resilience]`, the deadline over the whole chain.

use std::time::Duration;

use serde::Deserialize;

use super::values::{de_duration, glob_match};

/// The dialect a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Api {
    Openai,
    Anthropic,
}

/// One `[[providers]]` entry: an upstream and how it is called.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Name used in logs, metrics and `x-holdfast-provider`.
    pub name: String,
    /// Dialect the provider speaks (`openai` covers any OpenAI-compatible server).
    pub api: Api,
    /// Scheme, host and optional path prefix, without the `/v1` of the API paths.
    pub base_url: String,
    /// Environment variable holding the key the proxy sends. Absent: the client's own
    /// credential is forwarded.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Glob patterns (`*`, `?`) of model names this provider serves.
    #[serde(default = "default_all_models")]
    pub models: Vec<String>,
    /// Longest wait for a TCP (and TLS) connection before the attempt counts as a connect failure.
    #[serde(default = "default_connect_timeout", deserialize_with = "de_duration")]
    pub connect_timeout: Duration,
    /// Streams only: longest wait for the response headers. (A non-streamed answer's headers
    /// come when the whole answer is generated, so `timeout` and the deadline bound it instead.)
    #[serde(default = "default_first_byte_timeout", deserialize_with = "de_duration")]
    pub first_byte_timeout: Duration,
    /// Longest a whole exchange may take, streams included.
    #[serde(default = "default_timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// Streams only: longest wait from the response headers to the first event that carries
    /// content (headers can come at once while the first token takes minutes).
    #[serde(default = "default_stream_timeout", deserialize_with = "de_duration")]
    pub first_token_timeout: Duration,
    /// Streams only: longest silence between two events once content has begun (a stalled
    /// stream with its connection open is otherwise only ended by `timeout`).
    #[serde(default = "default_stream_timeout", deserialize_with = "de_duration")]
    pub stream_idle_timeout: Duration,
    /// Retries on this provider before failing over.
    #[serde(default)]
    pub retry: RetryConfig,
    /// When to stop calling this provider for a while.
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// Anthropic providers: the `anthropic-version` sent when the client sends none; it also
    /// picks the rules a translated request follows. Absent: `wire::dialect::DEFAULT_ANTHROPIC_VERSION`.
    #[serde(default)]
    pub anthropic_version: Option<String>,
    /// Whether the provider continues a final assistant message (a prefill) rather than
    /// answering after it; stream rescue asks it to. Absent: Anthropic does, an
    /// OpenAI-compatible server is not assumed to (llama.cpp's server does: say so here).
    #[serde(default)]
    pub prefill: Option<bool>,
}

impl ProviderConfig {
    pub fn serves(&self, model: &str) -> bool {
        self.models.iter().any(|pattern| glob_match(pattern, model))
    }

    pub fn continues_prefill(&self) -> bool {
        self.prefill.unwrap_or(self.api == Api::Anthropic)
    }
}

/// Retries on one provider within one request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Tries per request on this provider, the first included (1 = no retries).
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// First backoff ceiling; doubles each retry (full jitter: the wait is random below it).
    #[serde(default = "default_backoff_base", deserialize_with = "de_duration")]
    pub backoff_base: Duration,
    /// Largest backoff ceiling.
    #[serde(default = "default_backoff_cap", deserialize_with = "de_duration")]
    pub backoff_cap: Duration,
    /// Longest `Retry-After` honoured; a provider asking for more is failed over instead.
    #[serde(default = "default_retry_after_cap", deserialize_with = "de_duration")]
    pub retry_after_cap: Duration,
    /// Statuses worth retrying.
    #[serde(default = "default_retry_statuses")]
    pub statuses: Vec<u16>,
    /// Retry connection failures (refused, reset, DNS).
    #[serde(default = "default_true")]
    pub connect_errors: bool,
    /// Retry timeouts. Off by default: a provider that hung once usually hangs again, and
    /// each retry would spend another `timeout` of the deadline that failover needs.
    #[serde(default)]
    pub timeouts: bool,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            attempts: default_attempts(),
            backoff_base: default_backoff_base(),
            backoff_cap: default_backoff_cap(),
            retry_after_cap: default_retry_after_cap(),
            statuses: default_retry_statuses(),
            connect_errors: true,
            timeouts: false,
        }
    }
}

/// When to stop calling a failing provider; see `resilience::breaker`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker.
    #[serde(default = "default_breaker_failures")]
    pub failures: u32,
    /// Failure ratio over `window` that opens it (with at least `min_requests` seen).
    #[serde(default = "default_failure_ratio")]
    pub failure_ratio: f64,
    /// The sliding window `failure_ratio` is measured over.
    #[serde(default = "default_breaker_window", deserialize_with = "de_duration")]
    pub window: Duration,
    /// Requests the window must have seen before `failure_ratio` can open the breaker, so one
    /// early failure is not a 100% ratio.
    #[serde(default = "default_min_requests")]
    pub min_requests: u32,
    /// How long an open breaker waits before letting probes through.
    #[serde(default = "default_cooldown", deserialize_with = "de_duration")]
    pub cooldown: Duration,
    /// Requests let through at a time while half-open.
    #[serde(default = "default_probes")]
    pub probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failures: default_breaker_failures(),
            failure_ratio: default_failure_ratio(),
            window: default_breaker_window(),
            min_requests: default_min_requests(),
            cooldown: default_cooldown(),
            probes: default_probes(),
        }
    }
}

/// One `[[routes]]` entry: where a model's requests go, in failover order.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Model name (glob) this route applies to, as the client sends it.
    pub model: String,
    /// Ordered targets `provider:model` (or `provider` for the same model name). The model
    /// part may itself contain ':' (Ollama's `llama3.1:8b`).
    pub targets: Vec<String>,
}

impl RouteConfig {
    /// (provider, model) of each target; `None` model means "as the client asked".
    pub fn parsed_targets(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.targets.iter().map(|t| match t.split_once(':') {
            Some((p, m)) => (p, Some(m)),
            None => (t.as_str(), None),
        })
    }
}

/// `[resilience]`: limits over the whole chain of attempts for one request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResilienceConfig {
    /// The whole chain of attempts, retries and failovers for one request fits in this; a
    /// client may ask for less with `x-holdfast-timeout`.
    #[serde(default = "default_deadline", deserialize_with = "de_duration")]
    pub deadline: Duration,
    /// Kept back from the deadline so a stored answer can still be served in time.
    #[serde(default = "default_stale_reserve", deserialize_with = "de_duration")]
    pub stale_reserve: Duration,
    /// A stream that breaks after text reached the client is continued on the next target
    /// (see `proxy::rescue`) instead of ending in an error.
    #[serde(default = "default_true")]
    pub resume_streams: bool,
}

impl Default for ResilienceConfig {
    fn default() -> Self {
        Self { deadline: default_deadline(), stale_reserve: default_stale_reserve(), resume_streams: true }
    }
}

/// Each provider's name, URL, models, key variable, version, timeouts, retries and breaker.
pub(super) fn validate_providers(providers: &[ProviderConfig], problems: &mut Vec<String>) {
    for (i, p) in providers.iter().enumerate() {
        let at = format!("providers[{i}] ({})", p.name);
        if p.name.is_empty() || !p.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            problems.push(format!("{at}.name: use letters, digits, '-', '_' or '.'"));
        }
        if providers.iter().take(i).any(|q| q.name == p.name) {
            problems.push(format!("{at}.name: another provider already has this name"));
        }
        match reqwest::Url::parse(&p.base_url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
            _ => problems.push(format!("{at}.base_url: `{}` is not an http(s) URL", p.base_url)),
        }
        if p.models.is_empty() {
            problems.push(format!("{at}.models: list at least one pattern (\"*\" for all)"));
        }
        if let Some(var) = &p.api_key_env
            && var.is_empty()
        {
            problems.push(format!("{at}.api_key_env: name an environment variable"));
        }
        if let Some(version) = &p.anthropic_version
            && let Err(e) = crate::wire::dialect::anthropic_rules(version)
        {
            problems.push(format!("{at}.anthropic_version: {e}"));
        }
        if p.first_token_timeout.is_zero() || p.stream_idle_timeout.is_zero() {
            problems.push(format!("{at}.first_token_timeout / stream_idle_timeout: must be above zero"));
        }
        if p.timeout < p.first_byte_timeout {
            problems.push(format!("{at}.timeout: shorter than first_byte_timeout"));
        }
        if p.retry.attempts == 0 {
            problems.push(format!("{at}.retry.attempts: at least 1 (the first try)"));
        }
        if !(0.0..=1.0).contains(&p.breaker.failure_ratio) || p.breaker.failure_ratio == 0.0 {
            problems.push(format!("{at}.breaker.failure_ratio: a fraction in (0, 1]"));
        }
        if p.breaker.failures == 0 || p.breaker.probes == 0 {
            problems.push(format!("{at}.breaker: failures and probes must be at least 1"));
        }
    }
}

/// Each route lists targets, and each target names a configured provider (and a model after a `:`).
pub(super) fn validate_routes(routes: &[RouteConfig], providers: &[ProviderConfig], problems: &mut Vec<String>) {
    for (i, route) in routes.iter().enumerate() {
        if route.targets.is_empty() {
            problems.push(format!("routes[{i}] ({}).targets: list at least one provider:model", route.model));
        }
        for (provider, model) in route.parsed_targets() {
            if !providers.iter().any(|p| p.name == provider) {
                problems.push(format!("routes[{i}] ({}).targets: no provider named `{provider}`", route.model));
            }
            if model == Some("") {
                problems.push(format!("routes[{i}] ({}).targets: `{provider}:` names no model", route.model));
            }
        }
    }
}

impl ResilienceConfig {
    pub(super) fn validate(&self, problems: &mut Vec<String>) {
        if self.stale_reserve >= self.deadline {
            problems.push("resilience.stale_reserve: must be shorter than resilience.deadline".into());
        }
    }
}

/// OpenAI and Anthropic, with the client's own credentials forwarded.
pub(super) fn default_providers() -> Vec<ProviderConfig> {
    let provider = |name: &str, api, base_url: &str, models: &[&str]| ProviderConfig {
        name: name.into(),
        api,
        base_url: base_url.into(),
        api_key_env: None,
        models: models.iter().map(|m| (*m).to_owned()).collect(),
        connect_timeout: default_connect_timeout(),
        first_byte_timeout: default_first_byte_timeout(),
        timeout: default_timeout(),
        first_token_timeout: default_stream_timeout(),
        stream_idle_timeout: default_stream_timeout(),
        retry: RetryConfig::default(),
        breaker: BreakerConfig::default(),
        anthropic_version: None,
        prefill: None,
    };
    vec![
        provider(
            "openai",
            Api::Openai,
            "https://api.openai.com",
            &[
                "gpt-*",
                "o1*",
                "o3*",
                "o4*",
                "chatgpt-*",
                "text-embedding-*",
                "davinci-*",
                "babbage-*",
                "omni-*",
                "codex-*",
            ],
        ),
        provider("anthropic", Api::Anthropic, "https://api.anthropic.com", &["claude-*"]),
    ]
}

fn default_all_models() -> Vec<String> {
    vec!["*".into()]
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_first_byte_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_stream_timeout() -> Duration {
    Duration::from_secs(30)
}
/// Under the deadline (300 s), so a hung non-streamed attempt leaves time to fail over.
fn default_timeout() -> Duration {
    Duration::from_secs(120)
}
fn default_deadline() -> Duration {
    Duration::from_secs(300)
}
fn default_stale_reserve() -> Duration {
    Duration::from_millis(250)
}
fn default_attempts() -> u32 {
    3
}
fn default_backoff_base() -> Duration {
    Duration::from_millis(200)
}
fn default_backoff_cap() -> Duration {
    Duration::from_secs(5)
}
fn default_retry_after_cap() -> Duration {
    Duration::from_secs(20)
}
fn default_retry_statuses() -> Vec<u16> {
    vec![429, 500, 502, 503, 504]
}
fn default_true() -> bool {
    true
}
fn default_breaker_failures() -> u32 {
    5
}
fn default_failure_ratio() -> f64 {
    0.5
}
fn default_breaker_window() -> Duration {
    Duration::from_secs(30)
}
fn default_min_requests() -> u32 {
    10
}
fn default_cooldown() -> Duration {
    Duration::from_secs(30)
}
fn default_probes() -> u32 {
    1
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn routes_name_known_providers_and_keep_colons_in_models() {
        let mut c = Config::parse(
            "[[providers]]\nname = \"local\"\napi = \"openai\"\nbase_url = \"http://127.0.0.1:11434\"\n\
             [[routes]]\nmodel = \"gpt-4o\"\ntargets = [\"local:llama3.1:8b\", \"local\", \"azure:gpt-4o\"]\n",
        )
        .unwrap();
        let targets: Vec<_> = c.routes[0].parsed_targets().collect();
        assert_eq!(targets, [("local", Some("llama3.1:8b")), ("local", None), ("azure", Some("gpt-4o"))]);
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("no provider named `azure`"), "{err}");
        c.routes[0].targets.pop();
        c.validate().unwrap();
    }
}
