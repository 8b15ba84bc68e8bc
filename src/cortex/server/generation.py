"""One OpenAI-shaped generation on a hosted engine: chunks for streams, whole bodies otherwise.

:class:`Generation` runs a parsed :class:`ChatRequest` or :class:`CompletionRequest` against one
engine and records its metrics. The caller holds the model's admission slot for the duration. The
chunk iterators end when the engine finishes; closing them early (a client disconnect) cancels the
engine stream, which aborts the request in the engine at once.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from cortex.engine.outputs import ChatDelta, StreamDelta, TokenLogprob, Usage
from cortex.server.metrics import ServerMetrics
from cortex.server.openai_wire import (
    ChatAccumulator,
    ChatRequest,
    CompletionRequest,
    chat_chunk,
    chat_completion,
    chat_logprobs,
    completion_logprobs,
    delta_dict,
    new_id,
    now,
    usage_dict,
)


@dataclass(slots=True)
class Generation:
    engine: Any
    model: str
    neuron: str
    metrics: ServerMetrics
    num_prompt_tokens: int
    started: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None
    num_completion_tokens: int = 0

    def _mark(self, num_new_tokens: int) -> None:
        if num_new_tokens and self.first_token_at is None:
            self.first_token_at = time.monotonic()

    def finish(self, usage: Usage | None) -> None:
        """Record token counts and timings once the engine is done."""
        if usage is not None:
            self.num_completion_tokens = usage.completion_tokens
            self.metrics.observe_usage(self.model, self.neuron, usage_dict(usage))
        end = time.monotonic()
        ttft = None if self.first_token_at is None else self.first_token_at - self.started
        self.metrics.observe_timing(
            self.model,
            self.neuron,
            ttft_s=ttft,
            duration_s=end - self.started,
            num_tokens=self.num_completion_tokens,
        )

    def _usage(self, completion_tokens: int) -> dict[str, Any]:
        return usage_dict(Usage(self.num_prompt_tokens, completion_tokens))

    # chat

    def _chat_deltas(self, request: ChatRequest) -> AsyncIterator[ChatDelta]:
        stream: AsyncIterator[ChatDelta] = self.engine.chat_stream(
            request.messages, request.params, tools=request.tools, **request.template_kwargs
        )
        return stream

    async def chat(self, request: ChatRequest) -> dict[str, Any]:
        acc = ChatAccumulator()
        async for delta in self._chat_deltas(request):
            self._mark(1)
            acc.add(delta)
        self.finish(acc.usage)
        return chat_completion(
            acc, response_id=new_id("chatcmpl"), model=self.model, created=now(), logprobs=request.logprobs
        )

    async def chat_chunks(self, request: ChatRequest) -> AsyncIterator[dict[str, Any]]:
        """``chat.completion.chunk`` dicts: a role chunk first (before the prefill), then deltas."""
        ids: dict[str, Any] = {"response_id": new_id("chatcmpl"), "model": self.model, "created": now()}
        every = request.continuous_usage
        with_usage = every or request.include_usage  # with include_usage alone, chunks carry usage: null
        yield chat_chunk(
            **ids,
            delta={"role": "assistant", "content": ""},
            usage=self._usage(0) if every else None,
            with_usage=with_usage,
        )
        usage: Usage | None = None
        async for delta in self._chat_deltas(request):
            self._mark(1)
            usage = delta.usage or usage
            body = delta_dict(delta)
            if not body and delta.finish_reason is None:
                continue
            completion = usage.completion_tokens if usage else 0
            yield chat_chunk(
                **ids,
                delta=body,
                finish_reason=delta.finish_reason,
                logprobs=chat_logprobs(delta.logprobs) if request.logprobs else None,
                usage=(usage_dict(usage) if usage else self._usage(completion)) if every else None,
                with_usage=with_usage,
            )
        self.finish(usage)
        if request.include_usage:
            chunk = chat_chunk(
                **ids, delta={}, usage=usage_dict(usage or Usage(self.num_prompt_tokens, 0)), with_usage=True
            )
            chunk["choices"] = []
            yield chunk

    # completions

    def _deltas(self, request: CompletionRequest) -> AsyncIterator[StreamDelta]:
        stream: AsyncIterator[StreamDelta] = self.engine.stream(
            request.prompt, request.params, request_id=new_id("cmpl")
        )
        return stream

    def _stream_usage(self, delta: StreamDelta) -> Usage:
        return Usage(
            delta.num_prompt_tokens or self.num_prompt_tokens,
            delta.num_generated_tokens,
            cached_tokens=delta.num_cached_tokens,
        )

    async def completion(self, request: CompletionRequest) -> dict[str, Any]:
        text, finish, usage = "", "stop", Usage(self.num_prompt_tokens, 0)
        logprobs: list[TokenLogprob] = []
        async for delta in self._deltas(request):
            self._mark(len(delta.token_ids))
            text += delta.text
            logprobs.extend(delta.logprobs or ())
            usage = self._stream_usage(delta)
            finish = delta.finish_reason or finish
        self.finish(usage)
        return {
            "id": new_id("cmpl"),
            "object": "text_completion",
            "created": now(),
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "text": text,
                    "finish_reason": finish,
                    "logprobs": completion_logprobs(logprobs) if request.logprobs else None,
                }
            ],
            "usage": usage_dict(usage),
        }

    async def completion_chunks(self, request: CompletionRequest) -> AsyncIterator[dict[str, Any]]:
        ids = {"id": new_id("cmpl"), "object": "text_completion", "created": now(), "model": self.model}
        usage, offset = Usage(self.num_prompt_tokens, 0), 0
        async for delta in self._deltas(request):
            self._mark(len(delta.token_ids))
            usage = self._stream_usage(delta)
            if not delta.text and delta.finish_reason is None:
                continue
            chunk: dict[str, Any] = {
                **ids,
                "choices": [
                    {
                        "index": 0,
                        "text": delta.text,
                        "finish_reason": delta.finish_reason,
                        "logprobs": completion_logprobs(delta.logprobs, offset=offset)
                        if request.logprobs
                        else None,
                    }
                ],
            }
            offset += len(delta.text)
            if request.continuous_usage:
                chunk["usage"] = usage_dict(usage)
            yield chunk
        self.finish(usage)
        if request.include_usage:
            yield {**ids, "choices": [], "usage": usage_dict(usage)}
