use super::response::anthropic_answer;
use super::stream::{anthropic_stream, assemble, assert_streams_agree, chat, chat_finish};
use super::*;

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

pub(super) fn openai_tool_conversation() -> Value {
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
        chat(r#"{"tool_calls":[{"index":0,"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]}"#),
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
        let mut body = json!({"messages": [{"role": "user", "content": "x"}], "tools": tools, "tool_choice": choice});
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
            user(json!([{"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}}])),
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
