//! Configuration: a TOML file (`--config FILE`, else `./holdfast.toml`, else built-in defaults
//! that serve OpenAI and Anthropic), with environment overrides. Every key is documented in
//! docs/configuration.md; unknown keys are errors that name the key and its line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

mod edge;
mod telemetry;
pub use edge::{AdminConfig, AdminListen, ClientsConfig, LimitsConfig};
pub use telemetry::TelemetryConfig;

/// Why a configuration could not be used. Start-up only; never produced per request.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<String>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the proxy listens on.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Largest request body accepted, e.g. "10MiB".
    #[serde(default = "default_max_request", deserialize_with = "de_size")]
    pub max_request_bytes: u64,
    /// Largest answer stored, e.g. "64MiB". A larger one is still relayed to the client, but
    /// neither buffered whole nor stored.
    #[serde(default = "default_max_response", deserialize_with = "de_size")]
    pub max_response_bytes: u64,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default)]
    pub resilience: ResilienceConfig,
    #[serde(default = "default_providers")]
    pub providers: Vec<ProviderConfig>,
    /// Failover routes: a model name (glob) to ordered `provider:model` targets.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Connection, request and shutdown limits of the proxy listener.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// The admin listener, apart from the proxy's.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Client authentication.
    #[serde(default)]
    pub clients: ClientsConfig,
    /// OpenTelemetry traces (OTLP over HTTP).
    #[serde(default)]
    pub telemetry: TelemetryConfig,
}

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
    #[serde(default = "default_breaker_window", deserialize_with = "de_duration")]
    pub window: Duration,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` for people, `json` for log pipelines.
    #[serde(default)]
    pub format: LogFormat,
    /// A tracing filter such as `info` or `holdfast=debug`; `RUST_LOG` overrides it.
    #[serde(default = "default_log_level")]
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Text, level: default_log_level() }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Directory of the store; created on first `serve` if missing.
    #[serde(default = "default_store_path")]
    pub path: PathBuf,
    /// Entries are deleted this long after they were stored, e.g. "90d". Absent: kept.
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub retention: Option<Duration>,
    /// Size budget for stored answers, e.g. "20GiB"; least recently served go first.
    #[serde(default, deserialize_with = "de_opt_size")]
    pub max_size: Option<u64>,
    /// Memory for the database's page cache, e.g. "64MiB".
    #[serde(default = "default_cache_memory", deserialize_with = "de_size")]
    pub cache_memory: u64,
    /// When a stored answer is on disk: `durable` (fsync'd before the client's last byte) or
    /// `relaxed` (within 200 ms after; a crash may lose that window).
    #[serde(default)]
    pub durability: StoreDurability,
    /// `embedded` (a directory at `path`, one process) or `redis` (Redis / Valkey at `url`,
    /// shared by every replica).
    #[serde(default)]
    pub backend: StoreBackend,
    /// Redis URL for `backend = "redis"`: `redis://` or `rediss://` (TLS). A password in it is
    /// a secret: never logged. `HOLDFAST_STORE_URL` overrides it.
    #[serde(default)]
    pub url: Option<StoreUrl>,
    /// Prepended to every Redis key, so one Redis can hold several stores.
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// Redis Cluster node URLs instead of `url` (any reachable node finds the others). A
    /// password in them is a secret: never logged. `HOLDFAST_STORE_CLUSTER` (comma-separated)
    /// overrides them.
    #[serde(default)]
    pub cluster: Vec<StoreUrl>,
    /// Longest a stored-answer lookup in Redis may take before the request goes on without
    /// it, e.g. "50ms". Writes wait ten times as long (at least 500 ms).
    #[serde(default = "default_store_timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// Memory for recently served entries of a Redis store, kept sealed in each replica, e.g.
    /// "32MiB"; 0 turns it off. Unused by the embedded store.
    #[serde(default = "default_hot_cache_bytes", deserialize_with = "de_size")]
    pub hot_cache_bytes: u64,
    /// Longest a replica serves an entry from that memory before reading Redis again: the
    /// bound on how late a purge or expiry elsewhere is noticed, e.g. "1s".
    #[serde(default = "default_hot_cache_max_age", deserialize_with = "de_duration")]
    pub hot_cache_max_age: Duration,
    /// The embedded database engine: `sled` (default), `redb` or `fjall` (each of the last two
    /// needs a build with its cargo feature; docs/storage.md compares them). A new store is
    /// created with it; an existing store must have been created with it. Absent: a new store
    /// gets sled, an existing one opens with the engine it was created with.
    #[serde(default)]
    pub engine: Option<crate::store::Engine>,
}

