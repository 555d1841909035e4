//! End-to-end load benchmark (issue 6): Holdfast against the bare HTTP limit of this machine.
//!
//! Run: `cargo bench --bench load` (env `LOAD_SECONDS`, default 5 per scenario).
//!
//! To compare builds in one run (the same baseline, the same machine state), set
//! `LOAD_PROXIES=before=/path/to/old/holdfast,after=target/release/holdfast`: every scenario
//! then runs against each binary in turn. `LOAD_ONLY=hit,stream` picks scenarios (`hit`,
//! `stream`, `miss`, `nostore`, `503`, `refused`, `redis-hit`, `redis-miss`; the baseline always
//! runs) and
//! `LOAD_SIZES=1024` the answer sizes. Each proxy's pid is printed, for `perf record -p`.
//!
//! Other proxies can be measured beside Holdfast with the same generator (benches/peers.sh
//! does this): `LOAD_UPSTREAM_PORT` fixes the fake upstream's port so they can be configured
//! against it, and `LOAD_PEERS="label=host:port|header:value|…;…"` lists them. Each peer gets
//! the hit scenario (recorded prompts, after one pass through it to fill its cache) and the
//! no-store scenario (fresh prompts, passed through).
//!
//! One process per role, all on loopback: this binary runs a lean fake upstream and the load
//! generator (64 keep-alive HTTP/1.1 connections); the `holdfast` release binary runs as a
//! child process. For 1 KiB and 32 KiB answers it measures, in one run:
//! - baseline: the fake upstream hit directly (the bare HTTP limit here);
//! - (a) a stored-answer hit in `cache-first` mode;
//! - (b) a miss: every request new, passed through to the fake upstream and stored;
//! - (c) serve-on-failure with the upstream refusing connections;
//! - (d) serve-on-failure with the upstream answering 503;
//! - (e) a streamed hit;
//! - (b′) a miss with `Cache-Control: no-store`, to separate forwarding from storing;
//! - (f) a hit and (g) a miss through a Redis-backed store, each without and with the
//!   in-process hot cache (`redis-hit`, `redis-miss`): the bench starts its own memory-only
//!   `redis-server` on a free port (PATH or `HOLDFAST_REDIS_SERVER`; without one these rows are
//!   skipped with a message) and two replicas on it, one with `hot_cache_bytes = 0`.
//!
//! It prints throughput and p50/p99/p99.9 latency, each as a ratio to the baseline, and the
//! proxy's resident memory.

#[path = "support/proxy_process.rs"]
mod proxy_process;
#[path = "support/redis_server.rs"]
mod redis_server;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use proxy_process::Proxy;
use tokio::net::{TcpListener, TcpStream};

const CONNECTIONS: usize = 64;
const PROMPTS: usize = 200;

/// What the fake upstream does now.
const UP: u8 = 0;
const ERR_503: u8 = 1;

struct Upstream {
    json: Bytes,
    sse: Bytes,
    mode: AtomicU8,
}

