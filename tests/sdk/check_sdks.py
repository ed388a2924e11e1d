"""Streams through the official OpenAI and Anthropic Python SDKs against the demo.

Usage: python3 tests/sdk/check_sdks.py http://127.0.0.1:PORT
Prints one JSON line with what the SDKs parsed; exits non-zero if they parsed something else.
"""
import json
import sys

import anthropic
import openai

# The demo's simulated text: these words in turn (examples/demo/sim.rs).
WORDS = [" The", " tower", " falls,", " and", " a", " new", " road", " opens", " through", " the",
         " wasteland", " of", " cards", " that", " speak", "."]


def expected_text(n):
    return "".join(WORDS[i % len(WORDS)] for i in range(n))


def main(base):
    knobs = {"x-sim-ttft-ms": "20", "x-sim-token-interval-ms": "2"}
    result = {}

    client = openai.OpenAI(base_url=f"{base}/v1", api_key="sim-key", max_retries=0)
    # Part of the prompt read from the cache, so the cached-input price is exercised.
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Read the cards."}],
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={**knobs, "x-sim-tokens": "12", "x-sim-cached-tokens": "1024"},
    )
    text, usage = "", None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        if chunk.usage:
            usage = chunk.usage
    assert text == expected_text(12), f"openai chat text: {text!r}"
    assert usage is not None and usage.completion_tokens == 12 and usage.prompt_tokens == 12 + 1024, usage
    assert usage.prompt_tokens_details.cached_tokens == 1024, usage
    result["openai_chat"] = {"text": text, "output_tokens": usage.completion_tokens}
    # Usage as the SDK parsed it, for the cost check: (input, output, cache read, cache write).
    stream_usage = {"openai_chat": [usage.prompt_tokens, usage.completion_tokens,
                                    usage.prompt_tokens_details.cached_tokens if usage.prompt_tokens_details else 0, 0]}

    events = client.responses.create(
        model="gpt-4.1", input="Read the cards.", stream=True, extra_headers={**knobs, "x-sim-tokens": "7"}
    )
    text, completed = "", None
    for event in events:
        if event.type == "response.output_text.delta":
            text += event.delta
        elif event.type == "response.completed":
            completed = event.response
    assert text == expected_text(7), f"openai responses text: {text!r}"
    assert completed is not None and completed.usage.output_tokens == 7, completed
    result["openai_responses"] = {"text": text, "output_tokens": completed.usage.output_tokens}
    u = completed.usage
    stream_usage["openai_responses"] = [u.input_tokens, u.output_tokens,
                                        u.input_tokens_details.cached_tokens if u.input_tokens_details else 0, 0]

    client = anthropic.Anthropic(base_url=base, api_key="sim-key", max_retries=0)
    with client.messages.stream(
        model="claude-sonnet-4-5",
        max_tokens=64,
        messages=[{"role": "user", "content": "Read the cards."}],
        extra_headers={**knobs, "x-sim-tokens": "9", "x-sim-cached-tokens": "2048"},
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == expected_text(9), f"anthropic text: {text!r}"
    assert final.usage.output_tokens == 9 and final.usage.input_tokens == 12, final.usage
    assert final.usage.cache_read_input_tokens == 2048, final.usage
    result["anthropic"] = {"text": text, "output_tokens": final.usage.output_tokens}
    # Anthropic counts cache reads and writes apart from input_tokens.
    u = final.usage
    read, write = u.cache_read_input_tokens or 0, u.cache_creation_input_tokens or 0
    stream_usage["anthropic"] = [u.input_tokens + read + write, u.output_tokens, read, write]
    result["stream_usage"] = stream_usage

    # An auth failure surfaces as the SDK's own error type.
    try:
        client.messages.create(
            model="claude-sonnet-4-5", max_tokens=8, messages=[{"role": "user", "content": "x"}],
            extra_headers={"x-sim-fail": "auth"},
        )
        raise AssertionError("expected an authentication error")
    except anthropic.AuthenticationError as error:
        result["anthropic_auth_error"] = error.status_code

    # Streaming requests that fail before their first byte, as the SDKs send them (JSON Accept,
    # "stream": true in the body): each surfaces as the SDK's own error type.
    failures = {}
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="sim-key", max_retries=0)
    for fail, error_type in [("server", openai.InternalServerError), ("rate_limit", openai.RateLimitError),
                             ("timeout", openai.APIStatusError)]:
        try:
            for _ in client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}], stream=True,
                extra_headers={**knobs, "x-sim-fail": fail},
            ):
                pass
            raise AssertionError(f"expected a failure for {fail}")
        except error_type as error:
            failures[f"openai_{fail}"] = error.status_code
    try:
        with client_anthropic_stream(base, knobs, "server"):
            pass
        raise AssertionError("expected an anthropic server error")
    except anthropic.APIStatusError as error:
        failures["anthropic_server"] = error.status_code
    result["stream_failures"] = failures

    # Cached prompt tokens and reasoning tokens in each SDK's own usage types, on plain JSON
    # answers (no stream, so the streaming figures above stay as they are).
    parts = {"x-sim-cached-tokens": "2048", "x-sim-reasoning-tokens": "120", "x-sim-ttft-ms": "0"}
    answer = client.chat.completions.create(
        model="o4-mini", messages=[{"role": "user", "content": "x"}],
        extra_headers={**parts, "x-sim-tokens": "5"},
    )
    usage = answer.usage
    assert (usage.prompt_tokens, usage.prompt_tokens_details.cached_tokens) == (12 + 2048, 2048), usage
    assert (usage.completion_tokens, usage.completion_tokens_details.reasoning_tokens) == (5 + 120, 120), usage
    assert usage.total_tokens == 12 + 2048 + 5 + 120, usage
    client = anthropic.Anthropic(base_url=base, api_key="sim-key", max_retries=0)
    message = client.messages.create(
        model="claude-sonnet-4-5", max_tokens=8, messages=[{"role": "user", "content": "x"}],
        extra_headers={**parts, "x-sim-tokens": "5"},
    )
    usage = message.usage
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.cache_creation_input_tokens,
            usage.output_tokens) == (12, 2048, 0, 5), usage
    result["usage_parts"] = {"openai_cached": answer.usage.prompt_tokens_details.cached_tokens,
                             "openai_reasoning": answer.usage.completion_tokens_details.reasoning_tokens,
                             "anthropic_cache_read": usage.cache_read_input_tokens}

    print(json.dumps(result))


def client_anthropic_stream(base, knobs, fail):
    client = anthropic.Anthropic(base_url=base, api_key="sim-key", max_retries=0)
    return client.messages.stream(
        model="claude-sonnet-4-5", max_tokens=8, messages=[{"role": "user", "content": "x"}],
        extra_headers={**knobs, "x-sim-fail": fail},
    )


if __name__ == "__main__":
    main(sys.argv[1])
