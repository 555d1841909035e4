//! The hardened edge, seen from a client: timeouts that close slow or idle connections, caps
//! that refuse with a 503 instead of hanging, one credential rule, client keys, and a
//! provider header that once panicked the request task.

use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{config_for, http, start_proxy};
use crate::fake_upstream::{FakeUpstream, Fault};

fn chat(prompt: &str) -> Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]})
}

fn with_limits(upstream: &str, limits: &str) -> holdfast::config::Config {
    let mut config = config_for(upstream);
    config.limits = toml::from_str(limits).unwrap();
    config
}

fn addr_of(url: &str) -> String {
    url.trim_start_matches("http://").to_owned()
}

/// Reads until the server closes the connection (or `within` passes); returns what it sent
/// and whether it closed.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (String, bool) {
    let mut received = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    let mut buffer = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Err(_) => return (String::from_utf8_lossy(&received).into_owned(), false),
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&received).into_owned(), true),
            Ok(Ok(n)) => received.extend_from_slice(&buffer[..n]),
        }
    }
}

#[tokio::test]
async fn a_huge_retry_after_from_the_provider_fails_over_instead_of_panicking() {
    // A provider answering 429 with `retry-after: 1e20` (finite, but beyond any Duration).
    let app = axum::Router::new().fallback(|| async {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", "1e20".parse().unwrap());
        headers.insert("content-type", "application/json".parse().unwrap());
        (axum::http::StatusCode::TOO_MANY_REQUESTS, headers, r#"{"error":{"message":"slow down","type":"rate_limit"}}"#)
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hostile = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let backup = FakeUpstream::start().await;
    let mut config = config_for(&hostile);
    config.providers[0].retry.attempts = 3;
    let mut second = config.providers[0].clone();
    second.name = "backup".into();
    second.base_url = backup.base_url();
    config.providers.insert(1, second);
    let proxy = start_proxy(config).await;
    let r = http().post(format!("{}/v1/chat/completions", proxy.url)).json(&chat("retry after")).send().await.unwrap();
    assert_eq!(r.status(), 200, "the client got {r:?} instead of the backup's answer");
    assert_eq!(r.headers()["x-holdfast-provider"], "backup");
    assert_eq!(backup.calls(), 1);
}

#[tokio::test]
async fn slow_headers_are_cut_after_the_header_read_timeout() {
    let upstream = FakeUpstream::start().await;
    let proxy = start_proxy(with_limits(&upstream.base_url(), "header_read_timeout = \"1s\"")).await;
    let started = Instant::now();
    let mut slowloris = TcpStream::connect(addr_of(&proxy.url)).await.unwrap();
    slowloris.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    let (_, closed) = read_until_closed(&mut slowloris, Duration::from_secs(10)).await;
    assert!(closed, "a connection that never finished its headers was still open after 10 s");
    assert!(started.elapsed() >= Duration::from_millis(900), "closed before the timeout: {:?}", started.elapsed());
    // A connection that sends nothing at all is cut the same way.
    let mut silent = TcpStream::connect(addr_of(&proxy.url)).await.unwrap();
    assert!(read_until_closed(&mut silent, Duration::from_secs(10)).await.1);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let upstream = FakeUpstream::start().await;
    let limits = "idle_timeout = \"1s\"\nheader_read_timeout = \"30s\"";
    let proxy = start_proxy(with_limits(&upstream.base_url(), limits)).await;
    let mut stream = TcpStream::connect(addr_of(&proxy.url)).await.unwrap();
    stream.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let mut first = [0u8; 256];
    let n = stream.read(&mut first).await.unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    let started = Instant::now();
    let (_, closed) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    assert!(closed, "an idle keep-alive connection was still open after 10 s");
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn a_stalled_request_body_gets_408_in_the_clients_dialect() {
    let upstream = FakeUpstream::start().await;
    let proxy = start_proxy(with_limits(&upstream.base_url(), "body_read_timeout = \"1s\"")).await;
    let mut stream = TcpStream::connect(addr_of(&proxy.url)).await.unwrap();
    stream
        .write_all(b"POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"model\":")
        .await
        .unwrap();
    let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"type\":\"error\"") && answer.contains("body_read_timeout"), "{answer}");
    assert_eq!(upstream.calls(), 0);
}

#[tokio::test]
async fn slow_uploads_share_one_byte_budget_and_give_it_back() {
    let upstream = FakeUpstream::start().await;
    // Room for about four half-sent bodies of 40 KiB (each buffer grows by doubling to 64 KiB).
    let proxy = start_proxy(with_limits(&upstream.base_url(), "max_body_buffer = \"256KiB\"")).await;
    let head = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000000\r\n\r\n";
    let mut uploads = Vec::new();
    let mut refused = None;
    for _ in 0..20 {
        let mut s = TcpStream::connect(addr_of(&proxy.url)).await.unwrap();
        s.write_all(head).await.unwrap();
        s.write_all(&[b' '; 40 * 1024]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut probe = [0u8; 512];
        match tokio::time::timeout(Duration::from_millis(200), s.read(&mut probe)).await {
            Ok(Ok(n)) if n > 0 => {
                refused = Some(String::from_utf8_lossy(&probe[..n]).into_owned());
                break;
            }
            _ => uploads.push(s),
        }
    }
    let answer = refused.expect("a slow upload beyond the budget is refused, not buffered");
    assert!(answer.starts_with("HTTP/1.1 503") && answer.contains("retry-after: 1"), "{answer}");
    assert!(answer.contains("max_body_buffer"), "{answer}");
    assert!((2..=8).contains(&uploads.len()), "the budget held {} uploads", uploads.len());
    assert_eq!(upstream.calls(), 0);
    // The uploads in progress give their share back when they go away: whole requests pass again.
    drop(uploads);
    let mut served = false;
    for _ in 0..50 {
        let r = http().post(format!("{}/v1/chat/completions", proxy.url)).json(&chat("budget back")).send().await;
        if r.is_ok_and(|r| r.status() == 200) {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served, "the budget was never given back");
    assert_eq!(proxy.state.bodies.used(), 0, "every share returned");
}

#[tokio::test]
async fn connections_over_the_cap_get_503_with_retry_after() {
    let upstream = FakeUpstream::start().await;
    let proxy = start_proxy(with_limits(&upstream.base_url(), "max_connections = 3")).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(addr_of(&proxy.url)).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 256];
        assert!(s.read(&mut buf).await.unwrap() > 0);
        held.push(s);
    }
    let mut over = TcpStream::connect(addr_of(&proxy.url)).await.unwrap();
    let (answer, closed) = read_until_closed(&mut over, Duration::from_secs(5)).await;
    assert!(closed && answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after: 1") && answer.contains("overloaded"), "{answer}");
    drop(held);
    // Once the held connections are gone, new ones are served again.
    let mut served = false;
    for _ in 0..50 {
        if http().get(format!("{}/healthz", proxy.url)).send().await.is_ok_and(|r| r.status() == 200) {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served, "the proxy never served again after connections were released");
}

#[tokio::test]
async fn requests_over_the_in_flight_cap_are_shed_in_the_clients_dialect() {
    let upstream = FakeUpstream::start().await;
    upstream.set_fault(Fault::Hang);
    let proxy = start_proxy(with_limits(&upstream.base_url(), "max_in_flight = 1")).await;
    let url = format!("{}/v1/chat/completions", proxy.url);
    let hanging = tokio::spawn({
        let url = url.clone();
        async move { http().post(url).json(&chat("holds the only place")).send().await }
    });
    for _ in 0..100 {
        if upstream.calls() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let shed = http().post(&url).json(&chat("shed")).send().await.unwrap();
    assert_eq!(shed.status(), 503);
    assert_eq!(shed.headers()["retry-after"], "1");
    let body: Value = shed.json().await.unwrap();
    assert_eq!(body["error"]["code"], "overloaded", "{body}");
    let anthropic = http()
        .post(format!("{}/v1/messages", proxy.url))
        .json(&json!({"model": "claude-haiku-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(anthropic.status(), 503);
    assert_eq!(anthropic.json::<Value>().await.unwrap()["error"]["type"], "overloaded_error");
    // Probes are never shed: an orchestrator must see the proxy alive while it is full.
    assert_eq!(http().get(format!("{}/healthz", proxy.url)).send().await.unwrap().status(), 200);
    let metrics = http().get(format!("{}/metrics", proxy.url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("holdfast_requests_shed_total 2"), "{metrics}");
    hanging.abort();
}

#[tokio::test]
async fn shutdown_waits_at_most_the_shutdown_timeout_for_a_half_sent_request() {
    let upstream = FakeUpstream::start().await;
    let limits = "shutdown_timeout = \"1s\"\nbody_read_timeout = \"60s\"\nheader_read_timeout = \"60s\"";
    let proxy = start_proxy(with_limits(&upstream.base_url(), limits)).await;
    let mut half = TcpStream::connect(addr_of(&proxy.url)).await.unwrap();
    half.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 50\r\n\r\n{").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), proxy.stop()).await.expect("shutdown hung on a half-sent request");
    assert!(started.elapsed() < Duration::from_secs(5), "shutdown took {:?}", started.elapsed());
}

/// A proxy whose providers' `api_key_env` reads `sk-provider`, accepting `client_keys`.
async fn start_with_keys(
    config: holdfast::config::Config,
    client_keys: holdfast::edge::credential::ClientKeys,
) -> (String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = holdfast::store::Store::open(
        &dir.path().join("store"),
        &crate::common::passphrase(),
        crate::common::create_options(),
    )
    .unwrap();
    let mut upstreams =
        holdfast::proxy::upstream::Upstreams::new(&config.providers, |_| Some("sk-provider".into())).unwrap();
    if client_keys.enabled() {
        upstreams.stop_forwarding_client_keys();
    }
    let state = holdfast::proxy::AppState::with_client_keys(config, std::sync::Arc::new(store), upstreams, client_keys);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(holdfast::proxy::run(listener, state, std::future::pending()));
    (url, dir)
}

async fn key_of(url: &str, headers: &[(&str, &str)]) -> (u16, Option<String>) {
    let mut request = http().post(format!("{url}/v1/chat/completions")).json(&chat("tenancy"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let r = request.send().await.unwrap();
    (r.status().as_u16(), r.headers().get("x-holdfast-key").map(|v| v.to_str().unwrap().to_owned()))
}

#[tokio::test]
async fn one_credential_rule_decides_the_tenant() {
    let upstream = FakeUpstream::start().await;
    for server_key in [false, true] {
        let mut config = config_for(&upstream.base_url());
        if server_key {
            config.providers[0].api_key_env = Some("EDGE_TEST_KEY".into());
        }
        let (url, _dir) = start_with_keys(config, holdfast::edge::credential::ClientKeys::default()).await;
        let proxy = &url;
        let k = key_of(proxy, &[("authorization", "Bearer sk-K")]).await;
        let anonymous = key_of(proxy, &[]).await;
        assert_eq!(k.0, 200);
        assert_ne!(k.1, anonymous.1, "a credential and none must be different tenants");
        for same in [
            vec![("x-api-key", ""), ("authorization", "Bearer sk-K")],
            vec![("x-api-key", "   "), ("authorization", "Bearer sk-K")],
            vec![("authorization", "BEARER sk-K")],
            vec![("authorization", "bearer   sk-K  ")],
            vec![("x-api-key", "sk-K")],
            vec![("x-api-key", "sk-K"), ("authorization", "Bearer sk-K")],
        ] {
            assert_eq!(key_of(proxy, &same).await, k, "server key {server_key}: {same:?} is not sk-K's tenant");
        }
        for none in
            [vec![("x-api-key", "")], vec![("authorization", "Basic dXNlcg==")], vec![("authorization", "Bearer")]]
        {
            assert_eq!(key_of(proxy, &none).await, anonymous, "server key {server_key}: {none:?}");
        }
        let (status, _) = key_of(proxy, &[("x-api-key", "sk-A"), ("authorization", "Bearer sk-B")]).await;
        assert_eq!(status, 400, "two different credentials must be refused");
    }
}

#[tokio::test]
async fn client_keys_are_required_and_never_reach_the_provider() {
    let upstream = FakeUpstream::start().await;
    let mut config = config_for(&upstream.base_url());
    config.providers[0].api_key_env = Some("EDGE_PROVIDER_KEY".into());
    let keys = holdfast::edge::credential::ClientKeys::parse("hf-client-one,hf-client-two");
    let (url, _dir) = start_with_keys(config, keys).await;
    let send = |key: Option<&'static str>| {
        let mut r = http().post(format!("{url}/v1/chat/completions")).json(&chat("client keys"));
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        r.send()
    };
    for refused in [None, Some("hf-client-three"), Some("sk-provider")] {
        let r = send(refused).await.unwrap();
        assert_eq!(r.status(), 401, "{refused:?}");
        assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "invalid_api_key");
    }
    assert_eq!(upstream.calls(), 0, "refused requests must not reach the provider");
    let ok = send(Some("hf-client-two")).await.unwrap();
    assert_eq!(ok.status(), 200);
    let seen = upstream.last_headers().unwrap();
    assert_eq!(seen["authorization"], "Bearer sk-provider", "the provider is asked with the operator's key");
    assert!(!format!("{seen:?}").contains("hf-client"), "a client key reached the provider: {seen:?}");
}

#[tokio::test]
async fn a_request_head_must_fit_the_16_kib_read_buffer() {
    let upstream = FakeUpstream::start().await;
    let proxy = start_proxy(config_for(&upstream.base_url())).await;
    let head = |padding: usize| {
        format!("GET /healthz HTTP/1.1\r\nhost: x\r\nx-padding: {}\r\nconnection: close\r\n\r\n", "p".repeat(padding))
    };
    for (padding, expected) in [(12 * 1024, "HTTP/1.1 200"), (20 * 1024, "HTTP/1.1 431")] {
        let mut stream = TcpStream::connect(addr_of(&proxy.url)).await.unwrap();
        stream.write_all(head(padding).as_bytes()).await.unwrap();
        let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
        assert!(answer.starts_with(expected), "{padding} bytes of header: {answer}");
    }
}

#[tokio::test]
async fn uploads_that_declare_megabytes_and_send_nothing_hold_none_of_the_body_budget() {
    let upstream = FakeUpstream::start().await;
    // Room for two 16 KiB buffers: before, every such upload reserved one at its head.
    let proxy = start_proxy(with_limits(&upstream.base_url(), "max_body_buffer = \"32KiB\"")).await;
    let head = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 9000000\r\n\r\n";
    let mut stalled = Vec::new();
    for _ in 0..50 {
        let mut s = TcpStream::connect(addr_of(&proxy.url)).await.unwrap();
        s.write_all(head).await.unwrap();
        stalled.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = http().post(format!("{}/v1/chat/completions", proxy.url)).json(&chat("still room")).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    drop(stalled);
}
