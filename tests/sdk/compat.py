#!/usr/bin/env python3
"""SDK compatibility checks: unmodified official OpenAI and Anthropic Python clients through Holdfast.

Run as `python tests/sdk/compat.py` with
  HOLDFAST_URL    the proxy's root, e.g. http://127.0.0.1:8080 (no /v1)
  HOLDFAST_PHASE  "live"   (fake upstream up: answers come from upstream and are recorded), or
                  "replay" (fake upstream down: answers come from Holdfast's store), or
                  "rescue" (the first target cuts every stream mid-answer; the next continues it)
Optional: HOLDFAST_SDK_TIMEOUT (seconds per request, default 30).

The proxy sits in front of the fake upstream (/work/specs/fake-upstream.md): the answer is
"echo: " + the last user message, and a prompt containing "TOOL" yields get_weather {"city":"Paris"}.

Both phases send exactly the same requests, except the two cross-form checks, which differ only in
`stream` (a field that is not part of the cache key): live records them non-streamed, replay asks for
them streamed. Prints one line per check (`ok   <name>` or `FAIL <name>: <reason>`), then
`N passed, M failed`; exits 0 only if every check passed.
"""

import json
import os
import sys
from urllib.parse import urlsplit

OPENAI_KEY = "sk-compat-test"
ANTHROPIC_KEY = "sk-ant-compat-test"
CHAT_MODEL = "gpt-4o-mini"
EMBED_MODEL = "text-embedding-3-small"
CLAUDE_MODEL = "claude-haiku-4-5"
MAX_TOKENS = 64


class CheckFailed(Exception):
    """An answer arrived but was not what the fake upstream's contract says it should be."""


def expect(actual, expected, what):
    if actual != expected:
        raise CheckFailed(f"{what}: expected {expected!r}, got {actual!r}")


def one_line(text, limit=600):
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(exc):
    """`Type: message`, plus the underlying cause (the SDKs wrap transport errors as "Connection error.")."""
    text = f"{type(exc).__name__}: {exc or '(no message)'}"
    cause = exc.__cause__ or exc.__context__
    if cause is not None and not isinstance(exc, CheckFailed):
        text += f" (caused by {type(cause).__name__}: {cause})"
    return one_line(text)


# ---------------------------------------------------------------- configuration

URL = os.environ.get("HOLDFAST_URL", "").strip().rstrip("/")
PHASE = os.environ.get("HOLDFAST_PHASE", "").strip()
TIMEOUT = float(os.environ.get("HOLDFAST_SDK_TIMEOUT", "30"))
LIVE = PHASE == "live"

if not URL or PHASE not in ("live", "replay", "rescue"):
    print(
        "usage: HOLDFAST_URL=http://127.0.0.1:PORT HOLDFAST_PHASE=live|replay|rescue python tests/sdk/compat.py",
        file=sys.stderr,
    )
    sys.exit(2)

# Never send the proxy's own address through an HTTP proxy configured in the environment
# (the SDKs' HTTP client honours HTTP_PROXY / ALL_PROXY).
_host = urlsplit(URL).hostname or ""
for _var in ("NO_PROXY", "no_proxy"):
    _hosts = [h for h in os.environ.get(_var, "").split(",") if h.strip()]
    os.environ[_var] = ",".join(_hosts + [_host, "127.0.0.1", "localhost"])

_clients = {}


def openai_client():
    if "openai" not in _clients:
        from openai import OpenAI

        _clients["openai"] = OpenAI(base_url=URL + "/v1", api_key=OPENAI_KEY, max_retries=0, timeout=TIMEOUT)
    return _clients["openai"]


def anthropic_client():
    if "anthropic" not in _clients:
        from anthropic import Anthropic

        _clients["anthropic"] = Anthropic(base_url=URL, api_key=ANTHROPIC_KEY, max_retries=0, timeout=TIMEOUT)
    return _clients["anthropic"]


def user(text):
    return [{"role": "user", "content": text}]


# ---------------------------------------------------------------- OpenAI helpers


