//! Mid-stream rescue: a stream that breaks after part of the answer reached the client is
//! continued on the next target of the route, so the client still receives one whole answer.
//!
//! Each target is asked in one of two ways, in this order:
//! - **prefill**, where the provider continues a final assistant message (`prefill`; Anthropic
//!   does by default): the original request plus the text already delivered as that message.
//!   Its answer is the continuation, relayed as it comes.
//! - **restart**: the original request again. Its answer is relayed from where the delivered
//!   text ends, and only if it begins with exactly that text (a deterministic model, a cache in
//!   front of the target); otherwise the target is given up, never spliced on.
//!
//! Only text can be continued: a stream that delivered a tool call, reasoning or several
//! choices, or a dialect without a text prefix (Responses, legacy completions), ends with an
//! error as before. The continuation's own preamble (role chunk, `message_start`, the start of
//! the block it extends) is dropped and its block indices and chunk ids follow the client's
//! stream, so the client reads one stream.

use std::collections::VecDeque;

use axum::http::HeaderMap;
use bytes::Bytes;
use serde_json::{Value, json};

use super::answer::Exchange;
use super::attempt::{admit, prepare_body, stream_kind_of, target_path};
use super::reader::Reader;
use super::request::{self, ParsedRequest};
use crate::cache_key::normalize::Dialect;
use crate::config::RetryConfig;
use crate::proxy::resilience::verdict::AttemptPermits;
use crate::proxy::upstream::{Provider, UpstreamFailure};
use crate::wire::dialect::StreamTranslator;
use crate::wire::sse::{SseEvent, StreamKind, event_type, format_event, is_error_event, parse_event};

/// Keys of an OpenAI chunk's `delta` that carry something other than text.
const NON_TEXT_DELTA: [&str; 5] = ["tool_calls", "refusal", "reasoning_content", "reasoning", "function_call"];

/// What a broken stream may still be continued with; built for every relayed chat stream, used
/// only when it breaks.
pub struct Rescue {
    /// The route's targets after the one whose stream is relayed: (provider name, model).
    targets: VecDeque<(String, String)>,
    /// The client's headers (its credential and keyed headers go to the new target as well).
    headers: HeaderMap,
    /// The request's query string, sent to the new target as well.
    query: Option<String>,
    /// The client's body, parsed again only when a rescue is needed.
    raw: Bytes,
}

/// How a continuation was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Prefill,
    Restart,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Prefill => "prefill",
            Self::Restart => "restart",
        }
    }
}

/// A target's stream, accepted to continue the client's.
pub struct Continuation {
    /// Reads, checks and translates the continuation's events.
    pub reader: Reader,
    /// Events read before the continuation was accepted (up to its first content).
    pub head: Vec<Bytes>,
    /// Rewrites those events so they follow on the client's stream.
    pub splicer: Splicer,
    /// The new target's breaker permits, settled when its stream ends.
    pub permits: AttemptPermits,
    /// The new target's retry policy, for how its failure counts.
    pub retry: RetryConfig,
    /// The new target's provider, for logs and the stored record.
    pub provider: String,
    /// Prefill or restart, for the log line and the record's list of splices.
    pub mode: Mode,
}

/// Why one way of asking a target did not give a continuation.
enum Refusal {
    /// The target does not take a prefill: it may still be asked to restart.
    NoPrefill,
    /// The target failed; go on to the next.
    Failed,
}

impl Rescue {
    pub fn new(targets: VecDeque<(String, String)>, headers: HeaderMap, query: Option<String>, raw: Bytes) -> Self {
        Self { targets, headers, query, raw }
    }