/// `store.backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum StoreBackend {
    #[default]
    Embedded,
    Redis,
}

/// `store.url`: may carry a password, so `Debug` shows it without user and password.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct StoreUrl(pub zeroize::Zeroizing<String>);

impl std::fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (scheme, rest) = self.0.split_once("://").unwrap_or(("?", ""));
        let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
        write!(f, "StoreUrl({scheme}://{host})")
    }
}

impl StoreConfig {
    /// Where and how to reach the shared store, when `backend = "redis"`. `ttl` is the Redis
    /// TTL for entries without a retention deadline (see `shared_ttl`).
    pub fn redis_target(&self, ttl: Option<Duration>) -> Option<crate::store::RedisTarget> {
        if self.backend != StoreBackend::Redis {
            return None;
        }
        Some(crate::store::RedisTarget {
            url: self.url.as_ref().map(|u| u.0.clone()).unwrap_or_default(),
            cluster: self.cluster.iter().map(|u| u.0.clone()).collect(),
            key_prefix: self.key_prefix.clone(),
            timeout: self.timeout,
            ttl,
            hot_cache: crate::store::HotCacheLimits { bytes: self.hot_cache_bytes, max_age: self.hot_cache_max_age },
        })
    }
}

fn default_key_prefix() -> String {
    "holdfast:".into()
}

fn default_store_timeout() -> Duration {
    Duration::from_millis(50)
}

/// Room for about 16,000 sealed 1 KiB answers (≈ 2 KB each with bookkeeping): as many
/// distinct entries as one replica can read from Redis within the default 1 s maximum age at
/// the peak measured hit rate (≈ 16,000/s, docs/performance.md, "Redis-backed store"), so
/// it is rarely full, and a replica with few hot keys uses a fraction of it.
fn default_hot_cache_bytes() -> u64 {
    32 * 1024 * 1024
}

fn default_hot_cache_max_age() -> Duration {
    Duration::from_secs(1)
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            path: default_store_path(),
            retention: None,
            max_size: None,
            cache_memory: default_cache_memory(),
            durability: StoreDurability::default(),
            backend: StoreBackend::default(),
            url: None,
            key_prefix: default_key_prefix(),
            cluster: Vec::new(),
            timeout: default_store_timeout(),
            hot_cache_bytes: default_hot_cache_bytes(),
            hot_cache_max_age: default_hot_cache_max_age(),
            engine: None,
        }
    }
}

/// `store.durability`; see docs/operations.md for what each guarantees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum StoreDurability {
    #[default]
    Durable,
    Relaxed,
}

impl StoreDurability {
    pub fn to_store(self) -> crate::store::Durability {
        match self {
            Self::Durable => crate::store::Durability::Durable,
            Self::Relaxed => crate::store::Durability::Relaxed,
        }
    }
}

/// How the store takes part in answering; see docs/configuration.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum CacheMode {
    /// Always ask upstream; serve the stored answer when upstream fails.
    #[default]
    Fallback,
    /// Serve a fresh stored answer without asking upstream; otherwise as fallback.
    CacheFirst,
    /// Never ask upstream.
    Replay,
    /// Always ask upstream and store; never serve from the store.
    Record,
    /// Plain proxy.
    Off,
}

impl CacheMode {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "fallback" => Self::Fallback,
            "cache-first" => Self::CacheFirst,
            "replay" => Self::Replay,
            "record" => Self::Record,
            "off" => Self::Off,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fallback => "fallback",
            Self::CacheFirst => "cache-first",
            Self::Replay => "replay",
            Self::Record => "record",
            Self::Off => "off",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CacheScope {
    /// Entries are scoped to the client's credential (the default; tenants never share).
    #[default]
    Credential,
    /// One namespace for every client.
    Shared,
}

/// What the proxy does with a request whose answer depends on provider-side state
/// (`normalize::stateful`). Neither choice ever serves such an answer as a fresh hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum StatefulPolicy {
    /// Not stored and never served from the store (the default).
    #[default]
    Bypass,
    /// Stored, and served only when upstream fails (or in `replay` mode).
    ServeStale,
}

