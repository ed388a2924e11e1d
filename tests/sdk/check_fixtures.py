"""Reads every fixture stream through the official SDKs' own types and checks its usage figures.

Usage: python3 tests/sdk/check_fixtures.py tests/fixtures

For each DIR/NAME.sse: splits the body into SSE events (LF, CRLF or CR line endings), parses each
event's JSON with the provider's official Python SDK model (OpenAI chat: ChatCompletionChunk,
legacy completions: Completion; OpenAI Responses: the ResponseStreamEvent member its `type`
names; Anthropic: the RawMessageStreamEvent member its `type` names; Gemini:
google.genai's GenerateContentResponse; Cohere: the V2ChatStreamResponse member its `type`
names), stops where the SDK's stream would stop (OpenAI's
`[DONE]` or error object, Anthropic's `error` event), takes the usage the SDK objects report and
computes the project's provider-neutral figures from them:

    input_tokens                 every prompt token (Anthropic: input + cache writes + cache reads)
                                 (Cohere: usage.tokens, not billed_units, which leave out the
                                 prompt template)
    output_tokens                every generated token (Gemini: candidates + thoughts)
    cache_read_input_tokens      prompt tokens read from a cache, None if never reported
    cache_creation_input_tokens  prompt tokens written to a cache (Anthropic only)
    cache_creation_1h_input_tokens  the part of those written to the 1-hour cache (Anthropic's
                                 cache_creation.ephemeral_1h_input_tokens), None if never reported
    reasoning_output_tokens      reasoning/thinking tokens inside output_tokens, None if never reported

and compares them with NAME.expected.json. A stream that reports no output figure (cut by an
error, or without usage) must expect `"token_source": "counted"`; one that does, "reported".

Fields a fixture leaves out although the SDK's model requires them (trimmed envelopes) do not
fail the check: such an event is then built the way the SDK clients build every event by default
(without validation, `construct`), and the missing fields are listed in the output. Any other
validation error, an event type the SDK does not know, or a figure that differs does fail.

Prints one JSON line per fixture; exits 1, with every mismatch on stderr, if any fixture fails.
"""
import json
import sys
import typing
from pathlib import Path

import anthropic.types
import cohere.v2.types
import openai.types
import openai.types.chat
import openai.types.responses
import openai.types.shared
from google.genai import types as genai_types
from pydantic import ValidationError

FIGURES = [
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "cache_creation_1h_input_tokens",
    "reasoning_output_tokens",
]


class Mismatch(Exception):
    pass


def sse_events(body):
    """(event name or None, data) for each dispatched SSE event, as the SSE spec splits them."""
    text = body.decode("utf-8")
    if text.startswith("\ufeff"):
        text = text[1:]
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    events, name, data = [], None, []
    for line in text.split("\n"):
        if line == "":
            if data:
                events.append((name, "\n".join(data)))
            name, data = None, []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)
    # An event the body ends before its blank line is never dispatched (SSE spec).
    return events


def members_by_type(union):
    """{type literal: model class} for a discriminated union of the SDK's event models."""
    args = typing.get_args(union)
    if args and typing.get_origin(args[0]) is typing.Union:
        args = typing.get_args(args[0])
    out = {}
    for cls in args:
        for literal in typing.get_args(cls.model_fields["type"].annotation):
            out[literal] = cls
    return out


RESPONSES_EVENTS = members_by_type(openai.types.responses.ResponseStreamEvent)
ANTHROPIC_EVENTS = members_by_type(anthropic.types.RawMessageStreamEvent)
COHERE_EVENTS = members_by_type(cohere.v2.types.V2ChatStreamResponse)


