"""The gateway's request path: a caller's request through the fleet to a neuron, and the answer back.

Neurons speak OpenAI ``/v1/chat/completions``; Anthropic requests are translated there and back. For
Anthropic streams the relay asks the neuron for ``continuous_usage_stats``: the neuron's first chunk
(sent after the prompt is rendered, before the prefill) carries the exact prompt token count, which
goes into ``message_start``. ``max_tokens`` is clamped to what the model can still produce
(``clamp_max_tokens``), because Claude Code asks for 128000. While nothing arrives (a cold load, a long
prefill) the relay sends SSE comments, and ``ping`` events once ``message_start`` is out.

Every request is counted once here, in the gateway's metrics.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from litestar import Request, Response
from litestar.response import Stream
from pydantic import BaseModel

from cortex import translate
from cortex.errors import InvalidRequestError
from cortex.fleet import Fleet, FleetError, KeepAlive, UpstreamError
from cortex.server import sse
from cortex.server.affinity import affinity_key
from cortex.server.edge import Dialect, error_envelope, read_body
from cortex.server.metrics import UNKNOWN_MODEL, ServerMetrics
from cortex.server.wire.bodies import ChatCompletionBody, CompletionBody, CountTokensBody, MessagesBody
from cortex.translate.anthropic_stream import AnthropicStreamBuilder


def upstream_error_response(dialect: Dialect, error: UpstreamError) -> Response[Any]:
    """A neuron's 4xx/5xx (OpenAI envelope, or Anthropic for /v1/messages*) in the caller's dialect."""
    body = error.body
    is_anthropic = isinstance(body, dict) and body.get("type") == "error"
    status = error.status
    if dialect == "anthropic" and not is_anthropic:
        status, body = translate.openai_error_to_anthropic(status, body)
    elif dialect == "openai" and is_anthropic:
        status, body = translate.anthropic_error_to_openai(status, body)
    return Response(body, status_code=status, media_type="application/json")


# each endpoint's typed body (the edge checks it before anything is routed)
BODIES: dict[str, type[BaseModel]] = {
    "chat_completions": ChatCompletionBody,
    "completions": CompletionBody,
    "messages": MessagesBody,
    "count_tokens": CountTokensBody,
}


@dataclass(frozen=True, slots=True)
class Relay:
    fleet: Fleet
    metrics: ServerMetrics
    keepalive_s: float

    def model_label(self, model: str) -> str:
        try:
            return self.fleet.resolve(model)
        except FleetError:
            return UNKNOWN_MODEL

    async def _begin(self, request: Request[Any, Any, Any], endpoint: str) -> tuple[dict[str, Any], str]:
        body = await read_body(request, BODIES[endpoint])
        label = self.model_label(body["model"])
        request.scope.setdefault("state", {})["model"] = label
        self.metrics.requests.labels(label, "", endpoint).inc()
        return body, label

    def _observe(
        self,
        label: str,
        endpoint: str,
        started: float,
        usage: dict[str, Any] | None,
        first_token_at: float | None,
    ) -> None:
        end = time.monotonic()
        self.metrics.request_duration.labels(label, "", endpoint).observe(end - started)
        self.metrics.observe_usage(label, "", usage)
        self.metrics.observe_timing(
            label,
            "",
            ttft_s=None if first_token_at is None else first_token_at - started,
            duration_s=end - started,
            num_tokens=(usage or {}).get("completion_tokens") or 0,
        )

    async def openai(self, request: Request[Any, Any, Any], path: str, endpoint: str) -> Response[Any]:
        """``/v1/chat/completions`` or ``/v1/completions``, passed to the neuron as they are."""
        body, label = await self._begin(request, endpoint)
        started = time.monotonic()
        affinity = affinity_key(request.headers, body)
        if not body.get("stream"):
            reply = await self.fleet.post(body["model"], path, body, affinity_key=affinity)
            usage = reply.json.get("usage") if isinstance(reply.json, dict) else None
            self._observe(label, endpoint, started, usage, None)
            return Response(reply.json, status_code=reply.status, media_type="application/json")
        # Usage is always asked of the neuron (for the metrics); the caller gets it only if it asked.
        stream_options = body.get("stream_options")
        wants_usage = isinstance(stream_options, dict) and stream_options.get("include_usage") is True
        upstream_body = {**body, "stream_options": {**(stream_options or {}), "include_usage": True}}
        items = self.fleet.stream(
            body["model"], path, upstream_body, affinity_key=affinity, keepalive_s=self.keepalive_s
        )
        source = await _early_start(items, self.keepalive_s)

        async def events() -> AsyncIterator[bytes]:
            usage: dict[str, Any] | None = None
            first_token_at: float | None = None
            self.metrics.in_flight.labels(label, "").inc()
            try:
                async for item in sse.with_keepalive(source, self.keepalive_s):
                    if isinstance(item, sse.KeepAlive | KeepAlive):
                        yield sse.KEEPALIVE_COMMENT
                        continue
                    if first_token_at is None and _has_output(item):
                        first_token_at = time.monotonic()
                    usage = item.get("usage") or usage
                    if wants_usage or item.get("choices"):
                        yield sse.openai_event(item if wants_usage else _without_usage(item))
                yield sse.OPENAI_DONE
            except FleetError as error:
                self.metrics.errors.labels(label, "", "stream_error").inc()
                yield sse.openai_event(error_envelope("openai", error))
            finally:
                self.metrics.in_flight.labels(label, "").dec()
                self._observe(label, endpoint, started, usage, first_token_at)

        return Stream(events(), media_type="text/event-stream", headers=sse.HEADERS)

    async def messages(self, request: Request[Any, Any, Any]) -> Response[Any]:
        """``/v1/messages``, translated to the neuron's ``/v1/chat/completions`` and back."""
        body, label = await self._begin(request, "messages")
        started = time.monotonic()
        requested = body["model"]
        openai_body = translate.anthropic_to_openai_request(body)
        openai_body["clamp_max_tokens"] = True
        affinity = affinity_key(request.headers, body)
        if not body.get("stream"):
            openai_body.pop("stream", None)
            openai_body.pop("stream_options", None)
            reply = await self.fleet.post(
                requested, "/v1/chat/completions", openai_body, affinity_key=affinity
            )
            if reply.status != 200:
                raise UpstreamError(reply.neuron, reply.status, reply.json)
            self._observe(label, "messages", started, reply.json.get("usage"), None)
            message = translate.openai_to_anthropic_response(reply.json)
            message["model"] = requested
            return Response(message, media_type="application/json")
        openai_body["stream"] = True
        openai_body["stream_options"] = {"include_usage": True, "continuous_usage_stats": True}
        items = self.fleet.stream(
            requested,
            "/v1/chat/completions",
            openai_body,
            affinity_key=affinity,
            keepalive_s=self.keepalive_s,
        )
        source = await _early_start(items, self.keepalive_s)

        async def events() -> AsyncIterator[bytes]:
            builder: AnthropicStreamBuilder | None = None
            started_message = False
            usage: dict[str, Any] | None = None
            first_token_at: float | None = None
            self.metrics.in_flight.labels(label, "").inc()
            try:
                async for item in sse.with_keepalive(source, self.keepalive_s):
                    if isinstance(item, sse.KeepAlive | KeepAlive):
                        yield sse.ANTHROPIC_PING if started_message else sse.KEEPALIVE_COMMENT
                        continue
                    usage = item.get("usage") or usage
                    if builder is None:
                        prompt_tokens = (usage or {}).get("prompt_tokens")
                        builder = AnthropicStreamBuilder(
                            model=requested, message_id=None, input_tokens=prompt_tokens
                        )
                    if first_token_at is None and _has_output(item):
                        first_token_at = time.monotonic()
                    for event in builder.feed(item):
                        started_message = True
                        yield sse.anthropic_event(event)
                    if builder.done:
                        break
                if builder is None:  # the upstream ended without a chunk: still a complete message
                    builder = AnthropicStreamBuilder(model=requested, message_id=None, input_tokens=None)
                for event in builder.finish():
                    yield sse.anthropic_event(event)
            except (FleetError, InvalidRequestError) as error:
                self.metrics.errors.labels(label, "", "stream_error").inc()
                yield sse.anthropic_event(error_envelope("anthropic", error))
            finally:
                self.metrics.in_flight.labels(label, "").dec()
                self._observe(label, "messages", started, usage, first_token_at)

        return Stream(events(), media_type="text/event-stream", headers=sse.HEADERS)

    async def count_tokens(self, request: Request[Any, Any, Any]) -> Response[Any]:
        body, _ = await self._begin(request, "count_tokens")
        reply = await self.fleet.post(
            body["model"],
            "/v1/messages/count_tokens",
            body,
            affinity_key=affinity_key(request.headers, body),
        )
        if reply.status != 200:
            raise UpstreamError(reply.neuron, reply.status, reply.json)
        return Response(reply.json, media_type="application/json")


