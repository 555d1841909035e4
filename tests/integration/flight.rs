//! Single-flight: identical requests in flight together share one upstream call.

use std::time::{Duration, Instant};

use crate::common::*;
use crate::fake_upstream::{FakeUpstream, Fault};
use crate::streams::{chat, chat_text, header, read_stream};

async fn send(url: &str, body: &serde_json::Value, extra: &[(&str, &str)]) -> reqwest::Response {
    let mut request = http().post(format!("{url}/v1/chat/completions")).bearer_auth("sk-test").json(body);
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_identical_requests_make_one_upstream_call() {
    let upstream = FakeUpstream::start().await;
    let proxy = start_proxy(config_for(&upstream.base_url())).await;
    // The first token takes 1.5 s, so all fifty are in flight together.
    upstream.set_fault(Fault::SlowFirstToken(1500));
    let body = chat("one call for all", true);
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (url, body) = (proxy.url.clone(), body.clone());
            tokio::spawn(async move {
                let r = send(&url, &body, &[]).await;
                let cache = header(&r, "x-holdfast-cache");
                let (sse, clean) = read_stream(r).await;
                (cache, sse, clean)
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    assert_eq!(upstream.calls(), 1, "identical requests in flight share one call");
    let (_, first, _) = &answers[0];
    assert_eq!(chat_text(first), "echo: one call for all");
    for (cache, sse, clean) in &answers {
        assert!(clean, "{sse}");
        assert_eq!(sse, first, "every client gets the same answer, from the first byte");
        assert!(cache == "miss" || cache == "coalesced", "{cache}");
    }
    let coalesced = answers.iter().filter(|(cache, _, _)| cache == "coalesced").count();
    assert_eq!(coalesced, 49);
    let metrics = http().get(format!("{}/metrics", proxy.url)).send().await.unwrap().text().await.unwrap();
    let line = metrics.lines().find(|l| l.contains("cache=\"coalesced\"")).unwrap_or_else(|| panic!("{metrics}"));
    assert!(line.ends_with(" 49"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_with_a_shorter_deadline_gives_up_alone() {
    let upstream = FakeUpstream::start().await;
    let proxy = start_proxy(config_for(&upstream.base_url())).await;
    upstream.set_fault(Fault::SlowFirstToken(3000));
    let body = chat("patience differs", true);
    let leader = {
        let (url, body) = (proxy.url.clone(), body.clone());
        tokio::spawn(async move { read_stream(send(&url, &body, &[]).await).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let follower = send(&proxy.url, &body, &[("x-holdfast-timeout", "500ms")]).await;
    assert_eq!(follower.status(), 504, "the impatient follower times out by itself");
    assert!(started.elapsed() < Duration::from_millis(2500), "{:?}", started.elapsed());
    let (sse, clean) = leader.await.unwrap();
    assert!(clean);
    assert_eq!(chat_text(&sse), "echo: patience differs", "the leader is unaffected");
    assert_eq!(upstream.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_leader_lets_its_followers_go_on_alone() {
    let upstream = FakeUpstream::start().await;
    let proxy = start_proxy(config_for(&upstream.base_url())).await;
    // The leader's own deadline is too short for its slow first token; the follower's is not.
    upstream.set_fault_for(Fault::SlowFirstToken(2000), 1);
    let body = chat("leader gives up", true);
    let leader = {
        let (url, body) = (proxy.url.clone(), body.clone());
        tokio::spawn(async move { send(&url, &body, &[("x-holdfast-timeout", "600ms")]).await.status() })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    let follower = send(&proxy.url, &body, &[]).await;
    assert_eq!(leader.await.unwrap(), 504);
    assert_eq!(follower.status(), 200);
    assert_eq!(header(&follower, "x-holdfast-cache"), "miss", "it made its own call");
    assert_eq!(chat_text(&follower.text().await.unwrap()), "echo: leader gives up");
    assert_eq!(upstream.calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_store_requests_never_coalesce() {
    let upstream = FakeUpstream::start().await;
    let proxy = start_proxy(config_for(&upstream.base_url())).await;
    upstream.set_fault(Fault::SlowFirstToken(500));
    let body = chat("private", true);
    let tasks: Vec<_> = (0..3)
        .map(|_| {
            let (url, body) = (proxy.url.clone(), body.clone());
            tokio::spawn(async move { send(&url, &body, &[("cache-control", "no-store")]).await.text().await })
        })
        .collect();
    for task in tasks {
        assert_eq!(chat_text(&task.await.unwrap().unwrap()), "echo: private");
    }
    assert_eq!(upstream.calls(), 3);
}
