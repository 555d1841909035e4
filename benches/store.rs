//! Store micro-benchmarks (issue 2, item 8): normalize + address, seal / open, put, get.
//!
//! Run: `cargo bench --bench store`. Figures and the machine are in docs/performance.md.
//! Another engine: `HOLDFAST_BENCH_ENGINE=redb cargo bench --features engine-redb --bench store`
//! (or `fjall`); docs/storage.md compares them.

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use holdfast::cache_key::address::{Address, Addresser, Namespace};
use holdfast::cache_key::normalize::normalize;
use holdfast::secret::{SecretKey, StoreSecret};
use holdfast::store::crypto::{self, DataKey};
use holdfast::store::record::Record;
use holdfast::store::{Store, StoreOptions};

#[path = "support/engine.rs"]
mod engine;
#[path = "support/record.rs"]
mod record;
use engine::bench_engine;
use record::answered;

const KIB: usize = 1024;

/// A chat request body of about `size` bytes: a few messages, like a real conversation.
fn request_body(size: usize) -> Vec<u8> {
    let turn = "Explain the trade-offs of write-ahead logging in embedded databases, briefly. ";
    let mut messages = vec![serde_json::json!({"role": "system", "content": "You are a careful engineer."})];
    let mut body = serde_json::json!({"model": "gpt-4o-mini", "temperature": 0.2, "messages": []});
    while body.to_string().len() < size {
        let role = if messages.len() % 2 == 1 { "user" } else { "assistant" };
        messages.push(serde_json::json!({"role": role, "content": turn}));
        body["messages"] = serde_json::Value::Array(messages.clone());
    }
    body.to_string().into_bytes()
}

fn record_with_answer(size: usize) -> Record {
    let request = normalize("/v1/chat/completions", &request_body(KIB)).unwrap();
    Record {
        provider: "openai".into(),
        model: "gpt-4o-mini".into(),
        created_ms: 1_700_000_000_000,
        upstream_latency_ms: 300,
        ..answered(request, Bytes::from(vec![b'a'; size]))
    }
}

fn bench_address(c: &mut Criterion) {
    let addresser = Addresser::new(SecretKey::from_bytes([7; 32]), SecretKey::from_bytes([8; 32]));
    let namespace = addresser.namespace_for_credential(b"Bearer sk-bench");
    let mut group = c.benchmark_group("address");
    for size in [KIB, 4 * KIB, 16 * KIB] {
        let body = request_body(size);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::new("normalize+address", size / KIB * KIB), &body, |b, body| {
            b.iter(|| {
                let request = normalize("/v1/chat/completions", black_box(body)).unwrap();
                addresser.address(&namespace, &request)
            })
        });
        let request = normalize("/v1/chat/completions", &body).unwrap();
        group.bench_with_input(BenchmarkId::new("address_only", size), &request, |b, request| {
            b.iter(|| addresser.address(&namespace, black_box(request)))
        });
    }
    group.finish();
}

fn bench_crypto(c: &mut Criterion) {
    let key = DataKey::new(1, &SecretKey::from_bytes([3; 32]));
    let address = Address([5; 32]);
    let mut group = c.benchmark_group("aes256gcm");
    for size in [KIB, 32 * KIB, 1024 * KIB] {
        let plaintext = vec![0x5Au8; size];
        let sealed = crypto::seal(&key, &address, &plaintext);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("seal", size), &plaintext, |b, p| {
            b.iter(|| crypto::seal(&key, &address, black_box(p)))
        });
        group.bench_with_input(BenchmarkId::new("open", size), &sealed, |b, s| {
            b.iter(|| {
                let mut v = s.clone();
                crypto::open_in_place(&key, &address, &mut v).unwrap();
                v
            })
        });
    }
    group.finish();
}

fn bench_store(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let secret = StoreSecret::passphrase("bench passphrase").unwrap();
    let engine = bench_engine();
    let options = StoreOptions { create_if_missing: true, engine, ..StoreOptions::default() };
    let store = Store::open(&dir.path().join("store"), &secret, options).unwrap();
    let addresser = store.addresser();
    let mut group = c.benchmark_group(format!("store-{}", engine.unwrap_or_default()));
    for size in [KIB, 32 * KIB, 1024 * KIB] {
        let record = record_with_answer(size);
        group.throughput(Throughput::Bytes(size as u64));
        // put: a rotating set of addresses, so the tree grows like a real store's.
        let mut i = 0u64;
        group.bench_with_input(BenchmarkId::new("put", size), &record, |b, record| {
            b.iter(|| {
                i = (i + 1) % 1000;
                let request =
                    normalize("/v1/chat/completions", format!("{{\"i\":{i},\"s\":{size}}}").as_bytes()).unwrap();
                store.put(&addresser.address(&Namespace::shared(), &request), record).unwrap();
            })
        });
        let address = addresser.address(&Namespace::shared(), &record.request);
        store.put(&address, &record).unwrap();
        group.bench_with_input(BenchmarkId::new("get", size), &address, |b, address| {
            b.iter(|| store.get(black_box(address)).unwrap().unwrap())
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench_address, bench_crypto, bench_store
}
criterion_main!(benches);
