use super::*;

pub(super) fn anthropic_answer() -> Value {
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
    let tools_only = json!({"type": "message", "content": [{"type": "tool_use", "id": "t", "name": "n", "input": {}}]});
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

pub(super) fn openai_answer() -> Value {
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