/// An OpenAI-shaped answer whose body is about `size` bytes, in both forms.
fn answers(size: usize) -> (Bytes, Bytes) {
    let filler = "x".repeat(size.saturating_sub(260));
    let json = serde_json::json!({"id": "chatcmpl-load", "object": "chat.completion", "created": 0, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": filler}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}});
    let mut sse = String::new();
    for piece in filler.as_bytes().chunks(1024) {
        let chunk = serde_json::json!({"id": "chatcmpl-load", "object": "chat.completion.chunk", "created": 0, "model": "m",
            "choices": [{"index": 0, "delta": {"content": std::str::from_utf8(piece).unwrap()}, "finish_reason": null}]});
        sse.push_str(&format!("data: {chunk}\n\n"));
    }
    sse.push_str("data: [DONE]\n\n");
    (Bytes::from(json.to_string()), Bytes::from(sse))
}

async fn upstream_handle(up: Arc<Upstream>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    if up.mode.load(Ordering::Relaxed) == ERR_503 {
        let mut r = Response::new(Full::new(Bytes::from_static(
            b"{\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}",
        )));
        *r.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
        r.headers_mut().insert("content-type", "application/json".parse().unwrap());
        return Ok(r);
    }
    let stream = body.windows(13).any(|w| w == b"\"stream\":true");
    let (payload, ct) =
        if stream { (up.sse.clone(), "text/event-stream") } else { (up.json.clone(), "application/json") };
    let mut r = Response::new(Full::new(payload));
    r.headers_mut().insert("content-type", ct.parse().unwrap());
    Ok(r)
}

/// Serves until the returned handle is aborted (which closes the port: connections refused).
async fn start_upstream(listener: TcpListener, up: Arc<Upstream>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let up = up.clone();
            connections.spawn(async move {
                let service = hyper::service::service_fn(move |req| upstream_handle(up.clone(), req));
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    })
}

/// One scenario's requests: the path and headers, and a body for the n-th request.
struct Load {
    addr: SocketAddr,
    headers: Vec<(&'static str, &'static str)>,
    body: Arc<dyn Fn(u64) -> Bytes + Send + Sync>,
}

struct Measured {
    requests: u64,
    errors: u64,
    seconds: f64,
    p50: f64,
    p99: f64,
    p999: f64,
}

impl Measured {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.seconds
    }
}

/// Drives `CONNECTIONS` keep-alive connections for `secs` seconds after a 1 s warm-up.
async fn drive(load: Arc<Load>, secs: f64) -> Measured {
    let counter = Arc::new(AtomicU64::new(0));
    let warm_until = Instant::now() + Duration::from_secs(1);
    let stop_at = warm_until + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let (load, counter) = (load.clone(), counter.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies: Vec<u32> = Vec::with_capacity(100_000);
            let mut errors = 0u64;
            let Ok(stream) = TcpStream::connect(load.addr).await else { return (latencies, 1) };
            let _ = stream.set_nodelay(true);
            let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await else {
                return (latencies, 1);
            };
            tokio::spawn(conn);
            loop {
                let now = Instant::now();
                if now >= stop_at {
                    break;
                }
                let n = counter.fetch_add(1, Ordering::Relaxed);
                // HTTP/1.1 requires Host; Holdfast and the fake do not check, but peers' servers
                // (uvicorn, Node) refuse a request without it and close the connection.
                let mut req = Request::post("/v1/chat/completions")
                    .header("host", load.addr.to_string())
                    .header("content-type", "application/json");
                for (k, v) in &load.headers {
                    req = req.header(*k, *v);
                }
                let req = req.body(Full::new((load.body)(n))).unwrap();
                let ok = match sender.send_request(req).await {
                    Ok(resp) => {
                        let status = resp.status();
                        resp.into_body().collect().await.is_ok() && status.is_success()
                    }
                    Err(_) => false,
                };
                if now >= warm_until {
                    if ok {
                        latencies.push(now.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    } else {
                        errors += 1;
                    }
                }
                if !ok && sender.ready().await.is_err() {
                    // A connection the server closed is an error even during the warm-up, so
                    // a proxy that refuses everything cannot read as 0 errors.
                    errors += u64::from(now < warm_until);
                    break;
                }
            }
            (latencies, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap();
        all.extend(l);
        errors += e;
    }
    all.sort_unstable();
    let pct =
        |p: f64| if all.is_empty() { f64::NAN } else { all[((all.len() - 1) as f64 * p) as usize] as f64 / 1000.0 };
    Measured { requests: all.len() as u64, errors, seconds: secs, p50: pct(0.50), p99: pct(0.99), p999: pct(0.999) }
}

fn chat_body(prompt: &str, stream: bool) -> Bytes {
    Bytes::from(
        serde_json::json!({"model": "gpt-load", "stream": stream, "messages": [{"role": "user", "content": prompt}]})
            .to_string(),
    )
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

async fn start_proxy(binary: &str, upstream: SocketAddr) -> Proxy {
    // `HOLDFAST_BENCH_ENGINE=redb` (with `--features engine-redb`) measures another engine.
    let engine = std::env::var("HOLDFAST_BENCH_ENGINE").map(|e| format!("engine = \"{e}\"")).unwrap_or_default();
    proxy_process::start(binary, upstream, &engine).await
}

/// A proxy other than Holdfast: where it listens and the headers each request needs.
struct Peer {
    label: String,
    addr: SocketAddr,
    headers: Vec<(&'static str, &'static str)>,
}

fn peers() -> Vec<Peer> {
    let leak = |s: &str| -> &'static str { Box::leak(s.to_owned().into_boxed_str()) };
    std::env::var("LOAD_PEERS")
        .unwrap_or_default()
        .split(';')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut parts = p.split('|');
            let (label, addr) =
                parts.next().and_then(|first| first.split_once('=')).expect("LOAD_PEERS: label=host:port");
            let headers = parts
                .map(|h| {
                    let (k, v) = h.split_once(':').expect("LOAD_PEERS: header:value");
                    (leak(k), leak(v))
                })
                .collect();
            Peer { label: label.to_owned(), addr: addr.parse().expect("LOAD_PEERS: host:port"), headers }
        })
        .collect()
}

async fn record(proxy: SocketAddr, prompts: &[String], stream: bool) {
    record_with(proxy, &[], prompts, stream).await
}

async fn record_with(proxy: SocketAddr, headers: &[(&'static str, &'static str)], prompts: &[String], stream: bool) {
    let client = reqwest::Client::new();
    for p in prompts {
        let mut r = client.post(format!("http://{proxy}/v1/chat/completions"));
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let r = r.header("content-type", "application/json").body(chat_body(p, stream)).send().await.unwrap();
        assert!(r.status().is_success());
        r.bytes().await.unwrap();
    }
}

fn row(name: &str, m: &Measured, base: &Measured) -> String {
    format!(
        "| {name} | {:.0} | {:.2} | {:.3} | {:.3} | {:.2} | {:.3} | +{:.3} | {} |",
        m.rps(),
        m.rps() / base.rps(),
        m.p50,
        m.p99,
        m.p99 / base.p99,
        m.p999,
        m.p50 - base.p50,
        m.errors
    )
}

/// The binaries to measure, as (label, path): `LOAD_PROXIES`, or this tree's `holdfast`.
fn proxies() -> Vec<(String, String)> {
    match std::env::var("LOAD_PROXIES") {
        Ok(list) if !list.is_empty() => list
            .split(',')
            .map(|item| match item.split_once('=') {
                Some((label, path)) => (label.to_owned(), path.to_owned()),
                None => (item.to_owned(), item.to_owned()),
            })
            .collect(),
        _ => vec![(String::new(), env!("CARGO_BIN_EXE_holdfast").to_owned())],
    }
}

fn wanted(scenario: &str) -> bool {
    std::env::var("LOAD_ONLY").map_or(true, |only| only.split(',').any(|s| s == scenario))
}

fn main() {
    let secs: f64 = std::env::var("LOAD_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async move {
        println!(
            "load: {CONNECTIONS} connections, {secs} s per scenario after 1 s warm-up, {} cores",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        let sizes: Vec<usize> = std::env::var("LOAD_SIZES")
            .map(|s| s.split(',').filter_map(|n| n.parse().ok()).collect())
            .unwrap_or_else(|_| vec![1024, 32 * 1024]);
        let binaries = proxies();
        let others = peers();
        for size in sizes {
            let (json, sse) = answers(size);
            let up = Arc::new(Upstream { json, sse, mode: AtomicU8::new(UP) });
            let port: u16 = std::env::var("LOAD_UPSTREAM_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(0);
            let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
            let up_addr = listener.local_addr().unwrap();
            let server = start_upstream(listener, up.clone()).await;
            let prompts: Arc<Vec<String>> = Arc::new((0..PROMPTS).map(|i| format!("load prompt {i}")).collect());
            let stream_prompts: Vec<String> = prompts.iter().map(|p| format!("{p} streamed")).collect();
            let mut running = Vec::new();
            for (label, binary) in &binaries {
                let proxy = start_proxy(binary, up_addr).await;
                record(proxy.addr, &prompts, false).await;
                record(proxy.addr, &stream_prompts, true).await;
                println!("proxy {label:?} ({binary}) pid {}", proxy.child.id());
                running.push((label.clone(), proxy));
            }
            // The Redis-backed replicas: per binary, one without and one with the hot cache, on
            // one store (the prefix keeps sizes and binaries apart).
            let redis = if wanted("redis-hit") || wanted("redis-miss") { redis_server::RedisServer::start() } else { None };
            let mut on_redis = Vec::new();
            if let Some(redis) = &redis {
                println!("redis-server pid {} on port {}", redis.pid(), redis.port);
                for (n, (label, binary)) in binaries.iter().enumerate() {
                    let store = format!("backend = \"redis\"\nurl = \"{}\"\nkey_prefix = \"load-{size}-{n}:\"\n", redis.url());
                    let cold = proxy_process::start(binary, up_addr, &format!("{store}hot_cache_bytes = 0\n")).await;
                    let hot = proxy_process::start(binary, up_addr, &store).await;
                    record(cold.addr, &prompts, false).await;
                    println!("proxy {label:?} on Redis: no hot cache pid {}, hot cache pid {}", cold.child.id(), hot.child.id());
                    on_redis.push((label.clone(), cold, hot));
                }
            }

            let recorded = |stream: bool| {
                let prompts = prompts.clone();
                let suffix = if stream { " streamed" } else { "" };
                Arc::new(move |n: u64| chat_body(&format!("{}{suffix}", prompts[n as usize % PROMPTS]), stream))
                    as Arc<dyn Fn(u64) -> Bytes + Send + Sync>
            };
            let scenario =
                |addr, headers: Vec<(&'static str, &'static str)>, body| Arc::new(Load { addr, headers, body });
            let base = drive(scenario(up_addr, vec![], recorded(false)), secs).await;
            let mut rows: Vec<(String, Measured)> = Vec::new();
            let name = |label: &str, scenario: &str| {
                if label.is_empty() { scenario.to_owned() } else { format!("{scenario} [{label}]") }
            };
            let cache_first = vec![("x-holdfast-mode", "cache-first")];
            type Body = Arc<dyn Fn(u64) -> Bytes + Send + Sync>;
            type Headers = Vec<(&'static str, &'static str)>;
            let live: [(&str, &str, Headers, Body); 4] = [
                ("hit", "(a) hit, cache-first", cache_first.clone(), recorded(false)),
                ("stream", "(e) streamed hit", cache_first.clone(), recorded(true)),
                ("miss", "(b) miss, passed through and stored", vec![], Arc::new(|n: u64| chat_body(&format!("fresh prompt {n}"), false))),
                ("nostore", "(b′) miss with no-store (forwarding alone)", vec![("cache-control", "no-store")], Arc::new(|n: u64| chat_body(&format!("unstored prompt {n}"), false))),
            ];
            for (key, title, headers, body) in live {
                if !wanted(key) {
                    continue;
                }
                for (label, proxy) in &running {
                    let m = drive(scenario(proxy.addr, headers.clone(), body.clone()), secs).await;
                    rows.push((name(label, title), m));
                }
                if key == "hit" || key == "nostore" {
                    for peer in &others {
                        let mut headers = peer.headers.clone();
                        if key == "hit" {
                            // One pass through the peer fills its cache with the recorded prompts.
                            record_with(peer.addr, &headers, &prompts, false).await;
                        } else {
                            headers.push(("cache-control", "no-store"));
                        }
                        let m = drive(scenario(peer.addr, headers, body.clone()), secs).await;
                        rows.push((name(&peer.label, title), m));
                    }
                }
            }
            let redis_rows: [(&str, &str, Headers, Body); 2] = [
                ("redis-hit", "(f) hit through Redis, cache-first", cache_first.clone(), recorded(false)),
                ("redis-miss", "(g) miss through Redis, passed through and stored", vec![], Arc::new(|n: u64| chat_body(&format!("fresh redis prompt {n}"), false))),
            ];
            for (key, title, headers, body) in redis_rows {
                if !wanted(key) {
                    continue;
                }
                for (label, cold, hot) in &on_redis {
                    for (proxy, cache) in [(cold, "no hot cache"), (hot, "hot cache")] {
                        let m = drive(scenario(proxy.addr, headers.clone(), body.clone()), secs).await;
                        rows.push((name(label, &format!("{title}, {cache}")), m));
                    }
                }
            }
            if wanted("503") {
                up.mode.store(ERR_503, Ordering::Relaxed);
                for (label, proxy) in &running {
                    let m = drive(scenario(proxy.addr, vec![], recorded(false)), secs).await;
                    rows.push((name(label, "(d) upstream 503: stale"), m));
                }
                up.mode.store(UP, Ordering::Relaxed);
            }
            server.abort();
            let _ = server.await;
            if wanted("refused") {
                for (label, proxy) in &running {
                    let m = drive(scenario(proxy.addr, vec![], recorded(false)), secs).await;
                    rows.push((name(label, "(c) upstream refusing: stale"), m));
                }
            }

            println!("\n### {} KiB answers\n", size / 1024);
            println!("| scenario | req/s | × baseline | p50 ms | p99 ms | p99 × baseline | p99.9 ms | p50 added ms | errors |");
            println!("|---|---|---|---|---|---|---|---|---|");
            println!("{}", row("baseline: fake upstream direct", &base, &base));
            for (title, m) in &rows {
                println!("{}", row(title, m, &base));
            }
            for (label, proxy) in &running {
                println!("\nholdfast {label} resident memory after the run: {:.1} MiB", rss_mib(proxy.child.id()));
            }
            for (label, cold, hot) in &on_redis {
                println!(
                    "holdfast {label} on Redis resident memory: {:.1} MiB without, {:.1} MiB with the hot cache",
                    rss_mib(cold.child.id()),
                    rss_mib(hot.child.id())
                );
            }
            if let Some(redis) = &redis {
                println!("redis-server resident memory: {:.1} MiB", rss_mib(redis.pid()));
            }
        }
    });
}
