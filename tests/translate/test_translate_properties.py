"""Property-based tests: round trips preserve meaning, and any chunking of a stream assembles to
the same message as the non-streamed translation.

The generators produce requests in each dialect's canonical form (the form a translation into that
dialect produces), for which a round trip must give back exactly the input.
"""

from __future__ import annotations

import itertools
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sdk_checks import anthropic_request, assemble_anthropic, assemble_openai, openai_request

from cortex.translate import (
    anthropic_to_openai_request,
    anthropic_to_openai_response,
    anthropic_to_openai_stream,
    openai_to_anthropic_request,
    openai_to_anthropic_response,
    openai_to_anthropic_stream,
)

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)
ident = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=8)
json_value = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(ident, inner, max_size=3),
    max_leaves=6,
)
arguments = st.dictionaries(ident, json_value, max_size=3)
image_url = st.sampled_from(["https://example.com/a.png", "data:image/png;base64,iVBORw0KGgo="])


@st.composite
def openai_tool_calls(draw: st.DrawFn) -> list[dict]:
    names = draw(st.lists(ident, min_size=1, max_size=3))
    return [
        {
            "id": f"call_{i}",
            "type": "function",
            "function": {"name": name, "arguments": json.dumps(draw(arguments), ensure_ascii=False)},
        }
        for i, name in enumerate(names)
    ]


@st.composite
def openai_conversations(draw: st.DrawFn) -> list[dict]:
    messages: list[dict] = []
    if draw(st.booleans()):
        messages.append({"role": "system", "content": draw(text)})
    after_tools = False
    for _ in range(draw(st.integers(1, 3))):
        user_parts = st.lists(
            st.builds(lambda t: {"type": "text", "text": t}, text)
            | st.builds(lambda u: {"type": "image_url", "image_url": {"url": u}}, image_url),
            min_size=1,
            max_size=3,
        )
        # after tool messages a user turn folds into the tool results, so only a parts list is canonical
        messages.append({"role": "user", "content": draw(user_parts if after_tools else text | user_parts)})
        assistant: dict = {"role": "assistant"}
        if draw(st.booleans()):
            thinking = draw(st.lists(st.tuples(text, ident), min_size=1, max_size=2))
            assistant["reasoning_content"] = "\n\n".join(t for t, _ in thinking)
            assistant["thinking_blocks"] = [
                {"type": "thinking", "thinking": t, "signature": s} for t, s in thinking
            ]
        calls = draw(st.none() | openai_tool_calls())
        assistant["content"] = draw(text) if calls is None else draw(st.none() | text)
        if calls is not None:
            assistant["tool_calls"] = calls
        messages.append(
            dict(
                sorted(
                    assistant.items(),
                    key=lambda kv: [
                        "role",
                        "content",
                        "reasoning_content",
                        "thinking_blocks",
                        "tool_calls",
                    ].index(kv[0]),
                )
            )
        )
        for call in calls or []:
            tool: dict = {
                "role": "tool",
                "tool_call_id": call["id"],
                "content": draw(
                    text
                    | st.lists(st.builds(lambda t: {"type": "text", "text": t}, text), min_size=1, max_size=2)
                ),
            }
            if draw(st.booleans()):
                tool["is_error"] = True
            messages.append(tool)
        after_tools = calls is not None
    return messages


@st.composite
def openai_requests(draw: st.DrawFn) -> dict:
    body: dict = {"model": draw(ident), "messages": draw(openai_conversations())}
    body["max_completion_tokens"] = draw(st.integers(1, 100_000))
    for key, values in (
        ("temperature", st.floats(0, 1)),
        ("top_p", st.floats(0, 1)),
        ("top_k", st.integers(1, 100)),
        ("stop", st.lists(text, min_size=1, max_size=2)),
        ("user", ident),
        ("reasoning_effort", st.sampled_from(["none", "low", "medium", "high", "xhigh", "max"])),
    ):
        if draw(st.booleans()):
            body[key] = draw(values)
    if draw(st.booleans()):
        body["tools"] = [
            {
                "type": "function",
                "function": {"name": name, "description": "d", "parameters": {"type": "object"}},
            }
            for name in draw(st.lists(ident, min_size=1, max_size=3))
        ]
        choice = draw(st.sampled_from(["auto", "required", "none", "named"]))
        body["tool_choice"] = (
            {"type": "function", "function": {"name": body["tools"][0]["function"]["name"]}}
            if choice == "named"
            else choice
        )
        if choice != "none" and draw(st.booleans()):
            body["parallel_tool_calls"] = False
    if body.get("reasoning_effort") == "none":
        body["chat_template_kwargs"] = {"enable_thinking": False}
    elif "reasoning_effort" in body:
        body["chat_template_kwargs"] = {"enable_thinking": True}
    if draw(st.booleans()):
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


@SETTINGS
@given(openai_requests())
def test_openai_request_round_trip_is_exact(body):
    openai_request(body)
    middle = openai_to_anthropic_request(body)
    anthropic_request(middle)
    assert anthropic_to_openai_request(middle) == body


