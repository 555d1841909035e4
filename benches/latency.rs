//! Open-loop latency and the outage flood (issue 15, items 2 and 3).
//!
//! Run: `cargo bench --bench latency` (env `LATENCY_RATES=1000,5000,20000`, `LATENCY_SECONDS`
//! per cell, default 3; `LATENCY_PARTS=open,flood` picks the parts).
//!
//! **Open loop.** Requests of about 1 KiB are sent at a fixed rate on a schedule: a dispatcher
//! thread sleeps until each request's send time and hands it to the runtime, which sends it on
//! an idle keep-alive connection (or a new one). A request's latency runs from its *scheduled*
//! time, so a slow answer cannot hold the next sends back and hide its own queueing
//! (coordinated omission). Per rate: the fake provider hit directly (the baseline), a stored
//! answer (`cache-first`), a miss against a provider that takes 50 ms (with its own direct
//! baseline of that provider), and a stale answer with the provider down (connections refused).
//!
//! **Outage flood.** 64 closed-loop keep-alive connections send recorded prompts in the default
//! `fallback` mode (upstream first); after 1 s the provider is killed (its port closed, its
//! connections dropped) and the run goes on for 5 s. Completions, errors and p99 latency are
//! reported in 100 ms buckets around the kill.

#[path = "support/proxy_process.rs"]
mod proxy_process;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use proxy_process::Proxy;
use tokio::net::{TcpListener, TcpStream};

const PROMPTS: usize = 200;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// An OpenAI-shaped answer of about 1 KiB.
fn answer() -> Bytes {
    let json = serde_json::json!({"id": "chatcmpl-lat", "object": "chat.completion", "created": 0, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "x".repeat(764)}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}});
    Bytes::from(json.to_string())
}

/// A fake provider answering every request after `delay`; stops (port closed, connections
/// dropped) when the handle is aborted.
async fn start_upstream(delay: Duration) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let body = answer();
    let handle = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            let body = body.clone();
            connections.spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let body = body.clone();
                    async move {
                        let _ = req.into_body().collect().await;
                        if !delay.is_zero() {
                            tokio::time::sleep(delay).await;
                        }
                        let mut r = Response::new(Full::new(body));
                        r.headers_mut().insert("content-type", "application/json".parse().unwrap());
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    (addr, handle)
}

async fn start_proxy(upstream: SocketAddr) -> Proxy {
    proxy_process::start(env!("CARGO_BIN_EXE_holdfast"), upstream, "").await
}

fn chat_body(prompt: &str) -> Bytes {
    // Padded to about 1 KiB of request.
    let pad = "p".repeat(900);
    Bytes::from(
        serde_json::json!({"model": "gpt-lat", "messages": [{"role": "system", "content": pad}, {"role": "user", "content": prompt}]})
            .to_string(),
    )
}

async fn connect(addr: SocketAddr) -> Option<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr).await.ok()?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.ok()?;
    tokio::spawn(conn);
    Some(sender)
}

async fn send(sender: &mut SendRequest<Full<Bytes>>, headers: &[(&'static str, &'static str)], body: Bytes) -> bool {
    let mut req = Request::post("/v1/chat/completions").header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    match sender.send_request(req.body(Full::new(body)).unwrap()).await {
        Ok(resp) => {
            let ok = resp.status().is_success();
            resp.into_body().collect().await.is_ok() && ok
        }
        Err(_) => false,
    }
}

struct OpenLoop {
    /// Latencies from the scheduled send time, in µs, sorted.
    latencies: Vec<u32>,
    errors: u64,
    /// Requests still unanswered when the run's grace period ended.
    unfinished: u64,
}

