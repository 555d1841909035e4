//! Normalization + address of a request body, both ways in one run: reading the body directly
//! (what `normalize` does) against parsing it into a `serde_json::Value` and writing that (what
//! it did before, and what `normalize_value` still does for a body already parsed).
//!
//! Run: `cargo bench --bench normalize`. Figures and the machine are in docs/performance.md.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use holdfast::cache_key::address::Addresser;
use holdfast::cache_key::normalize::{normalize, normalize_value};
use holdfast::secret::SecretKey;

const KIB: usize = 1024;

/// A chat request of about `size` bytes with its members in the order SDKs send them (not
/// sorted): a system prompt, then alternating turns.
fn request_body(size: usize) -> Vec<u8> {
    let turn = "Explain the trade-offs of write-ahead logging in embedded databases, briefly. \\\"Why\\\"?";
    let mut messages = vec![r#"{"role":"system","content":"You are a careful engineer."}"#.to_owned()];
    loop {
        let body = format!(
            r#"{{"model":"gpt-4o-mini","temperature":0.2,"stream":false,"messages":[{}],"max_tokens":512}}"#,
            messages.join(",")
        );
        if body.len() >= size {
            return body.into_bytes();
        }
        let role = if messages.len() % 2 == 1 { "user" } else { "assistant" };
        messages.push(format!(r#"{{"role":"{role}","content":"{turn}"}}"#));
    }
}

fn bench_normalize(c: &mut Criterion) {
    let addresser = Addresser::new(SecretKey::from_bytes([7; 32]), SecretKey::from_bytes([8; 32]));
    let namespace = addresser.namespace_for_credential(b"sk-bench");
    let mut group = c.benchmark_group("normalize+address");
    for size in [KIB, 4 * KIB, 16 * KIB, 64 * KIB] {
        let body = request_body(size);
        assert_eq!(
            normalize("/v1/chat/completions", &body).unwrap(),
            normalize_value("/v1/chat/completions", &serde_json::from_slice(&body).unwrap()).unwrap(),
            "both ways must give the same canonical request"
        );
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::new("via Value", size), &body, |b, body| {
            b.iter(|| {
                let value: serde_json::Value = serde_json::from_slice(black_box(body)).unwrap();
                let request = normalize_value("/v1/chat/completions", &value).unwrap();
                addresser.address(&namespace, &request)
            })
        });
        group.bench_with_input(BenchmarkId::new("direct", size), &body, |b, body| {
            b.iter(|| {
                let request = normalize("/v1/chat/completions", black_box(body)).unwrap();
                addresser.address(&namespace, &request)
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench_normalize
}
criterion_main!(benches);
