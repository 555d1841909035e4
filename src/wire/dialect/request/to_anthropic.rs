//! Requests: OpenAI chat completions → Anthropic messages.

use serde_json::{Map, Value, json};

use super::{PREFILL, system_text, text_parts};
use crate::cache_key::normalize::Dialect;
use crate::wire::dialect::versions::VersionRules;
use crate::wire::dialect::{
    DEFAULT_MAX_TOKENS, Object, Result, UNKNOWN, array_at, blank, join, malformed, member, number_at, object_at,
    objects_in, only_known, parse_arguments, refuse, required, required_str, str_at, type_of,
};

/// The image types Anthropic accepts.
const ANTHROPIC_IMAGE_TYPES: &[&str] = &["image/jpeg", "image/png", "image/gif", "image/webp"];

/// Why an OpenAI request member that changes the answer cannot go to Anthropic.
fn openai_only(key: &str) -> &'static str {
    match key {
        "n" => "Anthropic returns one answer per request",
        "logprobs" | "top_logprobs" => "Anthropic does not return token log probabilities",
        "response_format" => "Anthropic would not enforce the requested output format",
        "modalities" | "audio" => "Anthropic answers in text only",
        "prediction" => "Anthropic has no predicted outputs",
        "seed" => "Anthropic has no seed, so the reproducible sampling asked for cannot be given",
        "logit_bias" => "Anthropic cannot bias tokens",
        "presence_penalty" | "frequency_penalty" => "Anthropic has no repetition penalties",
        "web_search_options" => "Anthropic's web search is a server tool with other results",
        "reasoning_effort" => "Anthropic's thinking takes a token budget, and Holdfast will not guess one",
        "verbosity" => "Anthropic has no verbosity control",
        "functions" | "function_call" => "the deprecated form of `tools` is not translated",
        _ => UNKNOWN,
    }
}

/// Stopping at a newline changes the answer, so such a stop is refused rather than dropped.
const BLANK_STOP: &str = "Anthropic refuses stop sequences that are empty or only whitespace";

/// `rules` are those of the Anthropic version the target will be sent (`versions.rs`).
pub(in crate::wire::dialect) fn openai_request_to_anthropic(
    body: &Object,
    model: &str,
    rules: &VersionRules,
) -> Result<Value> {
    const TO: Dialect = Dialect::Anthropic;
    let mut out = Object::new();
    out.insert("model".into(), model.into());
    for (key, value) in body.iter().filter(|(_, value)| !value.is_null()) {
        let key = key.as_str();
        match key {
            // Translated below, where they depend on each other.
            "model"
            | "messages"
            | "max_tokens"
            | "max_completion_tokens"
            | "tools"
            | "tool_choice"
            | "parallel_tool_calls" => {}
            // A version that refuses sampling parameters gets them dropped (`versions.rs`).
            "temperature" | "top_p" if !rules.sampling => {
                number_at(value, key)?;
            }
            "temperature" => {
                if number_at(value, key)? > 1.0 {
                    return Err(refuse(key, TO, "Anthropic accepts 0 to 1, and clamping would change the sampling"));
                }
                out.insert(key.into(), value.clone());
            }
            "top_p" => {
                number_at(value, key)?;
                out.insert(key.into(), value.clone());
            }
            "stop" => {
                let stops = match value {
                    Value::String(stop) if blank(stop) => return Err(refuse(key, TO, BLANK_STOP)),
                    Value::String(stop) => vec![Value::String(stop.clone())],
                    Value::Array(stops) => {
                        for (i, stop) in stops.iter().enumerate() {
                            if blank(str_at(stop, &format!("stop[{i}]"))?) {
                                return Err(refuse(format!("stop[{i}]"), TO, BLANK_STOP));
                            }
                        }
                        stops.clone()
                    }
                    _ => return Err(malformed(key, "expected a string or an array of strings")),
                };
                if !stops.is_empty() {
                    out.insert("stop_sequences".into(), stops.into());
                }
            }
            "stream" => {
                value.as_bool().ok_or_else(|| malformed(key, "expected a boolean"))?;
                out.insert(key.into(), value.clone());
            }
            "user" | "safety_identifier" => {
                str_at(value, key)?;
            }
            // Advisory: framing, storage, routing and cost. None is an input to generation.
            "stream_options"
            | "store"
            | "metadata"
            | "service_tier"
            | "prompt_cache_key"
            | "prompt_cache_retention" => {}
            // The values that mean "as if absent".
            "n" if value.as_u64() == Some(1) => {}
            "logprobs" if value == &Value::Bool(false) => {}
            "top_logprobs" if value.as_u64() == Some(0) => {}
            "response_format" if value.get("type").and_then(Value::as_str) == Some("text") => {}
            "modalities" if value == &json!(["text"]) => {}
            "presence_penalty" | "frequency_penalty" if value.as_f64() == Some(0.0) => {}
            "logit_bias" if value.as_object().is_some_and(Map::is_empty) => {}
            _ => return Err(refuse(key, TO, openai_only(key))),
        }
    }
    if let Some(user) = member(body, "user").or_else(|| member(body, "safety_identifier")) {
        out.insert("metadata".into(), json!({ "user_id": user }));
    }

    let max_key = if member(body, "max_completion_tokens").is_some() { "max_completion_tokens" } else { "max_tokens" };
    let max_tokens = match member(body, max_key) {
        Some(value) => value.as_u64().ok_or_else(|| malformed(max_key, "expected a non-negative integer"))?,
        None => DEFAULT_MAX_TOKENS,
    };
    out.insert("max_tokens".into(), max_tokens.into());

    let messages = array_at(required(body, "messages", "")?, "messages")?;
    let (mut system, messages) = openai_messages_to_anthropic(messages)?;
    system.retain(|text| !blank(text));
    if !system.is_empty() {
        out.insert("system".into(), system.join("\n\n").into());
    }
    out.insert("messages".into(), messages.into());

    let tools = match member(body, "tools") {
        Some(tools) => openai_tools_to_anthropic(tools)?,
        None => Vec::new(),
    };
    let mut choice = member(body, "tool_choice").map(openai_tool_choice_to_anthropic).transpose()?;
    match member(body, "parallel_tool_calls") {
        None | Some(Value::Bool(true)) => {}
        // Without tools there is nothing to call in parallel, and Anthropic's `none` takes no
        // options.
        Some(Value::Bool(false)) if !tools.is_empty() => {
            let choice = choice.get_or_insert_with(|| json!({"type": "auto"}));
            if choice["type"] != "none"
                && let Some(choice) = choice.as_object_mut()
            {
                choice.insert("disable_parallel_tool_use".into(), true.into());
            }
        }
        Some(Value::Bool(false)) => {}
        Some(_) => return Err(malformed("parallel_tool_calls", "expected a boolean")),
    }
    if !tools.is_empty() {
        out.insert("tools".into(), tools.into());
    }
    if let Some(choice) = choice {
        out.insert("tool_choice".into(), choice);
    }
    Ok(Value::Object(out))
}

