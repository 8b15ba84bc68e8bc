"""A scripted agent session, as an OpenAI-style client sends it: each call repeats the conversation so
far, with the assistant's earlier replies (reasoning, content, tool calls) and the tool results.

Calls 0 -> 1 -> 2 are a tool loop after one user query; call 3 answers and a new user query follows;
call 4 is a tool loop again. Used to check where each call's prompt diverges from the previous one's.
"""

from __future__ import annotations

import json
from typing import Any

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city"],
            },
        },
    }
]

# the call that started the tool loop each call belongs to (the snapshot a new user turn falls back to)
LOOP_START = [0, 0, 0, 3, 3]


def _call(call_id: str, city: str, **extra: Any) -> dict[str, Any]:
    arguments = json.dumps({"city": city, **extra})
    return {"id": call_id, "type": "function", "function": {"name": "get_weather", "arguments": arguments}}


def agent_session() -> list[list[dict[str, Any]]]:
    """The messages of each of the five calls."""
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You are a weather assistant. Use the tool for every city."},
        {"role": "user", "content": "What is the weather in Paris and Oslo tomorrow?"},
    ]
    calls = [list(messages)]
    steps: list[list[dict[str, Any]]] = [
        [
            {
                "role": "assistant",
                "reasoning_content": "Two cities, one call each. Paris first.",
                "content": "Let me check Paris first.",
                "tool_calls": [_call("call_1", "Paris", days=1)],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "Paris: 18C, sunny"},
        ],
        [
            {
                "role": "assistant",
                "reasoning_content": "Now Oslo.",
                "content": "",
                "tool_calls": [_call("call_2", "Oslo", days=1)],
            },
            {"role": "tool", "tool_call_id": "call_2", "content": "Oslo: 9C, rain"},
        ],
        [
            {
                "role": "assistant",
                "reasoning_content": "Both known; answer.",
                "content": "Paris: 18C and sunny. Oslo: 9C with rain.",
            },
            {"role": "user", "content": "And in Rome?"},
        ],
        [
            {
                "role": "assistant",
                "reasoning_content": "One more city.",
                "content": "",
                "tool_calls": [_call("call_3", "Rome")],
            },
            {"role": "tool", "tool_call_id": "call_3", "content": "Rome: 24C, clear"},
        ],
    ]
    for step in steps:
        messages.extend(step)
        calls.append(list(messages))
    return calls


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
