//! What an event says about the answer it belongs to: whether it carries content, whether it
//! states the answer's finish reason, whether it is only the usage report; and the events
//! Holdfast writes itself (a missing terminal event, an error that ends a broken stream).

use bytes::Bytes;
use serde_json::{Value, json};

use super::{SseEvent, StreamKind, event_type, format_event, is_terminal};

fn data_json(event: &SseEvent) -> Option<Value> {
    let data = event.data.trim();
    if data.is_empty() || data == "[DONE]" {
        return None;
    }
    serde_json::from_str(data).ok()
}

fn choices(value: &Value) -> &[Value] {
    value.get("choices").and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

fn non_empty(value: Option<&Value>) -> bool {
    match value {
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Null) | None => false,
        Some(_) => true,
    }
}

/// Whether `event` states how the answer ended (OpenAI `finish_reason`, Anthropic
/// `stop_reason`): after it, a stream that closes cleanly has said everything. The Responses
/// API has no such event short of its terminal one, which repeats the whole answer.
pub fn carries_finish(kind: StreamKind, event: &SseEvent) -> bool {
    match kind {
        StreamKind::ChatCompletions | StreamKind::Completions => data_json(event)
            .is_some_and(|v| choices(&v).iter().any(|c| c.get("finish_reason").is_some_and(|f| !f.is_null()))),
        StreamKind::Messages => {
            event_type(event).as_deref() == Some("message_delta")
                && data_json(event).is_some_and(|v| v.pointer("/delta/stop_reason").is_some_and(|s| !s.is_null()))
        }
        StreamKind::Responses => false,
    }
}

/// Whether `event` carries part of the answer (text, a tool call, reasoning, a finish): the
/// first such event ends the wait `first_token_timeout` bounds. Role announcements,
/// `message_start`, pings and keep-alives do not count.
pub fn carries_content(kind: StreamKind, event: &SseEvent) -> bool {
    if is_terminal(kind, event) || carries_finish(kind, event) {
        return true;
    }
    match kind {
        StreamKind::ChatCompletions => data_json(event).is_some_and(|v| {
            choices(&v).iter().filter_map(|c| c.get("delta")).any(|d| {
                ["content", "tool_calls", "refusal", "reasoning_content", "reasoning", "function_call"]
                    .iter()
                    .any(|k| non_empty(d.get(*k)))
            })
        }),
        StreamKind::Completions => {
            data_json(event).is_some_and(|v| choices(&v).iter().any(|c| non_empty(c.get("text"))))
        }
        StreamKind::Messages => matches!(event_type(event).as_deref(), Some("content_block_delta" | "message_delta")),
        StreamKind::Responses => event_type(event).is_some_and(|t| t.ends_with(".delta")),
    }
}

/// Whether `event` is OpenAI's usage report (`choices: []` with `usage`), which only a request
/// with `stream_options.include_usage` receives.
pub fn is_usage_only(kind: StreamKind, event: &SseEvent) -> bool {
    matches!(kind, StreamKind::ChatCompletions | StreamKind::Completions)
        && data_json(event).is_some_and(|v| {
            v.get("choices").and_then(Value::as_array).is_some_and(Vec::is_empty)
                && v.get("usage").is_some_and(|u| !u.is_null())
        })
}

