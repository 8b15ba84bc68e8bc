"""Forced tool calls over the random-weight demo model: OpenAI ``tool_choice`` required / named and
Anthropic ``any`` / ``tool`` (through the request translation the servers run) all give a call to an
allowed tool, parsed by the Qwen tool-call parser, whose arguments validate under its schema."""

from __future__ import annotations

import asyncio
import json

import jsonschema
import pytest

from cortex import translate
from cortex.engine.engine import Engine
from cortex.engine.outputs import ChatDelta
from cortex.engine.structured import UnsupportedSchemaError
from cortex.server.wire.openai import parse_chat_request
from cortex.server.wire.openai_shapes import ChatAccumulator
from cortex.server.wire.request import ChatRequest

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 12},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "unit": {"type": "string", "enum": ["c", "f"]},
    },
    "required": ["city", "days"],
}
SEARCH = {
    "type": "object",
    "properties": {
        "query": {"type": "string", "maxLength": 10},
        "filters": {"type": "array", "items": {"type": "integer"}},
    },
    "required": ["query"],
}
OPENAI_TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "search", "parameters": SEARCH}},
]
SCHEMAS = {"get_weather": WEATHER, "search": SEARCH}
MESSAGES = [{"role": "user", "content": "What is the weather in Paris?"}]


def _openai(choice, seed: int) -> ChatRequest:
    body = {
        "model": "demo",
        "messages": MESSAGES,
        "tools": OPENAI_TOOLS,
        "tool_choice": choice,
        "max_tokens": 64,
        "seed": seed,
        "parallel_tool_calls": False,
        "chat_template_kwargs": {"enable_thinking": seed % 2 == 0},
    }
    return parse_chat_request(body)


def _anthropic(choice, seed: int) -> ChatRequest:
    body = {
        "model": "demo",
        "max_tokens": 64,
        "messages": MESSAGES,
        "tools": [
            {"name": t["function"]["name"], "input_schema": t["function"]["parameters"]} for t in OPENAI_TOOLS
        ],
        "tool_choice": choice,
        "thinking": {"type": "enabled" if seed % 2 else "disabled", "budget_tokens": 1024},
    }
    return parse_chat_request({**translate.anthropic_to_openai_request(body), "seed": seed})


async def _run(engine: Engine, request: ChatRequest) -> ChatAccumulator:
    acc = ChatAccumulator()
    stream = engine.chat_stream(
        request.messages,
        request.params,
        tools=request.tools,
        tool_choice=request.tool_choice,
        parallel_tool_calls=request.parallel_tool_calls,
        **request.template_kwargs,
    )
    async for delta in stream:
        assert isinstance(delta, ChatDelta)
        acc.add(delta)
    return acc


def test_fifty_forced_calls_are_valid_calls_to_allowed_tools(demo_engine: Engine):
    cases: list[tuple[ChatRequest, set[str]]] = []
    for i in range(50):
        kind = i % 4
        if kind == 0:
            cases.append((_openai("required", i), {"get_weather", "search"}))
        elif kind == 1:
            cases.append((_openai({"type": "function", "function": {"name": "search"}}, i), {"search"}))
        elif kind == 2:
            cases.append((_anthropic({"type": "any"}, i), {"get_weather", "search"}))
        else:
            cases.append((_anthropic({"type": "tool", "name": "get_weather"}, i), {"get_weather"}))

    async def run_all() -> list[ChatAccumulator]:
        return await asyncio.gather(*(_run(demo_engine, request) for request, _ in cases))

    for (_, allowed), acc in zip(cases, asyncio.run(run_all()), strict=True):
        assert acc.finish_reason == "tool_calls"
        assert len(acc.tool_calls) == 1
        call = acc.tool_calls[0]["function"]
        assert call["name"] in allowed
        jsonschema.validate(json.loads(call["arguments"]), SCHEMAS[call["name"]])


def test_string_patterns_cannot_be_forced(demo_engine: Engine):
    tools = [
        {
            "type": "function",
            "function": {
                "name": "f",
                "parameters": {"type": "object", "properties": {"s": {"type": "string", "pattern": "^a+$"}}},
            },
        }
    ]
    with pytest.raises(UnsupportedSchemaError, match="pattern"):
        demo_engine.chat(MESSAGES, None, tools, tool_choice="required")
