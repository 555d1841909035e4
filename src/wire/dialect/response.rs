//! Non-streamed answer translation both ways. Each direction is shared by the JSON and the
//! stream translators, so a streamed answer assembles to exactly what the non-streamed
//! translation gives.

use serde_json::{Value, json};

use super::{
    Object, Result, array_at, blank, join, malformed, member, now, object_at, parse_arguments, refuse, required,
    required_str, str_at, string_or_empty, type_of,
};
use crate::cache_key::normalize::Dialect;

pub(super) fn openai_tool_call(id: &str, name: &str, input: &Value) -> Value {
    json!({"id": id, "type": "function", "function": {"name": name, "arguments": input.to_string()}})
}

/// `pause_turn` (a server tool paused a long turn) cannot happen: server tools are refused.
pub(super) fn openai_finish_reason(stop_reason: Option<&str>) -> Value {
    match stop_reason {
        None => Value::Null,
        Some("max_tokens" | "model_context_window_exceeded") => "length".into(),
        Some("tool_use") => "tool_calls".into(),
        Some("refusal") => "content_filter".into(),
        // end_turn, stop_sequence, pause_turn, and reasons added after this was written.
        Some(_) => "stop".into(),
    }
}

/// The stop reason and stop sequence. Tool calls ending in "stop" (older Ollama does that)
/// become `tool_use`, or Anthropic clients would not run the tools; vLLM names the stop string
/// it hit in the choice's `stop_reason`.
pub(super) fn anthropic_stop_reason(
    finish: Option<&str>,
    tool_calls: bool,
    refusal: bool,
    sequence: Option<&str>,
) -> (Value, Value) {
    let reason = match finish {
        None => return (Value::Null, Value::Null),
        Some("stop") if tool_calls => "tool_use",
        Some("stop") if refusal => "refusal",
        Some("stop") if sequence.is_some() => return ("stop_sequence".into(), sequence.into()),
        Some("length") => "max_tokens",
        Some("tool_calls" | "function_call") => "tool_use",
        Some("content_filter") => "refusal",
        Some(_) => "end_turn",
    };
    (reason.into(), Value::Null)
}

/// OpenAI's prompt count includes cached tokens; Anthropic's `input_tokens` excludes both cache
/// reads and cache writes.
pub(super) fn openai_usage(usage: Option<&Object>) -> Value {
    let count = |key: &str| usage.and_then(|usage| usage.get(key)).and_then(Value::as_u64);
    let read = count("cache_read_input_tokens");
    let prompt = count("input_tokens")
        .unwrap_or(0)
        .saturating_add(read.unwrap_or(0))
        .saturating_add(count("cache_creation_input_tokens").unwrap_or(0));
    let completion = count("output_tokens").unwrap_or(0);
    let mut out = json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt.saturating_add(completion)});
    if let (Some(read), Some(fields)) = (read, out.as_object_mut()) {
        fields.insert("prompt_tokens_details".into(), json!({ "cached_tokens": read }));
    }
    out
}

pub(super) fn anthropic_usage(usage: Option<&Value>) -> Value {
    let count = |key: &str| usage.and_then(|usage| usage.get(key)).and_then(Value::as_u64);
    let cached = usage.and_then(|u| u.get("prompt_tokens_details")).and_then(|d| d.get("cached_tokens"));
    let cached = cached.and_then(Value::as_u64);
    let input = count("prompt_tokens").unwrap_or(0).saturating_sub(cached.unwrap_or(0));
    let mut out = json!({"input_tokens": input, "output_tokens": count("completion_tokens").unwrap_or(0)});
    if let (Some(cached), Some(fields)) = (cached, out.as_object_mut()) {
        fields.insert("cache_read_input_tokens".into(), cached.into());
    }
    out
}

/// A chat message in the shape both the JSON and the stream translations produce.
fn openai_message(text: Option<String>, reasoning: &str, calls: Vec<Value>) -> Value {
    let content = match text {
        // Tool calls without text have null content, as the API returns them.
        Some(text) if !text.is_empty() || calls.is_empty() => Value::String(text),
        _ => Value::Null,
    };
    let mut message = serde_json::Map::new();
    message.insert("role".into(), "assistant".into());
    message.insert("content".into(), content);
    if !reasoning.is_empty() {
        message.insert("reasoning_content".into(), reasoning.into());
    }
    if !calls.is_empty() {
        message.insert("tool_calls".into(), calls.into());
    }
    Value::Object(message)
}

