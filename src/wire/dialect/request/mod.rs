//! Request translation both ways: OpenAI chat completions ↔ Anthropic messages, one file per
//! direction, and what both directions read alike.

mod to_anthropic;
mod to_openai;

pub(in crate::wire::dialect) use to_anthropic::openai_request_to_anthropic;
pub(in crate::wire::dialect) use to_openai::anthropic_request_to_openai;

use serde_json::Value;

use super::{Result, join, malformed, objects_in, only_known, refuse, required_str, type_of};
use crate::cache_key::normalize::Dialect;

/// Why neither direction carries a final assistant message across.
pub(super) const PREFILL: &str =
    "a final assistant message is a prefill that Anthropic continues, while OpenAI answers after it";

/// A system prompt's text, from a string or an array of text parts (OpenAI) / blocks
/// (Anthropic), joined like messages. `known` lists the fields a part may carry; `to` is the
/// dialect the text is bound for, named when a part is not text.
pub(super) fn system_text(content: &Value, path: &str, known: &[&str], to: Dialect) -> Result<String> {
    match content {
        Value::String(text) => Ok(text.clone()),
        Value::Array(parts) => Ok(text_parts(parts, path, known, to, "a system prompt holds text only")?.join("\n\n")),
        _ => Err(malformed(path, "expected a string or an array of text parts")),
    }
}

/// The texts of `parts`, an array of OpenAI parts or Anthropic blocks that may hold text only.
/// `known` lists the fields a part may carry; a part of another type is refused with `not_text`.
pub(super) fn text_parts<'a>(
    parts: &'a [Value],
    path: &str,
    known: &[&str],
    to: Dialect,
    not_text: &'static str,
) -> Result<Vec<&'a str>> {
    objects_in(parts, path)
        .map(|item| {
            let (part_path, part) = item?;
            if type_of(part) != "text" {
                return Err(refuse(join(&part_path, "type"), to, not_text));
            }
            only_known(part, &part_path, known, to)?;
            required_str(part, "text", &part_path)
        })
        .collect()
}
