//! Converts a recorded answer between its streamed form (raw SSE events) and its non-streamed
//! form (one JSON body), so one stored entry serves clients asking for either.
//!
//! Both directions work on `serde_json::Value` and carry fields they do not know along, so a
//! provider adding a field does not make Holdfast drop it. Assembling a stream is strict: a
//! stream without its terminal event, or carrying an error event, is refused rather than turned
//! into a body that looks whole. Generated streams put each field's whole value in one delta;
//! clients accumulate deltas, so one is as valid as many.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::sse::{self, SseEvent, StreamKind};

type Object = Map<String, Value>;

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// A body or event data is not JSON, or not shaped like the endpoint's answer.
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    /// The stream lacks a part every finished stream has (its start or its terminal event).
    #[error("incomplete stream: {0}")]
    Incomplete(&'static str),
    /// Well-formed input with no counterpart in the other form, such as an error event.
    #[error("unsupported: {0}")]
    Unsupported(String),
}

use ConvertError::{Incomplete, InvalidJson, Unsupported};

/// Assembles the non-streamed body a client would have received instead of `events`.
pub fn stream_to_json(kind: StreamKind, events: &[Bytes]) -> Result<Vec<u8>, ConvertError> {
    let body = match kind {
        StreamKind::ChatCompletions | StreamKind::Completions => assemble_openai(kind, events)?,
        StreamKind::Responses => assemble_responses(events)?,
        StreamKind::Messages => assemble_messages(events)?,
    };
    Ok(body.to_string().into_bytes())
}

/// Builds the stream the provider would have sent instead of `body`, in the event order its
/// SDKs expect.
pub fn json_to_stream(kind: StreamKind, body: &[u8]) -> Result<Vec<Bytes>, ConvertError> {
    let body = parse_object(body)?;
    match kind {
        StreamKind::ChatCompletions => chat_to_stream(&body),
        StreamKind::Completions => completions_to_stream(&body),
        StreamKind::Responses => responses_to_stream(body),
        StreamKind::Messages => messages_to_stream(body),
    }
}

fn parse_object(bytes: &[u8]) -> Result<Object, ConvertError> {
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(InvalidJson("expected a JSON object".into())),
        Err(e) => Err(InvalidJson(e.to_string())),
    }
}

fn shape(what: &str) -> ConvertError {
    InvalidJson(format!("unexpected shape of {what}"))
}

/// Events that carry data; comments and keep-alives only pace the stream.
fn data_events(events: &[Bytes]) -> impl Iterator<Item = SseEvent> + '_ {
    events.iter().map(|raw| sse::parse_event(raw)).filter(|event| !event.data.is_empty())
}

fn index_of(value: &Value) -> Option<u64> {
    value.get("index").and_then(Value::as_u64)
}

/// A later `null` must not erase a value an earlier chunk set (`finish_reason` is null until
/// the last chunk), yet the key should exist, as it does in the non-streamed body.
fn set_unless_null(map: &mut Object, key: &str, value: &Value) {
    if !value.is_null() || !map.contains_key(key) {
        map.insert(key.to_owned(), value.clone());
    }
}

fn append_text(map: &mut Object, key: &str, text: &str) {
    match map.get_mut(key) {
        Some(Value::String(existing)) => existing.push_str(text),
        _ => {
            map.insert(key.to_owned(), Value::String(text.to_owned()));
        }
    }
}

/// Keys that name something rather than carry a fragment of it: providers repeat them in
/// several chunks, and concatenating would give "assistantassistant".
const NAMING_KEYS: &[&str] = &["index", "type", "role", "id"];

/// Folds one chat delta into the message built so far, the way the openai SDKs accumulate:
/// strings concatenate, objects merge, arrays of `index`ed objects (tool calls) merge by index,
/// other arrays append, anything else is replaced.
fn merge_delta(acc: &mut Object, delta: &Object) {
    for (key, value) in delta {
        let Some(slot) = acc.get_mut(key) else {
            acc.insert(key.clone(), value.clone());
            continue;
        };
        if value.is_null() || (value.as_str() == Some("") && NAMING_KEYS.contains(&key.as_str())) {
            continue;
        }
        if slot.is_null() || NAMING_KEYS.contains(&key.as_str()) {
            *slot = value.clone();
            continue;
        }
        match (slot, value) {
            (Value::String(text), Value::String(more)) => text.push_str(more),
            (Value::Object(object), Value::Object(more)) => merge_delta(object, more),
            (Value::Array(items), Value::Array(more)) => merge_items(items, more),
            (slot, value) => *slot = value.clone(),
        }
    }
}

fn merge_items(items: &mut Vec<Value>, more: &[Value]) {
    for item in more {
        let existing = index_of(item).and_then(|index| items.iter_mut().find(|i| index_of(i) == Some(index)));
        match (existing, item) {
            (Some(Value::Object(existing)), Value::Object(fragment)) => merge_delta(existing, fragment),
            _ => items.push(item.clone()),
        }
    }
}

/// Shapes merged deltas like a non-streamed message: a role always; `content` null rather than
/// empty when the answer is tool calls or a refusal, as the API returns it; tool calls in index
/// order without the stream-only `index`.
fn finish_message(mut message: Object) -> Value {
    if message.get("role").and_then(Value::as_str).is_none_or(str::is_empty) {
        message.insert("role".into(), "assistant".into());
    }
    if let Some(Value::Array(calls)) = message.get_mut("tool_calls") {
        calls.sort_by_key(index_of);
        for call in calls.iter_mut().filter_map(Value::as_object_mut) {
            call.remove("index");
            if !call.get("type").is_some_and(Value::is_string) {
                call.insert("type".into(), "function".into());
            }
        }
    }
    let has_calls = message.get("tool_calls").and_then(Value::as_array).is_some_and(|calls| !calls.is_empty());
    let has_refusal = message.get("refusal").and_then(Value::as_str).is_some_and(|r| !r.is_empty());
    let content = message.entry("content").or_insert(Value::Null);
    if content.as_str() == Some("") && (has_calls || has_refusal) {
        *content = Value::Null;
    }
    Value::Object(message)
}

