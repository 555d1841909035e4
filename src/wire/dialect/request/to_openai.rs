//! Requests: Anthropic messages → OpenAI chat completions.

use serde_json::{Value, json};

use super::{PREFILL, system_text, text_parts};
use crate::cache_key::normalize::Dialect;
use crate::wire::dialect::response::openai_tool_call;
use crate::wire::dialect::{
    Object, Result, UNKNOWN, array_at, join, malformed, member, number_at, object_at, objects_in, only_known, refuse,
    required, required_str, str_at, type_of,
};

/// Why an Anthropic request member that changes the answer cannot go to OpenAI.
fn anthropic_only(key: &str) -> &'static str {
    match key {
        "top_k" => "OpenAI has no top-k sampling",
        "thinking" => "OpenAI chat completions take no thinking budget",
        "container" => "OpenAI has no code-execution container",
        "mcp_servers" => "OpenAI chat completions cannot connect to MCP servers",
        _ => UNKNOWN,
    }
}

pub(in crate::wire::dialect) fn anthropic_request_to_openai(body: &Object, model: &str) -> Result<Value> {
    const TO: Dialect = Dialect::OpenAi;
    let mut out = Object::new();
    out.insert("model".into(), model.into());
    for (key, value) in body.iter().filter(|(_, value)| !value.is_null()) {
        let key = key.as_str();
        match key {
            "model" | "messages" | "system" | "tools" | "tool_choice" | "stream" => {}
            "max_tokens" => {
                value.as_u64().ok_or_else(|| malformed(key, "expected a non-negative integer"))?;
                out.insert(key.into(), value.clone());
            }
            "temperature" | "top_p" => {
                number_at(value, key)?;
                out.insert(key.into(), value.clone());
            }
            "stop_sequences" => {
                for (i, stop) in array_at(value, key)?.iter().enumerate() {
                    str_at(stop, &format!("{key}[{i}]"))?;
                }
                if value.as_array().is_some_and(|stops| !stops.is_empty()) {
                    out.insert("stop".into(), value.clone());
                }
            }
            // Only `user_id` exists; it is for abuse monitoring, like OpenAI's `user`.
            "metadata" => {
                if let Some(user) = member(object_at(value, key)?, "user_id") {
                    out.insert("user".into(), str_at(user, "metadata.user_id")?.into());
                }
            }
            // Picks a capacity pool, not the answer; the two dialects' tiers do not line up.
            "service_tier" => {}
            "thinking" if value.get("type").and_then(Value::as_str) == Some("disabled") => {}
            _ => return Err(refuse(key, TO, anthropic_only(key))),
        }
    }

    let mut messages = Vec::new();
    if let Some(system) = member(body, "system") {
        messages
            .push(json!({"role": "system", "content": system_text(system, "system", TEXT_BLOCK, Dialect::OpenAi)?}));
    }
    anthropic_messages_to_openai(array_at(required(body, "messages", "")?, "messages")?, &mut messages)?;
    out.insert("messages".into(), messages.into());

    let tools = match member(body, "tools") {
        Some(tools) => anthropic_tools_to_openai(tools)?,
        None => Vec::new(),
    };
    if let Some(choice) = member(body, "tool_choice") {
        let choice_object = object_at(choice, "tool_choice")?;
        only_known(choice_object, "tool_choice", &["type", "name", "disable_parallel_tool_use"], TO)?;
        let mapped = match type_of(choice_object) {
            "auto" => json!("auto"),
            "any" => json!("required"),
            "none" => json!("none"),
            "tool" => {
                json!({"type": "function", "function": {"name": required_str(choice_object, "name", "tool_choice")?}})
            }
            other => return Err(malformed("tool_choice.type", format!("unknown type {other:?}"))),
        };
        out.insert("tool_choice".into(), mapped);
        // OpenAI refuses `parallel_tool_calls` without tools, where it would mean nothing.
        if choice_object.get("disable_parallel_tool_use") == Some(&Value::Bool(true)) && !tools.is_empty() {
            out.insert("parallel_tool_calls".into(), false.into());
        }
    }
    if !tools.is_empty() {
        out.insert("tools".into(), tools.into());
    }
    if let Some(stream) = member(body, "stream") {
        let stream = stream.as_bool().ok_or_else(|| malformed("stream", "expected a boolean"))?;
        out.insert("stream".into(), stream.into());
        if stream {
            // Without it OpenAI streams carry no token counts at all.
            out.insert("stream_options".into(), json!({"include_usage": true}));
        }
    }
    Ok(Value::Object(out))
}

