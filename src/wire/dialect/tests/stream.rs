use super::response::{anthropic_answer, openai_answer};
use super::*;
use crate::wire::sse::{self, SseEvent, StreamKind};

fn kind(dialect: Dialect) -> StreamKind {
    match dialect {
        OpenAi => StreamKind::ChatCompletions,
        Anthropic => StreamKind::Messages,
    }
}

pub(super) fn assemble(dialect: Dialect, events: &[Bytes]) -> Value {
    serde_json::from_slice(&form::stream_to_json(kind(dialect), events).unwrap()).unwrap()
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
pub(super) fn assert_streams_agree(from: Dialect, to: Dialect, upstream: &[Bytes]) -> Value {
    let (emitted, translator) = translate(from, to, upstream);
    assert!(translator.finished());
    assert_valid_client_stream(to, &emitted);
    let streamed = assemble(to, &emitted);
    let direct = response(from, to, &assemble(from, upstream)).unwrap();
    assert_eq!(comparable(to, streamed.clone()), comparable(to, direct), "emitted: {emitted:?}");
    streamed
}

const CHAT_HEAD: &str = r#""id":"chatcmpl-BQx7Wb1hGzD2vC3kq6ud0fG0pHl7p","object":"chat.completion.chunk","created":1745836018,"model":"gpt-4o-2024-08-06","service_tier":"default","system_fingerprint":"fp_f5bdcc3276""#;

pub(super) fn chat(delta: &str) -> Bytes {
    let choice = format!(r#"{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":null}}"#);
    data(&format!(r#"{{{CHAT_HEAD},"choices":[{choice}],"usage":null,"obfuscation":"x1Yz"}}"#))
}

pub(super) fn chat_finish(reason: &str) -> Bytes {
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
    let head = r#""id":"6a2b1c8e","object":"chat.completion.chunk","created":1738400000,"model":"deepseek-reasoner""#;
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
        data(&format!(r#"{{{head},"choices":[{{"index":0,"delta":{{"content":"one two"}},"finish_reason":null}}]}}"#)),
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
        chat(r#"{"tool_calls":[{"index":0,"function":{"arguments":"{\"ids\": [1, 2], \"deep\": {\"x\": null}}"}}]}"#),
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

pub(super) fn openai_upstreams() -> Vec<(&'static str, Vec<Bytes>)> {
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

pub(super) use crate::wire::form::tests::anthropic_stream;

/// A gateway that dropped the `event:` lines; text only; cache usage; a stop sequence.
pub(super) fn anthropic_text_stream() -> Vec<Bytes> {
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
pub(super) fn anthropic_tools_stream() -> Vec<Bytes> {
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
        let upstream = form::json_to_stream(StreamKind::ChatCompletions, body.to_string().as_bytes()).unwrap();
        assert_streams_agree(OpenAi, Anthropic, &upstream);
    }
    let mut text_only = anthropic_answer();
    text_only["content"] = json!([{"type": "text", "text": "Just text.\n\n```rust\nfn main() {}\n```"}]);
    text_only["stop_reason"] = "end_turn".into();
    for body in [anthropic_answer(), text_only] {
        let upstream = form::json_to_stream(StreamKind::Messages, body.to_string().as_bytes()).unwrap();
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
    assert!(form::stream_to_json(StreamKind::Messages, &emitted).is_err());
    let rate = data(r#"{"error":{"message":"Slow down","type":"requests","code":"rate_limit_exceeded"}}"#);
    let mut translator = StreamTranslator::new(OpenAi, Anthropic);
    let out = translator.push(&parse_event(&rate)).unwrap();
    assert!(String::from_utf8_lossy(&out[0]).contains("\"rate_limit_error\""));

    let mut upstream = anthropic_stream();
    upstream
        .insert(9, named("error", r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#));
    let (emitted, translator) = translate(Anthropic, OpenAi, &upstream);
    assert!(!translator.finished());
    let last = parse_event(emitted.last().unwrap());
    assert_eq!(
        serde_json::from_str::<Value>(&last.data).unwrap(),
        json!({"error": {"message": "Overloaded", "type": "overloaded_error", "param": null, "code": null}})
    );
    assert!(sse::is_error_event(StreamKind::ChatCompletions, &last));
    assert!(!emitted.iter().any(|e| parse_event(e).data == "[DONE]"));
    assert!(form::stream_to_json(StreamKind::ChatCompletions, &emitted).is_err());

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
    let unknown_delta =
        named("content_block_delta", r#"{"type":"content_block_delta","index":0,"delta":{"type":"hologram_delta"}}"#);
    assert_eq!(
        push_all(Anthropic, &[stream[0].clone(), stream[2].clone(), unknown_delta]).unwrap_err().field(),
        "delta.type"
    );
    // Unknown event types and keep-alives are skipped, as the SDKs skip them.
    let quiet = [stream[0].clone(), named("hologram", r#"{"type":"hologram"}"#), Bytes::from_static(b": hi\n\n")];
    assert_eq!(push_all(Anthropic, &quiet).unwrap().len(), 1);
}
