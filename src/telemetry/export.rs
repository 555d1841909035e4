//! The OTLP/HTTP (protobuf) trace pipeline: the SDK's batch processor on its own thread, so a
//! request only ever puts its finished spans in a bounded queue (full: they are dropped and
//! the SDK says so), and a slow or absent collector can neither block nor fail a request.

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use opentelemetry::InstrumentationScope;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{BatchConfig, BatchSpanProcessor, Sampler, SdkTracerProvider};

use super::spans::{SCHEMA_URL, Traces};
use crate::config::TelemetryConfig;

/// Longest one export may take; the batch thread waits for it, no request does.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

impl Traces {
    /// The pipeline `config` asks for, or tracing off when it names no endpoint. A pipeline
    /// that cannot be built is logged and leaves tracing off: traces never stop the proxy.
    pub fn from_config(config: &TelemetryConfig) -> Self {
        let Some(url) = config.traces_url() else { return Self::off() };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(url.clone())
            .with_timeout(EXPORT_TIMEOUT)
            .with_http_client(BlockingClient::default())
            .build();
        let exporter = match exporter {
            Ok(exporter) => exporter,
            Err(e) => {
                tracing::error!(endpoint = %url, error = %e, "cannot export traces; tracing is off");
                return Self::off();
            }
        };
        // Defaults (a 2048-span queue, a batch every 5 s), or the OTEL_BSP_* variables.
        let processor = BatchSpanProcessor::builder(exporter).with_batch_config(BatchConfig::default()).build();
        let service = std::env::var("OTEL_SERVICE_NAME").ok().filter(|s| !s.is_empty());
        let resource = Resource::builder()
            .with_service_name(service.unwrap_or_else(|| "holdfast".to_owned()))
            .with_attribute(opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            // A client's sampling decision stands; Holdfast's own roots are all sampled.
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
            .with_resource(resource)
            .build();
        let scope = InstrumentationScope::builder("holdfast")
            .with_version(env!("CARGO_PKG_VERSION"))
            .with_schema_url(SCHEMA_URL)
            .build();
        let tracer = provider.tracer_with_scope(scope);
        tracing::info!(endpoint = %url, "exporting traces over OTLP/HTTP");
        Self::new(provider, tracer)
    }
}

/// The exporter's HTTP client: reqwest's blocking client, made on the batch thread that uses
/// it (a blocking client may not be built or dropped on an async worker). Holdfast's reqwest,
/// so the tree keeps one HTTP stack.
#[derive(Debug, Default)]
struct BlockingClient {
    /// Built on first use, on the export thread; a build error is kept and reported per export.
    client: OnceLock<Result<reqwest::blocking::Client, String>>,
}

impl BlockingClient {
    fn send(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self
            .client
            .get_or_init(|| {
                reqwest::blocking::Client::builder()
                    .timeout(EXPORT_TIMEOUT)
                    .user_agent(concat!("holdfast/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| HttpError::from(e.clone()))?;
        let (parts, body) = request.into_parts();
        let response = client.request(parts.method, parts.uri.to_string()).headers(parts.headers).body(body).send()?;
        let mut out = Response::builder().status(response.status());
        if let Some(headers) = out.headers_mut() {
            *headers = response.headers().clone();
        }
        Ok(out.body(response.bytes()?)?)
    }
}

impl HttpClient for BlockingClient {
    // The trait is an `async_trait`; this is its expansion, written out to spare a dependency.
    // The batch processor awaits it on its own thread, where blocking is what it expects.
    fn send_bytes<'a, 'b>(
        &'a self,
        request: Request<Bytes>,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Response<Bytes>, HttpError>> + Send + 'b>>
    where
        'a: 'b,
        Self: 'b,
    {
        Box::pin(async move { self.send(request) })
    }
}
