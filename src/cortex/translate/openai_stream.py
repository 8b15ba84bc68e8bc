"""Anthropic Messages stream events -> OpenAI ``chat.completion.chunk`` stream.

``OpenAIStreamBuilder`` is fed one event at a time and returns the chunks it completes. What it
emits: a first chunk with ``role: assistant``; ``content`` deltas for text, ``reasoning_content``
deltas for thinking (blocks after the first are preceded by a blank line, as in non-streamed
responses), and ``tool_calls`` fragments numbered ``0, 1, ...`` in block order (``id`` and ``name``
in the first); one chunk per finished thinking block carrying it whole in ``thinking_blocks``
(so its signature survives); a chunk with ``finish_reason`` (``tool_calls`` whenever a tool was
called); and with ``include_usage`` a last chunk with ``choices: []`` and the usage (other chunks
then carry ``usage: null``). The caller writes ``data: [DONE]``. An Anthropic ``error`` event
becomes OpenAI's ``{"error": {...}}`` chunk and ends the stream; ``ping`` and unknown events are
skipped, as Anthropic asks clients to do.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cortex.translate.content import block_type, thinking_block, unsupported
from cortex.translate.envelopes import anthropic_stream_error_to_openai
from cortex.translate.errors import TranslationError
from cortex.translate.fields import JSON, as_dict, as_str, dump_arguments, str_field
from cortex.translate.ids import openai_completion_id
from cortex.translate.stop_reasons import openai_finish
from cortex.translate.usage import anthropic_usage_to_openai


@dataclass
class _Block:
    """An open Anthropic content block: its type, its ordinal among tool calls or thinking blocks,
    and (thinking) its text and signature so far."""

    type: str
    ordinal: int
    thinking: str = ""
    signature: str = ""


class OpenAIStreamBuilder:
    """State of one Anthropic -> OpenAI stream translation; see the module docstring."""

    def __init__(
        self, *, model: str | None, completion_id: str | None, created: int | None, include_usage: bool
    ) -> None:
        self.done = False
        self._model = model or ""
        self._id = completion_id or "chatcmpl-empty"
        self._created = int(time.time()) if created is None else created
        self._include_usage = include_usage
        self._started = False
        self._blocks: dict[int, _Block] = {}
        self._num_tool_calls = 0
        self._num_thinking = 0  # thinking and redacted_thinking blocks: the thinking_blocks index
        self._num_reasoning = 0  # thinking blocks only: those joined into reasoning_content
        self._stop_reason: Any = None
        self._stop_sequence: Any = None
        self._usage: JSON = {}

    def feed(self, event: Any) -> list[JSON]:
        """Chunks completed by one Anthropic stream event (a dict with ``type``)."""
        event = as_dict(event, "event")
        kind = event.get("type")
        if kind == "error":
            self.done = True
            return [anthropic_stream_error_to_openai(event)]
        if kind == "message_start":
            return self._message_start(as_dict(event.get("message") or {}, "event.message"))
        chunks = [] if self._started else self._message_start({})
        if kind == "content_block_start":
            chunks += self._block_start(event)
        elif kind == "content_block_delta":
            chunks += self._block_delta(event)
        elif kind == "content_block_stop":
            chunks += self._block_stop(event)
        elif kind == "message_delta":
            delta = as_dict(event.get("delta") or {}, "event.delta")
            self._stop_reason = delta.get("stop_reason")
            self._stop_sequence = delta.get("stop_sequence")
            self._usage.update(as_dict(event.get("usage") or {}, "event.usage"))
        elif kind == "message_stop":
            chunks += self.finish()
        return chunks

    def finish(self) -> list[JSON]:
        """The closing chunks: ``finish_reason`` and, if asked for, usage; nothing once the stream is
        done (ended, or cut by an error event)."""
        if self.done:
            return []
        self.done = True
        chunks = [] if self._started else self._message_start({})
        finish_reason = openai_finish(self._stop_reason, called_tool=self._num_tool_calls > 0)
        last = self._chunk({}, finish_reason=finish_reason)
        if self._stop_sequence is not None:
            last["choices"][0]["stop_reason"] = self._stop_sequence
        chunks.append(last)
        if self._include_usage:
            usage_chunk = self._chunk({})
            usage_chunk["choices"] = []
            usage_chunk["usage"] = anthropic_usage_to_openai(self._usage, "usage")
            chunks.append(usage_chunk)
        return chunks

    def _message_start(self, message: Mapping[str, Any]) -> list[JSON]:
        self._started = True
        if message:
            self._id = (
                openai_completion_id(str_field(message, "id", "message"))
                if self._id == "chatcmpl-empty"
                else self._id
            )
            self._model = self._model or str(message.get("model", ""))
            self._usage.update(as_dict(message.get("usage") or {}, "message.usage"))
        return [self._chunk({"role": "assistant", "content": ""})]

    def _block_start(self, event: Mapping[str, Any]) -> list[JSON]:
        index = self._index(event)
        block = as_dict(event.get("content_block"), "event.content_block")
        kind = block_type(block, "event.content_block")
        if kind == "text":
            self._blocks[index] = _Block("text", 0)
            text = as_str(block.get("text") or "", "event.content_block.text")
            return [self._chunk({"content": text})] if text else []
        if kind in ("thinking", "redacted_thinking"):
            ordinal = self._num_thinking
            self._num_thinking += 1
            carried = thinking_block(block, "event.content_block")
            if kind == "redacted_thinking":
                self._blocks[index] = _Block(kind, ordinal)
                return [self._chunk({"thinking_blocks": [{"index": ordinal, **carried}]})]
            self._blocks[index] = _Block(kind, ordinal, carried["thinking"], carried["signature"])
            text = ("\n\n" if self._num_reasoning else "") + carried["thinking"]
            self._num_reasoning += 1
            return [self._chunk({"reasoning_content": text})] if text else []
        if kind == "tool_use":
            ordinal = self._num_tool_calls
            self._num_tool_calls += 1
            self._blocks[index] = _Block(kind, ordinal)
            tool_input = block.get("input") or {}
            call = {
                "index": ordinal,
                "id": str_field(block, "id", "event.content_block"),
                "type": "function",
                "function": {
                    "name": str_field(block, "name", "event.content_block"),
                    "arguments": dump_arguments(tool_input, "event.content_block.input")
                    if tool_input
                    else "",
                },
            }
            return [self._chunk({"tool_calls": [call]})]
        raise unsupported(kind, "event.content_block")

    def _block_delta(self, event: Mapping[str, Any]) -> list[JSON]:
        block = self._open_block(event)
        delta = as_dict(event.get("delta"), "event.delta")
        kind = delta.get("type")
        if kind == "text_delta":
            return [self._chunk({"content": as_str(delta.get("text"), "event.delta.text")})]
        if kind == "thinking_delta":
            text = as_str(delta.get("thinking"), "event.delta.thinking")
            block.thinking += text
            return [self._chunk({"reasoning_content": text})]
        if kind == "signature_delta":
            block.signature += as_str(delta.get("signature"), "event.delta.signature")
            return []
        if kind == "input_json_delta":
            piece = as_str(delta.get("partial_json"), "event.delta.partial_json")
            call = {"index": block.ordinal, "function": {"arguments": piece}}
            return [self._chunk({"tool_calls": [call]})] if piece else []
        return []  # citations_delta and future delta types carry nothing OpenAI can show

    def _block_stop(self, event: Mapping[str, Any]) -> list[JSON]:
        block = self._open_block(event)
        del self._blocks[self._index(event)]
        if block.type != "thinking":
            return []
        carried = {
            "index": block.ordinal,
            "type": "thinking",
            "thinking": block.thinking,
            "signature": block.signature,
        }
        return [self._chunk({"thinking_blocks": [carried]})]

    def _index(self, event: Mapping[str, Any]) -> int:
        index = event.get("index")
        if not isinstance(index, int):
            raise TranslationError("expected an integer block index", param="event.index")
        return index

    def _open_block(self, event: Mapping[str, Any]) -> _Block:
        block = self._blocks.get(self._index(event))
        if block is None:
            raise TranslationError("no content block is open at this index", param="event.index")
        return block

    def _chunk(self, delta: JSON, *, finish_reason: str | None = None) -> JSON:
        chunk: JSON = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
        }
        if self._include_usage:
            chunk["usage"] = None
        return chunk