def parse(model, data, absent):
    """`data` validated as the SDK model `model`; fields the data lacks are noted in `absent`."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        errors = err.errors()
        wrong = [e for e in errors if e["type"] != "missing"]
        if wrong:
            first = wrong[0]
            loc = ".".join(str(p) for p in first["loc"])
            raise Mismatch(f"{model.__name__} rejects the event at {loc}: {first['msg']} ({len(wrong)} error(s))")
        for e in errors:
            absent.add(model.__name__ + "." + ".".join(str(p) for p in e["loc"]))
        # What the SDK clients do with every event unless strict validation is switched on.
        return model.construct(**data)


def attr(obj, *path):
    for name in path:
        if obj is None:
            return None
        obj = getattr(obj, name, None)
    return obj


class OpenAiChat:
    format = "openai_chat"

    def __init__(self):
        self.sdk = "openai.types.chat.ChatCompletionChunk"
        self.usage = None

    def feed(self, name, data, absent):
        if data.startswith("[DONE]"):
            return False
        obj = json.loads(data)
        if isinstance(obj, dict) and obj.get("error"):
            # The SDK raises APIError here and the stream ends.
            parse(openai.types.shared.ErrorObject, obj["error"], absent)
            return False
        if obj.get("object") == "text_completion":
            self.sdk = "openai.types.Completion"
            chunk = parse(openai.types.Completion, obj, absent)
        else:
            chunk = parse(openai.types.chat.ChatCompletionChunk, obj, absent)
        if chunk.usage is not None:
            self.usage = chunk.usage
        return True

    def figures(self):
        u = self.usage
        return {
            "input_tokens": attr(u, "prompt_tokens"),
            "output_tokens": attr(u, "completion_tokens"),
            "cache_read_input_tokens": attr(u, "prompt_tokens_details", "cached_tokens"),
            "cache_creation_input_tokens": None,
            "cache_creation_1h_input_tokens": None,
            "reasoning_output_tokens": attr(u, "completion_tokens_details", "reasoning_tokens"),
        }


class OpenAiResponses:
    format = "openai_responses"
    sdk = "openai.types.responses.ResponseStreamEvent"

    def __init__(self):
        self.usage = None

    def feed(self, name, data, absent):
        if data.startswith("[DONE]"):
            return False
        obj = json.loads(data)
        model = RESPONSES_EVENTS.get(obj.get("type"))
        if model is None:
            raise Mismatch(f"event type {obj.get('type')!r} is not in {self.sdk}")
        event = parse(model, obj, absent)
        # response.completed, response.incomplete and response.failed carry the final usage.
        usage = attr(event, "response", "usage")
        if usage is not None:
            self.usage = usage
        return True

    def figures(self):
        u = self.usage
        return {
            "input_tokens": attr(u, "input_tokens"),
            "output_tokens": attr(u, "output_tokens"),
            "cache_read_input_tokens": attr(u, "input_tokens_details", "cached_tokens"),
            "cache_creation_input_tokens": None,
            "cache_creation_1h_input_tokens": None,
            "reasoning_output_tokens": attr(u, "output_tokens_details", "reasoning_tokens"),
        }


class AnthropicMessages:
    format = "anthropic_messages"
    sdk = "anthropic.types.RawMessageStreamEvent"

    def __init__(self):
        self.latest = {"input_tokens": None, "cache_creation_input_tokens": None, "cache_read_input_tokens": None}
        self.written_1h = None
        self.output = None

    def take(self, usage):
        for key in self.latest:
            value = getattr(usage, key, None)
            if value is not None:
                self.latest[key] = value
        # The writes by lifetime, when the usage breaks them down (its `cache_creation`).
        written_1h = attr(usage, "cache_creation", "ephemeral_1h_input_tokens")
        if written_1h is not None:
            self.written_1h = written_1h

    def feed(self, name, data, absent):
        if name == "ping":
            return True  # the SDK skips these
        obj = json.loads(data)
        if name == "error":
            # The SDK raises an APIStatusError with this body and the stream ends.
            parse(anthropic.types.ErrorResponse, obj, absent)
            return False
        model = ANTHROPIC_EVENTS.get(obj.get("type"))
        if model is None:
            raise Mismatch(f"event type {obj.get('type')!r} is not in {self.sdk}")
        event = parse(model, obj, absent)
        if event.type == "message_start":
            # message_start's output_tokens is a placeholder (1 or 2), not a count of the answer.
            self.take(event.message.usage)
        elif event.type == "message_delta":
            # Cumulative: each message_delta restates the totals so far.
            self.take(event.usage)
            self.output = event.usage.output_tokens
        return True

    def figures(self):
        base = self.latest["input_tokens"]
        written = self.latest["cache_creation_input_tokens"]
        read = self.latest["cache_read_input_tokens"]
        return {
            "input_tokens": None if base is None else base + (written or 0) + (read or 0),
            "output_tokens": self.output,
            "cache_read_input_tokens": read,
            "cache_creation_input_tokens": written,
            "cache_creation_1h_input_tokens": self.written_1h,
            "reasoning_output_tokens": None,
        }


class Gemini:
    format = "gemini"
    sdk = "google.genai.types.GenerateContentResponse"

    def __init__(self):
        self.usage = None

    def feed(self, name, data, absent):
        obj = json.loads(data)
        if isinstance(obj, dict) and "error" in obj:
            return False  # the SDK raises on an error chunk
        try:
            chunk = genai_types.GenerateContentResponse.model_validate(obj)
        except ValidationError as err:
            first = err.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            raise Mismatch(f"GenerateContentResponse rejects the chunk at {loc}: {first['msg']}") from None
        if chunk.usage_metadata is not None:
            self.usage = chunk.usage_metadata
        return True

    def figures(self):
        u = self.usage
        candidates = attr(u, "candidates_token_count")
        thoughts = attr(u, "thoughts_token_count")
        output = None if candidates is None and thoughts is None else (candidates or 0) + (thoughts or 0)
        return {
            "input_tokens": attr(u, "prompt_token_count"),
            "output_tokens": output,
            "cache_read_input_tokens": attr(u, "cached_content_token_count"),
            "cache_creation_input_tokens": None,
            "cache_creation_1h_input_tokens": None,
            "reasoning_output_tokens": thoughts,
        }


class CohereChat:
    format = "cohere_chat"
    sdk = "cohere.v2.types.V2ChatStreamResponse"

    def __init__(self):
        self.usage = None

    def feed(self, name, data, absent):
        if data == "[DONE]":
            return False  # where the SDK's iterator stops
        obj = json.loads(data)
        model = COHERE_EVENTS.get(obj.get("type"))
        if model is None:
            raise Mismatch(f"event type {obj.get('type')!r} is not in {self.sdk}")
        event = parse(model, obj, absent)
        # message-end carries the one usage of the stream.
        usage = attr(event, "delta", "usage")
        if usage is not None:
            self.usage = usage
        return True

    def figures(self):
        u = self.usage
        count = lambda v: None if v is None else int(v)  # the SDK types counts as floats
        return {
            "input_tokens": count(attr(u, "tokens", "input_tokens")),
            "output_tokens": count(attr(u, "tokens", "output_tokens")),
            "cache_read_input_tokens": count(attr(u, "cached_tokens")),
            "cache_creation_input_tokens": None,
            "cache_creation_1h_input_tokens": None,
            "reasoning_output_tokens": None,
        }


ANTHROPIC_TYPES = set(ANTHROPIC_EVENTS) | {"ping", "error"}


def reader_for(events):
    """The reader for the wire format the stream's first recognisable event shows."""
    for name, data in events:
        try:
            obj = json.loads(data)
        except ValueError:
            continue
        if not isinstance(obj, dict):
            continue
        if obj.get("object") in ("chat.completion.chunk", "text_completion"):
            return OpenAiChat()
        kind = obj.get("type")
        if isinstance(kind, str) and kind.startswith("response."):
            return OpenAiResponses()
        if kind in ANTHROPIC_TYPES or name in ANTHROPIC_TYPES:
            return AnthropicMessages()
        if "candidates" in obj or "usageMetadata" in obj:
            return Gemini()
        if kind in COHERE_EVENTS:
            return CohereChat()
    raise Mismatch("no event identifies the provider")


