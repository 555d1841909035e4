//! What Holdfast tells operators about itself: `/metrics`, the dashboard's recent rates, logs
//! (`tracing` to standard error, as text for people or JSON for pipelines) and OpenTelemetry.
//!
//! - `metrics`: the counters and histograms, rendered as Prometheus text for `/metrics`.
//! - `rates`: requests per second by cache result over the last hour, and the outage clock.
//! - `spans`: the spans of one request and what they may carry; `traceparent` in and out.
//! - `export`: the OTLP/HTTP pipeline behind them (`[telemetry]`).

mod export;
pub mod metrics;
pub mod rates;
mod spans;

pub use spans::{AttemptSpan, AttemptTarget, Outcome, RequestSpan, SCHEMA_URL, StoreSpan, Traces};

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. `RUST_LOG` overrides the configured level.
pub fn init_logging(config: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour codes only for a person at a terminal, never into files or journald.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // try_init: a second call (tests, embedding) keeps the first subscriber instead of panicking.
    let _ = match config.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
