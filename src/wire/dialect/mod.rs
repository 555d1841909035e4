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

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use crate::cache_key::normalize::Dialect;

mod request;
mod response;
mod stream;
pub mod versions;

pub use stream::StreamTranslator;
pub use versions::{ANTHROPIC_VERSIONS, DEFAULT_ANTHROPIC_VERSION, VersionRules, anthropic_rules};

use request::{anthropic_request_to_openai, openai_request_to_anthropic};
use response::{anthropic_answer_to_openai, openai_answer_to_anthropic};

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
/// Anthropic requires `max_tokens`; OpenAI lets the model run to its own limit. 4096 is enough
/// for most chat answers and is accepted by every current Claude model.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// The client's request body (JSON object) rewritten for a target of dialect `to`, with its
/// model set to `target_model`. Same-dialect calls only swap the model. An Anthropic target is
/// assumed to speak [`DEFAULT_ANTHROPIC_VERSION`]; see [`request_for_version`].
pub fn request(from: Dialect, to: Dialect, body: &Value, target_model: &str) -> Result<Value> {
    request_for_version(from, to, body, target_model, DEFAULT_ANTHROPIC_VERSION)
}

/// As [`request`], for an Anthropic target that will be sent `anthropic_version`: the
/// translation follows that version's rules ([`versions`]).
pub fn request_for_version(
    from: Dialect,
    to: Dialect,
    body: &Value,
    target_model: &str,
    anthropic_version: &str,
) -> Result<Value> {
    let body = body.as_object().ok_or_else(|| malformed("body", "expected a JSON object"))?;
    match (from, to) {
        (Dialect::OpenAi, Dialect::Anthropic) => {
            openai_request_to_anthropic(body, target_model, anthropic_rules(anthropic_version)?)
        }
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

/// Each element of `items`, which must be an object, with its path (`path[j]`).
fn objects_in<'a>(items: &'a [Value], path: &str) -> impl Iterator<Item = Result<(String, &'a Object)>> {
    items.iter().enumerate().map(move |(j, item)| {
        let item_path = format!("{path}[{j}]");
        object_at(item, &item_path).map(|object| (item_path, object))
    })
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

#[cfg(test)]
mod tests;
