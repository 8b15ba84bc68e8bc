"""The Anthropic dialect on the neuron: Messages and count_tokens bodies in; a Message and its events out,
built here from the engine's chat deltas.

Requests: the conversation is mapped onto the chat template's messages (which are OpenAI-shaped) by
:mod:`cortex.translate`'s request mapping and checked by the same rules as ``/v1/chat/completions``;
``max_tokens`` is lowered to what the model can still produce instead of refused (Claude Code asks for
128000), which the generation applies once the prompt is rendered.

Outputs: :class:`MessageBuilder` turns chat deltas into the Messages stream's events: ``message_start``
(with the prompt's exact token count, sent before the prefill), then contiguous content blocks
(``thinking``, ``text``, ``tool_use`` in the order the model produced them, each
``content_block_start`` -> deltas -> ``content_block_stop``), then ``message_delta`` (stop reason and
the whole usage: ``input_tokens`` less the ``cache_read_input_tokens`` the prefix cache supplied) and
``message_stop``. A whole Message is the same blocks, folded as they are built.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

from cortex import translate
from cortex.engine.outputs import ChatDelta, Usage
from cortex.server.generation import Generation
from cortex.server.wire import openai
from cortex.server.wire.request import ChatRequest
from cortex.translate.stop_reasons import anthropic_stop

BlockType = Literal["thinking", "text", "tool_use"]


def parse_messages_request(body: dict[str, Any]) -> ChatRequest:
    parsed = openai.parse_chat_request(translate.anthropic_to_openai_request(body))
    return dataclasses.replace(parsed, clamp_max_tokens=True)


def parse_count_tokens_request(body: dict[str, Any]) -> ChatRequest:
    """A count_tokens body is a Messages body without ``max_tokens``."""
    return openai.parse_chat_request(
        translate.anthropic_to_openai_request({**body, "max_tokens": body.get("max_tokens", 1)})
    )


def usage_dict(usage: Usage) -> dict[str, Any]:
    """Anthropic usage: ``input_tokens`` excludes the prompt tokens read from the prefix cache."""
    return {
        "input_tokens": max(usage.prompt_tokens - usage.cached_tokens, 0),
        "output_tokens": usage.completion_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
        "cache_creation_input_tokens": 0,
        "output_tokens_details": {"thinking_tokens": usage.reasoning_tokens},
    }


class MessageBuilder:
    """One Message as it is generated: :meth:`start`, :meth:`feed` per chat delta, then the events of
    its end come with the delta that carries ``finish_reason``; :meth:`message` is the whole Message."""

    def __init__(self, *, model: str, num_prompt_tokens: int) -> None:
        self._message: dict[str, Any] = {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": num_prompt_tokens,
                "output_tokens": 0,
                "cache_read_input_tokens": 0,
                "cache_creation_input_tokens": 0,
            },
        }
        self._open: BlockType | None = None
        self._open_call: int | None = None  # the tool call index of the open tool_use block
        self._arguments = ""  # the open tool_use block's input so far, as JSON text

    def start(self) -> dict[str, Any]:
        return {"type": "message_start", "message": {**self._message, "content": []}}

    def feed(self, delta: ChatDelta) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        if delta.reasoning:
            events += self._text("thinking", delta.reasoning)
        if delta.content:
            events += self._text("text", delta.content)
        for fragment in delta.tool_calls:  # an index's first fragment has the call's id and name
            function = fragment.get("function") or {}
            if fragment["index"] != self._open_call:
                events += self._close()
                events += self._open_block(
                    {"type": "tool_use", "id": fragment["id"], "name": function["name"], "input": {}}
                )
                self._open_call = fragment["index"]
            if function.get("arguments"):
                self._arguments += function["arguments"]
                events.append(
                    self._delta({"type": "input_json_delta", "partial_json": function["arguments"]})
                )
        if delta.finish_reason is not None:
            events += self._end(delta, delta.usage or Usage(0, 0))
        return events

    def message(self) -> dict[str, Any]:
        return self._message

    def _text(self, kind: Literal["thinking", "text"], text: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        if self._open != kind:
            events += self._close()
            empty = {"type": kind, kind: ""} | ({"signature": ""} if kind == "thinking" else {})
            events += self._open_block(empty)
        self._message["content"][-1][kind] += text
        events.append(self._delta({"type": f"{kind}_delta", kind: text}))
        return events

    def _delta(self, delta: dict[str, Any]) -> dict[str, Any]:
        return {"type": "content_block_delta", "index": len(self._message["content"]) - 1, "delta": delta}

    def _open_block(self, block: dict[str, Any]) -> list[dict[str, Any]]:
        self._open = block["type"]
        self._message["content"].append(block)
        index = len(self._message["content"]) - 1
        return [{"type": "content_block_start", "index": index, "content_block": dict(block)}]

    def _close(self) -> list[dict[str, Any]]:
        if self._open is None:
            return []
        block = self._message["content"][-1]
        if self._open == "tool_use":  # the parser's fragments join into the arguments' JSON object
            block["input"] = json.loads(self._arguments) if self._arguments else {}
            self._open_call, self._arguments = None, ""
        self._open = None
        return [{"type": "content_block_stop", "index": len(self._message["content"]) - 1}]

    def _end(self, last: ChatDelta, usage: Usage) -> list[dict[str, Any]]:
        events = self._close()
        called = any(block["type"] == "tool_use" for block in self._message["content"])
        stop_reason, stop_sequence = anthropic_stop(last.finish_reason, last.stop_reason, called_tool=called)
        self._message.update(stop_reason=stop_reason, stop_sequence=stop_sequence, usage=usage_dict(usage))
        events.append(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                "usage": usage_dict(usage),
            }
        )
        events.append({"type": "message_stop"})
        return events


async def message(gen: Generation, choices: AsyncIterator[tuple[int, ChatDelta]]) -> dict[str, Any]:
    """A whole Message (a Messages request has one choice)."""
    builder = MessageBuilder(model=gen.model, num_prompt_tokens=gen.num_prompt_tokens)
    async for _, delta in choices:
        builder.feed(delta)
    return builder.message()


async def message_events(
    gen: Generation, choices: AsyncIterator[tuple[int, ChatDelta]]
) -> AsyncIterator[dict[str, Any]]:
    """The Messages stream's events, from ``message_start`` (with the prompt's token count) on."""
    builder = MessageBuilder(model=gen.model, num_prompt_tokens=gen.num_prompt_tokens)
    yield builder.start()
    async for _, delta in choices:
        for event in builder.feed(delta):
            yield event
