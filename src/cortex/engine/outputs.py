"""What the engine hands back: finished outputs, stream deltas, chat replies, usage.

These types are the boundary between the engine and everything above it (servers, notebooks,
benchmarks). They hold plain Python values, never tensors, and do not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

FinishReason = Literal["stop", "length", "abort"]
ChatFinishReason = Literal["stop", "length", "tool_calls", "abort"]


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """The sampled token's log-probability and the top alternatives as (token_id, text, logprob)."""

    token_id: int
    token: str
    logprob: float
    top: tuple[tuple[int, str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class RequestOutput:
    """A finished request from ``Engine.generate``. ``text`` is empty when the engine has no tokenizer."""

    request_id: str
    prompt_token_ids: list[int]
    token_ids: list[int]
    text: str
    finish_reason: FinishReason
    stop_reason: str | int | None = None  # the stop string or stop token id that ended it, if any
    logprobs: list[TokenLogprob] | None = None
    num_cached_tokens: int = 0


@dataclass(frozen=True, slots=True)
class StreamDelta:
    """One step of ``Engine.stream``: the new tokens and text since the previous delta.

    The last delta of a request has ``finish_reason`` set. Text never contains broken UTF-8 and is
    never retracted; a stop string is never emitted.
    """

    request_id: str
    token_ids: list[int]
    text: str
    finish_reason: FinishReason | None = None
    stop_reason: str | int | None = None
    logprobs: list[TokenLogprob] | None = None
    num_prompt_tokens: int = 0
    num_generated_tokens: int = 0
    num_cached_tokens: int = 0


@dataclass(frozen=True, slots=True)
class ChatReply:
    """A finished ``Engine.chat``: content, reasoning and OpenAI-shaped tool calls.

    tool_calls: ``[{"id", "type": "function", "function": {"name", "arguments": <JSON string>}}]``.
    finish_reason is ``"tool_calls"`` whenever a tool call was parsed.
    """

    text: str
    reasoning: str | None
    tool_calls: list[dict[str, Any]]
    finish_reason: ChatFinishReason
    usage: Usage
    logprobs: list[TokenLogprob] | None = None
    stop_reason: str | int | None = None  # the stop string or stop token id that ended it, if any


@dataclass(frozen=True, slots=True)
class ChatDelta:
    """One step of ``Engine.chat_stream``.

    tool_calls holds OpenAI stream fragments: ``{"index", "id"?, "type"?, "function": {"name"?,
    "arguments"?}}``; the id and name come in an index's first fragment. The last delta has
    finish_reason and usage set, and stop_reason when a stop string or stop token id ended it.
    """

    content: str = ""
    reasoning: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: ChatFinishReason | None = None
    usage: Usage | None = None
    logprobs: list[TokenLogprob] | None = None
    stop_reason: str | int | None = None
