//! Relaying a live upstream stream to the client while recording it.
//!
//! Each upstream chunk goes to the client as soon as it arrives; the events are collected on
//! the side. Only a stream that reached its terminal event (`[DONE]`, `message_stop`,
//! `response.completed`) without an error event is stored, and it is stored *before* the
//! terminal chunk is forwarded: `Store::put` returns once the entry is fsync'd (durable mode),
//! so a client that has seen the end can rely on the entry surviving a crash.
//! A stream that breaks off ends the client's body with an error, never a clean finish.

use std::io;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::exchange::{Exchange, store_record};
use crate::record::{ResponseBody, StoredResponse};
use crate::sse::{SseSplitter, StreamKind, is_error_event, is_terminal, parse_event};
use crate::translate::StreamTranslator;
use crate::upstream::classify;

/// Buffered chunks between the upstream reader and a slow client. Small: backpressure should
/// reach the provider rather than memory.
const CHANNEL_DEPTH: usize = 16;
/// Longest partial event held while waiting for its end. Real events are kilobytes; a stream
/// that never ends an event is broken, not big.
const MAX_PENDING_EVENT: usize = 16 * 1024 * 1024;

/// With a `translator`, upstream events are rewritten into the client's dialect one by one;
/// what the client receives (and what is recorded) is then the translated stream.
pub fn relay(
    exchange: Arc<Exchange>,
    kind: StreamKind,
    upstream: reqwest::Response,
    content_type: String,
    mut translator: Option<StreamTranslator>,
) -> Body {
    let (tx, rx) = mpsc::channel::<Result<Bytes, io::Error>>(CHANNEL_DEPTH);
    tokio::spawn(async move {
        let started = Instant::now();
        let limit = exchange.state.config.max_response_bytes;
        let mut recording = Recording {
            kind,
            splitter: SseSplitter::new(),
            events: Vec::new(),
            failed: false,
            completed: false,
            recorded_bytes: 0,
            limit,
            too_large: false,
        };
        let mut client_gone = false;
        let mut chunks = upstream.bytes_stream();
        let outcome = loop {
            match chunks.next().await {
                Some(Ok(chunk)) => {
                    let was_complete = recording.completed;
                    let upstream_events = recording.splitter.push(&chunk);
                    if recording.splitter.pending().len() > MAX_PENDING_EVENT {
                        break Err("upstream sent an event larger than 16 MiB".to_owned());
                    }
                    // Untranslated, the chunk goes out as it came (byte-exact, no re-framing);
                    // translated, each upstream event becomes zero or more client events.
                    let outgoing = match translator.as_mut() {
                        None => {
                            upstream_events.into_iter().for_each(|raw| recording.take(raw));
                            vec![chunk]
                        }
                        Some(t) => match translate_events(t, &upstream_events) {
                            Ok(events) => {
                                events.iter().for_each(|raw| recording.take(raw.clone()));
                                events
                            }
                            Err(reason) => break Err(reason),
                        },
                    };
                    if recording.completed && !was_complete {
                        recording.store(&exchange, &content_type, started).await;
                    }
                    for piece in outgoing {
                        if !client_gone && tx.send(Ok(piece)).await.is_err() {
                            // The client left; keep reading so the provider's answer (already
                            // paid for) is still recorded for the next outage.
                            client_gone = true;
                        }
                    }
                }
                Some(Err(e)) => break Err(classify(&e).reason()),
                None => {
                    // An event may end at EOF without its blank line (`\r\r` endings).
                    if !recording.completed
                        && let Some(raw) = recording.splitter.finish()
                    {
                        let last = match translator.as_mut() {
                            None => Ok(vec![raw]),
                            Some(t) => translate_events(t, &[raw]),
                        };
                        for event in last.unwrap_or_default() {
                            recording.take(event.clone());
                            if translator.is_some() {
                                let _ = tx.send(Ok(event)).await;
                            }
                        }
                        if recording.completed {
                            recording.store(&exchange, &content_type, started).await;
                        }
                    }
                    break if recording.completed {
                        Ok(())
                    } else {
                        Err("upstream stream ended before its final event".to_owned())
                    };
                }
            }
        };
        exchange.state.metrics.observe_upstream_latency(&exchange.provider_name, started.elapsed());
        if let Err(reason) = outcome {
            exchange.state.metrics.count_stream_interrupted();
            tracing::warn!(address = %exchange.address, provider = %exchange.provider_name, %reason,
                "stream interrupted; nothing stored, client stream ended with an error");
            let _ = tx.send(Err(io::Error::other(reason))).await;
        }
    });
    Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) }))
}

fn translate_events(translator: &mut StreamTranslator, upstream: &[Bytes]) -> Result<Vec<Bytes>, String> {
    let mut out = Vec::new();
    for raw in upstream {
        let events = translator.push(&parse_event(raw)).map_err(|e| format!("cannot translate the stream: {e}"))?;
        out.extend(events);
    }
    Ok(out)
}

/// The events of one stream as they arrive, and whether it has properly ended.
struct Recording {
    kind: StreamKind,
    splitter: SseSplitter,
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
