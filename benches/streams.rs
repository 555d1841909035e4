//! Streams at scale (issue 15, item 1): thousands of concurrent streaming clients through
//! Holdfast to a provider that emits one small event every 20 ms, 200 events per stream.
//!
//! Run: `cargo bench --bench streams` (env `STREAMS_N=1000,5000,9800` picks the stream counts,
//! `STREAMS_EVENTS` and `STREAMS_INTERVAL_MS` the stream shape, `STREAMS_KILL=0` skips the run
//! with the provider killed mid-stream).
//!
//! Three processes share the machine: this binary as the client generator, the same binary
//! again as the fake provider (`STREAMS_ROLE=provider`), and the `holdfast` release binary.
//! Splitting the generator from the provider gives each its own open-file budget (this machine's
//! hard limit is 20 000 per process, and 10 000 streams are 10 000 sockets on each side).
//! Every event carries the provider's wall-clock send time in nanoseconds; the client subtracts
//! it from its own receive time (one machine, one clock), which is the event's delay.
//!
//! Per N it first measures the provider directly (the generator's own floor), then through
//! Holdfast: Holdfast's peak resident memory (total and per open stream), the CPU it used
//! (cores: user + system time over wall time), event delay p50/p99/p99.9, and errors (a stream
//! that did not end with `[DONE]` after all its events). Then it runs the same N again with the
//! same prompts (now stored) and kills the provider halfway: each stream is counted as completed
//! (rescued or served from the store), cut, or refused.

#[path = "support/proxy_process.rs"]
mod proxy_process;

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use proxy_process::Proxy;
use tokio::net::{TcpListener, TcpStream};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// Raises this process's open-file limit to its hard limit (children inherit it).
fn raise_open_files() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let _ = setrlimit(Resource::Nofile, Rlimit { current: limit.maximum, maximum: limit.maximum });
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

// ---------------------------------------------------------------------------------------------
// The provider (a child process)

/// One streamed answer: an OpenAI chunk every interval, stamped with its send time.
struct Events {
    tick: tokio::time::Interval,
    left: u32,
    done: bool,
}

impl Body for Events {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            if self.done {
                return Poll::Ready(None);
            }
            self.done = true;
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"data: [DONE]\n\n")))));
        }
        if self.tick.poll_tick(cx).is_pending() {
            return Poll::Pending;
        }
        self.left -= 1;
        let event = format!(
            "data: {{\"id\":\"chatcmpl-s\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":\"m\",\
             \"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"t={};\"}},\"finish_reason\":null}}]}}\n\n",
            now_ns()
        );
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(event)))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

type ProviderBody = http_body_util::Either<Events, Full<Bytes>>;

async fn provide(
    req: Request<Incoming>,
    events: u32,
    interval: Duration,
) -> Result<Response<ProviderBody>, Infallible> {
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    if !body.windows(13).any(|w| w == b"\"stream\":true") {
        let json = r#"{"id":"x","object":"chat.completion","created":0,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}]}"#;
        let mut r = Response::new(http_body_util::Either::Right(Full::new(Bytes::from_static(json.as_bytes()))));
        r.headers_mut().insert("content-type", "application/json".parse().unwrap());
        return Ok(r);
    }
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut r = Response::new(http_body_util::Either::Left(Events { tick, left: events, done: false }));
    r.headers_mut().insert("content-type", "text/event-stream".parse().unwrap());
    Ok(r)
}

fn run_provider() {
    raise_open_files();
    let events: u32 = env_or("STREAMS_EVENTS", 200);
    let interval = Duration::from_millis(env_or("STREAMS_INTERVAL_MS", 20));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    runtime.block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("{}", listener.local_addr().unwrap());
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| provide(req, events, interval));
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
}

struct Provider {
    child: Child,
    addr: SocketAddr,
}

