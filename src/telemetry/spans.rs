//! The spans of one client request: the request itself (kind SERVER), one child per upstream
//! attempt (CLIENT, whose context goes upstream as `traceparent`) and one per store operation.
//!
//! Attributes follow the OpenTelemetry GenAI semantic conventions of semconv
//! [`SCHEMA_URL`] (Development stability; docs/configuration.md lists them) plus
//! `holdfast.*` ones. What a span may carry is decided here and only here: model and provider
//! names, the operation, token counts, how the store answered, attempt numbers, breaker
//! states, error classes. Never prompt or answer text, error bodies, credentials or a tenant in
//! clear: the tenant appears as the prefix of its keyed hash, as `holdfast audit` shows it.
//!
//! With tracing off every call here is a no-op, except that a client's own `traceparent` still
//! goes upstream unchanged, so Holdfast stays transparent to tracing it does not take part in.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::Response;
use bytes::Bytes;
use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

/// The semantic conventions version the attributes follow (the GenAI ones were last released
/// inside semconv before they moved to their own repository; 1.37.0 has `gen_ai.provider.name`).
pub const SCHEMA_URL: &str = "https://opentelemetry.io/schemas/1.37.0";

/// The W3C trace-context headers Holdfast reads from clients and sends upstream.
const TRACE_HEADERS: [&str; 2] = ["traceparent", "tracestate"];

/// A running trace pipeline, or none. Cheap to clone; shared by every request.
#[derive(Clone, Default)]
pub struct Traces {
    /// The pipeline; `None` when `[telemetry]` names no endpoint.
    live: Option<Arc<Live>>,
}

struct Live {
    /// Owns the batch processor and its export thread; flushed and shut down through it.
    provider: SdkTracerProvider,
    /// Makes the spans, under Holdfast's instrumentation scope and schema URL.
    tracer: SdkTracer,
}

impl Traces {
    /// No tracing: requests carry only the client's own trace headers upstream.
    pub fn off() -> Self {
        Self::default()
    }

    pub(super) fn new(provider: SdkTracerProvider, tracer: SdkTracer) -> Self {
        Self { live: Some(Arc::new(Live { provider, tracer })) }
    }

    pub fn enabled(&self) -> bool {
        self.live.is_some()
    }

    /// Starts the span of one client request to `path`, as a child of the client's
    /// `traceparent` when it sent a valid one (its sampled flag is honoured).
    pub fn request(&self, method: &str, path: &'static str, headers: &HeaderMap) -> RequestSpan {
        self.request_on_route(method, path, path.to_owned(), headers)
    }

    /// As `request`, for a path matched by a pattern (`route`, e.g. `/v1/{*path}`): the span
    /// is named after the route, so ids in paths do not make a name per request.
    pub fn request_on_route(
        &self,
        method: &str,
        route: &'static str,
        path: String,
        headers: &HeaderMap,
    ) -> RequestSpan {
        let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
        let Some(live) = &self.live else {
            return RequestSpan { cx: None, tracer: None, client: parent };
        };
        let span = live
            .tracer
            .span_builder(format!("{method} {route}"))
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("http.request.method", method.to_owned()),
                KeyValue::new("http.route", route),
                KeyValue::new("url.path", path),
            ])
            .start_with_context(&live.tracer, &parent);
        RequestSpan { cx: Some(parent.with_span(span)), tracer: Some(live.tracer.clone()), client: parent }
    }

    /// Exports every finished span now (blocks until the receiver answered or the export
    /// timed out). Tests call it; `serve` calls [`Traces::shutdown`] instead.
    pub fn flush(&self) {
        if let Some(live) = &self.live
            && let Err(e) = live.provider.force_flush()
        {
            tracing::warn!(error = %e, "could not export traces");
        }
    }

    /// Exports what is left and stops the exporter (blocking; call off the async workers).
    pub fn shutdown(&self) {
        if let Some(live) = &self.live
            && let Err(e) = live.provider.shutdown()
        {
            tracing::warn!(error = %e, "could not export the last traces");
        }
    }
}

/// The span of one client request (a no-op when tracing is off). Clones share the span.
#[derive(Clone)]
pub struct RequestSpan {
    /// The request span in its context; `None` when tracing is off.
    cx: Option<Context>,
    /// The pipeline's tracer, which makes the children.
    tracer: Option<SdkTracer>,
    /// The client's trace context, passed upstream unchanged when tracing is off.
    client: Context,
}

impl RequestSpan {
    /// A span that records nothing (requests that do not come through a handler, tests).
    pub fn none() -> Self {
        Self { cx: None, tracer: None, client: Context::new() }
    }

    /// Whether this request is traced (callers skip work that only feeds a span).
    pub fn is_recording(&self) -> bool {
        self.cx.is_some()
    }

    fn set(&self, attributes: impl IntoIterator<Item = KeyValue>) {
        if let Some(cx) = &self.cx {
            cx.span().set_attributes(attributes);
        }
    }

