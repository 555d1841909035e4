//! Relaying a live upstream stream to the client while capturing it for the store.
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
use super::attempt::log_transition;
use super::reader::Reader;
use super::rescue::{Delivered, Rescue, Spliced, Splicer};
use crate::config::RetryConfig;
use crate::proxy::resilience::verdict::AttemptPermits;
use crate::proxy::upstream::UpstreamFailure;
use crate::store::record::{ResponseBody, StoredResponse};
use crate::wire::sse::{StreamKind, error_event, is_error_event, is_terminal, is_usage_only, parse_event};

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
    /// Where a stream that breaks mid-answer may be continued (`resume_streams`).
    pub rescue: Option<Rescue>,
}

/// The stream being relayed: the first target's, or a continuation of it.
struct Source {
    /// Reads, checks and translates this source's events.
    reader: Reader,
    /// Events read before the stream was accepted, relayed first.
    head: VecDeque<Bytes>,
    /// Rewrites a continuation's events into the client's stream; `None` for the first.
    splicer: Option<Splicer>,
    /// Reported when this source ends.
    permits: Option<AttemptPermits>,
    /// The provider's retry policy, which decides how its failure counts on the breaker.
    retry: RetryConfig,
    /// The provider streaming, for logs and the stored record.
    provider: String,
}

impl Source {
    /// Reports this source's failure to its breakers and the metrics.
    fn fail(&mut self, exchange: &Exchange, failure: &UpstreamFailure) {
        exchange.state.metrics.count_upstream_failure(&self.provider, failure.label());
        if let Some(permits) = self.permits.take() {
            permits.fail(failure, &self.retry).into_iter().for_each(log_transition);
        }
    }
}

