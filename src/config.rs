//! Configuration: a TOML file (`--config FILE`, else `./holdfast.toml`, else built-in defaults
//! that serve OpenAI and Anthropic), with environment overrides. Every key is documented in
//! docs/configuration.md; unknown keys are errors that name the key and its line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

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
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default = "default_providers")]
    pub providers: Vec<ProviderConfig>,
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
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self { path: default_store_path(), retention: None, max_size: None, cache_memory: default_cache_memory() }
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
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            mode: CacheMode::default(),
            ttl: default_ttl(),
            scope: CacheScope::default(),
            serve_stale_on: default_serve_stale_on(),
            stale_if_error: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
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
    /// Longest wait for the response headers (and, for streams, the first event).
    #[serde(default = "default_first_byte_timeout", deserialize_with = "de_duration")]
    pub first_byte_timeout: Duration,
    /// Longest a whole exchange may take, streams included.
    #[serde(default = "default_timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
}

impl ProviderConfig {
    pub fn serves(&self, model: &str) -> bool {
        self.models.iter().any(|pattern| glob_match(pattern, model))
    }
}

fn default_listen() -> String {
    "127.0.0.1:8787".into()
}
fn default_max_request() -> u64 {
    10 * 1024 * 1024
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
fn default_timeout() -> Duration {
    Duration::from_secs(600)
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
    };
    vec![
        provider(
            "openai",
            Api::Openai,
            "https://api.openai.com",
            &["gpt-*", "o*", "chatgpt-*", "text-embedding-*", "davinci-*", "babbage-*", "omni-*"],
        ),
        provider("anthropic", Api::Anthropic, "https://api.anthropic.com", &["claude-*"]),
    ]
}

impl Default for Config {
    fn default() -> Self {
        // An empty document takes every default; parsing it cannot fail.
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
        let (mut config, source) = match explicit {
            Some(path) => (Self::from_file(path)?, ConfigSource::File(path.to_owned())),
            None if Path::new("holdfast.toml").is_file() => {
                let path = PathBuf::from("holdfast.toml");
                (Self::from_file(&path)?, ConfigSource::File(path))
            }
            None => (Self::default(), ConfigSource::Defaults),
        };
        config.apply_env(|name| std::env::var(name).ok());
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
        if let Some(listen) = var("HOLDFAST_LISTEN") {
            self.listen = listen;
        }
        if let Some(path) = var("HOLDFAST_STORE_PATH") {
            self.store.path = PathBuf::from(path);
        }
    }

    /// Checks everything serde cannot, reporting every problem with its key path.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if self.listen.parse::<SocketAddr>().is_err() {
            problems.push(format!("listen: `{}` is not an address like 127.0.0.1:8787", self.listen));
        }
        if self.max_request_bytes == 0 {
            problems.push("max_request_bytes: must be more than 0".into());
        }
        if self.providers.is_empty() {
            problems.push("providers: at least one [[providers]] entry is needed".into());
        }
        for (i, p) in self.providers.iter().enumerate() {
            let at = format!("providers[{i}] ({})", p.name);
            if p.name.is_empty() || !p.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
                problems.push(format!("{at}.name: use letters, digits, '-', '_' or '.'"));
            }
            if self.providers[..i].iter().any(|q| q.name == p.name) {
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
            if p.timeout < p.first_byte_timeout {
                problems.push(format!("{at}.timeout: shorter than first_byte_timeout"));
            }
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
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
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
    p[pi..].iter().all(|&c| c == '*')
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
    Ok(Duration::from_secs_f64(seconds))
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

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let err = Config::parse("listen = \"127.0.0.1:1\"\n[cache]\nmdoe = \"replay\"\n").unwrap_err();
        assert!(err.contains("mdoe") && err.contains("line 3"), "{err}");
        let err = Config::parse("[cache]\nmode = \"sometimes\"\n").unwrap_err();
        assert!(err.contains("sometimes") && err.contains("line 2"), "{err}");
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
    fn globs_durations_and_sizes() {
        assert!(glob_match("gpt-*", "gpt-4o") && glob_match("*", "") && glob_match("o?-mini", "o3-mini"));
        assert!(!glob_match("gpt-*", "xgpt-4") && !glob_match("claude-?", "claude-10"));
        assert!(glob_match("*-mini*", "gpt-4o-mini-2024"));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(7 * 86400));
        assert!(parse_duration("5 weeks").is_err());
        assert_eq!(parse_size("10MiB").unwrap(), 10 << 20);
        assert!(parse_size("10XB").is_err());
    }
}
