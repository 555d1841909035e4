//! OpenTelemetry traces, received by a real OTLP/HTTP receiver on 127.0.0.1:0 that decodes the
//! protobuf it is sent: a failover request is one span with its attempts and store operations
//! as children, continues the client's trace, hands its context upstream, and carries no
//! prompt, answer or credential.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message as _;
use serde_json::{Value, json};

use crate::common::*;
use crate::fake_upstream::{FakeUpstream, Fault};

/// What the receiver was sent: every request body, as bytes.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<Bytes>>>);

impl Received {
    fn bodies(&self) -> Vec<Bytes> {
        self.0.lock().unwrap().clone()
    }

    fn spans(&self) -> Vec<Span> {
        self.bodies()
            .iter()
            .map(|body| ExportTraceServiceRequest::decode(body.as_ref()).expect("an OTLP protobuf export"))
            .flat_map(|request| request.resource_spans)
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| s.spans)
            .collect()
    }
}

/// An OTLP/HTTP receiver: `POST /v1/traces` kept and answered with an empty success.
async fn receiver() -> (String, Received) {
    let received = Received::default();
    let kept = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let kept = kept.clone();
            async move {
                kept.0.lock().unwrap().push(body);
                ([("content-type", "application/x-protobuf")], Bytes::new())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

/// A primary `a` and a second provider `b` for `gpt-4o`, two tries each, traces to `otlp`.
fn config(a: &FakeUpstream, b: &FakeUpstream, otlp: &str) -> holdfast::config::Config {
    let provider = |name: &str, base: String| {
        format!(
            "[[providers]]\nname = \"{name}\"\napi = \"openai\"\nbase_url = \"{base}\"\nmodels = [\"gpt-*\"]\n\
             retry = {{ attempts = 2, backoff_base = \"10ms\", backoff_cap = \"20ms\" }}\n"
        )
    };
    let text = format!(
        "[cache]\nscope = \"credential\"\n[telemetry]\notlp_endpoint = \"{otlp}\"\n{}{}\
         [[routes]]\nmodel = \"gpt-4o\"\ntargets = [\"a:gpt-4o\", \"b:gpt-4o-mini\"]\n",
        provider("a", a.base_url()),
        provider("b", b.base_url()),
    );
    let config = holdfast::config::Config::parse(&text).unwrap();
    config.validate().unwrap();
    config
}

fn attribute<'a>(span: &'a Span, key: &str) -> Option<&'a AnyValue> {
    span.attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

fn text(span: &Span, key: &str) -> String {
    match attribute(span, key) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        other => panic!("{key} on {}: {other:?}", span.name),
    }
}

