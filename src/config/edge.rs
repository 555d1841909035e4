//! Configuration of Holdfast's edge: connection and request limits (`[limits]`), the admin
//! listener (`[admin]`) and client authentication (`[clients]`). Defaults are safe on a public
//! network; docs/security.md explains each.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::values::{de_duration, de_size};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Longest a connection may take to send a complete request head; slow-header
    /// (slowloris) connections are closed after it.
    #[serde(default = "default_header_read_timeout", deserialize_with = "de_duration")]
    pub header_read_timeout: Duration,
    /// Longest a keep-alive connection may sit with no request in flight before it is closed.
    /// hyper also starts its header timer while a connection waits for its next request, so
    /// the effective limit is the shorter of this and `header_read_timeout`.
    #[serde(default = "default_idle_timeout", deserialize_with = "de_duration")]
    pub idle_timeout: Duration,
    /// Longest silence between chunks while a request body is being received.
    #[serde(default = "default_body_read_timeout", deserialize_with = "de_duration")]
    pub body_read_timeout: Duration,
    /// Open client connections at most; further ones get a 503 with `Retry-After` and are
    /// closed. Also held below what the process's open-file limit allows.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Requests being answered at once (a stream counts until its last byte); more are shed
    /// with a 503 in the client's dialect.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Bytes of request bodies being received at once, across all connections; a body that
    /// would pass it is refused with a 503, so slow uploads cannot hold unbounded memory.
    #[serde(default = "default_max_body_buffer", deserialize_with = "de_size")]
    pub max_body_buffer: u64,
    /// How long a shutdown waits for in-flight requests before it cuts them.
    #[serde(default = "default_shutdown_timeout", deserialize_with = "de_duration")]
    pub shutdown_timeout: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: default_header_read_timeout(),
            idle_timeout: default_idle_timeout(),
            body_read_timeout: default_body_read_timeout(),
            max_connections: default_max_connections(),
            max_in_flight: default_max_in_flight(),
            max_body_buffer: default_max_body_buffer(),
            shutdown_timeout: default_shutdown_timeout(),
        }
    }
}

impl LimitsConfig {
    pub(super) fn validate(&self, problems: &mut Vec<String>) {
        for (name, value) in [
            ("header_read_timeout", self.header_read_timeout),
            ("idle_timeout", self.idle_timeout),
            ("body_read_timeout", self.body_read_timeout),
        ] {
            if value.is_zero() {
                problems.push(format!("limits.{name}: must be longer than 0s"));
            }
        }
        if self.max_body_buffer == 0 {
            problems.push("limits.max_body_buffer: must be at least 1 byte".into());
        }
        if self.max_connections == 0 || self.max_in_flight == 0 {
            problems.push("limits: max_connections and max_in_flight must be at least 1".into());
        }
    }
}

/// Where the admin API (and the dashboard) listens: apart from the proxy, so a client that can
/// reach the proxy cannot even try the admin token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// `host:port`, or a Unix socket path (`/run/holdfast/admin.sock` or `unix:/…`). The admin
    /// listener only runs when `HOLDFAST_ADMIN_TOKEN` is set.
    #[serde(default = "default_admin_listen")]
    pub listen: String,
    /// PEM certificate chain for TLS on the admin listener; with `tls_key`.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS on the admin listener.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// Largest bundle `cache import --server` may upload.
    #[serde(default = "default_max_bundle", deserialize_with = "de_size")]
    pub max_bundle_bytes: u64,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self { listen: default_admin_listen(), tls_cert: None, tls_key: None, max_bundle_bytes: default_max_bundle() }
    }
}

/// An admin listener address, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminListen {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl AdminConfig {
    pub fn parsed_listen(&self) -> Option<AdminListen> {
        let text = self.listen.trim();
        if let Some(path) = text.strip_prefix("unix:") {
            return (!path.is_empty()).then(|| AdminListen::Unix(PathBuf::from(path)));
        }
        if text.starts_with('/') {
            return Some(AdminListen::Unix(PathBuf::from(text)));
        }
        text.parse().ok().map(AdminListen::Tcp)
    }

    pub fn tls(&self) -> bool {
        self.tls_cert.is_some()
    }

    pub(super) fn validate(&self, problems: &mut Vec<String>) {
        if self.parsed_listen().is_none() {
            problems.push(format!(
                "admin.listen: `{}` is neither an address like 127.0.0.1:8788 nor a socket path",
                self.listen
            ));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            problems.push("admin: tls_cert and tls_key go together".into());
        }
        if self.max_bundle_bytes == 0 {
            problems.push("admin.max_bundle_bytes: must be more than 0".into());
        }
    }
}

/// Client authentication: the keys Holdfast accepts from its own clients.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientsConfig {
    /// An environment variable holding the accepted client keys, separated by commas or
    /// whitespace. When set, every proxy request must present one (`Authorization: Bearer` or
    /// `x-api-key`); providers are then asked with their own `api_key_env` key.
    #[serde(default)]
    pub keys_env: Option<String>,
}

fn default_header_read_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_body_read_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_max_connections() -> usize {
    20_000
}
fn default_max_in_flight() -> usize {
    10_000
}
fn default_max_body_buffer() -> u64 {
    32 * 1024 * 1024
}
fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_admin_listen() -> String {
    "127.0.0.1:8788".to_owned()
}
fn default_max_bundle() -> u64 {
    16 << 30
}