    /// What was asked: the GenAI operation (`chat`, `text_completion`, `embeddings`, ...), the
    /// model as the client named it, whether it streams. The span is renamed after them, as
    /// the conventions name an inference span.
    pub fn asked(&self, operation: &'static str, model: &str, stream: bool) {
        if let Some(cx) = &self.cx {
            cx.span().update_name(format!("{operation} {model}"));
        }
        self.set([
            KeyValue::new("gen_ai.operation.name", operation),
            KeyValue::new("gen_ai.request.model", model.to_owned()),
            KeyValue::new("holdfast.request.stream", stream),
        ]);
    }

    /// The tenant, only as the prefix of its keyed hash (`shared` for the shared namespace).
    pub fn tenant(&self, namespace_hash: Option<[u8; 32]>) {
        let tenant = match namespace_hash {
            None => "shared".to_owned(),
            Some(h) => h.iter().take(4).map(|b| format!("{b:02x}")).collect(),
        };
        self.set([KeyValue::new("holdfast.tenant.hash", tenant)]);
    }

    /// Token counts of the answer, when the provider (or the stored entry) reported them.
    pub fn usage(&self, input_tokens: u64, output_tokens: u64) {
        self.set([
            KeyValue::new("gen_ai.usage.input_tokens", i64::try_from(input_tokens).unwrap_or(i64::MAX)),
            KeyValue::new("gen_ai.usage.output_tokens", i64::try_from(output_tokens).unwrap_or(i64::MAX)),
        ]);
    }

    /// A target passed over without a connection attempt (its breaker is open).
    pub fn skipped(&self, provider: &str, model: &str, reason: &'static str) {
        if let Some(cx) = &self.cx {
            cx.span().add_event(
                "holdfast.target.skipped",
                vec![
                    KeyValue::new("gen_ai.provider.name", provider.to_owned()),
                    KeyValue::new("gen_ai.request.model", model.to_owned()),
                    KeyValue::new("holdfast.skip.reason", reason),
                ],
            );
        }
    }

    /// Starts the span of one upstream attempt: `number` counts from 1 across the whole chain,
    /// `probe` says the provider's breaker is half-open and this attempt is its probe.
    /// `target` is only asked for when the request is traced.
    pub fn attempt<'a>(
        &self,
        operation: &'static str,
        target: impl FnOnce() -> AttemptTarget<'a>,
        number: u32,
        probe: bool,
    ) -> AttemptSpan {
        let (Some(cx), Some(tracer)) = (&self.cx, &self.tracer) else {
            return AttemptSpan { cx: None, client: self.client.clone() };
        };
        let target = target();
        let mut attributes = vec![
            KeyValue::new("gen_ai.operation.name", operation),
            KeyValue::new("gen_ai.provider.name", target.provider.to_owned()),
            KeyValue::new("gen_ai.request.model", target.model.to_owned()),
            KeyValue::new("holdfast.provider.api", target.api),
            KeyValue::new("holdfast.attempt", i64::from(number)),
            KeyValue::new("holdfast.breaker.state", if probe { "half_open" } else { "closed" }),
        ];
        if let Some(host) = target.host {
            attributes.push(KeyValue::new("server.address", host));
        }
        if let Some(port) = target.port {
            attributes.push(KeyValue::new("server.port", i64::from(port)));
        }
        let span = tracer
            .span_builder(format!("{operation} {}", target.model))
            .with_kind(SpanKind::Client)
            .with_attributes(attributes)
            .start_with_context(tracer, cx);
        AttemptSpan { cx: Some(cx.with_span(span)), client: self.client.clone() }
    }

    /// Starts the span of one store operation (`get`, `put`).
    pub fn store(&self, operation: &'static str) -> StoreSpan {
        let (Some(cx), Some(tracer)) = (&self.cx, &self.tracer) else { return StoreSpan { cx: None } };
        let span = tracer
            .span_builder(format!("holdfast.store {operation}"))
            .with_kind(SpanKind::Internal)
            .with_attributes([KeyValue::new("holdfast.store.operation", operation)])
            .start_with_context(tracer, cx);
        StoreSpan { cx: Some(cx.with_span(span)) }
    }

    /// Records how the request was answered: the store's part (`hit`, `stale`, `miss`,
    /// `bypass`, `coalesced`, or `error`), the attempts made, the provider that answered (or
    /// was tried last), the HTTP status and, for an error, its class.
    pub fn answered(&self, outcome: Outcome<'_>) {
        let Some(cx) = &self.cx else { return };
        let span = cx.span();
        span.set_attributes([
            KeyValue::new("holdfast.cache.result", outcome.cache_result),
            KeyValue::new("holdfast.attempts", i64::from(outcome.attempts)),
            KeyValue::new("http.response.status_code", i64::from(outcome.status)),
        ]);
        if let Some(provider) = outcome.provider {
            span.set_attribute(KeyValue::new("gen_ai.provider.name", provider.to_owned()));
        }
        if let Some(error) = outcome.error_type {
            span.set_attribute(KeyValue::new("error.type", error));
            span.set_status(Status::error(error));
        }
    }

    /// Ends the span when the response's body has been sent (or the client left): a stream's
    /// request span covers the whole stream, its store write included.
    pub fn end_with_body(&self, response: Response) -> Response {
        let Some(cx) = &self.cx else { return response };
        let (parts, body) = response.into_parts();
        let body = Body::new(EndsSpan { body, cx: cx.clone() });
        Response::from_parts(parts, body)
    }
}

