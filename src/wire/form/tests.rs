use serde_json::json;

use super::*;
use crate::wire::sse::{self, SseEvent, SseSplitter};
use StreamKind::*;

const KINDS: [StreamKind; 4] = [ChatCompletions, Completions, Responses, Messages];

pub(crate) fn data(json: &str) -> Bytes {
    Bytes::from(format!("data: {json}\n\n"))
}

pub(crate) fn named(event: &str, json: &str) -> Bytes {
    Bytes::from(format!("event: {event}\ndata: {json}\n\n"))
}

pub(crate) fn done() -> Bytes {
    Bytes::from_static(b"data: [DONE]\n\n")
}

fn assemble(kind: StreamKind, events: &[Bytes]) -> Value {
    serde_json::from_slice(&stream_to_json(kind, events).unwrap()).unwrap()
}

fn stream(kind: StreamKind, body: &Value) -> Vec<Bytes> {
    let events = json_to_stream(kind, body.to_string().as_bytes()).unwrap();
    assert_valid_stream(kind, &events);
    events
}

/// What a provider's SDK would insist on: intact framing, JSON data naming its type where
/// the dialect has types, sequence numbers in order, exactly one terminal event, last.
fn assert_valid_stream(kind: StreamKind, events: &[Bytes]) {
    let mut splitter = SseSplitter::new();
    assert_eq!(splitter.push(&events.concat()), events, "framing");
    let parsed: Vec<SseEvent> = events.iter().map(|e| sse::parse_event(e)).collect();
    let (last, body) = parsed.split_last().unwrap();
    assert!(sse::is_terminal(kind, last), "last event {last:?}");
    for (position, event) in body.iter().enumerate() {
        assert!(!sse::is_terminal(kind, event) && !sse::is_error_event(kind, event), "{event:?}");
        let data: Value = serde_json::from_str(&event.data).unwrap();
        match kind {
            ChatCompletions => assert_eq!(data["object"], "chat.completion.chunk"),
            Completions => assert_eq!(data["object"], "text_completion"),
            Responses => assert_eq!(data["sequence_number"], position),
            Messages => {}
        }
        if matches!(kind, Responses | Messages) {
            assert_eq!(event.event.as_deref(), data["type"].as_str(), "{event:?}");
        }
    }
}

/// Both round trips: the body survives json → stream → json exactly, and the stream built
/// from it assembles to the same body again.
fn assert_round_trips(kind: StreamKind, body: &Value) {
    let events = stream(kind, body);
    assert_eq!(&assemble(kind, &events), body);
    assert_eq!(assemble(kind, &stream(kind, &assemble(kind, &events))), *body);
}

/// Assembling a recorded stream, re-streaming that, and assembling again changes nothing.
fn assert_stable(kind: StreamKind, recorded: &[Bytes]) -> Value {
    let body = assemble(kind, recorded);
    assert_round_trips(kind, &body);
    body
}

const CHAT_HEAD: &str = r#""id":"chatcmpl-BQx7Wb1hGzD2vC3kq6ud0fG0pHl7p","object":"chat.completion.chunk","created":1745836018,"model":"gpt-4o-2024-08-06","service_tier":"default","system_fingerprint":"fp_f5bdcc3276""#;

