"""The neuron's own Anthropic output, judged by the anthropic SDK: every event validates as the SDK's
stream event type, the SDK's accumulation of the events equals the whole Message (itself a valid SDK
Message), and blocks, stop reasons and usage come out as Anthropic defines them."""

from __future__ import annotations

import json

import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message, RawMessageStreamEvent
from pydantic import TypeAdapter

from cortex.engine.outputs import ChatDelta, Usage
from cortex.server.wire.anthropic import MessageBuilder

EVENT = TypeAdapter(RawMessageStreamEvent)
USAGE = Usage(prompt_tokens=40, completion_tokens=9, cached_tokens=16, reasoning_tokens=3)


def call(index: int, name: str, arguments: str) -> list[ChatDelta]:
    """A tool call as the text layer streams it: id and name first, then the arguments in pieces."""
    head = {"index": index, "id": f"call_{index}", "type": "function", "function": {"name": name}}
    pieces = [arguments[:5], arguments[5:]]
    return [ChatDelta(tool_calls=[head])] + [
        ChatDelta(tool_calls=[{"index": index, "function": {"arguments": p}}]) for p in pieces if p
    ]


def run(deltas: list[ChatDelta]) -> tuple[list[dict], Message, Message]:
    """The events (checked one by one by the SDK), the SDK's snapshot of them and the whole Message."""
    builder = MessageBuilder(model="qwen", num_prompt_tokens=USAGE.prompt_tokens)
    events = [builder.start()]
    for delta in deltas:
        events += builder.feed(delta)
    snapshot, json_bufs = None, {}
    for event in events:
        json.dumps(event)  # plain JSON all the way down
        snapshot = accumulate_event(
            event=EVENT.validate_python(event), current_snapshot=snapshot, json_bufs=json_bufs
        )
    return events, snapshot, Message.model_validate(builder.message())


def test_thinking_text_and_two_tool_calls_stream_as_contiguous_blocks():
    deltas = [
        ChatDelta(reasoning="The user "),
        ChatDelta(reasoning="wants weather."),
        ChatDelta(content="Checking "),
        ChatDelta(content="both."),
        *call(0, "get_weather", '{"city": "Paris"}'),
        *call(1, "get_time", '{"zone": "CET", "utc": false}'),
        ChatDelta(finish_reason="tool_calls", usage=USAGE),
    ]
    events, snapshot, whole = run(deltas)
    types = [e["type"] for e in events]
    assert types[0] == "message_start"
    assert types[-2:] == ["message_delta", "message_stop"]
    open_index, opened = None, []
    for event in events:  # one block open at a time; deltas only for it
        if event["type"] == "content_block_start":
            assert open_index is None
            open_index = event["index"]
            opened.append(open_index)
        elif event["type"] in ("content_block_delta", "content_block_stop"):
            assert event["index"] == open_index
            open_index = None if event["type"] == "content_block_stop" else open_index
    assert opened == [0, 1, 2, 3]
    assert open_index is None
    assert snapshot.model_dump() == whole.model_dump()
    assert [b.type for b in whole.content] == ["thinking", "text", "tool_use", "tool_use"]
    assert whole.content[0].thinking == "The user wants weather."
    assert whole.content[1].text == "Checking both."
    assert (whole.content[2].name, whole.content[2].input) == ("get_weather", {"city": "Paris"})
    assert (whole.content[3].id, whole.content[3].input) == ("call_1", {"zone": "CET", "utc": False})
    assert whole.stop_reason == "tool_use"
    assert whole.stop_sequence is None
    assert events[0]["message"]["usage"]["input_tokens"] == 40  # known before the prefill
    assert whole.usage.input_tokens == 24  # less what the prefix cache supplied
    assert whole.usage.cache_read_input_tokens == 16
    assert whole.usage.output_tokens == 9


@pytest.mark.parametrize(
    ("finish", "stop_reason"), [("stop", "end_turn"), ("length", "max_tokens"), ("abort", "end_turn")]
)
def test_stop_reasons(finish, stop_reason):
    _, snapshot, whole = run([ChatDelta(content="hi"), ChatDelta(finish_reason=finish, usage=USAGE)])
    assert snapshot.stop_reason == whole.stop_reason == stop_reason
    assert [b.type for b in whole.content] == ["text"]


def test_an_empty_reply_and_a_call_without_arguments():
    _, _, empty = run([ChatDelta(finish_reason="stop", usage=Usage(5, 0))])
    assert empty.content == []
    head = {"index": 0, "id": "call_0", "type": "function", "function": {"name": "now"}}
    _, snapshot, whole = run(
        [ChatDelta(tool_calls=[head]), ChatDelta(finish_reason="tool_calls", usage=Usage(5, 1))]
    )
    assert whole.content[0].input == {} == snapshot.content[0].input
    assert whole.stop_reason == "tool_use"
