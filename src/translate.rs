//! Translates between the OpenAI chat-completions and Anthropic messages dialects, so a failover
//! target that speaks the other dialect can still answer a client: the request on the way out,
//! the answer (one JSON body, or a stream event by event) on the way back.
//!
//! The rule is the cache key's (`docs/cache-key.md`): a wrong answer is worse than none. A field
//! that could change the answer and has no equivalent on the other side makes the request
//! [`Untranslatable`], so the caller skips that target, instead of being dropped. Only fields
//! that cannot change the answer (abuse-monitoring ids, storage flags, cost hints) are dropped,
//! and fields this module does not know are refused for the same reason: nobody checked that
//! dropping them is harmless. `docs/translation.md` has the table, field by field.
//!
//! The caller stores a translated answer under the address of the request the client sent, in
//! the client's dialect: a replay then needs no translation and cannot tell where it came from.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::normalize::Dialect;
use crate::sse::{self, SseEvent, StreamKind, format_event};

type Object = Map<String, Value>;

/// Why a request cannot be sent to a target of the other dialect, or an answer cannot be
/// carried back. The message names the field as a path into the JSON
/// (`messages[2].content[0].type`), so an operator can tell which client feature ruled the
/// failover target out.
#[derive(Debug, thiserror::Error)]
pub enum Untranslatable {
    /// Well formed, but the other dialect cannot say it without changing the answer.
    #[error("`{field}` has no equivalent in {to}: {why}")]
    Field { field: String, to: &'static str, why: &'static str },
    /// Not shaped the way its own dialect defines it, so no translation can be sound.
    #[error("`{field}` is malformed: {why}")]
    Malformed { field: String, why: String },
}

impl Untranslatable {
    /// The path of the field at fault.
    pub fn field(&self) -> &str {
        match self {
            Self::Field { field, .. } | Self::Malformed { field, .. } => field,
        }
    }
}

type Result<T> = std::result::Result<T, Untranslatable>;

fn name_of(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::OpenAi => "OpenAI",
        Dialect::Anthropic => "Anthropic",
    }
}

fn refuse(field: impl Into<String>, to: Dialect, why: &'static str) -> Untranslatable {
    Untranslatable::Field { field: field.into(), to: name_of(to), why }
}

fn malformed(field: impl Into<String>, why: impl Into<String>) -> Untranslatable {
    Untranslatable::Malformed { field: field.into(), why: why.into() }
}

const UNKNOWN: &str = "Holdfast does not translate this field, and it might change the answer";
const PREFILL: &str = "a final assistant message is a prefill that Anthropic continues, while OpenAI answers after it";
/// Anthropic requires `max_tokens`; OpenAI lets the model run to its own limit. 4096 is enough
/// for most chat answers and is accepted by every current Claude model.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;
const ANTHROPIC_IMAGE_TYPES: &[&str] = &["image/jpeg", "image/png", "image/gif", "image/webp"];
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

/// The client's request body (JSON object) rewritten for a target of dialect `to`, with its
/// model set to `target_model`. Same-dialect calls only swap the model.
pub fn request(from: Dialect, to: Dialect, body: &Value, target_model: &str) -> Result<Value> {
    let body = body.as_object().ok_or_else(|| malformed("body", "expected a JSON object"))?;
    match (from, to) {
        (Dialect::OpenAi, Dialect::Anthropic) => openai_request_to_anthropic(body, target_model),
        (Dialect::Anthropic, Dialect::OpenAi) => anthropic_request_to_openai(body, target_model),
        _ => {
            let mut same = body.clone();
            same.insert("model".into(), target_model.into());
            Ok(Value::Object(same))
        }
    }
}

/// An upstream non-streamed answer of dialect `from` rewritten as the client's dialect `to`.
/// Same-dialect calls return the body unchanged.
pub fn response(from: Dialect, to: Dialect, body: &Value) -> Result<Value> {
    let body = body.as_object().ok_or_else(|| malformed("body", "expected a JSON object"))?;
    match (from, to) {
        (Dialect::Anthropic, Dialect::OpenAi) => anthropic_answer_to_openai(body),
        (Dialect::OpenAi, Dialect::Anthropic) => openai_answer_to_anthropic(body),
        _ => Ok(Value::Object(body.clone())),
    }
}

// ---------------------------------------------------------------------------------------------
// Reading JSON. Both dialects let clients send `null` for "the default", so a null member counts
// as absent everywhere.

fn member<'a>(object: &'a Object, key: &str) -> Option<&'a Value> {
    object.get(key).filter(|value| !value.is_null())
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") }
}

fn object_at<'a>(value: &'a Value, path: &str) -> Result<&'a Object> {
    value.as_object().ok_or_else(|| malformed(path, "expected an object"))
}

fn array_at<'a>(value: &'a Value, path: &str) -> Result<&'a [Value]> {
    value.as_array().map(Vec::as_slice).ok_or_else(|| malformed(path, "expected an array"))
}

fn str_at<'a>(value: &'a Value, path: &str) -> Result<&'a str> {
    value.as_str().ok_or_else(|| malformed(path, "expected a string"))
}

/// A member that must be there and be a string.
fn required_str<'a>(object: &'a Object, key: &str, path: &str) -> Result<&'a str> {
    let path = join(path, key);
    member(object, key).ok_or_else(|| malformed(&path, "missing")).and_then(|value| str_at(value, &path))
}

fn required<'a>(object: &'a Object, key: &str, path: &str) -> Result<&'a Value> {
    member(object, key).ok_or_else(|| malformed(join(path, key), "missing"))
}

fn number_at(value: &Value, path: &str) -> Result<f64> {
    value.as_f64().ok_or_else(|| malformed(path, "expected a number"))
}

fn string_or_empty(object: &Object, key: &str) -> Value {
    Value::String(member(object, key).and_then(Value::as_str).unwrap_or("").to_owned())
}

fn type_of(object: &Object) -> &str {
    object.get("type").and_then(Value::as_str).unwrap_or("")
}

/// Refuses members outside `known`: a member nobody looked at might change the answer.
fn only_known(object: &Object, path: &str, known: &[&str], to: Dialect) -> Result<()> {
    match object.iter().find(|(key, value)| !value.is_null() && !known.contains(&key.as_str())) {
        Some((key, _)) => Err(refuse(join(path, key), to, UNKNOWN)),
        None => Ok(()),
    }
}

/// Tool arguments as the Anthropic `input` object. A call without arguments may send none.
fn parse_arguments(arguments: &str, path: &str) -> Result<Value> {
    if arguments.trim().is_empty() {
        return Ok(json!({}));
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(input @ Value::Object(_)) => Ok(input),
        Ok(_) => Err(malformed(path, "tool arguments must be a JSON object")),
        Err(e) => Err(malformed(path, format!("tool arguments are not JSON: {e}"))),
    }
}

/// Anthropic refuses text blocks that are empty or only whitespace; such text says nothing, so
/// it is dropped on the way to Anthropic and never put into an Anthropic answer.
fn blank(text: &str) -> bool {
    text.trim().is_empty()
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs())
}

// ---------------------------------------------------------------------------------------------
// Requests: OpenAI chat completions → Anthropic messages.

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