pub(super) fn anthropic_answer_to_openai(body: &Object) -> Result<Value> {
    const TO: Dialect = Dialect::OpenAi;
    if type_of(body) != "message" {
        return Err(malformed("type", "expected a message"));
    }
    let mut text: Option<String> = None;
    let mut reasoning = String::new();
    let mut calls = Vec::new();
    for (i, block) in array_at(required(body, "content", "")?, "content")?.iter().enumerate() {
        let path = format!("content[{i}]");
        let block = object_at(block, &path)?;
        match type_of(block) {
            "text" => text.get_or_insert_default().push_str(required_str(block, "text", &path)?),
            "thinking" => reasoning.push_str(required_str(block, "thinking", &path)?),
            // Encrypted; nothing a client could read.
            "redacted_thinking" => {}
            "tool_use" => {
                let input = member(block, "input").cloned().unwrap_or_else(|| json!({}));
                calls.push(openai_tool_call(
                    required_str(block, "id", &path)?,
                    required_str(block, "name", &path)?,
                    &input,
                ));
            }
            _ => return Err(refuse(join(&path, "type"), TO, "this content block has no OpenAI equivalent")),
        }
    }
    let finish_reason = openai_finish_reason(member(body, "stop_reason").and_then(Value::as_str));
    Ok(json!({
        "id": string_or_empty(body, "id"),
        "object": "chat.completion",
        "created": now(),
        "model": string_or_empty(body, "model"),
        "choices": [{"index": 0, "message": openai_message(text, &reasoning, calls), "logprobs": null, "finish_reason": finish_reason}],
        "usage": openai_usage(member(body, "usage").and_then(Value::as_object)),
    }))
}

/// The reasoning text of a message or delta: DeepSeek (and older vLLM) say `reasoning_content`,
/// OpenRouter and newer vLLM `reasoning`.
pub(super) fn reasoning_of(object: &Object) -> Option<&str> {
    ["reasoning_content", "reasoning"]
        .into_iter()
        .find_map(|key| member(object, key).and_then(Value::as_str).filter(|text| !text.is_empty()))
}

pub(super) fn openai_answer_to_anthropic(body: &Object) -> Result<Value> {
    const TO: Dialect = Dialect::Anthropic;
    let choices = array_at(required(body, "choices", "")?, "choices")?;
    let choice = match choices {
        [] => return Err(malformed("choices", "no choice")),
        [choice] => object_at(choice, "choices[0]")?,
        _ => return Err(refuse("choices", TO, "an Anthropic message holds one answer")),
    };
    let message = object_at(required(choice, "message", "choices[0]")?, "choices[0].message")?;
    let mut text = String::new();
    match member(message, "content") {
        None => {}
        Some(Value::String(content)) => text.push_str(content),
        // Some OpenAI-compatible servers answer in parts.
        Some(Value::Array(parts)) => {
            for (j, part) in parts.iter().enumerate() {
                let path = format!("choices[0].message.content[{j}]");
                let part = object_at(part, &path)?;
                if type_of(part) != "text" {
                    return Err(refuse(join(&path, "type"), TO, "Anthropic answers in text only"));
                }
                text.push_str(required_str(part, "text", &path)?);
            }
        }
        Some(_) => return Err(malformed("choices[0].message.content", "expected a string or an array of parts")),
    }
    let refusal = member(message, "refusal").and_then(Value::as_str).filter(|refusal| !refusal.is_empty());
    text.push_str(refusal.unwrap_or(""));

    let mut blocks = Vec::new();
    if let Some(reasoning) = reasoning_of(message) {
        // OpenAI-compatible servers sign nothing, and a client cannot check an empty signature.
        blocks.push(json!({"type": "thinking", "thinking": reasoning, "signature": ""}));
    }
    if !blank(&text) {
        blocks.push(json!({"type": "text", "text": text}));
    }
    let mut tool_calls = false;
    if let Some(calls) = member(message, "tool_calls") {
        for (j, call) in array_at(calls, "choices[0].message.tool_calls")?.iter().enumerate() {
            let path = format!("choices[0].message.tool_calls[{j}]");
            let call = object_at(call, &path)?;
            let function = object_at(required(call, "function", &path)?, &join(&path, "function"))?;
            let arguments_path = join(&path, "function.arguments");
            let arguments = member(function, "arguments").map(|a| str_at(a, &arguments_path)).transpose()?;
            let id = member(call, "id").and_then(Value::as_str).map_or_else(|| format!("call_{j}"), str::to_owned);
            blocks.push(json!({
                "type": "tool_use",
                "id": id,
                "name": required_str(function, "name", &join(&path, "function"))?,
                "input": parse_arguments(arguments.unwrap_or(""), &arguments_path)?,
            }));
            tool_calls = true;
        }
    }
    let finish = member(choice, "finish_reason").and_then(Value::as_str);
    let sequence = member(choice, "stop_reason").and_then(Value::as_str);
    let (stop_reason, stop_sequence) = anthropic_stop_reason(finish, tool_calls, refusal.is_some(), sequence);
    Ok(json!({
        "id": string_or_empty(body, "id"),
        "type": "message",
        "role": "assistant",
        "model": string_or_empty(body, "model"),
        "content": blocks,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": anthropic_usage(member(body, "usage")),
    }))
}
