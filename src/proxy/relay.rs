//! Relaying a live upstream stream to the client while recording it.
//!
//! Each upstream chunk goes to the client as soon as it arrives; the events are collected on
//! the side. Only a stream that reached its terminal event (`[DONE]`, `message_stop`,
//! `response.completed`) without an error event is stored, and it is stored *before* the
//! terminal chunk is forwarded, so a client that has seen the end can rely on the entry.
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
use crate::upstream::classify;

/// Buffered chunks between the upstream reader and a slow client. Small: backpressure should
/// reach the provider rather than memory.
const CHANNEL_DEPTH: usize = 16;

pub fn relay(
    exchange: Arc<Exchange>,
    kind: StreamKind,
    upstream: reqwest::Response,
    content_type: String,
) -> Body {
    let (tx, rx) = mpsc::channel::<Result<Bytes, io::Error>>(CHANNEL_DEPTH);
    tokio::spawn(async move {
        let started = Instant::now();
        let mut splitter = SseSplitter::new();
        let mut events: Vec<Bytes> = Vec::new();
        let mut failed_event = false;
        let mut completed = false;
        let mut client_gone = false;
        let mut chunks = upstream.bytes_stream();
        let outcome = loop {
            match chunks.next().await {
                Some(Ok(chunk)) => {
                    let mut terminal_here = false;
                    for raw in splitter.push(&chunk) {
                        let event = parse_event(&raw);
                        failed_event |= is_error_event(kind, &event);
                        terminal_here |= is_terminal(kind, &event);
                        events.push(raw);
                    }
                    if terminal_here && !completed {
                        completed = true;
                        if !failed_event && exchange.policy.may_store() {
                            let response = StoredResponse {
                                status: 200,
                                content_type: content_type.clone(),
                                body: ResponseBody::Stream(std::mem::take(&mut events)),
                            };
                            store_record(&exchange, response, started.elapsed()).await;
                        }
                    }
                    if !client_gone && tx.send(Ok(chunk)).await.is_err() {
                        // The client left; keep reading so the provider's answer (already paid
                        // for) is still recorded for the next outage.
                        client_gone = true;
                    }
                }
                Some(Err(e)) => break Err(classify(&e).reason()),
                None if completed => break Ok(()),
                None => break Err("upstream stream ended before its final event".to_owned()),
            }
        };
        exchange
            .state
            .metrics
            .observe_upstream_latency(&exchange.provider_name, started.elapsed());
        if let Err(reason) = outcome {
            exchange.state.metrics.count_stream_interrupted();
            tracing::warn!(address = %exchange.address, provider = %exchange.provider_name, %reason,
                "stream interrupted; nothing stored, client stream ended with an error");
            let _ = tx.send(Err(io::Error::other(reason))).await;
        }
    });
    Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}