/// Returns the system prompts (in order) and the conversation.
fn openai_messages_to_anthropic(messages: &[Value]) -> Result<(Vec<String>, Vec<Value>)> {
    const TO: Dialect = Dialect::Anthropic;
    let mut system = Vec::new();
    let mut out: Vec<Value> = Vec::new();
    // Whether the last message of `out` holds tool results only, so the next tool message joins
    // it: Anthropic expects every result for one assistant turn in the user turn that follows.
    let mut open_results = false;
    let mut last_assistant = None;
    for (i, message) in messages.iter().enumerate() {
        let path = format!("messages[{i}]");
        let message = object_at(message, &path)?;
        let role = required_str(message, "role", &path)?;
        if member(message, "name").is_some() {
            return Err(refuse(join(&path, "name"), TO, "Anthropic messages carry no participant name"));
        }
        match role {
            "system" | "developer" => {
                only_known(message, &path, &["role", "content"], TO)?;
                let content_path = join(&path, "content");
                system.push(system_text(
                    required(message, "content", &path)?,
                    &content_path,
                    &["type", "text"],
                    Dialect::Anthropic,
                )?);
            }
            "user" => {
                only_known(message, &path, &["role", "content"], TO)?;
                let content_path = join(&path, "content");
                if let Some(content) = openai_user_content(required(message, "content", &path)?, &content_path)? {
                    out.push(json!({"role": "user", "content": content}));
                    open_results = false;
                    last_assistant = None;
                }
            }
            "assistant" => {
                only_known(message, &path, &["role", "content", "tool_calls", "refusal"], TO)?;
                let blocks = openai_assistant_blocks(message, &path)?;
                // An empty turn says nothing, and Anthropic refuses empty content.
                if !blocks.is_empty() {
                    let content = match blocks.as_slice() {
                        [single] if single["type"] == "text" => single["text"].clone(),
                        _ => Value::Array(blocks),
                    };
                    out.push(json!({"role": "assistant", "content": content}));
                    open_results = false;
                    last_assistant = Some(path);
                }
            }
            "tool" => {
                only_known(message, &path, &["role", "content", "tool_call_id"], TO)?;
                let mut result = Object::new();
                result.insert("type".into(), "tool_result".into());
                result.insert("tool_use_id".into(), required_str(message, "tool_call_id", &path)?.into());
                if let Some(content) = member(message, "content") {
                    let content = openai_tool_content(content, &join(&path, "content"))?;
                    if let Some(content) = content {
                        result.insert("content".into(), content);
                    }
                }
                let previous = out.last_mut().and_then(|m| m.get_mut("content")).and_then(Value::as_array_mut);
                match previous {
                    Some(results) if open_results => results.push(Value::Object(result)),
                    _ => out.push(json!({"role": "user", "content": [result]})),
                }
                open_results = true;
                last_assistant = None;
            }
            "function" => {
                return Err(refuse(join(&path, "role"), TO, "deprecated function messages are not translated"));
            }
            other => return Err(malformed(join(&path, "role"), format!("unknown role {other:?}"))),
        }
    }
    if let Some(path) = last_assistant {
        return Err(refuse(path, TO, PREFILL));
    }
    Ok((system, out))
}

