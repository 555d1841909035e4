//! One upstream stream read event by event, already in the client's dialect, with every way it
//! can end told apart: a proper end, an end that only lacks its terminal event, and a cut.
//!
//! Events come out whole (never a partial event), so whatever reached the client is a
//! sequence of complete events, and an error event can follow it cleanly.

use std::collections::VecDeque;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::time::Instant;

use crate::proxy::upstream::{UpstreamFailure, classify};
use crate::wire::dialect::StreamTranslator;
use crate::wire::sse::{
    SseSplitter, StreamKind, carries_content, carries_finish, is_error_event, is_terminal, parse_event, terminal_event,
};

/// Longest partial event held while waiting for its end. Real events are kilobytes; a stream
/// that never ends an event is broken, not big.
const MAX_PENDING_EVENT: usize = 16 * 1024 * 1024;

type Chunks = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// An upstream stream being read.
pub struct Reader {
    /// The response body, chunk by chunk.
    chunks: Chunks,
    /// Cuts chunks into raw events.
    splitter: SseSplitter,
    /// Rewrites upstream events into the client's dialect; `None` when they already are.
    translator: Option<StreamTranslator>,
    /// The dialect the upstream streams in.
    upstream_kind: StreamKind,
    /// The dialect the client reads.
    client_kind: StreamKind,
    /// Client-dialect events made from what arrived, not yet handed out.
    ready: VecDeque<Bytes>,
    /// The upstream stated its finish reason: a clean close after it is a complete answer.
    upstream_finished: bool,
    /// The upstream's terminal event arrived.
    upstream_terminal: bool,
    /// The upstream sent an error event; what follows it is not an answer.
    upstream_error: bool,
    /// A client-dialect event carrying content has been handed out.
    content_seen: bool,
    /// The body has ended (cleanly or not); nothing more will be read.
    ended: bool,
    /// When the first content must have arrived (`first_token_timeout` after the headers).
    first_token_by: Instant,
    /// Longest silence between events once content has begun (`stream_idle_timeout`).
    idle: Duration,
    /// Why the stream failed, reported once `ready` has been handed out.
    failure: Option<UpstreamFailure>,
    /// The upstream closed without its terminal event after stating its finish, and the
    /// terminal event was added.
    pub completed_without_terminal: bool,
}

impl Reader {
    /// `limits`: `(first_token_timeout, stream_idle_timeout)`.
    pub fn new(
        response: reqwest::Response,
        upstream_kind: StreamKind,
        client_kind: StreamKind,
        translator: Option<StreamTranslator>,
        limits: (Duration, Duration),
    ) -> Self {
        Self {
            chunks: Box::pin(response.bytes_stream()),
            splitter: SseSplitter::new(),
            translator,
            upstream_kind,
            client_kind,
            ready: VecDeque::new(),
            upstream_finished: false,
            upstream_terminal: false,
            upstream_error: false,
            content_seen: false,
            ended: false,
            first_token_by: Instant::now() + limits.0,
            idle: limits.1,
            failure: None,
            completed_without_terminal: false,
        }
    }

