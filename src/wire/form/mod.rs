//! Converts a recorded answer between its streamed form (raw SSE events) and its non-streamed
//! form (one JSON body), so one stored entry serves clients asking for either.
//!
//! Both directions work on `serde_json::Value` and carry fields they do not know along, so a
//! provider adding a field does not make Holdfast drop it. Assembling a stream is strict: a
//! stream without its terminal event, or carrying an error event, is refused rather than turned
//! into a body that looks whole. Generated streams put each field's whole value in one delta;
//! clients accumulate deltas, so one is as valid as many.

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::wire::sse::StreamKind;

mod to_json;
mod to_stream;

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

use ConvertError::InvalidJson;
use to_json::{assemble_messages, assemble_openai, assemble_responses};
use to_stream::{chat_to_stream, completions_to_stream, messages_to_stream, responses_to_stream};

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

fn clone_entry((key, value): (&String, &Value)) -> (String, Value) {
    (key.clone(), value.clone())
}

/// Also the SSE fixtures of other modules' tests (the translator's), so one realistic recording
/// of each provider's stream serves every test that needs it.
#[cfg(test)]
pub(crate) mod tests;