/// A user message's content, or `None` when it says nothing (Anthropic refuses empty text).
fn openai_user_content(content: &Value, path: &str) -> Result<Option<Value>> {
    const TO: Dialect = Dialect::Anthropic;
    let parts = match content {
        Value::String(text) if blank(text) => return Ok(None),
        Value::String(text) => return Ok(Some(Value::String(text.clone()))),
        Value::Array(parts) => parts,
        _ => return Err(malformed(path, "expected a string or an array of parts")),
    };
    let mut blocks = Vec::new();
    for item in objects_in(parts, path) {
        let (part_path, part) = item?;
        match type_of(part) {
            "text" => {
                only_known(part, &part_path, &["type", "text"], TO)?;
                let text = required_str(part, "text", &part_path)?;
                if !blank(text) {
                    blocks.push(json!({"type": "text", "text": text}));
                }
            }
            "image_url" => {
                only_known(part, &part_path, &["type", "image_url"], TO)?;
                let image_path = join(&part_path, "image_url");
                let image = object_at(required(part, "image_url", &part_path)?, &image_path)?;
                blocks.push(openai_image_to_anthropic(image, &image_path)?);
            }
            "input_audio" => return Err(refuse(join(&part_path, "type"), TO, "Anthropic takes no audio input")),
            "file" => return Err(refuse(join(&part_path, "type"), TO, "file inputs are not translated")),
            _ => return Err(refuse(join(&part_path, "type"), TO, UNKNOWN)),
        }
    }
    Ok((!blocks.is_empty()).then_some(Value::Array(blocks)))
}

/// `detail` is dropped: it picks the resolution (and cost) OpenAI processes the image at, and
/// Anthropic picks its own; the image is the same.
fn openai_image_to_anthropic(image: &Object, path: &str) -> Result<Value> {
    const TO: Dialect = Dialect::Anthropic;
    only_known(image, path, &["url", "detail"], TO)?;
    let url_path = join(path, "url");
    let url = required_str(image, "url", path)?;
    let source = if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest.split_once(',').ok_or_else(|| malformed(&url_path, "a data URL needs a comma"))?;
        let meta =
            meta.strip_suffix(";base64").ok_or_else(|| refuse(&url_path, TO, "Anthropic takes base64 data only"))?;
        let media_type = meta.split(';').next().unwrap_or_default().to_ascii_lowercase();
        if !ANTHROPIC_IMAGE_TYPES.contains(&media_type.as_str()) {
            return Err(refuse(url_path, TO, "Anthropic takes JPEG, PNG, GIF and WebP images only"));
        }
        json!({"type": "base64", "media_type": media_type, "data": data})
    } else if url.starts_with("https://") || url.starts_with("http://") {
        json!({"type": "url", "url": url})
    } else {
        return Err(malformed(url_path, "expected a data: or http(s) URL"));
    };
    Ok(json!({"type": "image", "source": source}))
}

