//! Streamed answers, translated event by event.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::{Value, json};

use super::response::{anthropic_stop_reason, anthropic_usage, openai_finish_reason, openai_usage, reasoning_of};
use super::{
    Object, Result, array_at, blank, join, malformed, member, now, object_at, parse_arguments, refuse, required,
    str_at, string_or_empty, type_of,
};
use crate::cache_key::normalize::Dialect;
use crate::wire::sse::{self, SseEvent, StreamKind, format_event};

const ANTHROPIC_ERROR_TYPES: &[&str] = &[
    "invalid_request_error",
    "authentication_error",
    "permission_error",
    "not_found_error",
    "request_too_large",
    "rate_limit_error",
    "api_error",
    "overloaded_error",
];

/// Translates an upstream SSE stream event by event, so the client gets its first bytes as soon
/// as upstream sends them. Only what cannot be known early waits: Anthropic's `message_delta`
/// carries the final usage, which OpenAI sends after the finish reason.
pub struct StreamTranslator {
    /// Same dialect (checked, passed through) or one of the two directions.
    inner: Inner,
}

enum Inner {
    Same(Passthrough),
    FromOpenAi(FromOpenAi),
    FromAnthropic(FromAnthropic),
}

impl StreamTranslator {
    pub fn new(from: Dialect, to: Dialect) -> Self {
        let inner = match (from, to) {
            (Dialect::OpenAi, Dialect::Anthropic) => Inner::FromOpenAi(FromOpenAi::default()),
            (Dialect::Anthropic, Dialect::OpenAi) => Inner::FromAnthropic(FromAnthropic::default()),
            (dialect, _) => Inner::Same(Passthrough { dialect, finished: false, failed: false }),
        };
        Self { inner }
    }

    /// Raw client-dialect SSE events (each complete, ending in a blank line) to send for one
    /// upstream event. May be empty. An error means the answer cannot be carried over (an
    /// unparsable event, tool arguments that are not JSON): the caller should cut the stream
    /// rather than finish it.
    ///
    /// An upstream error event is passed on in the client's shape, and after it nothing more
    /// is sent and [`StreamTranslator::finished`] stays false: a failed answer must not look
    /// whole.
    pub fn push(&mut self, event: &SseEvent) -> Result<Vec<Bytes>> {
        if event.data.trim().is_empty() {
            // Comments and keep-alives only pace the stream.
            return Ok(Vec::new());
        }
        match &mut self.inner {
            Inner::Same(same) => Ok(same.push(event)),
            Inner::FromOpenAi(state) => state.push(event),
            Inner::FromAnthropic(state) => state.push(event),
        }
    }

    /// True once the client-dialect terminal event has been emitted (`data: [DONE]` for OpenAI;
    /// `message_stop` for Anthropic).
    pub fn finished(&self) -> bool {
        match &self.inner {
            Inner::Same(same) => same.finished,
            Inner::FromOpenAi(state) => state.finished,
            Inner::FromAnthropic(state) => state.finished,
        }
    }
}

fn parse_data(data: &str) -> Result<Object> {
    match serde_json::from_str::<Value>(data) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(malformed("event data", "expected a JSON object")),
        Err(e) => Err(malformed("event data", e.to_string())),
    }
}

/// An Anthropic event names its type twice: the SDK drops events without an `event:` line.
fn anthropic_event(data: Value) -> Bytes {
    let name = data.get("type").and_then(Value::as_str).unwrap_or("").to_owned();
    format_event(Some(&name), &data.to_string())
}

fn error_message(error: Option<&Value>) -> String {
    match error {
        Some(Value::String(message)) => message.clone(),
        Some(error) => error.get("message").and_then(Value::as_str).map_or_else(|| error.to_string(), str::to_owned),
        None => "upstream error".to_owned(),
    }
}

struct Passthrough {
    /// The stream's dialect, for its terminal and error events.
    dialect: Dialect,
    /// The terminal event passed: anything after it is dropped.
    finished: bool,
    /// An error event passed: the stream is over and is not an answer.
    failed: bool,
}

impl Passthrough {
    fn push(&mut self, event: &SseEvent) -> Vec<Bytes> {
        if self.finished || self.failed {
            return Vec::new();
        }
        let kind = match self.dialect {
            Dialect::OpenAi => StreamKind::ChatCompletions,
            Dialect::Anthropic => StreamKind::Messages,
        };
        self.failed = sse::is_error_event(kind, event);
        self.finished = !self.failed && sse::is_terminal(kind, event);
        vec![format_event(event.event.as_deref(), &event.data)]
    }
}