/// Text blocks may carry `cache_control` (a cost hint) and `citations` (what the text cites,
/// already written into it); both are dropped.
const TEXT_BLOCK: &[&str] = &["type", "text", "cache_control", "citations"];

fn anthropic_messages_to_openai(messages: &[Value], out: &mut Vec<Value>) -> Result<()> {
    const TO: Dialect = Dialect::OpenAi;
    for (i, message) in messages.iter().enumerate() {
        let path = format!("messages[{i}]");
        let message = object_at(message, &path)?;
        only_known(message, &path, &["role", "content"], TO)?;
        let role = required_str(message, "role", &path)?;
        let content = required(message, "content", &path)?;
        let content_path = join(&path, "content");
        match (role, content) {
            ("assistant", _) if i + 1 == messages.len() => return Err(refuse(path, TO, PREFILL)),
            ("user" | "assistant", Value::String(text)) => out.push(json!({"role": role, "content": text})),
            ("user", Value::Array(blocks)) => anthropic_user_blocks(blocks, &content_path, out)?,
            ("assistant", Value::Array(blocks)) => {
                if let Some(message) = anthropic_assistant_message(blocks, &content_path)? {
                    out.push(message);
                }
            }
            ("user" | "assistant", _) => {
                return Err(malformed(content_path, "expected a string or an array of blocks"));
            }
            (other, _) => return Err(malformed(join(&path, "role"), format!("unknown role {other:?}"))),
        }
    }
    Ok(())
}

/// Tool results become tool messages, sent first: OpenAI wants them right after the assistant
/// turn that called the tools (Anthropic puts them first in the user turn for the same reason).
fn anthropic_user_blocks(blocks: &[Value], path: &str, out: &mut Vec<Value>) -> Result<()> {
    const TO: Dialect = Dialect::OpenAi;
    let mut parts = Vec::new();
    for item in objects_in(blocks, path) {
        let (block_path, block) = item?;
        match type_of(block) {
            "text" => {
                only_known(block, &block_path, TEXT_BLOCK, TO)?;
                parts.push(json!({"type": "text", "text": required_str(block, "text", &block_path)?}));
            }
            "image" => {
                only_known(block, &block_path, &["type", "source", "cache_control"], TO)?;
                let source_path = join(&block_path, "source");
                let source = object_at(required(block, "source", &block_path)?, &source_path)?;
                parts.push(
                    json!({"type": "image_url", "image_url": {"url": anthropic_image_url(source, &source_path)?}}),
                );
            }
            "tool_result" => out.push(anthropic_tool_result(block, &block_path)?),
            "document" => return Err(refuse(join(&block_path, "type"), TO, "documents are not translated")),
            _ => return Err(refuse(join(&block_path, "type"), TO, "this content block has no OpenAI equivalent")),
        }
    }
    match parts.as_slice() {
        [] => {}
        // Plain text as a string: some OpenAI-compatible servers take nothing else.
        [single] if single["type"] == "text" => out.push(json!({"role": "user", "content": single["text"]})),
        _ => out.push(json!({"role": "user", "content": parts})),
    }
    Ok(())
}

fn anthropic_image_url(source: &Object, path: &str) -> Result<String> {
    match type_of(source) {
        "base64" => {
            only_known(source, path, &["type", "media_type", "data"], Dialect::OpenAi)?;
            let media_type = required_str(source, "media_type", path)?;
            Ok(format!("data:{media_type};base64,{}", required_str(source, "data", path)?))
        }
        "url" => {
            only_known(source, path, &["type", "url"], Dialect::OpenAi)?;
            Ok(required_str(source, "url", path)?.to_owned())
        }
        "file" => Err(refuse(join(path, "type"), Dialect::OpenAi, "Anthropic file ids mean nothing to OpenAI")),
        other => Err(malformed(join(path, "type"), format!("unknown image source {other:?}"))),
    }
}