/// A response body that ends its request's span when it is dropped.
struct EndsSpan {
    /// The response body, passed through untouched.
    body: Body,
    /// The request span's context.
    cx: Context,
}

impl Drop for EndsSpan {
    fn drop(&mut self) {
        self.cx.span().end();
    }
}

impl http_body::Body for EndsSpan {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// How a request was answered, for [`RequestSpan::answered`].
pub struct Outcome<'a> {
    /// `x-holdfast-cache`'s value, or `error`.
    pub cache_result: &'static str,
    /// Upstream attempts made (`x-holdfast-attempts`).
    pub attempts: u32,
    /// The provider that answered, or was tried last.
    pub provider: Option<&'a str>,
    /// The HTTP status the client got.
    pub status: u16,
    /// A short error class (e.g. `upstream_unavailable`), never a message.
    pub error_type: Option<&'static str>,
}

/// Where an attempt goes, for its span's attributes.
pub struct AttemptTarget<'a> {
    /// The provider's configured name.
    pub provider: &'a str,
    /// Its API dialect (`openai`, `anthropic`).
    pub api: &'static str,
    /// The model asked of it.
    pub model: &'a str,
    /// The host of its `base_url` (`server.address`).
    pub host: Option<String>,
    /// Its port, explicit or the scheme's (`server.port`).
    pub port: Option<u16>,
}

/// One upstream attempt's span; ends when reported (or dropped, e.g. on a timeout).
pub struct AttemptSpan {
    /// The attempt's span in its context; `None` when tracing is off.
    cx: Option<Context>,
    /// The client's trace context, sent upstream when tracing is off.
    client: Context,
}

impl AttemptSpan {
    /// The trace headers to send upstream: this attempt's context when tracing, else the
    /// client's own, unchanged. Empty when there is neither.
    pub fn upstream_headers(&self) -> Vec<(HeaderName, HeaderValue)> {
        let cx = self.cx.as_ref().unwrap_or(&self.client);
        let mut headers = HeaderMap::new();
        TraceContextPropagator::new().inject_context(cx, &mut HeaderInjector(&mut headers));
        TRACE_HEADERS
            .iter()
            .filter_map(|name| Some((HeaderName::from_static(name), headers.get(*name)?.clone())))
            .collect()
    }

    /// The attempt answered (the status of an accepted answer; a stream's once its first
    /// content arrived).
    pub fn succeeded(self, status: u16) {
        if let Some(cx) = &self.cx {
            cx.span().set_attribute(KeyValue::new("http.response.status_code", i64::from(status)));
            cx.span().end();
        }
    }

    /// The attempt failed: `error_type` is its class (`connect`, `timeout`, `5xx`, ...).
    pub fn failed(self, error_type: &'static str, status: Option<u16>) {
        if let Some(cx) = &self.cx {
            let span = cx.span();
            if let Some(status) = status {
                span.set_attribute(KeyValue::new("http.response.status_code", i64::from(status)));
            }
            span.set_attribute(KeyValue::new("error.type", error_type));
            span.set_status(Status::error(error_type));
            span.end();
        }
    }
}

impl Drop for AttemptSpan {
    fn drop(&mut self) {
        // Ending twice is a no-op in the SDK; this ends attempts abandoned mid-way.
        if let Some(cx) = &self.cx {
            cx.span().end();
        }
    }
}

/// One store operation's span.
pub struct StoreSpan {
    /// The operation's span in its context; `None` when tracing is off.
    cx: Option<Context>,
}

impl StoreSpan {
    /// A read ended: whether it found an entry; `failed` when the store returned an error.
    pub fn read(self, found: bool, failed: bool) {
        if let Some(cx) = &self.cx {
            cx.span().set_attribute(KeyValue::new("holdfast.store.found", found));
            self.end(failed);
        }
    }

    /// A write ended.
    pub fn written(self, failed: bool) {
        self.end(failed);
    }

    fn end(&self, failed: bool) {
        if let Some(cx) = &self.cx {
            if failed {
                cx.span().set_attribute(KeyValue::new("error.type", "store_error"));
                cx.span().set_status(Status::error("store_error"));
            }
            cx.span().end();
        }
    }
}

impl Drop for StoreSpan {
    fn drop(&mut self) {
        if let Some(cx) = &self.cx {
            cx.span().end();
        }
    }
}