def openai_stream_text(prompt):
    """Streams a chat completion; returns (text, finish_reason of the last chunk that has a choice)."""
    stream = openai_client().chat.completions.create(model=CHAT_MODEL, messages=user(prompt), stream=True)
    text, finish, chunks = [], None, 0
    with stream:
        for chunk in stream:
            chunks += 1
            if chunk.choices:
                choice = chunk.choices[-1]
                if choice.delta is not None and choice.delta.content:
                    text.append(choice.delta.content)
                finish = choice.finish_reason
    if chunks == 0:
        raise CheckFailed("the stream yielded no chunks (not SSE, or empty body)")
    return "".join(text), finish


def anthropic_stream_text(prompt):
    """Streams a message with the SDK's stream helper; returns (text, final message)."""
    with anthropic_client().messages.stream(model=CLAUDE_MODEL, max_tokens=MAX_TOKENS, messages=user(prompt)) as s:
        text = "".join(s.text_stream)
        try:
            final = s.get_final_message()
        except AssertionError:
            # The SDK asserts when no `message_start` was seen. It silently skips SSE events that have
            # no `event:` line, so this is also what a stream without event names looks like.
            raise CheckFailed(
                f"no message_start event in the stream (missing `event:` lines?); text so far {text!r}"
            ) from None
    return text, final


# ---------------------------------------------------------------- checks

_openai_chat_raw = {}


def check_openai_chat():
    raw = openai_client().chat.completions.with_raw_response.create(
        model=CHAT_MODEL, messages=user("hello compat")
    )
    _openai_chat_raw["headers"] = raw.headers
    completion = raw.parse()
    expect(completion.choices[0].message.content, "echo: hello compat", "choices[0].message.content")
    expect(completion.choices[0].finish_reason, "stop", "choices[0].finish_reason")


def check_openai_chat_cache_header():
    # Same response as "openai chat": one request, so in live it is certainly the first one for its key.
    headers = _openai_chat_raw.get("headers")
    if headers is None:
        raise CheckFailed("no response to inspect (the openai chat request failed)")
    if LIVE:
        expect(headers.get("x-holdfast-cache"), "miss", "x-holdfast-cache")
    else:
        expect(headers.get("x-holdfast-cache"), "stale", "x-holdfast-cache")
        if not headers.get("x-holdfast-upstream-error"):
            raise CheckFailed("x-holdfast-upstream-error is missing or empty on a stale answer")


def check_openai_chat_stream():
    text, finish = openai_stream_text("stream compat")
    expect(text, "echo: stream compat", "concatenated deltas")
    expect(finish, "stop", "finish_reason of the last choice chunk")


def check_openai_chat_tool():
    completion = openai_client().chat.completions.create(model=CHAT_MODEL, messages=user("use a TOOL please"))
    message = completion.choices[0].message
    if not message.tool_calls:
        raise CheckFailed(f"no tool_calls in the message: {message!r}")
    call = message.tool_calls[0]
    expect(call.function.name, "get_weather", "tool_calls[0].function.name")
    expect(json.loads(call.function.arguments), {"city": "Paris"}, "tool_calls[0].function.arguments")
    expect(completion.choices[0].finish_reason, "tool_calls", "choices[0].finish_reason")


def check_openai_embeddings():
    result = openai_client().embeddings.create(model=EMBED_MODEL, input="embed me")
    expect(len(result.data), 1, "number of embeddings")
    vector = result.data[0].embedding
    if not isinstance(vector, list) or not all(isinstance(x, float) for x in vector):
        raise CheckFailed(f"embedding is not a list of floats: {vector!r}")
    expect(len(vector), 8, "embedding length")


def check_openai_responses():
    response = openai_client().responses.create(model=CHAT_MODEL, input="responses compat")
    expect(response.output_text, "echo: responses compat", "response.output_text")


def check_openai_responses_stream():
    stream = openai_client().responses.create(model=CHAT_MODEL, input="responses stream", stream=True)
    deltas, last_type, events = [], None, 0
    with stream:
        for event in stream:
            events += 1
            last_type = event.type
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
    if events == 0:
        raise CheckFailed("the stream yielded no events (not SSE, or empty body)")
    expect("".join(deltas), "echo: responses stream", "concatenated response.output_text.delta")
    expect(last_type, "response.completed", "type of the final event")