/// Chat and legacy completions stream alike: chunks shaped like the final body whose choices
/// carry fragments (`delta` for chat, `text` for completions), usage last, then `[DONE]`.
fn assemble_openai(kind: StreamKind, events: &[Bytes]) -> Result<Value, ConvertError> {
    let chat = kind == StreamKind::ChatCompletions;
    let mut top = Object::new();
    let mut usage = Value::Null;
    // Per choice index: the choice's own fields, and (chat) the message merged from deltas.
    let mut choices: BTreeMap<u64, (Object, Object)> = BTreeMap::new();
    let mut done = false;
    for event in data_events(events) {
        if sse::is_terminal(kind, &event) {
            done = true;
            break;
        }
        if sse::is_error_event(kind, &event) {
            return Err(Unsupported("stream carries an error event".into()));
        }
        let chunk = parse_object(event.data.as_bytes())?;
        for (key, value) in &chunk {
            match key.as_str() {
                // `obfuscation` is random padding OpenAI adds to chunks only.
                "choices" | "object" | "obfuscation" => {}
                "usage" if !value.is_null() => usage = value.clone(),
                "usage" => {}
                _ => set_unless_null(&mut top, key, value),
            }
        }
        let list = match chunk.get("choices") {
            Some(Value::Array(list)) => list.as_slice(),
            None | Some(Value::Null) => &[],
            Some(_) => return Err(shape("choices")),
        };
        for choice in list {
            let choice = choice.as_object().ok_or_else(|| shape("choice"))?;
            let (fields, message) =
                choices.entry(choice.get("index").and_then(Value::as_u64).unwrap_or(0)).or_default();
            for (key, value) in choice {
                match (key.as_str(), value) {
                    // Logprobs are left null: merging them token by token is not worth it for a
                    // fallback answer, and the body stays valid without them.
                    ("index" | "logprobs" | "delta", Value::Null) | ("index" | "logprobs", _) => {}
                    ("delta", Value::Object(delta)) if chat => merge_delta(message, delta),
                    ("delta", _) if chat => return Err(shape("delta")),
                    ("text", Value::String(text)) if !chat => append_text(fields, "text", text),
                    _ => set_unless_null(fields, key, value),
                }
            }
        }
    }
    if !done {
        return Err(Incomplete("no [DONE] event"));
    }
    if top.is_empty() && choices.is_empty() {
        return Err(Incomplete("no chunk before [DONE]"));
    }
    let choices: Vec<Value> = choices
        .into_iter()
        .map(|(index, (mut fields, message))| {
            if chat {
                fields.insert("message".into(), finish_message(message));
            } else {
                fields.entry("text").or_insert_with(|| "".into());
            }
            fields.insert("index".into(), index.into());
            fields.insert("logprobs".into(), Value::Null);
            fields.entry("finish_reason").or_insert(Value::Null);
            Value::Object(fields)
        })
        .collect();
    top.insert("object".into(), if chat { "chat.completion" } else { "text_completion" }.into());
    top.insert("choices".into(), choices.into());
    if !usage.is_null() {
        top.insert("usage".into(), usage);
    }
    Ok(Value::Object(top))
}

/// The Responses API repeats the whole response in its terminal event, so that event is the
/// answer and the deltas before it add nothing. `response.incomplete` (output token limit) is
/// an answer too: the non-streamed call returns the same object.
fn assemble_responses(events: &[Bytes]) -> Result<Value, ConvertError> {
    for event in data_events(events) {
        if sse::is_error_event(StreamKind::Responses, &event) {
            return Err(Unsupported("stream carries an error event".into()));
        }
        if sse::is_terminal(StreamKind::Responses, &event) {
            return match parse_object(event.data.as_bytes())?.remove("response") {
                Some(response @ Value::Object(_)) => Ok(response),
                _ => Err(shape("terminal response event")),
            };
        }
    }
    Err(Incomplete("no response.completed event"))
}

/// Anthropic streams the message skeleton, each content block as start / deltas / stop, then
/// the stop reason with final usage, then `message_stop`.
fn assemble_messages(events: &[Bytes]) -> Result<Value, ConvertError> {
    let mut message: Option<Object> = None;
    let mut blocks: BTreeMap<u64, Object> = BTreeMap::new();
    // Tool input arrives as JSON text in pieces that are not JSON on their own.
    let mut partial_inputs: BTreeMap<u64, String> = BTreeMap::new();
    let mut stopped = false;
    for event in data_events(events) {
        let data = parse_object(event.data.as_bytes())?;
        let index = || data.get("index").and_then(Value::as_u64).ok_or_else(|| shape("block index"));
        match data.get("type").and_then(Value::as_str).or(event.event.as_deref()).unwrap_or("") {
            "message_start" => {
                let start = data.get("message").and_then(Value::as_object).ok_or_else(|| shape("message_start"))?;
                message = Some(start.clone());
            }
            "content_block_start" => {
                let block = data.get("content_block").and_then(Value::as_object).ok_or_else(|| shape("block"))?;
                blocks.insert(index()?, block.clone());
            }
            "content_block_delta" => {
                let index = index()?;
                let delta = data.get("delta").and_then(Value::as_object).ok_or_else(|| shape("block delta"))?;
                let block = blocks.get_mut(&index).ok_or(Incomplete("delta for a block that never started"))?;
                let text = |name: &str| delta.get(name).and_then(Value::as_str).ok_or_else(|| shape(name));
                match delta.get("type").and_then(Value::as_str).unwrap_or("") {
                    "text_delta" => append_text(block, "text", text("text")?),
                    "thinking_delta" => append_text(block, "thinking", text("thinking")?),
                    "signature_delta" => append_text(block, "signature", text("signature")?),
                    "input_json_delta" => partial_inputs.entry(index).or_default().push_str(text("partial_json")?),
                    "citations_delta" => {
                        let citation = delta.get("citation").cloned().ok_or_else(|| shape("citation"))?;
                        match block.get_mut("citations") {
                            Some(Value::Array(citations)) => citations.push(citation),
                            _ => {
                                block.insert("citations".into(), json!([citation]));
                            }
                        }
                    }
                    // Skipping an unknown delta would silently lose part of the answer.
                    other => return Err(Unsupported(format!("content block delta {other:?}"))),
                }
            }
            "message_delta" => {
                let message = message.as_mut().ok_or(Incomplete("message_delta before message_start"))?;
                if let Some(Value::Object(delta)) = data.get("delta") {
                    message.extend(delta.iter().map(clone_entry));
                }
                if let Some(Value::Object(usage)) = data.get("usage") {
                    let total = message.entry("usage").or_insert_with(|| json!({}));
                    if !total.is_object() {
                        *total = json!({});
                    }
                    if let Value::Object(total) = total {
                        usage.iter().for_each(|(key, value)| set_unless_null(total, key, value));
                    }
                }
            }
            "message_stop" => {
                stopped = true;
                break;
            }
            "error" => return Err(Unsupported("stream carries an error event".into())),
            // ping, content_block_stop, and event types added after this was written.
            _ => {}
        }
    }
    if !stopped {
        return Err(Incomplete("no message_stop event"));
    }
    let mut message = message.ok_or(Incomplete("no message_start event"))?;
    for (index, json) in partial_inputs {
        // A tool called without arguments streams no JSON at all.
        let input = match json.trim() {
            "" => json!({}),
            json => serde_json::from_str(json).map_err(|e| InvalidJson(format!("input of block {index}: {e}")))?,
        };
        if let Some(block) = blocks.get_mut(&index) {
            block.insert("input".into(), input);
        }
    }
    message.insert("content".into(), blocks.into_values().map(Value::Object).collect());
    Ok(Value::Object(message))
}

fn choices_of(body: &Object) -> Result<&[Value], ConvertError> {
    body.get("choices").and_then(Value::as_array).map(Vec::as_slice).ok_or_else(|| shape("choices"))
}

/// Every chunk repeats the body's top-level fields (id, created, model, system_fingerprint...).
fn chunk_base(body: &Object, object: &str) -> Object {
    let mut base: Object =
        body.iter().filter(|(k, _)| !matches!(k.as_str(), "object" | "choices" | "usage")).map(clone_entry).collect();
    base.insert("object".into(), object.into());
    base
}

fn clone_entry((key, value): (&String, &Value)) -> (String, Value) {
    (key.clone(), value.clone())
}

fn chunk_event(base: &Object, choices: Value) -> Bytes {
    let mut chunk = base.clone();
    chunk.insert("choices".into(), choices);
    sse::format_event(None, &Value::Object(chunk).to_string())
}

