//! The fake's answers: deterministic, in each endpoint's exact shape (specs/fake-upstream.md),
//! and its error bodies in each dialect.

use super::*;

/// An error in the dialect of the path: Anthropic's `{"type":"error",...}` or OpenAI's `{"error":...}`,
/// with the `type`/`code` the real providers use for that status.
pub(super) fn error_reply(status: StatusCode, anthropic: bool, message: &str) -> Reply {
    let code = status.as_u16();
    let body = if anthropic {
        let kind = match code {
            400 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            529 => "overloaded_error",
            _ => "api_error",
        };
        json!({"type": "error", "error": {"type": kind, "message": message}})
    } else {
        let (kind, error_code) = match code {
            401 => ("invalid_request_error", json!("invalid_api_key")),
            404 => ("invalid_request_error", json!("unknown_url")),
            429 => ("requests", json!("rate_limit_exceeded")),
            500.. => ("server_error", Value::Null),
            _ => ("invalid_request_error", Value::Null),
        };
        json!({"error": {"message": message, "type": kind, "param": null, "code": error_code}})
    };
    Reply::Json(status, body)
}

/// The deterministic answer to one prompt.
pub(super) struct Answer {
    model: Value,
    /// `"echo: " + prompt`; unused when `tool_call` is set.
    text: String,
    tool_call: bool,
    input_tokens: usize,
    output_tokens: usize,
}

impl Answer {
    /// `tools`: whether this endpoint answers the trigger word with a tool call.
    fn new(request: &Value, prompt: &str, tools: bool) -> Answer {
        let paraphrase = request.get("x_fake_paraphrase").is_some();
        let whole = if paraphrase { format!("said: {prompt}") } else { format!("echo: {prompt}") };
        // A final assistant message is a prefill: the fake continues it, as a model would, by
        // answering only the rest of its answer (after the prefix, less leading whitespace the
        // prefix may have lost).
        let prefix = prefill_of(request);
        let text = match whole.strip_prefix(prefix.as_str()) {
            Some(rest) if !prefix.is_empty() => rest.to_owned(),
            _ => whole,
        };
        let tool_call = tools && prompt.contains(TOOL_TRIGGER);
        // For a tool call the "answer" is its arguments.
        let output_tokens = if tool_call { words(TOOL_ARGUMENTS) } else { words(&text) };
        Answer {
            model: request.get("model").cloned().unwrap_or(Value::Null),
            text,
            tool_call,
            input_tokens: words(prompt),
            output_tokens,
        }
    }

    fn openai_usage(&self) -> Value {
        json!({
            "prompt_tokens": self.input_tokens,
            "completion_tokens": self.output_tokens,
            "total_tokens": self.input_tokens + self.output_tokens,
        })
    }

    /// The streamed pieces: of the tool arguments for a tool call, of the text otherwise.
    fn pieces(&self) -> Vec<String> {
        pieces(if self.tool_call { TOOL_ARGUMENTS } else { &self.text })
    }
}

pub(super) fn words(text: &str) -> usize {
    text.split_whitespace().count()
}

/// Splits on character (not byte) boundaries, at most [`PIECE_CHARS`] characters per piece.
pub(super) fn pieces(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars.chunks(PIECE_CHARS).map(|piece| piece.iter().collect()).collect()
}

/// The text of a final assistant message (empty when the last message is not the assistant's).
pub(super) fn prefill_of(request: &Value) -> String {
    let last = request.get("messages").and_then(Value::as_array).and_then(|m| m.last());
    match last {
        Some(m) if m.get("role").and_then(Value::as_str) == Some("assistant") => {
            content_text(m.get("content").unwrap_or(&Value::Null))
        }
        _ => String::new(),
    }
}

pub(super) fn wants_stream(request: &Value) -> bool {
    request.get("stream").and_then(Value::as_bool).unwrap_or(false)
}

/// A message `content`: a string, or parts whose `text` is joined if they are text parts.
pub(super) fn content_text(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter(|part| matches!(part.get("type").and_then(Value::as_str), Some("text" | "input_text")))
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

/// The text of the last `role: "user"` item of a message list (empty if there is none).
pub(super) fn last_user_text(items: &Value) -> String {
    items
        .as_array()
        .and_then(|items| items.iter().rev().find(|item| item.get("role").and_then(Value::as_str) == Some("user")))
        .map(|item| content_text(item.get("content").unwrap_or(&Value::Null)))
        .unwrap_or_default()
}

/// A string, or the strings of an array joined (lenient input for `prompt` / `input`).
pub(super) fn plain_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
        _ => String::new(),
    }
}

pub(super) fn sse_data(value: &Value) -> String {
    format!("data: {value}\n\n")
}

/// Renders events whose `type` names the SSE event; `sequenced` adds the Responses API's
/// `sequence_number` (0, 1, 2, ...).
pub(super) fn typed_events(events: Vec<Value>, sequenced: bool) -> Vec<String> {
    events
        .into_iter()
        .enumerate()
        .map(|(number, mut event)| {
            if sequenced {
                event["sequence_number"] = json!(number);
            }
            let kind = event["type"].as_str().unwrap_or_default().to_owned();
            format!("event: {kind}\ndata: {event}\n\n")
        })
        .collect()
}