/// An assistant turn as Anthropic blocks: its text (a refusal is text the model said), then its
/// tool calls.
fn openai_assistant_blocks(message: &Object, path: &str) -> Result<Vec<Value>> {
    const TO: Dialect = Dialect::Anthropic;
    let mut text = String::new();
    let content_path = join(path, "content");
    match member(message, "content") {
        None => {}
        Some(Value::String(content)) => text.push_str(content),
        Some(Value::Array(parts)) => {
            for (j, part) in parts.iter().enumerate() {
                let part_path = format!("{content_path}[{j}]");
                let part = object_at(part, &part_path)?;
                match type_of(part) {
                    key @ ("text" | "refusal") => {
                        only_known(part, &part_path, &["type", key], TO)?;
                        text.push_str(required_str(part, key, &part_path)?);
                    }
                    _ => return Err(refuse(join(&part_path, "type"), TO, UNKNOWN)),
                }
            }
        }
        Some(_) => return Err(malformed(content_path, "expected a string or an array of parts")),
    }
    if let Some(refusal) = member(message, "refusal") {
        text.push_str(str_at(refusal, &join(path, "refusal"))?);
    }
    let mut blocks = Vec::new();
    if !blank(&text) {
        blocks.push(json!({"type": "text", "text": text}));
    }
    if let Some(calls) = member(message, "tool_calls") {
        let calls_path = join(path, "tool_calls");
        for (j, call) in array_at(calls, &calls_path)?.iter().enumerate() {
            let call_path = format!("{calls_path}[{j}]");
            let call = object_at(call, &call_path)?;
            if member(call, "type").is_some_and(|kind| kind != "function") {
                return Err(refuse(join(&call_path, "type"), TO, "only function calls have an Anthropic equivalent"));
            }
            only_known(call, &call_path, &["id", "type", "function"], TO)?;
            let function_path = join(&call_path, "function");
            let function = object_at(required(call, "function", &call_path)?, &function_path)?;
            only_known(function, &function_path, &["name", "arguments"], TO)?;
            let arguments = match member(function, "arguments") {
                Some(arguments) => str_at(arguments, &join(&function_path, "arguments"))?,
                None => "",
            };
            blocks.push(json!({
                "type": "tool_use",
                "id": required_str(call, "id", &call_path)?,
                "name": required_str(function, "name", &function_path)?,
                "input": parse_arguments(arguments, &join(&function_path, "arguments"))?,
            }));
        }
    }
    Ok(blocks)
}

/// A tool message's content as a `tool_result`'s, or `None` when empty (the member is optional).
fn openai_tool_content(content: &Value, path: &str) -> Result<Option<Value>> {
    match content {
        Value::String(text) => Ok((!blank(text)).then(|| Value::String(text.clone()))),
        Value::Array(parts) => {
            let texts = text_parts(parts, path, &["type", "text"], Dialect::Anthropic, UNKNOWN)?;
            let blocks: Vec<Value> = texts
                .into_iter()
                .filter(|text| !blank(text))
                .map(|text| json!({"type": "text", "text": text}))
                .collect();
            Ok((!blocks.is_empty()).then_some(Value::Array(blocks)))
        }
        _ => Err(malformed(path, "expected a string or an array of parts")),
    }
}

/// `strict: true` guarantees arguments that match the schema. Anthropic offers that only
/// behind a beta header this module cannot set, and arguments that break a schema the client
/// relies on are a wrong answer.
const STRICT: &str = "strict schema adherence needs an Anthropic beta that Holdfast does not enable";

fn openai_tools_to_anthropic(tools: &Value) -> Result<Vec<Value>> {
    const TO: Dialect = Dialect::Anthropic;
    let mut out = Vec::new();
    for (i, tool) in array_at(tools, "tools")?.iter().enumerate() {
        let path = format!("tools[{i}]");
        let tool = object_at(tool, &path)?;
        if type_of(tool) != "function" {
            return Err(refuse(join(&path, "type"), TO, "only function tools have an Anthropic equivalent"));
        }
        only_known(tool, &path, &["type", "function"], TO)?;
        let function_path = join(&path, "function");
        let function = object_at(required(tool, "function", &path)?, &function_path)?;
        if function.get("strict") == Some(&Value::Bool(true)) {
            return Err(refuse(join(&function_path, "strict"), TO, STRICT));
        }
        only_known(function, &function_path, &["name", "description", "parameters", "strict"], TO)?;
        let mut converted = Object::new();
        converted.insert("name".into(), required_str(function, "name", &function_path)?.into());
        if let Some(description) = member(function, "description") {
            converted.insert("description".into(), description.clone());
        }
        let schema =
            member(function, "parameters").cloned().unwrap_or_else(|| json!({"type": "object", "properties": {}}));
        converted.insert("input_schema".into(), schema);
        out.push(Value::Object(converted));
    }
    Ok(out)
}

fn openai_tool_choice_to_anthropic(choice: &Value) -> Result<Value> {
    match choice {
        Value::String(mode) => match mode.as_str() {
            "auto" => Ok(json!({"type": "auto"})),
            "required" => Ok(json!({"type": "any"})),
            "none" => Ok(json!({"type": "none"})),
            other => Err(malformed("tool_choice", format!("unknown mode {other:?}"))),
        },
        Value::Object(choice) if type_of(choice) == "function" => {
            only_known(choice, "tool_choice", &["type", "function"], Dialect::Anthropic)?;
            let function = object_at(required(choice, "function", "tool_choice")?, "tool_choice.function")?;
            only_known(function, "tool_choice.function", &["name"], Dialect::Anthropic)?;
            Ok(json!({"type": "tool", "name": required_str(function, "name", "tool_choice.function")?}))
        }
        Value::Object(_) => Err(refuse(
            "tool_choice.type",
            Dialect::Anthropic,
            "only choosing one function tool has an Anthropic equivalent",
        )),
        _ => Err(malformed("tool_choice", "expected a string or an object")),
    }
}
