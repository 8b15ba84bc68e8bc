"""Reasoning and tool-call parsers: whole-text results, and any chunking gives the same result."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cortex.engine.text.reasoning import ReasoningParser, parse_reasoning, prompt_opens_reasoning
from cortex.engine.text.tool_calls import ToolCallParser, coerce_value, parse_tool_calls

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "days": {"type": "integer"},
                    "metric": {"type": "boolean"},
                    "opts": {"type": "object"},
                    "tags": {"type": "array"},
                    "ratio": {"type": "number"},
                    "note": {"type": ["string", "null"]},
                },
            },
        },
    }
]

XML_CALL = (
    "<tool_call>\n<function=get_weather>\n<parameter=city>\nNew York\n</parameter>\n"
    "<parameter=days>\n3\n</parameter>\n<parameter=metric>\nFalse\n</parameter>\n"
    '<parameter=opts>\n{"a": [1, "é"]}\n</parameter>\n<parameter=tags>\n["x"]\n</parameter>\n'
    "<parameter=ratio>\n2.5\n</parameter>\n<parameter=note>\nline 1\n\nline 3\n</parameter>\n"
    "</function>\n</tool_call>"
)
XML_ARGS = {
    "city": "New York",
    "days": 3,
    "metric": False,
    "opts": {"a": [1, "é"]},
    "tags": ["x"],
    "ratio": 2.5,
    "note": "line 1\n\nline 3",
}
HERMES_CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo", "days": 1}}\n</tool_call>'


def ids():
    counter = itertools.count()
    return lambda: f"call_{next(counter)}"


def chunked(text: str, cuts: list[int]) -> list[str]:
    bounds = sorted({0, len(text), *(c % (len(text) + 1) for c in cuts)})
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


def stream_tool_calls(chunks: list[str]):
    parser = ToolCallParser(TOOLS, make_id=ids())
    content, fragments = [], []
    for chunk in [*chunks, None]:
        delta = parser.feed(chunk) if chunk is not None else parser.flush()
        content.append(delta.content)
        fragments += delta.tool_calls
    return "".join(content), parser.calls, fragments


def test_xml_call_with_typed_parameters():
    content, calls = parse_tool_calls("I'll look.\n\n" + XML_CALL, TOOLS, make_id=ids())
    assert content == "I'll look."
    assert [(c.id, c.name) for c in calls] == [("call_0", "get_weather")]
    assert json.loads(calls[0].arguments) == XML_ARGS
    assert calls[0].to_openai()["type"] == "function"


def test_hermes_json_call_and_multiple_calls():
    content, calls = parse_tool_calls(HERMES_CALL + "\n" + XML_CALL, TOOLS, make_id=ids())
    assert content == ""
    assert [c.id for c in calls] == ["call_0", "call_1"]
    assert json.loads(calls[0].arguments) == {"city": "Oslo", "days": 1}
    assert json.loads(calls[1].arguments) == XML_ARGS


def test_no_calls_keeps_text_verbatim():
    text = "Use <b>bold</b> or a < b;  \n"
    assert parse_tool_calls(text, TOOLS) == (text, [])


def test_invalid_block_is_passed_through_as_content():
    text = "a <tool_call>not a call</tool_call> b"
    assert parse_tool_calls(text, TOOLS) == (text, [])
    bad_header = "<tool_call>\n<function=>\nx</tool_call>"
    assert parse_tool_calls(bad_header, TOOLS)[1] == []


def test_cut_off_xml_call_keeps_complete_parameters():
    text = "<tool_call>\n<function=get_weather>\n<parameter=city>\nRome\n</parameter>\n<parameter=days>\n4"
    _, calls = parse_tool_calls(text, TOOLS)
    assert json.loads(calls[0].arguments) == {"city": "Rome", "days": 4}


def test_missing_parameter_end_tag_is_tolerated():
    text = (
        "<tool_call>\n<function=get_weather>\n<parameter=city>\nRome\n<parameter=days>\n4\n</function>\n"
        "</tool_call>"
    )
    _, calls = parse_tool_calls(text, TOOLS)
    assert json.loads(calls[0].arguments) == {"city": "Rome", "days": 4}


@pytest.mark.parametrize(
    ("value", "schema", "expected"),
    [
        ("42", {"type": "integer"}, 42),
        ("4.0", {"type": "integer"}, "4.0"),
        ("-7", {"type": "number"}, -7),
        ("1e3", {"type": "number"}, 1000.0),
        ("TRUE", {"type": "boolean"}, True),
        ("yes", {"type": "boolean"}, "yes"),
        ("null", {"type": ["integer", "null"]}, None),
        ("[1, 2]", {"type": "array"}, [1, 2]),
        ("{bad", {"type": "object"}, "{bad"),
        ("5", {"anyOf": [{"type": "integer"}, {"type": "string"}]}, 5),
        ("42", {"type": "string"}, "42"),
        ("42", None, "42"),
    ],
)
def test_coercion_follows_the_schema(value, schema, expected):
    assert coerce_value(value, schema) == expected


def test_streaming_fragments_concatenate_to_the_arguments():
    _, calls, fragments = stream_tool_calls([XML_CALL])
    assert fragments[0] == {
        "index": 0,
        "id": "call_0",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert len(fragments) == 1 + len(XML_ARGS) + 1  # header, one per parameter, closing brace
    assert "".join(f["function"]["arguments"] for f in fragments) == calls[0].arguments
    _, char_calls, char_fragments = stream_tool_calls(list(XML_CALL))
    assert "".join(f["function"]["arguments"] for f in char_fragments) == char_calls[0].arguments
    assert char_calls[0].arguments == calls[0].arguments


def test_string_values_stream_as_they_arrive():
    parser = ToolCallParser(TOOLS)
    parser.feed('<tool_call>\n<function=get_weather>\n<parameter=city>\nline "1"\n')
    assert parser.calls[0].arguments == '{"city": "line \\"1\\"'  # the newline may be markup: held
    parser.feed("more\n</param")
    assert parser.calls[0].arguments == '{"city": "line \\"1\\"\\nmore'
    parser.feed("eter>\n<parameter=days>\n12")
    assert parser.calls[0].arguments == '{"city": "line \\"1\\"\\nmore"'  # integers wait for the end
    parser.feed("\n</parameter>\n</function>\n</tool_call>")
    assert json.loads(parser.calls[0].arguments) == {"city": 'line "1"\nmore', "days": 12}


TEXTS = [
    "Sure.\n\n" + XML_CALL,
    "x" + HERMES_CALL + "\n\n" + XML_CALL + "\n tail ",
    "a <tool_call>oops</tool_call> <tool_ca",
    "<tool_call>\n<function=get_weather>\n<parameter=city>\nRo",
    "text with < and <tool and </tool_call> and spaces   ",
]


FRAGMENTS = [
    "<tool_call>",
    "</tool_call>",
    "<function=get_weather>",
    "<function=",
    "<parameter=days>",
    "<parameter=city>",
    "</parameter>",
    "</function>",
    '{"name": "f", "arguments": {}}',
    "\n",
    " ",
    "x",
    "7",
    "<",
    ">",
    "<think>",
    "</think>",
]
MARKUP_SOUP = st.lists(st.sampled_from(FRAGMENTS), max_size=20).map("".join)


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.sampled_from(TEXTS), MARKUP_SOUP), cuts=st.lists(st.integers(0, 400), max_size=25))
def test_tool_calls_any_chunking_equals_whole(text, cuts):
    """Content is never retracted, so equal totals also mean no partial markup leaked mid-stream."""
    whole_content, whole_calls = parse_tool_calls(text, TOOLS, make_id=ids())
    content, calls, fragments = stream_tool_calls(chunked(text, cuts))
    assert content == whole_content
    assert calls == whole_calls
    for i, call in enumerate(calls):
        assert "".join(f["function"]["arguments"] for f in fragments if f["index"] == i) == call.arguments


def test_streaming_content_never_shows_partial_markup():
    parser = ToolCallParser(TOOLS)
    assert parser.feed("Hello <tool").content == "Hello"
    assert parser.feed("_c").content == ""
    delta = parser.feed("all>\n<function=get_weather>\n")
    assert delta.content == ""
    assert delta.tool_calls[0]["function"]["name"] == "get_weather"


def test_reasoning_prompt_detection():
    assert prompt_opens_reasoning("<|im_start|>assistant\n<think>\n")
    assert not prompt_opens_reasoning("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert not prompt_opens_reasoning("<|im_start|>assistant\n")


@pytest.mark.parametrize(
    ("text", "starts_in", "expected"),
    [
        ("Let me think.\n</think>\n\nHello!", True, ("Let me think.", "Hello!")),
        ("\n\nstill thinking", True, ("still thinking", "")),
        ("<think>\nhmm\n</think>\n\nHi", False, ("hmm", "Hi")),
        ("  <think>a</think>b", False, ("a", "b")),
        ("Hi <think>not reasoning</think>", False, (None, "Hi <think>not reasoning</think>")),
        ("<thi", False, (None, "<thi")),
        ("", True, ("", "")),
    ],
)
def test_reasoning_whole(text, starts_in, expected):
    assert parse_reasoning(text, starts_in_reasoning=starts_in) == expected


REASONING_TEXTS = [
    ("step 1\nstep 2\n\n</think>\n\nThe answer is 4.", True),
    ("<think>\n\nplan\n</think>\n\n" + XML_CALL, False),
    ("no reasoning at all </think>", False),
    ("cut off mid </thi", True),
]


@settings(max_examples=300, deadline=None)
@given(
    case=st.one_of(st.sampled_from(REASONING_TEXTS), st.tuples(MARKUP_SOUP, st.booleans())),
    cuts=st.lists(st.integers(0, 400), max_size=20),
)
def test_reasoning_any_chunking_equals_whole(case, cuts):
    text, starts_in = case
    parser = ReasoningParser(starts_in_reasoning=starts_in)
    reasoning, content = "", ""
    for chunk in chunked(text, cuts):
        r, c = parser.feed(chunk)
        assert "</think" not in r
        reasoning, content = reasoning + r, content + c
    r, c = parser.flush()
    whole_reasoning, whole_content = parse_reasoning(text, starts_in_reasoning=starts_in)
    assert (reasoning + r, content + c) == (whole_reasoning or "", whole_content)