/// The kind of Anthropic block an OpenAI delta field feeds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Thinking,
    /// By OpenAI tool-call index.
    Tool(u64),
}

#[derive(Clone, Copy)]
struct Open {
    /// The Anthropic block index.
    block: u64,
    /// What feeds it: text, thinking or one tool call.
    kind: Kind,
}

struct Tool {
    /// The Anthropic block index the tool call was given.
    block: u64,
    /// Checked once the stream ends: an answer whose arguments are not a JSON object would
    /// break the client's assembly, so it must not finish.
    arguments: String,
}

/// OpenAI chunks → Anthropic events. Deltas open Anthropic blocks one at a time; a block closes
/// when a delta of another kind arrives or the choice finishes.
#[derive(Default)]
struct FromOpenAi {
    /// `message_start` was sent (on the first chunk).
    started: bool,
    /// Anthropic blocks opened so far: the next block's index.
    blocks: u64,
    /// The block deltas go to now; at most one is open at a time.
    open: Option<Open>,
    /// Tool calls by OpenAI index, each with its block and arguments so far.
    tools: BTreeMap<u64, Tool>,
    /// OpenAI's `finish_reason`, once it came: it becomes `stop_reason`.
    finish: Option<String>,
    /// The stop sequence that ended the answer, where the server says which.
    stop_sequence: Option<String>,
    /// A refusal was streamed, which Anthropic reports as `stop_reason: refusal`.
    refusal: bool,
    /// Answer text that is only whitespace so far, not yet in a block.
    held: String,
    /// The usage chunk, for `message_delta`'s final usage.
    usage: Option<Value>,
    /// `message_delta` was sent; it goes once, after the finish and the usage.
    delta_sent: bool,
    /// `message_stop` was sent: the translated stream is complete.
    finished: bool,
    /// An error event arrived and was passed on: nothing more is sent.
    failed: bool,
}

impl FromOpenAi {
    fn push(&mut self, event: &SseEvent) -> Result<Vec<Bytes>> {
        let mut out = Vec::new();
        if self.finished || self.failed {
            return Ok(out);
        }
        let data = event.data.trim();
        if data == "[DONE]" {
            self.done(&mut out)?;
            return Ok(out);
        }
        let chunk = parse_data(data)?;
        if let Some(error) = member(&chunk, "error") {
            self.failed = true;
            out.push(anthropic_error(error));
            return Ok(out);
        }
        if !self.started {
            self.started = true;
            let message = json!({
                "id": string_or_empty(&chunk, "id"), "type": "message", "role": "assistant",
                "model": string_or_empty(&chunk, "model"), "content": [], "stop_reason": null, "stop_sequence": null,
                // OpenAI counts arrive last; message_delta carries them.
                "usage": {"input_tokens": 0, "output_tokens": 0},
            });
            out.push(anthropic_event(json!({"type": "message_start", "message": message})));
        }
        let choices = match member(&chunk, "choices") {
            None => &[][..],
            Some(choices) => array_at(choices, "choices")?,
        };
        for (position, choice) in choices.iter().enumerate() {
            let path = format!("choices[{position}]");
            let choice = object_at(choice, &path)?;
            if member(choice, "index").is_some_and(|index| index.as_u64() != Some(0)) {
                return Err(refuse(join(&path, "index"), Dialect::Anthropic, "an Anthropic message holds one answer"));
            }
            if let Some(delta) = member(choice, "delta") {
                self.delta(object_at(delta, &join(&path, "delta"))?, &join(&path, "delta"), &mut out)?;
            }
            if let Some(finish) = member(choice, "finish_reason") {
                self.close(&mut out);
                self.finish = Some(str_at(finish, &join(&path, "finish_reason"))?.to_owned());
                self.stop_sequence = member(choice, "stop_reason").and_then(Value::as_str).map(str::to_owned);
            }
        }
        if let Some(usage) = member(&chunk, "usage") {
            self.usage = Some(usage.clone());
            // Usage comes in the finish chunk or in one of its own right after; either way
            // everything message_delta says is known now.
            if self.finish.is_some() {
                out.push(self.message_delta());
                self.delta_sent = true;
            }
        }
        Ok(out)
    }