pub(super) fn openai_tool_call() -> Value {
    json!({"id": "call_1", "type": "function", "function": {"name": TOOL_NAME, "arguments": TOOL_ARGUMENTS}})
}

pub(super) fn list_models(ids: &[String]) -> Reply {
    let data: Vec<Value> =
        ids.iter().map(|id| json!({"id": id, "object": "model", "created": CREATED, "owned_by": "fake"})).collect();
    Reply::Json(StatusCode::OK, json!({"object": "list", "data": data}))
}

pub(super) fn chat_completions(request: &Value) -> Reply {
    let answer = Answer::new(request, &last_user_text(&request["messages"]), true);
    let finish = if answer.tool_call { "tool_calls" } else { "stop" };
    if !wants_stream(request) {
        let message = if answer.tool_call {
            json!({"role": "assistant", "content": null, "tool_calls": [openai_tool_call()]})
        } else {
            json!({"role": "assistant", "content": answer.text})
        };
        return Reply::Json(
            StatusCode::OK,
            json!({
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": CREATED,
                "model": answer.model,
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": answer.openai_usage(),
            }),
        );
    }

    let chunk = |choices: Value| {
        json!({
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": answer.model,
            "choices": choices,
        })
    };
    let delta = |delta: Value, finish: Value| chunk(json!([{"index": 0, "delta": delta, "finish_reason": finish}]));

    let mut events = vec![sse_data(&delta(json!({"role": "assistant", "content": ""}), Value::Null))];
    if answer.tool_call {
        // As OpenAI streams tool calls: the call's identity first, then its arguments in pieces.
        let head =
            json!({"index": 0, "id": "call_1", "type": "function", "function": {"name": TOOL_NAME, "arguments": ""}});
        events.push(sse_data(&delta(json!({"tool_calls": [head]}), Value::Null)));
        for piece in answer.pieces() {
            let part = json!({"index": 0, "function": {"arguments": piece}});
            events.push(sse_data(&delta(json!({"tool_calls": [part]}), Value::Null)));
        }
    } else {
        for piece in answer.pieces() {
            events.push(sse_data(&delta(json!({"content": piece}), Value::Null)));
        }
    }
    events.push(sse_data(&delta(json!({}), json!(finish))));
    if include_usage(request) {
        let mut usage = chunk(json!([]));
        usage["usage"] = answer.openai_usage();
        events.push(sse_data(&usage));
    }
    events.push("data: [DONE]\n\n".to_owned());
    Reply::Events(events)
}

pub(super) fn include_usage(request: &Value) -> bool {
    request.pointer("/stream_options/include_usage").and_then(Value::as_bool).unwrap_or(false)
}

pub(super) fn completions(request: &Value) -> Reply {
    let answer = Answer::new(request, &plain_text(&request["prompt"]), false);
    let chunk = |choices: Value| json!({"id": "cmpl-fake", "object": "text_completion", "created": CREATED, "model": answer.model, "choices": choices});
    if !wants_stream(request) {
        let mut body = chunk(json!([{"index": 0, "text": answer.text, "finish_reason": "stop", "logprobs": null}]));
        body["usage"] = answer.openai_usage();
        return Reply::Json(StatusCode::OK, body);
    }
    let choice = |text: &str, finish: Value| {
        chunk(json!([{"index": 0, "text": text, "finish_reason": finish, "logprobs": null}]))
    };
    let mut events: Vec<String> = answer.pieces().iter().map(|piece| sse_data(&choice(piece, Value::Null))).collect();
    events.push(sse_data(&choice("", json!("stop"))));
    if include_usage(request) {
        let mut usage = chunk(json!([]));
        usage["usage"] = answer.openai_usage();
        events.push(sse_data(&usage));
    }
    events.push("data: [DONE]\n\n".to_owned());
    Reply::Events(events)
}

/// Eight values derived from the bytes of `input` (FNV-1a, seeded per dimension), each a
/// multiple of 1/128 in [-1, 1) so it is exact as f32 and prints the same in JSON.
pub(super) fn embedding(input: &str) -> [f32; 8] {
    std::array::from_fn(|dimension| {
        let mut hash = 0x811c_9dc5_u32 ^ dimension as u32;
        for byte in input.bytes() {
            hash ^= u32::from(byte);
            hash = hash.wrapping_mul(0x0100_0193);
        }
        (hash % 256) as f32 / 128.0 - 1.0
    })
}

pub(super) fn embeddings(request: &Value) -> Reply {
    // One embedding per input string; the spec's single-string case gives exactly one.
    let inputs: Vec<String> = match &request["input"] {
        Value::Array(items) => items.iter().map(plain_text).collect(),
        other => vec![plain_text(other)],
    };
    let base64 = request.get("encoding_format").and_then(Value::as_str) == Some("base64");
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            let vector = embedding(input);
            let encoded = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|value| value.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": encoded})
        })
        .collect();
    let tokens: usize = inputs.iter().map(|input| words(input)).sum();
    Reply::Json(
        StatusCode::OK,
        json!({
            "object": "list",
            "data": data,
            "model": request.get("model").cloned().unwrap_or(Value::Null),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }),
    )
}