/// Upstream failures after which a stored answer may be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureKind {
    /// Connection refused, reset, or DNS failure.
    Connect,
    /// Connect, first-byte or total timeout.
    Timeout,
    /// Any 5xx status.
    #[serde(rename = "5xx")]
    Status5xx,
    /// 429 Too Many Requests.
    #[serde(rename = "429")]
    Status429,
    /// A 2xx answer whose body is not what the dialect promises (e.g. malformed JSON).
    Invalid,
    /// A provider using `api_key_env` refused Holdfast's own key (401/403) or model (404).
    Auth,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    #[serde(default)]
    pub mode: CacheMode,
    /// Freshness for `cache-first`: a stored answer younger than this is served as a hit.
    #[serde(default = "default_ttl", deserialize_with = "de_duration")]
    pub ttl: Duration,
    #[serde(default)]
    pub scope: CacheScope,
    /// Which upstream failures let a stored answer be served.
    #[serde(default = "default_serve_stale_on")]
    pub serve_stale_on: Vec<FailureKind>,
    /// Oldest stored answer served when upstream fails (RFC 5861 stale-if-error). Absent: any age.
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub stale_if_error: Option<Duration>,
    /// Requests that depend on provider-side state: `bypass` (default) or `serve-stale`.
    #[serde(default)]
    pub stateful: StatefulPolicy,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            mode: CacheMode::default(),
            ttl: default_ttl(),
            scope: CacheScope::default(),
            serve_stale_on: default_serve_stale_on(),
            stale_if_error: None,
            stateful: StatefulPolicy::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Api {
    Openai,
    Anthropic,
}

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
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// Anthropic providers: the `anthropic-version` sent when the client sends none; it also
    /// picks the rules a translated request follows. Absent: `translate::DEFAULT_ANTHROPIC_VERSION`.
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

fn default_listen() -> String {
    "127.0.0.1:8787".into()
}
fn default_max_request() -> u64 {
    10 * 1024 * 1024
}
fn default_max_response() -> u64 {
    64 * 1024 * 1024
}
fn default_log_level() -> String {
    "info".into()
}
fn default_store_path() -> PathBuf {
    PathBuf::from("holdfast-data")
}
fn default_cache_memory() -> u64 {
    64 * 1024 * 1024
}
fn default_ttl() -> Duration {
    Duration::from_secs(3600)
}
fn default_serve_stale_on() -> Vec<FailureKind> {
    vec![
        FailureKind::Connect,
        FailureKind::Timeout,
        FailureKind::Status5xx,
        FailureKind::Status429,
        FailureKind::Invalid,
        FailureKind::Auth,
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

/// OpenAI and Anthropic, with the client's own credentials forwarded.
fn default_providers() -> Vec<ProviderConfig> {
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

impl Default for Config {
    fn default() -> Self {
        #[allow(clippy::expect_used, reason = "an empty document takes every default; a unit test parses it")]
        toml::from_str("").expect("defaults parse")
    }
}

/// Where the configuration came from, for the start-up log line.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    File(PathBuf),
    Defaults,
}

impl std::fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(p) => write!(f, "{}", p.display()),
            Self::Defaults => f.write_str("built-in defaults (no holdfast.toml here)"),
        }
    }
}

impl Config {
    /// Loads `explicit` if given, else `./holdfast.toml` if present, else the defaults; then
    /// applies environment overrides and validates.
    pub fn load(explicit: Option<&Path>) -> Result<(Self, ConfigSource), ConfigError> {
        Self::load_with(explicit, |name| std::env::var(name).ok())
    }

    /// As [`Config::load`], with environment overrides read through `var` (the binary passes
    /// the secret variables it has already taken out of the environment).
    pub fn load_with(
        explicit: Option<&Path>,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<(Self, ConfigSource), ConfigError> {
        let (mut config, source) = match explicit {
            Some(path) => (Self::from_file(path)?, ConfigSource::File(path.to_owned())),
            None if Path::new("holdfast.toml").is_file() => {
                let path = PathBuf::from("holdfast.toml");
                (Self::from_file(&path)?, ConfigSource::File(path))
            }
            None => (Self::default(), ConfigSource::Defaults),
        };
        config.apply_env(var);
        config.validate()?;
        Ok((config, source))
    }

    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::parse(&text).map_err(|message| ConfigError::Parse { path: path.to_owned(), message })
    }

