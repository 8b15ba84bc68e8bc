"""One inference request on a hosted model, from admission to its last token, whatever its dialect.

:meth:`Generation.admitted` is the one place that holds a request's admission slot, counts it in
flight and measures its duration: ``async with Generation.admitted(...) as gen`` around the request,
or, for a stream, entered on an ``AsyncExitStack`` that the stream's body takes over, so the slot is
held until the last byte. :meth:`Generation.chat_choices` and :meth:`Generation.completion_choices` run
the engine and record time to first token and token counts; the dialect modules in ``wire/`` shape what
they yield. A request for ``n`` choices runs ``n`` engine requests side by side (the same prompt; with a
seed, choice ``i`` samples with ``seed + i``) and yields their deltas as they come, each with its choice
index; usage counts the prompt once and the completions of all choices. Closing an iterator early (a
client disconnect) closes the engine streams, which aborts the requests in the engine at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar, cast

from cortex.engine.outputs import ChatDelta, StreamDelta, Usage
from cortex.engine.sampling_params import SamplingParams
from cortex.server.metrics import ServerMetrics
from cortex.server.model_store import HostedModel
from cortex.server.served_engine import ServedEngine
from cortex.server.wire.openai_shapes import usage_dict
from cortex.server.wire.request import ChatRequest, CompletionRequest, GenerationRequest, new_id

T = TypeVar("T")


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

    async def chat_choices(self, request: ChatRequest) -> AsyncIterator[tuple[int, ChatDelta]]:
        """The engine's chat deltas with their choice index; each choice's last delta carries
        ``finish_reason`` and that choice's ``usage``."""
        usages: dict[int, Usage] = {}

        def stream(params: SamplingParams) -> AsyncIterator[ChatDelta]:
            return self.engine.chat_stream(
                request.messages,
                params,
                tools=request.tools,
                tool_choice=request.tool_choice,
                parallel_tool_calls=request.parallel_tool_calls,
                **request.template_kwargs,
            )

        async for index, delta in _merged([stream(p) for p in _choice_params(request)]):
            self._mark(1)
            if delta.usage is not None:
                usages[index] = delta.usage
            yield index, delta
        self._finish(combined_usage(list(usages.values())) if usages else None)

    async def completion_choices(self, request: CompletionRequest) -> AsyncIterator[tuple[int, StreamDelta]]:
        """The engine's completion deltas with their choice index; each choice's last one carries
        ``finish_reason``."""
        usages = {i: Usage(self.num_prompt_tokens, 0) for i in range(request.n)}
        streams = [
            self.engine.stream(request.prompt, params, request_id=new_id("cmpl"))
            for params in _choice_params(request)
        ]
        async for index, delta in _merged(streams):
            self._mark(len(delta.token_ids))
            usages[index] = stream_usage(delta, self.num_prompt_tokens)
            yield index, delta
        self._finish(combined_usage(list(usages.values())))


def combined_usage(usages: Sequence[Usage]) -> Usage:
    """The usage of ``n`` choices of one prompt: the prompt once, every choice's completion."""
    first = usages[0]
    return Usage(
        first.prompt_tokens,
        sum(u.completion_tokens for u in usages),
        cached_tokens=first.cached_tokens,
        reasoning_tokens=sum(u.reasoning_tokens for u in usages),
    )


def _choice_params(request: GenerationRequest) -> list[SamplingParams]:
    params = request.params
    if request.n == 1 or params.seed is None:
        return [params] * request.n
    return [dataclasses.replace(params, seed=(params.seed + i) % 2**63) for i in range(request.n)]


_END = object()


async def _merged(streams: list[AsyncIterator[T]]) -> AsyncIterator[tuple[int, T]]:
    """The items of ``streams`` as they arrive, each with its stream's index. One stream is read
    directly; several are read by one task each, all cancelled and closed when this generator closes."""
    if len(streams) == 1:
        async for only in streams[0]:
            yield 0, only
        return
    queue: asyncio.Queue[tuple[int, object, BaseException | None]] = asyncio.Queue()

    async def pump(index: int, source: AsyncIterator[T]) -> None:
        try:
            async for item in source:
                queue.put_nowait((index, item, None))
            queue.put_nowait((index, _END, None))
        except Exception as error:  # handed to the reader, raised there
            queue.put_nowait((index, _END, error))

    tasks = [asyncio.ensure_future(pump(i, source)) for i, source in enumerate(streams)]
    try:
        running = len(tasks)
        while running:
            index, item, error = await queue.get()
            if error is not None:
                raise error
            if item is _END:
                running -= 1
            else:
                yield index, cast(T, item)
    finally:
        for task in tasks:
            task.cancel()  # a cancelled engine stream aborts its request
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        for source in streams:
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                await aclose()