/// Closes an OpenAI stream: usage rides in a chunk without choices, as with
/// `stream_options.include_usage`, then `[DONE]`.
fn finish_openai_stream(base: &Object, body: &Object, mut events: Vec<Bytes>) -> Vec<Bytes> {
    if let Some(usage) = body.get("usage").filter(|usage| !usage.is_null()) {
        let mut chunk = base.clone();
        chunk.insert("choices".into(), json!([]));
        chunk.insert("usage".into(), usage.clone());
        events.push(sse::format_event(None, &Value::Object(chunk).to_string()));
    }
    events.push(sse::format_event(None, "[DONE]"));
    events
}

/// The finish chunk of a choice also carries the choice's extra fields (vLLM's `stop_reason`,
/// OpenRouter's `native_finish_reason`...).
fn finish_choice(choice: &Object, index: &Value, empty: (&str, Value)) -> Value {
    let mut finish: Object = choice
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "index" | "message" | "text" | "logprobs" | "finish_reason"))
        .map(clone_entry)
        .collect();
    finish.insert("index".into(), index.clone());
    finish.insert(empty.0.into(), empty.1);
    finish.insert("logprobs".into(), Value::Null);
    finish.insert("finish_reason".into(), choice.get("finish_reason").cloned().unwrap_or(Value::Null));
    json!([finish])
}

/// Order of message fields in the stream: reasoning precedes the answer, tool calls follow it.
fn field_rank(key: &str) -> u8 {
    match key {
        "reasoning_content" | "reasoning" => 0,
        "content" => 1,
        "tool_calls" => 3,
        _ => 2,
    }
}

fn chat_to_stream(body: &Object) -> Result<Vec<Bytes>, ConvertError> {
    let base = chunk_base(body, "chat.completion.chunk");
    let mut events = Vec::new();
    for (position, choice) in choices_of(body)?.iter().enumerate() {
        let choice = choice.as_object().ok_or_else(|| shape("choice"))?;
        let index = choice.get("index").cloned().unwrap_or_else(|| position.into());
        let message = choice.get("message").and_then(Value::as_object).ok_or_else(|| shape("message"))?;
        let delta_event = |delta: Value| {
            chunk_event(&base, json!([{"index": index, "delta": delta, "logprobs": null, "finish_reason": null}]))
        };
        // The first delta names the role and, like OpenAI's, lists the fields that stay null.
        let mut first: Object = message.iter().filter(|(_, v)| v.is_null()).map(clone_entry).collect();
        first.insert("role".into(), message.get("role").cloned().unwrap_or_else(|| "assistant".into()));
        let content_is_text = message.get("content").is_some_and(Value::is_string);
        first.insert("content".into(), if content_is_text { "".into() } else { Value::Null });
        events.push(delta_event(Value::Object(first)));

        let mut fields: Vec<(&String, &Value)> =
            message.iter().filter(|(k, v)| k.as_str() != "role" && !v.is_null() && v.as_str() != Some("")).collect();
        fields.sort_by_key(|(key, _)| field_rank(key));
        for (key, value) in fields {
            match value {
                Value::Array(calls) if key == "tool_calls" && !calls.is_empty() => {
                    for (position, call) in calls.iter().enumerate() {
                        let mut call = call.as_object().cloned().ok_or_else(|| shape("tool call"))?;
                        call.insert("index".into(), position.into());
                        events.push(delta_event(json!({"tool_calls": [call]})));
                    }
                }
                _ => events.push(delta_event(json!({ key: value }))),
            }
        }
        events.push(chunk_event(&base, finish_choice(choice, &index, ("delta", json!({})))));
    }
    Ok(finish_openai_stream(&base, body, events))
}

fn completions_to_stream(body: &Object) -> Result<Vec<Bytes>, ConvertError> {
    let base = chunk_base(body, "text_completion");
    let mut events = Vec::new();
    for (position, choice) in choices_of(body)?.iter().enumerate() {
        let choice = choice.as_object().ok_or_else(|| shape("choice"))?;
        let index = choice.get("index").cloned().unwrap_or_else(|| position.into());
        let text = choice.get("text").cloned().unwrap_or_else(|| "".into());
        let first = json!([{"index": index, "text": text, "logprobs": null, "finish_reason": null}]);
        events.push(chunk_event(&base, first));
        events.push(chunk_event(&base, finish_choice(choice, &index, ("text", "".into()))));
    }
    Ok(finish_openai_stream(&base, body, events))
}

/// Writes Responses events: each names its type twice (SSE `event:` for EventSource, JSON
/// `type` for the SDKs) and carries the next sequence number.
#[derive(Default)]
struct ResponseEvents {
    events: Vec<Bytes>,
    sequence: u64,
}

impl ResponseEvents {
    fn emit(&mut self, kind: &str, at: &Value, fields: Value) {
        let mut data = Object::new();
        data.insert("type".into(), kind.into());
        data.insert("sequence_number".into(), self.sequence.into());
        for object in [at, &fields].into_iter().filter_map(Value::as_object) {
            data.extend(object.iter().map(clone_entry));
        }
        self.sequence += 1;
        self.events.push(sse::format_event(Some(kind), &Value::Object(data).to_string()));
    }
}

fn responses_to_stream(response: Object) -> Result<Vec<Bytes>, ConvertError> {
    let output = match response.get("output") {
        Some(Value::Array(items)) => items.as_slice(),
        None | Some(Value::Null) => &[],
        Some(_) => return Err(shape("output")),
    };
    let mut out = ResponseEvents::default();
    let mut pending = response.clone();
    pending.insert("status".into(), "in_progress".into());
    pending.insert("output".into(), json!([]));
    pending.insert("usage".into(), Value::Null);
    out.emit("response.created", &Value::Null, json!({ "response": pending }));
    out.emit("response.in_progress", &Value::Null, json!({ "response": pending }));
    for (output_index, item) in output.iter().enumerate() {
        let item_fields = item.as_object().ok_or_else(|| shape("output item"))?;
        let at =
            json!({"item_id": item_fields.get("id").cloned().unwrap_or(Value::Null), "output_index": output_index});
        let kind = item_fields.get("type").and_then(Value::as_str).unwrap_or("");
        let mut added = item_fields.clone();
        if added.contains_key("status") {
            added.insert("status".into(), "in_progress".into());
        }
        match kind {
            "message" => added.insert("content".into(), json!([])),
            "function_call" => added.insert("arguments".into(), "".into()),
            "reasoning" if added.contains_key("summary") => added.insert("summary".into(), json!([])),
            _ => None,
        };
        out.emit("response.output_item.added", &Value::Null, json!({"output_index": output_index, "item": added}));
        match kind {
            "message" => emit_message_parts(&mut out, item_fields, &at)?,
            "function_call" => {
                let arguments = item_fields.get("arguments").and_then(Value::as_str).unwrap_or("");
                out.emit("response.function_call_arguments.delta", &at, json!({ "delta": arguments }));
                out.emit("response.function_call_arguments.done", &at, json!({ "arguments": arguments }));
            }
            "reasoning" => {
                let summary = item_fields.get("summary").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
                for (summary_index, part) in summary.iter().enumerate() {
                    let mut at = at.clone();
                    if let Some(at) = at.as_object_mut() {
                        at.insert("summary_index".into(), summary_index.into());
                    }
                    let text = part.get("text").and_then(Value::as_str).unwrap_or("");
                    let mut empty = part.clone();
                    if let Some(empty) = empty.as_object_mut() {
                        empty.insert("text".into(), "".into());
                    }
                    out.emit("response.reasoning_summary_part.added", &at, json!({ "part": empty }));
                    out.emit("response.reasoning_summary_text.delta", &at, json!({ "delta": text }));
                    out.emit("response.reasoning_summary_text.done", &at, json!({ "text": text }));
                    out.emit("response.reasoning_summary_part.done", &at, json!({ "part": part }));
                }
            }
            _ => {}
        }
        out.emit("response.output_item.done", &Value::Null, json!({"output_index": output_index, "item": item}));
    }
    let terminal = match response.get("status").and_then(Value::as_str) {
        Some("incomplete") => "response.incomplete",
        Some("failed") => "response.failed",
        _ => "response.completed",
    };
    out.emit(terminal, &Value::Null, json!({ "response": response }));
    Ok(out.events)
}

