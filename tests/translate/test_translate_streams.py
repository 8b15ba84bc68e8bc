"""Streams both ways: every event/chunk validated with the SDK types, and whole streams assembled
by the SDKs' own accumulators."""

from __future__ import annotations

import pytest
from sdk_checks import anthropic_event, assemble_anthropic, assemble_openai, openai_chunk
from stream_fixtures import block, chunk, message_end, message_start, tool_fragment, usage_chunk

from cortex.translate import (
    TranslationError,
    aanthropic_to_openai_stream,
    anthropic_to_openai_response,
    anthropic_to_openai_stream,
    aopenai_to_anthropic_stream,
    openai_to_anthropic_response,
    openai_to_anthropic_stream,
)
from cortex.translate.anthropic_stream import AnthropicStreamBuilder
from cortex.translate.openai_stream import OpenAIStreamBuilder


def o2a(chunks: list, **hints) -> list[dict]:
    events = list(openai_to_anthropic_stream(chunks, **hints))
    for event in events:
        anthropic_event(event)
    return events


def a2o(events: list, **hints) -> list[dict]:
    chunks = list(anthropic_to_openai_stream(events, **hints))
    for item in chunks:
        if "error" not in item:
            openai_chunk(item)
    return chunks


def types(events: list[dict]) -> list[str]:
    return [e["type"] for e in events]


def test_text_stream():
    events = o2a(
        [
            chunk({"role": "assistant", "content": ""}),
            chunk({"content": "Hel"}),
            chunk({"content": "lo"}),
            chunk({}, finish_reason="stop"),
            usage_chunk(12, 2, cached=4),
            "[DONE]",
        ],
        input_tokens=8,
    )
    assert types(events) == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[0]["message"]["usage"]["input_tokens"] == 8
    assert events[0]["message"]["id"] == "msg_s1"
    assert events[-2]["usage"] == {
        "input_tokens": 8,
        "output_tokens": 2,
        "cache_read_input_tokens": 4,
        "cache_creation_input_tokens": 0,
    }
    message = assemble_anthropic(events)
    assert [b.model_dump(exclude_none=True) for b in message.content] == [{"type": "text", "text": "Hello"}]
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == 2


def test_thinking_text_tool_transitions_and_interleaved_tool_calls():
    chunks = [
        chunk({"role": "assistant"}),
        chunk({"reasoning_content": "plan "}),
        chunk({"reasoning_content": "it"}),
        chunk({"content": "Checking."}),
        tool_fragment(0, '{"comm', call_id="call_a", name="Bash"),
        tool_fragment(1, '{"pa', call_id="call_b", name="Read"),
        tool_fragment(2, "", call_id="call_c", name="Glob"),
        tool_fragment(0, 'and": "ls"'),
        tool_fragment(1, 'th": "x"}'),
        tool_fragment(0, "}"),
        tool_fragment(2, '{"pattern": "*"}'),
        chunk({}, finish_reason="tool_calls"),
    ]
    events = o2a(chunks, model="alias", message_id="msg_given", input_tokens=3)
    assert events[0]["message"]["model"] == "alias"
    assert events[0]["message"]["id"] == "msg_given"
    message = assemble_anthropic(events)
    assert [b.type for b in message.content] == ["thinking", "text", "tool_use", "tool_use", "tool_use"]
    assert message.content[0].thinking == "plan it"
    assert [(b.id, b.name, b.input) for b in message.content[2:]] == [
        ("call_a", "Bash", {"command": "ls"}),
        ("call_b", "Read", {"path": "x"}),
        ("call_c", "Glob", {"pattern": "*"}),
    ]
    assert message.stop_reason == "tool_use"
    assert message.usage.input_tokens == 3
    starts = [e for e in events if e["type"] == "content_block_start"]
    assert [e["index"] for e in starts] == [0, 1, 2, 3, 4]


def test_tool_stop_reason_whatever_the_upstream_said():
    events = o2a([tool_fragment(0, "{}", call_id="c", name="f"), chunk({}, finish_reason="stop")])
    assert events[-2]["delta"]["stop_reason"] == "tool_use"


def test_empty_strings_and_empty_tool_calls_open_no_block():
    events = o2a(
        [
            chunk({"content": "", "tool_calls": []}),
            chunk({"content": "x", "tool_calls": []}),
            chunk({}, finish_reason="stop"),
        ]
    )
    assert types(events).count("content_block_start") == 1
    assert events[-2]["delta"]["stop_reason"] == "end_turn"