/// Sends `rate` requests a second for `secs` seconds on schedule; see the module docs.
async fn open_loop(
    addr: SocketAddr,
    rate: u64,
    secs: f64,
    headers: Vec<(&'static str, &'static str)>,
    body: Arc<dyn Fn(u64) -> Bytes + Send + Sync>,
) -> OpenLoop {
    let total = (rate as f64 * secs) as u64;
    let period = Duration::from_secs_f64(1.0 / rate as f64);
    let idle: Arc<Mutex<Vec<SendRequest<Full<Bytes>>>>> = Arc::new(Mutex::new(Vec::new()));
    // Warm a few connections so the first sends do not all pay a connect.
    for _ in 0..16 {
        if let Some(c) = connect(addr).await {
            idle.lock().unwrap().push(c);
        }
    }
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(total as usize)));
    let (errors, done) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
    let start = Instant::now() + Duration::from_millis(20);
    // The schedule runs on its own thread: nanosleep keeps to tens of µs, tokio's timer to 1 ms.
    let dispatcher = std::thread::spawn(move || {
        for i in 0..total {
            let at = start + period.mul_f64(i as f64);
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            if tx.send((i, at)).is_err() {
                break;
            }
        }
    });
    let headers = Arc::new(headers);
    while let Some((i, at)) = rx.recv().await {
        let (idle, latencies, errors, done, headers) =
            (idle.clone(), latencies.clone(), errors.clone(), done.clone(), headers.clone());
        let request_body = body(i);
        tokio::spawn(async move {
            let pooled = idle.lock().unwrap().pop();
            let sender = match pooled {
                Some(s) => Some(s),
                None => connect(addr).await,
            };
            let ok = match sender {
                Some(mut s) => {
                    let ok = send(&mut s, &headers, request_body).await;
                    if ok {
                        idle.lock().unwrap().push(s);
                    }
                    ok
                }
                None => false,
            };
            if ok {
                latencies.lock().unwrap().push(at.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
            } else {
                errors.fetch_add(1, Ordering::Relaxed);
            }
            done.fetch_add(1, Ordering::Relaxed);
        });
    }
    let _ = dispatcher.join();
    let grace = Instant::now() + Duration::from_secs(10);
    while done.load(Ordering::Relaxed) < total && Instant::now() < grace {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let unfinished = total - done.load(Ordering::Relaxed);
    let mut latencies = std::mem::take(&mut *latencies.lock().unwrap());
    latencies.sort_unstable();
    OpenLoop { latencies, errors: errors.load(Ordering::Relaxed), unfinished }
}

fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p) as usize] as f64 / 1000.0
}

