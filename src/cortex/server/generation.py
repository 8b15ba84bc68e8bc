"""One inference request on a hosted model, from admission to its last token, whatever its dialect.

:meth:`Generation.admitted` is the one place that holds a request's admission slot, counts it in
flight and measures its duration: ``async with Generation.admitted(...) as gen`` around the request,
or, for a stream, entered on an ``AsyncExitStack`` that the stream's body takes over, so the slot is
held until the last byte. :meth:`Generation.start_chat` renders and tokenises the prompt once (off the
event loop), lowers ``max_tokens`` to what fits when the dialect asks for that, and queues the request
on the engine, which checks the context: bad input raises there, before any response starts.
:meth:`Generation.start_completion` does the same for a completion. Both return the deltas with their
choice index, recording time to first token and token counts as they pass; the dialect modules in
``wire/`` shape them. A request for ``n`` choices queues ``n`` engine requests side by side (the same
prompt; with a seed, choice ``i`` samples with ``seed + i``) and yields their deltas as they come; usage
counts the prompt once and the completions of all choices. Every engine request a generation started is
closed when the generation ends, however it ends (a client disconnect included), which aborts it in the
engine if it is still running.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar, cast

from cortex.engine.context_window import fit_max_tokens
from cortex.engine.delta_stream import DeltaStream
from cortex.engine.outputs import ChatDelta, StreamDelta, Usage
from cortex.engine.sampling_params import SamplingParams
from cortex.engine.text.chat import ChatStream, render_chat, start_chat
from cortex.errors import InvalidRequestError
from cortex.server.metrics import ServerMetrics
from cortex.server.model_store import HostedModel
from cortex.server.served_engine import ServedEngine
from cortex.server.wire.openai_shapes import usage_dict
from cortex.server.wire.request import ChatRequest, CompletionRequest, new_id

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
    streams: contextlib.AsyncExitStack  # closes the engine requests this generation started
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
        async with hosted.admission.slot(), contextlib.AsyncExitStack() as streams:
            gen = cls(hosted.served(), hosted.id, neuron, metrics, streams)
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

    async def start_chat(self, request: ChatRequest) -> AsyncIterator[tuple[int, ChatDelta]]:
        """Render the prompt once, fit ``max_tokens`` if the request asks for that, and queue the turn
        (``n`` turns for ``n`` choices)."""
        tokenizer = self.engine.tokenizer
        if tokenizer is None:
            raise InvalidRequestError("this model folder has no tokenizer.json, so it cannot chat")
        prompt = await asyncio.to_thread(  # a long conversation takes a while to render and tokenise
            render_chat,
            tokenizer,
            request.messages,
            request.tools,
            tool_choice=request.tool_choice,
            parallel_tool_calls=request.parallel_tool_calls,
            **request.template_kwargs,
        )
        params = request.params
        if request.clamp_max_tokens:
            fitted = fit_max_tokens(
                params.max_tokens,
                num_prompt_tokens=len(prompt.token_ids),
                max_model_len=self.engine.max_model_len,
            )
            params = dataclasses.replace(params, max_tokens=fitted)
        turns: list[ChatStream] = []
        for choice_params in _choice_params(params, request.n):
            turn = await start_chat(self.engine, prompt, choice_params)
            self.streams.push_async_callback(turn.aclose)
            turns.append(turn)
        self.num_prompt_tokens = len(prompt.token_ids)
        return self._timed_chat(turns)

    async def _timed_chat(self, turns: list[ChatStream]) -> AsyncIterator[tuple[int, ChatDelta]]:
        usages: dict[int, Usage] = {}
        async for index, delta in _merged(turns):
            self._mark(1)
            if delta.usage is not None:
                usages[index] = delta.usage
            yield index, delta
        self._finish(combined_usage(list(usages.values())) if usages else None)

    async def start_completion(self, request: CompletionRequest) -> AsyncIterator[tuple[int, StreamDelta]]:
        """Queue a completion (``n`` requests for ``n`` choices); a text prompt is tokenised once, off
        the event loop (by the engine when there is one choice)."""
        prompt = request.prompt
        tokenizer = self.engine.tokenizer
        if isinstance(prompt, str) and request.n > 1 and tokenizer is not None:
            prompt = await asyncio.to_thread(tokenizer.encode, prompt)
        streams: list[DeltaStream] = []
        for params in _choice_params(request.params, request.n):
            deltas = await self.engine.add_request(prompt, params, request_id=new_id("cmpl"))
            self.streams.push_async_callback(deltas.aclose)
            streams.append(deltas)
        self.num_prompt_tokens = streams[0].num_prompt_tokens
        return self._timed_completion(streams)

    async def _timed_completion(self, streams: list[DeltaStream]) -> AsyncIterator[tuple[int, StreamDelta]]:
        usages = {i: Usage(self.num_prompt_tokens, 0) for i in range(len(streams))}
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


def _choice_params(params: SamplingParams, n: int) -> list[SamplingParams]:
    if n == 1 or params.seed is None:
        return [params] * n
    return [dataclasses.replace(params, seed=(params.seed + i) % 2**63) for i in range(n)]


_END = object()


async def _merged(streams: Sequence[AsyncIterator[T]]) -> AsyncIterator[tuple[int, T]]:
    """The items of ``streams`` as they arrive, each with its stream's index. One stream is read
    directly; several are read by one task each, all cancelled when this generator closes (the
    generation closes the streams themselves)."""
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
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
