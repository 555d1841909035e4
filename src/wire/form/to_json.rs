//! Streamed form → non-streamed form: assembling the body a client would have received.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::{Value, json};

use super::ConvertError::{self, Incomplete, InvalidJson, Unsupported};
use super::{Object, clone_entry, parse_object, shape};
use crate::wire::sse::{self, SseEvent, StreamKind};

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
pub(super) fn assemble_openai(kind: StreamKind, events: &[Bytes]) -> Result<Value, ConvertError> {
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
pub(super) fn assemble_responses(events: &[Bytes]) -> Result<Value, ConvertError> {
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
pub(super) fn assemble_messages(events: &[Bytes]) -> Result<Value, ConvertError> {
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
