//! What durable acknowledgement costs on the miss path: `Store::put` of 1 KiB answers by 1 and
//! by 32 concurrent writers, in `durable` (group commit) and `relaxed` mode.
//!
//! Run: `cargo bench --bench durability` (`DURABILITY_PUTS` per writer, default 200). Prints
//! answers stored per second and the p50 / p99 time a writer waits in `put`. Figures are in
//! docs/performance.md.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use holdfast::cache_key::address::Namespace;
use holdfast::cache_key::normalize::normalize;
use holdfast::secret::StoreSecret;
use holdfast::store::record::{Record, ResponseBody, StoredResponse};
use holdfast::store::{Durability, Store, StoreOptions};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn record(i: usize) -> Record {
    let body = format!(r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"question {i}"}}]}}"#);
    Record {
        request: normalize("/v1/chat/completions", body.as_bytes()).unwrap(),
        namespace: None,
        response: StoredResponse {
            status: 200,
            content_type: "application/json".into(),
            body: ResponseBody::Complete(Bytes::from(vec![b'a'; 1024])),
        },
        provider: "openai".into(),
        model: "gpt-4o-mini".into(),
        created_ms: 1_700_000_000_000,
        upstream_latency_ms: 300,
        usage: None,
    }
}

fn run(durability: Durability, writers: usize, puts: usize) {
    let dir = tempfile::tempdir().unwrap();
    let secret = StoreSecret::raw_key_base64("AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=").unwrap();
    let options = StoreOptions { create_if_missing: true, durability, ..StoreOptions::default() };
    let store = Arc::new(Store::open(&dir.path().join("s"), &secret, options).unwrap());
    let started = Instant::now();
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut waits = Vec::with_capacity(puts);
                for i in 0..puts {
                    let record = record(w * 1_000_000 + i);
                    let address = store.address(&Namespace::shared(), &record.request);
                    let t = Instant::now();
                    store.put(&address, &record).unwrap();
                    waits.push(t.elapsed());
                }
                waits
            })
        })
        .collect();
    let mut waits: Vec<Duration> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let elapsed = started.elapsed();
    waits.sort();
    let pct = |p: f64| waits[((waits.len() as f64 * p) as usize).min(waits.len() - 1)];
    println!(
        "{durability:?} writers={writers:>2}: {:>7.0} answers/s, put p50 {:>8.1?} p99 {:>8.1?}",
        waits.len() as f64 / elapsed.as_secs_f64(),
        pct(0.5),
        pct(0.99)
    );
}

fn main() {
    let puts: usize = std::env::var("DURABILITY_PUTS").ok().and_then(|s| s.parse().ok()).unwrap_or(200);
    for writers in [1, 32] {
        for durability in [Durability::Relaxed, Durability::Durable] {
            run(durability, writers, puts);
        }
    }
}