    fn delta(&mut self, delta: &Object, path: &str, out: &mut Vec<Bytes>) -> Result<()> {
        if let Some(reasoning) = reasoning_of(delta) {
            self.text(Kind::Thinking, reasoning, out);
        }
        if let Some(content) = member(delta, "content") {
            let content = str_at(content, &join(path, "content"))?;
            if !content.is_empty() {
                self.text(Kind::Text, content, out);
            }
        }
        if let Some(refusal) = member(delta, "refusal").and_then(Value::as_str).filter(|r| !r.is_empty()) {
            self.refusal = true;
            self.text(Kind::Text, refusal, out);
        }
        let Some(calls) = member(delta, "tool_calls") else {
            return Ok(());
        };
        let calls_path = join(path, "tool_calls");
        for (j, call) in array_at(calls, &calls_path)?.iter().enumerate() {
            let call_path = format!("{calls_path}[{j}]");
            let call = object_at(call, &call_path)?;
            let index = match member(call, "index") {
                Some(index) => {
                    index.as_u64().ok_or_else(|| malformed(join(&call_path, "index"), "expected an integer"))?
                }
                // Providers that omit the index send each call whole.
                None => self.tools.len() as u64,
            };
            let function = member(call, "function").map(|f| object_at(f, &join(&call_path, "function"))).transpose()?;
            let arguments = match function.and_then(|f| member(f, "arguments")) {
                Some(arguments) => str_at(arguments, &join(&call_path, "function.arguments"))?,
                None => "",
            };
            if !self.tools.contains_key(&index) {
                self.close(out);
                let id =
                    member(call, "id").and_then(Value::as_str).map_or_else(|| format!("call_{index}"), str::to_owned);
                let name = function.and_then(|f| member(f, "name")).and_then(Value::as_str).unwrap_or("");
                let block = self.start(json!({"type": "tool_use", "id": id, "name": name, "input": {}}), out);
                self.tools.insert(index, Tool { block, arguments: String::new() });
                self.open = Some(Open { block, kind: Kind::Tool(index) });
            }
            if let Some(tool) = self.tools.get_mut(&index)
                && !arguments.is_empty()
            {
                tool.arguments.push_str(arguments);
                // A fragment for a call whose block already closed still names its block:
                // clients accumulate by index.
                let delta = json!({"type": "input_json_delta", "partial_json": arguments});
                out.push(anthropic_event(json!({"type": "content_block_delta", "index": tool.block, "delta": delta})));
            }
        }
        Ok(())
    }

    fn text(&mut self, kind: Kind, text: &str, out: &mut Vec<Bytes>) {
        if let Some(open) = self.open.filter(|open| open.kind == kind) {
            Self::text_delta(open.block, kind, text, out);
            return;
        }
        let text = if kind == Kind::Text {
            // A text block opens only once it holds more than whitespace: Anthropic refuses a
            // blank one when the client sends the answer back. The whitespace waits, then leads.
            self.held.push_str(text);
            if blank(&self.held) {
                return;
            }
            std::mem::take(&mut self.held)
        } else {
            text.to_owned()
        };
        self.close(out);
        let skeleton = match kind {
            Kind::Thinking => json!({"type": "thinking", "thinking": "", "signature": ""}),
            _ => json!({"type": "text", "text": ""}),
        };
        let block = self.start(skeleton, out);
        self.open = Some(Open { block, kind });
        Self::text_delta(block, kind, &text, out);
    }

    fn text_delta(block: u64, kind: Kind, text: &str, out: &mut Vec<Bytes>) {
        let delta = match kind {
            Kind::Thinking => json!({"type": "thinking_delta", "thinking": text}),
            _ => json!({"type": "text_delta", "text": text}),
        };
        out.push(anthropic_event(json!({"type": "content_block_delta", "index": block, "delta": delta})));
    }

    fn start(&mut self, block: Value, out: &mut Vec<Bytes>) -> u64 {
        let index = self.blocks;
        self.blocks += 1;
        out.push(anthropic_event(json!({"type": "content_block_start", "index": index, "content_block": block})));
        index
    }

    fn close(&mut self, out: &mut Vec<Bytes>) {
        if let Some(open) = self.open.take() {
            out.push(anthropic_event(json!({"type": "content_block_stop", "index": open.block})));
        }
    }

    fn message_delta(&self) -> Bytes {
        let (stop_reason, stop_sequence) = anthropic_stop_reason(
            self.finish.as_deref(),
            !self.tools.is_empty(),
            self.refusal,
            self.stop_sequence.as_deref(),
        );
        anthropic_event(json!({
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
            "usage": anthropic_usage(self.usage.as_ref()),
        }))
    }

    fn done(&mut self, out: &mut Vec<Bytes>) -> Result<()> {
        if !self.started {
            return Err(malformed("stream", "[DONE] before any chunk"));
        }
        for (index, tool) in &self.tools {
            parse_arguments(&tool.arguments, &format!("choices[0].message.tool_calls[{index}].function.arguments"))?;
        }
        self.close(out);
        if !self.delta_sent {
            out.push(self.message_delta());
        }
        out.push(anthropic_event(json!({"type": "message_stop"})));
        self.finished = true;
        Ok(())
    }
}

