"""One inference request on a hosted model, from admission to its last token, whatever its dialect.

:meth:`Generation.admitted` is the one place that holds a request's admission slot, counts it in
flight and measures its duration: ``async with Generation.admitted(...) as gen`` around the request,
or, for a stream, entered on an ``AsyncExitStack`` that the stream's body takes over, so the slot is
held until the last byte. :meth:`Generation.chat_deltas` and :meth:`Generation.deltas` run the engine
and record time to first token and token counts; the dialect modules in ``wire/`` shape what they
yield. Closing an iterator early (a client disconnect) closes the engine stream, which aborts the
request in the engine at once.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from cortex.engine.outputs import ChatDelta, StreamDelta, Usage
from cortex.server.metrics import ServerMetrics
from cortex.server.model_store import HostedModel
from cortex.server.served_engine import ServedEngine
from cortex.server.wire.openai_shapes import usage_dict
from cortex.server.wire.request import ChatRequest, CompletionRequest, new_id


def stream_usage(delta: StreamDelta, num_prompt_tokens: int) -> Usage:
    """The usage so far of a completion stream at ``delta``."""
    return Usage(
        delta.num_prompt_tokens or num_prompt_tokens,
        delta.num_generated_tokens,
        cached_tokens=delta.num_cached_tokens,
    )


@dataclass(slots=True)
class Generation:
    engine: ServedEngine
    model: str
    neuron: str
    metrics: ServerMetrics
    num_prompt_tokens: int = 0
    started: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None

    @classmethod
    @contextlib.asynccontextmanager
    async def admitted(
        cls, hosted: HostedModel, *, endpoint: str, neuron: str, metrics: ServerMetrics
    ) -> AsyncIterator[Generation]:
        """Hold ``hosted``'s admission slot (a refusal raises before any response starts), count the
        request in flight and observe its duration when the block ends, however it ends."""
        async with hosted.admission.slot():
            gen = cls(hosted.served(), hosted.id, neuron, metrics)
            in_flight = metrics.in_flight.labels(hosted.id, neuron)
            in_flight.inc()
            try:
                yield gen
            finally:
                in_flight.dec()
                metrics.request_duration.labels(hosted.id, neuron, endpoint).observe(
                    time.monotonic() - gen.started
                )

    def _mark(self, num_new_tokens: int) -> None:
        if num_new_tokens and self.first_token_at is None:
            self.first_token_at = time.monotonic()

    def _finish(self, usage: Usage | None) -> None:
        """Record token counts and timings once the engine is done."""
        num_completion_tokens = 0
        if usage is not None:
            num_completion_tokens = usage.completion_tokens
            self.metrics.observe_usage(self.model, self.neuron, usage_dict(usage))
        end = time.monotonic()
        ttft = None if self.first_token_at is None else self.first_token_at - self.started
        self.metrics.observe_timing(
            self.model,
            self.neuron,
            ttft_s=ttft,
            duration_s=end - self.started,
            num_tokens=num_completion_tokens,
        )

    async def chat_deltas(self, request: ChatRequest) -> AsyncIterator[ChatDelta]:
        """The engine's chat deltas; the last one carries ``finish_reason`` and ``usage``."""
        usage: Usage | None = None
        stream = self.engine.chat_stream(
            request.messages,
            request.params,
            tools=request.tools,
            tool_choice=request.tool_choice,
            parallel_tool_calls=request.parallel_tool_calls,
            **request.template_kwargs,
        )
        async for delta in stream:
            self._mark(1)
            usage = delta.usage or usage
            yield delta
        self._finish(usage)

    async def deltas(self, request: CompletionRequest) -> AsyncIterator[StreamDelta]:
        """The engine's completion deltas; the last one carries ``finish_reason``."""
        usage = Usage(self.num_prompt_tokens, 0)
        async for delta in self.engine.stream(request.prompt, request.params, request_id=new_id("cmpl")):
            self._mark(len(delta.token_ids))
            usage = stream_usage(delta, self.num_prompt_tokens)
            yield delta
        self._finish(usage)
