//! The shared store on a real `redis-server`: two `holdfast serve` replicas (real processes)
//! on one Redis, each test with its own Redis on a free loopback port.
//!
//! `redis-server` is found on PATH (or `HOLDFAST_REDIS_SERVER`); without it these tests skip
//! loudly, and fail when `CI` is set (`.ci/run` installs it).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{PASSPHRASE, self_signed_cert};
use crate::fake_upstream::FakeUpstream;

/// The `redis-server` binary, if there is one.
fn redis_server_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HOLDFAST_REDIS_SERVER") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join("redis-server")).find(|p| p.is_file())
}

/// A `redis-server` of the test's own on 127.0.0.1, persisting to a temp dir (appendfsync
/// always), so a kill and restart keeps what it had acknowledged, as a production Redis with
/// AOF does.
struct RedisServer {
    binary: PathBuf,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one, or says why the test is skipped (`None`).
    fn start(test: &str) -> Option<RedisServer> {
        let Some(binary) = redis_server_binary() else {
            assert!(std::env::var_os("CI").is_none(), "CI must provide redis-server (.ci/run installs it)");
            eprintln!(
                "SKIPPED {test}: redis-server is not installed (apt-get install redis-server, or set HOLDFAST_REDIS_SERVER)"
            );
            return None;
        };
        let port = free_port();
        let mut server = RedisServer { binary, port, dir: tempfile::tempdir().unwrap(), child: None };
        server.launch();
        Some(server)
    }

