"""OpenAI Responses <-> Chat Completions: requests, input items, Response objects and event streams,
each checked by the openai SDK's own types and its Responses stream helper state."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sdk_checks import (
    assemble_responses,
    openai_request,
    responses_event,
    responses_request,
    responses_response,
)

from cortex import translate
from cortex.translate import TranslationError
from cortex.translate.responses_items import decode_reasoning, encode_reasoning, split_namespace
from cortex.translate.responses_output import ResponsesStreamBuilder

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "strict": True,
}
AGENTS = {
    "type": "namespace",
    "name": "agents",
    "description": "Sub-agents",
    "tools": [{"type": "function", "name": "spawn", "parameters": {"type": "object", "properties": {}}}],
}


def _chat(body: dict[str, Any]) -> dict[str, Any]:
    responses_request(body)  # the input is a real Responses body
    chat = translate.responses_to_openai_request(body)
    openai_request(chat)  # and the output a real Chat Completions body
    return chat


def test_a_string_input_with_instructions_and_sampling_settings():
    chat = _chat(
        {
            "model": "m",
            "input": "hi",
            "instructions": "be brief",
            "max_output_tokens": 12,
            "temperature": 0.5,
            "top_p": 0.9,
            "store": False,
            "metadata": {"k": "v"},
            "truncation": "auto",
        }
    )
    assert chat == {
        "model": "m",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        "temperature": 0.5,
        "top_p": 0.9,
        "max_completion_tokens": 12,
    }


def test_a_whole_conversation_becomes_one_assistant_message_per_turn():
    carrier = encode_reasoning("carried thought")
    body = {
        "model": "m",
        "stream": True,
        "input": [
            {"role": "developer", "content": "rules"},
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "look"},
                    {"type": "input_image", "image_url": "https://x/y.png", "detail": "low"},
                    {"type": "input_image", "image_url": "data:image/png;base64,AA==", "detail": "auto"},
                ],
            },
            {
                "type": "reasoning",
                "id": "rs_1",
                "summary": [],
                "content": [{"type": "reasoning_text", "text": "a"}],
            },
            {"type": "reasoning", "id": "rs_2", "summary": [{"type": "summary_text", "text": "b"}]},
            {
                "type": "message",
                "id": "msg_1",
                "role": "assistant",
                "status": "completed",
                "content": [
                    {"type": "output_text", "text": "calling", "annotations": []},
                    {"type": "refusal", "refusal": "!"},
                ],
            },
            {
                "type": "function_call",
                "call_id": "call_1",
                "name": "get_weather",
                "arguments": '{"city":"P"}',
            },
            {
                "type": "function_call",
                "call_id": "call_2",
                "name": "spawn",
                "namespace": "agents",
                "arguments": "{}",
            },
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
            {
                "type": "function_call_output",
                "call_id": "call_2",
                "output": [{"type": "input_text", "text": "ok"}],
            },
            {"type": "reasoning", "id": "rs_3", "summary": [], "encrypted_content": carrier},
            {"type": "reasoning", "id": "rs_4", "summary": [], "encrypted_content": "gAAAA-from-openai"},
            {"role": "assistant", "content": "done"},
            {"type": "reasoning", "id": "rs_5", "summary": []},
            {"role": "user", "content": "thanks"},
        ],
        "tools": [WEATHER, AGENTS, {"type": "web_search", "external_web_access": False}],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "reasoning": {"effort": "low", "summary": "auto"},
        "include": ["message.output_text.logprobs", "reasoning.encrypted_content"],
        "top_logprobs": 2,
        "text": {
            "format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}, "strict": True}
        },
        "safety_identifier": "u1",
    }
    chat = _chat(body)
    assert chat["messages"] == [
        {"role": "developer", "content": "rules"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA==", "detail": "auto"}},
            ],
        },
        {
            "role": "assistant",
            "content": "calling!",
            "reasoning_content": "a\n\nb",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"P"}'},
                },
                {"id": "call_2", "type": "function", "function": {"name": "agents.spawn", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "ok"}]},
        {"role": "assistant", "content": "done", "reasoning_content": "carried thought"},
        {"role": "user", "content": "thanks"},
    ]
    assert [t["function"]["name"] for t in chat["tools"]] == ["get_weather", "agents.spawn"]
    assert chat["tools"][0]["function"]["strict"] is True
    assert chat["tool_choice"] == "auto"
    assert chat["parallel_tool_calls"] is False
    assert chat["reasoning_effort"] == "low"
    assert (chat["logprobs"], chat["top_logprobs"]) == (True, 2)
    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "out", "schema": {"type": "object"}, "strict": True},
    }
    assert chat["user"] == "u1"
    assert chat["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(
    ("choice", "tools", "expected_choice", "expected_tools"),
    [
        (
            {"type": "function", "name": "get_weather"},
            [WEATHER],
            {"type": "function", "function": {"name": "get_weather"}},
            ["get_weather"],
        ),
        (
            {"type": "function", "name": "spawn", "namespace": "agents"},
            [AGENTS],
            {"type": "function", "function": {"name": "agents.spawn"}},
            ["agents.spawn"],
        ),
        (
            {
                "type": "allowed_tools",
                "mode": "required",
                "tools": [{"type": "function", "name": "get_weather"}],
            },
            [WEATHER, AGENTS],
            "required",
            ["get_weather"],
        ),
        (
            {
                "type": "allowed_tools",
                "mode": "auto",
                "tools": [{"type": "function", "name": "spawn", "namespace": "agents"}],
            },
            [WEATHER, AGENTS],
            "auto",
            ["agents.spawn"],
        ),
        ("required", [WEATHER], "required", ["get_weather"]),
    ],
)
def test_tool_choices(choice, tools, expected_choice, expected_tools):
    chat = _chat({"model": "m", "input": "x", "tools": tools, "tool_choice": choice})
    assert chat["tool_choice"] == expected_choice
    assert [t["function"]["name"] for t in chat["tools"]] == expected_tools


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ({"format": {"type": "text"}, "verbosity": "low"}, None),
        ({"verbosity": "low"}, None),
        ({"format": {"type": "json_object"}}, {"type": "json_object"}),
        (
            {"format": {"type": "json_schema", "name": "", "schema": {"type": "object"}}},
            {"type": "json_schema", "json_schema": {"name": "output", "schema": {"type": "object"}}},
        ),
    ],
)
def test_text_formats(text, expected):
    chat = translate.responses_to_openai_request({"model": "m", "input": "x", "text": text, "reasoning": {}})
    assert chat.get("response_format") == expected
    assert "reasoning_effort" not in chat


def test_top_logprobs_alone_asks_for_logprobs_and_extensions_pass_through():
    chat = translate.responses_to_openai_request(
        {"model": "m", "input": [], "instructions": "x", "top_logprobs": 3, "top_k": 5, "seed": 7}
    )
    assert (chat["logprobs"], chat["top_logprobs"], chat["top_k"], chat["seed"]) == (True, 3, 5, 7)
    assert chat["messages"] == [{"role": "system", "content": "x"}]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"background": True}, "background"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"prompt": {"id": "p"}}, "prompt"),
        ({"input": []}, "input"),
        ({"input": [{"role": "critic", "content": "x"}]}, "input[0].role"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
            "input[0].content[0].type",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
            "input[0].content[0]",
        ),
        (
            {"input": [{"role": "assistant", "content": [{"type": "input_image", "image_url": "u"}]}]},
            "input[0].content[0].type",
        ),
        (
            {
                "input": [
                    {"type": "function_call_output", "call_id": "c", "output": [{"type": "input_image"}]}
                ]
            },
            "input[0].output[0].type",
        ),
        ({"tools": [{"type": "custom", "name": "apply_patch"}]}, "tools[0].type"),
        (
            {"tools": [{"type": "namespace", "name": "n", "tools": [{"type": "custom", "name": "c"}]}]},
            "tools[0].tools[0].type",
        ),
        ({"tools": [WEATHER], "tool_choice": {"type": "web_search"}}, "tool_choice.type"),
        (
            {
                "tools": [WEATHER],
                "tool_choice": {"type": "allowed_tools", "mode": "auto", "tools": [{"type": "mcp"}]},
            },
            "tool_choice.tools[0]",
        ),
        ({"text": {"format": {"type": "grammar"}}}, "text.format"),
    ],
)
def test_what_cannot_be_served_is_a_translation_error_naming_the_field(body, param):
    with pytest.raises(TranslationError) as error:
        translate.responses_to_openai_request({"model": "m", "input": "x", **body})
    assert error.value.param == param


def test_input_items_as_stored_have_ids_and_statuses():
    assert translate.responses_input_items({"model": "m"}) == []
    (item,) = translate.responses_input_items({"model": "m", "input": "hi"})
    assert item["id"].startswith("msg_")
    assert item == {
        "id": item["id"],
        "type": "message",
        "role": "user",
        "status": "completed",
        "content": [{"type": "input_text", "text": "hi"}],
    }
    items = translate.responses_input_items(
        {
            "model": "m",
            "input": [
                {"role": "assistant", "content": "before"},
                {"type": "function_call", "id": "fc_keep", "call_id": "c", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c", "output": "r"},
                {"type": "reasoning", "summary": []},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "t"}]},
            ],
        }
    )
    assert items[0]["content"] == [{"type": "output_text", "text": "before", "annotations": []}]
    assert items[1]["id"] == "fc_keep"
    assert [i["id"].split("_")[0] for i in items] == ["msg", "fc", "fco", "rs", "msg"]
    assert all(i["status"] == "completed" for i in items)


COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "choices": [
        {
            "index": 0,
            "finish_reason": "tool_calls",
            "message": {
                "role": "assistant",
                "content": "It is",
                "reasoning_content": "think",
                "tool_calls": [
                    {
                        "id": "call_a",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"P"}'},
                    },
                    {
                        "id": "call_b",
                        "type": "function",
                        "function": {"name": "agents.spawn", "arguments": "{}"},
                    },
                ],
            },
            "logprobs": {
                "content": [
                    {
                        "token": "It",
                        "logprob": -0.1,
                        "bytes": [73, 116],
                        "top_logprobs": [{"token": "It", "logprob": -0.1}],
                    },
                    {"token": " is", "logprob": -0.2, "top_logprobs": []},
                ]
            },
        }
    ],
    "usage": {
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "total_tokens": 15,
        "prompt_tokens_details": {"cached_tokens": 4},
        "completion_tokens_details": {"reasoning_tokens": 2},
    },
}
REQUEST = {
    "model": "m",
    "input": "x",
    "tools": [WEATHER, AGENTS],
    "include": ["reasoning.encrypted_content"],
    "store": False,
}


def test_a_completion_as_a_response():
    response = translate.openai_to_responses_response(COMPLETION, REQUEST, response_id="resp_1", created_at=5)
    parsed = responses_response(response)
    assert (parsed.id, parsed.created_at, parsed.status, parsed.store) == ("resp_1", 5, "completed", False)
    reasoning, message, weather, spawn = parsed.output
    assert reasoning.type == "reasoning"
    assert reasoning.content[0].text == "think"
    assert decode_reasoning(reasoning.encrypted_content) == "think"
    assert message.content[0].text == "It is"
    assert [lp.token for lp in message.content[0].logprobs] == ["It", " is"]
    assert message.content[0].logprobs[1].bytes == list(b" is")
    assert (weather.name, weather.call_id, weather.namespace) == ("get_weather", "call_a", None)
    assert (spawn.name, spawn.namespace, spawn.arguments) == ("spawn", "agents", "{}")
    assert parsed.output_text == "It is"
    assert parsed.usage.input_tokens_details.cached_tokens == 4
    assert parsed.usage.output_tokens_details.reasoning_tokens == 2
    assert parsed.usage.total_tokens == 15
    assert [t.type for t in parsed.tools] == ["function", "namespace"]


def test_length_is_incomplete_and_a_refusal_is_a_part():
    completion = {
        "id": "c",
        "model": "m",
        "choices": [
            {
                "index": 0,
                "finish_reason": "length",
                "message": {"role": "assistant", "content": "partial", "refusal": "no", "reasoning": "r"},
            }
        ],
    }
    parsed = responses_response(translate.openai_to_responses_response(completion, {"model": "m"}))
    assert parsed.status == "incomplete"
    assert parsed.incomplete_details.reason == "max_output_tokens"
    assert parsed.output[-1].status == "incomplete"
    assert [p.type for p in parsed.output[1].content] == ["output_text", "refusal"]
    assert parsed.output[0].encrypted_content is None
    assert parsed.usage is None
    empty = {
        "id": "c",
        "model": "m",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"content": None}}],
    }
    assert translate.openai_to_responses_response(empty, {"model": "m"})["output"] == []
    with pytest.raises(TranslationError):
        translate.openai_to_responses_response({"choices": []}, {"model": "m"})


def _chunks(pieces: list[dict[str, Any]], *, finish: str, usage: dict | None = None) -> list[dict[str, Any]]:
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    chunks = [
        {
            **base,
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}],
        }
    ]
    for piece in pieces:
        chunks.append(
            {
                **base,
                "choices": [
                    {
                        "index": 0,
                        "delta": piece.get("delta", {}),
                        "finish_reason": None,
                        "logprobs": piece.get("logprobs"),
                    }
                ],
            }
        )
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    if usage is not None:
        chunks.append({**base, "choices": [], "usage": usage})
    return chunks


def _without_ids(response: Any) -> dict[str, Any]:
    body = response.model_dump(exclude_none=True)
    for item in body["output"]:
        item.pop("id", None)
    return body


def _stream_pieces(completion: dict[str, Any]) -> list[dict[str, Any]]:
    """The completion's message as stream deltas, split in two wherever it can be."""
    choice = completion["choices"][0]
    message = choice["message"]
    pieces: list[dict[str, Any]] = []
    reasoning = message["reasoning_content"]
    pieces += [
        {"delta": {"reasoning_content": reasoning[:2]}},
        {"delta": {"reasoning_content": reasoning[2:]}},
    ]
    for entry in choice["logprobs"]["content"]:
        pieces.append({"delta": {"content": entry["token"]}, "logprobs": {"content": [entry]}})
    for i, call in enumerate(message["tool_calls"]):
        name, arguments = call["function"]["name"], call["function"]["arguments"]
        pieces.append(
            {
                "delta": {
                    "tool_calls": [
                        {"index": i, "id": call["id"], "type": "function", "function": {"name": name[:3]}}
                    ]
                }
            }
        )
        pieces.append(
            {
                "delta": {
                    "tool_calls": [{"index": i, "function": {"name": name[3:], "arguments": arguments[:1]}}]
                }
            }
        )
        pieces.append({"delta": {"tool_calls": [{"index": i, "function": {"arguments": arguments[1:]}}]}})
    return pieces