/// Relays `head` (the events read before the attempt was accepted) and then the rest of
/// `reader`, on a task of its own, so the provider's answer is read (and recorded) to the end
/// even if the client leaves. A stream that breaks after text reached the client is continued
/// on the plan's rescue targets when one can (see `rescue`).
pub fn relay(exchange: Arc<Exchange>, reader: Reader, head: Vec<Bytes>, plan: RelayPlan) -> Body {
    let (tx, rx) = mpsc::channel::<Result<Bytes, io::Error>>(CHANNEL_DEPTH);
    tokio::spawn(async move {
        let started = Instant::now();
        let RelayPlan { kind, content_type, include_usage, permits, retry, mut rescue } = plan;
        let mut capture = StreamCapture {
            kind,
            events: Vec::new(),
            failed: false,
            completed: false,
            recorded_bytes: 0,
            limit: exchange.state.config.max_response_bytes,
            too_large: false,
        };
        let mut client = Client { tx, gone: false, kind, include_usage };
        let mut delivered = Delivered::new(kind);
        let mut source = Source {
            reader,
            head: VecDeque::from(head),
            splicer: None,
            permits: Some(permits),
            retry,
            provider: exchange.provider_name.clone(),
        };
        // The failure that broke the client's stream first, and the continuations that followed it.
        let mut broken: Option<UpstreamFailure> = None;
        let mut splices: Vec<String> = Vec::new();
        let outcome = 'events: loop {
            let next = match source.head.pop_front() {
                Some(event) => Ok(Some(event)),
                None => source.reader.next().await,
            };
            let broke = match next {
                Ok(Some(event)) => 'relayed: {
                    let event = match source.splicer.as_mut().map(|s| s.adapt(event.clone())) {
                        None => event,
                        Some(Spliced::Relay(Some(event))) => event,
                        Some(Spliced::Relay(None)) => continue 'events,
                        Some(Spliced::Diverged) => break 'relayed Break::Diverged,
                    };
                    delivered.observe(&event);
                    let was_complete = capture.completed;
                    capture.take(event.clone());
                    if capture.completed && !was_complete {
                        capture.store(&exchange, &content_type, started, &splices).await;
                    }
                    client.send(event).await;
                    continue 'events;
                }
                // The reader only ends cleanly after the upstream's terminal event, which the
                // translator turns into the client's.
                Ok(None) if capture.completed => break Ok(()),
                Ok(None) => Break::Failed(UpstreamFailure::Invalid("stream ended before its final event".into())),
                Err(failure) => Break::Failed(failure),
            };
            match broke {
                Break::Failed(failure) => {
                    source.fail(&exchange, &failure);
                    tracing::warn!(address = %exchange.address, provider = %source.provider,
                        reason = %failure.reason(), "stream broke mid-answer");
                    broken.get_or_insert(failure);
                    if capture.failed || !delivered.can_continue() {
                        break Err(broken.take());
                    }
                }
                Break::Diverged => {
                    // The target answered, just differently: not a fault of it.
                    if let Some(permits) = source.permits.take() {
                        permits.succeed().into_iter().for_each(log_transition);
                    }
                    tracing::info!(provider = %source.provider,
                        "restarted answer does not begin with the text already delivered; not spliced");
                }
            }
            match next_source(&exchange, &mut rescue, &delivered, &mut splices).await {
                Some(next) => source = next,
                None => break Err(broken.take()),
            }
        };
        exchange.state.metrics.observe_upstream_latency(&exchange.provider_name, started.elapsed());
        match outcome {
            Ok(()) => {
                if let Some(permits) = source.permits.take() {
                    permits.succeed().into_iter().for_each(log_transition);
                }
                if source.reader.completed_without_terminal {
                    tracing::info!(address = %exchange.address, provider = %source.provider,
                        "upstream closed a finished stream without its terminal event; added it");
                }
                if !splices.is_empty() {
                    exchange.state.metrics.count_stream_rescued();
                    tracing::warn!(address = %exchange.address, provider = %exchange.provider_name,
                        continued_by = %splices.join(", "), "stream broke mid-answer and was continued");
                }
            }
            Err(failure) => {
                let reason = failure.as_ref().map_or_else(|| "unknown".to_owned(), UpstreamFailure::reason);
                exchange.state.metrics.count_stream_interrupted();
                tracing::warn!(address = %exchange.address, provider = %exchange.provider_name, %reason,
                    "stream interrupted; nothing stored, client stream ended with an error");
                if !capture.failed {
                    let tried =
                        if splices.is_empty() && rescue.is_none() { "" } else { "; no other target could continue it" };
                    let message = format!(
                        "upstream {} failed mid-stream ({reason}){tried}; the answer above is incomplete",
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

/// Why the stream being relayed stopped short.
enum Break {
    /// It failed (cut, stalled, malformed, ended early).
    Failed(UpstreamFailure),
    /// A restarted answer turned away from the text already delivered.
    Diverged,
}

/// The next target's continuation of the client's stream, noting it in `splices`.
async fn next_source(
    exchange: &Exchange,
    rescue: &mut Option<Rescue>,
    delivered: &Delivered,
    splices: &mut Vec<String>,
) -> Option<Source> {
    let continuation = rescue.as_mut()?.next(exchange, delivered).await?;
    tracing::info!(address = %exchange.address, provider = %continuation.provider, mode = continuation.mode.as_str(),
        delivered_chars = delivered.text.chars().count(), "continuing the broken stream");
    splices.push(format!("{} ({})", continuation.provider, continuation.mode.as_str()));
    Some(Source {
        reader: continuation.reader,
        head: VecDeque::from(continuation.head),
        splicer: Some(continuation.splicer),
        permits: Some(continuation.permits),
        retry: continuation.retry,
        provider: continuation.provider,
    })
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
struct StreamCapture {
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

impl StreamCapture {
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

    /// `splices`: the continuations the answer was made whole with, if it broke.
    async fn store(&mut self, exchange: &Exchange, content_type: &str, started: Instant, splices: &[String]) {
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
        if splices.is_empty() {
            store_record(exchange, response, started.elapsed()).await;
            return;
        }
        // The entry says who answered: the first provider, then each continuation.
        let provider_name = format!("{} + {}", exchange.provider_name, splices.join(" + "));
        let spliced = Exchange { provider_name, ..exchange.clone() };
        store_record(&spliced, response, started.elapsed()).await;
    }
}