    /// The next target's stream that can continue `delivered`, trying targets in route order;
    /// `None` when none can.
    pub async fn next(&mut self, exchange: &Exchange, delivered: &Delivered) -> Option<Continuation> {
        let parsed = request::parse(exchange.endpoint, self.raw.clone()).ok()?;
        while let Some((name, model)) = self.targets.pop_front() {
            let Some(provider) = exchange.state.upstreams.by_name(&name) else { continue };
            let modes: &[Mode] =
                if provider.config.continues_prefill() { &[Mode::Prefill, Mode::Restart] } else { &[Mode::Restart] };
            for &mode in modes {
                match self.ask(exchange, provider, &model, &parsed, delivered, mode).await {
                    Ok(continuation) => return Some(continuation),
                    Err(Refusal::NoPrefill) => {
                        tracing::info!(provider = %name, "target does not take a prefill; asking it to restart instead");
                    }
                    Err(Refusal::Failed) => break,
                }
            }
        }
        None
    }

    async fn ask(
        &self,
        exchange: &Exchange,
        provider: &Provider,
        model: &str,
        parsed: &ParsedRequest,
        delivered: &Delivered,
        mode: Mode,
    ) -> Result<Continuation, Refusal> {
        let state = &exchange.state;
        let name = provider.name();
        let Some(permits) = admit(state, provider, model) else {
            return Err(Refusal::Failed);
        };
        let version = provider.anthropic_version_for(&self.headers);
        let body = prepare_body(exchange.endpoint, provider.dialect(), parsed, model, version)
            .and_then(|body| match mode {
                Mode::Restart => Ok(body),
                Mode::Prefill => with_prefill(&body, provider.dialect(), &delivered.text),
            })
            .map_err(|reason| {
                tracing::warn!(provider = %name, %reason, "cannot ask this target to continue the stream");
                Refusal::Failed
            })?;
        let path = target_path(exchange.endpoint, provider.dialect(), self.query.as_deref());
        let retry = provider.config.retry.clone();
        let fail = |permits: AttemptPermits, failure: &UpstreamFailure| {
            state.metrics.count_upstream_failure(name, failure.label());
            tracing::warn!(provider = %name, mode = mode.as_str(), reason = %failure.reason(),
                "stream rescue attempt failed");
            permits.fail(failure, &retry);
        };
        let response = match provider.send(reqwest::Method::POST, &path, &self.headers, Some(body), true).await {
            Ok(response) => response,
            Err(failure) if mode == Mode::Prefill && rejects_prefill(&failure) => {
                // A verdict on the request: the provider is up.
                permits.succeed();
                return Err(Refusal::NoPrefill);
            }
            Err(failure) => {
                fail(permits, &failure);
                return Err(Refusal::Failed);
            }
        };
        let streams = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("text/event-stream"));
        if !streams {
            fail(permits, &UpstreamFailure::Invalid("a continuation must be a stream".into()));
            return Err(Refusal::Failed);
        }
        let client = exchange.endpoint.dialect();
        let translated = provider.dialect() != client;
        let translator = translated.then(|| StreamTranslator::new(provider.dialect(), client));
        let upstream_kind = if translated { stream_kind_of(provider.dialect()) } else { delivered.kind };
        let limits = (provider.config.first_token_timeout, provider.config.stream_idle_timeout);
        let mut reader = Reader::new(response, upstream_kind, delivered.kind, translator, limits);
        match reader.until_content().await {
            Ok(head) => Ok(Continuation {
                reader,
                head,
                splicer: Splicer::new(delivered, mode, provider.dialect()),
                permits,
                retry,
                provider: name.to_owned(),
                mode,
            }),
            Err(failure) => {
                fail(permits, &failure);
                Err(Refusal::Failed)
            }
        }
    }
}

/// A 400 saying the model does not continue an assistant message.
fn rejects_prefill(failure: &UpstreamFailure) -> bool {
    match failure {
        UpstreamFailure::Status { status: 400, body, .. } => {
            let text = String::from_utf8_lossy(body).to_ascii_lowercase();
            text.contains("prefill")
        }
        _ => false,
    }
}