def check_anthropic_messages():
    message = anthropic_client().messages.create(
        model=CLAUDE_MODEL, max_tokens=MAX_TOKENS, messages=user("hello claude")
    )
    if not message.content:
        raise CheckFailed("message has no content blocks")
    expect(message.content[0].type, "text", "content[0].type")
    expect(message.content[0].text, "echo: hello claude", "content[0].text")
    expect(message.stop_reason, "end_turn", "stop_reason")


def check_anthropic_messages_stream():
    text, final = anthropic_stream_text("claude stream")
    expect(text, "echo: claude stream", "text_stream")
    expect(final.stop_reason, "end_turn", "final message stop_reason")


def check_anthropic_tool_use():
    message = anthropic_client().messages.create(
        model=CLAUDE_MODEL, max_tokens=MAX_TOKENS, messages=user("TOOL time")
    )
    blocks = [b for b in message.content if b.type == "tool_use"]
    if not blocks:
        raise CheckFailed(f"no tool_use block in content: {message.content!r}")
    expect(blocks[0].name, "get_weather", "tool_use name")
    expect(blocks[0].input, {"city": "Paris"}, "tool_use input")
    expect(message.stop_reason, "tool_use", "stop_reason")


def check_anthropic_count_tokens():
    result = anthropic_client().messages.count_tokens(model=CLAUDE_MODEL, messages=user("count these words"))
    expect(result.input_tokens, 3, "input_tokens")


def check_openai_cross_form():
    if LIVE:  # record the non-streamed form
        completion = openai_client().chat.completions.create(model=CHAT_MODEL, messages=user("cross form"))
        expect(completion.choices[0].message.content, "echo: cross form", "choices[0].message.content")
    else:  # replay it as a stream
        text, finish = openai_stream_text("cross form")
        expect(text, "echo: cross form", "concatenated deltas")
        expect(finish, "stop", "finish_reason of the last choice chunk")


def check_anthropic_cross_form():
    if LIVE:  # record the non-streamed form
        message = anthropic_client().messages.create(
            model=CLAUDE_MODEL, max_tokens=MAX_TOKENS, messages=user("cross claude")
        )
        expect(message.content[0].text, "echo: cross claude", "content[0].text")
        expect(message.stop_reason, "end_turn", "stop_reason")
    else:  # replay it as a stream
        text, final = anthropic_stream_text("cross claude")
        expect(text, "echo: cross claude", "text_stream")
        expect(final.stop_reason, "end_turn", "final message stop_reason")


def readme_loop(prompt, **extra):
    """The loop from the openai README, verbatim but for collecting instead of printing: it reads
    `chunk.choices[0]` of every chunk, so a usage chunk (`choices: []`) it did not ask for raises
    IndexError."""
    stream = openai_client().chat.completions.create(model=CHAT_MODEL, messages=user(prompt), stream=True, **extra)
    out = []
    for chunk in stream:
        out.append(chunk.choices[0].delta.content or "")
    return "".join(out)


def usage_loop(prompt):
    """A stream that asks for usage: text from the chunks with choices, and the usage chunk."""
    stream = openai_client().chat.completions.create(
        model=CHAT_MODEL, messages=user(prompt), stream=True, stream_options={"include_usage": True}
    )
    text, usage = [], None
    for chunk in stream:
        if chunk.choices:
            text.append(chunk.choices[0].delta.content or "")
        if chunk.usage is not None:
            usage = chunk.usage
    return "".join(text), usage


def expect_usage(usage, what):
    if usage is None or not usage.completion_tokens:
        raise CheckFailed(f"{what}: no usage, got {usage!r}")


# Each prompt is recorded in one form in the live phase and asked for in every form on replay:
# stream without usage (the README loop), stream with usage, and JSON.
FORMS = {"readme plain": "stream", "readme usage": "stream+usage", "readme json": "json"}


