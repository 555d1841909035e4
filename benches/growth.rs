//! How the store's costs grow with its size (issue 6): open time, size on disk, and hit
//! latency at 10k, 100k and 1M entries of 1 KiB answers.
//!
//! Run: `cargo bench --bench growth` (env `GROWTH_SIZES=10000,100000` to pick sizes; the 1M
//! step takes a few minutes and about 2 GB of disk).
//!
//! Per engine (docs/storage.md): `HOLDFAST_BENCH_ENGINE=redb cargo bench --features engine-redb
//! --bench growth` (or `fjall` with `engine-fjall`; default sled). The store is filled by
//! `GROWTH_WRITERS` threads (default 8) in the default durable mode, as concurrent misses fill
//! it, so "fill" is the miss path's write rate with group commit; `put p50` is one writer's
//! durable put alone (one group commit each).

use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use holdfast::cache_key::address::{Address, Namespace};
use holdfast::cache_key::normalize::normalize;
use holdfast::secret::StoreSecret;
use holdfast::store::record::Record;
use holdfast::store::{Store, StoreOptions};

#[path = "support/engine.rs"]
mod engine;
#[path = "support/record.rs"]
mod record;
use engine::bench_engine;
use record::answered;

fn record(i: u64) -> Record {
    let request = normalize("/v1/chat/completions", format!("{{\"model\":\"m\",\"i\":{i}}}").as_bytes()).unwrap();
    answered(request, Bytes::from(vec![b'a'; 1024]))
}

fn du(path: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![path.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let m = e.metadata().unwrap();
            if m.is_dir() { stack.push(e.path()) } else { total += m.len() }
        }
    }
    total
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() {
    let sizes: Vec<u64> = std::env::var("GROWTH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10_000, 100_000, 1_000_000]);
    // A raw key, so open time is the store's own work, not Argon2id (about 40 ms more with a
    // passphrase at the default cost).
    let secret = StoreSecret::raw_key_base64("AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=").unwrap();
    let engine = bench_engine();
    let writers: u64 = std::env::var("GROWTH_WRITERS").ok().and_then(|w| w.parse().ok()).unwrap_or(8).max(1);
    println!("engine {}, {writers} writers", engine.unwrap_or_default());
    println!(
        "| entries | fill (s) | durable puts/s | put p50 (ms) | open (ms) | on disk | hit p50 (µs) | hit p99 (µs) | RSS after open |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for n in sizes {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let started = Instant::now();
        let sample: Vec<Address>;
        let put_p50;
        {
            let options = StoreOptions { create_if_missing: true, engine, ..Default::default() };
            let store = Store::open(&path, &secret, options).unwrap();
            let addresser = store.addresser();
            // Writer w stores entries w, w + writers, w + 2·writers, …
            sample = std::thread::scope(|scope| {
                let workers: Vec<_> = (0..writers)
                    .map(|w| {
                        let (store, addresser) = (&store, &addresser);
                        scope.spawn(move || {
                            let mut mine = Vec::new();
                            for i in (w..n).step_by(writers as usize) {
                                let rec = record(i);
                                let address = addresser.address(&Namespace::shared(), &rec.request);
                                store.put(&address, &rec).unwrap();
                                if i % (n / 1000).max(1) == 0 {
                                    mine.push(address);
                                }
                            }
                            mine
                        })
                    })
                    .collect();
                workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
            });
            store.flush().unwrap();
            // One writer alone: each durable put waits for its own group commit.
            let mut puts: Vec<f64> = (0..200)
                .map(|i| {
                    let rec = record(n + 1_000_000_000 + i);
                    let address = addresser.address(&Namespace::shared(), &rec.request);
                    let t = Instant::now();
                    store.put(&address, &rec).unwrap();
                    t.elapsed().as_secs_f64() * 1000.0
                })
                .collect();
            puts.sort_by(|a, b| a.total_cmp(b));
            put_p50 = puts[puts.len() / 2];
        }
        let fill = started.elapsed().as_secs_f64();
        let opened = Instant::now();
        let store = Store::open(&path, &secret, StoreOptions::default()).unwrap();
        let open_ms = opened.elapsed().as_secs_f64() * 1000.0;
        let rss = rss_mib();
        assert_eq!(store.stats().entries, n + 200);
        // Warm pass, then timed passes over the sampled addresses (spread over the key space).
        for a in &sample {
            black_box(store.get(a).unwrap().unwrap());
        }
        let mut times: Vec<f64> = Vec::new();
        for _ in 0..10 {
            for a in &sample {
                let t = Instant::now();
                black_box(store.get(a).unwrap().unwrap());
                times.push(t.elapsed().as_secs_f64() * 1e6);
            }
        }
        times.sort_by(|a, b| a.total_cmp(b));
        let pct = |p: f64| times[((times.len() - 1) as f64 * p) as usize];
        println!(
            "| {n} | {fill:.1} | {:.0} | {put_p50:.2} | {open_ms:.0} | {:.1} MiB | {:.2} | {:.2} | {rss:.0} MiB |",
            n as f64 / fill,
            du(&path) as f64 / 1048576.0,
            pct(0.5),
            pct(0.99)
        );
    }
}
