"""OpenAI response shapes: usage, logprobs, the folded chat.completion message, chat.completion.chunk."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cortex.engine.outputs import ChatDelta, TokenLogprob, Usage


def usage_dict(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def chat_logprobs(logprobs: list[TokenLogprob] | None) -> dict[str, Any] | None:
    if logprobs is None:
        return None

    def entry(token: str, logprob: float) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode())}

    return {
        "content": [
            {**entry(lp.token, lp.logprob), "top_logprobs": [entry(text, value) for _, text, value in lp.top]}
            for lp in logprobs
        ]
    }


def completion_logprobs(logprobs: list[TokenLogprob] | None, *, offset: int = 0) -> dict[str, Any] | None:
    if logprobs is None:
        return None
    offsets, position = [], offset
    for lp in logprobs:
        offsets.append(position)
        position += len(lp.token)
    return {
        "tokens": [lp.token for lp in logprobs],
        "token_logprobs": [lp.logprob for lp in logprobs],
        "top_logprobs": [{text: value for _, text, value in lp.top} for lp in logprobs],
        "text_offset": offsets,
    }


@dataclass(slots=True)
class ChatAccumulator:
    """Folds ChatDeltas into one OpenAI ``chat.completion`` message (tool calls merged by index)."""

    content: str = ""
    reasoning: str = ""
    tool_calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None
    stop_reason: str | int | None = None
    usage: Usage | None = None

    def add(self, delta: ChatDelta) -> None:
        self.content += delta.content
        self.reasoning += delta.reasoning
        for fragment in delta.tool_calls:
            call = self.tool_calls.setdefault(
                fragment["index"], {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
            )
            call["id"] = fragment.get("id") or call["id"]
            function = fragment.get("function") or {}
            call["function"]["name"] += function.get("name") or ""
            call["function"]["arguments"] += function.get("arguments") or ""
        self.logprobs.extend(delta.logprobs or ())
        self.finish_reason = delta.finish_reason or self.finish_reason
        self.stop_reason = delta.stop_reason if delta.stop_reason is not None else self.stop_reason
        self.usage = delta.usage or self.usage

    def message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.content or None}
        if self.reasoning:
            message["reasoning_content"] = self.reasoning
        if self.tool_calls:
            message["tool_calls"] = [self.tool_calls[i] for i in sorted(self.tool_calls)]
        return message


def chat_chunk(
    *,
    response_id: str,
    model: str,
    created: int,
    delta: dict[str, Any],
    index: int = 0,
    finish_reason: str | None = None,
    stop_reason: str | int | None = None,
    logprobs: dict[str, Any] | None = None,
    usage: dict[str, Any] | None = None,
    with_usage: bool = False,
) -> dict[str, Any]:
    """One ``chat.completion.chunk``; ``stop_reason`` (the matched stop string or token id, vLLM's
    extension) goes into the choice that finishes."""
    choice: dict[str, Any] = {
        "index": index,
        "delta": delta,
        "finish_reason": finish_reason,
        "logprobs": logprobs,
    }
    if finish_reason is not None:
        choice["stop_reason"] = stop_reason
    chunk: dict[str, Any] = {
        "id": response_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [choice],
    }
    if with_usage:
        chunk["usage"] = usage
    return chunk


def delta_dict(delta: ChatDelta) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if delta.content:
        out["content"] = delta.content
    if delta.reasoning:
        out["reasoning_content"] = delta.reasoning
    if delta.tool_calls:
        out["tool_calls"] = delta.tool_calls
    return out
