//! `[cache]`: how the store takes part in answering (the mode), how long an answer is fresh,
//! whose entries are shared, and which upstream failures let a stored answer be served.

use std::time::Duration;

use serde::Deserialize;

use super::values::{de_duration, de_opt_duration};

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

/// `cache.scope`: whose requests share a namespace of entries.
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

/// `[cache]`: when a stored answer is served.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Whether the store is asked before upstream, after it fails, always, or never.
    #[serde(default)]
    pub mode: CacheMode,
    /// Freshness for `cache-first`: a stored answer younger than this is served as a hit.
    #[serde(default = "default_ttl", deserialize_with = "de_duration")]
    pub ttl: Duration,
    /// Whether clients with different credentials share entries.
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