async fn record(proxy: SocketAddr, prompts: &[String]) {
    let client = reqwest::Client::new();
    for p in prompts {
        let r = client
            .post(format!("http://{proxy}/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(chat_body(p))
            .send()
            .await
            .expect("send a recording request");
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        assert!(status.is_success(), "recording failed: {status} {text}");
    }
}

async fn open_part(rates: &[u64], secs: f64) {
    let (fast, _fast_server) = start_upstream(Duration::ZERO).await;
    let (slow, _slow_server) = start_upstream(Duration::from_millis(50)).await;
    let (doomed, doomed_server) = start_upstream(Duration::ZERO).await;
    let hit_proxy = start_proxy(fast).await;
    let miss_proxy = start_proxy(slow).await;
    let stale_proxy = start_proxy(doomed).await;
    let prompts: Arc<Vec<String>> = Arc::new((0..PROMPTS).map(|i| format!("latency prompt {i}")).collect());
    record(hit_proxy.addr, &prompts).await;
    record(stale_proxy.addr, &prompts).await;
    doomed_server.abort();
    let _ = doomed_server.await;
    let recorded = {
        let prompts = prompts.clone();
        Arc::new(move |n: u64| chat_body(&prompts[n as usize % PROMPTS])) as Arc<dyn Fn(u64) -> Bytes + Send + Sync>
    };
    println!("\n### Open loop, 1 KiB requests and answers, {secs} s per cell\n");
    println!(
        "| rate req/s | scenario | p50 ms | p99 ms | p99.9 ms | added p50 ms | added p99 ms | added p99.9 ms | errors | unfinished |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for &rate in rates {
        let base = open_loop(fast, rate, secs, vec![], recorded.clone()).await;
        let hit =
            open_loop(hit_proxy.addr, rate, secs, vec![("x-holdfast-mode", "cache-first")], recorded.clone()).await;
        let stale = open_loop(stale_proxy.addr, rate, secs, vec![], recorded.clone()).await;
        let slow_base = open_loop(slow, rate, secs, vec![], recorded.clone()).await;
        let fresh = Arc::new(move |n: u64| chat_body(&format!("fresh {rate} {n}")));
        let miss = open_loop(miss_proxy.addr, rate, secs, vec![], fresh).await;
        let line = |name: &str, m: &OpenLoop, b: &OpenLoop| {
            let (l, bl) = (&m.latencies, &b.latencies);
            println!(
                "| {rate} | {name} | {:.3} | {:.3} | {:.3} | {:+.3} | {:+.3} | {:+.3} | {} | {} |",
                pct(l, 0.5),
                pct(l, 0.99),
                pct(l, 0.999),
                pct(l, 0.5) - pct(bl, 0.5),
                pct(l, 0.99) - pct(bl, 0.99),
                pct(l, 0.999) - pct(bl, 0.999),
                m.errors,
                m.unfinished
            );
        };
        line("baseline: provider direct", &base, &base);
        line("hit (cache-first)", &hit, &base);
        line("stale, provider down", &stale, &base);
        line("baseline: 50 ms provider direct", &slow_base, &slow_base);
        line("miss, 50 ms provider (vs its direct baseline)", &miss, &slow_base);
    }
}

async fn flood_part() {
    const CONNECTIONS: usize = 64;
    const BUCKET_MS: u64 = 100;
    let (upstream, server) = start_upstream(Duration::ZERO).await;
    let proxy = start_proxy(upstream).await;
    let prompts: Arc<Vec<String>> = Arc::new((0..PROMPTS).map(|i| format!("flood prompt {i}")).collect());
    record(proxy.addr, &prompts).await;
    let start = Instant::now();
    let kill_at = start + Duration::from_secs(1);
    let stop_at = kill_at + Duration::from_secs(5);
    let buckets = ((stop_at - start).as_millis() as u64 / BUCKET_MS) as usize;
    // Per bucket: latencies (µs) of answered requests, and errors, by completion time.
    type Buckets = Vec<(Vec<u32>, u64)>;
    let results: Arc<Mutex<Buckets>> = Arc::new(Mutex::new(vec![(Vec::new(), 0); buckets]));
    let stop = Arc::new(AtomicBool::new(false));
    let counter = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let (results, stop, counter, prompts) = (results.clone(), stop.clone(), counter.clone(), prompts.clone());
        let addr = proxy.addr;
        tasks.push(tokio::spawn(async move {
            let mut sender = connect(addr).await;
            while !stop.load(Ordering::Relaxed) {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let sent = Instant::now();
                let ok = match &mut sender {
                    Some(s) => send(s, &[], chat_body(&prompts[n as usize % PROMPTS])).await,
                    None => false,
                };
                let done = Instant::now();
                if !ok {
                    // A broken connection is replaced, as a client's pool would.
                    sender = connect(addr).await;
                }
                let bucket = ((done - start).as_millis() as u64 / BUCKET_MS) as usize;
                let mut r = results.lock().unwrap();
                if let Some(b) = r.get_mut(bucket) {
                    if ok {
                        b.0.push((done - sent).as_micros().min(u128::from(u32::MAX)) as u32);
                    } else {
                        b.1 += 1;
                    }
                }
            }
        }));
    }
    tokio::time::sleep_until(kill_at.into()).await;
    server.abort();
    let _ = server.await;
    tokio::time::sleep_until(stop_at.into()).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    println!("\n### Outage flood: {CONNECTIONS} connections, provider killed at t = 0\n");
    println!("| t ms (bucket start) | req/s | errors | p50 ms | p99 ms |");
    println!("|---|---|---|---|---|");
    let mut results = std::mem::take(&mut *results.lock().unwrap());
    for (i, (latencies, errors)) in results.iter_mut().enumerate() {
        latencies.sort_unstable();
        let t = i as i64 * BUCKET_MS as i64 - 1000;
        println!(
            "| {t} | {:.0} | {errors} | {:.3} | {:.3} |",
            latencies.len() as f64 * 1000.0 / BUCKET_MS as f64,
            pct(latencies, 0.5),
            pct(latencies, 0.99)
        );
    }
}

fn main() {
    let rates: Vec<u64> = std::env::var("LATENCY_RATES")
        .map(|s| s.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_else(|_| vec![1_000, 5_000, 20_000]);
    let secs: f64 = env_or("LATENCY_SECONDS", 3.0);
    let parts = std::env::var("LATENCY_PARTS").unwrap_or_else(|_| "open,flood".into());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async move {
        println!("latency: {} cores", std::thread::available_parallelism().map_or(0, |n| n.get()));
        if parts.contains("open") {
            open_part(&rates, secs).await;
        }
        if parts.contains("flood") {
            flood_part().await;
        }
    });
}