/// `body` (a request in `dialect`) with `prefix` as a final assistant message to continue. A
/// request that already ends with one (the client's own prefill) has the prefix appended to it.
fn with_prefill(body: &[u8], dialect: Dialect, prefix: &str) -> Result<Bytes, String> {
    let mut json: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    // Anthropic refuses a final assistant message that ends in whitespace; the continuation
    // then begins with it, and the splicer drops it again.
    let prefix = if dialect == Dialect::Anthropic { prefix.trim_end() } else { prefix };
    let messages = json.get_mut("messages").and_then(Value::as_array_mut).ok_or("the request has no messages")?;
    let last = messages.last_mut().filter(|m| m.get("role").and_then(Value::as_str) == Some("assistant"));
    match last.and_then(|m| m.get_mut("content")) {
        Some(Value::String(text)) => text.push_str(prefix),
        Some(Value::Array(blocks)) => blocks.push(json!({"type": "text", "text": prefix})),
        _ => messages.push(json!({"role": "assistant", "content": prefix})),
    }
    serde_json::to_vec(&json).map(Bytes::from).map_err(|e| e.to_string())
}

/// What the client's stream holds so far, as far as continuing it is concerned.
pub struct Delivered {
    /// The client's stream dialect.
    pub kind: StreamKind,
    /// The answer's text so far.
    pub text: String,
    /// Nothing but text was delivered, in one choice: a prefix can say all of it.
    only_text: bool,
    /// OpenAI: the first chunk's `id`, which continuation chunks take over.
    chat_id: Option<String>,
    /// Anthropic: content blocks started so far.
    blocks: u64,
    /// Anthropic: the block started and not yet stopped.
    open_block: Option<u64>,
}

impl Delivered {
    pub fn new(kind: StreamKind) -> Self {
        Self { kind, text: String::new(), only_text: true, chat_id: None, blocks: 0, open_block: None }
    }

    /// Notes one event the client was sent (client dialect).
    pub fn observe(&mut self, raw: &[u8]) {
        let event = parse_event(raw);
        let Some(data) = data_json(&event) else { return };
        match self.kind {
            StreamKind::ChatCompletions => {
                if self.chat_id.is_none() {
                    self.chat_id = data.get("id").and_then(Value::as_str).map(str::to_owned);
                }
                for choice in data.get("choices").and_then(Value::as_array).into_iter().flatten() {
                    self.only_text &= choice.get("index").and_then(Value::as_u64).unwrap_or(0) == 0;
                    let Some(delta) = choice.get("delta") else { continue };
                    self.only_text &= !NON_TEXT_DELTA.iter().any(|k| delta.get(*k).is_some_and(|v| !v.is_null()));
                    if let Some(text) = delta.get("content").and_then(Value::as_str) {
                        self.text.push_str(text);
                    }
                }
            }
            StreamKind::Messages => match event_type(&event).as_deref() {
                Some("content_block_start") => {
                    self.blocks += 1;
                    self.open_block = data.get("index").and_then(Value::as_u64);
                    self.only_text &= data.pointer("/content_block/type").and_then(Value::as_str) == Some("text");
                }
                Some("content_block_delta") => match data.pointer("/delta/type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        self.text.push_str(data.pointer("/delta/text").and_then(Value::as_str).unwrap_or(""));
                    }
                    _ => self.only_text = false,
                },
                Some("content_block_stop") => self.open_block = None,
                _ => {}
            },
            StreamKind::Completions | StreamKind::Responses => self.only_text = false,
        }
    }

    /// Whether another target could be asked to continue this stream.
    pub fn can_continue(&self) -> bool {
        self.only_text && !self.text.is_empty()
    }
}

fn data_json(event: &SseEvent) -> Option<Value> {
    let data = event.data.trim();
    if data.is_empty() || data == "[DONE]" {
        return None;
    }
    serde_json::from_str(data).ok()
}

/// What one continuation event becomes in the client's stream.
pub enum Spliced {
    /// Relay this event (`None`: nothing to relay for it).
    Relay(Option<Bytes>),
    /// A restarted answer that does not repeat the delivered text: this target cannot continue.
    Diverged,
}