fn emit_message_parts(out: &mut ResponseEvents, item: &Object, at: &Value) -> Result<(), ConvertError> {
    let parts = item.get("content").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
    for (content_index, part) in parts.iter().enumerate() {
        let mut at = at.clone();
        if let Some(at) = at.as_object_mut() {
            at.insert("content_index".into(), content_index.into());
        }
        let fields = part.as_object().ok_or_else(|| shape("content part"))?;
        let kind = fields.get("type").and_then(Value::as_str).unwrap_or("");
        let mut empty = fields.clone();
        for (key, blank) in
            [("text", json!("")), ("refusal", json!("")), ("annotations", json!([])), ("logprobs", json!([]))]
        {
            if let Some(value) = empty.get_mut(key) {
                *value = blank;
            }
        }
        out.emit("response.content_part.added", &at, json!({ "part": empty }));
        match kind {
            "output_text" => {
                let text = fields.get("text").and_then(Value::as_str).unwrap_or("");
                let logprobs = fields.get("logprobs").filter(|l| l.is_array()).cloned().unwrap_or_else(|| json!([]));
                out.emit("response.output_text.delta", &at, json!({"delta": text, "logprobs": logprobs}));
                let annotations = fields.get("annotations").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
                for (annotation_index, annotation) in annotations.iter().enumerate() {
                    let fields = json!({"annotation_index": annotation_index, "annotation": annotation});
                    out.emit("response.output_text.annotation.added", &at, fields);
                }
                out.emit("response.output_text.done", &at, json!({"text": text, "logprobs": logprobs}));
            }
            "refusal" => {
                let refusal = fields.get("refusal").and_then(Value::as_str).unwrap_or("");
                out.emit("response.refusal.delta", &at, json!({ "delta": refusal }));
                out.emit("response.refusal.done", &at, json!({ "refusal": refusal }));
            }
            _ => {}
        }
        out.emit("response.content_part.done", &at, json!({ "part": part }));
    }
    Ok(())
}

