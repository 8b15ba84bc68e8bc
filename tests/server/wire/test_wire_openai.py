"""OpenAI request parsing on the neuron: what is served, what is rejected (and named), what is a hint."""

from __future__ import annotations

import json

import pytest

from cortex.errors import InvalidRequestError
from cortex.server.wire.openai import parse_chat_request, parse_completion_request

MESSAGES = [{"role": "user", "content": "hi"}]


def chat(**fields):
    return parse_chat_request({"model": "m", "messages": MESSAGES, **fields})


def test_served_fields_reach_the_request():
    request = chat(
        max_completion_tokens=7,
        temperature=0,
        top_p=0.5,
        top_k=4,
        min_p=0.1,
        seed=3,
        stop="END",
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        repetition_penalty=1.1,
        logprobs=True,
        top_logprobs=3,
        stream=True,
        stream_options={"include_usage": True},
        reasoning_effort="none",
        user="u",
        metadata={"k": "v"},
        store=False,
        parallel_tool_calls=True,
        some_future_field=1,
    )
    params = request.params
    assert (params.max_tokens, params.temperature, params.top_p, params.top_k) == (7, 0, 0.5, 4)
    assert (params.min_p, params.seed, params.stop, params.logprobs) == (0.1, 3, ("END",), 3)
    assert request.stream
    assert request.include_usage
    assert request.logprobs
    assert request.template_kwargs == {"enable_thinking": False}
    developer = parse_chat_request(
        {"model": "m", "messages": [{"role": "developer", "content": "x"}, *MESSAGES]}
    )
    assert developer.messages[0]["role"] == "system"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"n": 0}, "n"),
        ({"logit_bias": {"1": 5}}, "logit_bias"),
        ({"response_format": {"type": "regex"}}, "response_format"),
        ({"response_format": {"type": "json_schema"}}, "response_format"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"functions": []}, "functions"),
        ({"audio": {"voice": "x"}}, "audio"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"stop": 5}, "stop"),
        ({"stop": ["ok", 3]}, "stop"),
        ({"seed": True}, "seed"),
        ({"temperature": 101}, "temperature"),
        ({"tools": [{"type": "function"}]}, "tools[0]"),
        ({"tools": "all"}, "tools"),
        (
            {"tool_choice": "sometimes", "tools": [{"type": "function", "function": {"name": "f"}}]},
            "tool_choice",
        ),
    ],
)
def test_unservable_or_invalid_fields_are_rejected_by_name(fields, param):
    with pytest.raises(InvalidRequestError) as caught:
        chat(**fields)
    assert caught.value.param == param


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": ["a", "b"]}, "prompt"),
        ({"prompt": [1, -2]}, "prompt"),
        ({"prompt": "x", "echo": True}, "echo"),
        ({"prompt": "x", "best_of": 2}, "best_of"),
        ({"prompt": "x", "suffix": "y"}, "suffix"),
    ],
)
def test_completion_requests(body, param):
    assert parse_completion_request({"model": "m", "prompt": ["only one"]}).prompt == "only one"
    with pytest.raises(InvalidRequestError) as caught:
        parse_completion_request({"model": "m", **body})
    assert caught.value.param == param


def test_response_format_and_forcing_tool_choices_become_engine_constraints():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    request = chat(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
    structured = request.params.structured_outputs
    assert structured is not None
    assert json.loads(structured.json or "") == schema
    assert chat(response_format={"type": "json_object"}).params.structured_outputs.json_object
    assert chat(
        response_format={"type": "json_schema", "json_schema": {"name": "x"}}
    ).params.structured_outputs.json_object
    assert chat(response_format={"type": "text"}).params.structured_outputs is None
    tools = [{"type": "function", "function": {"name": f}} for f in ("f", "g")]
    assert (chat(tools=tools).tool_choice, chat(tools=tools, tool_choice="required").tool_choice) == (
        "auto",
        "required",
    )
    named = chat(
        tools=tools, tool_choice={"type": "function", "function": {"name": "g"}}, parallel_tool_calls=False
    )
    assert (named.tool_choice, [t["function"]["name"] for t in named.tools], named.parallel_tool_calls) == (
        "required",
        ["g"],
        False,
    )