/// Rewrites a continuation's events (client dialect) into the client's stream.
pub struct Splicer {
    /// The client's stream dialect.
    kind: StreamKind,
    /// Restart: delivered text the new answer must repeat before anything is relayed.
    to_match: String,
    /// Prefill to Anthropic: whitespace cut off the prefix, dropped again from the
    /// continuation's start.
    trimmed: String,
    /// OpenAI: the client stream's chunk `id`, put on every continuation chunk.
    chat_id: Option<String>,
    /// Anthropic: the client's index of the continuation's first block.
    block_offset: u64,
    /// Anthropic: the client's open block, which the continuation's first block extends.
    open_block: Option<u64>,
}

impl Splicer {
    fn new(delivered: &Delivered, mode: Mode, target: Dialect) -> Self {
        let trimmed = match (mode, target) {
            (Mode::Prefill, Dialect::Anthropic) => delivered.text[delivered.text.trim_end().len()..].to_owned(),
            _ => String::new(),
        };
        let (to_match, block_offset) = match mode {
            Mode::Restart => (delivered.text.clone(), 0),
            Mode::Prefill => (String::new(), delivered.open_block.unwrap_or(delivered.blocks)),
        };
        let open_block = match mode {
            // A restarted answer repeats every block from the first.
            Mode::Restart => Some(0).filter(|_| delivered.blocks > 0),
            Mode::Prefill => delivered.open_block,
        };
        Self { kind: delivered.kind, to_match, trimmed, chat_id: delivered.chat_id.clone(), block_offset, open_block }
    }

    pub fn adapt(&mut self, raw: Bytes) -> Spliced {
        let event = parse_event(&raw);
        if is_error_event(self.kind, &event) {
            // The reader fails the stream after it; the client is told by the relay, once.
            return Spliced::Relay(None);
        }
        if event.data.trim() == "[DONE]" {
            return self.unless_matching(Some(raw));
        }
        let Some(mut data) = data_json(&event) else { return Spliced::Relay(None) };
        match self.kind {
            StreamKind::ChatCompletions => self.adapt_chunk(&mut data),
            StreamKind::Messages => self.adapt_message_event(event.event.as_deref(), &mut data, raw),
            StreamKind::Completions | StreamKind::Responses => Spliced::Diverged,
        }
    }

    /// `event` once the delivered text has been matched; before, the new answer ended or
    /// turned away from it.
    fn unless_matching(&self, event: Option<Bytes>) -> Spliced {
        if self.to_match.is_empty() { Spliced::Relay(event) } else { Spliced::Diverged }
    }

    /// The continuation's next text, less what the client already has; `None` if it diverges.
    fn splice_text(&mut self, text: &str) -> Option<String> {
        if !self.to_match.is_empty() {
            if let Some(rest) = self.to_match.strip_prefix(text) {
                self.to_match = rest.to_owned();
                return Some(String::new());
            }
            let rest = text.strip_prefix(self.to_match.as_str())?;
            self.to_match.clear();
            return Some(rest.to_owned());
        }
        if !self.trimmed.is_empty() && !text.is_empty() {
            let common = text.chars().zip(self.trimmed.chars()).take_while(|(a, b)| a == b).count();
            let cut: usize = text.chars().take(common).map(char::len_utf8).sum();
            self.trimmed.clear();
            return Some(text[cut..].to_owned());
        }
        Some(text.to_owned())
    }