impl Provider {
    fn start() -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env("STREAMS_ROLE", "provider")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the provider");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        Self { child, addr: line.trim().parse().expect("provider address") }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------------
// Holdfast (a child process)

async fn start_proxy(upstream: SocketAddr) -> Proxy {
    let limits = "[limits]\nmax_in_flight = 50000\nmax_connections = 50000";
    proxy_process::start(env!("CARGO_BIN_EXE_holdfast"), upstream, limits).await
}

/// (resident KiB, user + system CPU seconds) of a process.
fn usage(pid: u32) -> (u64, f64) {
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0);
    let cpu = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
            let rest = s.rsplit_once(") ")?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / 100.0)
        })
        .unwrap_or(0.0);
    (rss, cpu)
}

// ---------------------------------------------------------------------------------------------
// The client generator

#[derive(Default)]
struct Outcome {
    /// Event delays in microseconds.
    delays: Vec<u32>,
    completed: u64,
    /// Streams that began but ended without `[DONE]` (or short of events).
    cut: u64,
    /// Streams that got no stream at all (connect failure or a non-200 answer).
    refused: u64,
}

/// Event send stamps (`t=<ns>;`) found in one received frame.
fn stamps(frame: &[u8], mut each: impl FnMut(u64)) {
    let mut i = 0;
    while i + 2 < frame.len() {
        if frame[i] == b't' && frame[i + 1] == b'=' {
            let mut j = i + 2;
            let mut value = 0u64;
            while j < frame.len() && frame[j].is_ascii_digit() {
                value = value * 10 + u64::from(frame[j] - b'0');
                j += 1;
            }
            if j < frame.len() && frame[j] == b';' {
                each(value);
            }
            i = j;
        } else {
            i += 1;
        }
    }
}

async fn one_stream(addr: SocketAddr, prompt: String, events: u32, open: Arc<AtomicU64>) -> Outcome {
    let mut out = Outcome::default();
    let Ok(stream) = TcpStream::connect(addr).await else {
        out.refused = 1;
        return out;
    };
    let _ = stream.set_nodelay(true);
    let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await else {
        out.refused = 1;
        return out;
    };
    tokio::spawn(conn);
    let body =
        serde_json::json!({"model": "gpt-stream", "stream": true, "messages": [{"role": "user", "content": prompt}]})
            .to_string();
    let req = Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .header("host", "bench")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = match sender.send_request(req).await {
        Ok(r) if r.status().is_success() => r,
        _ => {
            out.refused = 1;
            return out;
        }
    };
    open.fetch_add(1, Ordering::Relaxed);
    let mut body = resp.into_body();
    let (mut seen, mut done) = (0u32, false);
    out.delays.reserve(events as usize);
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        let Some(data) = frame.data_ref() else { continue };
        let now = now_ns();
        stamps(data, |t| {
            seen += 1;
            out.delays.push((now.saturating_sub(t) / 1000).min(u64::from(u32::MAX)) as u32);
        });
        if data.windows(6).any(|w| w == b"[DONE]") {
            done = true;
        }
    }
    open.fetch_sub(1, Ordering::Relaxed);
    if done && seen >= events {
        out.completed = 1
    } else {
        out.cut = 1
    }
    out
}

struct Run {
    outcome: Outcome,
    /// Most streams open at once.
    peak_open: u64,
    /// Holdfast's peak resident KiB, and its resident KiB before the run.
    peak_rss_kib: u64,
    idle_rss_kib: u64,
    /// Holdfast's cores used over the run.
    cores: f64,
    seconds: f64,
}