def test_stream_without_done_or_finish_reason_is_closed():
    events = o2a([chunk({"content": "cut"})])
    assert types(events)[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert events[-2]["delta"]["stop_reason"] == "end_turn"
    assert events[-2]["usage"] == {"output_tokens": 0}
    assemble_anthropic(events)


def test_empty_stream_still_makes_a_message():
    events = o2a([], model="m")
    assert types(events) == ["message_start", "message_delta", "message_stop"]
    assert events[0]["message"]["id"] == "msg_empty"
    assert assemble_anthropic(events).content == []


def test_usage_on_first_chunk_fills_message_start():
    events = o2a(
        [chunk({"content": "a"}, usage={"prompt_tokens": 9, "completion_tokens": 0, "total_tokens": 9})]
    )
    assert events[0]["message"]["usage"]["input_tokens"] == 9


def test_upstream_error_becomes_error_event():
    events = o2a(
        [
            chunk({"content": "a"}),
            {"error": {"message": "boom", "type": "server_error", "code": None}},
            chunk({"content": "never"}),
        ]
    )
    assert events[-1] == {"type": "error", "error": {"type": "api_error", "message": "boom"}}
    assert "message_stop" not in types(events)
    events = o2a([{"error": {"message": "busy", "type": "x", "code": 503}}])
    assert events == [{"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}]
    assert o2a([{"error": "plain"}])[0]["error"] == {"type": "api_error", "message": "plain"}


def test_matched_stop_refusal_and_other_choices():
    events = o2a(
        [
            chunk({"refusal": "no"}),
            {**chunk({"content": "ignored"}), "choices": [{"index": 1, "delta": {"content": "z"}}]},
            {
                **chunk({}),
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop", "stop_reason": "END"}],
            },
        ]
    )
    message = assemble_anthropic(events)
    assert message.content[0].text == "no"
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "END")


def test_tool_name_in_pieces_and_generated_id():
    events = o2a(
        [
            chunk({"tool_calls": [{"index": 0, "function": {"name": "Ba"}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"name": "sh", "arguments": "{}"}}]}),
        ]
    )
    message = assemble_anthropic(events)
    assert message.content[0].name == "Bash"
    assert message.content[0].id == "toolu_msg_s1_0"


def test_tool_call_without_arguments_opens_at_the_end():
    events = o2a([chunk({"tool_calls": [{"index": 0, "id": "c", "function": {"name": "f"}}]})])
    message = assemble_anthropic(events)
    assert [(b.type, b.name, b.input) for b in message.content] == [("tool_use", "f", {})]
    assert message.stop_reason == "tool_use"


def test_carried_thinking_blocks_keep_signatures():
    events = o2a(
        [
            chunk({"reasoning_content": "a"}),
            chunk(
                {"thinking_blocks": [{"index": 0, "type": "thinking", "thinking": "a", "signature": "s1"}]}
            ),
            chunk({"thinking_blocks": [{"index": 1, "type": "redacted_thinking", "data": "opaque"}]}),
            chunk(
                {"thinking_blocks": [{"index": 2, "type": "thinking", "thinking": "b", "signature": "s2"}]}
            ),
            chunk({"thinking_blocks": [{"index": 3, "type": "thinking", "thinking": "", "signature": ""}]}),
            chunk({"content": "done"}),
        ]
    )
    message = assemble_anthropic(events)
    assert [b.model_dump(exclude_none=True) for b in message.content] == [
        {"type": "thinking", "thinking": "a", "signature": "s1"},
        {"type": "redacted_thinking", "data": "opaque"},
        {"type": "thinking", "thinking": "b", "signature": "s2"},
        {"type": "thinking", "thinking": "", "signature": ""},
        {"type": "text", "text": "done"},
    ]


@pytest.mark.parametrize(
    ("chunks", "param"),
    [
        (
            [tool_fragment(0, '{"a": 1', call_id="c", name="f"), chunk({}, finish_reason="tool_calls")],
            "tool_calls[0].function.arguments",
        ),
        (
            [tool_fragment(0, "[]", call_id="c", name="f"), chunk({"content": "x"})],
            "tool_calls[0].function.arguments",
        ),
        (
            [
                tool_fragment(0, '{"a": 1}', call_id="c", name="f"),
                chunk({"content": "x"}),
                tool_fragment(0, ', "b"'),
            ],
            "delta.tool_calls[0]",
        ),
        ([tool_fragment(0, "{}", call_id="c")], "tool_calls[0]"),
        ([chunk({"tool_calls": [{"index": "0"}]})], "delta.tool_calls[0].index"),
        (["data: nonsense"], "chunk"),
        ([chunk({"content": 5})], "delta.content"),
        ([{"choices": []}], "chunk.id"),
    ],
)
def test_untranslatable_streams_raise(chunks, param):
    with pytest.raises(TranslationError) as info:
        list(openai_to_anthropic_stream(chunks))
    assert info.value.param == param


def test_whitespace_after_a_closed_tool_call_is_ignored():
    events = o2a(
        [tool_fragment(0, "{}", call_id="c", name="f"), chunk({"content": "x"}), tool_fragment(0, " \n")]
    )
    assert assemble_anthropic(events).content[0].input == {}


CITATION = {
    "type": "char_location",
    "cited_text": "x",
    "document_index": 0,
    "document_title": None,
    "start_char_index": 0,
    "end_char_index": 1,
}


def anthropic_events() -> list[dict]:
    return [
        message_start(),
        {"type": "ping"},
        *block(
            0,
            {"type": "thinking", "thinking": "", "signature": ""},
            {"type": "thinking_delta", "thinking": "let me "},
            {"type": "thinking_delta", "thinking": "see"},
            {"type": "signature_delta", "signature": "sig"},
        ),
        *block(1, {"type": "redacted_thinking", "data": "opaque"}),
        *block(2, {"type": "thinking", "thinking": "more", "signature": "s2"}),
        *block(
            3,
            {"type": "text", "text": ""},
            {"type": "text_delta", "text": "I'll "},
            {"type": "citations_delta", "citation": CITATION},
            {"type": "text_delta", "text": "look."},
        ),
        *block(
            4,
            {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {}},
            {"type": "input_json_delta", "partial_json": ""},
            {"type": "input_json_delta", "partial_json": '{"command"'},
            {"type": "input_json_delta", "partial_json": ': "ls"}'},
        ),
        *block(5, {"type": "tool_use", "id": "toolu_2", "name": "Read", "input": {"path": "a"}}),
        {"type": "future_event"},
        *message_end("tool_use", 30),
    ]


def test_anthropic_stream_assembles_to_the_translated_response():
    events = anthropic_events()
    chunks = a2o(events, include_usage=True, created=5)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {
        "prompt_tokens": 10,
        "completion_tokens": 30,
        "total_tokens": 40,
        "prompt_tokens_details": {"cached_tokens": 0},
    }
    completion = assemble_openai(chunks)
    anthropic_message = assemble_anthropic([e for e in events if e["type"] not in ("ping", "future_event")])
    expected = anthropic_to_openai_response(anthropic_message.model_dump(exclude_none=True), created=5)
    streamed = completion.model_dump(exclude_none=True)
    for key in ("thinking_blocks", "tool_calls"):
        for entry in streamed["choices"][0]["message"][key]:
            del entry["index"]
    assert streamed["choices"][0]["message"] == expected["choices"][0]["message"]
    assert expected["choices"][0]["message"]["content"] == "I'll look."
    assert streamed["choices"][0]["finish_reason"] == "tool_calls"
    assert streamed["id"] == expected["id"] == "chatcmpl-s1"


def test_anthropic_stream_without_usage_chunk_and_with_stop_sequence():
    events = [
        message_start(),
        *block(0, {"type": "text", "text": "hi"}),
        *message_end("stop_sequence", 3, "END"),
    ]
    chunks = a2o(events, model="alias", completion_id="chatcmpl-given", include_usage=False)
    assert all("usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"][0]["stop_reason"] == "END"
    assert {c["model"] for c in chunks} == {"alias"}
    assert {c["id"] for c in chunks} == {"chatcmpl-given"}
    assert assemble_openai(chunks).choices[0].message.content == "hi"


def test_anthropic_stream_cut_short_and_without_message_start():
    chunks = a2o(
        [*block(0, {"type": "text", "text": ""}, {"type": "text_delta", "text": "x"})],
        created=1,
        include_usage=False,
    )
    assert chunks[0]["id"] == "chatcmpl-empty"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert assemble_openai(chunks).choices[0].message.content == "x"
    assert [c["choices"][0]["delta"] for c in a2o([], created=1, include_usage=False)] == [
        {"role": "assistant", "content": ""},
        {},
    ]


def test_anthropic_error_event_becomes_openai_error_chunk():
    chunks = a2o(
        [
            message_start(),
            {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}},
            *message_end("end_turn", 1),
        ]
    )
    assert chunks[-1] == {
        "error": {"message": "busy", "type": "server_error", "param": None, "code": "overloaded"}
    }
    assert a2o([{"type": "error"}])[0]["error"]["type"] == "server_error"