    fn launch(&mut self) {
        let child = Command::new(&self.binary)
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string(), "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--protected-mode", "yes"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let started = Instant::now();
        while self.ping().is_err() {
            assert!(started.elapsed() < Duration::from_secs(10), "redis-server did not come up on {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn ping(&self) -> redis::RedisResult<()> {
        let mut conn = redis::Client::open(self.url())?.get_connection()?;
        redis::cmd("PING").query::<String>(&mut conn).map(|_| ())
    }

    /// SIGKILL: no shutdown, no last save beyond what AOF already has.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port with the same data.
    fn restart(&mut self) {
        self.kill();
        self.launch();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A `holdfast serve` process on the shared store. Its log is collected (and checked for
/// secrets) by a thread that keeps the pipe drained.
struct Replica {
    url: String,
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

fn config_text(redis_url: &str, upstream: &str, extra: &str) -> String {
    config_text_on(&format!("url = \"{redis_url}\""), upstream, extra)
}

/// The configuration with `location` (a `url = …` or `cluster = […]` line) for the store.
fn config_text_on(location: &str, upstream: &str, extra: &str) -> String {
    format!(
        r#"
listen = "127.0.0.1:0"
[store]
backend = "redis"
{location}
key_prefix = "hf-test:"
{extra}
[cache]
mode = "fallback"
{}"#,
        crate::common::fake_providers(upstream)
    )
}

fn holdfast(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_holdfast"));
    c.current_dir(dir).env_remove("HOLDFAST_KEY").env_remove("HOLDFAST_CONFIG").env_remove("HOLDFAST_STORE_URL");
    c.env("HOLDFAST_PASSPHRASE", PASSPHRASE).env("RUST_LOG", "info");
    c
}

impl Replica {
    fn start(redis: &RedisServer, upstream: &str) -> Replica {
        Self::start_with(redis, upstream, "")
    }

    /// As `start`, with `extra` lines in its `[store]` section.
    fn start_with(redis: &RedisServer, upstream: &str, extra: &str) -> Replica {
        Self::start_on(&format!("url = \"{}\"", redis.url()), upstream, extra)
    }

    /// A replica on the store at `location` (a `url = …` or `cluster = […]` line).
    fn start_on(location: &str, upstream: &str, extra: &str) -> Replica {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("holdfast.toml"), config_text_on(location, upstream, extra)).unwrap();
        let mut child = holdfast(dir.path()).arg("serve").stderr(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or_default().to_owned());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let url = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| {
            panic!("replica did not start listening:\n{}", log.lock().unwrap().join("\n"));
        });
        Replica { url, child, log, _dir: dir }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `holdfast` against the shared store (no server involved) and returns stdout.
fn admin(redis: &RedisServer, args: &[&str]) -> String {
    admin_on(&format!("url = \"{}\"", redis.url()), args)
}

/// What admin commands add to their config: a test machine running several Redis servers,
/// replicas under load and builds at once can take longer than the default 50 ms lookup and
/// 500 ms write timeouts, and a command gives up after the first call that runs out
/// (docs/deployment.md). What is tested here is what the commands do, not how fast.
const ADMIN_STORE: &str = "timeout = \"2s\"";

/// As `admin`, against the store at `location` (a `url = …` or `cluster = […]` line).
fn admin_on(location: &str, args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let config = config_text_on(location, "http://127.0.0.1:9", ADMIN_STORE);
    std::fs::write(dir.path().join("holdfast.toml"), config).unwrap();
    let out = holdfast(dir.path()).args(args).output().unwrap();
    assert!(out.status.success(), "holdfast {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[derive(Clone, Copy, Debug)]
enum Dialect {
    OpenAi,
    Anthropic,
}

fn post(url: &str, dialect: Dialect, prompt: &str, stream: bool, credential: &str) -> reqwest::RequestBuilder {
    let client = crate::common::http();
    match dialect {
        Dialect::OpenAi => client.post(format!("{url}/v1/chat/completions")).bearer_auth(credential).json(
            &json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}], "stream": stream}),
        ),
        Dialect::Anthropic => client
            .post(format!("{url}/v1/messages"))
            .header("x-api-key", credential)
            .header("anthropic-version", "2023-06-01")
            .json(&json!({"model": "claude-haiku-4-5", "max_tokens": 64,
                "messages": [{"role": "user", "content": prompt}], "stream": stream})),
    }
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned()
}

/// Every key under any prefix, with its serialized value (DUMP works for every type).
fn everything_in(redis: &RedisServer) -> Vec<(Vec<u8>, Vec<u8>)> {
    everything_at(&redis.url())
}

/// As `everything_in`, for the Redis at `url` (one node of a cluster: its keys only).
fn everything_at(url: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut conn = redis::Client::open(url).unwrap().get_connection().unwrap();
    let mut cursor = 0u64;
    let mut all = Vec::new();
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) =
            redis::cmd("SCAN").arg(cursor).arg("COUNT").arg(500).query(&mut conn).unwrap();
        for key in keys {
            let dumped: Option<Vec<u8>> = redis::cmd("DUMP").arg(&key).query(&mut conn).unwrap();
            let ty: String = redis::cmd("TYPE").arg(&key).query(&mut conn).unwrap();
            let mut value = dumped.unwrap_or_default();
            if ty == "string" {
                let plain: Option<Vec<u8>> = redis::cmd("GET").arg(&key).query(&mut conn).unwrap();
                value.extend(plain.unwrap_or_default());
            } else if ty == "list" {
                let items: Vec<Vec<u8>> = redis::cmd("LRANGE").arg(&key).arg(0).arg(-1).query(&mut conn).unwrap();
                items.into_iter().for_each(|i| value.extend(i));
            }
            all.push((key, value));
        }
        if next == 0 {
            return all;
        }
        cursor = next;
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_answer_recorded_by_one_replica_is_served_stale_by_the_other() {
    let Some(redis) = RedisServer::start("an_answer_recorded_by_one_replica_is_served_stale_by_the_other") else {
        return;
    };
    let upstream = FakeUpstream::start().await;
    let a = Replica::start(&redis, &upstream.base_url());
    let b = Replica::start(&redis, &upstream.base_url());
    let mut recorded = Vec::new();
    for dialect in [Dialect::OpenAi, Dialect::Anthropic] {
        for stream in [false, true] {
            let prompt = format!("shared {dialect:?} stream={stream}");
            let live = post(&a.url, dialect, &prompt, stream, "sk-tenant-one").send().await.unwrap();
            assert_eq!(live.status(), 200, "{dialect:?} stream={stream}");
            assert_eq!(header(&live, "x-holdfast-cache"), "miss");
            let key = header(&live, "x-holdfast-key");
            recorded.push((dialect, stream, prompt, key, live.bytes().await.unwrap()));
        }
    }
    upstream.down().await;
    for (dialect, stream, prompt, key, live_bytes) in &recorded {
        let stale = post(&b.url, *dialect, prompt, *stream, "sk-tenant-one").send().await.unwrap();
        assert_eq!(stale.status(), 200, "{dialect:?} stream={stream}: replica B did not serve A's answer");
        assert_eq!(header(&stale, "x-holdfast-cache"), "stale", "{dialect:?} stream={stream}");
        assert_eq!(&header(&stale, "x-holdfast-key"), key);
        assert_eq!(&stale.bytes().await.unwrap(), live_bytes, "{dialect:?} stream={stream}: not byte-for-byte");

        // Another tenant asking the same through B gets nothing of tenant one's.
        let other = post(&b.url, *dialect, prompt, *stream, "sk-tenant-two").send().await.unwrap();
        assert_ne!(other.status(), 200, "{dialect:?} stream={stream}: another tenant was served tenant one's answer");
        assert_ne!(header(&other, "x-holdfast-cache"), "stale");
    }
    // And the other way round: what B records, A serves, each tenant only its own.
    upstream.up().await;
    let live = post(&b.url, Dialect::OpenAi, "recorded by b", false, "sk-tenant-two").send().await.unwrap();
    assert_eq!(live.status(), 200);
    upstream.down().await;
    let stale = post(&a.url, Dialect::OpenAi, "recorded by b", false, "sk-tenant-two").send().await.unwrap();
    assert_eq!((stale.status().as_u16(), header(&stale, "x-holdfast-cache")), (200, "stale".to_owned()));
    let other = post(&a.url, Dialect::OpenAi, "recorded by b", false, "sk-tenant-one").send().await.unwrap();
    assert_ne!(other.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_readable_reaches_redis() {
    let Some(redis) = RedisServer::start("nothing_readable_reaches_redis") else { return };
    let upstream = FakeUpstream::start().await;
    let a = Replica::start(&redis, &upstream.base_url());
    let b = Replica::start(&redis, &upstream.base_url());
    let prompt = "canary prompt 7f3a9c: the launch code is swordfish-4711";
    let credential = "sk-canary-client-credential-91b2e7";
    for (replica, dialect, stream) in
        [(&a, Dialect::OpenAi, false), (&b, Dialect::OpenAi, true), (&a, Dialect::Anthropic, true)]
    {
        let r = post(&replica.url, dialect, prompt, stream, credential).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let _ = r.bytes().await.unwrap();
    }
    // Admin commands write the trail and re-seal entries.
    admin(&redis, &["keys", "rotate", "--reencrypt"]);
    admin(&redis, &["audit", "list"]);
    let everything = everything_in(&redis);
    assert!(everything.len() >= 8, "expected entries, keyring, settings and trail in Redis: {}", everything.len());
    let answer = format!("echo: {prompt}");
    let needles: [(&str, &[u8]); 6] = [
        ("the prompt", prompt.as_bytes()),
        ("a piece of the prompt", b"swordfish-4711"),
        ("the answer", answer.as_bytes()),
        ("the client credential", credential.as_bytes()),
        ("the passphrase", PASSPHRASE.as_bytes()),
        ("the model name", b"claude-haiku-4-5"),
    ];
    for (key, value) in &everything {
        for (what, needle) in needles {
            assert!(!contains(key, needle), "{what} is in a Redis key name: {}", String::from_utf8_lossy(key));
            assert!(!contains(value, needle), "{what} is readable in Redis key {}", String::from_utf8_lossy(key));
        }
    }
    for replica in [&a, &b] {
        let log = replica.log();
        assert!(!log.contains(PASSPHRASE) && !log.contains(credential), "a secret reached a replica's log");
    }
}

/// Sends `requests` distinct requests, `parallel` at a time, to the replicas in turn; returns
/// the statuses that were not 200 (with the error body).
async fn load(urls: Vec<String>, tag: &str, requests: usize, parallel: usize) -> Vec<String> {
    let failures = Arc::new(Mutex::new(Vec::new()));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..parallel)
        .map(|_| {
            let (urls, failures, next, tag) = (urls.clone(), failures.clone(), next.clone(), tag.to_owned());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= requests {
                        return;
                    }
                    let url = &urls[i % urls.len()];
                    let dialect = if i % 2 == 0 { Dialect::OpenAi } else { Dialect::Anthropic };
                    match post(url, dialect, &format!("{tag} {i}"), i % 3 == 0, "sk-load").send().await {
                        Ok(r) if r.status() == 200 => {
                            if let Err(e) = r.bytes().await {
                                failures.lock().unwrap().push(format!("request {i}: body cut: {e}"));
                            }
                        }
                        Ok(r) => {
                            let status = r.status();
                            let body = r.text().await.unwrap_or_default();
                            failures.lock().unwrap().push(format!("request {i}: {status} {body}"));
                        }
                        Err(e) => failures.lock().unwrap().push(format!("request {i}: {e}")),
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    Arc::try_unwrap(failures).unwrap().into_inner().unwrap()
}

/// The data key that seals the entry at `key` (hex address), read through the library.
fn sealing_key(redis: &RedisServer, key: &str) -> Option<u32> {
    sealing_key_at(&redis.url(), &[], key)
}

/// As `sealing_key`, on the Redis at `url` or on the cluster of `nodes`.
fn sealing_key_at(url: &str, nodes: &[String], key: &str) -> Option<u32> {
    let target = holdfast::store::RedisTarget {
        url: zeroize::Zeroizing::new(url.to_owned()),
        cluster: nodes.iter().map(|n| zeroize::Zeroizing::new(n.clone())).collect(),
        key_prefix: "hf-test:".into(),
        timeout: Duration::from_secs(2),
        ttl: None,
        hot_cache: Default::default(),
    };
    let store = holdfast::store::Store::open_redis(&target, &crate::common::passphrase(), Default::default()).unwrap();
    let entry = store.get(&key.parse().unwrap()).unwrap()?;
    Some(entry.meta.key_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rotation_by_an_admin_command_reaches_both_serving_replicas_without_a_failed_request() {
    let Some(redis) =
        RedisServer::start("a_rotation_by_an_admin_command_reaches_both_serving_replicas_without_a_failed_request")
    else {
        return;
    };
    let upstream = FakeUpstream::start().await;
    let a = Replica::start(&redis, &upstream.base_url());
    let b = Replica::start(&redis, &upstream.base_url());
    let urls = vec![a.url.clone(), b.url.clone()];
    let under_load = tokio::spawn(load(urls.clone(), "before and during rotation", 600, 8));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rotated = tokio::task::spawn_blocking({
        let redis_url = redis.url();
        move || {
            let dir = tempfile::tempdir().unwrap();
            let text = config_text(&redis_url, "http://127.0.0.1:9", ADMIN_STORE);
            std::fs::write(dir.path().join("holdfast.toml"), text).unwrap();
            holdfast(dir.path()).args(["keys", "rotate", "--reencrypt"]).output().unwrap()
        }
    })
    .await
    .unwrap();
    assert!(rotated.status.success(), "keys rotate failed: {}", String::from_utf8_lossy(&rotated.stderr));
    let failures = under_load.await.unwrap();
    assert!(
        failures.is_empty(),
        "{} requests failed during the rotation: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );

    // Within seconds, and without a restart, both replicas seal new answers under key 2.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (name, replica) in [("A", &a), ("B", &b)] {
        let r = post(&replica.url, Dialect::OpenAi, &format!("after rotation via {name}"), false, "sk-load")
            .send()
            .await
            .unwrap();
        assert_eq!((r.status().as_u16(), header(&r, "x-holdfast-cache")), (200, "miss".to_owned()));
        let key = header(&r, "x-holdfast-key");
        let redis_ref = &redis;
        let sealed_by = tokio::task::block_in_place(|| sealing_key(redis_ref, &key));
        assert_eq!(sealed_by, Some(2), "replica {name} still seals with the old key after the rotation");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_killed_mid_load_costs_no_request_and_recording_resumes_when_it_is_back() {
    let Some(mut redis) =
        RedisServer::start("redis_killed_mid_load_costs_no_request_and_recording_resumes_when_it_is_back")
    else {
        return;
    };
    let upstream = FakeUpstream::start().await;
    let a = Replica::start(&redis, &upstream.base_url());
    let b = Replica::start(&redis, &upstream.base_url());
    let urls = vec![a.url.clone(), b.url.clone()];
    let ready = |url: String| async move {
        let r = crate::common::http().get(format!("{url}/readyz")).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    assert_eq!(ready(a.url.clone()).await.0, 200);

    let under_load = tokio::spawn(load(urls.clone(), "while redis dies", 400, 8));
    tokio::time::sleep(Duration::from_millis(200)).await;
    redis.kill();
    let started = Instant::now();
    let failures = under_load.await.unwrap();
    assert!(
        failures.is_empty(),
        "{} requests failed with Redis down: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    // Redis down adds at most the lookup timeout to a request.
    let slow = Instant::now();
    let r = post(&a.url, Dialect::OpenAi, "with redis down", false, "sk-load").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(slow.elapsed() < Duration::from_secs(2), "a request took {:?} with Redis down", slow.elapsed());
    for replica in [&a, &b] {
        let (status, body) = ready(replica.url.clone()).await;
        assert_eq!(status, 503, "/readyz must report the store unreachable: {body}");
        assert!(body.contains("store not readable") && body.contains("Redis"), "{body}");
    }
    eprintln!("load with Redis down finished {:?} after the kill", started.elapsed());

    redis.restart();
    // Reconnects by itself: ready again, and new answers are recorded and shared.
    let back = Instant::now();
    loop {
        if ready(a.url.clone()).await.0 == 200 && ready(b.url.clone()).await.0 == 200 {
            break;
        }
        assert!(back.elapsed() < Duration::from_secs(20), "replicas did not reconnect to Redis");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let live =
        post(&a.url, Dialect::Anthropic, "recorded after redis came back", false, "sk-load").send().await.unwrap();
    assert_eq!(live.status(), 200);
    let live_bytes = live.bytes().await.unwrap();
    upstream.down().await;
    let stale =
        post(&b.url, Dialect::Anthropic, "recorded after redis came back", false, "sk-load").send().await.unwrap();
    assert_eq!((stale.status().as_u16(), header(&stale, "x-holdfast-cache")), (200, "stale".to_owned()));
    assert_eq!(stale.bytes().await.unwrap(), live_bytes);
    for replica in [&a, &b] {
        let log = replica.log();
        let reported = log.matches("the Redis store is failing").count();
        let other_errors: Vec<&str> =
            log.lines().filter(|l| l.contains("ERROR") && !l.contains("the Redis store is failing")).collect();
        assert!(
            reported >= 1 && other_errors.is_empty(),
            "an outage is logged once per interval by the store, not per request ({reported} reports):\n{}",
            other_errors.join("\n")
        );
    }
}

#[test]
fn init_against_redis_creates_once_and_admin_commands_run_without_a_server() {
    let Some(redis) = RedisServer::start("init_against_redis_creates_once_and_admin_commands_run_without_a_server")
    else {
        return;
    };
    let out = admin(&redis, &["init"]);
    assert!(out.contains("created store at redis://127.0.0.1"), "{out}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("holdfast.toml"), config_text(&redis.url(), "http://127.0.0.1:9", "")).unwrap();
    let again = holdfast(dir.path()).arg("init").output().unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    let wrong = holdfast(dir.path()).args(["cache", "stats"]).env("HOLDFAST_PASSPHRASE", "not it").output().unwrap();
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("wrong passphrase"), "{wrong:?}");
    admin(&redis, &["keys", "rotate"]);
    let trail = admin(&redis, &["audit", "trail", "--verify"]);
    assert!(trail.contains("chain verified"), "{trail}");
    let stats = admin(&redis, &["cache", "stats", "--json"]);
    assert!(serde_json::from_str::<Value>(&stats).is_ok(), "{stats}");
    let verify = admin(&redis, &["cache", "verify"]);
    assert!(!verify.is_empty());
    // The password in a URL never reaches a message.
    let bad = holdfast(dir.path())
        .args(["cache", "stats"])
        .env("HOLDFAST_STORE_URL", "redis://user:hunter2-secret@127.0.0.1:1/0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot use the Redis store") && !stderr.contains("hunter2"), "{stderr}");
}

#[test]
fn a_rediss_url_reaches_redis_over_tls_and_checks_its_certificate() {
    let Some(binary) = redis_server_binary() else {
        assert!(std::env::var_os("CI").is_none(), "CI must provide redis-server (.ci/run installs it)");
        eprintln!("SKIPPED a_rediss_url_reaches_redis_over_tls_and_checks_its_certificate: no redis-server");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed_cert(dir.path());
    let port = free_port();
    let mut server = Command::new(binary)
        .args(["--bind", "127.0.0.1", "--port", "0", "--tls-port", &port.to_string(), "--save", ""])
        .arg("--tls-cert-file")
        .arg(&cert)
        .arg("--tls-key-file")
        .arg(&key)
        .args(["--tls-auth-clients", "no"])
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("rediss://127.0.0.1:{port}/0");
    std::fs::write(dir.path().join("holdfast.toml"), config_text(&url, "http://127.0.0.1:9", "")).unwrap();
    let run = |args: &[&str], trust: bool| {
        let mut c = holdfast(dir.path());
        c.args(args);
        if trust {
            // rustls-native-certs reads the trust roots from SSL_CERT_FILE when it is set.
            c.env("SSL_CERT_FILE", &cert);
        } else {
            c.env("SSL_CERT_FILE", dir.path().join("no-roots.pem"));
        }
        c.output().unwrap()
    };
    let started = Instant::now();
    let created = loop {
        let out = run(&["init"], true);
        if out.status.success() || started.elapsed() > Duration::from_secs(10) {
            break out;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(created.status.success(), "init over TLS failed: {}", String::from_utf8_lossy(&created.stderr));
    let stats = run(&["cache", "stats", "--json"], true);
    assert!(stats.status.success(), "{}", String::from_utf8_lossy(&stats.stderr));
    let untrusted = run(&["cache", "stats"], false);
    assert_eq!(untrusted.status.code(), Some(1), "a certificate nobody vouches for must be refused");
    assert!(String::from_utf8_lossy(&untrusted.stderr).contains("cannot use the Redis store"));
    let _ = server.kill();
    let _ = server.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_purge_against_redis_stops_a_replica_serving_its_hot_copy_within_the_maximum_age() {
    let Some(redis) =
        RedisServer::start("a_purge_against_redis_stops_a_replica_serving_its_hot_copy_within_the_maximum_age")
    else {
        return;
    };
    let max_age = Duration::from_secs(5);
    let upstream = FakeUpstream::start().await;
    let uncached = Replica::start_with(&redis, &upstream.base_url(), "hot_cache_bytes = 0");
    let hot = Replica::start_with(&redis, &upstream.base_url(), "hot_cache_max_age = \"5s\"");
    let prompt = "purged while hot";
    let live = post(&uncached.url, Dialect::OpenAi, prompt, false, "sk-tenant-one").send().await.unwrap();
    assert_eq!(live.status(), 200);
    let _ = live.bytes().await.unwrap();
    upstream.down().await;
    let served = |url: String| async move {
        let r = post(&url, Dialect::OpenAi, prompt, false, "sk-tenant-one").send().await.unwrap();
        r.status() == 200 && header(&r, "x-holdfast-cache") == "stale"
    };
    // The hot replica reads the entry from Redis once and then serves it from memory.
    assert!(served(hot.url.clone()).await, "the replica with the hot cache did not serve the stored answer");
    let read_from_redis = Instant::now();
    assert!(served(hot.url.clone()).await);
    assert!(served(uncached.url.clone()).await);
    // Another tenant's request is a different address: nothing from the hot copy.
    let other = post(&hot.url, Dialect::OpenAi, prompt, false, "sk-tenant-two").send().await.unwrap();
    assert_ne!(other.status(), 200, "another tenant was served from the hot cache");

    let redis_ref = &redis;
    let purged = tokio::task::block_in_place(|| admin(redis_ref, &["cache", "purge", "--all", "--yes"]));
    assert!(purged.contains("purged 1"), "{purged}");
    let after_purge = Instant::now();
    assert!(!served(uncached.url.clone()).await, "a replica without the hot cache served a purged entry");
    if read_from_redis.elapsed() < max_age - Duration::from_secs(1) {
        // Proof that the copy in memory is what answers: Redis no longer has it.
        assert!(served(hot.url.clone()).await, "the hot copy was not used (or the purge was seen at once)");
    } else {
        eprintln!("the purge took {:?}: too slow to see the hot copy in use", after_purge - read_from_redis);
    }
    loop {
        if !served(hot.url.clone()).await {
            break;
        }
        assert!(
            // The bound, plus the time one request takes on a busy machine.
            read_from_redis.elapsed() < max_age + Duration::from_secs(1),
            "a purged entry was still served {:?} after it was read from Redis (maximum age {max_age:?})",
            read_from_redis.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        after_purge.elapsed() <= max_age + Duration::from_secs(1),
        "the purge was honoured only after {:?}",
        after_purge.elapsed()
    );
    // And it stays gone.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!served(hot.url.clone()).await);
}

mod cluster;
