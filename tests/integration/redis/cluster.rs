//! The shared store on a real Redis Cluster: three local `redis-server --cluster-enabled yes`
//! nodes on free ports, joined by `redis-cli --cluster create` (about 3 s, so it runs in the
//! normal suite). Skips loudly without `redis-server` or `redis-cli`, fails instead when `CI` is
//! set (`.ci/run` installs both).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Dialect, Replica, admin_on, contains, everything_at, free_port, header, post, sealing_key_at};
use crate::common::PASSPHRASE;
use crate::fake_upstream::FakeUpstream;

struct Cluster {
    ports: Vec<u16>,
    nodes: Vec<Child>,
    dir: tempfile::TempDir,
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file())
}

impl Cluster {
    fn start(test: &str) -> Option<Cluster> {
        let server = std::env::var_os("HOLDFAST_REDIS_SERVER").map(PathBuf::from).or_else(|| on_path("redis-server"));
        let (Some(server), Some(cli)) = (server, on_path("redis-cli")) else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must provide redis-server and redis-cli (.ci/run installs them)"
            );
            eprintln!("SKIPPED {test}: redis-server or redis-cli is not installed (apt-get install redis-server)");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let mut cluster = Cluster { ports: ports.clone(), nodes: Vec::new(), dir };
        for port in &ports {
            let node_dir = cluster.dir.path().join(port.to_string());
            std::fs::create_dir(&node_dir).unwrap();
            let child = Command::new(&server)
                .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
                .args(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"])
                .args(["--cluster-node-timeout", "2000"])
                .arg("--dir")
                .arg(&node_dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start redis-server");
            cluster.nodes.push(child);
        }
        let started = Instant::now();
        for port in &ports {
            while std::net::TcpStream::connect(("127.0.0.1", *port)).is_err() {
                assert!(started.elapsed() < Duration::from_secs(10), "cluster node {port} did not come up");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let created = Command::new(cli)
            .arg("--cluster")
            .arg("create")
            .args(ports.iter().map(|p| format!("127.0.0.1:{p}")))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .unwrap();
        assert!(created.status.success(), "redis-cli --cluster create: {}", String::from_utf8_lossy(&created.stdout));
        while !cluster.ports.iter().all(|p| cluster_ok(*p)) {
            assert!(started.elapsed() < Duration::from_secs(30), "the cluster did not reach cluster_state:ok");
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("cluster of 3 nodes up in {:?}", started.elapsed());
        Some(cluster)
    }

    fn urls(&self) -> Vec<String> {
        self.ports.iter().map(|p| format!("redis://127.0.0.1:{p}")).collect()
    }

    /// The config line naming the cluster: two of the three nodes, as an operator might give
    /// (the client learns the third from them).
    fn location(&self) -> String {
        let nodes: Vec<String> = self.urls().iter().take(2).map(|u| format!("\"{u}\"")).collect();
        format!("cluster = [{}]", nodes.join(", "))
    }
}

fn cluster_ok(port: u16) -> bool {
    let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}")) else { return false };
    let Ok(mut conn) = client.get_connection() else { return false };
    redis::cmd("CLUSTER").arg("INFO").query::<String>(&mut conn).is_ok_and(|info| info.contains("cluster_state:ok"))
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.kill();
            let _ = node.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_share_answers_and_a_rotation_through_a_redis_cluster_and_nothing_readable_reaches_it() {
    let Some(cluster) = Cluster::start(
        "two_replicas_share_answers_and_a_rotation_through_a_redis_cluster_and_nothing_readable_reaches_it",
    ) else {
        return;
    };
    let location = cluster.location();
    let upstream = FakeUpstream::start().await;
    // No hot cache: every read below goes to the cluster. Three nodes beside two replicas
    // on a busy test machine can take longer than the 50 ms default lookup timeout; what is
    // tested here is sharing through the cluster, not latency (redis.rs tests that).
    let store = "hot_cache_bytes = 0\ntimeout = \"1s\"";
    let a = Replica::start_on(&location, &upstream.base_url(), store);
    let b = Replica::start_on(&location, &upstream.base_url(), store);
    let canary = "cluster canary 5d1e: the vault code is marmalade-2209";
    let credential = "sk-cluster-canary-credential-3c8d";
    let mut recorded = Vec::new();
    for n in 0..12 {
        let (dialect, stream) = ([Dialect::OpenAi, Dialect::Anthropic][n % 2], n % 3 == 0);
        let prompt = format!("{canary} #{n}");
        let live = post(&a.url, dialect, &prompt, stream, credential).send().await.unwrap();
        assert_eq!((live.status().as_u16(), header(&live, "x-holdfast-cache")), (200, "miss".to_owned()));
        recorded.push((dialect, stream, prompt, live.bytes().await.unwrap()));
    }
    upstream.down().await;
    for (dialect, stream, prompt, live_bytes) in &recorded {
        let stale = post(&b.url, *dialect, prompt, *stream, credential).send().await.unwrap();
        assert_eq!(
            (stale.status().as_u16(), header(&stale, "x-holdfast-cache")),
            (200, "stale".to_owned()),
            "replica B did not serve A's answer through the cluster ({dialect:?} stream={stream})"
        );
        assert_eq!(&stale.bytes().await.unwrap(), live_bytes);
        let other = post(&b.url, *dialect, prompt, *stream, "sk-another-tenant").send().await.unwrap();
        assert_ne!(other.status(), 200, "another tenant was served through the cluster");
    }

    // The entries are spread over the primaries, and the admin commands see them all (SCAN
    // visits every primary).
    let per_node: Vec<usize> = cluster
        .urls()
        .iter()
        .map(|u| everything_at(u).iter().filter(|(k, _)| k.starts_with(b"hf-test:m:{")).count())
        .collect();
    assert!(per_node.iter().filter(|n| **n > 0).count() >= 2, "entries all on one node: {per_node:?}");
    let location_ref = location.as_str();
    let stats = tokio::task::block_in_place(|| admin_on(location_ref, &["cache", "stats", "--json"]));
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["entries"], serde_json::json!(recorded.len()), "{stats}");

    // A rotation run directly against the cluster reaches both replicas.
    upstream.up().await;
    tokio::task::block_in_place(|| admin_on(location_ref, &["keys", "rotate", "--reencrypt"]));
    let trail = tokio::task::block_in_place(|| admin_on(location_ref, &["audit", "trail", "--verify"]));
    assert!(trail.contains("chain verified"), "{trail}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let urls = cluster.urls();
    for (name, replica) in [("A", &a), ("B", &b)] {
        let r =
            post(&replica.url, Dialect::OpenAi, &format!("after the cluster rotation via {name}"), false, credential)
                .send()
                .await
                .unwrap();
        assert_eq!((r.status().as_u16(), header(&r, "x-holdfast-cache")), (200, "miss".to_owned()));
        let key = header(&r, "x-holdfast-key");
        let sealed_by = tokio::task::block_in_place(|| sealing_key_at("", &urls, &key));
        assert_eq!(sealed_by, Some(2), "replica {name} still seals with the old key after the rotation");
    }
    upstream.down().await;
    let (dialect, stream, prompt, live_bytes) = &recorded[0];
    let resealed = post(&a.url, *dialect, prompt, *stream, credential).send().await.unwrap();
    assert_eq!(resealed.status(), 200, "a re-sealed entry no longer opens");
    assert_eq!(&resealed.bytes().await.unwrap(), live_bytes);

    // The canary scan, node by node.
    let answer = format!("echo: {canary}");
    let needles: [(&str, &[u8]); 5] = [
        ("the prompt", canary.as_bytes()),
        ("a piece of the prompt", b"marmalade-2209"),
        ("the answer", answer.as_bytes()),
        ("the client credential", credential.as_bytes()),
        ("the passphrase", PASSPHRASE.as_bytes()),
    ];
    let mut keys = 0;
    for url in &urls {
        for (key, value) in everything_at(url) {
            keys += 1;
            for (what, needle) in needles {
                assert!(!contains(&key, needle), "{what} is in a cluster key name: {}", String::from_utf8_lossy(&key));
                assert!(
                    !contains(&value, needle),
                    "{what} is readable in cluster key {}",
                    String::from_utf8_lossy(&key)
                );
            }
        }
    }
    assert!(keys >= 2 * recorded.len() + 4, "expected entries, keyring, settings and trail in the cluster: {keys}");
    for replica in [&a, &b] {
        let log = replica.log();
        assert!(!log.contains(PASSPHRASE) && !log.contains(credential), "a secret reached a replica's log");
    }
}