/// `is_error` is refused rather than dropped: Anthropic shows the model that the tool failed,
/// and OpenAI has no way to say so.
fn anthropic_tool_result(block: &Object, path: &str) -> Result<Value> {
    const TO: Dialect = Dialect::OpenAi;
    only_known(block, path, &["type", "tool_use_id", "content", "is_error", "cache_control"], TO)?;
    if block.get("is_error") == Some(&Value::Bool(true)) {
        return Err(refuse(join(path, "is_error"), TO, "OpenAI tool messages cannot mark a result as an error"));
    }
    let id = required_str(block, "tool_use_id", path)?;
    let content_path = join(path, "content");
    let content = match member(block, "content") {
        None => Value::String(String::new()),
        Some(Value::String(text)) => Value::String(text.clone()),
        Some(Value::Array(blocks)) => {
            let texts = text_parts(blocks, &content_path, TEXT_BLOCK, TO, "OpenAI tool messages carry text only")?;
            let parts: Vec<Value> = texts.into_iter().map(|text| json!({"type": "text", "text": text})).collect();
            match parts.as_slice() {
                [] => Value::String(String::new()),
                [single] => single["text"].clone(),
                _ => Value::Array(parts),
            }
        }
        Some(_) => return Err(malformed(content_path, "expected a string or an array of blocks")),
    };
    Ok(json!({"role": "tool", "tool_call_id": id, "content": content}))
}

/// An assistant turn's text, joined as a streamed answer joins it, and its tool calls. Thinking
/// is dropped: Anthropic itself strips earlier turns' thinking from the context, and OpenAI
/// takes none. `None` when nothing is left.
fn anthropic_assistant_message(blocks: &[Value], path: &str) -> Result<Option<Value>> {
    const TO: Dialect = Dialect::OpenAi;
    let mut text = String::new();
    let mut calls = Vec::new();
    for item in objects_in(blocks, path) {
        let (block_path, block) = item?;
        match type_of(block) {
            "text" => {
                only_known(block, &block_path, TEXT_BLOCK, TO)?;
                text.push_str(required_str(block, "text", &block_path)?);
            }
            "tool_use" => {
                only_known(block, &block_path, &["type", "id", "name", "input", "cache_control"], TO)?;
                let input = member(block, "input").cloned().unwrap_or_else(|| json!({}));
                calls.push(openai_tool_call(
                    required_str(block, "id", &block_path)?,
                    required_str(block, "name", &block_path)?,
                    &input,
                ));
            }
            "thinking" | "redacted_thinking" => {}
            _ => return Err(refuse(join(&block_path, "type"), TO, "this content block has no OpenAI equivalent")),
        }
    }
    if text.is_empty() && calls.is_empty() {
        return Ok(None);
    }
    let mut message = serde_json::Map::new();
    message.insert("role".into(), "assistant".into());
    message.insert("content".into(), if text.is_empty() { Value::Null } else { text.into() });
    if !calls.is_empty() {
        message.insert("tool_calls".into(), calls.into());
    }
    let message = Value::Object(message);
    Ok(Some(message))
}

fn anthropic_tools_to_openai(tools: &Value) -> Result<Vec<Value>> {
    const TO: Dialect = Dialect::OpenAi;
    let mut out = Vec::new();
    for (i, tool) in array_at(tools, "tools")?.iter().enumerate() {
        let path = format!("tools[{i}]");
        let tool = object_at(tool, &path)?;
        if member(tool, "type").is_some_and(|kind| kind != "custom") {
            return Err(refuse(
                join(&path, "type"),
                TO,
                "Anthropic server tools run at Anthropic; OpenAI cannot run them",
            ));
        }
        only_known(tool, &path, &["type", "name", "description", "input_schema", "cache_control", "strict"], TO)?;
        let mut function = Object::new();
        function.insert("name".into(), required_str(tool, "name", &path)?.into());
        if let Some(description) = member(tool, "description") {
            function.insert("description".into(), description.clone());
        }
        function.insert("parameters".into(), required(tool, "input_schema", &path)?.clone());
        if let Some(strict) = member(tool, "strict") {
            function.insert("strict".into(), strict.clone());
        }
        out.push(json!({"type": "function", "function": function}));
    }
    Ok(out)
}