pub(super) fn responses(request: &Value) -> Reply {
    let prompt = match &request["input"] {
        Value::Array(_) => last_user_text(&request["input"]),
        other => plain_text(other),
    };
    let answer = Answer::new(request, &prompt, false);
    let part = json!({"type": "output_text", "text": answer.text, "annotations": []});
    let item =
        json!({"type": "message", "id": "msg_fake", "status": "completed", "role": "assistant", "content": [part]});
    let response = |status: &str, output: Value, usage: Value| {
        json!({
            "id": "resp_fake",
            "object": "response",
            "created_at": CREATED,
            "status": status,
            "model": answer.model,
            "output": output,
            "usage": usage,
        })
    };
    let usage = json!({
        "input_tokens": answer.input_tokens,
        "output_tokens": answer.output_tokens,
        "total_tokens": answer.input_tokens + answer.output_tokens,
    });
    let mut completed = response("completed", json!([item]), usage);
    // `max_output_tokens: 1` plays a provider that hit the limit: the same answer, marked
    // incomplete, ending with `response.incomplete`.
    let cut_short = request.get("max_output_tokens").and_then(Value::as_u64) == Some(1);
    if cut_short {
        completed["status"] = json!("incomplete");
        completed["incomplete_details"] = json!({"reason": "max_output_tokens"});
    }
    if !wants_stream(request) {
        return Reply::Json(StatusCode::OK, completed);
    }

    let at = json!({"item_id": "msg_fake", "output_index": 0, "content_index": 0});
    let with = |kind: &str, extra: Value| {
        let mut event = at.clone();
        event["type"] = json!(kind);
        for (key, value) in extra.as_object().into_iter().flatten() {
            event[key] = value.clone();
        }
        event
    };
    let mut events = vec![
        json!({"type": "response.created", "response": response("in_progress", json!([]), Value::Null)}),
        json!({
            "type": "response.output_item.added",
            "output_index": 0,
            "item": {"type": "message", "id": "msg_fake", "status": "in_progress", "role": "assistant", "content": []},
        }),
        with("response.content_part.added", json!({"part": {"type": "output_text", "text": "", "annotations": []}})),
    ];
    for piece in answer.pieces() {
        events.push(with("response.output_text.delta", json!({"delta": piece, "logprobs": []})));
    }
    events.push(with("response.output_text.done", json!({"text": answer.text, "logprobs": []})));
    events.push(with("response.content_part.done", json!({"part": part})));
    events.push(json!({"type": "response.output_item.done", "output_index": 0, "item": item}));
    let terminal = if cut_short { "response.incomplete" } else { "response.completed" };
    events.push(json!({"type": terminal, "response": completed}));
    Reply::Events(typed_events(events, true))
}

pub(super) fn messages(request: &Value) -> Reply {
    let answer = Answer::new(request, &last_user_text(&request["messages"]), true);
    let stop_reason = if answer.tool_call { "tool_use" } else { "end_turn" };
    if !wants_stream(request) {
        let content = if answer.tool_call {
            json!({"type": "tool_use", "id": "toolu_1", "name": TOOL_NAME, "input": {"city": "Paris"}})
        } else {
            json!({"type": "text", "text": answer.text})
        };
        return Reply::Json(
            StatusCode::OK,
            json!({
                "id": "msg_fake",
                "type": "message",
                "role": "assistant",
                "model": answer.model,
                "content": [content],
                "stop_reason": stop_reason,
                "stop_sequence": null,
                "usage": {"input_tokens": answer.input_tokens, "output_tokens": answer.output_tokens},
            }),
        );
    }

    let (block, delta_kind, delta_field) = if answer.tool_call {
        (
            json!({"type": "tool_use", "id": "toolu_1", "name": TOOL_NAME, "input": {}}),
            "input_json_delta",
            "partial_json",
        )
    } else {
        (json!({"type": "text", "text": ""}), "text_delta", "text")
    };
    let mut events = vec![
        json!({
            "type": "message_start",
            "message": {
                "id": "msg_fake",
                "type": "message",
                "role": "assistant",
                "model": answer.model,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": {"input_tokens": answer.input_tokens, "output_tokens": 0},
            },
        }),
        json!({"type": "ping"}),
        json!({"type": "content_block_start", "index": 0, "content_block": block}),
    ];
    for piece in answer.pieces() {
        events.push(
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": delta_kind, (delta_field): piece}}),
        );
    }
    events.push(json!({"type": "content_block_stop", "index": 0}));
    events.push(json!({
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": null},
        "usage": {"output_tokens": answer.output_tokens},
    }));
    events.push(json!({"type": "message_stop"}));
    Reply::Events(typed_events(events, false))
}

pub(super) fn count_tokens(request: &Value) -> Reply {
    Reply::Json(StatusCode::OK, json!({"input_tokens": words(&last_user_text(&request["messages"]))}))
}
