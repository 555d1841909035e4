//! Configuration: a TOML file (`--config FILE`, else `./holdfast.toml`, else built-in defaults
//! that serve OpenAI and Anthropic), with environment overrides. Every key is documented in
//! docs/configuration.md; unknown keys are errors that name the key and its line.
//!
//! This file holds the whole document ([`Config`]): loading, environment overrides and
//! `validate()`. Each section has its own file: `upstream` (`[[providers]]`, `[[routes]]`,
//! `[resilience]`), `cache`, `store`, `edge` (`[limits]`, `[admin]`, `[clients]`), `telemetry`
//! (`[log]`, `[telemetry]`); `values` parses durations, sizes and model globs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

mod cache;
mod edge;
mod store;
mod telemetry;
mod upstream;
mod values;
pub use cache::{CacheConfig, CacheMode, CacheScope, FailureKind, StatefulPolicy};
pub use edge::{AdminConfig, AdminListen, ClientsConfig, LimitsConfig};
pub use store::{StoreBackend, StoreConfig, StoreDurability, StoreUrl};
pub use telemetry::{LogConfig, LogFormat, TelemetryConfig};
pub use upstream::{Api, BreakerConfig, ProviderConfig, ResilienceConfig, RetryConfig, RouteConfig};
use values::de_size;
pub use values::{glob_match, parse_duration, parse_size};

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

/// The whole configuration document: one field per top-level key or `[section]`.
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
    /// Log line format and filter.
    #[serde(default)]
    pub log: LogConfig,
    /// Where and how answers are kept: a directory or Redis, retention, size, durability.
    #[serde(default)]
    pub store: StoreConfig,
    /// How the store takes part in answering: the mode, freshness and when to serve stale.
    #[serde(default)]
    pub cache: CacheConfig,
    /// The deadline over a request's whole chain of attempts, and stream rescue.
    #[serde(default)]
    pub resilience: ResilienceConfig,
    /// The upstreams, each with its dialect, timeouts, retries and breaker. Absent: OpenAI and
    /// Anthropic with the client's own credentials.
    #[serde(default = "upstream::default_providers")]
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

fn default_listen() -> String {
    "127.0.0.1:8787".into()
}
fn default_max_request() -> u64 {
    10 * 1024 * 1024
}
fn default_max_response() -> u64 {
    64 * 1024 * 1024
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

    /// Checks everything serde cannot, reporting every problem with its key path.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if self.listen.parse::<SocketAddr>().is_err() {
            problems.push(format!("listen: `{}` is not an address like 127.0.0.1:8787", self.listen));
        }
        self.log.validate(&mut problems);
        if self.max_request_bytes == 0 {
            problems.push("max_request_bytes: must be more than 0".into());
        }
        if self.max_response_bytes == 0 {
            problems.push("max_response_bytes: must be more than 0".into());
        }
        if self.providers.is_empty() {
            problems.push("providers: at least one [[providers]] entry is needed".into());
        }
        self.store.validate(&mut problems);
        upstream::validate_providers(&self.providers, &mut problems);
        upstream::validate_routes(&self.routes, &self.providers, &mut problems);
        self.resilience.validate(&mut problems);
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

    /// The commented example operators copy must stay valid as the configuration evolves.
    #[test]
    fn holdfast_example_toml_is_valid() {
        let example = Config::parse(include_str!("../../holdfast.example.toml")).unwrap();
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
}