text_block = st.builds(lambda t: {"type": "text", "text": t}, text)
image_block = st.builds(
    lambda source: {"type": "image", "source": source},
    st.sampled_from(
        [
            {"type": "url", "url": "https://example.com/a.png"},
            {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
        ]
    ),
)


@st.composite
def anthropic_assistant(draw: st.DrawFn, turn: int) -> list[dict]:
    """Canonical assistant content: thinking blocks, at most one text block, then tool calls."""
    blocks: list[dict] = draw(
        st.lists(
            st.builds(lambda t, s: {"type": "thinking", "thinking": t, "signature": s}, text, ident)
            | st.builds(lambda d: {"type": "redacted_thinking", "data": d}, ident),
            max_size=2,
        )
    )
    if draw(st.booleans()):
        blocks.append(draw(text_block))
    for i in range(draw(st.integers(0, 2))):
        blocks.append(
            {"type": "tool_use", "id": f"toolu_{turn}_{i}", "name": draw(ident), "input": draw(arguments)}
        )
    return blocks


@st.composite
def anthropic_conversations(draw: st.DrawFn) -> list[dict]:
    messages: list[dict] = []
    pending_tool_ids: list[str] = []
    for turn in range(draw(st.integers(1, 3))):
        if pending_tool_ids:
            content: str | list[dict] = []
            for tool_id in pending_tool_ids:
                result = {"type": "tool_result", "tool_use_id": tool_id}
                result["content"] = draw(text | st.lists(text_block, max_size=2))
                if draw(st.booleans()):
                    result["is_error"] = True
                content.append(result)
            content += draw(st.lists(text_block | image_block, max_size=2))
        else:
            content = draw(text | st.lists(text_block | image_block, min_size=1, max_size=3))
        messages.append({"role": "user", "content": content})
        if draw(st.booleans()):
            messages.append(
                {"role": "system", "content": draw(text | st.lists(text_block, min_size=1, max_size=2))}
            )
        assistant = draw(anthropic_assistant(turn))
        messages.append({"role": "assistant", "content": assistant})
        pending_tool_ids = [block["id"] for block in assistant if block["type"] == "tool_use"]
    return messages


@st.composite
def anthropic_requests(draw: st.DrawFn) -> dict:
    body: dict = {"model": draw(ident), "max_tokens": draw(st.integers(1, 100_000))}
    if draw(st.booleans()):
        body["system"] = draw(text | st.lists(text_block, min_size=1, max_size=3))
    body["messages"] = draw(anthropic_conversations())
    for key, values in (
        ("temperature", st.floats(0, 1)),
        ("top_p", st.floats(0, 1)),
        ("top_k", st.integers(1, 100)),
        ("stop_sequences", st.lists(text, min_size=1, max_size=2)),
        ("metadata", st.builds(lambda user: {"user_id": user}, ident)),
        ("stream", st.just(True)),
    ):
        if draw(st.booleans()):
            body[key] = draw(values)
    if draw(st.booleans()):
        names = draw(st.lists(ident, min_size=1, max_size=3))
        body["tools"] = [
            {"name": name, "description": "d", "input_schema": {"type": "object"}} for name in names
        ]
        choice = draw(st.sampled_from([None, "auto", "any", "tool", "none"]))
        if choice is not None:
            body["tool_choice"] = {"type": choice, **({"name": names[0]} if choice == "tool" else {})}
            if choice != "none" and draw(st.booleans()):
                body["tool_choice"]["disable_parallel_tool_use"] = True
    thinking = draw(st.sampled_from([None, "adaptive", "disabled"]))
    if thinking is not None:
        body["thinking"] = {"type": thinking}
    output_config: dict = {}
    if thinking == "adaptive" and draw(st.booleans()):
        output_config["effort"] = draw(st.sampled_from(["low", "medium", "high", "xhigh", "max"]))
    if draw(st.booleans()):
        output_config["format"] = {"type": "json_schema", "schema": {"type": "object"}}
    if output_config:
        body["output_config"] = output_config
    return body


@SETTINGS
@given(anthropic_requests())
def test_anthropic_request_round_trip_is_exact(body):
    anthropic_request(body)
    middle = anthropic_to_openai_request(body)
    openai_request(middle)
    assert openai_to_anthropic_request(middle) == body


@st.composite
def split(draw: st.DrawFn, value: str) -> list[str]:
    """``value`` cut at arbitrary points (possibly into one piece)."""
    cuts = sorted(draw(st.sets(st.integers(1, max(len(value) - 1, 1)), max_size=4)))
    bounds = [0, *[c for c in cuts if c < len(value)], len(value)]
    return [value[a:b] for a, b in itertools.pairwise(bounds) if b > a]


@st.composite
def openai_streams(draw: st.DrawFn) -> tuple[dict, list]:
    """A completion and a chunking of it: reasoning, then text, then tool calls whose argument
    fragments interleave (each call's first fragment, with its id and name, in index order)."""
    reasoning = draw(st.none() | text)
    content = draw(st.none() | text)
    calls = draw(st.none() | openai_tool_calls())
    message: dict = {"role": "assistant", "content": content}
    if reasoning:
        message["reasoning_content"] = reasoning
    if calls:
        message["tool_calls"] = calls
    finish_reason = "tool_calls" if calls else draw(st.sampled_from(["stop", "length"]))
    usage = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
    completion = {
        "id": "chatcmpl-p",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": usage,
    }

    def chunk(delta: dict | None, finish: str | None = None, **extra) -> dict:
        choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
        return {
            "id": "chatcmpl-p",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": choices,
            **extra,
        }

    chunks = [chunk({"role": "assistant", "content": ""})]
    chunks += [chunk({"reasoning_content": piece}) for piece in draw(split(reasoning))] if reasoning else []
    chunks += [chunk({"content": piece}) for piece in draw(split(content))] if content else []
    if calls:
        queues = [
            [
                {
                    "index": i,
                    "id": c["id"],
                    "type": "function",
                    "function": {"name": c["function"]["name"], "arguments": ""},
                }
            ]
            + [
                {"index": i, "function": {"arguments": piece}}
                for piece in draw(split(c["function"]["arguments"]))
            ]
            for i, c in enumerate(calls)
        ]
        started = 0
        while any(queues):
            ready = [i for i, q in enumerate(queues) if q and (i < started or i == started)]
            i = draw(st.sampled_from(ready))
            started = max(started, i + 1)
            chunks.append(chunk({"tool_calls": [queues[i].pop(0)]}))
    chunks.append(chunk({}, finish_reason))
    chunks.append(chunk(None, usage=usage))
    return completion, chunks


@SETTINGS
@given(openai_streams())
def test_any_chunking_of_an_openai_stream_assembles_the_same_message(case):
    completion, chunks = case
    assert assemble_openai(chunks).choices[0].message.content == (
        completion["choices"][0]["message"]["content"] or ""
    )
    expected = openai_to_anthropic_response(completion)
    events = list(openai_to_anthropic_stream(chunks, input_tokens=11))
    assembled = assemble_anthropic(events).model_dump(exclude_none=True)
    assert assembled["content"] == expected["content"]
    assert assembled["stop_reason"] == expected["stop_reason"]
    assert assembled["usage"] == expected["usage"]


@st.composite
def anthropic_streams(draw: st.DrawFn) -> tuple[dict, list]:
    """A message and a stream of events for it with every delta cut at arbitrary points."""
    blocks: list[dict] = []
    events: list[dict] = []
    for kind in draw(st.lists(st.sampled_from(["thinking", "redacted", "text", "tool"]), max_size=5)):
        index = len(blocks)
        if kind == "thinking":
            block = {"type": "thinking", "thinking": draw(text), "signature": draw(ident)}
            start = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [{"type": "thinking_delta", "thinking": p} for p in draw(split(block["thinking"]))]
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
        elif kind == "redacted":
            block = start = {"type": "redacted_thinking", "data": draw(ident)}
            deltas = []
        elif kind == "text":
            block = {"type": "text", "text": draw(text)}
            start = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": p} for p in draw(split(block["text"]))]
        else:
            block = {
                "type": "tool_use",
                "id": f"toolu_{index}",
                "name": draw(ident),
                "input": draw(arguments),
            }
            start = {**block, "input": {}}
            deltas = [
                {"type": "input_json_delta", "partial_json": p}
                for p in draw(split(json.dumps(block["input"], ensure_ascii=False)))
            ]
        blocks.append(block)
        events.append({"type": "content_block_start", "index": index, "content_block": start})
        events += [{"type": "content_block_delta", "index": index, "delta": d} for d in deltas]
        events.append({"type": "content_block_stop", "index": index})
    stop_reason = (
        "tool_use"
        if any(b["type"] == "tool_use" for b in blocks)
        else draw(st.sampled_from(["end_turn", "max_tokens"]))
    )
    usage = {"input_tokens": 4, "output_tokens": 9}
    message = {
        "id": "msg_p",
        "type": "message",
        "role": "assistant",
        "model": "m",
        "content": blocks,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage,
    }
    start_message = {
        **message,
        "content": [],
        "stop_reason": None,
        "usage": {"input_tokens": 4, "output_tokens": 0},
    }
    events = [
        {"type": "message_start", "message": start_message},
        *events,
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": 9},
        },
        {"type": "message_stop"},
    ]
    return message, events


@SETTINGS
@given(anthropic_streams())
def test_any_chunking_of_an_anthropic_stream_assembles_the_same_completion(case):
    message, events = case
    assert assemble_anthropic(events).model_dump(exclude_none=True)["content"] == message["content"]
    expected = anthropic_to_openai_response(message, created=1)
    assembled = assemble_openai(list(anthropic_to_openai_stream(events, created=1, include_usage=True)))
    streamed = assembled.model_dump(exclude_none=True)
    for key in ("thinking_blocks", "tool_calls"):
        for entry in streamed["choices"][0]["message"].get(key, []):
            del entry["index"]
    expected_message = expected["choices"][0]["message"]
    if expected_message["content"] is None:
        expected_message["content"] = ""
    assert streamed["choices"][0]["message"] == expected_message
    assert streamed["choices"][0]["finish_reason"] == expected["choices"][0]["finish_reason"]
    assert streamed["usage"] == expected["usage"]