    fn adapt_chunk(&mut self, chunk: &mut Value) -> Spliced {
        let usage_only = chunk.get("choices").and_then(Value::as_array).is_some_and(Vec::is_empty);
        if usage_only {
            return self.unless_matching(Some(format_event(None, &self.with_chat_id(chunk))));
        }
        let Some(choice) = chunk.pointer_mut("/choices/0") else { return Spliced::Relay(None) };
        let finished = choice.get("finish_reason").is_some_and(|f| !f.is_null());
        let Some(delta) = choice.get_mut("delta").and_then(Value::as_object_mut) else {
            return Spliced::Relay(None);
        };
        // The client already has its role chunk.
        delta.remove("role");
        let other = NON_TEXT_DELTA.iter().any(|k| delta.get(*k).is_some_and(|v| !v.is_null()));
        if let Some(Value::String(text)) = delta.remove("content") {
            let Some(rest) = self.splice_text(&text) else { return Spliced::Diverged };
            delta.insert("content".into(), Value::String(rest));
        }
        if (finished || other) && !self.to_match.is_empty() {
            return Spliced::Diverged;
        }
        let has_text = delta.get("content").and_then(Value::as_str).is_some_and(|t| !t.is_empty());
        if !(has_text || finished || other) {
            return Spliced::Relay(None);
        }
        Spliced::Relay(Some(format_event(None, &self.with_chat_id(chunk))))
    }

    /// The chunk with the client's stream's `id`, so SDKs that group chunks by id see one answer.
    fn with_chat_id(&self, chunk: &mut Value) -> String {
        if let (Some(id), Some(object)) = (&self.chat_id, chunk.as_object_mut()) {
            object.insert("id".into(), Value::String(id.clone()));
        }
        chunk.to_string()
    }

