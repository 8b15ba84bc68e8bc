"""Non-streamed responses both ways, validated with the SDKs' response models."""

from __future__ import annotations

import pytest
from sdk_checks import anthropic_message, openai_completion

from cortex.translate import TranslationError, anthropic_to_openai_response, openai_to_anthropic_response


def completion(
    message: dict, finish_reason: str | None = "stop", usage: dict | None = None, **choice
) -> dict:
    body = {
        "id": "chatcmpl-abc",
        "object": "chat.completion",
        "created": 1,
        "model": "qwen",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", **message},
                "finish_reason": finish_reason,
                **choice,
            }
        ],
    }
    if usage is not None:
        body["usage"] = usage
    return body


def message(content: list, stop_reason: str | None = "end_turn", **fields) -> dict:
    return {
        "id": "msg_abc",
        "type": "message",
        "role": "assistant",
        "model": "claude",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 5},
        **fields,
    }


def o2a(body: dict, **kwargs) -> dict:
    openai_completion(body)
    out = openai_to_anthropic_response(body, **kwargs)
    anthropic_message(out)
    return out


def a2o(body: dict, **kwargs) -> dict:
    anthropic_message(body)
    out = anthropic_to_openai_response(body, **kwargs)
    openai_completion(out)
    return out


def test_openai_response_with_reasoning_text_and_tools():
    usage = {
        "prompt_tokens": 100,
        "completion_tokens": 40,
        "total_tokens": 140,
        "prompt_tokens_details": {"cached_tokens": 60},
        "completion_tokens_details": {"reasoning_tokens": 25},
    }
    body = completion(
        {
            "content": "Let me check.",
            "reasoning_content": "need ls",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "Bash", "arguments": '{"command": "ls"}'},
                },
                {"id": "call_2", "type": "function", "function": {"name": "Read", "arguments": ""}},
            ],
        },
        finish_reason="stop",
        usage=usage,
    )
    out = o2a(body)
    assert out == {
        "id": "msg_abc",
        "type": "message",
        "role": "assistant",
        "model": "qwen",
        "content": [
            {"type": "thinking", "thinking": "need ls", "signature": ""},
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "call_1", "name": "Bash", "input": {"command": "ls"}},
            {"type": "tool_use", "id": "call_2", "name": "Read", "input": {}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 40,
            "output_tokens": 40,
            "cache_read_input_tokens": 60,
            "cache_creation_input_tokens": 0,
            "output_tokens_details": {"thinking_tokens": 25},
        },
    }
    back = a2o(out, created=1)
    assert back["id"] == body["id"]
    assert back["usage"]["prompt_tokens"] == 100
    assert back["usage"]["prompt_tokens_details"] == {"cached_tokens": 60}
    assert back["usage"]["completion_tokens_details"] == {"reasoning_tokens": 25}
    assert back["choices"][0]["finish_reason"] == "tool_calls"
    assert back["choices"][0]["message"]["tool_calls"] == [
        body["choices"][0]["message"]["tool_calls"][0],
        {"id": "call_2", "type": "function", "function": {"name": "Read", "arguments": "{}"}},
    ]


@pytest.mark.parametrize(
    ("finish_reason", "stop_reason"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("function_call", "tool_use"),
        ("content_filter", "refusal"),
        (None, "end_turn"),
    ],
)
def test_finish_reason_to_stop_reason(finish_reason, stop_reason):
    body = completion({"content": "hi"}, finish_reason="stop")
    body["choices"][0]["finish_reason"] = finish_reason
    out = openai_to_anthropic_response(body)
    anthropic_message(out)
    assert out["stop_reason"] == stop_reason
    assert out["usage"] == {
        "input_tokens": 0,
        "output_tokens": 0,
        "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 0,
    }


def test_matched_stop_string_becomes_stop_sequence_and_back():
    out = o2a(completion({"content": "a"}, stop_reason="END"))
    assert (out["stop_reason"], out["stop_sequence"]) == ("stop_sequence", "END")
    back = a2o(out)
    assert back["choices"][0]["finish_reason"] == "stop"
    assert back["choices"][0]["stop_reason"] == "END"
    assert o2a(completion({"content": "a"}, stop_reason=151645))["stop_reason"] == "end_turn"