    /// Parses TOML text; the error names the key and line (toml reports both).
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())
    }

    /// `HOLDFAST_LISTEN` and `HOLDFAST_STORE_PATH` override the file, so one file serves many
    /// instances. Secrets come only from the environment (see `api_key_env`).
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) {
        // An empty variable is treated as unset: `HOLDFAST_LISTEN= holdfast serve` should not
        // fail with "`` is not an address".
        if let Some(listen) = var("HOLDFAST_LISTEN").filter(|v| !v.is_empty()) {
            self.listen = listen;
        }
        if let Some(path) = var("HOLDFAST_STORE_PATH").filter(|v| !v.is_empty()) {
            self.store.path = PathBuf::from(path);
        }
        if let Some(url) = var("HOLDFAST_STORE_URL").filter(|v| !v.is_empty()) {
            self.store.url = Some(StoreUrl(zeroize::Zeroizing::new(url)));
        }
        if let Some(nodes) = var("HOLDFAST_STORE_CLUSTER").map(zeroize::Zeroizing::new).filter(|v| !v.is_empty()) {
            self.store.cluster =
                nodes.split(',').map(|n| StoreUrl(zeroize::Zeroizing::new(n.trim().to_owned()))).collect();
        }
        if let Some(listen) = var("HOLDFAST_ADMIN_LISTEN").filter(|v| !v.is_empty()) {
            self.admin.listen = listen;
        }
        self.telemetry.apply_env(&var);
    }

    fn validate_store(&self, problems: &mut Vec<String>) {
        let store = &self.store;
        if let Some(engine) = store.engine {
            if store.backend == StoreBackend::Redis {
                problems.push(format!(
                    "store.engine: \"{engine}\" is an embedded engine; remove it with backend = \"redis\""
                ));
            } else if !engine.is_built() {
                problems.push(format!(
                    "store.engine: \"{engine}\" is not in this build; rebuild with `cargo build --release --features {}`",
                    engine.feature().unwrap_or_default()
                ));
            }
        }
        if store.backend != StoreBackend::Redis {
            if !store.cluster.is_empty() {
                problems.push("store.cluster: needs backend = \"redis\"".into());
            }
            return;
        }
        let is_redis_url = |url: &str| url.starts_with("redis://") || url.starts_with("rediss://");
        if !store.cluster.is_empty() {
            if store.url.as_ref().is_some_and(|u| !u.0.is_empty()) {
                problems.push(
                    "store.url and store.cluster: give one of them (a URL for one primary, node URLs for a cluster)"
                        .into(),
                );
            }
            if store.cluster.iter().any(|u| !is_redis_url(&u.0)) {
                problems.push("store.cluster: every node must be a redis:// or rediss:// URL".into());
            }
            if store.key_prefix.contains(['{', '}']) {
                problems.push(
                    "store.key_prefix: must not contain { or } on a cluster (they would change the keys' hash slots)"
                        .into(),
                );
            }
        }
        match store.url.as_ref().map(|u| u.0.as_str()) {
            _ if !store.cluster.is_empty() => {}
            None | Some("") => problems.push(
                "store.url: backend = \"redis\" needs a URL like redis://127.0.0.1:6379/0 (or set HOLDFAST_STORE_URL)"
                    .into(),
            ),
            Some(url) if !is_redis_url(url) => {
                problems.push("store.url: must start with redis:// or rediss:// (TLS)".into());
            }
            Some(_) => {}
        }
        if store.key_prefix.is_empty() {
            problems.push("store.key_prefix: must not be empty (it keeps other data in the same Redis apart)".into());
        }
        if store.timeout.is_zero() || store.timeout > Duration::from_secs(10) {
            problems.push("store.timeout: must be more than 0 and at most 10s (default 50ms)".into());
        }
        if store.hot_cache_bytes > 0
            && (store.hot_cache_max_age.is_zero() || store.hot_cache_max_age > Duration::from_secs(10))
        {
            problems.push(
                "store.hot_cache_max_age: must be more than 0 and at most 10s (default 1s); it bounds how late a \
                 purge is noticed. To turn the hot cache off, set store.hot_cache_bytes = 0"
                    .into(),
            );
        }
    }

    /// Checks everything serde cannot, reporting every problem with its key path.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if self.listen.parse::<SocketAddr>().is_err() {
            problems.push(format!("listen: `{}` is not an address like 127.0.0.1:8787", self.listen));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            problems.push(format!("log.level: `{}` is not a filter like info or holdfast=debug", self.log.level));
        }
        if self.max_request_bytes == 0 {
            problems.push("max_request_bytes: must be more than 0".into());
        }
        if self.max_response_bytes == 0 {
            problems.push("max_response_bytes: must be more than 0".into());
        }
        if self.providers.is_empty() {
            problems.push("providers: at least one [[providers]] entry is needed".into());
        }
        self.validate_store(&mut problems);
        for (i, p) in self.providers.iter().enumerate() {
            let at = format!("providers[{i}] ({})", p.name);
            if p.name.is_empty() || !p.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
                problems.push(format!("{at}.name: use letters, digits, '-', '_' or '.'"));
            }
            if self.providers.iter().take(i).any(|q| q.name == p.name) {
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
        for (i, route) in self.routes.iter().enumerate() {
            if route.targets.is_empty() {
                problems.push(format!("routes[{i}] ({}).targets: list at least one provider:model", route.model));
            }
            for (provider, model) in route.parsed_targets() {
                if !self.providers.iter().any(|p| p.name == provider) {
                    problems.push(format!("routes[{i}] ({}).targets: no provider named `{provider}`", route.model));
                }
                if model == Some("") {
                    problems.push(format!("routes[{i}] ({}).targets: `{provider}:` names no model", route.model));
                }
            }
        }
        if self.resilience.stale_reserve >= self.resilience.deadline {
            problems.push("resilience.stale_reserve: must be shorter than resilience.deadline".into());
        }
        self.limits.validate(&mut problems);
        self.admin.validate(&mut problems);
        self.telemetry.validate(&mut problems);
        if self.clients.keys_env.as_deref().is_some_and(|v| v.trim().is_empty()) {
            problems.push("clients.keys_env: name an environment variable".into());
        }
        if problems.is_empty() { Ok(()) } else { Err(ConfigError::Invalid(problems)) }
    }

    pub fn listen_addr(&self) -> SocketAddr {
        // validate() has checked it; the fallback only guards direct construction in tests.
        self.listen.parse().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8787)))
    }
}

