//! Non-streamed form → streamed form: building the events the provider would have sent.

use bytes::Bytes;
use serde_json::{Value, json};

use super::ConvertError::{self, Unsupported};
use super::{Object, clone_entry, shape};
use crate::wire::sse;

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

pub(super) fn chat_to_stream(body: &Object) -> Result<Vec<Bytes>, ConvertError> {
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

pub(super) fn completions_to_stream(body: &Object) -> Result<Vec<Bytes>, ConvertError> {
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
    /// The events written so far, in order.
    events: Vec<Bytes>,
    /// The next `sequence_number`.
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

pub(super) fn responses_to_stream(response: Object) -> Result<Vec<Bytes>, ConvertError> {
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

pub(super) fn messages_to_stream(message: Object) -> Result<Vec<Bytes>, ConvertError> {
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
