//! Relaying a live upstream stream to the client while recording it.
//!
//! Each event goes to the client as soon as it is whole; the events are collected on the side.
//! Only a stream that reached its terminal event (`[DONE]`, `message_stop`,
//! `response.completed`) without an error event is stored, and it is stored *before* the
//! terminal event is forwarded, so a client that has seen the end can rely on the entry. A
//! stream that breaks off ends the client's body with an error event in its dialect (naming
//! the failure) and then a body error, never a clean finish.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use tokio::sync::mpsc;

use super::answer::{Exchange, store_record};
use super::reader::Reader;
use crate::config::RetryConfig;
use crate::record::{ResponseBody, StoredResponse};
use crate::resilience::breaker::Transition;
use crate::resilience::verdict::AttemptPermits;
use crate::sse::{StreamKind, error_event, is_error_event, is_terminal, is_usage_only, parse_event};

/// Buffered events between the upstream reader and a slow client. Small: backpressure should
/// reach the provider rather than memory.
const CHANNEL_DEPTH: usize = 16;

/// What the relay needs besides the stream itself.
pub struct RelayPlan {
    /// The client's stream dialect.
    pub kind: StreamKind,
    /// `content-type` recorded with the answer.
    pub content_type: String,
    /// The client asked for OpenAI's usage chunk (`stream_options.include_usage`).
    pub include_usage: bool,
    /// The attempt's breaker permits, reported when the stream ends.
    pub permits: AttemptPermits,
    /// The target's retry policy, which decides whether a failure is an outage.
    pub retry: RetryConfig,
}

/// Relays `head` (the events read before the attempt was accepted) and then the rest of
/// `reader`, on a task of its own, so the provider's answer is read (and recorded) to the end
/// even if the client leaves.
pub fn relay(exchange: Arc<Exchange>, mut reader: Reader, head: Vec<Bytes>, plan: RelayPlan) -> Body {
    let (tx, rx) = mpsc::channel::<Result<Bytes, io::Error>>(CHANNEL_DEPTH);
    tokio::spawn(async move {
        let started = Instant::now();
        let RelayPlan { kind, content_type, include_usage, permits, retry } = plan;
        let mut recording = Recording {
            kind,
            events: Vec::new(),
            failed: false,
            completed: false,
            recorded_bytes: 0,
            limit: exchange.state.config.max_response_bytes,
            too_large: false,
        };
        let mut client = Client { tx, gone: false, kind, include_usage };
        let mut head = VecDeque::from(head);
        let outcome = loop {
            let next = match head.pop_front() {
                Some(event) => Ok(Some(event)),
                None => reader.next().await,
            };
            match next {
                Ok(Some(event)) => {
                    let was_complete = recording.completed;
                    recording.take(event.clone());
                    if recording.completed && !was_complete {
                        recording.store(&exchange, &content_type, started).await;
                    }
                    client.send(event).await;
                }
                // The reader only ends cleanly after the upstream's terminal event, which the
                // translator turns into the client's.
                Ok(None) if recording.completed => break Ok(()),
                Ok(None) => {
                    break Err(crate::upstream::UpstreamFailure::Invalid("stream ended before its final event".into()));
                }
                Err(failure) => break Err(failure),
            }
        };
        exchange.state.metrics.observe_upstream_latency(&exchange.provider_name, started.elapsed());
        match outcome {
            Ok(()) => {
                log_transitions(permits.succeed());
                if reader.completed_without_terminal {
                    tracing::info!(address = %exchange.address, provider = %exchange.provider_name,
                        "upstream closed a finished stream without its terminal event; added it");
                }
            }
            Err(failure) => {
                let reason = failure.reason();
                exchange.state.metrics.count_upstream_failure(&exchange.provider_name, failure.label());
                log_transitions(permits.fail(&failure, &retry));
                exchange.state.metrics.count_stream_interrupted();
                tracing::warn!(address = %exchange.address, provider = %exchange.provider_name, %reason,
                    "stream interrupted; nothing stored, client stream ended with an error");
                if !recording.failed {
                    let message = format!(
                        "upstream {} failed mid-stream ({reason}); the answer above is incomplete",
                        exchange.provider_name
                    );
                    client.send(error_event(kind, "upstream_stream_interrupted", &message)).await;
                }
                client.abort(reason).await;
            }
        }
    });
    Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) }))
}

fn log_transitions(transitions: [Option<Transition>; 2]) {
    for t in transitions.into_iter().flatten() {
        tracing::warn!(breaker = %t.key, from = t.from.as_str(), to = t.to.as_str(), "circuit breaker changed state");
    }
}

/// The client's side of the relay.
struct Client {
    /// Where the body's events go.
    tx: mpsc::Sender<Result<Bytes, io::Error>>,
    /// The client left; events are still read (and recorded) but no longer sent.
    gone: bool,
    /// The client's stream dialect.
    kind: StreamKind,
    /// Whether OpenAI's usage chunk goes out (it is recorded either way).
    include_usage: bool,
}

impl Client {
    async fn send(&mut self, event: Bytes) {
        if self.gone || (!self.include_usage && is_usage_only(self.kind, &parse_event(&event))) {
            return;
        }
        // The client left; keep reading so the provider's answer (already paid for) is still
        // recorded for the next outage.
        self.gone = self.tx.send(Ok(event)).await.is_err();
    }

    /// Ends the body with an error, after what was sent has gone out: hyper drops the
    /// connection at a body error without flushing what it still buffers, which would lose the
    /// error event that explains the end.
    async fn abort(&mut self, reason: String) {
        if self.gone {
            return;
        }
        let drained = async {
            while self.tx.capacity() < self.tx.max_capacity() && !self.tx.is_closed() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            // Taken from the channel is not yet written: let the connection flush.
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), drained).await;
        let _ = self.tx.send(Err(io::Error::other(reason))).await;
    }
}

/// The events of one stream as they arrive, and whether it has properly ended.
struct Recording {
    /// The client's stream dialect.
    kind: StreamKind,
    /// Every client-dialect event, byte-exact.
    events: Vec<Bytes>,
    /// An error event arrived: the stream may end "normally" but is not an answer to keep.
    failed: bool,
    /// The terminal event arrived.
    completed: bool,
    /// Bytes of the events kept so far.
    recorded_bytes: u64,
    /// `max_response_bytes`: beyond it nothing more is kept and the answer is not stored.
    limit: u64,
    /// The answer passed `limit`: its events were dropped; it is relayed, never stored.
    too_large: bool,
}

impl Recording {
    fn take(&mut self, raw: Bytes) {
        let event = parse_event(&raw);
        self.failed |= is_error_event(self.kind, &event);
        self.completed |= is_terminal(self.kind, &event);
        if self.too_large {
            return;
        }
        self.recorded_bytes += raw.len() as u64;
        if self.recorded_bytes > self.limit {
            // Keeping the rest would hold the whole answer in memory; it could not be stored.
            self.too_large = true;
            self.events = Vec::new();
            return;
        }
        self.events.push(raw);
    }

    async fn store(&mut self, exchange: &Exchange, content_type: &str, started: Instant) {
        if self.too_large {
            exchange.state.metrics.count_answer_too_large();
            tracing::warn!(address = %exchange.address, limit = self.limit,
                "answer larger than max_response_bytes: relayed, not stored");
            return;
        }
        if self.failed || !exchange.policy.may_store() {
            return;
        }
        let response = StoredResponse {
            status: 200,
            content_type: content_type.to_owned(),
            body: ResponseBody::Stream(std::mem::take(&mut self.events)),
        };
        store_record(exchange, response, started.elapsed()).await;
    }
}