fn openai_request_to_anthropic(body: &Object, model: &str) -> Result<Value> {
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
                system.push(openai_system_text(required(message, "content", &path)?, &content_path)?);
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

/// A system or developer message's text. Its parts are separate segments, joined like messages.
fn openai_system_text(content: &Value, path: &str) -> Result<String> {
    match content {
        Value::String(text) => Ok(text.clone()),
        Value::Array(parts) => {
            let mut texts = Vec::new();
            for (j, part) in parts.iter().enumerate() {
                let part_path = format!("{path}[{j}]");
                let part = object_at(part, &part_path)?;
                if type_of(part) != "text" {
                    return Err(refuse(
                        join(&part_path, "type"),
                        Dialect::Anthropic,
                        "a system prompt holds text only",
                    ));
                }
                only_known(part, &part_path, &["type", "text"], Dialect::Anthropic)?;
                texts.push(required_str(part, "text", &part_path)?);
            }
            Ok(texts.join("\n\n"))
        }
        _ => Err(malformed(path, "expected a string or an array of parts")),
    }
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
    for (j, part) in parts.iter().enumerate() {
        let part_path = format!("{path}[{j}]");
        let part = object_at(part, &part_path)?;
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
            let mut blocks = Vec::new();
            for (j, part) in parts.iter().enumerate() {
                let part_path = format!("{path}[{j}]");
                let part = object_at(part, &part_path)?;
                if type_of(part) != "text" {
                    return Err(refuse(join(&part_path, "type"), Dialect::Anthropic, UNKNOWN));
                }
                only_known(part, &part_path, &["type", "text"], Dialect::Anthropic)?;
                let text = required_str(part, "text", &part_path)?;
                if !blank(text) {
                    blocks.push(json!({"type": "text", "text": text}));
                }
            }
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

// ---------------------------------------------------------------------------------------------
// Requests: Anthropic messages → OpenAI chat completions.

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

fn anthropic_request_to_openai(body: &Object, model: &str) -> Result<Value> {
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
        messages.push(json!({"role": "system", "content": anthropic_system_text(system)?}));
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

fn anthropic_system_text(system: &Value) -> Result<String> {
    match system {
        Value::String(text) => Ok(text.clone()),
        Value::Array(blocks) => {
            let mut texts = Vec::new();
            for (i, block) in blocks.iter().enumerate() {
                let path = format!("system[{i}]");
                let block = object_at(block, &path)?;
                if type_of(block) != "text" {
                    return Err(refuse(join(&path, "type"), Dialect::OpenAi, "a system prompt holds text only"));
                }
                only_known(block, &path, TEXT_BLOCK, Dialect::OpenAi)?;
                texts.push(required_str(block, "text", &path)?);
            }
            Ok(texts.join("\n\n"))
        }
        _ => Err(malformed("system", "expected a string or an array of text blocks")),
    }
}

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
    for (j, block) in blocks.iter().enumerate() {
        let block_path = format!("{path}[{j}]");
        let block = object_at(block, &block_path)?;
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
            let mut parts = Vec::new();
            for (k, inner) in blocks.iter().enumerate() {
                let inner_path = format!("{content_path}[{k}]");
                let inner = object_at(inner, &inner_path)?;
                if type_of(inner) != "text" {
                    return Err(refuse(join(&inner_path, "type"), TO, "OpenAI tool messages carry text only"));
                }
                only_known(inner, &inner_path, TEXT_BLOCK, TO)?;
                parts.push(json!({"type": "text", "text": required_str(inner, "text", &inner_path)?}));
            }
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
    for (j, block) in blocks.iter().enumerate() {
        let block_path = format!("{path}[{j}]");
        let block = object_at(block, &block_path)?;
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
    let mut message = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { text.into() }});
    if !calls.is_empty() {
        message["tool_calls"] = calls.into();
    }
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

// ---------------------------------------------------------------------------------------------
// Answers. Each direction is shared by the JSON and the stream translators, so a streamed answer
// assembles to exactly what the non-streamed translation gives.

fn openai_tool_call(id: &str, name: &str, input: &Value) -> Value {
    json!({"id": id, "type": "function", "function": {"name": name, "arguments": input.to_string()}})
}

/// `pause_turn` (a server tool paused a long turn) cannot happen: server tools are refused.
fn openai_finish_reason(stop_reason: Option<&str>) -> Value {
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
fn anthropic_stop_reason(
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
fn openai_usage(usage: Option<&Object>) -> Value {
    let count = |key: &str| usage.and_then(|usage| usage.get(key)).and_then(Value::as_u64);
    let read = count("cache_read_input_tokens");
    let prompt = count("input_tokens")
        .unwrap_or(0)
        .saturating_add(read.unwrap_or(0))
        .saturating_add(count("cache_creation_input_tokens").unwrap_or(0));
    let completion = count("output_tokens").unwrap_or(0);
    let mut out = json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt.saturating_add(completion)});
    if let Some(read) = read {
        out["prompt_tokens_details"] = json!({ "cached_tokens": read });
    }
    out
}

fn anthropic_usage(usage: Option<&Value>) -> Value {
    let count = |key: &str| usage.and_then(|usage| usage.get(key)).and_then(Value::as_u64);
    let cached = usage.and_then(|u| u.get("prompt_tokens_details")).and_then(|d| d.get("cached_tokens"));
    let cached = cached.and_then(Value::as_u64);
    let input = count("prompt_tokens").unwrap_or(0).saturating_sub(cached.unwrap_or(0));
    let mut out = json!({"input_tokens": input, "output_tokens": count("completion_tokens").unwrap_or(0)});
    if let Some(cached) = cached {
        out["cache_read_input_tokens"] = cached.into();
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
    let mut message = json!({"role": "assistant", "content": content});
    if !reasoning.is_empty() {
        message["reasoning_content"] = reasoning.into();
    }
    if !calls.is_empty() {
        message["tool_calls"] = calls.into();
    }
    message
}

fn anthropic_answer_to_openai(body: &Object) -> Result<Value> {
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
fn reasoning_of(object: &Object) -> Option<&str> {
    ["reasoning_content", "reasoning"]
        .into_iter()
        .find_map(|key| member(object, key).and_then(Value::as_str).filter(|text| !text.is_empty()))
}

fn openai_answer_to_anthropic(body: &Object) -> Result<Value> {
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

// ---------------------------------------------------------------------------------------------
// Streams.

/// Translates an upstream SSE stream event by event, so the client gets its first bytes as soon
/// as upstream sends them. Only what cannot be known early waits: Anthropic's `message_delta`
/// carries the final usage, which OpenAI sends after the finish reason.
pub struct StreamTranslator {
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
    dialect: Dialect,
    finished: bool,
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
    block: u64,
    kind: Kind,
}

struct Tool {
    block: u64,
    /// Checked once the stream ends: an answer whose arguments are not a JSON object would
    /// break the client's assembly, so it must not finish.
    arguments: String,
}

/// OpenAI chunks → Anthropic events. Deltas open Anthropic blocks one at a time; a block closes
/// when a delta of another kind arrives or the choice finishes.
#[derive(Default)]
struct FromOpenAi {
    started: bool,
    blocks: u64,
    open: Option<Open>,
    tools: BTreeMap<u64, Tool>,
    finish: Option<String>,
    stop_sequence: Option<String>,
    refusal: bool,
    /// Answer text that is only whitespace so far, not yet in a block.
    held: String,
    usage: Option<Value>,
    delta_sent: bool,
    finished: bool,
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
    head: Option<Object>,
    usage: Object,
    blocks: BTreeMap<u64, Block>,
    tools: u64,
    finish_sent: bool,
    finished: bool,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert;
    use crate::sse::{SseSplitter, parse_event};
    use Dialect::{Anthropic, OpenAi};

    fn to_anthropic(body: Value) -> Value {
        request(OpenAi, Anthropic, &body, "claude-sonnet-4-5").unwrap()
    }

    fn to_openai(body: Value) -> Value {
        request(Anthropic, OpenAi, &body, "gpt-4o").unwrap()
    }

    fn data(json: &str) -> Bytes {
        Bytes::from(format!("data: {json}\n\n"))
    }

    fn named(event: &str, json: &str) -> Bytes {
        Bytes::from(format!("event: {event}\ndata: {json}\n\n"))
    }

    fn done() -> Bytes {
        Bytes::from_static(b"data: [DONE]\n\n")
    }

    // --- Requests ----------------------------------------------------------------------------

    #[test]
    fn plain_text_request_round_trips_from_openai() {
        let openai = json!({
            "model": "gpt-4o", "messages": [{"role": "user", "content": "Hello"}],
            "temperature": 0.5, "top_p": 0.9, "stop": "END", "max_tokens": 100, "stream": true,
            "stream_options": {"include_usage": true}, "user": "u-1", "store": false, "metadata": {"k": "v"},
            "service_tier": "auto", "n": 1, "logprobs": false, "top_logprobs": 0, "presence_penalty": 0,
            "frequency_penalty": 0.0, "response_format": {"type": "text"}, "modalities": ["text"],
            "logit_bias": {}, "seed": null, "prompt_cache_key": "k", "parallel_tool_calls": true,
        });
        let anthropic = to_anthropic(openai);
        assert_eq!(
            anthropic,
            json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "Hello"}],
                "temperature": 0.5, "top_p": 0.9, "stop_sequences": ["END"], "max_tokens": 100, "stream": true,
                "metadata": {"user_id": "u-1"}})
        );
        assert_eq!(
            to_openai(anthropic),
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello"}],
                "temperature": 0.5, "top_p": 0.9, "stop": ["END"], "max_tokens": 100, "stream": true,
                "stream_options": {"include_usage": true}, "user": "u-1"})
        );
    }

    #[test]
    fn plain_text_request_round_trips_from_anthropic() {
        let anthropic = json!({
            "model": "claude-opus-4-1", "max_tokens": 1024, "system": "Be brief.",
            "messages": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello! 👋"},
                {"role": "user", "content": [{"type": "text", "text": "How are you?", "cache_control": {"type": "ephemeral"}}]},
            ],
            "temperature": 0.2, "stop_sequences": ["\n\nHuman:"], "metadata": {"user_id": "abc"},
            "service_tier": "auto", "thinking": {"type": "disabled"}, "stream": false,
        });
        let openai = to_openai(anthropic);
        assert_eq!(
            openai,
            json!({"model": "gpt-4o", "max_tokens": 1024, "temperature": 0.2, "stop": ["\n\nHuman:"],
                "user": "abc", "stream": false, "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello! 👋"},
                    {"role": "user", "content": "How are you?"}]})
        );
        let back = request(OpenAi, Anthropic, &openai, "claude-opus-4-1").unwrap();
        assert_eq!(
            back,
            json!({"model": "claude-opus-4-1", "max_tokens": 1024, "system": "Be brief.", "temperature": 0.2,
                "stop_sequences": ["\n\nHuman:"], "metadata": {"user_id": "abc"}, "stream": false, "messages": [
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello! 👋"},
                    {"role": "user", "content": "How are you?"}]})
        );
    }

    #[test]
    fn max_tokens_prefers_max_completion_tokens_and_defaults_for_anthropic() {
        let base = |extra: Value| {
            let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
            body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            to_anthropic(body)["max_tokens"].clone()
        };
        assert_eq!(base(json!({})), DEFAULT_MAX_TOKENS);
        assert_eq!(base(json!({"max_tokens": null})), DEFAULT_MAX_TOKENS);
        assert_eq!(base(json!({"max_tokens": 7})), 7);
        assert_eq!(base(json!({"max_tokens": 7, "max_completion_tokens": 9})), 9);
        let err = request(OpenAi, Anthropic, &json!({"messages": [], "max_tokens": -1}), "m").unwrap_err();
        assert_eq!(err.field(), "max_tokens");
        // Anthropic bodies without max_tokens are the target's problem; nothing is invented.
        let openai = to_openai(json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}));
        assert!(openai.get("max_tokens").is_none());
        // safety_identifier stands in for user when user is absent.
        let body = json!({"messages": [{"role": "user", "content": "x"}], "safety_identifier": "hash-1"});
        assert_eq!(to_anthropic(body)["metadata"], json!({"user_id": "hash-1"}));
    }

    #[test]
    fn system_prompts_concatenate_in_order_from_openai() {
        let openai = json!({"model": "m", "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}, {"type": "text", "text": "No emoji."}]},
            {"role": "user", "content": "hi"},
            {"role": "system", "content": "Mid-conversation rule."},
            {"role": "assistant", "content": "salut"},
            {"role": "user", "content": "more"},
        ]});
        let anthropic = to_anthropic(openai);
        assert_eq!(anthropic["system"], "You are terse.\n\nAnswer in French.\n\nNo emoji.\n\nMid-conversation rule.");
        assert_eq!(
            anthropic["messages"],
            json!([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "salut"},
                {"role": "user", "content": "more"}])
        );
        // No system message, no system member.
        assert!(to_anthropic(json!({"messages": [{"role": "user", "content": "x"}]})).get("system").is_none());
    }

    #[test]
    fn system_prompts_from_anthropic_become_one_leading_message() {
        let anthropic = json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}],
            "system": [{"type": "text", "text": "Rule one.", "cache_control": {"type": "ephemeral"}},
                       {"type": "text", "text": "Rule two."}]});
        let openai = to_openai(anthropic);
        assert_eq!(
            openai["messages"],
            json!([{"role": "system", "content": "Rule one.\n\nRule two."}, {"role": "user", "content": "hi"}])
        );
        let back = request(OpenAi, Anthropic, &openai, "m").unwrap();
        assert_eq!(back["system"], "Rule one.\n\nRule two.");
    }

    fn openai_tool_conversation() -> Value {
        json!({
            "model": "gpt-4o",
            "messages": [
                {"role": "system", "content": "You are a weather bot."},
                {"role": "user", "content": "Weather in Paris, and the time?"},
                {"role": "assistant", "content": null, "refusal": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{\"tz\":\"Europe/Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "21°C, sunny"},
                {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "14:05"}]},
                {"role": "assistant", "content": "It is 21°C and 14:05.", "tool_calls": [
                    {"id": "call_3", "type": "function", "function": {"name": "get_time", "arguments": ""}}]},
                {"role": "tool", "tool_call_id": "call_3", "content": ""},
                {"role": "user", "content": "Thanks! Tomorrow?"},
            ],
            "tools": [
                {"type": "function", "function": {"name": "get_weather", "description": "Weather by city",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
                    "strict": false}},
                {"type": "function", "function": {"name": "get_time"}},
            ],
            "tool_choice": "required",
            "parallel_tool_calls": false,
        })
    }

    #[test]
    fn tool_conversation_translates_to_anthropic() {
        let anthropic = to_anthropic(openai_tool_conversation());
        let expected = json!({
            "model": "claude-sonnet-4-5", "max_tokens": 4096, "system": "You are a weather bot.",
            "messages": [
                {"role": "user", "content": "Weather in Paris, and the time?"},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "call_2", "name": "get_time", "input": {"tz": "Europe/Paris"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "21°C, sunny"},
                    {"type": "tool_result", "tool_use_id": "call_2", "content": [{"type": "text", "text": "14:05"}]}]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "It is 21°C and 14:05."},
                    {"type": "tool_use", "id": "call_3", "name": "get_time", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_3"}]},
                {"role": "user", "content": "Thanks! Tomorrow?"},
            ],
            "tools": [
                {"name": "get_weather", "description": "Weather by city",
                 "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
                {"name": "get_time", "input_schema": {"type": "object", "properties": {}}},
            ],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
        });
        assert_eq!(anthropic, expected);
    }

    #[test]
    fn tool_conversation_round_trips_back_to_openai() {
        let anthropic = to_anthropic(openai_tool_conversation());
        let openai = to_openai(anthropic);
        let expected = json!({
            "model": "gpt-4o", "max_tokens": 4096,
            "messages": [
                {"role": "system", "content": "You are a weather bot."},
                {"role": "user", "content": "Weather in Paris, and the time?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{\"tz\":\"Europe/Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "21°C, sunny"},
                {"role": "tool", "tool_call_id": "call_2", "content": "14:05"},
                {"role": "assistant", "content": "It is 21°C and 14:05.", "tool_calls": [
                    {"id": "call_3", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "call_3", "content": ""},
                {"role": "user", "content": "Thanks! Tomorrow?"},
            ],
            "tools": [
                {"type": "function", "function": {"name": "get_weather", "description": "Weather by city",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
                {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}},
            ],
            "tool_choice": "required",
            "parallel_tool_calls": false,
        });
        assert_eq!(openai, expected);
        // And once more: a fixed point.
        assert_eq!(to_openai(request(OpenAi, Anthropic, &openai, "claude-sonnet-4-5").unwrap()), expected);
    }

    #[test]
    fn anthropic_tool_conversation_translates_to_openai() {
        let anthropic = json!({
            "model": "claude", "max_tokens": 2048,
            "tools": [{"name": "calc", "description": "Evaluates", "input_schema": {"type": "object",
                "properties": {"expr": {"type": "string"}}}, "cache_control": {"type": "ephemeral"}, "strict": true},
                {"type": "custom", "name": "noop", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "tool", "name": "calc", "disable_parallel_tool_use": true},
            "messages": [
                {"role": "user", "content": "What is 2+2, by the tool?"},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "Use calc.", "signature": "EqQBCgIYAh"},
                    {"type": "redacted_thinking", "data": "EmwKAhgB"},
                    {"type": "text", "text": "Let me compute."},
                    {"type": "tool_use", "id": "toolu_01", "name": "calc", "input": {"expr": "2+2"}}]},
                {"role": "user", "content": [
                    {"type": "text", "text": "Explain briefly."},
                    {"type": "tool_result", "tool_use_id": "toolu_01", "content": [{"type": "text", "text": "4"}],
                     "is_error": false, "cache_control": {"type": "ephemeral"}}]},
            ],
        });
        let openai = to_openai(anthropic);
        let expected = json!({
            "model": "gpt-4o", "max_tokens": 2048,
            "tools": [
                {"type": "function", "function": {"name": "calc", "description": "Evaluates", "strict": true,
                    "parameters": {"type": "object", "properties": {"expr": {"type": "string"}}}}},
                {"type": "function", "function": {"name": "noop", "parameters": {"type": "object"}}}],
            "tool_choice": {"type": "function", "function": {"name": "calc"}},
            "parallel_tool_calls": false,
            "messages": [
                {"role": "user", "content": "What is 2+2, by the tool?"},
                {"role": "assistant", "content": "Let me compute.", "tool_calls": [
                    {"id": "toolu_01", "type": "function", "function": {"name": "calc", "arguments": "{\"expr\":\"2+2\"}"}}]},
                // Tool results first, right after the assistant turn that called the tools.
                {"role": "tool", "tool_call_id": "toolu_01", "content": "4"},
                {"role": "user", "content": "Explain briefly."},
            ],
        });
        assert_eq!(openai, expected);
        let back = request(OpenAi, Anthropic, &openai, "claude").unwrap_err();
        // strict tools do not go to Anthropic.
        assert_eq!(back.field(), "tools[0].function.strict");
    }

    #[test]
    fn blank_text_never_reaches_anthropic() {
        let call = json!({"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}});
        let openai = json!({"messages": [
            {"role": "system", "content": " "},
            {"role": "developer", "content": "Rule."},
            {"role": "user", "content": "  \n"},
            {"role": "user", "content": [{"type": "text", "text": "\n"}, {"type": "text", "text": " Hi "}]},
            {"role": "assistant", "content": "\n\n", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": " "},
            {"role": "user", "content": "ok"},
        ]});
        let anthropic = to_anthropic(openai);
        assert_eq!(anthropic["system"], "Rule.");
        assert_eq!(
            anthropic["messages"],
            json!([
                {"role": "user", "content": [{"type": "text", "text": " Hi "}]},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "c1", "name": "f", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "c1"}]},
                {"role": "user", "content": "ok"},
            ])
        );
        let answer = json!({"id": "x", "model": "m", "choices": [{"index": 0, "finish_reason": "tool_calls",
            "message": {"role": "assistant", "content": "\n\n", "tool_calls": [call]}}]});
        assert_eq!(response(OpenAi, Anthropic, &answer).unwrap()["content"].as_array().unwrap().len(), 1);

        // In a stream, whitespace waits for real text and is dropped if none comes.
        let whitespace_then_call = vec![
            chat(r#"{"role":"assistant","content":""}"#),
            chat(r#"{"content":"\n\n"}"#),
            chat(
                r#"{"tool_calls":[{"index":0,"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]}"#,
            ),
            chat_finish("tool_calls"),
            done(),
        ];
        let message = assert_streams_agree(OpenAi, Anthropic, &whitespace_then_call);
        assert_eq!(message["content"], json!([{"type": "tool_use", "id": "c1", "name": "f", "input": {}}]));
        let whitespace_then_text = vec![
            chat(r#"{"content":"\n"}"#),
            chat(r#"{"content":" "}"#),
            chat(r#"{"content":"Hi"}"#),
            chat_finish("stop"),
            done(),
        ];
        let message = assert_streams_agree(OpenAi, Anthropic, &whitespace_then_text);
        assert_eq!(message["content"], json!([{"type": "text", "text": "\n Hi"}]));
    }

    #[test]
    fn tool_choice_maps_both_ways() {
        let tools = json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]);
        let cases = [
            (json!("auto"), None, json!({"type": "auto"})),
            (json!("required"), None, json!({"type": "any"})),
            (json!("none"), None, json!({"type": "none"})),
            (json!({"type": "function", "function": {"name": "f"}}), None, json!({"type": "tool", "name": "f"})),
            (json!("auto"), Some(false), json!({"type": "auto", "disable_parallel_tool_use": true})),
            (Value::Null, Some(false), json!({"type": "auto", "disable_parallel_tool_use": true})),
            (json!("required"), Some(false), json!({"type": "any", "disable_parallel_tool_use": true})),
            (
                json!({"type": "function", "function": {"name": "f"}}),
                Some(false),
                json!({"type": "tool", "name": "f", "disable_parallel_tool_use": true}),
            ),
        ];
        for (choice, parallel, expected) in cases {
            let mut body =
                json!({"messages": [{"role": "user", "content": "x"}], "tools": tools, "tool_choice": choice});
            if let Some(parallel) = parallel {
                body["parallel_tool_calls"] = parallel.into();
            }
            let anthropic = to_anthropic(body);
            assert_eq!(anthropic["tool_choice"], expected, "{choice} {parallel:?}");
            let openai = to_openai(anthropic);
            if !choice.is_null() {
                assert_eq!(openai["tool_choice"], choice);
            }
            assert_eq!(openai.get("parallel_tool_calls").cloned(), parallel.filter(|p| !p).map(Value::from));
        }
        // `none` takes no option on Anthropic's side; without tools parallelism means nothing.
        let body = json!({"messages": [{"role": "user", "content": "x"}], "tools": tools, "tool_choice": "none",
            "parallel_tool_calls": false});
        assert_eq!(to_anthropic(body)["tool_choice"], json!({"type": "none"}));
        let body = json!({"messages": [{"role": "user", "content": "x"}], "parallel_tool_calls": false});
        assert!(to_anthropic(body).get("tool_choice").is_none());
        let body = json!({"max_tokens": 1, "messages": [{"role": "user", "content": "x"}],
            "tool_choice": {"type": "auto", "disable_parallel_tool_use": true}});
        assert_eq!(to_openai(body).get("parallel_tool_calls"), None);
    }

    #[test]
    fn images_translate_both_ways() {
        let openai = json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is in these?"},
            {"type": "image_url", "image_url": {"url": "data:image/PNG;base64,iVBORw0KGgo="}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "high"}},
            {"type": "text", "text": ""},
        ]}]});
        let anthropic = to_anthropic(openai);
        assert_eq!(
            anthropic["messages"][0]["content"],
            json!([
                {"type": "text", "text": "What is in these?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
            ])
        );
        let openai = to_openai(anthropic);
        assert_eq!(
            openai["messages"][0]["content"],
            json!([
                {"type": "text", "text": "What is in these?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
            ])
        );
        let image_only = json!({"max_tokens": 9, "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/webp", "data": "UklGR"}}]}]});
        assert_eq!(
            to_openai(image_only)["messages"][0]["content"],
            json!([{"type": "image_url", "image_url": {"url": "data:image/webp;base64,UklGR"}}])
        );
    }

    fn with(base: &Value, extra: Value) -> Value {
        let mut body = base.clone();
        for (key, value) in extra.as_object().unwrap() {
            body[key] = value.clone();
        }
        body
    }

    #[test]
    fn every_untranslatable_openai_field_is_named() {
        let base = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        let user = |content: Value| json!({"messages": [{"role": "user", "content": content}]});
        let cases = [
            (json!({"n": 2}), "n"),
            (json!({"logprobs": true}), "logprobs"),
            (json!({"top_logprobs": 3}), "top_logprobs"),
            (json!({"response_format": {"type": "json_object"}}), "response_format"),
            (
                json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}}),
                "response_format",
            ),
            (json!({"audio": {"voice": "alloy", "format": "wav"}}), "audio"),
            (json!({"modalities": ["text", "audio"]}), "modalities"),
            (json!({"prediction": {"type": "content", "content": "x"}}), "prediction"),
            (json!({"seed": 42}), "seed"),
            (json!({"logit_bias": {"50256": -100}}), "logit_bias"),
            (json!({"presence_penalty": 0.5}), "presence_penalty"),
            (json!({"frequency_penalty": -1}), "frequency_penalty"),
            (json!({"web_search_options": {}}), "web_search_options"),
            (json!({"reasoning_effort": "low"}), "reasoning_effort"),
            (json!({"verbosity": "low"}), "verbosity"),
            (json!({"temperature": 1.5}), "temperature"),
            (json!({"stop": "\n"}), "stop"),
            (json!({"stop": ["END", " \t"]}), "stop[1]"),
            (json!({"functions": [{"name": "f"}]}), "functions"),
            (json!({"function_call": "auto"}), "function_call"),
            (json!({"a_future_field": 1}), "a_future_field"),
            (
                json!({"tools": [{"type": "function", "function": {"name": "f", "strict": true}}]}),
                "tools[0].function.strict",
            ),
            (json!({"tools": [{"type": "custom", "custom": {"name": "f"}}]}), "tools[0].type"),
            (json!({"tools": [{"type": "function", "function": {"name": "f", "x": 1}}]}), "tools[0].function.x"),
            (json!({"tool_choice": {"type": "allowed_tools", "allowed_tools": {}}}), "tool_choice.type"),
            (json!({"messages": [{"role": "user", "content": "hi", "name": "bob"}]}), "messages[0].name"),
            (
                json!({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "pre"}]}),
                "messages[1]",
            ),
            (json!({"messages": [{"role": "function", "name": null, "content": "x"}]}), "messages[0].role"),
            (json!({"messages": [{"role": "assistant", "audio": {"id": "a"}}]}), "messages[0].audio"),
            (
                user(json!([{"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}}])),
                "messages[0].content[0].type",
            ),
            (user(json!([{"type": "file", "file": {"file_id": "f"}}])), "messages[0].content[0].type"),
            (
                user(json!([{"type": "image_url", "image_url": {"url": "data:image/svg+xml;base64,PHN2Zz4="}}])),
                "messages[0].content[0].image_url.url",
            ),
            (
                user(json!([{"type": "image_url", "image_url": {"url": "data:image/png,rawbytes"}}])),
                "messages[0].content[0].image_url.url",
            ),
            (
                json!({"messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://x"}}]}]}),
                "messages[0].content[0].type",
            ),
            (
                json!({"messages": [{"role": "assistant", "content": null, "tool_calls": [
                {"id": "c", "type": "custom", "custom": {"name": "f", "input": "x"}}]}, {"role": "user", "content": "x"}]}),
                "messages[0].tool_calls[0].type",
            ),
        ];
        for (extra, field) in cases {
            let body = with(&base, extra.clone());
            let err = request(OpenAi, Anthropic, &body, "claude").unwrap_err();
            assert_eq!(err.field(), field, "{extra}");
            assert!(err.to_string().contains(&format!("`{field}`")), "{err}");
            assert!(matches!(err, Untranslatable::Field { to: "Anthropic", .. }), "{err:?}");
        }
    }

    #[test]
    fn every_untranslatable_anthropic_field_is_named() {
        let base = json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
        let user = |content: Value| json!({"messages": [{"role": "user", "content": content}]});
        let cases = [
            (json!({"top_k": 5}), "top_k"),
            (json!({"thinking": {"type": "enabled", "budget_tokens": 1024}}), "thinking"),
            (json!({"container": "container_1"}), "container"),
            (json!({"mcp_servers": [{"type": "url", "url": "https://mcp", "name": "x"}]}), "mcp_servers"),
            (json!({"context_management": {"edits": []}}), "context_management"),
            (json!({"tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 3}]}), "tools[0].type"),
            (json!({"tools": [{"type": "bash_20250124", "name": "bash"}]}), "tools[0].type"),
            (json!({"tools": [{"name": "x", "input_schema": {}, "input_examples": [{}]}]}), "tools[0].input_examples"),
            (
                user(
                    json!([{"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}}]),
                ),
                "messages[0].content[0].type",
            ),
            (
                user(json!([{"type": "search_result", "source": "s", "title": "t", "content": []}])),
                "messages[0].content[0].type",
            ),
            (
                user(json!([{"type": "tool_result", "tool_use_id": "t", "content": "boom", "is_error": true}])),
                "messages[0].content[0].is_error",
            ),
            (
                user(json!([{"type": "tool_result", "tool_use_id": "t", "content": [
                {"type": "image", "source": {"type": "url", "url": "https://x"}}]}])),
                "messages[0].content[0].content[0].type",
            ),
            (
                user(json!([{"type": "image", "source": {"type": "file", "file_id": "file_1"}}])),
                "messages[0].content[0].source.type",
            ),
            (
                json!({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": [
                {"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}}]}, {"role": "user", "content": "x"}]}),
                "messages[1].content[0].type",
            ),
            (
                json!({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "{\"a\":"}]}),
                "messages[1]",
            ),
            (json!({"system": [{"type": "image", "source": {}}]}), "system[0].type"),
            (json!({"messages": [{"role": "user", "content": "q", "extra": 1}]}), "messages[0].extra"),
        ];
        for (extra, field) in cases {
            let body = with(&base, extra.clone());
            let err = request(Anthropic, OpenAi, &body, "gpt").unwrap_err();
            assert_eq!(err.field(), field, "{extra}");
            assert!(err.to_string().contains(&format!("`{field}`")), "{err}");
            assert!(matches!(err, Untranslatable::Field { to: "OpenAI", .. }), "{err:?}");
        }
    }

    #[test]
    fn malformed_requests_name_their_field() {
        let cases = [
            (OpenAi, json!([]), "body"),
            (OpenAi, json!({"model": "m"}), "messages"),
            (OpenAi, json!({"messages": [{"role": "user"}]}), "messages[0].content"),
            (OpenAi, json!({"messages": [{"content": "x"}]}), "messages[0].role"),
            (OpenAi, json!({"messages": [{"role": "wizard", "content": "x"}]}), "messages[0].role"),
            (OpenAi, json!({"messages": [], "temperature": "hot"}), "temperature"),
            (OpenAi, json!({"messages": [], "stop": [1]}), "stop[0]"),
            (
                OpenAi,
                json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
                "function": {"name": "f", "arguments": "{\"city\": "}}]}, {"role": "user", "content": "x"}]}),
                "messages[0].tool_calls[0].function.arguments",
            ),
            (
                OpenAi,
                json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
                "function": {"name": "f", "arguments": "[1]"}}]}, {"role": "user", "content": "x"}]}),
                "messages[0].tool_calls[0].function.arguments",
            ),
            (OpenAi, json!({"messages": [{"role": "tool", "content": "x"}]}), "messages[0].tool_call_id"),
            (
                OpenAi,
                json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}]}]}),
                "messages[0].content[0].image_url.url",
            ),
            (Anthropic, json!({"messages": [{"role": "user", "content": 5}]}), "messages[0].content"),
            (
                Anthropic,
                json!({"messages": [{"role": "user", "content": [{"type": "tool_result"}]}]}),
                "messages[0].content[0].tool_use_id",
            ),
            (Anthropic, json!({"messages": [], "tool_choice": {"type": "sometimes"}}), "tool_choice.type"),
            (Anthropic, json!({"messages": [], "stream": "yes"}), "stream"),
            (Anthropic, json!({"messages": [], "tools": [{"name": "f"}]}), "tools[0].input_schema"),
        ];
        for (from, body, field) in cases {
            let to = if from == OpenAi { Anthropic } else { OpenAi };
            let err = request(from, to, &body, "m").unwrap_err();
            assert_eq!(err.field(), field, "{body}");
        }
    }

    #[test]
    fn same_dialect_is_the_identity() {
        let body = openai_tool_conversation();
        let mut expected = body.clone();
        expected["model"] = "gpt-4.1".into();
        assert_eq!(request(OpenAi, OpenAi, &body, "gpt-4.1").unwrap(), expected);
        assert_eq!(response(Anthropic, Anthropic, &anthropic_answer()).unwrap(), anthropic_answer());
        let mut translator = StreamTranslator::new(Anthropic, Anthropic);
        let upstream = anthropic_stream();
        let emitted: Vec<Bytes> = upstream.iter().flat_map(|raw| translator.push(&parse_event(raw)).unwrap()).collect();
        assert!(translator.finished());
        assert_eq!(assemble(Anthropic, &emitted), assemble(Anthropic, &upstream));
        assert!(emitted.iter().all(|event| event.starts_with(b"event: ")));
    }

    // --- Answers -----------------------------------------------------------------------------

    fn anthropic_answer() -> Value {
        json!({
            "id": "msg_01A", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
            "content": [
                {"type": "thinking", "thinking": "Plan: call the tool.", "signature": "sig=="},
                {"type": "redacted_thinking", "data": "EmwKAhgB"},
                {"type": "text", "text": "Looking that up. ", "citations": null},
                {"type": "text", "text": "One moment."},
                {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris", "days": [1, 2]}},
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 100, "cache_creation_input_tokens": 20, "cache_read_input_tokens": 1000,
                "output_tokens": 50, "service_tier": "standard"},
        })
    }

    fn without_created(mut body: Value) -> Value {
        let created = body.as_object_mut().unwrap().remove("created").unwrap();
        assert!(created.as_u64().unwrap() > 1_700_000_000);
        body
    }

    #[test]
    fn anthropic_answer_becomes_a_chat_completion() {
        let openai = without_created(response(Anthropic, OpenAi, &anthropic_answer()).unwrap());
        let expected = json!({
            "id": "msg_01A", "object": "chat.completion", "model": "claude-sonnet-4-5-20250929",
            "choices": [{"index": 0, "logprobs": null, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": "Looking that up. One moment.", "reasoning_content": "Plan: call the tool.",
                "tool_calls": [{"id": "toolu_01", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\",\"days\":[1,2]}"}}]}}],
            "usage": {"prompt_tokens": 1120, "completion_tokens": 50, "total_tokens": 1170,
                "prompt_tokens_details": {"cached_tokens": 1000}},
        });
        assert_eq!(openai, expected);

        let text_only = json!({"id": "msg_2", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
            "content": [{"type": "text", "text": "Hi."}], "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": 3, "output_tokens": 2}});
        let openai = without_created(response(Anthropic, OpenAi, &text_only).unwrap());
        assert_eq!(
            openai,
            json!({"id": "msg_2", "object": "chat.completion", "model": "claude-haiku-4-5",
                "choices": [{"index": 0, "logprobs": null, "finish_reason": "stop",
                    "message": {"role": "assistant", "content": "Hi."}}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})
        );
        let tools_only =
            json!({"type": "message", "content": [{"type": "tool_use", "id": "t", "name": "n", "input": {}}]});
        let message = &response(Anthropic, OpenAi, &tools_only).unwrap()["choices"][0]["message"];
        assert_eq!(message["content"], Value::Null);
        assert_eq!(message["tool_calls"][0]["function"]["arguments"], "{}");
    }

    #[test]
    fn stop_reasons_map_both_ways() {
        for (stop, finish) in [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("pause_turn", "stop"),
            ("max_tokens", "length"),
            ("model_context_window_exceeded", "length"),
            ("tool_use", "tool_calls"),
            ("refusal", "content_filter"),
            ("a_new_reason", "stop"),
        ] {
            let body = json!({"type": "message", "content": [], "stop_reason": stop});
            assert_eq!(response(Anthropic, OpenAi, &body).unwrap()["choices"][0]["finish_reason"], finish, "{stop}");
        }
        let body = json!({"type": "message", "content": [], "stop_reason": null});
        assert_eq!(response(Anthropic, OpenAi, &body).unwrap()["choices"][0]["finish_reason"], Value::Null);

        let answer = |choice: Value| {
            let body = json!({"id": "c", "model": "m", "choices": [choice]});
            let message = response(OpenAi, Anthropic, &body).unwrap();
            (message["stop_reason"].clone(), message["stop_sequence"].clone())
        };
        let text = json!({"role": "assistant", "content": "x"});
        let call = json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]});
        let refusal = json!({"role": "assistant", "content": null, "refusal": "I can't help with that."});
        for (message, finish, extra, reason, sequence) in [
            (&text, json!("stop"), Value::Null, json!("end_turn"), Value::Null),
            (&text, json!("length"), Value::Null, json!("max_tokens"), Value::Null),
            (&call, json!("tool_calls"), Value::Null, json!("tool_use"), Value::Null),
            // Older Ollama ends tool calls with "stop".
            (&call, json!("stop"), Value::Null, json!("tool_use"), Value::Null),
            (&text, json!("content_filter"), Value::Null, json!("refusal"), Value::Null),
            (&refusal, json!("stop"), Value::Null, json!("refusal"), Value::Null),
            // vLLM names the stop string it hit.
            (&text, json!("stop"), json!("<|end|>"), json!("stop_sequence"), json!("<|end|>")),
            (&text, json!("stop"), json!(128001), json!("end_turn"), Value::Null),
            (&text, Value::Null, Value::Null, Value::Null, Value::Null),
        ] {
            let choice = json!({"index": 0, "message": message, "finish_reason": finish, "stop_reason": extra});
            assert_eq!(answer(choice), (reason.clone(), sequence), "{message} {finish} {extra}");
        }
    }

    fn openai_answer() -> Value {
        json!({
            "id": "chatcmpl-BQx9", "object": "chat.completion", "created": 1745836200, "model": "deepseek-reasoner",
            "system_fingerprint": "fp_1",
            "choices": [{"index": 0, "logprobs": null, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": "Checking.", "reasoning_content": "The user wants weather.",
                "refusal": null, "annotations": [], "tool_calls": [
                    {"id": "call_a", "type": "function", "function": {"name": "search", "arguments": "{\"q\":\"rust sse\",\"limit\":0.5}"}},
                    {"id": "call_b", "type": "function", "function": {"name": "noop", "arguments": ""}}]}}],
            "usage": {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150,
                "prompt_tokens_details": {"cached_tokens": 100, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 12}},
        })
    }

    #[test]
    fn chat_completion_becomes_an_anthropic_message() {
        let message = response(OpenAi, Anthropic, &openai_answer()).unwrap();
        let expected = json!({
            "id": "chatcmpl-BQx9", "type": "message", "role": "assistant", "model": "deepseek-reasoner",
            "content": [
                {"type": "thinking", "thinking": "The user wants weather.", "signature": ""},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "call_a", "name": "search", "input": {"q": "rust sse", "limit": 0.5}},
                {"type": "tool_use", "id": "call_b", "name": "noop", "input": {}},
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 20, "output_tokens": 30, "cache_read_input_tokens": 100},
        });
        assert_eq!(message, expected);
        // Usage survives the trip back, cache reads included.
        let openai = response(Anthropic, OpenAi, &message).unwrap();
        assert_eq!(
            openai["usage"],
            json!({"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150,
                "prompt_tokens_details": {"cached_tokens": 100}})
        );
        assert_eq!(
            openai["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
            "{\"limit\":0.5,\"q\":\"rust sse\"}"
        );

        // OpenRouter's `reasoning`; no usage at all (some local servers).
        let body = json!({"id": "gen-1", "model": "o4-mini", "choices": [{"index": 0, "finish_reason": "stop",
            "message": {"role": "assistant", "content": "Hi!", "reasoning": "Think."}}]});
        assert_eq!(
            response(OpenAi, Anthropic, &body).unwrap(),
            json!({"id": "gen-1", "type": "message", "role": "assistant", "model": "o4-mini",
                "content": [{"type": "thinking", "thinking": "Think.", "signature": ""}, {"type": "text", "text": "Hi!"}],
                "stop_reason": "end_turn", "stop_sequence": null, "usage": {"input_tokens": 0, "output_tokens": 0}})
        );
    }

    #[test]
    fn answers_that_cannot_be_carried_back_name_their_field() {
        let mut two = openai_answer();
        two["choices"] = json!([two["choices"][0], two["choices"][0]]);
        let err = response(OpenAi, Anthropic, &two).unwrap_err();
        assert_eq!(err.field(), "choices");
        assert!(matches!(err, Untranslatable::Field { .. }));
        let mut bad = openai_answer();
        bad["choices"][0]["message"]["tool_calls"][1]["function"]["arguments"] = "{\"q\":".into();
        assert_eq!(
            response(OpenAi, Anthropic, &bad).unwrap_err().field(),
            "choices[0].message.tool_calls[1].function.arguments"
        );
        for (body, field) in [
            (json!({"choices": []}), "choices"),
            (json!({"choices": [{"message": 1}]}), "choices[0].message"),
            (json!({"error": {"message": "x"}}), "choices"),
        ] {
            assert_eq!(response(OpenAi, Anthropic, &body).unwrap_err().field(), field, "{body}");
        }
        let mut server_tool = anthropic_answer();
        server_tool["content"][1] = json!({"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}});
        assert_eq!(response(Anthropic, OpenAi, &server_tool).unwrap_err().field(), "content[1].type");
        let error = json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
        assert_eq!(response(Anthropic, OpenAi, &error).unwrap_err().field(), "type");
    }

    // --- Streams -----------------------------------------------------------------------------

    fn kind(dialect: Dialect) -> StreamKind {
        match dialect {
            OpenAi => StreamKind::ChatCompletions,
            Anthropic => StreamKind::Messages,
        }
    }

    fn assemble(dialect: Dialect, events: &[Bytes]) -> Value {
        serde_json::from_slice(&convert::stream_to_json(kind(dialect), events).unwrap()).unwrap()
    }

    fn translate(from: Dialect, to: Dialect, upstream: &[Bytes]) -> (Vec<Bytes>, StreamTranslator) {
        let mut translator = StreamTranslator::new(from, to);
        // Through the splitter, as the proxy receives them.
        let mut splitter = SseSplitter::new();
        let raw = splitter.push(&upstream.concat());
        assert_eq!(raw.len(), upstream.len());
        let mut emitted = Vec::new();
        for event in &raw {
            emitted.extend(translator.push(&parse_event(event)).unwrap());
        }
        (emitted, translator)
    }

    /// What the client's SDK insists on: intact framing, one terminal event, last; Anthropic
    /// events name their type on an `event:` line; OpenAI chunks are chunks.
    fn assert_valid_client_stream(to: Dialect, events: &[Bytes]) {
        let mut splitter = SseSplitter::new();
        assert_eq!(splitter.push(&events.concat()), events, "framing");
        let parsed: Vec<SseEvent> = events.iter().map(|e| parse_event(e)).collect();
        let (last, body) = parsed.split_last().unwrap();
        assert!(sse::is_terminal(kind(to), last), "last event {last:?}");
        for event in body {
            assert!(!sse::is_terminal(kind(to), event) && !sse::is_error_event(kind(to), event), "{event:?}");
            let data: Value = serde_json::from_str(&event.data).unwrap();
            match to {
                OpenAi => assert_eq!(data["object"], "chat.completion.chunk", "{data}"),
                Anthropic => assert_eq!(event.event.as_deref(), data["type"].as_str(), "{event:?}"),
            }
        }
        if to == Anthropic {
            assert_eq!(last.event.as_deref(), Some("message_stop"));
        }
    }

    /// Drops what legitimately differs between two translations of one answer: OpenAI's
    /// `created` (the clock), the spelling of tool arguments (the stream passes upstream's text
    /// on, the JSON translation serializes the parsed input), and "" versus null content.
    fn comparable(dialect: Dialect, mut body: Value) -> Value {
        if dialect == OpenAi {
            body.as_object_mut().unwrap().remove("created");
            let message = &mut body["choices"][0]["message"];
            if message["content"] == "" {
                message["content"] = Value::Null;
            }
            if let Some(calls) = message.get_mut("tool_calls").and_then(Value::as_array_mut) {
                for call in calls {
                    let arguments = call["function"]["arguments"].as_str().unwrap().to_owned();
                    call["function"]["arguments"] = serde_json::from_str(&arguments).unwrap_or(json!({}));
                }
            }
        }
        body
    }

    /// The key property: the client assembles from the translated stream exactly what the JSON
    /// translation of the assembled upstream stream gives.
    fn assert_streams_agree(from: Dialect, to: Dialect, upstream: &[Bytes]) -> Value {
        let (emitted, translator) = translate(from, to, upstream);
        assert!(translator.finished());
        assert_valid_client_stream(to, &emitted);
        let streamed = assemble(to, &emitted);
        let direct = response(from, to, &assemble(from, upstream)).unwrap();
        assert_eq!(comparable(to, streamed.clone()), comparable(to, direct), "emitted: {emitted:?}");
        streamed
    }

    const CHAT_HEAD: &str = r#""id":"chatcmpl-BQx7Wb1hGzD2vC3kq6ud0fG0pHl7p","object":"chat.completion.chunk","created":1745836018,"model":"gpt-4o-2024-08-06","service_tier":"default","system_fingerprint":"fp_f5bdcc3276""#;

    fn chat(delta: &str) -> Bytes {
        let choice = format!(r#"{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":null}}"#);
        data(&format!(r#"{{{CHAT_HEAD},"choices":[{choice}],"usage":null,"obfuscation":"x1Yz"}}"#))
    }

    fn chat_finish(reason: &str) -> Bytes {
        data(&format!(
            r#"{{{CHAT_HEAD},"choices":[{{"index":0,"delta":{{}},"logprobs":null,"finish_reason":"{reason}"}}],"usage":null}}"#
        ))
    }

    fn chat_usage(prompt: u64, completion: u64, cached: u64) -> Bytes {
        data(&format!(
            r#"{{{CHAT_HEAD},"choices":[],"usage":{{"prompt_tokens":{prompt},"completion_tokens":{completion},"total_tokens":{},"prompt_tokens_details":{{"cached_tokens":{cached},"audio_tokens":0}}}}}}"#,
            prompt + completion
        ))
    }

    fn chat_text_stream() -> Vec<Bytes> {
        vec![
            chat(r#"{"role":"assistant","content":"","refusal":null}"#),
            chat(r#"{"content":"Hello"}"#),
            chat(r#"{"content":" there, "}"#),
            chat(r#"{"content":"how can I help? ☀️"}"#),
            chat_finish("stop"),
            chat_usage(19, 10, 0),
            done(),
        ]
    }

    fn chat_tool_stream() -> Vec<Bytes> {
        vec![
            chat(
                r#"{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_PJIcZ3GwiEEa8mnTd4QWqmzW","type":"function","function":{"name":"get_weather","arguments":""}}],"refusal":null}"#,
            ),
            chat(r#"{"tool_calls":[{"index":0,"function":{"arguments":"{\"lo"}}]}"#),
            chat(r#"{"tool_calls":[{"index":0,"function":{"arguments":"cation\": \"Par"}}]}"#),
            chat(r#"{"tool_calls":[{"index":0,"function":{"arguments":"is, France\"}"}}]}"#),
            chat(
                r#"{"tool_calls":[{"index":1,"id":"call_3x3EnTqc8Yj0IbHt0PmHhBKk","type":"function","function":{"name":"get_time","arguments":""}}]}"#,
            ),
            chat(r#"{"tool_calls":[{"index":1,"function":{"arguments":"{\"timezone\": \"Europe/Paris\"}"}}]}"#),
            chat_finish("tool_calls"),
            chat_usage(85, 48, 64),
            done(),
        ]
    }

    fn deepseek_stream() -> Vec<Bytes> {
        let head =
            r#""id":"6a2b1c8e","object":"chat.completion.chunk","created":1738400000,"model":"deepseek-reasoner""#;
        let chunk = |delta: &str, finish: &str, usage: &str| {
            let choice = format!(r#"{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":{finish}}}"#);
            data(&format!(r#"{{{head},"choices":[{choice}]{usage}}}"#))
        };
        vec![
            chunk(r#"{"role":"assistant","content":null,"reasoning_content":""}"#, "null", ""),
            Bytes::from_static(b": keep-alive\n\n"),
            chunk(r#"{"content":null,"reasoning_content":"The user asks 2+2."}"#, "null", ""),
            chunk(r#"{"content":null,"reasoning_content":" That is 4."}"#, "null", ""),
            chunk(r#"{"content":"2 + 2 = ","reasoning_content":null}"#, "null", ""),
            chunk(r#"{"content":"**4**.","reasoning_content":null}"#, "null", ""),
            chunk(
                r#"{"content":"","reasoning_content":null}"#,
                r#""stop""#,
                r#","usage":{"prompt_tokens":12,"completion_tokens":30,"total_tokens":42,"prompt_cache_hit_tokens":0}"#,
            ),
            done(),
        ]
    }

    /// Ollama sends each tool call whole, no usage chunk, and (older versions) "stop".
    fn ollama_stream() -> Vec<Bytes> {
        let head = r#""id":"chatcmpl-123","object":"chat.completion.chunk","created":1740000000,"model":"llama3.2","system_fingerprint":"fp_ollama""#;
        vec![
            data(&format!(
                r#"{{{head},"choices":[{{"index":0,"delta":{{"role":"assistant","content":"","tool_calls":[{{"id":"call_x1","index":0,"type":"function","function":{{"name":"get_weather","arguments":"{{\"city\":\"Toronto\"}}"}}}}]}},"finish_reason":null}}]}}"#
            )),
            data(&format!(
                r#"{{{head},"choices":[{{"index":0,"delta":{{"role":"assistant","content":""}},"finish_reason":"stop"}}]}}"#
            )),
            done(),
        ]
    }

    fn vllm_stop_string_stream() -> Vec<Bytes> {
        let head = r#""id":"chatcmpl-v1","object":"chat.completion.chunk","created":1,"model":"Qwen/Qwen3-8B""#;
        vec![
            data(&format!(r#"{{{head},"choices":[{{"index":0,"delta":{{"role":"assistant","content":""}}}}]}}"#)),
            data(&format!(
                r#"{{{head},"choices":[{{"index":0,"delta":{{"reasoning_content":"Count."}},"finish_reason":null}}]}}"#
            )),
            data(&format!(
                r#"{{{head},"choices":[{{"index":0,"delta":{{"content":"one two"}},"finish_reason":null}}]}}"#
            )),
            data(&format!(
                r#"{{{head},"choices":[{{"index":0,"delta":{{"content":""}},"finish_reason":"stop","stop_reason":"<|end|>"}}],"usage":{{"prompt_tokens":5,"completion_tokens":4,"total_tokens":9}}}}"#
            )),
            done(),
        ]
    }

    fn text_then_tool_stream() -> Vec<Bytes> {
        vec![
            chat(r#"{"role":"assistant","content":""}"#),
            chat(r#"{"content":"Let me check."}"#),
            chat(
                r#"{"tool_calls":[{"index":0,"id":"call_9","type":"function","function":{"name":"lookup","arguments":""}}]}"#,
            ),
            chat(
                r#"{"tool_calls":[{"index":0,"function":{"arguments":"{\"ids\": [1, 2], \"deep\": {\"x\": null}}"}}]}"#,
            ),
            chat_finish("tool_calls"),
            chat_usage(7, 8, 0),
            done(),
        ]
    }

    fn refusal_stream() -> Vec<Bytes> {
        vec![
            chat(r#"{"role":"assistant","content":null,"refusal":""}"#),
            chat(r#"{"refusal":"I can't help "}"#),
            chat(r#"{"refusal":"with that."}"#),
            chat_finish("stop"),
            chat_usage(9, 5, 0),
            done(),
        ]
    }

    fn openai_upstreams() -> Vec<(&'static str, Vec<Bytes>)> {
        vec![
            ("text", chat_text_stream()),
            ("tools", chat_tool_stream()),
            ("deepseek", deepseek_stream()),
            ("ollama", ollama_stream()),
            ("vllm", vllm_stop_string_stream()),
            ("text+tool", text_then_tool_stream()),
            ("refusal", refusal_stream()),
        ]
    }

    #[test]
    fn openai_streams_assemble_as_their_translated_answers() {
        for (name, upstream) in openai_upstreams() {
            let message = assert_streams_agree(OpenAi, Anthropic, &upstream);
            assert_eq!(message["type"], "message", "{name}");
        }
        let message = assert_streams_agree(OpenAi, Anthropic, &chat_tool_stream());
        assert_eq!(
            message,
            json!({
                "id": "chatcmpl-BQx7Wb1hGzD2vC3kq6ud0fG0pHl7p", "type": "message", "role": "assistant",
                "model": "gpt-4o-2024-08-06", "stop_reason": "tool_use", "stop_sequence": null,
                "content": [
                    {"type": "tool_use", "id": "call_PJIcZ3GwiEEa8mnTd4QWqmzW", "name": "get_weather",
                     "input": {"location": "Paris, France"}},
                    {"type": "tool_use", "id": "call_3x3EnTqc8Yj0IbHt0PmHhBKk", "name": "get_time",
                     "input": {"timezone": "Europe/Paris"}},
                ],
                "usage": {"input_tokens": 21, "output_tokens": 48, "cache_read_input_tokens": 64},
            })
        );
        let message = assert_streams_agree(OpenAi, Anthropic, &deepseek_stream());
        assert_eq!(
            message["content"],
            json!([{"type": "thinking", "thinking": "The user asks 2+2. That is 4.", "signature": ""},
                {"type": "text", "text": "2 + 2 = **4**."}])
        );
        assert_eq!(message["usage"], json!({"input_tokens": 12, "output_tokens": 30}));
        let message = assert_streams_agree(OpenAi, Anthropic, &ollama_stream());
        assert_eq!(message["stop_reason"], "tool_use");
        assert_eq!(message["content"][0]["input"], json!({"city": "Toronto"}));
        let message = assert_streams_agree(OpenAi, Anthropic, &vllm_stop_string_stream());
        assert_eq!((&message["stop_reason"], &message["stop_sequence"]), (&json!("stop_sequence"), &json!("<|end|>")));
        let message = assert_streams_agree(OpenAi, Anthropic, &refusal_stream());
        assert_eq!(message["stop_reason"], "refusal");
        assert_eq!(message["content"], json!([{"type": "text", "text": "I can't help with that."}]));
    }

    #[test]
    fn openai_stream_becomes_anthropic_events_in_order_and_at_once() {
        let upstream = chat_text_stream();
        let mut translator = StreamTranslator::new(OpenAi, Anthropic);
        let mut per_event = Vec::new();
        for raw in &upstream {
            let out = translator.push(&parse_event(raw)).unwrap();
            per_event.push(out.iter().map(|e| parse_event(e).event.unwrap()).collect::<Vec<_>>());
        }
        let expected: [&[&str]; 7] = [
            &["message_start"], // first bytes right away, before any text
            &["content_block_start", "content_block_delta"],
            &["content_block_delta"],
            &["content_block_delta"],
            &["content_block_stop"],
            &["message_delta"],
            &["message_stop"],
        ];
        assert_eq!(per_event, expected);
        assert!(translator.finished());
        // Events after the end are ignored.
        assert!(translator.push(&parse_event(&chat(r#"{"content":"late"}"#))).unwrap().is_empty());

        // Tool calls: one block per call, its arguments as input_json_delta fragments.
        let (emitted, _) = translate(OpenAi, Anthropic, &chat_tool_stream());
        let parsed: Vec<Value> = emitted.iter().map(|e| serde_json::from_str(&parse_event(e).data).unwrap()).collect();
        let fragments: Vec<&str> = parsed
            .iter()
            .filter(|e| e["delta"]["type"] == "input_json_delta")
            .map(|e| e["delta"]["partial_json"].as_str().unwrap())
            .collect();
        assert_eq!(fragments, ["{\"lo", "cation\": \"Par", "is, France\"}", "{\"timezone\": \"Europe/Paris\"}"]);
        let starts: Vec<&Value> =
            parsed.iter().filter(|e| e["type"] == "content_block_start").map(|e| &e["index"]).collect();
        assert_eq!(starts, [&json!(0), &json!(1)]);
        let delta = parsed.iter().find(|e| e["type"] == "message_delta").unwrap();
        assert_eq!(
            delta,
            &json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
                "usage": {"input_tokens": 21, "output_tokens": 48, "cache_read_input_tokens": 64}})
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

    /// A gateway that dropped the `event:` lines; text only; cache usage; a stop sequence.
    fn anthropic_text_stream() -> Vec<Bytes> {
        [
            r#"{"type":"message_start","message":{"id":"msg_2","type":"message","role":"assistant","model":"claude-haiku-4-5","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":10,"cache_creation_input_tokens":5,"cache_read_input_tokens":2000,"output_tokens":1}}}"#,
            r#"{"type":"ping"}"#,
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":"","citations":null}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Bonjour"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" 🌍\nligne 2"}}"#,
            r#"{"type":"content_block_stop","index":0}"#,
            r#"{"type":"message_delta","delta":{"stop_reason":"stop_sequence","stop_sequence":"END"},"usage":{"output_tokens":7}}"#,
            r#"{"type":"message_stop"}"#,
        ]
        .into_iter()
        .map(data)
        .collect()
    }

    /// Two tool calls (one without arguments, one with its input given at the start), redacted
    /// thinking, the output limit reached.
    fn anthropic_tools_stream() -> Vec<Bytes> {
        [
            r#"{"type":"message_start","message":{"id":"msg_3","type":"message","role":"assistant","model":"claude-opus-4-1","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":50,"output_tokens":1}}}"#,
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"redacted_thinking","data":"EmwKAhgB"}}"#,
            r#"{"type":"content_block_stop","index":0}"#,
            r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_a","name":"now","input":{}}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}"#,
            r#"{"type":"content_block_stop","index":1}"#,
            r#"{"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_b","name":"echo","input":{"said":"hi"}}}"#,
            r#"{"type":"content_block_stop","index":2}"#,
            r#"{"type":"message_delta","delta":{"stop_reason":"max_tokens","stop_sequence":null},"usage":{"input_tokens":50,"output_tokens":64}}"#,
            r#"{"type":"message_stop"}"#,
        ]
        .into_iter()
        .map(|json| named(serde_json::from_str::<Value>(json).unwrap()["type"].as_str().unwrap(), json))
        .collect()
    }

    #[test]
    fn anthropic_streams_assemble_as_their_translated_answers() {
        let chat = assert_streams_agree(Anthropic, OpenAi, &anthropic_stream());
        let message = &chat["choices"][0]["message"];
        assert_eq!(message["content"], "I'll check the weather in Paris.");
        assert_eq!(message["reasoning_content"], "The user wants the weather in Paris; I should call the tool.");
        assert_eq!(message["tool_calls"][0]["id"], "toolu_01T1x1fJ34qAmk2tNTrN7Up6");
        // The arguments are upstream's own text, fragment by fragment.
        assert_eq!(
            message["tool_calls"][0]["function"]["arguments"],
            "{\"location\": \"Paris, France\", \"unit\": \"celsius\", \"days\": 3}"
        );
        assert_eq!(chat["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(
            chat["usage"],
            json!({"prompt_tokens": 472, "completion_tokens": 89, "total_tokens": 561,
                "prompt_tokens_details": {"cached_tokens": 0}})
        );

        let chat = assert_streams_agree(Anthropic, OpenAi, &anthropic_text_stream());
        assert_eq!(chat["choices"][0]["message"], json!({"role": "assistant", "content": "Bonjour 🌍\nligne 2"}));
        assert_eq!(chat["choices"][0]["finish_reason"], "stop");
        assert_eq!(chat["usage"]["prompt_tokens"], 2015);
        assert_eq!(chat["model"], "claude-haiku-4-5");

        let chat = assert_streams_agree(Anthropic, OpenAi, &anthropic_tools_stream());
        let calls = &chat["choices"][0]["message"]["tool_calls"];
        assert_eq!(calls[0]["function"], json!({"name": "now", "arguments": ""}));
        assert_eq!(calls[1]["function"], json!({"name": "echo", "arguments": "{\"said\":\"hi\"}"}));
        assert_eq!(chat["choices"][0]["message"]["content"], Value::Null);
        assert_eq!(chat["choices"][0]["finish_reason"], "length");
    }

    #[test]
    fn anthropic_stream_becomes_openai_chunks_in_order() {
        let (emitted, translator) = translate(Anthropic, OpenAi, &anthropic_stream());
        assert!(translator.finished());
        let chunks: Vec<Value> =
            emitted[..emitted.len() - 1].iter().map(|e| serde_json::from_str(&parse_event(e).data).unwrap()).collect();
        assert_eq!(&emitted[emitted.len() - 1][..], b"data: [DONE]\n\n");
        assert!(emitted.iter().all(|e| parse_event(e).event.is_none()));
        let created = &chunks[0]["created"];
        assert!(chunks.iter().all(|c| c["id"] == "msg_01XFDUDYJgAACzvnptvVoYEL" && &c["created"] == created));
        let deltas: Vec<&Value> = chunks.iter().filter_map(|c| c["choices"].get(0)).map(|c| &c["delta"]).collect();
        assert_eq!(deltas[0], &json!({"role": "assistant", "content": ""}));
        assert_eq!(deltas[1], &json!({"reasoning_content": "The user wants the weather"}));
        assert_eq!(
            deltas[5],
            &json!({"tool_calls": [{"index": 0, "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "type": "function",
                "function": {"name": "get_weather", "arguments": ""}}]})
        );
        assert_eq!(deltas[6], &json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"location\": \"Pa"}}]}));
        let finish = &chunks[chunks.len() - 2]["choices"][0];
        assert_eq!(finish, &json!({"index": 0, "delta": {}, "logprobs": null, "finish_reason": "tool_calls"}));
        let usage = &chunks[chunks.len() - 1];
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(usage["usage"]["completion_tokens"], 89);
    }

    #[test]
    fn generated_streams_agree_too() {
        // Streams as convert builds them from a body: every field in one delta.
        let openai_bodies = [
            openai_answer(),
            json!({"id": "c", "object": "chat.completion", "created": 3, "model": "m", "choices": [{"index": 0,
                "logprobs": null, "finish_reason": "length", "message": {"role": "assistant", "content": "Cut sh"}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}),
            json!({"id": "c", "object": "chat.completion", "created": 3, "model": "m", "choices": [{"index": 0,
                "logprobs": null, "finish_reason": "stop", "stop_reason": "</answer>",
                "message": {"role": "assistant", "content": "42", "refusal": null}}]}),
        ];
        for body in openai_bodies {
            let upstream = convert::json_to_stream(StreamKind::ChatCompletions, body.to_string().as_bytes()).unwrap();
            assert_streams_agree(OpenAi, Anthropic, &upstream);
        }
        let mut text_only = anthropic_answer();
        text_only["content"] = json!([{"type": "text", "text": "Just text.\n\n```rust\nfn main() {}\n```"}]);
        text_only["stop_reason"] = "end_turn".into();
        for body in [anthropic_answer(), text_only] {
            let upstream = convert::json_to_stream(StreamKind::Messages, body.to_string().as_bytes()).unwrap();
            assert_streams_agree(Anthropic, OpenAi, &upstream);
        }
    }

    #[test]
    fn upstream_errors_pass_on_in_the_clients_shape_and_never_finish() {
        let mut upstream = chat_text_stream();
        upstream.insert(
            3,
            data(r#"{"error":{"message":"The server had an error","type":"server_error","param":null,"code":null}}"#),
        );
        let (emitted, translator) = translate(OpenAi, Anthropic, &upstream);
        assert!(!translator.finished());
        let last = parse_event(emitted.last().unwrap());
        assert_eq!(last.event.as_deref(), Some("error"));
        assert_eq!(
            serde_json::from_str::<Value>(&last.data).unwrap(),
            json!({"type": "error", "error": {"type": "api_error", "message": "The server had an error"}})
        );
        assert!(sse::is_error_event(StreamKind::Messages, &last));
        assert!(convert::stream_to_json(StreamKind::Messages, &emitted).is_err());
        let rate = data(r#"{"error":{"message":"Slow down","type":"requests","code":"rate_limit_exceeded"}}"#);
        let mut translator = StreamTranslator::new(OpenAi, Anthropic);
        let out = translator.push(&parse_event(&rate)).unwrap();
        assert!(String::from_utf8_lossy(&out[0]).contains("\"rate_limit_error\""));

        let mut upstream = anthropic_stream();
        upstream.insert(
            9,
            named("error", r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#),
        );
        let (emitted, translator) = translate(Anthropic, OpenAi, &upstream);
        assert!(!translator.finished());
        let last = parse_event(emitted.last().unwrap());
        assert_eq!(
            serde_json::from_str::<Value>(&last.data).unwrap(),
            json!({"error": {"message": "Overloaded", "type": "overloaded_error", "param": null, "code": null}})
        );
        assert!(sse::is_error_event(StreamKind::ChatCompletions, &last));
        assert!(!emitted.iter().any(|e| parse_event(e).data == "[DONE]"));
        assert!(convert::stream_to_json(StreamKind::ChatCompletions, &emitted).is_err());

        // The same holds for a same-dialect relay.
        let (emitted, translator) = translate(OpenAi, OpenAi, &{
            let mut s = chat_text_stream();
            s.insert(2, data(r#"{"error":{"message":"x"}}"#));
            s
        });
        assert!(!translator.finished());
        assert_eq!(emitted.len(), 3);
    }

    #[test]
    fn streams_that_cannot_be_carried_back_are_errors() {
        let push_all = |from: Dialect, events: &[Bytes]| -> Result<Vec<Bytes>> {
            let to = if from == OpenAi { Anthropic } else { OpenAi };
            let mut translator = StreamTranslator::new(from, to);
            let mut out = Vec::new();
            for event in events {
                out.extend(translator.push(&parse_event(event))?);
            }
            Ok(out)
        };
        // Arguments that never become a JSON object: the stream must not finish.
        let mut bad_arguments = chat_tool_stream();
        bad_arguments.remove(3);
        let err = push_all(OpenAi, &bad_arguments).unwrap_err();
        assert_eq!(err.field(), "choices[0].message.tool_calls[0].function.arguments");
        let second_choice = data(&format!(r#"{{{CHAT_HEAD},"choices":[{{"index":1,"delta":{{"content":"x"}}}}]}}"#));
        assert_eq!(push_all(OpenAi, &[second_choice]).unwrap_err().field(), "choices[0].index");
        assert_eq!(push_all(OpenAi, &[data("{not json")]).unwrap_err().field(), "event data");
        assert_eq!(push_all(OpenAi, &[done()]).unwrap_err().field(), "stream");
        assert_eq!(push_all(OpenAi, &[chat(r#"{"content":5}"#)]).unwrap_err().field(), "choices[0].delta.content");

        let stream = anthropic_stream();
        assert_eq!(push_all(Anthropic, &stream[2..]).unwrap_err().field(), "stream");
        let server_tool = named(
            "content_block_start",
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"server_tool_use","id":"s","name":"web_search","input":{}}}"#,
        );
        assert_eq!(push_all(Anthropic, &[stream[0].clone(), server_tool]).unwrap_err().field(), "content[0].type");
        let orphan = named(
            "content_block_delta",
            r#"{"type":"content_block_delta","index":7,"delta":{"type":"text_delta","text":"x"}}"#,
        );
        assert_eq!(push_all(Anthropic, &[stream[0].clone(), orphan]).unwrap_err().field(), "index");
        let unknown_delta = named(
            "content_block_delta",
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"hologram_delta"}}"#,
        );
        assert_eq!(
            push_all(Anthropic, &[stream[0].clone(), stream[2].clone(), unknown_delta]).unwrap_err().field(),
            "delta.type"
        );
        // Unknown event types and keep-alives are skipped, as the SDKs skip them.
        let quiet = [stream[0].clone(), named("hologram", r#"{"type":"hologram"}"#), Bytes::from_static(b": hi\n\n")];
        assert_eq!(push_all(Anthropic, &quiet).unwrap().len(), 1);
    }

    // --- Garbage -----------------------------------------------------------------------------

    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
            &items[self.below(items.len())]
        }
    }

    const KEYS: &[&str] = &[
        "role",
        "content",
        "type",
        "text",
        "messages",
        "tools",
        "tool_calls",
        "function",
        "arguments",
        "name",
        "id",
        "index",
        "choices",
        "delta",
        "message",
        "usage",
        "input",
        "source",
        "url",
        "image_url",
        "tool_call_id",
        "tool_use_id",
        "system",
        "stop",
        "max_tokens",
        "temperature",
        "finish_reason",
        "stop_reason",
        "content_block",
        "partial_json",
        "error",
        "model",
        "parameters",
        "input_schema",
        "tool_choice",
        "media_type",
        "data",
        "thinking",
        "reasoning_content",
        "refusal",
        "prompt_tokens",
        "input_tokens",
        "is_error",
        "stream",
    ];
    const STRINGS: &[&str] = &[
        "user",
        "assistant",
        "system",
        "tool",
        "developer",
        "text",
        "image_url",
        "image",
        "tool_use",
        "tool_result",
        "thinking",
        "function",
        "base64",
        "url",
        "data:image/png;base64,AA",
        "data:,",
        "data:;base64",
        "https://x",
        "{",
        "{}",
        "[1]",
        "[DONE]",
        "message_start",
        "content_block_start",
        "content_block_delta",
        "text_delta",
        "input_json_delta",
        "thinking_delta",
        "message_delta",
        "message_stop",
        "error",
        "auto",
        "none",
        "required",
        "any",
        "stop",
        "tool_calls",
        "length",
        "",
        "😀",
        "\u{0}",
        "é",
    ];

    fn random_value(rng: &mut Rng, depth: u32) -> Value {
        match rng.below(if depth == 0 { 6 } else { 9 }) {
            0 => Value::Null,
            1 => Value::Bool(rng.next().is_multiple_of(2)),
            2 => json!(rng.below(4)),
            3 => json!([-1.5, 1e308, -0.0, 2.5, u64::MAX as f64][rng.below(5)]),
            4 | 5 => json!(rng.pick(STRINGS)),
            6 | 7 => {
                let mut object = Object::new();
                for _ in 0..rng.below(5) {
                    let key = rng.pick(KEYS).to_string();
                    object.insert(key, random_value(rng, depth - 1));
                }
                Value::Object(object)
            }
            _ => Value::Array((0..rng.below(4)).map(|_| random_value(rng, depth - 1)).collect()),
        }
    }

    /// Replaces one random node of `value` with garbage: structurally odd but mostly valid
    /// input is the likeliest way to hit a bad assumption.
    fn mutate(rng: &mut Rng, value: &mut Value) {
        let children = match value {
            Value::Object(object) => object.len(),
            Value::Array(items) => items.len(),
            _ => 0,
        };
        if children == 0 || rng.below(4) == 0 {
            *value = random_value(rng, 3);
            return;
        }
        let at = rng.below(children);
        match value {
            Value::Object(object) => {
                if let Some(child) = object.values_mut().nth(at) {
                    mutate(rng, child);
                }
            }
            Value::Array(items) => mutate(rng, &mut items[at]),
            _ => {}
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let openai_request = openai_tool_conversation();
        let anthropic_request = to_anthropic(openai_tool_conversation());
        let images = to_anthropic(json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]}]}));
        let fixtures = [openai_request, anthropic_request, images, openai_answer(), anthropic_answer()];
        for _ in 0..3000 {
            let mut body = rng.pick(&fixtures).clone();
            for _ in 0..1 + rng.below(3) {
                mutate(&mut rng, &mut body);
            }
            let random = random_value(&mut rng, 4);
            for body in [&body, &random] {
                for (from, to) in [(OpenAi, Anthropic), (Anthropic, OpenAi)] {
                    if let Ok(translated) = request(from, to, body, "m") {
                        let _ = request(to, from, &translated, "m");
                    }
                    if let Ok(translated) = response(from, to, body) {
                        let _ = response(to, from, &translated);
                    }
                }
            }
        }
        let streams: Vec<(Dialect, Vec<Bytes>)> = openai_upstreams()
            .into_iter()
            .map(|(_, s)| (OpenAi, s))
            .chain([anthropic_stream(), anthropic_text_stream(), anthropic_tools_stream()].map(|s| (Anthropic, s)))
            .collect();
        for _ in 0..1500 {
            let (from, events) = rng.pick(&streams);
            let to = if *from == OpenAi { Anthropic } else { OpenAi };
            let mut translator = StreamTranslator::new(*from, to);
            for raw in events {
                let mut event = parse_event(raw);
                match rng.below(6) {
                    0 => {
                        if let Ok(mut json) = serde_json::from_str::<Value>(&event.data) {
                            mutate(&mut rng, &mut json);
                            event.data = json.to_string();
                        }
                    }
                    1 => event.data = random_value(&mut rng, 3).to_string(),
                    2 => event.event = Some(rng.pick(STRINGS).to_string()),
                    3 if !event.data.is_empty() => {
                        let cut = rng.below(event.data.len());
                        event.data = String::from_utf8_lossy(&event.data.as_bytes()[..cut]).into_owned();
                    }
                    _ => {}
                }
                if let Ok(out) = translator.push(&event) {
                    for emitted in out {
                        // Whatever is emitted is well-framed SSE.
                        assert!(emitted.ends_with(b"\n\n"));
                    }
                }
                let _ = translator.finished();
            }
        }
    }
}
