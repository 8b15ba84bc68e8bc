"""OpenAI ``chat.completion.chunk`` stream -> Anthropic Messages stream events.

``AnthropicStreamBuilder`` is fed one chunk at a time and returns the events that chunk completes.
Invariants of what it emits:

- ``message_start`` first, with ``input_tokens`` from the caller's hint (or the first chunk's usage);
  then blocks with contiguous indices ``0, 1, ...``, each ``content_block_start`` -> deltas ->
  ``content_block_stop`` before the next starts; then one ``message_delta`` with cumulative usage and
  ``message_stop``. A stream that ends without ``[DONE]`` or ``finish_reason`` is closed the same way.
- No empty blocks: empty strings and ``tool_calls: []`` open nothing.
- Tool calls stream live one at a time, in ``index`` order. OpenAI may interleave fragments of
  several calls (merged by ``index``); a call's fragments are buffered while another call's block
  is open and its arguments are not yet a complete JSON object; the next call's block opens once
  they are (or at the end). Every tool input is checked to be a JSON object when its block closes.
- ``stop_reason`` is ``tool_use`` whenever a tool was called.
- An upstream ``{"error": ...}`` chunk becomes an Anthropic ``error`` event, and the stream ends.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cortex.translate.content import thinking_block
from cortex.translate.envelopes import openai_stream_error_to_anthropic
from cortex.translate.errors import TranslationError
from cortex.translate.fields import JSON, as_dict, as_list, as_str, parse_arguments, str_field
from cortex.translate.ids import anthropic_message_id
from cortex.translate.stop_reasons import anthropic_stop
from cortex.translate.usage import openai_usage_to_anthropic

_DELTA_TYPES = {"text": ("text_delta", "text"), "thinking": ("thinking_delta", "thinking")}


@dataclass
class _ToolCall:
    """One OpenAI tool call (by its ``index``) while its fragments arrive."""

    index: int
    id: str
    name: str = ""
    arguments: str = ""
    opened: bool = False
    closed: bool = False

    def is_complete(self) -> bool:
        try:
            return isinstance(json.loads(self.arguments), dict)
        except json.JSONDecodeError:
            return False


class AnthropicStreamBuilder:
    """State of one OpenAI -> Anthropic stream translation; see the module docstring."""

    def __init__(self, *, model: str | None, message_id: str | None, input_tokens: int | None) -> None:
        self.done = False
        self._model = model
        self._message_id = message_id
        self._input_tokens = input_tokens
        self._started = False
        self._next_index = 0
        self._open: str | None = None  # "text", "thinking" or "tool_use" while a block is open
        self._tools: dict[int, _ToolCall] = {}
        self._live: _ToolCall | None = None
        self._finish_reason: Any = None
        self._matched_stop: Any = None
        self._usage: Any = None

    def feed(self, chunk: Any) -> list[JSON]:
        """Events completed by one chunk: a chunk dict, or the ``"[DONE]"`` sentinel."""
        if isinstance(chunk, str) and chunk.strip() == "[DONE]":
            return self.finish()
        chunk = as_dict(chunk, "chunk")
        if chunk.get("error") is not None:
            self.done = True
            return [openai_stream_error_to_anthropic(chunk["error"])]
        events = [] if self._started else [self._message_start(chunk)]
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        for i, item in enumerate(as_list(chunk.get("choices") or [], "chunk.choices")):
            choice = as_dict(item, f"chunk.choices[{i}]")
            if choice.get("index", 0) != 0:
                continue
            events += self._delta(as_dict(choice.get("delta") or {}, f"chunk.choices[{i}].delta"))
            if choice.get("finish_reason"):
                self._finish_reason = choice["finish_reason"]
                self._matched_stop = choice.get("stop_reason")
        return events

    def finish(self) -> list[JSON]:
        """The closing events: open and buffered blocks, ``message_delta``, ``message_stop``; nothing
        once the stream is done (ended, or cut by an error event)."""
        if self.done:
            return []
        self.done = True
        events = [] if self._started else [self._message_start({})]
        events += self._close()
        for call in sorted(self._tools.values(), key=lambda c: c.index):
            if not call.opened:
                events += self._open_tool(call)
                events += self._close()
        stop_reason, stop_sequence = anthropic_stop(
            self._finish_reason, self._matched_stop, called_tool=bool(self._tools)
        )
        usage = openai_usage_to_anthropic(self._usage, "usage") if self._usage else {"output_tokens": 0}
        events.append(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                "usage": usage,
            }
        )
        events.append({"type": "message_stop"})
        return events

    def _message_start(self, chunk: Mapping[str, Any]) -> JSON:
        self._started = True
        if self._message_id is None:
            self._message_id = anthropic_message_id(str_field(chunk, "id", "chunk")) if chunk else "msg_empty"
        model = self._model if self._model is not None else str(chunk.get("model", ""))
        usage = openai_usage_to_anthropic(chunk.get("usage"), "chunk.usage")
        if self._input_tokens is not None:
            usage["input_tokens"] = self._input_tokens
        usage["output_tokens"] = 0
        usage.pop("output_tokens_details", None)
        message: JSON = {
            "id": self._message_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        }
        return {"type": "message_start", "message": message}

    def _delta(self, delta: Mapping[str, Any]) -> list[JSON]:
        events: list[JSON] = []
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if reasoning:
            events += self._append("thinking", as_str(reasoning, "delta.reasoning_content"))
        for i, entry in enumerate(as_list(delta.get("thinking_blocks") or [], "delta.thinking_blocks")):
            events += self._carried_thinking(
                thinking_block(as_dict(entry, f"delta.thinking_blocks[{i}]"), f"delta.thinking_blocks[{i}]")
            )
        for key in ("content", "refusal"):
            if delta.get(key):
                events += self._append("text", as_str(delta[key], f"delta.{key}"))
        for i, call in enumerate(as_list(delta.get("tool_calls") or [], "delta.tool_calls")):
            events += self._tool_fragment(as_dict(call, f"delta.tool_calls[{i}]"), f"delta.tool_calls[{i}]")
        return events

    def _append(self, kind: str, text: str) -> list[JSON]:
        events = (
            [] if self._open == kind else self._close() + self._start_block(kind, self._empty_block(kind))
        )
        delta_type, key = _DELTA_TYPES[kind]
        events.append(self._block_delta({"type": delta_type, key: text}))
        return events

    def _carried_thinking(self, block: JSON) -> list[JSON]:
        """A thinking block carried whole in ``thinking_blocks`` (see content.py): it supplies the
        signature of the thinking streamed so far, or is a block of its own (redacted thinking)."""
        if block["type"] == "redacted_thinking":
            return self._close() + self._start_block("redacted_thinking", block) + self._close()
        events: list[JSON] = []
        if self._open != "thinking":
            events += self._close() + self._start_block("thinking", self._empty_block("thinking"))
            if block["thinking"]:
                events.append(self._block_delta({"type": "thinking_delta", "thinking": block["thinking"]}))
        if block["signature"]:
            events.append(self._block_delta({"type": "signature_delta", "signature": block["signature"]}))
        return events + self._close()

    def _tool_fragment(self, fragment: Mapping[str, Any], path: str) -> list[JSON]:
        index = fragment.get("index", 0)
        if not isinstance(index, int):
            raise TranslationError("expected an integer", param=f"{path}.index")
        function = as_dict(fragment.get("function") or {}, f"{path}.function")
        call = self._tools.get(index)
        if call is None:
            call = self._tools[index] = _ToolCall(
                index, str(fragment.get("id") or f"toolu_{self._message_id}_{index}")
            )
        call.name += as_str(function.get("name") or "", f"{path}.function.name")
        piece = as_str(function.get("arguments") or "", f"{path}.function.arguments")
        call.arguments += piece
        if call.closed:
            if piece.strip():
                raise TranslationError("tool arguments arrived after the call was complete", param=path)
            return []
        events = []
        if call is self._live and piece:
            events.append(self._block_delta({"type": "input_json_delta", "partial_json": piece}))
        return events + self._advance()

    def _advance(self) -> list[JSON]:
        """Open buffered tool calls, lowest ``index`` first, while no incomplete call is open. A call
        opens once its arguments start: its name may arrive in pieces before them."""
        events: list[JSON] = []
        while self._live is None or self._live.is_complete():
            pending = min(
                (c for c in self._tools.values() if not c.opened), key=lambda c: c.index, default=None
            )
            if pending is None or not (pending.name and pending.arguments):
                break
            events += self._open_tool(pending)
        return events

    def _open_tool(self, call: _ToolCall) -> list[JSON]:
        if not call.name:
            raise TranslationError("a tool call never received its name", param=f"tool_calls[{call.index}]")
        block = {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}
        events = self._close() + self._start_block("tool_use", block)
        call.opened = True
        self._live = call
        if call.arguments:
            events.append(self._block_delta({"type": "input_json_delta", "partial_json": call.arguments}))
        return events

    def _empty_block(self, kind: str) -> JSON:
        if kind == "thinking":
            return {"type": "thinking", "thinking": "", "signature": ""}
        return {"type": "text", "text": ""}

    def _start_block(self, kind: str, block: JSON) -> list[JSON]:
        self._open = kind
        return [{"type": "content_block_start", "index": self._next_index, "content_block": block}]

    def _block_delta(self, delta: JSON) -> JSON:
        return {"type": "content_block_delta", "index": self._next_index, "delta": delta}

    def _close(self) -> list[JSON]:
        if self._open is None:
            return []
        if self._live is not None:
            parse_arguments(self._live.arguments, f"tool_calls[{self._live.index}].function.arguments")
            self._live.closed = True
            self._live = None
        self._open = None
        self._next_index += 1
        return [{"type": "content_block_stop", "index": self._next_index - 1}]