def check(path):
    expected_path = path.with_name(path.stem + ".expected.json")
    if not expected_path.exists():
        raise Mismatch(f"{expected_path.name} is missing")
    expected = json.loads(expected_path.read_text())
    events = sse_events(path.read_bytes())
    reader = reader_for(events)
    if expected.get("format") != reader.format:
        raise Mismatch(f"the stream is {reader.format}, the expected file says {expected.get('format')}")
    absent, read, ended_by_error = set(), 0, False
    for name, data in events:
        read += 1
        if not reader.feed(name, data, absent):
            ended_by_error = not data.startswith("[DONE]")
            break
    got = reader.figures()
    problems = []
    for key in FIGURES:
        if key not in expected:
            problems.append(f"{key}: absent from {expected_path.name}")
            continue
        if key == "output_tokens" and got[key] is None:
            # Nothing reported: the monitor counts content events instead.
            if expected.get("token_source") != "counted":
                problems.append(
                    f"output_tokens: the SDK saw no usage, so token_source must be counted, "
                    f"not {expected.get('token_source')}"
                )
            continue
        if expected[key] != got[key]:
            problems.append(f"{key}: the SDK's usage gives {got[key]}, {expected_path.name} says {expected[key]}")
    if got["output_tokens"] is not None and expected.get("token_source") != "reported":
        problems.append(f"token_source: the SDK saw usage, so reported, not {expected.get('token_source')}")
    line = {
        "fixture": path.stem,
        "sdk": reader.sdk,
        "events": read,
        "ended_by_error": ended_by_error,
        **{key: ("counted" if key == "output_tokens" and got[key] is None else got[key]) for key in FIGURES},
        "absent_required": sorted(absent),
    }
    return line, problems


def main(directory):
    paths = sorted(Path(directory).glob("*.sse"))
    if not paths:
        print(f"no *.sse files in {directory}", file=sys.stderr)
        return 2
    failures = []
    for path in paths:
        try:
            line, problems = check(path)
        except (Mismatch, ValueError) as err:
            failures.append(f"{path.name}: {err}")
            continue
        print(json.dumps(line), flush=True)
        failures.extend(f"{path.name}: {p}" for p in problems)
    if failures:
        print("the SDKs read these fixtures differently from their .expected.json:", file=sys.stderr)
        for failure in failures:
            print("  " + failure, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__.splitlines()[2], file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