    /// The next client-dialect event; `Ok(None)` once the stream has ended properly (with its
    /// terminal event, made up if the upstream stated its finish and closed without it).
    pub async fn next(&mut self) -> Result<Option<Bytes>, UpstreamFailure> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                self.content_seen |= carries_content(self.client_kind, &parse_event(&event));
                return Ok(Some(event));
            }
            if let Some(failure) = self.failure.take() {
                self.ended = true;
                return Err(failure);
            }
            if self.ended {
                return Ok(None);
            }
            let (wait, phase) = if self.content_seen {
                (self.idle, "stream idle")
            } else {
                (self.first_token_by.saturating_duration_since(Instant::now()), "first token")
            };
            let Ok(next) = tokio::time::timeout(wait, self.chunks.next()).await else {
                self.failure = Some(UpstreamFailure::Timeout(phase));
                continue;
            };
            match next {
                Some(Ok(chunk)) => {
                    let events = self.splitter.push(&chunk);
                    for raw in events {
                        self.take(raw);
                    }
                    if self.failure.is_none() && self.splitter.pending().len() > MAX_PENDING_EVENT {
                        self.failure =
                            Some(UpstreamFailure::Invalid("upstream sent an event larger than 16 MiB".into()));
                    }
                }
                // Cut after the finish reason: everything was said but the closing events
                // (the usage report, the terminal event). As complete as a clean close.
                Some(Err(_)) if self.upstream_finished && self.failure.is_none() => self.at_end(),
                Some(Err(e)) => {
                    self.failure.get_or_insert(match classify(&e) {
                        UpstreamFailure::Connect(cause) => UpstreamFailure::Connect(format!("stream cut: {cause}")),
                        other => other,
                    });
                }
                None => self.at_end(),
            }
        }
    }

    /// Reads until the first event that carries content (or the end), returning everything
    /// read so far. A failure before any content is an ordinary failed attempt: nothing has
    /// reached the client, so the chain may retry or fail over.
    pub async fn until_content(&mut self) -> Result<Vec<Bytes>, UpstreamFailure> {
        let mut head = Vec::new();
        while !self.content_seen && !self.upstream_error {
            match self.next().await? {
                Some(event) => head.push(event),
                None => break,
            }
        }
        if self.upstream_error {
            return Err(UpstreamFailure::Invalid("upstream sent an error event before any content".into()));
        }
        Ok(head)
    }

    /// One raw upstream event: checked, noted, and translated into `ready`.
    fn take(&mut self, raw: Bytes) {
        if self.failure.is_some() || self.upstream_terminal || self.upstream_error {
            return;
        }
        let event = parse_event(&raw);
        let data = event.data.trim();
        if !data.is_empty() && data != "[DONE]" && serde_json::from_str::<serde_json::Value>(data).is_err() {
            self.failure = Some(UpstreamFailure::Invalid("upstream sent an event that is not JSON".into()));
            return;
        }
        self.upstream_finished |= carries_finish(self.upstream_kind, &event);
        self.upstream_terminal |= is_terminal(self.upstream_kind, &event);
        self.upstream_error |= is_error_event(self.upstream_kind, &event);
        match self.translator.as_mut() {
            // Untranslated, the event goes out byte-exact, as it came.
            None => self.ready.push_back(raw),
            Some(t) => match t.push(&event) {
                Ok(events) => self.ready.extend(events),
                Err(e) => self.failure = Some(UpstreamFailure::Invalid(format!("cannot translate the stream: {e}"))),
            },
        }
    }

    /// The body ended: complete, complete but for its terminal event, or cut.
    fn at_end(&mut self) {
        // An event may end at EOF without its blank line (`\r\r` endings).
        if let Some(raw) = self.splitter.finish() {
            self.take(raw);
        }
        self.ended = true;
        if self.failure.is_some() || self.upstream_terminal {
            return;
        }
        if self.upstream_error {
            // The client has the provider's error event; the body must not then end as if the
            // answer were whole.
            self.failure = Some(UpstreamFailure::Invalid("upstream sent an error event mid-stream".into()));
            return;
        }
        let mid_event = !self.splitter.pending().iter().all(u8::is_ascii_whitespace);
        if self.upstream_finished && !mid_event {
            // Everything was said, only the closing event is missing (some OpenAI-compatible
            // servers omit `[DONE]`): add it, so the client sees the end a direct call would.
            if let Some(terminal) = terminal_event(self.upstream_kind) {
                self.take(terminal);
                self.completed_without_terminal = true;
                return;
            }
        }
        self.failure = Some(UpstreamFailure::Invalid(
            if mid_event { "upstream stream ended mid-event" } else { "upstream stream ended before its final event" }
                .into(),
        ));
    }
}