/// `*` matches any run of characters, `?` any one; everything else literally.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while let Some(&tc) = t.get(ti) {
        let pc = p.get(pi).copied();
        if pc.is_some_and(|c| c == '?' || c == tc) {
            pi += 1;
            ti += 1;
        } else if pc == Some('*') {
            backtrack = Some((pi, ti));
            pi += 1;
        } else if let Some((star, matched)) = backtrack {
            pi = star + 1;
            ti = matched + 1;
            backtrack = Some((star, matched + 1));
        } else {
            return false;
        }
    }
    p.iter().skip(pi).all(|&c| c == '*')
}

/// Parses "500ms", "30s", "5m", "2h", "7d" (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("`{text}` is not a duration like 30s, 5m, 2h or 7d"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86400.0,
        other => {
            return Err(format!("unknown duration unit `{other}` in `{text}` (use ms, s, m, h or d)"));
        }
    };
    Duration::try_from_secs_f64(seconds)
        .map_err(|_| format!("`{text}` is not a usable duration (too large or negative)"))
}

/// Parses "512", "64KiB", "10MiB", "20GiB" (also KB/MB/GB as powers of 1000).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: u64 = number.parse().map_err(|_| format!("`{text}` is not a size like 64MiB"))?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!("unknown size unit `{other}` in `{text}` (use KiB, MiB, GiB)"));
        }
    };
    value.checked_mul(factor).ok_or_else(|| format!("`{text}` is too large"))
}

fn de_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    parse_duration(&String::deserialize(d)?).map_err(serde::de::Error::custom)
}

fn de_opt_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_duration(d).map(Some)
}

/// Sizes may be written as a number of bytes or as a string with a unit.
fn de_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    match Size::deserialize(d)? {
        Size::Bytes(n) => Ok(n),
        Size::Text(t) => parse_size(&t).map_err(serde::de::Error::custom),
    }
}