/// Opens `n` streams spread over `ramp`, and waits for all of them. `kill_after` kills the
/// provider that long after the first stream opened.
async fn run(
    addr: SocketAddr,
    n: usize,
    tag: &str,
    events: u32,
    ramp: Duration,
    watch: Option<u32>,
    kill: Option<(Duration, &mut Provider)>,
) -> Run {
    let open = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (idle_rss_kib, cpu_before) = watch.map_or((0, 0.0), usage);
    let peak = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let sampler = {
        let (open, stop, peak) = (open.clone(), stop.clone(), peak.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                peak.0.fetch_max(open.load(Ordering::Relaxed), Ordering::Relaxed);
                if let Some(pid) = watch {
                    peak.1.fetch_max(usage(pid).0, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let at = started + ramp.mul_f64(i as f64 / n as f64);
        let open = open.clone();
        let prompt = format!("{tag} stream {i}");
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            one_stream(addr, prompt, events, open).await
        }));
    }
    if let Some((after, provider)) = kill {
        tokio::time::sleep_until((started + after).into()).await;
        provider.kill();
    }
    let mut outcome = Outcome::default();
    for t in tasks {
        let o = t.await.unwrap();
        outcome.delays.extend(o.delays);
        outcome.completed += o.completed;
        outcome.cut += o.cut;
        outcome.refused += o.refused;
    }
    let seconds = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    let cores = watch.map_or(0.0, |pid| (usage(pid).1 - cpu_before) / seconds);
    outcome.delays.sort_unstable();
    Run {
        outcome,
        peak_open: peak.0.load(Ordering::Relaxed),
        peak_rss_kib: peak.1.load(Ordering::Relaxed),
        idle_rss_kib,
        cores,
        seconds,
    }
}

fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p) as usize] as f64 / 1000.0
}

fn main() {
    if std::env::var("STREAMS_ROLE").as_deref() == Ok("provider") {
        return run_provider();
    }
    let files = raise_open_files();
    let counts: Vec<usize> = std::env::var("STREAMS_N")
        .map(|s| s.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_else(|_| vec![1_000, 5_000, 9_800]);
    let events: u32 = env_or("STREAMS_EVENTS", 200);
    let interval: u64 = env_or("STREAMS_INTERVAL_MS", 20);
    let kill = env_or("STREAMS_KILL", 1) != 0;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async move {
        println!(
            "streams: {events} events every {interval} ms per stream; open-file limit {files}; {} cores",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        println!(
            "\n| N | path | peak open | completed | cut | refused | delay p50 ms | p99 ms | p99.9 ms | \
             holdfast RSS peak MiB | KiB per stream | holdfast cores | wall s |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        for n in counts {
            // Spread the opening over a quarter of a stream's life, so all N are open together.
            let ramp = Duration::from_millis(u64::from(events) * interval / 4);
            let mut provider = Provider::start();
            let direct = run(provider.addr, n, "direct", events, ramp, None, None).await;
            print_row(n, "provider direct", &direct);
            let proxy = start_proxy(provider.addr).await;
            let pid = proxy.child.id();
            let through = run(proxy.addr, n, "through", events, ramp, Some(pid), None).await;
            print_row(n, "through holdfast", &through);
            if kill {
                // Let stored answers finish their durable write before the outage.
                tokio::time::sleep(Duration::from_secs(2)).await;
                let after = Duration::from_millis(u64::from(events) * interval / 2);
                let killed = run(proxy.addr, n, "through", events, ramp, Some(pid), Some((after, &mut provider))).await;
                print_row(n, "through holdfast, provider killed at half time", &killed);
            }
        }
    });
}

fn print_row(n: usize, path: &str, r: &Run) {
    let o = &r.outcome;
    let (rss, per) = if r.peak_rss_kib > 0 {
        let per = r.peak_rss_kib.saturating_sub(r.idle_rss_kib) as f64 / r.peak_open.max(1) as f64;
        (format!("{:.0}", r.peak_rss_kib as f64 / 1024.0), format!("{per:.1}"))
    } else {
        ("—".into(), "—".into())
    };
    let cores = if r.peak_rss_kib > 0 { format!("{:.2}", r.cores) } else { "—".into() };
    println!(
        "| {n} | {path} | {} | {} | {} | {} | {:.3} | {:.3} | {:.3} | {rss} | {per} | {cores} | {:.1} |",
        r.peak_open,
        o.completed,
        o.cut,
        o.refused,
        pct(&o.delays, 0.50),
        pct(&o.delays, 0.99),
        pct(&o.delays, 0.999),
        r.seconds
    );
}