def _events(chunks: list[Any], request: dict[str, Any]) -> list[dict[str, Any]]:
    events = list(translate.openai_to_responses_stream(chunks, request, response_id="resp_1", created_at=5))
    for event in events:
        responses_event(event)
    return events


def test_a_stream_assembles_to_the_same_response_as_the_whole_completion():
    chunks = _chunks(_stream_pieces(COMPLETION), finish="tool_calls", usage=COMPLETION["usage"])
    events = _events([*chunks, "[DONE]"], REQUEST)
    assert [e["type"] for e in events[:3]] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
    ]
    assert events[-1]["type"] == "response.completed"
    kinds = [e["type"] for e in events]
    assert kinds.count("response.output_item.added") == kinds.count("response.output_item.done") == 4
    assert "response.reasoning_text.delta" in kinds
    assert "response.output_text.done" in kinds
    assert "response.function_call_arguments.done" in kinds
    whole = translate.openai_to_responses_response(COMPLETION, REQUEST, response_id="resp_1", created_at=5)
    assert _without_ids(assemble_responses(events)) == _without_ids(responses_response(whole))


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(min_value=1, max_value=4), min_size=1, max_size=12),
    st.sampled_from(["stop", "length"]),
)
def test_any_chunking_of_text_assembles_the_same_text(sizes, finish):
    text = "The quick brown fox jumps over the lazy dog"
    pieces, start = [], 0
    for size in itertools.cycle(sizes):
        if start >= len(text):
            break
        pieces.append({"delta": {"content": text[start : start + size]}})
        start += size
    events = _events(_chunks(pieces, finish=finish), {"model": "m"})
    final = assemble_responses(events)
    assert final.output_text == text
    assert final.status == ("completed" if finish == "stop" else "incomplete")
    assert events[-1]["type"] == ("response.completed" if finish == "stop" else "response.incomplete")