    fn adapt_message_event(&mut self, name: Option<&str>, data: &mut Value, raw: Bytes) -> Spliced {
        let kind = name.map(str::to_owned).or_else(|| data.get("type").and_then(Value::as_str).map(str::to_owned));
        let Some(kind) = kind else { return Spliced::Relay(None) };
        let index = data.get("index").and_then(Value::as_u64).map(|i| i + self.block_offset);
        if let (Some(index), Some(object)) = (index, data.as_object_mut()) {
            object.insert("index".into(), json!(index));
        }
        let rewritten = |data: &Value| Some(format_event(Some(&kind), &data.to_string()));
        match kind.as_str() {
            "message_start" | "ping" => Spliced::Relay(None),
            "content_block_start" if index.is_some() && index == self.open_block => Spliced::Relay(None),
            "content_block_delta" if data.pointer("/delta/type").and_then(Value::as_str) == Some("text_delta") => {
                let text = data.pointer("/delta/text").and_then(Value::as_str).unwrap_or("").to_owned();
                let Some(rest) = self.splice_text(&text) else { return Spliced::Diverged };
                if rest.is_empty() {
                    return Spliced::Relay(None);
                }
                if let Some(delta) = data.get_mut("delta").and_then(Value::as_object_mut) {
                    delta.insert("text".into(), Value::String(rest));
                }
                Spliced::Relay(rewritten(data))
            }
            "content_block_start" | "content_block_delta" | "content_block_stop" => {
                self.unless_matching(rewritten(data))
            }
            _ => self.unless_matching(Some(raw)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(content: &str) -> Bytes {
        format_event(None, &json!({"id": "b", "choices": [{"index": 0, "delta": {"content": content}}]}).to_string())
    }

    fn delivered_chat(parts: &[&str]) -> Delivered {
        let mut delivered = Delivered::new(StreamKind::ChatCompletions);
        delivered.observe(&format_event(
            None,
            &json!({"id": "a", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}).to_string(),
        ));
        for part in parts {
            delivered.observe(&format_event(
                None,
                &json!({"id": "a", "choices": [{"index": 0, "delta": {"content": part}}]}).to_string(),
            ));
        }
        delivered
    }

    fn relayed_text(out: Spliced) -> Option<String> {
        match out {
            Spliced::Relay(Some(raw)) => {
                let data = data_json(&parse_event(&raw))?;
                assert_eq!(data["id"], "a", "continuation chunks carry the client's stream id");
                data.pointer("/choices/0/delta/content").and_then(Value::as_str).map(str::to_owned)
            }
            Spliced::Relay(None) => Some(String::new()),
            Spliced::Diverged => None,
        }
    }

    #[test]
    fn restart_relays_only_what_follows_the_delivered_text() {
        let delivered = delivered_chat(&["Hello", " wor"]);
        assert_eq!(delivered.text, "Hello wor");
        let mut splicer = Splicer::new(&delivered, Mode::Restart, Dialect::OpenAi);
        assert_eq!(relayed_text(splicer.adapt(chunk("Hel"))).as_deref(), Some(""));
        assert_eq!(relayed_text(splicer.adapt(chunk("lo world"))).as_deref(), Some("ld"));
        assert_eq!(relayed_text(splicer.adapt(chunk("!"))).as_deref(), Some("!"));
    }

    #[test]
    fn a_restart_that_says_something_else_diverges() {
        let delivered = delivered_chat(&["Hello"]);
        let mut splicer = Splicer::new(&delivered, Mode::Restart, Dialect::OpenAi);
        assert!(matches!(splicer.adapt(chunk("Goodbye")), Spliced::Diverged));
        let mut splicer = Splicer::new(&delivered, Mode::Restart, Dialect::OpenAi);
        assert!(matches!(splicer.adapt(chunk("He")), Spliced::Relay(_)));
        assert!(matches!(splicer.adapt(format_event(None, "[DONE]")), Spliced::Diverged), "ended before matching");
    }

    #[test]
    fn anthropic_prefill_drops_the_whitespace_it_could_not_send() {
        let delivered = delivered_chat(&["Hello "]);
        assert_eq!(
            with_prefill(br#"{"messages":[]}"#, Dialect::Anthropic, &delivered.text).unwrap(),
            Bytes::from(r#"{"messages":[{"content":"Hello","role":"assistant"}]}"#)
        );
        let mut splicer = Splicer::new(&delivered, Mode::Prefill, Dialect::Anthropic);
        assert_eq!(relayed_text(splicer.adapt(chunk(" world"))).as_deref(), Some("world"));
        assert_eq!(relayed_text(splicer.adapt(chunk(" again"))).as_deref(), Some(" again"));
    }

    #[test]
    fn a_client_prefill_is_extended() {
        let body = br#"{"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"A: "}]}"#;
        let out: Value = serde_json::from_slice(&with_prefill(body, Dialect::OpenAi, "yes").unwrap()).unwrap();
        assert_eq!(out["messages"].as_array().unwrap().len(), 2);
        assert_eq!(out["messages"][1]["content"], "A: yes");
    }

    #[test]
    fn tool_calls_and_reasoning_cannot_be_continued() {
        let mut delivered = delivered_chat(&["Let me check"]);
        assert!(delivered.can_continue());
        delivered.observe(&format_event(
            None,
            &json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0}]}}]}).to_string(),
        ));
        assert!(!delivered.can_continue());
        let mut thinking = Delivered::new(StreamKind::Messages);
        thinking.observe(&format_event(
            Some("content_block_start"),
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}"#,
        ));
        thinking.text.push('x');
        assert!(!thinking.can_continue());
    }

    #[test]
    fn an_anthropic_prefill_continues_the_open_block() {
        let mut delivered = Delivered::new(StreamKind::Messages);
        delivered.observe(&format_event(
            Some("content_block_start"),
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
        ));
        delivered.observe(&format_event(
            Some("content_block_delta"),
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#,
        ));
        let mut splicer = Splicer::new(&delivered, Mode::Prefill, Dialect::Anthropic);
        let start = format_event(
            Some("content_block_start"),
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
        );
        assert!(matches!(splicer.adapt(start), Spliced::Relay(None)), "the open block is not started twice");
        let stop = format_event(Some("content_block_stop"), r#"{"type":"content_block_stop","index":0}"#);
        let Spliced::Relay(Some(out)) = splicer.adapt(stop) else { panic!("a block stop is relayed") };
        assert_eq!(data_json(&parse_event(&out)).unwrap()["index"], 0);
    }
}
