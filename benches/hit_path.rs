//! The stored-answer hit path alone, in process (no sockets): request parsing, normalization,
//! addressing, store read, decryption, response. For profiling (issue 6, item 4):
//!
//! `cargo bench --bench hit_path` prints the mean time per hit;
//! `valgrind --tool=callgrind target/release/deps/hit_path-* ` (with `HIT_PATH_ITERS=2000`)
//! gives instruction counts per function, repeatable run to run.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use bytes::Bytes;
use holdfast::cache_key::normalize::normalize;
use holdfast::config::Config;
use holdfast::proxy::upstream::Upstreams;
use holdfast::proxy::{AppState, router};
use holdfast::secret::StoreSecret;
use holdfast::store::record::{Record, ResponseBody, StoredResponse};
use holdfast::store::{Store, StoreOptions};
use tower::ServiceExt as _;

// The same allocator as the `holdfast` binary, so the profile matches production.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let iters: u32 = std::env::var("HIT_PATH_ITERS").ok().and_then(|s| s.parse().ok()).unwrap_or(50_000);
    let size: usize = std::env::var("HIT_PATH_BYTES").ok().and_then(|s| s.parse().ok()).unwrap_or(1024);
    let dir = tempfile::tempdir().unwrap();
    let secret = StoreSecret::raw_key_base64("AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=").unwrap();
    let store =
        Store::open(&dir.path().join("s"), &secret, StoreOptions { create_if_missing: true, ..Default::default() })
            .unwrap();
    let body = serde_json::json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "profile me"}]})
        .to_string();
    let request = normalize("/v1/chat/completions", body.as_bytes()).unwrap();
    let addresser = store.addresser();
    let namespace = addresser.namespace_for_credential(b"sk-prof");
    let answer = format!(
        "{{\"id\":\"x\",\"object\":\"chat.completion\",\"choices\":[{{\"index\":0,\"message\":{{\"role\":\"assistant\",\"content\":\"{}\"}},\"finish_reason\":\"stop\"}}]}}",
        "a".repeat(size.saturating_sub(120))
    );
    let record = Record {
        request: request.clone(),
        namespace: namespace.hash(),
        response: StoredResponse {
            status: 200,
            content_type: "application/json".into(),
            body: ResponseBody::Complete(Bytes::from(answer)),
        },
        provider: "p".into(),
        model: "gpt-4o-mini".into(),
        created_ms: holdfast::store::now_ms(),
        upstream_latency_ms: 1,
        usage: None,
    };
    store.put(&addresser.address(&namespace, &request), &record).unwrap();
    let config = Config::parse("[[providers]]\nname=\"p\"\napi=\"openai\"\nbase_url=\"http://127.0.0.1:9\"\n").unwrap();
    let upstreams = Upstreams::new(&config.providers, |_| None).unwrap();
    let app = router(AppState::new(config, Arc::new(store), upstreams));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async move {
        let started = Instant::now();
        for _ in 0..iters {
            let req = axum::http::Request::post("/v1/chat/completions")
                .header("authorization", "Bearer sk-prof")
                .header("x-holdfast-mode", "cache-first")
                .header("content-type", "application/json")
                .body(Body::from(body.clone()))
                .unwrap();
            let response = app.clone().oneshot(req).await.unwrap();
            assert_eq!(response.headers()["x-holdfast-cache"], "hit");
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
            std::hint::black_box(bytes);
        }
        let per = started.elapsed().as_secs_f64() * 1e6 / f64::from(iters);
        println!("hit path, in process, {size} B answer: {per:.2} µs per request over {iters} requests");
    });
}