def test_refusal_parts_calls_without_arguments_and_other_choices():
    pieces = [
        {"delta": {"content": "a"}},
        {"delta": {"refusal": "no"}},
        {"delta": {"tool_calls": [{"index": 0, "id": "call_x", "function": {"name": "get_weather"}}]}},
    ]
    chunks = _chunks(pieces, finish="tool_calls")
    chunks.insert(2, {"id": "c", "model": "m", "choices": [{"index": 1, "delta": {"content": "other"}}]})
    events = _events(chunks, {"model": "m", "tools": [WEATHER]})
    final = assemble_responses(events)
    message, call = final.output
    assert [p.type for p in message.content] == ["output_text", "refusal"]
    assert (call.name, call.arguments, call.call_id) == ("get_weather", "", "call_x")
    assert "other" not in json.dumps(events)


def test_an_upstream_error_fails_the_response_and_late_fragments_are_refused():
    chunks = _chunks([{"delta": {"content": "par"}}], finish="stop")[:-1]
    events = _events([*chunks, {"error": {"message": "boom", "type": "rate_limit_error"}}], {"model": "m"})
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["error"] == {"code": "rate_limit_exceeded", "message": "boom"}
    assert events[-1]["response"]["output"][0]["status"] == "incomplete"
    other = _events([{"error": {}}], {"model": "m"})
    assert other[-1]["response"]["error"]["code"] == "server_error"

    builder = ResponsesStreamBuilder({"model": "m"})
    builder.feed(
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": "{"}}]},
                }
            ]
        }
    )
    builder.feed(
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 1, "function": {"name": "g"}}]}}]}
    )
    with pytest.raises(TranslationError, match="after the call closed"):
        builder.feed(
            {
                "choices": [
                    {"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "}"}}]}}
                ]
            }
        )
    assert builder.finish()[-1]["type"] == "response.completed"
    assert builder.finish() == []
    assert builder.feed({"choices": []}) == []


