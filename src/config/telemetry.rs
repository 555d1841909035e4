//! What the service says about itself: `[log]`, its log lines, and `[telemetry]`, where
//! OpenTelemetry traces go. Traces are off unless an OTLP endpoint is named, in the file or by
//! the OpenTelemetry convention `OTEL_EXPORTER_OTLP_ENDPOINT`.

use serde::Deserialize;

/// `log.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `[log]`: how log lines look and which are written.
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

impl LogConfig {
    pub(super) fn validate(&self, problems: &mut Vec<String>) {
        if tracing_subscriber::EnvFilter::try_new(&self.level).is_err() {
            problems.push(format!("log.level: `{}` is not a filter like info or holdfast=debug", self.level));
        }
    }
}

fn default_log_level() -> String {
    "info".into()
}

/// `[telemetry]`: where OpenTelemetry spans are sent.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Base URL of an OTLP/HTTP receiver (an OpenTelemetry Collector, Jaeger, Tempo), e.g.
    /// `http://127.0.0.1:4318`; spans are sent to `{otlp_endpoint}/v1/traces`. Unset: no traces.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
}

impl TelemetryConfig {
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` overrides the file; `OTEL_SDK_DISABLED=true` turns
    /// tracing off whatever else says (both are OpenTelemetry's own variables).
    pub fn apply_env(&mut self, var: &impl Fn(&str) -> Option<String>) {
        if let Some(endpoint) = var("OTEL_EXPORTER_OTLP_ENDPOINT").filter(|v| !v.trim().is_empty()) {
            self.otlp_endpoint = Some(endpoint.trim().to_owned());
        }
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            self.otlp_endpoint = None;
        }
    }

    /// The URL spans are posted to, per the OTLP/HTTP rule for a base endpoint.
    pub fn traces_url(&self) -> Option<String> {
        let base = self.otlp_endpoint.as_deref()?;
        Some(format!("{}/v1/traces", base.trim_end_matches('/')))
    }

    pub fn validate(&self, problems: &mut Vec<String>) {
        let Some(endpoint) = &self.otlp_endpoint else { return };
        match reqwest::Url::parse(endpoint) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
                if !url.username().is_empty() || url.password().is_some() {
                    // The URL is logged at start-up; a collector's credentials belong in
                    // OTEL_EXPORTER_OTLP_HEADERS, which is never logged.
                    problems.push(
                        "telemetry.otlp_endpoint: put no credentials in the URL; use OTEL_EXPORTER_OTLP_HEADERS".into(),
                    );
                }
            }
            _ => problems.push(format!(
                "telemetry.otlp_endpoint: `{endpoint}` is not an http(s) URL like http://127.0.0.1:4318"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_names_the_endpoint_and_can_switch_tracing_off() {
        let mut config = TelemetryConfig { otlp_endpoint: Some("http://file:4318".into()) };
        config.apply_env(&|name| (name == "OTEL_EXPORTER_OTLP_ENDPOINT").then(|| "http://env:4318/".to_owned()));
        assert_eq!(config.traces_url().as_deref(), Some("http://env:4318/v1/traces"));
        config.apply_env(&|name| (name == "OTEL_SDK_DISABLED").then(|| "TRUE".to_owned()));
        assert_eq!(config.traces_url(), None);
    }

    #[test]
    fn a_bad_endpoint_is_reported() {
        for bad in ["127.0.0.1:4318", "ftp://x:21", "http://user:secret@collector:4318"] {
            let mut problems = Vec::new();
            TelemetryConfig { otlp_endpoint: Some(bad.into()) }.validate(&mut problems);
            assert_eq!(problems.len(), 1, "{bad}");
            assert!(!problems[0].contains("secret"), "{}", problems[0]);
        }
    }
}