fn int(span: &Span, key: &str) -> i64 {
    match attribute(span, key) {
        Some(AnyValue::IntValue(i)) => *i,
        other => panic!("{key} on {}: {other:?}", span.name),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Exports what the proxy has finished, then waits until the receiver holds `at_least` spans.
async fn flush_until(proxy: &Proxy, received: &Received, at_least: usize) -> Vec<Span> {
    let started = Instant::now();
    loop {
        let traces = proxy.state.traces.clone();
        tokio::task::spawn_blocking(move || traces.flush()).await.unwrap();
        let spans = received.spans();
        if spans.len() >= at_least || started.elapsed() > Duration::from_secs(10) {
            return spans;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";
const PROMPT: &str = "canary prompt 7f3a: the launch codes are swordfish";
const CREDENTIAL: &str = "sk-canary-credential-9c41d2";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_request_is_one_span_with_its_attempts_as_children_and_no_secrets() {
    let (otlp, received) = receiver().await;
    let (a, b) = (FakeUpstream::start().await, FakeUpstream::start().await);
    a.set_fault(Fault::Status(500));
    let proxy = start_proxy(config(&a, &b, &otlp)).await;
    assert!(proxy.state.traces.enabled());

    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": PROMPT}]});
    let r = http()
        .post(format!("{}/v1/chat/completions", proxy.url))
        .bearer_auth(CREDENTIAL)
        .header("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-holdfast-attempts"], "3", "two tries on a, then b");
    let answer: Value = r.json().await.unwrap();
    let answer_text = answer["choices"][0]["message"]["content"].as_str().unwrap().to_owned();
    assert!(!answer_text.is_empty());

    // b was handed a traceparent in the client's trace, its parent the attempt that called it.
    let upstream = b.last_headers().unwrap();
    let sent = upstream["traceparent"].to_str().unwrap().to_owned();
    let parts: Vec<&str> = sent.split('-').collect();
    assert_eq!((parts[0], parts[1], parts[3]), ("00", CLIENT_TRACE, "01"), "{sent}");
    assert_ne!(parts[2], CLIENT_SPAN, "upstream's parent is Holdfast's attempt span, not the client's");

    let spans = flush_until(&proxy, &received, 5).await;
    let request = spans.iter().find(|s| s.kind == SpanKind::Server as i32).expect("a request span");
    assert_eq!(request.name, "chat gpt-4o");
    assert_eq!(hex(&request.trace_id), CLIENT_TRACE, "the client's trace continues");
    assert_eq!(hex(&request.parent_span_id), CLIENT_SPAN, "the request span is the client's child");
    assert_eq!(text(request, "gen_ai.operation.name"), "chat");
    assert_eq!(text(request, "gen_ai.request.model"), "gpt-4o");
    assert_eq!(text(request, "gen_ai.provider.name"), "b");
    assert_eq!(text(request, "holdfast.cache.result"), "miss");
    assert_eq!(int(request, "holdfast.attempts"), 3);
    assert!(int(request, "gen_ai.usage.input_tokens") > 0 && int(request, "gen_ai.usage.output_tokens") > 0);
    let tenant = text(request, "holdfast.tenant.hash");
    assert!(tenant.len() == 8 && tenant.chars().all(|c| c.is_ascii_hexdigit()), "{tenant}");

    let mut attempts: Vec<&Span> = spans.iter().filter(|s| s.kind == SpanKind::Client as i32).collect();
    attempts.sort_by_key(|s| int(s, "holdfast.attempt"));
    let summary: Vec<(String, String, i64)> = attempts
        .iter()
        .map(|s| (s.name.clone(), text(s, "gen_ai.provider.name"), int(s, "holdfast.attempt")))
        .collect();
    assert_eq!(
        summary,
        [
            ("chat gpt-4o".into(), "a".into(), 1),
            ("chat gpt-4o".into(), "a".into(), 2),
            ("chat gpt-4o-mini".into(), "b".into(), 3)
        ]
    );
    for attempt in &attempts {
        assert_eq!(attempt.trace_id, request.trace_id);
        assert_eq!(attempt.parent_span_id, request.span_id, "{} is a child of the request span", attempt.name);
        assert_eq!(text(attempt, "holdfast.breaker.state"), "closed");
        assert!(attempt.start_time_unix_nano >= request.start_time_unix_nano);
        assert!(attempt.end_time_unix_nano <= request.end_time_unix_nano);
    }
    assert_eq!((text(attempts[0], "error.type"), int(attempts[0], "http.response.status_code")), ("5xx".into(), 500));
    assert!(attribute(attempts[2], "error.type").is_none());
    assert_eq!(hex(&attempts[2].span_id), parts[2], "b's traceparent names the attempt that called it");

    let put = spans.iter().find(|s| s.name == "holdfast.store put").expect("a store write span");
    assert_eq!(put.parent_span_id, request.span_id);

    // Nothing the client said, nothing the model answered, no credential: not in any byte sent.
    let exported: Vec<u8> = received.bodies().concat();
    for secret in [PROMPT, "swordfish", CREDENTIAL, answer_text.as_str()] {
        assert!(!contains(&exported, secret.as_bytes()), "`{secret}` was exported");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_answer_is_traced_with_its_store_read_and_a_stream_span_ends_with_the_stream() {
    let (otlp, received) = receiver().await;
    let (a, b) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let proxy = start_proxy(config(&a, &b, &otlp)).await;
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": PROMPT}], "stream": true});
    let send = || http().post(format!("{}/v1/chat/completions", proxy.url)).bearer_auth(CREDENTIAL).json(&body).send();
    let live = send().await.unwrap().text().await.unwrap();
    assert!(live.contains("[DONE]"), "{live}");
    a.down().await;
    b.down().await;
    let r = send().await.unwrap();
    assert_eq!(r.headers()["x-holdfast-cache"], "stale");
    r.text().await.unwrap();

    let spans = flush_until(&proxy, &received, 10).await;
    let requests: Vec<&Span> = spans.iter().filter(|s| s.kind == SpanKind::Server as i32).collect();
    assert_eq!(requests.len(), 2, "{spans:#?}");
    let (first, second) = if text(requests[0], "holdfast.cache.result") == "miss" {
        (requests[0], requests[1])
    } else {
        (requests[1], requests[0])
    };
    assert_eq!(attribute(first, "holdfast.request.stream"), Some(&AnyValue::BoolValue(true)));
    let put = spans.iter().find(|s| s.name == "holdfast.store put" && s.trace_id == first.trace_id).unwrap();
    assert!(put.end_time_unix_nano <= first.end_time_unix_nano, "the stream's span covers its store write");

    assert_eq!(text(second, "holdfast.cache.result"), "stale");
    assert_eq!(int(second, "holdfast.attempts"), 4);
    assert!(int(second, "gen_ai.usage.output_tokens") > 0, "usage comes from the stored entry");
    let read = spans
        .iter()
        .find(|s| s.name == "holdfast.store get" && s.trace_id == second.trace_id && s.parent_span_id == second.span_id)
        .expect("the stale read is a child of its request");
    assert_eq!(attribute(read, "holdfast.store.found"), Some(&AnyValue::BoolValue(true)));
    let failed: Vec<&Span> =
        spans.iter().filter(|s| s.kind == SpanKind::Client as i32 && s.trace_id == second.trace_id).collect();
    assert_eq!(failed.len(), 4);
    assert!(failed.iter().all(|s| text(s, "error.type") == "connect"));
    assert!(!contains(&received.bodies().concat(), PROMPT.as_bytes()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_collector_neither_slows_nor_fails_requests() {
    // A port nothing listens on: every export fails (and is retried on the exporter's thread).
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let (a, b) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let proxy = start_proxy(config(&a, &b, &dead)).await;
    let started = Instant::now();
    for i in 0..20 {
        let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": format!("dead collector {i}")}]});
        let r = http().post(format!("{}/v1/chat/completions", proxy.url)).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    assert!(started.elapsed() < Duration::from_secs(5), "20 requests took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tracing_a_clients_traceparent_goes_upstream_unchanged() {
    let upstream = FakeUpstream::start().await;
    let proxy = start_proxy(config_for(&upstream.base_url())).await;
    assert!(!proxy.state.traces.enabled());
    let parent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "pass it on"}]});
    let r = http()
        .post(format!("{}/v1/chat/completions", proxy.url))
        .header("traceparent", &parent)
        .header("tracestate", "vendor=abc")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let headers = upstream.last_headers().unwrap();
    assert_eq!(headers["traceparent"], parent.as_str());
    assert_eq!(headers["tracestate"], "vendor=abc");

    // A malformed one is not passed on.
    let r = http()
        .post(format!("{}/v1/chat/completions", proxy.url))
        .header("traceparent", "00-not-a-trace")
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "bad parent"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(upstream.last_headers().unwrap().get("traceparent").is_none());
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passthrough_request_is_traced_on_its_route_with_its_attempt() {
    let (otlp, received) = receiver().await;
    let (a, b) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let proxy = start_proxy(config(&a, &b, &otlp)).await;
    let r = http()
        .get(format!("{}/v1/files/file-7c2e?limit=2", proxy.url))
        .header("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-holdfast-cache"], "bypass");
    let status = r.status().as_u16();
    r.bytes().await.unwrap();

    let spans = flush_until(&proxy, &received, 2).await;
    let request = spans.iter().find(|s| s.kind == SpanKind::Server as i32).expect("a request span");
    // Named after the route, not the path: ids in paths must not make one name per request.
    assert_eq!(request.name, "GET /v1/{*path}");
    assert_eq!(text(request, "url.path"), "/v1/files/file-7c2e");
    assert_eq!(hex(&request.trace_id), CLIENT_TRACE);
    assert_eq!(text(request, "holdfast.cache.result"), "bypass");
    assert_eq!(int(request, "http.response.status_code"), i64::from(status));
    let attempt = spans.iter().find(|s| s.kind == SpanKind::Client as i32).expect("an attempt span");
    assert_eq!(attempt.parent_span_id, request.span_id);
    assert_eq!(text(attempt, "gen_ai.provider.name"), "a");
    // The provider was handed the attempt's place in the client's trace.
    let sent = a.last_headers().unwrap()["traceparent"].to_str().unwrap().to_owned();
    assert_eq!(sent, format!("00-{CLIENT_TRACE}-{}-01", hex(&attempt.span_id)));
}