fn messages_to_stream(message: Object) -> Result<Vec<Bytes>, ConvertError> {
    if message.get("type").and_then(Value::as_str) != Some("message") {
        return Err(Unsupported("body is not a message".into()));
    }
    let blocks = message.get("content").and_then(Value::as_array).ok_or_else(|| shape("content"))?;
    let mut events = Vec::new();
    let mut emit = |name: &str, data: Value| events.push(sse::format_event(Some(name), &data.to_string()));
    // The skeleton keeps the body's usage: clients take the final output_tokens from
    // message_delta, and every other count is already final here.
    let mut start = message.clone();
    start.insert("content".into(), json!([]));
    start.insert("stop_reason".into(), Value::Null);
    start.insert("stop_sequence".into(), Value::Null);
    emit("message_start", json!({"type": "message_start", "message": start}));
    for (index, block) in blocks.iter().enumerate() {
        let block = block.as_object().ok_or_else(|| shape("content block"))?;
        let mut skeleton = block.clone();
        let mut deltas = Vec::new();
        let text = |key: &str| block.get(key).and_then(Value::as_str).filter(|t| !t.is_empty());
        match block.get("type").and_then(Value::as_str).unwrap_or("") {
            "text" => {
                skeleton.insert("text".into(), "".into());
                if let Some(Value::Array(citations)) = block.get("citations") {
                    skeleton.insert("citations".into(), json!([]));
                    deltas.extend(citations.iter().map(|c| json!({"type": "citations_delta", "citation": c})));
                }
                deltas.extend(text("text").map(|t| json!({"type": "text_delta", "text": t})));
            }
            "thinking" => {
                skeleton.insert("thinking".into(), "".into());
                skeleton.insert("signature".into(), "".into());
                deltas.extend(text("thinking").map(|t| json!({"type": "thinking_delta", "thinking": t})));
                deltas.extend(text("signature").map(|s| json!({"type": "signature_delta", "signature": s})));
            }
            // tool_use, server_tool_use, mcp_tool_use: the input streams as JSON text.
            _ => {
                if let Some(input) = block.get("input") {
                    skeleton.insert("input".into(), json!({}));
                    deltas.push(json!({"type": "input_json_delta", "partial_json": input.to_string()}));
                }
            }
        }
        emit("content_block_start", json!({"type": "content_block_start", "index": index, "content_block": skeleton}));
        for delta in deltas {
            emit("content_block_delta", json!({"type": "content_block_delta", "index": index, "delta": delta}));
        }
        emit("content_block_stop", json!({"type": "content_block_stop", "index": index}));
    }
    let field = |key: &str| message.get(key).cloned().unwrap_or(Value::Null);
    let output_tokens = message.get("usage").and_then(|u| u.get("output_tokens")).cloned().unwrap_or_else(|| 0.into());
    emit(
        "message_delta",
        json!({
            "type": "message_delta",
            "delta": {"stop_reason": field("stop_reason"), "stop_sequence": field("stop_sequence")},
            "usage": {"output_tokens": output_tokens},
        }),
    );
    emit("message_stop", json!({"type": "message_stop"}));
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::SseSplitter;
    use StreamKind::*;

    const KINDS: [StreamKind; 4] = [ChatCompletions, Completions, Responses, Messages];

    fn data(json: &str) -> Bytes {
        Bytes::from(format!("data: {json}\n\n"))
    }

    fn named(event: &str, json: &str) -> Bytes {
        Bytes::from(format!("event: {event}\ndata: {json}\n\n"))
    }

    fn done() -> Bytes {
        Bytes::from_static(b"data: [DONE]\n\n")
    }

    fn assemble(kind: StreamKind, events: &[Bytes]) -> Value {
        serde_json::from_slice(&stream_to_json(kind, events).unwrap()).unwrap()
    }

    fn stream(kind: StreamKind, body: &Value) -> Vec<Bytes> {
        let events = json_to_stream(kind, body.to_string().as_bytes()).unwrap();
        assert_valid_stream(kind, &events);
        events
    }

    /// What a provider's SDK would insist on: intact framing, JSON data naming its type where
    /// the dialect has types, sequence numbers in order, exactly one terminal event, last.
    fn assert_valid_stream(kind: StreamKind, events: &[Bytes]) {
        let mut splitter = SseSplitter::new();
        assert_eq!(splitter.push(&events.concat()), events, "framing");
        let parsed: Vec<SseEvent> = events.iter().map(|e| sse::parse_event(e)).collect();
        let (last, body) = parsed.split_last().unwrap();
        assert!(sse::is_terminal(kind, last), "last event {last:?}");
        for (position, event) in body.iter().enumerate() {
            assert!(!sse::is_terminal(kind, event) && !sse::is_error_event(kind, event), "{event:?}");
            let data: Value = serde_json::from_str(&event.data).unwrap();
            match kind {
                ChatCompletions => assert_eq!(data["object"], "chat.completion.chunk"),
                Completions => assert_eq!(data["object"], "text_completion"),
                Responses => assert_eq!(data["sequence_number"], position),
                Messages => {}
            }
            if matches!(kind, Responses | Messages) {
                assert_eq!(event.event.as_deref(), data["type"].as_str(), "{event:?}");
            }
        }
    }

    /// Both round trips: the body survives json → stream → json exactly, and the stream built
    /// from it assembles to the same body again.
    fn assert_round_trips(kind: StreamKind, body: &Value) {
        let events = stream(kind, body);
        assert_eq!(&assemble(kind, &events), body);
        assert_eq!(assemble(kind, &stream(kind, &assemble(kind, &events))), *body);
    }

    /// Assembling a recorded stream, re-streaming that, and assembling again changes nothing.
    fn assert_stable(kind: StreamKind, recorded: &[Bytes]) -> Value {
        let body = assemble(kind, recorded);
        assert_round_trips(kind, &body);
        body
    }

    const CHAT_HEAD: &str = r#""id":"chatcmpl-BQx7Wb1hGzD2vC3kq6ud0fG0pHl7p","object":"chat.completion.chunk","created":1745836018,"model":"gpt-4o-2024-08-06","service_tier":"default","system_fingerprint":"fp_f5bdcc3276""#;

    fn chat_delta(delta: &str) -> Bytes {
        let choice = format!(r#"{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":null}}"#);
        data(&format!(r#"{{{CHAT_HEAD},"choices":[{choice}],"usage":null,"obfuscation":"x1Yz"}}"#))
    }

    fn chat_tool_stream() -> Vec<Bytes> {
        vec![
            chat_delta(
                r#"{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_PJIcZ3GwiEEa8mnTd4QWqmzW","type":"function","function":{"name":"get_weather","arguments":""}}],"refusal":null}"#,
            ),
            chat_delta(r#"{"tool_calls":[{"index":0,"function":{"arguments":"{\"lo"}}]}"#),
            chat_delta(r#"{"tool_calls":[{"index":0,"function":{"arguments":"cation\": \"Par"}}]}"#),
            chat_delta(r#"{"tool_calls":[{"index":0,"function":{"arguments":"is, France\"}"}}]}"#),
            chat_delta(
                r#"{"tool_calls":[{"index":1,"id":"call_3x3EnTqc8Yj0IbHt0PmHhBKk","type":"function","function":{"name":"get_time","arguments":""}}]}"#,
            ),
            chat_delta(r#"{"tool_calls":[{"index":1,"function":{"arguments":"{\"timezone\": \"Europe/Paris\"}"}}]}"#),
            data(&format!(
                r#"{{{CHAT_HEAD},"choices":[{{"index":0,"delta":{{}},"logprobs":null,"finish_reason":"tool_calls"}}],"usage":null}}"#
            )),
            data(&format!(
                r#"{{{CHAT_HEAD},"choices":[],"usage":{{"prompt_tokens":85,"completion_tokens":48,"total_tokens":133,"prompt_tokens_details":{{"cached_tokens":0,"audio_tokens":0}},"completion_tokens_details":{{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}}}}"#
            )),
            done(),
        ]
    }

    #[test]
    fn chat_stream_with_tool_calls_assembles() {
        let body = assert_stable(ChatCompletions, &chat_tool_stream());
        let expected = json!({
            "id": "chatcmpl-BQx7Wb1hGzD2vC3kq6ud0fG0pHl7p", "object": "chat.completion", "created": 1745836018,
            "model": "gpt-4o-2024-08-06", "service_tier": "default", "system_fingerprint": "fp_f5bdcc3276",
            "choices": [{
                "index": 0, "logprobs": null, "finish_reason": "tool_calls",
                "message": {"role": "assistant", "content": null, "refusal": null, "tool_calls": [
                    {"id": "call_PJIcZ3GwiEEa8mnTd4QWqmzW", "type": "function",
                     "function": {"name": "get_weather", "arguments": "{\"location\": \"Paris, France\"}"}},
                    {"id": "call_3x3EnTqc8Yj0IbHt0PmHhBKk", "type": "function",
                     "function": {"name": "get_time", "arguments": "{\"timezone\": \"Europe/Paris\"}"}},
                ]},
            }],
            "usage": {"prompt_tokens": 85, "completion_tokens": 48, "total_tokens": 133,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                    "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}},
        });
        assert_eq!(body, expected);
    }

    #[test]
    fn deepseek_reasoning_content_stream_assembles() {
        let head = r#""id":"6a2b1c8e-4f7d-4e61-9d5c-0b3e5f1a2c47","object":"chat.completion.chunk","created":1738400000,"model":"deepseek-reasoner","system_fingerprint":"fp_7e0991cad4_prod0225""#;
        let chunk = |delta: &str, finish: &str, usage: &str| {
            let choice = format!(r#"{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":{finish}}}"#);
            data(&format!(r#"{{{head},"choices":[{choice}]{usage}}}"#))
        };
        let events = vec![
            chunk(r#"{"role":"assistant","content":null,"reasoning_content":""}"#, "null", ""),
            Bytes::from_static(b": keep-alive\n\n"),
            chunk(r#"{"content":null,"reasoning_content":"The user asks 2+2."}"#, "null", ""),
            chunk(r#"{"content":null,"reasoning_content":" That is 4."}"#, "null", ""),
            chunk(r#"{"content":"2 + 2 = ","reasoning_content":null}"#, "null", ""),
            chunk(r#"{"content":"**4**.","reasoning_content":null}"#, "null", ""),
            chunk(
                r#"{"content":"","reasoning_content":null}"#,
                r#""stop""#,
                r#","usage":{"prompt_tokens":12,"completion_tokens":30,"total_tokens":42,"completion_tokens_details":{"reasoning_tokens":20},"prompt_cache_hit_tokens":0,"prompt_cache_miss_tokens":12}"#,
            ),
            done(),
        ];
        let body = assert_stable(ChatCompletions, &events);
        let choice = &body["choices"][0];
        assert_eq!(
            choice["message"],
            json!({"role": "assistant", "content": "2 + 2 = **4**.", "reasoning_content": "The user asks 2+2. That is 4."})
        );
        assert_eq!(choice["finish_reason"], "stop");
        assert_eq!(body["usage"]["completion_tokens_details"]["reasoning_tokens"], 20);
        assert_eq!(body["model"], "deepseek-reasoner");
    }

    #[test]
    fn repeated_role_and_reasoning_field_merge_like_the_sdk() {
        // OpenRouter repeats the role in every delta and names the field `reasoning`.
        let chunk = |delta: &str, finish: &str| {
            data(&format!(
                r#"{{"id":"gen-1","provider":"OpenAI","model":"openai/o4-mini","object":"chat.completion.chunk","created":1750000000,"choices":[{{"index":0,"delta":{delta},"finish_reason":{finish},"native_finish_reason":{finish}}}]}}"#
            ))
        };
        let events = vec![
            Bytes::from_static(b": OPENROUTER PROCESSING\n\n"),
            chunk(r#"{"role":"assistant","content":"","reasoning":"Thinking"}"#, "null"),
            chunk(r#"{"role":"assistant","content":"","reasoning":" briefly."}"#, "null"),
            chunk(r#"{"role":"assistant","content":"Hi!"}"#, "null"),
            chunk(r#"{"role":"assistant","content":""}"#, r#""stop""#),
            done(),
        ];
        let body = assert_stable(ChatCompletions, &events);
        assert_eq!(
            body["choices"][0]["message"],
            json!({"role": "assistant", "content": "Hi!", "reasoning": "Thinking briefly."})
        );
        assert_eq!(body["choices"][0]["native_finish_reason"], "stop");
        assert_eq!(body["provider"], "OpenAI");
        assert!(body.get("usage").is_none());
    }

    #[test]
    fn chat_bodies_round_trip() {
        let usage = json!({"prompt_tokens": 20, "completion_tokens": 6, "total_tokens": 26,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}});
        let text = json!({
            "id": "chatcmpl-BQx8", "object": "chat.completion", "created": 1745836100, "model": "gpt-4o-2024-08-06",
            "choices": [{"index": 0, "logprobs": null, "finish_reason": "stop", "message": {"role": "assistant",
                "content": "Paris is sunny today ☀️.\n\n```rust\nfn main() {}\n```", "refusal": null, "annotations": []}}],
            "usage": usage, "service_tier": "default", "system_fingerprint": "fp_f5bdcc3276",
        });
        assert_round_trips(ChatCompletions, &text);

        let tools = json!({
            "id": "chatcmpl-BQx9", "object": "chat.completion", "created": 1745836200, "model": "gpt-4.1-mini",
            "choices": [{"index": 0, "logprobs": null, "finish_reason": "tool_calls", "message": {"role": "assistant",
                "content": null, "refusal": null, "annotations": [], "tool_calls": [
                    {"id": "call_a", "type": "function", "function": {"name": "search", "arguments": "{\"q\":\"rust sse\",\"limit\":0.5}"}},
                    {"id": "call_b", "type": "function", "function": {"name": "noop", "arguments": "{}"}}]}}],
            "usage": usage,
        });
        assert_round_trips(ChatCompletions, &tools);

        let two_choices_and_refusal = json!({
            "id": "chatcmpl-n2", "object": "chat.completion", "created": 1, "model": "gpt-4o",
            "choices": [
                {"index": 0, "logprobs": null, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": null, "refusal": "I can't help with that."}},
                {"index": 1, "logprobs": null, "finish_reason": "length",
                 "message": {"role": "assistant", "content": "Sure", "refusal": null}}],
        });
        assert_round_trips(ChatCompletions, &two_choices_and_refusal);

        let deepseek = json!({
            "id": "ds-1", "object": "chat.completion", "created": 2, "model": "deepseek-reasoner",
            "choices": [{"index": 0, "logprobs": null, "finish_reason": "stop", "message": {"role": "assistant",
                "content": "4", "reasoning_content": "2+2 is 4."}}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14},
        });
        assert_round_trips(ChatCompletions, &deepseek);
    }

    #[test]
    fn chat_stream_shape_matches_openai() {
        let body = json!({"id": "c", "object": "chat.completion", "created": 3, "model": "m",
            "choices": [{"index": 0, "logprobs": null, "finish_reason": "stop",
                "message": {"role": "assistant", "content": "Hello", "refusal": null}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}});
        let events = stream(ChatCompletions, &body);
        let chunks: Vec<Value> = events[..events.len() - 1]
            .iter()
            .map(|e| serde_json::from_str(&sse::parse_event(e).data).unwrap())
            .collect();
        let deltas: Vec<&Value> =
            chunks.iter().flat_map(|c| c["choices"].as_array().unwrap()).map(|c| &c["delta"]).collect();
        assert_eq!(
            deltas,
            [&json!({"role": "assistant", "content": "", "refusal": null}), &json!({"content": "Hello"}), &json!({})]
        );
        assert_eq!(chunks[2]["choices"][0]["finish_reason"], "stop");
        assert_eq!(chunks[3]["choices"], json!([]));
        assert_eq!(chunks[3]["usage"]["total_tokens"], 2);
        assert!(chunks.iter().all(|c| c["id"] == "c" && c["created"] == 3 && c["model"] == "m"));
        assert_eq!(&events[events.len() - 1][..], b"data: [DONE]\n\n");
    }

    #[test]
    fn completions_stream_assembles_and_round_trips() {
        let head =
            r#""id":"cmpl-9bK2x","object":"text_completion","created":1700000000,"model":"gpt-3.5-turbo-instruct""#;
        let events = vec![
            data(&format!(
                r#"{{{head},"choices":[{{"text":"\n\nThis","index":0,"logprobs":null,"finish_reason":null}}]}}"#
            )),
            data(&format!(
                r#"{{{head},"choices":[{{"text":" is a test.","index":0,"logprobs":null,"finish_reason":null}}]}}"#
            )),
            data(&format!(r#"{{{head},"choices":[{{"text":"","index":0,"logprobs":null,"finish_reason":"stop"}}]}}"#)),
            data(&format!(
                r#"{{{head},"choices":[],"usage":{{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}}}"#
            )),
            done(),
        ];
        let body = assert_stable(Completions, &events);
        assert_eq!(
            body,
            json!({"id": "cmpl-9bK2x", "object": "text_completion", "created": 1700000000, "model": "gpt-3.5-turbo-instruct",
                "choices": [{"text": "\n\nThis is a test.", "index": 0, "logprobs": null, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}})
        );
    }

    fn anthropic_stream() -> Vec<Bytes> {
        let delta = |index: u8, delta: &str| {
            named(
                "content_block_delta",
                &format!(r#"{{"type":"content_block_delta","index":{index},"delta":{delta}}}"#),
            )
        };
        let start = |index: u8, block: &str| {
            named(
                "content_block_start",
                &format!(r#"{{"type":"content_block_start","index":{index},"content_block":{block}}}"#),
            )
        };
        let stop =
            |index: u8| named("content_block_stop", &format!(r#"{{"type":"content_block_stop","index":{index}}}"#));
        vec![
            named(
                "message_start",
                r#"{"type":"message_start","message":{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":472,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":3,"service_tier":"standard"}}}"#,
            ),
            named("ping", r#"{"type": "ping"}"#),
            start(0, r#"{"type":"thinking","thinking":"","signature":""}"#),
            delta(0, r#"{"type":"thinking_delta","thinking":"The user wants the weather"}"#),
            delta(0, r#"{"type":"thinking_delta","thinking":" in Paris; I should call the tool."}"#),
            delta(
                0,
                r#"{"type":"signature_delta","signature":"EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"}"#,
            ),
            stop(0),
            start(1, r#"{"type":"text","text":""}"#),
            delta(1, r#"{"type":"text_delta","text":"I'll check"}"#),
            delta(1, r#"{"type":"text_delta","text":" the weather in Paris."}"#),
            stop(1),
            start(2, r#"{"type":"tool_use","id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":"get_weather","input":{}}"#),
            delta(2, r#"{"type":"input_json_delta","partial_json":""}"#),
            delta(2, r#"{"type":"input_json_delta","partial_json":"{\"location\": \"Pa"}"#),
            delta(2, r#"{"type":"input_json_delta","partial_json":"ris, France\", \"unit\""}"#),
            delta(2, r#"{"type":"input_json_delta","partial_json":": \"celsius\", \"days\": 3}"}"#),
            stop(2),
            named(
                "message_delta",
                r#"{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}"#,
            ),
            named("message_stop", r#"{"type":"message_stop"}"#),
        ]
    }

    #[test]
    fn anthropic_stream_with_thinking_text_and_tool_use_assembles() {
        let body = assert_stable(Messages, &anthropic_stream());
        let expected = json!({
            "id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant",
            "model": "claude-sonnet-4-5-20250929", "stop_reason": "tool_use", "stop_sequence": null,
            "content": [
                {"type": "thinking", "thinking": "The user wants the weather in Paris; I should call the tool.",
                 "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"},
                {"type": "text", "text": "I'll check the weather in Paris."},
                {"type": "tool_use", "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_weather",
                 "input": {"location": "Paris, France", "unit": "celsius", "days": 3}},
            ],
            "usage": {"input_tokens": 472, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                "output_tokens": 89, "service_tier": "standard"},
        });
        assert_eq!(body, expected);
    }

    #[test]
    fn anthropic_citations_empty_input_and_event_lines_are_optional() {
        // Some gateways drop `event:` lines; the JSON `type` is enough.
        let events: Vec<Bytes> = [
            r#"{"type":"message_start","message":{"id":"msg_2","type":"message","role":"assistant","model":"claude-haiku-4-5","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":10,"output_tokens":1}}}"#,
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":"","citations":[]}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"citations_delta","citation":{"type":"char_location","cited_text":"The sky is blue.","document_index":0,"document_title":"Facts","start_char_index":0,"end_char_index":16}}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"The sky is blue."}}"#,
            r#"{"type":"content_block_stop","index":0}"#,
            r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_2","name":"now","input":{}}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}"#,
            r#"{"type":"content_block_stop","index":1}"#,
            r#"{"type":"content_block_start","index":2,"content_block":{"type":"redacted_thinking","data":"EmwKAhgBEgy3va3pzix"}}"#,
            r#"{"type":"content_block_stop","index":2}"#,
            r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"input_tokens":10,"cache_read_input_tokens":0,"output_tokens":25}}"#,
            r#"{"type":"message_stop"}"#,
        ]
        .into_iter()
        .map(data)
        .collect();
        let body = assert_stable(Messages, &events);
        assert_eq!(body["content"][0]["citations"][0]["cited_text"], "The sky is blue.");
        assert_eq!(body["content"][0]["text"], "The sky is blue.");
        assert_eq!(body["content"][1]["input"], json!({}));
        assert_eq!(body["content"][2], json!({"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix"}));
        assert_eq!(body["usage"], json!({"input_tokens": 10, "cache_read_input_tokens": 0, "output_tokens": 25}));
        assert_eq!(body["stop_reason"], "end_turn");
    }

    #[test]
    fn anthropic_bodies_round_trip() {
        let body = json!({
            "id": "msg_01A", "type": "message", "role": "assistant", "model": "claude-opus-4-1-20250805",
            "content": [
                {"type": "thinking", "thinking": "Plan: look it up.", "signature": "sig=="},
                {"type": "redacted_thinking", "data": "EmwKAhgB"},
                {"type": "text", "text": "Looking that up. 🔎", "citations": null},
                {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "weather paris"}},
                {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": [
                    {"type": "web_search_result", "title": "Paris", "url": "https://example.com", "encrypted_content": "Eu8B", "page_age": null}]},
                {"type": "text", "text": "It is 21°C.", "citations": [{"type": "web_search_result_location",
                    "url": "https://example.com", "title": "Paris", "encrypted_index": "Eo8B", "cited_text": "21°C"}]},
                {"type": "tool_use", "id": "toolu_01", "name": "record", "input": {"temp": 21.5, "tags": ["a", "b"], "nested": {"x": null}}},
            ],
            "stop_reason": "tool_use", "stop_sequence": null, "container": null,
            "usage": {"input_tokens": 2095, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 1024,
                "output_tokens": 503, "server_tool_use": {"web_search_requests": 1}, "service_tier": "standard"},
        });
        assert_round_trips(Messages, &body);
        let events = stream(Messages, &body);
        let first: Value = serde_json::from_str(&sse::parse_event(&events[0]).data).unwrap();
        assert_eq!(first["message"]["content"], json!([]));
        assert_eq!(first["message"]["usage"]["input_tokens"], 2095);
        let delta: Value = serde_json::from_str(&sse::parse_event(&events[events.len() - 2]).data).unwrap();
        assert_eq!(
            delta,
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
            "usage": {"output_tokens": 503}})
        );
    }

    fn responses_body() -> Value {
        json!({
            "id": "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b", "object": "response", "created_at": 1741476542,
            "status": "completed", "error": null, "incomplete_details": null, "instructions": null,
            "max_output_tokens": null, "model": "gpt-4.1-2025-04-14", "parallel_tool_calls": true,
            "previous_response_id": null, "reasoning": {"effort": null, "summary": null}, "store": true,
            "temperature": 1.0, "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [],
            "top_p": 1.0, "truncation": "disabled", "user": null, "metadata": {},
            "output": [{"id": "msg_67ccd2bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b", "type": "message",
                "status": "completed", "role": "assistant",
                "content": [{"type": "output_text", "text": "Hi there! How can I help?", "annotations": []}]}],
            "usage": {"input_tokens": 36, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 8,
                "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 44},
        })
    }

    #[test]
    fn responses_stream_assembles_from_its_terminal_event() {
        let full = responses_body();
        let mut pending = full.clone();
        pending["status"] = json!("in_progress");
        pending["output"] = json!([]);
        pending["usage"] = Value::Null;
        let item = &full["output"][0];
        let id = item["id"].as_str().unwrap();
        let at = format!(r#""item_id":"{id}","output_index":0,"content_index":0"#);
        let events = vec![
            named(
                "response.created",
                &json!({"type": "response.created", "sequence_number": 0, "response": pending}).to_string(),
            ),
            named(
                "response.in_progress",
                &json!({"type": "response.in_progress", "sequence_number": 1, "response": pending}).to_string(),
            ),
            named(
                "response.output_item.added",
                &format!(
                    r#"{{"type":"response.output_item.added","sequence_number":2,"output_index":0,"item":{{"id":"{id}","type":"message","status":"in_progress","role":"assistant","content":[]}}}}"#
                ),
            ),
            named(
                "response.content_part.added",
                &format!(
                    r#"{{"type":"response.content_part.added","sequence_number":3,{at},"part":{{"type":"output_text","text":"","annotations":[]}}}}"#
                ),
            ),
            named(
                "response.output_text.delta",
                &format!(
                    r#"{{"type":"response.output_text.delta","sequence_number":4,{at},"delta":"Hi there!","logprobs":[]}}"#
                ),
            ),
            named(
                "response.output_text.delta",
                &format!(
                    r#"{{"type":"response.output_text.delta","sequence_number":5,{at},"delta":" How can I help?","logprobs":[]}}"#
                ),
            ),
            named(
                "response.output_text.done",
                &format!(
                    r#"{{"type":"response.output_text.done","sequence_number":6,{at},"text":"Hi there! How can I help?","logprobs":[]}}"#
                ),
            ),
            named(
                "response.content_part.done",
                &format!(
                    r#"{{"type":"response.content_part.done","sequence_number":7,{at},"part":{}}}"#,
                    item["content"][0]
                ),
            ),
            named(
                "response.output_item.done",
                &format!(
                    r#"{{"type":"response.output_item.done","sequence_number":8,"output_index":0,"item":{item}}}"#
                ),
            ),
            named(
                "response.completed",
                &json!({"type": "response.completed", "sequence_number": 9, "response": full}).to_string(),
            ),
        ];
        assert_valid_stream(Responses, &events);
        assert_eq!(assert_stable(Responses, &events), full);
        // The generated stream has the same event sequence as the recorded one.
        let generated: Vec<String> =
            stream(Responses, &full).iter().map(|e| sse::parse_event(e).event.unwrap()).collect();
        let mut recorded: Vec<String> = events.iter().map(|e| sse::parse_event(e).event.unwrap()).collect();
        recorded.dedup(); // the generated stream sends the text as one delta
        assert_eq!(generated, recorded);
    }

    #[test]
    fn responses_bodies_round_trip() {
        let mut body = responses_body();
        body["output"] = json!([
            {"id": "rs_1", "type": "reasoning", "summary": [{"type": "summary_text", "text": "**Planning** the call."}],
             "encrypted_content": null},
            {"id": "fc_1", "type": "function_call", "status": "completed", "call_id": "call_9",
             "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
            {"id": "ws_1", "type": "web_search_call", "status": "completed", "action": {"type": "search", "query": "paris"}},
            {"id": "msg_2", "type": "message", "status": "completed", "role": "assistant", "content": [
                {"type": "output_text", "text": "Sunny.", "logprobs": [],
                 "annotations": [{"type": "url_citation", "start_index": 0, "end_index": 6, "url": "https://e.com", "title": "E"}]},
                {"type": "refusal", "refusal": "But I won't say more."}]},
        ]);
        assert_round_trips(Responses, &body);
        let types: Vec<String> = stream(Responses, &body).iter().map(|e| sse::parse_event(e).event.unwrap()).collect();
        for expected in [
            "response.reasoning_summary_text.delta",
            "response.function_call_arguments.done",
            "response.output_text.annotation.added",
            "response.refusal.done",
        ] {
            assert!(types.iter().any(|t| t == expected), "{expected}");
        }
        body["status"] = json!("incomplete");
        body["incomplete_details"] = json!({"reason": "max_output_tokens"});
        assert_round_trips(Responses, &body);
    }

    #[test]
    fn stream_cut_into_network_chunks_assembles_the_same() {
        let recorded = anthropic_stream();
        let wire = recorded.concat();
        for size in [1, 7, 64, 1000] {
            let mut splitter = SseSplitter::new();
            let events: Vec<Bytes> = wire.chunks(size).flat_map(|chunk| splitter.push(chunk)).collect();
            assert_eq!(events, recorded);
            assert_eq!(assemble(Messages, &events), assemble(Messages, &recorded));
        }
    }

    #[test]
    fn unfinished_or_failed_streams_are_refused() {
        let cases: [(StreamKind, Vec<Bytes>); 3] = [
            (ChatCompletions, chat_tool_stream()),
            (Messages, anthropic_stream()),
            (Responses, stream(Responses, &responses_body())),
        ];
        for (kind, events) in cases {
            for cut in 0..events.len() {
                assert!(
                    matches!(stream_to_json(kind, &events[..cut]), Err(ConvertError::Incomplete(_))),
                    "{kind:?} cut after {cut} events"
                );
            }
        }
        let mut chat = chat_tool_stream();
        chat.insert(2, data(r#"{"error":{"message":"The server had an error","type":"server_error"}}"#));
        assert!(matches!(stream_to_json(ChatCompletions, &chat), Err(ConvertError::Unsupported(_))));
        let mut messages = anthropic_stream();
        messages.insert(
            5,
            named("error", r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#),
        );
        assert!(matches!(stream_to_json(Messages, &messages), Err(ConvertError::Unsupported(_))));
        let failed = [named(
            "response.failed",
            r#"{"type":"response.failed","sequence_number":3,"response":{"status":"failed"}}"#,
        )];
        assert!(matches!(stream_to_json(Responses, &failed), Err(ConvertError::Unsupported(_))));
        let mut truncated_input = anthropic_stream();
        truncated_input.remove(15); // the last input_json_delta: the input is no longer JSON
        assert!(matches!(stream_to_json(Messages, &truncated_input), Err(ConvertError::InvalidJson(_))));
    }

    #[test]
    fn bodies_of_the_wrong_shape_are_errors() {
        for (kind, body) in [
            (ChatCompletions, "[]"),
            (ChatCompletions, r#"{"choices":5}"#),
            (ChatCompletions, r#"{"choices":[{"message":"hi"}]}"#),
            (ChatCompletions, r#"{"choices":[{"message":{"tool_calls":[1]}}]}"#),
            (Completions, r#"{"choices":[7]}"#),
            (Responses, r#"{"output":{}}"#),
            (Responses, r#"{"output":[{"type":"message","content":[1]}]}"#),
            (Messages, r#"{"type":"error","error":{"type":"api_error"}}"#),
            (Messages, r#"{"type":"message","content":"text"}"#),
            (Messages, "not json"),
        ] {
            assert!(json_to_stream(kind, body.as_bytes()).is_err(), "{kind:?} {body}");
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        // Structurally odd but valid JSON, the likeliest way to hit a bad assumption.
        let odd = [
            "{}",
            "[]",
            "null",
            "5",
            r#"{"choices":5}"#,
            r#"{"choices":[5,null,{"index":-1,"delta":"x"}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[1,{"index":"a"},{"index":0,"function":5}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":{"index":0},"content":{"a":1},"role":7}}]}"#,
            r#"{"choices":[{"index":18446744073709551615,"text":5,"finish_reason":[]}],"usage":4}"#,
            r#"{"type":"message_start","message":5}"#,
            r#"{"type":"message_start","message":{"usage":3}}"#,
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","citations":"x"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"citations_delta","citation":1}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":5}}"#,
            r#"{"type":"content_block_delta","index":9,"delta":{"type":"input_json_delta","partial_json":"{"}}"#,
            r#"{"type":"message_delta","delta":5,"usage":{"output_tokens":null}}"#,
            r#"{"type":"response.completed","response":5}"#,
            r#"{"type":"response.completed"}"#,
            "[DONE]",
            r#"{"type":"message_stop"}"#,
            r#"{"type":"response.incomplete","response":{}}"#,
        ];
        let fixtures: Vec<Bytes> =
            [chat_tool_stream(), anthropic_stream(), stream(Responses, &responses_body())].concat();
        for _ in 0..400 {
            let mut events = Vec::new();
            for _ in 0..next() % 12 {
                events.push(match next() % 3 {
                    0 => data(odd[(next() % odd.len() as u64) as usize]),
                    1 => {
                        let mut raw = fixtures[(next() % fixtures.len() as u64) as usize].to_vec();
                        let at = (next() % raw.len() as u64) as usize;
                        raw[at] = next() as u8;
                        Bytes::from(raw)
                    }
                    _ => Bytes::from((0..next() % 64).map(|_| next() as u8).collect::<Vec<u8>>()),
                });
            }
            for kind in KINDS {
                if let Ok(body) = stream_to_json(kind, &events) {
                    let _ = json_to_stream(kind, &body);
                }
                for event in &events {
                    let _ = json_to_stream(kind, &sse::parse_event(event).data.into_bytes());
                }
            }
        }
        for body in odd {
            for kind in KINDS {
                let _ = json_to_stream(kind, body.as_bytes());
            }
        }
    }
}