def test_an_empty_stream_is_still_a_complete_response():
    events = _events([], {"model": "m"})
    assert [e["type"] for e in events] == ["response.created", "response.in_progress", "response.completed"]


async def test_the_async_twin_gives_the_same_events():
    chunks = _chunks([{"delta": {"content": "hi"}}], finish="stop")

    async def source():
        for chunk in [*chunks, "[DONE]", {"choices": []}]:
            yield chunk

    events = [
        e
        async for e in translate.aopenai_to_responses_stream(
            source(), {"model": "m"}, response_id="r", created_at=1
        )
    ]
    assert events[-1]["type"] == "response.completed"

    async def unfinished():
        for chunk in chunks:
            yield chunk

    tail = [e async for e in translate.aopenai_to_responses_stream(unfinished(), {"model": "m"})]
    assert assemble_responses(tail).output_text == "hi"


def test_carriers_and_namespaces():
    assert decode_reasoning(encode_reasoning("é")) == "é"
    assert decode_reasoning("cortex:@@") is None
    assert decode_reasoning("cortex:" + "/w==") is None  # valid base64, not UTF-8
    assert split_namespace("agents.spawn", frozenset({"agents"})) == ("agents", "spawn")
    assert split_namespace("other.spawn", frozenset({"agents"})) == (None, "other.spawn")
    assert split_namespace("agents.", frozenset({"agents"})) == (None, "agents.")
    chat = translate.responses_to_openai_request(
        {"model": "m", "input": "x", "tools": "nope"} | {"tools": []}
    )
    assert "tools" not in chat