fn chat_delta(delta: &str) -> Bytes {
    let choice = format!(r#"{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":null}}"#);
    data(&format!(r#"{{{CHAT_HEAD},"choices":[{choice}],"usage":null,"obfuscation":"x1Yz"}}"#))
}

fn chat_tool_stream() -> Vec<Bytes> {
    vec![
        chat_delta(
            r#"{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_PJIcZ3GwiEEa8mnTd4QWqmzW","type":"function","function":{"name":"get_weather","arguments":""}}],"refusal":null}"#,
        ),
        chat_delta(r#"{"tool_calls":[{"index":0,"function":{"arguments":"{\"lo"}}]}"#),
        chat_delta(r#"{"tool_calls":[{"index":0,"function":{"arguments":"cation\": \"Par"}}]}"#),
        chat_delta(r#"{"tool_calls":[{"index":0,"function":{"arguments":"is, France\"}"}}]}"#),
        chat_delta(
            r#"{"tool_calls":[{"index":1,"id":"call_3x3EnTqc8Yj0IbHt0PmHhBKk","type":"function","function":{"name":"get_time","arguments":""}}]}"#,
        ),
        chat_delta(r#"{"tool_calls":[{"index":1,"function":{"arguments":"{\"timezone\": \"Europe/Paris\"}"}}]}"#),
        data(&format!(
            r#"{{{CHAT_HEAD},"choices":[{{"index":0,"delta":{{}},"logprobs":null,"finish_reason":"tool_calls"}}],"usage":null}}"#
        )),
        data(&format!(
            r#"{{{CHAT_HEAD},"choices":[],"usage":{{"prompt_tokens":85,"completion_tokens":48,"total_tokens":133,"prompt_tokens_details":{{"cached_tokens":0,"audio_tokens":0}},"completion_tokens_details":{{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}}}}"#
        )),
        done(),
    ]
}

#[test]
fn chat_stream_with_tool_calls_assembles() {
    let body = assert_stable(ChatCompletions, &chat_tool_stream());
    let expected = json!({
        "id": "chatcmpl-BQx7Wb1hGzD2vC3kq6ud0fG0pHl7p", "object": "chat.completion", "created": 1745836018,
        "model": "gpt-4o-2024-08-06", "service_tier": "default", "system_fingerprint": "fp_f5bdcc3276",
        "choices": [{
            "index": 0, "logprobs": null, "finish_reason": "tool_calls",
            "message": {"role": "assistant", "content": null, "refusal": null, "tool_calls": [
                {"id": "call_PJIcZ3GwiEEa8mnTd4QWqmzW", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"location\": \"Paris, France\"}"}},
                {"id": "call_3x3EnTqc8Yj0IbHt0PmHhBKk", "type": "function",
                 "function": {"name": "get_time", "arguments": "{\"timezone\": \"Europe/Paris\"}"}},
            ]},
        }],
        "usage": {"prompt_tokens": 85, "completion_tokens": 48, "total_tokens": 133,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}},
    });
    assert_eq!(body, expected);
}

#[test]
fn deepseek_reasoning_content_stream_assembles() {
    let head = r#""id":"6a2b1c8e-4f7d-4e61-9d5c-0b3e5f1a2c47","object":"chat.completion.chunk","created":1738400000,"model":"deepseek-reasoner","system_fingerprint":"fp_7e0991cad4_prod0225""#;
    let chunk = |delta: &str, finish: &str, usage: &str| {
        let choice = format!(r#"{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":{finish}}}"#);
        data(&format!(r#"{{{head},"choices":[{choice}]{usage}}}"#))
    };
    let events = vec![
        chunk(r#"{"role":"assistant","content":null,"reasoning_content":""}"#, "null", ""),
        Bytes::from_static(b": keep-alive\n\n"),
        chunk(r#"{"content":null,"reasoning_content":"The user asks 2+2."}"#, "null", ""),
        chunk(r#"{"content":null,"reasoning_content":" That is 4."}"#, "null", ""),
        chunk(r#"{"content":"2 + 2 = ","reasoning_content":null}"#, "null", ""),
        chunk(r#"{"content":"**4**.","reasoning_content":null}"#, "null", ""),
        chunk(
            r#"{"content":"","reasoning_content":null}"#,
            r#""stop""#,
            r#","usage":{"prompt_tokens":12,"completion_tokens":30,"total_tokens":42,"completion_tokens_details":{"reasoning_tokens":20},"prompt_cache_hit_tokens":0,"prompt_cache_miss_tokens":12}"#,
        ),
        done(),
    ];
    let body = assert_stable(ChatCompletions, &events);
    let choice = &body["choices"][0];
    assert_eq!(
        choice["message"],
        json!({"role": "assistant", "content": "2 + 2 = **4**.", "reasoning_content": "The user asks 2+2. That is 4."})
    );
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(body["usage"]["completion_tokens_details"]["reasoning_tokens"], 20);
    assert_eq!(body["model"], "deepseek-reasoner");
}

#[test]
fn repeated_role_and_reasoning_field_merge_like_the_sdk() {
    // OpenRouter repeats the role in every delta and names the field `reasoning`.
    let chunk = |delta: &str, finish: &str| {
        data(&format!(
            r#"{{"id":"gen-1","provider":"OpenAI","model":"openai/o4-mini","object":"chat.completion.chunk","created":1750000000,"choices":[{{"index":0,"delta":{delta},"finish_reason":{finish},"native_finish_reason":{finish}}}]}}"#
        ))
    };
    let events = vec![
        Bytes::from_static(b": OPENROUTER PROCESSING\n\n"),
        chunk(r#"{"role":"assistant","content":"","reasoning":"Thinking"}"#, "null"),
        chunk(r#"{"role":"assistant","content":"","reasoning":" briefly."}"#, "null"),
        chunk(r#"{"role":"assistant","content":"Hi!"}"#, "null"),
        chunk(r#"{"role":"assistant","content":""}"#, r#""stop""#),
        done(),
    ];
    let body = assert_stable(ChatCompletions, &events);
    assert_eq!(
        body["choices"][0]["message"],
        json!({"role": "assistant", "content": "Hi!", "reasoning": "Thinking briefly."})
    );
    assert_eq!(body["choices"][0]["native_finish_reason"], "stop");
    assert_eq!(body["provider"], "OpenAI");
    assert!(body.get("usage").is_none());
}

#[test]
fn chat_bodies_round_trip() {
    let usage = json!({"prompt_tokens": 20, "completion_tokens": 6, "total_tokens": 26,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}});
    let text = json!({
        "id": "chatcmpl-BQx8", "object": "chat.completion", "created": 1745836100, "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "logprobs": null, "finish_reason": "stop", "message": {"role": "assistant",
            "content": "Paris is sunny today ☀️.\n\n```rust\nfn main() {}\n```", "refusal": null, "annotations": []}}],
        "usage": usage, "service_tier": "default", "system_fingerprint": "fp_f5bdcc3276",
    });
    assert_round_trips(ChatCompletions, &text);

    let tools = json!({
        "id": "chatcmpl-BQx9", "object": "chat.completion", "created": 1745836200, "model": "gpt-4.1-mini",
        "choices": [{"index": 0, "logprobs": null, "finish_reason": "tool_calls", "message": {"role": "assistant",
            "content": null, "refusal": null, "annotations": [], "tool_calls": [
                {"id": "call_a", "type": "function", "function": {"name": "search", "arguments": "{\"q\":\"rust sse\",\"limit\":0.5}"}},
                {"id": "call_b", "type": "function", "function": {"name": "noop", "arguments": "{}"}}]}}],
        "usage": usage,
    });
    assert_round_trips(ChatCompletions, &tools);

    let two_choices_and_refusal = json!({
        "id": "chatcmpl-n2", "object": "chat.completion", "created": 1, "model": "gpt-4o",
        "choices": [
            {"index": 0, "logprobs": null, "finish_reason": "stop",
             "message": {"role": "assistant", "content": null, "refusal": "I can't help with that."}},
            {"index": 1, "logprobs": null, "finish_reason": "length",
             "message": {"role": "assistant", "content": "Sure", "refusal": null}}],
    });
    assert_round_trips(ChatCompletions, &two_choices_and_refusal);

    let deepseek = json!({
        "id": "ds-1", "object": "chat.completion", "created": 2, "model": "deepseek-reasoner",
        "choices": [{"index": 0, "logprobs": null, "finish_reason": "stop", "message": {"role": "assistant",
            "content": "4", "reasoning_content": "2+2 is 4."}}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14},
    });
    assert_round_trips(ChatCompletions, &deepseek);
}

#[test]
fn chat_stream_shape_matches_openai() {
    let body = json!({"id": "c", "object": "chat.completion", "created": 3, "model": "m",
        "choices": [{"index": 0, "logprobs": null, "finish_reason": "stop",
            "message": {"role": "assistant", "content": "Hello", "refusal": null}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}});
    let events = stream(ChatCompletions, &body);
    let chunks: Vec<Value> =
        events[..events.len() - 1].iter().map(|e| serde_json::from_str(&sse::parse_event(e).data).unwrap()).collect();
    let deltas: Vec<&Value> =
        chunks.iter().flat_map(|c| c["choices"].as_array().unwrap()).map(|c| &c["delta"]).collect();
    assert_eq!(
        deltas,
        [&json!({"role": "assistant", "content": "", "refusal": null}), &json!({"content": "Hello"}), &json!({})]
    );
    assert_eq!(chunks[2]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[3]["choices"], json!([]));
    assert_eq!(chunks[3]["usage"]["total_tokens"], 2);
    assert!(chunks.iter().all(|c| c["id"] == "c" && c["created"] == 3 && c["model"] == "m"));
    assert_eq!(&events[events.len() - 1][..], b"data: [DONE]\n\n");
}

#[test]
fn completions_stream_assembles_and_round_trips() {
    let head = r#""id":"cmpl-9bK2x","object":"text_completion","created":1700000000,"model":"gpt-3.5-turbo-instruct""#;
    let events = vec![
        data(&format!(
            r#"{{{head},"choices":[{{"text":"\n\nThis","index":0,"logprobs":null,"finish_reason":null}}]}}"#
        )),
        data(&format!(
            r#"{{{head},"choices":[{{"text":" is a test.","index":0,"logprobs":null,"finish_reason":null}}]}}"#
        )),
        data(&format!(r#"{{{head},"choices":[{{"text":"","index":0,"logprobs":null,"finish_reason":"stop"}}]}}"#)),
        data(&format!(
            r#"{{{head},"choices":[],"usage":{{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}}}"#
        )),
        done(),
    ];
    let body = assert_stable(Completions, &events);
    assert_eq!(
        body,
        json!({"id": "cmpl-9bK2x", "object": "text_completion", "created": 1700000000, "model": "gpt-3.5-turbo-instruct",
            "choices": [{"text": "\n\nThis is a test.", "index": 0, "logprobs": null, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}})
    );
}

/// A recorded Anthropic stream: thinking with a signature, text, and a tool call whose input
/// arrives in JSON pieces.
pub(crate) fn anthropic_stream() -> Vec<Bytes> {
    let delta = |index: u8, delta: &str| {
        named("content_block_delta", &format!(r#"{{"type":"content_block_delta","index":{index},"delta":{delta}}}"#))
    };
    let start = |index: u8, block: &str| {
        named(
            "content_block_start",
            &format!(r#"{{"type":"content_block_start","index":{index},"content_block":{block}}}"#),
        )
    };
    let stop = |index: u8| named("content_block_stop", &format!(r#"{{"type":"content_block_stop","index":{index}}}"#));
    vec![
        named(
            "message_start",
            r#"{"type":"message_start","message":{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":472,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":3,"service_tier":"standard"}}}"#,
        ),
        named("ping", r#"{"type": "ping"}"#),
        start(0, r#"{"type":"thinking","thinking":"","signature":""}"#),
        delta(0, r#"{"type":"thinking_delta","thinking":"The user wants the weather"}"#),
        delta(0, r#"{"type":"thinking_delta","thinking":" in Paris; I should call the tool."}"#),
        delta(0, r#"{"type":"signature_delta","signature":"EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"}"#),
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

#[test]
fn anthropic_stream_with_thinking_text_and_tool_use_assembles() {
    let body = assert_stable(Messages, &anthropic_stream());
    let expected = json!({
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant",
        "model": "claude-sonnet-4-5-20250929", "stop_reason": "tool_use", "stop_sequence": null,
        "content": [
            {"type": "thinking", "thinking": "The user wants the weather in Paris; I should call the tool.",
             "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"},
            {"type": "text", "text": "I'll check the weather in Paris."},
            {"type": "tool_use", "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_weather",
             "input": {"location": "Paris, France", "unit": "celsius", "days": 3}},
        ],
        "usage": {"input_tokens": 472, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
            "output_tokens": 89, "service_tier": "standard"},
    });
    assert_eq!(body, expected);
}

#[test]
fn anthropic_citations_empty_input_and_event_lines_are_optional() {
    // Some gateways drop `event:` lines; the JSON `type` is enough.
    let events: Vec<Bytes> = [
        r#"{"type":"message_start","message":{"id":"msg_2","type":"message","role":"assistant","model":"claude-haiku-4-5","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":10,"output_tokens":1}}}"#,
        r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":"","citations":[]}}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"citations_delta","citation":{"type":"char_location","cited_text":"The sky is blue.","document_index":0,"document_title":"Facts","start_char_index":0,"end_char_index":16}}}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"The sky is blue."}}"#,
        r#"{"type":"content_block_stop","index":0}"#,
        r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_2","name":"now","input":{}}}"#,
        r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}"#,
        r#"{"type":"content_block_stop","index":1}"#,
        r#"{"type":"content_block_start","index":2,"content_block":{"type":"redacted_thinking","data":"EmwKAhgBEgy3va3pzix"}}"#,
        r#"{"type":"content_block_stop","index":2}"#,
        r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"input_tokens":10,"cache_read_input_tokens":0,"output_tokens":25}}"#,
        r#"{"type":"message_stop"}"#,
    ]
    .into_iter()
    .map(data)
    .collect();
    let body = assert_stable(Messages, &events);
    assert_eq!(body["content"][0]["citations"][0]["cited_text"], "The sky is blue.");
    assert_eq!(body["content"][0]["text"], "The sky is blue.");
    assert_eq!(body["content"][1]["input"], json!({}));
    assert_eq!(body["content"][2], json!({"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix"}));
    assert_eq!(body["usage"], json!({"input_tokens": 10, "cache_read_input_tokens": 0, "output_tokens": 25}));
    assert_eq!(body["stop_reason"], "end_turn");
}

#[test]
fn anthropic_bodies_round_trip() {
    let body = json!({
        "id": "msg_01A", "type": "message", "role": "assistant", "model": "claude-opus-4-1-20250805",
        "content": [
            {"type": "thinking", "thinking": "Plan: look it up.", "signature": "sig=="},
            {"type": "redacted_thinking", "data": "EmwKAhgB"},
            {"type": "text", "text": "Looking that up. 🔎", "citations": null},
            {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "weather paris"}},
            {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": [
                {"type": "web_search_result", "title": "Paris", "url": "https://example.com", "encrypted_content": "Eu8B", "page_age": null}]},
            {"type": "text", "text": "It is 21°C.", "citations": [{"type": "web_search_result_location",
                "url": "https://example.com", "title": "Paris", "encrypted_index": "Eo8B", "cited_text": "21°C"}]},
            {"type": "tool_use", "id": "toolu_01", "name": "record", "input": {"temp": 21.5, "tags": ["a", "b"], "nested": {"x": null}}},
        ],
        "stop_reason": "tool_use", "stop_sequence": null, "container": null,
        "usage": {"input_tokens": 2095, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 1024,
            "output_tokens": 503, "server_tool_use": {"web_search_requests": 1}, "service_tier": "standard"},
    });
    assert_round_trips(Messages, &body);
    let events = stream(Messages, &body);
    let first: Value = serde_json::from_str(&sse::parse_event(&events[0]).data).unwrap();
    assert_eq!(first["message"]["content"], json!([]));
    assert_eq!(first["message"]["usage"]["input_tokens"], 2095);
    let delta: Value = serde_json::from_str(&sse::parse_event(&events[events.len() - 2]).data).unwrap();
    assert_eq!(
        delta,
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
        "usage": {"output_tokens": 503}})
    );
}

fn responses_body() -> Value {
    json!({
        "id": "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b", "object": "response", "created_at": 1741476542,
        "status": "completed", "error": null, "incomplete_details": null, "instructions": null,
        "max_output_tokens": null, "model": "gpt-4.1-2025-04-14", "parallel_tool_calls": true,
        "previous_response_id": null, "reasoning": {"effort": null, "summary": null}, "store": true,
        "temperature": 1.0, "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [],
        "top_p": 1.0, "truncation": "disabled", "user": null, "metadata": {},
        "output": [{"id": "msg_67ccd2bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b", "type": "message",
            "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": "Hi there! How can I help?", "annotations": []}]}],
        "usage": {"input_tokens": 36, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 8,
            "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 44},
    })
}

#[test]
fn responses_stream_assembles_from_its_terminal_event() {
    let full = responses_body();
    let mut pending = full.clone();
    pending["status"] = json!("in_progress");
    pending["output"] = json!([]);
    pending["usage"] = Value::Null;
    let item = &full["output"][0];
    let id = item["id"].as_str().unwrap();
    let at = format!(r#""item_id":"{id}","output_index":0,"content_index":0"#);
    let events = vec![
        named(
            "response.created",
            &json!({"type": "response.created", "sequence_number": 0, "response": pending}).to_string(),
        ),
        named(
            "response.in_progress",
            &json!({"type": "response.in_progress", "sequence_number": 1, "response": pending}).to_string(),
        ),
        named(
            "response.output_item.added",
            &format!(
                r#"{{"type":"response.output_item.added","sequence_number":2,"output_index":0,"item":{{"id":"{id}","type":"message","status":"in_progress","role":"assistant","content":[]}}}}"#
            ),
        ),
        named(
            "response.content_part.added",
            &format!(
                r#"{{"type":"response.content_part.added","sequence_number":3,{at},"part":{{"type":"output_text","text":"","annotations":[]}}}}"#
            ),
        ),
        named(
            "response.output_text.delta",
            &format!(
                r#"{{"type":"response.output_text.delta","sequence_number":4,{at},"delta":"Hi there!","logprobs":[]}}"#
            ),
        ),
        named(
            "response.output_text.delta",
            &format!(
                r#"{{"type":"response.output_text.delta","sequence_number":5,{at},"delta":" How can I help?","logprobs":[]}}"#
            ),
        ),
        named(
            "response.output_text.done",
            &format!(
                r#"{{"type":"response.output_text.done","sequence_number":6,{at},"text":"Hi there! How can I help?","logprobs":[]}}"#
            ),
        ),
        named(
            "response.content_part.done",
            &format!(
                r#"{{"type":"response.content_part.done","sequence_number":7,{at},"part":{}}}"#,
                item["content"][0]
            ),
        ),
        named(
            "response.output_item.done",
            &format!(r#"{{"type":"response.output_item.done","sequence_number":8,"output_index":0,"item":{item}}}"#),
        ),
        named(
            "response.completed",
            &json!({"type": "response.completed", "sequence_number": 9, "response": full}).to_string(),
        ),
    ];
    assert_valid_stream(Responses, &events);
    assert_eq!(assert_stable(Responses, &events), full);
    // The generated stream has the same event sequence as the recorded one.
    let generated: Vec<String> = stream(Responses, &full).iter().map(|e| sse::parse_event(e).event.unwrap()).collect();
    let mut recorded: Vec<String> = events.iter().map(|e| sse::parse_event(e).event.unwrap()).collect();
    recorded.dedup(); // the generated stream sends the text as one delta
    assert_eq!(generated, recorded);
}

#[test]
fn responses_bodies_round_trip() {
    let mut body = responses_body();
    body["output"] = json!([
        {"id": "rs_1", "type": "reasoning", "summary": [{"type": "summary_text", "text": "**Planning** the call."}],
         "encrypted_content": null},
        {"id": "fc_1", "type": "function_call", "status": "completed", "call_id": "call_9",
         "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
        {"id": "ws_1", "type": "web_search_call", "status": "completed", "action": {"type": "search", "query": "paris"}},
        {"id": "msg_2", "type": "message", "status": "completed", "role": "assistant", "content": [
            {"type": "output_text", "text": "Sunny.", "logprobs": [],
             "annotations": [{"type": "url_citation", "start_index": 0, "end_index": 6, "url": "https://e.com", "title": "E"}]},
            {"type": "refusal", "refusal": "But I won't say more."}]},
    ]);
    assert_round_trips(Responses, &body);
    let types: Vec<String> = stream(Responses, &body).iter().map(|e| sse::parse_event(e).event.unwrap()).collect();
    for expected in [
        "response.reasoning_summary_text.delta",
        "response.function_call_arguments.done",
        "response.output_text.annotation.added",
        "response.refusal.done",
    ] {
        assert!(types.iter().any(|t| t == expected), "{expected}");
    }
    body["status"] = json!("incomplete");
    body["incomplete_details"] = json!({"reason": "max_output_tokens"});
    assert_round_trips(Responses, &body);
}

#[test]
fn stream_cut_into_network_chunks_assembles_the_same() {
    let recorded = anthropic_stream();
    let wire = recorded.concat();
    for size in [1, 7, 64, 1000] {
        let mut splitter = SseSplitter::new();
        let events: Vec<Bytes> = wire.chunks(size).flat_map(|chunk| splitter.push(chunk)).collect();
        assert_eq!(events, recorded);
        assert_eq!(assemble(Messages, &events), assemble(Messages, &recorded));
    }
}

#[test]
fn unfinished_or_failed_streams_are_refused() {
    let cases: [(StreamKind, Vec<Bytes>); 3] = [
        (ChatCompletions, chat_tool_stream()),
        (Messages, anthropic_stream()),
        (Responses, stream(Responses, &responses_body())),
    ];
    for (kind, events) in cases {
        for cut in 0..events.len() {
            assert!(
                matches!(stream_to_json(kind, &events[..cut]), Err(ConvertError::Incomplete(_))),
                "{kind:?} cut after {cut} events"
            );
        }
    }
    let mut chat = chat_tool_stream();
    chat.insert(2, data(r#"{"error":{"message":"The server had an error","type":"server_error"}}"#));
    assert!(matches!(stream_to_json(ChatCompletions, &chat), Err(ConvertError::Unsupported(_))));
    let mut messages = anthropic_stream();
    messages
        .insert(5, named("error", r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#));
    assert!(matches!(stream_to_json(Messages, &messages), Err(ConvertError::Unsupported(_))));
    let failed =
        [named("response.failed", r#"{"type":"response.failed","sequence_number":3,"response":{"status":"failed"}}"#)];
    assert!(matches!(stream_to_json(Responses, &failed), Err(ConvertError::Unsupported(_))));
    let mut truncated_input = anthropic_stream();
    truncated_input.remove(15); // the last input_json_delta: the input is no longer JSON
    assert!(matches!(stream_to_json(Messages, &truncated_input), Err(ConvertError::InvalidJson(_))));
}

#[test]
fn bodies_of_the_wrong_shape_are_errors() {
    for (kind, body) in [
        (ChatCompletions, "[]"),
        (ChatCompletions, r#"{"choices":5}"#),
        (ChatCompletions, r#"{"choices":[{"message":"hi"}]}"#),
        (ChatCompletions, r#"{"choices":[{"message":{"tool_calls":[1]}}]}"#),
        (Completions, r#"{"choices":[7]}"#),
        (Responses, r#"{"output":{}}"#),
        (Responses, r#"{"output":[{"type":"message","content":[1]}]}"#),
        (Messages, r#"{"type":"error","error":{"type":"api_error"}}"#),
        (Messages, r#"{"type":"message","content":"text"}"#),
        (Messages, "not json"),
    ] {
        assert!(json_to_stream(kind, body.as_bytes()).is_err(), "{kind:?} {body}");
    }
}

#[test]
fn garbage_never_panics() {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    // Structurally odd but valid JSON, the likeliest way to hit a bad assumption.
    let odd = [
        "{}",
        "[]",
        "null",
        "5",
        r#"{"choices":5}"#,
        r#"{"choices":[5,null,{"index":-1,"delta":"x"}]}"#,
        r#"{"choices":[{"index":0,"delta":{"tool_calls":[1,{"index":"a"},{"index":0,"function":5}]}}]}"#,
        r#"{"choices":[{"index":0,"delta":{"tool_calls":{"index":0},"content":{"a":1},"role":7}}]}"#,
        r#"{"choices":[{"index":18446744073709551615,"text":5,"finish_reason":[]}],"usage":4}"#,
        r#"{"type":"message_start","message":5}"#,
        r#"{"type":"message_start","message":{"usage":3}}"#,
        r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","citations":"x"}}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"citations_delta","citation":1}}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":5}}"#,
        r#"{"type":"content_block_delta","index":9,"delta":{"type":"input_json_delta","partial_json":"{"}}"#,
        r#"{"type":"message_delta","delta":5,"usage":{"output_tokens":null}}"#,
        r#"{"type":"response.completed","response":5}"#,
        r#"{"type":"response.completed"}"#,
        "[DONE]",
        r#"{"type":"message_stop"}"#,
        r#"{"type":"response.incomplete","response":{}}"#,
    ];
    let fixtures: Vec<Bytes> = [chat_tool_stream(), anthropic_stream(), stream(Responses, &responses_body())].concat();
    for _ in 0..400 {
        let mut events = Vec::new();
        for _ in 0..next() % 12 {
            events.push(match next() % 3 {
                0 => data(odd[(next() % odd.len() as u64) as usize]),
                1 => {
                    let mut raw = fixtures[(next() % fixtures.len() as u64) as usize].to_vec();
                    let at = (next() % raw.len() as u64) as usize;
                    raw[at] = next() as u8;
                    Bytes::from(raw)
                }
                _ => Bytes::from((0..next() % 64).map(|_| next() as u8).collect::<Vec<u8>>()),
            });
        }
        for kind in KINDS {
            if let Ok(body) = stream_to_json(kind, &events) {
                let _ = json_to_stream(kind, &body);
            }
            for event in &events {
                let _ = json_to_stream(kind, &sse::parse_event(event).data.into_bytes());
            }
        }
    }
    for body in odd {
        for kind in KINDS {
            let _ = json_to_stream(kind, body.as_bytes());
        }
    }
}