@pytest.mark.parametrize(
    ("events", "param"),
    [
        (
            [
                message_start(),
                *block(0, {"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}}),
            ],
            "event.content_block.type",
        ),
        (
            [
                message_start(),
                {"type": "content_block_delta", "index": 3, "delta": {"type": "text_delta", "text": "x"}},
            ],
            "event.index",
        ),
        ([message_start(), {"type": "content_block_stop", "index": "0"}], "event.index"),
        (
            [message_start(), *block(0, {"type": "text", "text": ""}, {"type": "text_delta", "text": 5})],
            "event.delta.text",
        ),
        ([{"type": "message_start", "message": {"model": "m"}}], "message.id"),
        ([5], "event"),
    ],
)
def test_untranslatable_anthropic_streams_raise(events, param):
    with pytest.raises(TranslationError) as info:
        list(anthropic_to_openai_stream(events))
    assert info.value.param == param


def test_full_loop_openai_to_anthropic_to_openai():
    chunks = [
        chunk({"role": "assistant", "content": ""}),
        chunk({"reasoning_content": "hmm"}),
        chunk({"content": "Hi"}),
        tool_fragment(0, '{"x": 1}', call_id="call_1", name="f"),
        chunk({}, finish_reason="tool_calls"),
        usage_chunk(7, 3),
    ]
    back = a2o(list(openai_to_anthropic_stream(chunks, input_tokens=7)), include_usage=True, created=1)
    original = assemble_openai(chunks).model_dump(exclude_none=True)
    final = assemble_openai(back).model_dump(exclude_none=True)
    assert final["choices"][0]["message"].pop("thinking_blocks") == [
        {"index": 0, "type": "thinking", "thinking": "hmm", "signature": ""}
    ]
    assert final["choices"] == original["choices"]
    assert final["usage"]["prompt_tokens"] == original["usage"]["prompt_tokens"] == 7
    non_streamed = openai_to_anthropic_response(original)
    assert non_streamed["content"] == [
        b.model_dump(exclude_none=True)
        for b in assemble_anthropic(list(openai_to_anthropic_stream(chunks))).content
    ]


async def aiter(items):
    for item in items:
        yield item


async def test_async_twins_match_the_sync_streams():
    chunks = [
        chunk({"content": "a"}),
        tool_fragment(0, "{}", call_id="c", name="f"),
        "[DONE]",
        chunk({"content": "late"}),
    ]
    assert [e async for e in aopenai_to_anthropic_stream(aiter(chunks), input_tokens=1)] == list(
        openai_to_anthropic_stream(chunks, input_tokens=1)
    )
    assert [e async for e in aopenai_to_anthropic_stream(aiter(chunks[:2]))] == list(
        openai_to_anthropic_stream(chunks[:2])
    )
    errored = [chunk({"content": "a"}), {"error": {"message": "x"}}, chunk({"content": "b"})]
    assert [e async for e in aopenai_to_anthropic_stream(aiter(errored))] == list(
        openai_to_anthropic_stream(errored)
    )
    events = anthropic_events()
    assert [
        c async for c in aanthropic_to_openai_stream(aiter(events), created=1, include_usage=True)
    ] == list(anthropic_to_openai_stream(events, created=1, include_usage=True))
    cut = events[:5]
    assert [c async for c in aanthropic_to_openai_stream(aiter(cut), created=1)] == list(
        anthropic_to_openai_stream(cut, created=1)
    )
    broken = [
        message_start(),
        {"type": "error", "error": {"type": "api_error", "message": "x"}},
        message_start(),
    ]
    assert [c async for c in aanthropic_to_openai_stream(aiter(broken), created=1)] == list(
        anthropic_to_openai_stream(broken, created=1)
    )


def test_builders_finish_once_for_callers_that_drive_them_directly():
    builder = AnthropicStreamBuilder(model=None, message_id=None, input_tokens=None)
    assert types(builder.feed(chunk({"content": "a"})) + builder.feed("[DONE]"))[-1] == "message_stop"
    assert builder.done
    assert builder.finish() == []
    errored = AnthropicStreamBuilder(model=None, message_id=None, input_tokens=None)
    assert types(errored.feed({"error": {"message": "x"}})) == ["error"]
    assert errored.finish() == []
    reverse = OpenAIStreamBuilder(model=None, completion_id=None, created=1, include_usage=False)
    assert reverse.feed({"type": "message_stop"})[-1]["choices"][0]["finish_reason"] == "stop"
    assert reverse.finish() == []


def test_usage_reaches_the_openai_side_by_default():
    events = [
        {
            "type": "message_start",
            "message": {
                "id": "msg_1",
                "model": "m",
                "usage": {"input_tokens": 9, "cache_read_input_tokens": 2},
            },
        },
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 4}},
        {"type": "message_stop"},
    ]
    chunks = list(anthropic_to_openai_stream(events, created=1))
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["prompt_tokens"] == 11
    assert chunks[-1]["usage"]["completion_tokens"] == 4
    assert all(chunk["usage"] is None for chunk in chunks[:-1])
    assert "usage" not in list(anthropic_to_openai_stream(events, created=1, include_usage=False))[-2]