fn anthropic_error(error: &Value) -> Bytes {
    let named = |key: &str| error.get(key).and_then(Value::as_str);
    let kind = match named("type") {
        Some(kind) if ANTHROPIC_ERROR_TYPES.contains(&kind) => kind,
        _ if [named("type"), named("code")].into_iter().flatten().any(|kind| kind.contains("rate_limit")) => {
            "rate_limit_error"
        }
        _ => "api_error",
    };
    anthropic_event(json!({"type": "error", "error": {"type": kind, "message": error_message(Some(error))}}))
}

enum Block {
    Text,
    Thinking,
    /// Redacted thinking, or anything else with nothing to show.
    Ignored,
    Tool {
        /// The OpenAI tool-call index.
        index: u64,
        /// A non-empty `input` given at the start, sent as the arguments unless input deltas
        /// follow (they replace it, as in the client's assembly).
        start_input: Option<String>,
    },
}

/// Anthropic events → OpenAI chunks. Every chunk repeats the message's id and model, and a
/// `created` taken when the stream started.
#[derive(Default)]
struct FromAnthropic {
    /// `id`, `model` and `created` from `message_start`, repeated on every chunk.
    head: Option<Object>,
    /// Usage merged from `message_start` and `message_delta`.
    usage: Object,
    /// Open blocks by Anthropic index: what their deltas become.
    blocks: BTreeMap<u64, Block>,
    /// Tool calls so far: the next OpenAI tool-call index.
    tools: u64,
    /// The finish chunk was sent; it goes once.
    finish_sent: bool,
    /// `[DONE]` was sent: the translated stream is complete.
    finished: bool,
    /// An error event arrived and was passed on: nothing more is sent.
    failed: bool,
}

impl FromAnthropic {
    fn push(&mut self, event: &SseEvent) -> Result<Vec<Bytes>> {
        let mut out = Vec::new();
        if self.finished || self.failed {
            return Ok(out);
        }
        let data = parse_data(&event.data)?;
        let kind = data.get("type").and_then(Value::as_str).or(event.event.as_deref()).unwrap_or("");
        match kind {
            "ping" => {}
            "error" => {
                self.failed = true;
                let error = json!({"error": {"message": error_message(member(&data, "error")),
                    "type": member(&data, "error").and_then(|e| e.get("type")).and_then(Value::as_str).unwrap_or("api_error"),
                    "param": null, "code": null}});
                out.push(format_event(None, &error.to_string()));
            }
            "message_start" => {
                let message = object_at(required(&data, "message", "")?, "message")?;
                let mut head = Object::new();
                head.insert("id".into(), string_or_empty(message, "id"));
                head.insert("object".into(), "chat.completion.chunk".into());
                head.insert("created".into(), now().into());
                head.insert("model".into(), string_or_empty(message, "model"));
                self.head = Some(head);
                if let Some(Value::Object(usage)) = message.get("usage") {
                    merge_usage(&mut self.usage, usage);
                }
                out.push(self.delta_chunk(json!({"role": "assistant", "content": ""})));
            }
            "content_block_start" | "content_block_delta" | "content_block_stop" | "message_delta" | "message_stop"
                if self.head.is_none() =>
            {
                return Err(malformed("stream", format!("{kind} before message_start")));
            }
            "content_block_start" => self.block_start(&data, &mut out)?,
            "content_block_delta" => self.block_delta(&data, &mut out)?,
            "content_block_stop" => {
                let index = data.get("index").and_then(Value::as_u64);
                if let Some(Block::Tool { index, start_input }) = index.and_then(|i| self.blocks.get_mut(&i))
                    && let Some(input) = start_input.take()
                {
                    let call = json!({"index": *index, "function": {"arguments": input}});
                    out.push(self.delta_chunk(json!({ "tool_calls": [call] })));
                }
            }
            "message_delta" => {
                if let Some(Value::Object(usage)) = data.get("usage") {
                    merge_usage(&mut self.usage, usage);
                }
                let stop_reason = data.get("delta").and_then(|d| d.get("stop_reason")).and_then(Value::as_str);
                if let Some(stop_reason) = stop_reason
                    && !self.finish_sent
                {
                    self.finish_sent = true;
                    let choice = json!({"index": 0, "delta": {}, "logprobs": null, "finish_reason": openai_finish_reason(Some(stop_reason))});
                    out.push(self.chunk("choices", json!([choice])));
                }
            }
            "message_stop" => {
                // As with `stream_options.include_usage`: a chunk without choices, then [DONE].
                let mut chunk = self.head.clone().unwrap_or_default();
                chunk.insert("choices".into(), json!([]));
                chunk.insert("usage".into(), openai_usage(Some(&self.usage)));
                out.push(format_event(None, &Value::Object(chunk).to_string()));
                out.push(format_event(None, "[DONE]"));
                self.finished = true;
            }
            // Event types added after this was written; the Anthropic SDKs skip them too.
            _ => {}
        }
        Ok(out)
    }