/// The terminal event of `kind`, for a stream that stated its finish and then closed without
/// one. `None` for the Responses API, whose terminal event cannot be made up.
pub fn terminal_event(kind: StreamKind) -> Option<Bytes> {
    match kind {
        StreamKind::ChatCompletions | StreamKind::Completions => Some(format_event(None, "[DONE]")),
        StreamKind::Messages => Some(format_event(Some("message_stop"), r#"{"type":"message_stop"}"#)),
        StreamKind::Responses => None,
    }
}

/// An error event in `kind`'s dialect, ending a stream that broke after the client had part of
/// it; each SDK raises it as an API error with `message`.
pub fn error_event(kind: StreamKind, code: &str, message: &str) -> Bytes {
    match kind {
        StreamKind::ChatCompletions | StreamKind::Completions => {
            let body = json!({"error": {"message": message, "type": "api_error", "code": code, "param": null}});
            format_event(None, &body.to_string())
        }
        StreamKind::Messages => {
            let body = json!({"type": "error", "error": {"type": "api_error", "message": message}});
            format_event(Some("error"), &body.to_string())
        }
        StreamKind::Responses => {
            let body = json!({"type": "error", "code": code, "message": message, "param": null});
            format_event(Some("error"), &body.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::sse::{is_error_event, parse_event};

    fn data(d: &str) -> SseEvent {
        SseEvent { event: None, data: d.to_owned() }
    }

    fn named(name: &str, d: &str) -> SseEvent {
        SseEvent { event: Some(name.to_owned()), data: d.to_owned() }
    }

    #[test]
    fn finish_reasons_per_dialect() {
        use StreamKind::*;
        assert!(carries_finish(
            ChatCompletions,
            &data(r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#)
        ));
        assert!(!carries_finish(
            ChatCompletions,
            &data(r#"{"choices":[{"delta":{"content":"a"},"finish_reason":null}]}"#)
        ));
        assert!(!carries_finish(ChatCompletions, &data("[DONE]")));
        assert!(!carries_finish(ChatCompletions, &data("{not json")));
        assert!(carries_finish(Completions, &data(r#"{"choices":[{"text":"","finish_reason":"length"}]}"#)));
        let delta = r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":3}}"#;
        assert!(carries_finish(Messages, &named("message_delta", delta)));
        assert!(!carries_finish(Messages, &named("message_delta", r#"{"type":"message_delta","delta":{}}"#)));
        assert!(!carries_finish(Responses, &named("response.output_text.delta", r#"{"delta":"x"}"#)));
    }

    #[test]
    fn content_is_what_the_reader_waits_for() {
        use StreamKind::*;
        assert!(!carries_content(
            ChatCompletions,
            &data(r#"{"choices":[{"delta":{"role":"assistant","content":""}}]}"#)
        ));
        assert!(carries_content(ChatCompletions, &data(r#"{"choices":[{"delta":{"content":"hi"}}]}"#)));
        assert!(carries_content(ChatCompletions, &data(r#"{"choices":[{"delta":{"tool_calls":[{"index":0}]}}]}"#)));
        assert!(!carries_content(ChatCompletions, &data("")));
        assert!(!carries_content(Messages, &named("message_start", r#"{"type":"message_start"}"#)));
        assert!(!carries_content(Messages, &named("ping", r#"{"type":"ping"}"#)));
        assert!(carries_content(Messages, &named("content_block_delta", "{}")));
        assert!(carries_content(Responses, &named("response.output_text.delta", "{}")));
        assert!(!carries_content(Responses, &named("response.created", "{}")));
    }

    #[test]
    fn usage_reports_and_made_up_events() {
        use StreamKind::*;
        assert!(is_usage_only(ChatCompletions, &data(r#"{"choices":[],"usage":{"prompt_tokens":1}}"#)));
        assert!(!is_usage_only(ChatCompletions, &data(r#"{"choices":[{"delta":{}}],"usage":{"prompt_tokens":1}}"#)));
        assert!(!is_usage_only(ChatCompletions, &data(r#"{"choices":[],"usage":null}"#)));
        assert!(!is_usage_only(Messages, &data(r#"{"choices":[],"usage":{}}"#)));
        for kind in [ChatCompletions, Completions, Messages] {
            let end = terminal_event(kind).unwrap();
            assert!(is_terminal(kind, &parse_event(&end)), "{kind:?}");
            let error = error_event(kind, "upstream_stream_interrupted", "cut: status 500");
            assert!(is_error_event(kind, &parse_event(&error)), "{kind:?}");
        }
        assert!(terminal_event(Responses).is_none());
        assert!(is_error_event(Responses, &parse_event(&error_event(Responses, "x", "y"))));
    }
}