async def _first_item(items: AsyncIterator[Any]) -> Any:
    async for item in items:
        if not isinstance(item, KeepAlive):
            return item
    return None


async def _early_start(items: AsyncIterator[Any], wait_s: float) -> AsyncIterator[Any]:
    """Wait up to ``wait_s`` for the stream's first data item, so that routing failures and neuron 4xx
    still become a proper error response; when it takes longer (a cold load) the response starts and
    the caller gets keep-alives, and a later failure becomes an error event in the stream."""
    first = asyncio.ensure_future(_first_item(items))
    await asyncio.wait({first}, timeout=wait_s)
    if first.done():
        first.result()  # raise now, before the response starts
    return _continue(first, items)


async def _continue(first: asyncio.Future[Any], rest: AsyncIterator[Any]) -> AsyncIterator[Any]:
    try:
        item = await first
        if item is not None:
            yield item
        async for item in rest:
            yield item
    finally:
        first.cancel()
        await sse.aclose_quietly(rest)


def _without_usage(chunk: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in chunk.items() if key != "usage"}


def _has_output(chunk: dict[str, Any]) -> bool:
    return any(
        (choice.get("delta") or {}).get(key) or choice.get("text")
        for choice in chunk.get("choices") or ()
        for key in ("content", "reasoning_content", "tool_calls")
    )
