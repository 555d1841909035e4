use super::request::openai_tool_conversation;
use super::response::{anthropic_answer, openai_answer};
use super::stream::{anthropic_stream, anthropic_text_stream, anthropic_tools_stream, openai_upstreams};
use super::*;

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
