//! SIGKILL under load: every answer a client fully received is in the store after a restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use super::{Server, chat, fully_received, send, soak, verify, write_config};
use crate::fake_upstream::FakeUpstream;

/// Concurrent clients per round, half streaming.
const WRITERS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_answer_a_client_fully_received() {
    let rounds = if soak() { 40 } else { 4 };
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let fake = FakeUpstream::start().await;
    let config = write_config(dir.path(), &store, &fake.base_url(), "");
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let mut total_acknowledged = 0;
    for round in 0..rounds {
        fake.up().await;
        let server = Server::start(dir.path(), &config).unwrap();
        let url = server.url.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let completed = Arc::new(AtomicUsize::new(0));
        let mut writers = Vec::new();
        for w in 0..WRITERS {
            let (client, url, stop, sent, completed) =
                (client.clone(), url.clone(), stop.clone(), sent.clone(), completed.clone());
            writers.push(tokio::spawn(async move {
                let stream = w % 2 == 1;
                let mut acknowledged = Vec::new();
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let prompt = format!("round {round} writer {w} request {i} tell me about durability");
                    let body = chat(&prompt, stream);
                    sent.fetch_add(1, Ordering::Relaxed);
                    match send(&client, &url, &body).await {
                        Some(reply) if fully_received(&reply, stream) => {
                            assert_eq!(reply.cache, "miss", "a first request must be a miss");
                            acknowledged.push((prompt, stream));
                            completed.fetch_add(1, Ordering::Relaxed);
                        }
                        // The server died mid-request: not acknowledged, nothing to check.
                        Some(_) | None => break,
                    }
                }
                acknowledged
            }));
        }
        // Kill at a varying point after the first answer completed (a slow machine or engine
        // must not turn the round into one that proves nothing): early, or once plenty is in
        // flight.
        let first = std::time::Instant::now();
        while completed.load(Ordering::Relaxed) == 0 && first.elapsed() < Duration::from_secs(20) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let wait = 100 + (round * 137) % 400;
        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
        server.kill9();
        stop.store(true, Ordering::Relaxed);
        let mut acknowledged = Vec::new();
        for w in writers {
            acknowledged.extend(w.await.unwrap());
        }
        assert!(
            !acknowledged.is_empty(),
            "round {round}: no answer completed before the kill; the test proves nothing"
        );
        total_acknowledged += acknowledged.len();

        // The provider is down: every acknowledged answer must come from the store.
        fake.down().await;
        let server = Server::start(dir.path(), &config).unwrap_or_else(|e| panic!("round {round}: reopen failed: {e}"));
        let mut lost = Vec::new();
        for (prompt, stream) in &acknowledged {
            let reply = send(&client, &server.url, &chat(prompt, *stream)).await.expect("the reopened server answers");
            if !(fully_received(&reply, *stream) && reply.cache == "stale") {
                lost.push(format!("{prompt} (stream {stream}): {} {}", reply.status, reply.cache));
            }
        }
        assert!(
            lost.is_empty(),
            "round {round}: {} of {} acknowledged answers lost after kill -9:\n{}\n--- log:\n{}",
            lost.len(),
            acknowledged.len(),
            lost.join("\n"),
            server.log_text()
        );
        server.kill9();
        eprintln!(
            "kill -9 round {round}: {} requests sent, {} acknowledged, 0 lost",
            sent.load(Ordering::Relaxed),
            acknowledged.len()
        );
    }
    eprintln!("kill -9: {rounds} rounds, {total_acknowledged} acknowledged answers, 0 lost");
    let (code, report, stderr) = verify(dir.path(), &config);
    assert_eq!(code, Some(0), "after the kills every record must open:\n{report}\n{stderr}");
}