    fn block_start(&mut self, data: &Object, out: &mut Vec<Bytes>) -> Result<()> {
        let index = required(data, "index", "")?.as_u64().ok_or_else(|| malformed("index", "expected an integer"))?;
        let block = object_at(required(data, "content_block", "")?, "content_block")?;
        let (kept, text) = match type_of(block) {
            "text" => (Block::Text, member(block, "text").and_then(Value::as_str).map(|t| ("content", t))),
            "thinking" => {
                (Block::Thinking, member(block, "thinking").and_then(Value::as_str).map(|t| ("reasoning_content", t)))
            }
            "redacted_thinking" => (Block::Ignored, None),
            "tool_use" => {
                let position = self.tools;
                self.tools += 1;
                let start_input = match block.get("input") {
                    Some(input @ Value::Object(fields)) if !fields.is_empty() => Some(input.to_string()),
                    _ => None,
                };
                let call = json!({"index": position, "id": string_or_empty(block, "id"), "type": "function",
                    "function": {"name": string_or_empty(block, "name"), "arguments": ""}});
                out.push(self.delta_chunk(json!({ "tool_calls": [call] })));
                (Block::Tool { index: position, start_input }, None)
            }
            _ => {
                let field = format!("content[{index}].type");
                return Err(refuse(field, Dialect::OpenAi, "this content block has no OpenAI equivalent"));
            }
        };
        self.blocks.insert(index, kept);
        if let Some((key, text)) = text.filter(|(_, text)| !text.is_empty()) {
            out.push(self.delta_chunk(json!({ key: text })));
        }
        Ok(())
    }

    fn block_delta(&mut self, data: &Object, out: &mut Vec<Bytes>) -> Result<()> {
        let index = required(data, "index", "")?.as_u64().ok_or_else(|| malformed("index", "expected an integer"))?;
        let delta = object_at(required(data, "delta", "")?, "delta")?;
        let Some(block) = self.blocks.get_mut(&index) else {
            return Err(malformed("index", format!("delta for block {index}, which never started")));
        };
        let text = |key: &str| member(delta, key).ok_or_else(|| malformed(join("delta", key), "missing"));
        match type_of(delta) {
            "text_delta" => {
                let text = str_at(text("text")?, "delta.text")?;
                if !text.is_empty() {
                    out.push(self.delta_chunk(json!({ "content": text })));
                }
            }
            "thinking_delta" => {
                let thinking = str_at(text("thinking")?, "delta.thinking")?;
                if !thinking.is_empty() {
                    out.push(self.delta_chunk(json!({ "reasoning_content": thinking })));
                }
            }
            // The signature only lets Anthropic check its own thinking; citations point into
            // documents, which are refused in requests.
            "signature_delta" | "citations_delta" => {}
            "input_json_delta" => {
                let Block::Tool { index: position, start_input } = block else {
                    return Err(malformed(
                        "delta.type",
                        format!("input_json_delta for block {index}, not a tool call"),
                    ));
                };
                let position = *position;
                *start_input = None;
                let partial = str_at(text("partial_json")?, "delta.partial_json")?;
                if !partial.is_empty() {
                    let call = json!({"index": position, "function": {"arguments": partial}});
                    out.push(self.delta_chunk(json!({ "tool_calls": [call] })));
                }
            }
            _ => return Err(refuse("delta.type", Dialect::OpenAi, "this content delta has no OpenAI equivalent")),
        }
        Ok(())
    }

    fn chunk(&self, key: &str, value: Value) -> Bytes {
        let mut chunk = self.head.clone().unwrap_or_default();
        chunk.insert(key.into(), value);
        format_event(None, &Value::Object(chunk).to_string())
    }

    fn delta_chunk(&self, delta: Value) -> Bytes {
        self.chunk("choices", json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": null}]))
    }
}

/// Anthropic's final usage is message_start's updated by message_delta's; a later `null` does
/// not erase a count (the same rule as the client's assembly).
fn merge_usage(total: &mut Object, update: &Object) {
    for (key, value) in update {
        if !value.is_null() || !total.contains_key(key) {
            total.insert(key.clone(), value.clone());
        }
    }
}