def record_form(prompt, form):
    if form == "stream":
        expect(readme_loop(prompt), "echo: " + prompt, "README loop text")
    elif form == "stream+usage":
        text, usage = usage_loop(prompt)
        expect(text, "echo: " + prompt, "text")
        expect_usage(usage, "usage chunk")
    else:
        completion = openai_client().chat.completions.create(model=CHAT_MODEL, messages=user(prompt))
        expect(completion.choices[0].message.content, "echo: " + prompt, "content")
        expect_usage(completion.usage, "usage")


def make_form_check(prompt, recorded):
    def check():
        if LIVE:
            record_form(prompt, recorded)
            return
        expect(readme_loop(prompt), "echo: " + prompt, f"README loop over a {recorded} recording")
        text, usage = usage_loop(prompt)
        expect(text, "echo: " + prompt, f"include_usage stream over a {recorded} recording")
        expect_usage(usage, f"include_usage stream over a {recorded} recording")
        completion = openai_client().chat.completions.create(model=CHAT_MODEL, messages=user(prompt))
        expect(completion.choices[0].message.content, "echo: " + prompt, f"JSON over a {recorded} recording")
        expect_usage(completion.usage, f"JSON over a {recorded} recording")

    return check


CROSS = "recorded non-streamed" if LIVE else "replayed as stream"
CHECKS = [
    ("openai chat", check_openai_chat),
    ("openai chat x-holdfast-cache " + ("miss" if LIVE else "stale"), check_openai_chat_cache_header),
    ("openai chat stream", check_openai_chat_stream),
    ("openai chat tool call", check_openai_chat_tool),
    ("openai embeddings", check_openai_embeddings),
    ("openai responses", check_openai_responses),
    ("openai responses stream", check_openai_responses_stream),
    ("anthropic messages", check_anthropic_messages),
    ("anthropic messages stream", check_anthropic_messages_stream),
    ("anthropic tool use", check_anthropic_tool_use),
    ("anthropic count_tokens", check_anthropic_count_tokens),
    ("openai cross form (" + CROSS + ")", check_openai_cross_form),
    ("anthropic cross form (" + CROSS + ")", check_anthropic_cross_form),
] + [
    (f"openai README loop, {recorded} recording" + (" (recording)" if LIVE else " (every form)"),
     make_form_check(prompt, recorded))
    for prompt, recorded in FORMS.items()
]

# The rescue phase: every stream breaks on its first target after a few words and is continued by
# the next; the SDKs must read one ordinary stream with the whole answer.
RESCUE_PROMPT = "a long answer that breaks on its first target"


def check_openai_rescued_stream():
    text, finish = openai_stream_text(RESCUE_PROMPT)
    expect(text, "echo: " + RESCUE_PROMPT, "concatenated deltas of the rescued stream")
    expect(finish, "stop", "finish_reason of the rescued stream")
    expect(readme_loop(RESCUE_PROMPT + " again"), "echo: " + RESCUE_PROMPT + " again", "README loop, rescued")


def check_anthropic_rescued_stream():
    text, final = anthropic_stream_text(RESCUE_PROMPT)
    expect(text, "echo: " + RESCUE_PROMPT, "text_stream of the rescued stream")
    expect(len(final.content), 1, "content blocks of the rescued message")
    expect(final.content[0].text, "echo: " + RESCUE_PROMPT, "final message text")
    expect(final.stop_reason, "end_turn", "stop_reason of the rescued message")


if PHASE == "rescue":
    CHECKS = [
        ("openai stream rescued mid-answer", check_openai_rescued_stream),
        ("anthropic stream rescued mid-answer", check_anthropic_rescued_stream),
    ]


def main():
    print(f"# holdfast sdk compat: phase={PHASE} url={URL}", flush=True)
    try:
        import anthropic
        import openai

        print(f"# openai {openai.__version__}, anthropic {anthropic.__version__}", flush=True)
    except Exception as e:  # the checks will report the import error one by one
        print(f"# could not import the SDKs: {type(e).__name__}: {one_line(e)}", flush=True)

    passed = failed = 0
    for name, check in CHECKS:
        try:
            check()
        except Exception as e:
            failed += 1
            print(f"FAIL {name}: {describe(e)}", flush=True)
        else:
            passed += 1
            print(f"ok   {name}", flush=True)
    print(f"{passed} passed, {failed} failed", flush=True)
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