fn de_opt_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    de_size(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_engine_names_an_embedded_engine_this_build_has() {
        let base =
            "[[providers]]\nname = \"p\"\napi = \"openai\"\nbase_url = \"http://127.0.0.1:1\"\nmodels = [\"*\"]\n";
        let c = Config::parse(&format!("[store]\nengine = \"sled\"\n{base}")).unwrap();
        assert_eq!(c.store.engine, Some(crate::store::Engine::Sled));
        c.validate().unwrap();
        assert!(Config::parse(&format!("[store]\nengine = \"rocksdb\"\n{base}")).is_err());
        let c = Config::parse(&format!(
            "[store]\nbackend = \"redis\"\nengine = \"sled\"\nurl = \"redis://127.0.0.1:1\"\n{base}"
        ))
        .unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("store.engine"));
        let c = Config::parse(&format!("[store]\nengine = \"redb\"\n{base}")).unwrap();
        assert_eq!(c.validate().is_ok(), cfg!(feature = "engine-redb"));
    }

    #[test]
    fn defaults_serve_openai_and_anthropic() {
        let c = Config::default();
        assert_eq!(c.listen, "127.0.0.1:8787");
        assert_eq!(c.cache.mode, CacheMode::Fallback);
        assert_eq!(c.store.path, PathBuf::from("holdfast-data"));
        let names: Vec<_> = c.providers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["openai", "anthropic"]);
        assert!(c.providers[0].serves("gpt-4o") && c.providers[0].serves("o3-mini"));
        assert!(c.providers[1].serves("claude-haiku-4-5") && !c.providers[1].serves("gpt-4o"));
        c.validate().unwrap();
    }

    #[test]
    fn the_documented_example_parses() {
        let text = r#"
            listen = "127.0.0.1:8787"
            [store]
            path = "holdfast-data"
            [cache]
            mode = "fallback"
            [[providers]]
            name = "openai"
            api = "openai"
            base_url = "https://api.openai.com"
            models = ["gpt-*", "o*", "text-embedding-*"]
        "#;
        let c = Config::parse(text).unwrap();
        assert_eq!(c.providers.len(), 1);
        c.validate().unwrap();
    }

    /// The commented example operators copy must stay valid as the configuration evolves.
    #[test]
    fn holdfast_example_toml_is_valid() {
        let example = Config::parse(include_str!("../holdfast.example.toml")).unwrap();
        example.validate().unwrap();
        assert!(example.providers.len() >= 3, "the example shows several providers");
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let err = Config::parse("listen = \"127.0.0.1:1\"\n[cache]\nmdoe = \"replay\"\n").unwrap_err();
        assert!(err.contains("mdoe") && err.contains("line 3"), "{err}");
        let err = Config::parse("[cache]\nmode = \"sometimes\"\n").unwrap_err();
        assert!(err.contains("sometimes") && err.contains("line 2"), "{err}");
    }

    #[test]
    fn a_redis_store_needs_a_url_and_never_shows_its_password() {
        let base = "[[providers]]\nname = \"a\"\napi = \"openai\"\nbase_url = \"http://x\"\nmodels = [\"*\"]\n";
        let c = Config::parse(&format!("[store]\nbackend = \"redis\"\n{base}")).unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("store.url"), "{err}");
        let mut c = Config::parse(&format!("[store]\nbackend = \"redis\"\n{base}")).unwrap();
        c.apply_env(|v| (v == "HOLDFAST_STORE_URL").then(|| "redis://holdfast:hunter2@10.0.0.1:6379/0".to_owned()));
        c.validate().unwrap();
        assert_eq!(c.store.timeout, Duration::from_millis(50));
        assert_eq!(c.store.key_prefix, "holdfast:");
        let shown = format!("{c:?}");
        assert!(shown.contains("10.0.0.1:6379") && !shown.contains("hunter2"), "{shown}");
        let target = c.store.redis_target(None).unwrap();
        assert!(!format!("{target:?}").contains("hunter2"));
        assert!(Config::parse(&format!("[store]\nbackend = \"memcached\"\n{base}")).is_err());
    }

    #[test]
    fn the_hot_cache_is_on_by_default_and_its_maximum_age_stays_small() {
        let base = "[[providers]]\nname = \"a\"\napi = \"openai\"\nbase_url = \"http://x\"\nmodels = [\"*\"]\n";
        let parse = |store: &str| {
            Config::parse(&format!("[store]\nbackend = \"redis\"\nurl = \"redis://a:1\"\n{store}\n{base}")).unwrap()
        };
        let c = parse("");
        c.validate().unwrap();
        let limits = c.store.redis_target(None).unwrap().hot_cache;
        assert_eq!((limits.bytes, limits.max_age), (32 << 20, Duration::from_secs(1)));
        let c = parse("hot_cache_bytes = \"256MiB\"\nhot_cache_max_age = \"250ms\"");
        c.validate().unwrap();
        assert_eq!(c.store.hot_cache_bytes, 256 << 20);
        let err = parse("hot_cache_max_age = \"1m\"").validate().unwrap_err().to_string();
        assert!(err.contains("store.hot_cache_max_age"), "{err}");
        // Turned off, its age does not matter.
        parse("hot_cache_bytes = 0\nhot_cache_max_age = \"1m\"").validate().unwrap();
    }

    #[test]
    fn a_redis_cluster_is_named_by_its_nodes_and_never_shows_their_passwords() {
        let base = "[[providers]]\nname = \"a\"\napi = \"openai\"\nbase_url = \"http://x\"\nmodels = [\"*\"]\n";
        let parse = |store: &str| Config::parse(&format!("[store]\n{store}\n{base}")).unwrap();
        let nodes = "cluster = [\"redis://:hunter2@10.0.0.1:6379\", \"rediss://10.0.0.2:6380\"]";
        let c = parse(&format!("backend = \"redis\"\n{nodes}"));
        c.validate().unwrap();
        let target = c.store.redis_target(None).unwrap();
        assert_eq!(target.cluster.len(), 2);
        for shown in [format!("{c:?}"), format!("{target:?}"), target.location()] {
            assert!(shown.contains("10.0.0.1:6379") && !shown.contains("hunter2"), "{shown}");
        }
        let err = parse(&format!("backend = \"redis\"\nurl = \"redis://a:1\"\n{nodes}")).validate().unwrap_err();
        assert!(err.to_string().contains("store.url and store.cluster"), "{err}");
        let err = parse("backend = \"redis\"\ncluster = [\"http://a:1\"]").validate().unwrap_err();
        assert!(err.to_string().contains("store.cluster"), "{err}");
        let err = parse(&format!("backend = \"redis\"\nkey_prefix = \"{{hf}}:\"\n{nodes}")).validate().unwrap_err();
        assert!(err.to_string().contains("store.key_prefix"), "{err}");
        let err = parse(nodes).validate().unwrap_err();
        assert!(err.to_string().contains("needs backend"), "{err}");
        let mut c = parse("backend = \"redis\"");
        c.apply_env(|v| (v == "HOLDFAST_STORE_CLUSTER").then(|| "redis://10.0.0.1:1, redis://10.0.0.2:2".to_owned()));
        c.validate().unwrap();
        assert_eq!(c.store.redis_target(None).unwrap().cluster.len(), 2);
    }

    #[test]
    fn validate_reports_every_problem_with_its_path() {
        let mut c = Config::parse(
            "listen = \"nowhere\"\n[[providers]]\nname = \"a\"\napi = \"openai\"\nbase_url = \"ftp://x\"\nmodels = []\n",
        )
        .unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("listen:") && err.contains("providers[0] (a).base_url") && err.contains(".models"),
            "{err}"
        );
        c.apply_env(|v| (v == "HOLDFAST_LISTEN").then(|| "0.0.0.0:9000".to_owned()));
        assert_eq!(c.listen, "0.0.0.0:9000");
    }

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

    #[test]
    fn globs_durations_and_sizes() {
        assert!(glob_match("gpt-*", "gpt-4o") && glob_match("*", "") && glob_match("o?-mini", "o3-mini"));
        assert!(!glob_match("gpt-*", "xgpt-4") && !glob_match("claude-?", "claude-10"));
        assert!(glob_match("*-mini*", "gpt-4o-mini-2024"));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(7 * 86400));
        assert!(parse_duration("5 weeks").is_err());
        assert!(parse_duration("100000000000000000000s").is_err(), "overflow must be an error, not a panic");
        assert_eq!(parse_size("10MiB").unwrap(), 10 << 20);
        assert!(parse_size("10XB").is_err());
    }
}