def test_refusal_and_empty_content():
    out = o2a(completion({"content": None, "refusal": "no"}, finish_reason="content_filter"))
    assert out["content"] == [{"type": "text", "text": "no"}]
    assert out["stop_reason"] == "refusal"
    assert o2a(completion({"content": ""}))["content"] == []


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("pause_turn", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
    ],
)
def test_stop_reason_to_finish_reason(stop_reason, finish_reason):
    out = a2o(message([{"type": "text", "text": "hi"}], stop_reason=stop_reason))
    assert out["choices"][0]["finish_reason"] == finish_reason


def test_anthropic_response_with_signed_thinking_round_trips():
    content = [
        {"type": "thinking", "thinking": "first", "signature": "s1"},
        {"type": "redacted_thinking", "data": "d"},
        {"type": "thinking", "thinking": "second", "signature": "s2"},
        {"type": "text", "text": "Hello "},
        {"type": "text", "text": "world"},
    ]
    usage = {
        "input_tokens": 5,
        "output_tokens": 9,
        "cache_read_input_tokens": 3,
        "cache_creation_input_tokens": 2,
        "output_tokens_details": {"thinking_tokens": 4},
    }
    body = message(content, usage=usage)
    out = a2o(body, model="alias", created=42)
    assert out["id"] == "chatcmpl-abc"
    assert out["created"] == 42
    assert out["model"] == "alias"
    msg = out["choices"][0]["message"]
    assert msg["content"] == "Hello world"
    assert msg["reasoning_content"] == "first\n\nsecond"
    assert msg["thinking_blocks"] == content[:3]
    assert "tool_calls" not in msg
    assert out["usage"] == {
        "prompt_tokens": 10,
        "completion_tokens": 9,
        "total_tokens": 19,
        "prompt_tokens_details": {"cached_tokens": 3, "cache_write_tokens": 2},
        "completion_tokens_details": {"reasoning_tokens": 4},
    }
    back = o2a(out, model="claude")
    assert back["content"][:3] == content[:3]
    assert back["content"][3] == {"type": "text", "text": "Hello world"}
    assert back["usage"] == {
        "input_tokens": 5,
        "output_tokens": 9,
        "cache_read_input_tokens": 3,
        "cache_creation_input_tokens": 2,
        "output_tokens_details": {"thinking_tokens": 4},
    }


def test_anthropic_tool_only_response_has_null_content():
    out = a2o(message([{"type": "tool_use", "id": "t", "name": "f", "input": {}}], stop_reason="tool_use"))
    assert out["choices"][0]["message"]["content"] is None
    assert a2o(message([], stop_reason=None))["choices"][0]["message"]["content"] == ""


def test_created_defaults_to_now():
    assert anthropic_to_openai_response(message([]))["created"] > 1_700_000_000


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (dict(completion({"content": "x"}), choices=[]), "choices"),
        (
            completion(
                {"tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{"}}]}
            ),
            "choices[0].message.tool_calls[0].function.arguments",
        ),
        ({"id": "x", "model": "m", "choices": [{"index": 0}]}, "choices[0].message"),
        ({"model": "m", "choices": [{"message": {"role": "assistant"}}]}, "id"),
    ],
)
def test_untranslatable_openai_responses(body, param):
    with pytest.raises(TranslationError) as info:
        openai_to_anthropic_response(body)
    assert info.value.param == param


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (
            message([{"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}}]),
            "content[0].type",
        ),
        (message([{"type": "text"}]), "content[0].text"),
        ({"id": "m", "model": "m"}, "content"),
        (message([], usage=[1]), "usage"),
    ],
)
def test_untranslatable_anthropic_responses(body, param):
    with pytest.raises(TranslationError) as info:
        anthropic_to_openai_response(body)
    assert info.value.param == param
