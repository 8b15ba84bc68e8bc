"""The gateway's request path: the caller's request through the fleet to a neuron, the answer back as bytes.

A cortex neuron speaks both dialects, so the caller's body goes to the same route there (only the
model name is replaced when an alias was used, and an OpenAI stream is asked for its usage chunk,
which the caller gets only if it asked) and the answer's bytes come back unchanged: the relay reads
only what its metrics need (:mod:`cortex.server.relay_events`), plus the caller's model name put back
into Anthropic's ``message_start``. An ``openai`` neuron (any OpenAI-compatible server) gets OpenAI
callers' bodies as they are; Anthropic callers reach it through :mod:`cortex.translate`, with the
prompt counted by the gateway where the model's profile names a tokenizer.

Streams: the answer starts once the neuron's first bytes arrive, or after ``keepalive_s`` (a cold
load) with keep-alives until they do; until then a failure is a proper HTTP error. Keep-alives come
from :func:`cortex.server.sse.with_keepalive` around the upstream read, no task per chunk. A caller
that leaves closes the upstream connection, which aborts the request on the neuron. Every request is
counted once, with the model and the neuron that served it (:class:`cortex.server.metrics.RequestMeter`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec
from litestar import Request, Response
from litestar.response import Stream
from pydantic import BaseModel

from cortex import translate
from cortex.errors import InvalidRequestError
from cortex.fleet import Fleet, FleetError, FleetStreamError, FleetUpstream, UpstreamError
from cortex.fleet.profiles import NeuronKind
from cortex.server import sse
from cortex.server.affinity import affinity_key, shared_prefix_key
from cortex.server.edge import OFF_LOOP_BYTES, Dialect, error_body, parse_body
from cortex.server.metrics import UNKNOWN_MODEL, RequestMeter, ServerMetrics
from cortex.server.relay_events import StreamScanner
from cortex.server.token_counter import TokenCounter
from cortex.server.wire.bodies import (
    ChatCompletionBody,
    CompletionBody,
    CountTokensBody,
    MessagesBody,
    ResponsesBody,
)
from cortex.server.wire.fields import field as field_of
from cortex.translate.anthropic_stream import AnthropicStreamBuilder
from cortex.translate.usage import anthropic_usage_to_openai

Build = Callable[[NeuronKind, str], tuple[str, bytes]]


class Scanner(Protocol):
    """What :meth:`Relay.stream` reads of a stream's scanner for the metrics."""

    first_output_at: float | None
    usage: dict[str, Any] | None


_HOP_HEADERS = ("retry-after",)  # what of a neuron's error answer reaches the caller besides its body


def upstream_error_response(dialect: Dialect, error: UpstreamError) -> Response[Any]:
    """A neuron's 4xx/5xx (OpenAI envelope, or Anthropic for /v1/messages*) in the caller's dialect."""
    body = error.body
    is_anthropic = isinstance(body, dict) and body.get("type") == "error"
    status = error.status
    if dialect == "anthropic" and not is_anthropic:
        status, body = translate.openai_error_to_anthropic(status, body)
    elif dialect == "openai" and is_anthropic:
        status, body = translate.anthropic_error_to_openai(status, body)
    headers = {"Retry-After": error.retry_after} if error.retry_after else {}
    return Response(body, status_code=status, headers=headers, media_type="application/json")


# each endpoint's typed body (the edge checks it before anything is routed)
BODIES: dict[str, type[BaseModel]] = {
    "chat_completions": ChatCompletionBody,
    "completions": CompletionBody,
    "messages": MessagesBody,
    "count_tokens": CountTokensBody,
    "responses": ResponsesBody,
}


@dataclass(frozen=True, slots=True)
class Relay:
    fleet: Fleet
    metrics: ServerMetrics
    keepalive_s: float
    tokens: TokenCounter = field(default_factory=TokenCounter)

    def model_label(self, model: str) -> str:
        try:
            return self.fleet.resolve(model)
        except FleetError:
            return UNKNOWN_MODEL

    async def begin(
        self, request: Request[Any, Any, Any], endpoint: str, raw: bytes
    ) -> tuple[dict[str, Any], RequestMeter]:
        model = BODIES[endpoint]  # the edge's typed body, checked before anything is routed
        if len(raw) > OFF_LOOP_BYTES:
            body = await asyncio.to_thread(parse_body, raw, model)
        else:
            body = parse_body(raw, model)
        meter = RequestMeter(self.metrics, self.model_label(body["model"]), endpoint)
        request.scope.setdefault("state", {})["meter"] = meter  # the error handler counts with it
        return body, meter

    async def relay(self, request: Request[Any, Any, Any], path: str, endpoint: str) -> Response[Any]:
        """``/v1/chat/completions``, ``/v1/completions`` (OpenAI) or ``/v1/messages`` (Anthropic)."""
        raw = await request.body()
        body, meter = await self.begin(request, endpoint, raw)
        dialect: Dialect = "anthropic" if endpoint == "messages" else "openai"
        stream = body.get("stream") is True
        wants_usage = _wants_usage(body)
        build = self._anthropic_build(body, raw) if dialect == "anthropic" else _openai_build(body, raw, path)
        key, shared = affinity_key(request.headers, body), shared_prefix_key(body)
        if not stream:
            async with await self.fleet.open(
                body["model"], build, affinity_key=key, prefix_key=shared
            ) as upstream:
                meter.routed(upstream.neuron)
                data = await upstream.read()
            return self._whole(dialect, upstream, data, body["model"], meter)
        opening = await self.open_stream(body["model"], build, affinity_key=key, prefix_key=shared)
        if opening.done() and (upstream := opening.result()).status != 200:
            async with upstream:
                return self._whole(dialect, upstream, await upstream.read(), body["model"], meter)
        profile = self.fleet.profile(meter.model)

        def prompt_tokens() -> int | None:
            return self.tokens.count_anthropic(profile, body) if self.tokens.can_count(profile) else None

        scanner = StreamScanner(dialect, drop_usage_chunk=not wants_usage, model=body["model"])

        def passes(upstream: FleetUpstream) -> AsyncIterator[bytes]:
            if dialect == "anthropic" and upstream.kind == "openai":
                return self._translated(upstream, scanner, body["model"], prompt_tokens)
            return self._bytes(upstream, scanner)

        events = self.stream(opening, meter, error_dialect=dialect, scanner=scanner, passes=passes)
        return Stream(events, media_type="text/event-stream", headers=sse.HEADERS)

    async def open_stream(
        self, model: str, build: Build, *, affinity_key: str | None, prefix_key: str | None
    ) -> asyncio.Future[FleetUpstream]:
        """Route and send a streamed request, waiting up to ``keepalive_s`` for the answer to start, so
        that routing failures still raise here, as HTTP errors; a later answer is the future's."""
        opening = asyncio.ensure_future(
            self.fleet.open(model, build, affinity_key=affinity_key, prefix_key=prefix_key)
        )
        await asyncio.wait({opening}, timeout=self.keepalive_s)
        if opening.done():
            opening.result()
        return opening

    async def count_tokens(self, request: Request[Any, Any, Any]) -> Response[Any]:
        """Counted by a neuron that holds or could load the model (nothing is loaded for it), or by the
        gateway itself with the profile's tokenizer."""
        raw = await request.body()
        body, meter = await self.begin(request, "count_tokens", raw)
        profile = self.fleet.profile(meter.model)
        if self.tokens.can_count(profile):
            meter.routed("")
            return Response({"input_tokens": self.tokens.count_anthropic(profile, body)})

        def build(kind: NeuronKind, upstream_model: str) -> tuple[str, bytes]:
            if kind == "openai":
                self.tokens.count_anthropic(profile, body)  # raises: say how to make it countable
            return "/v1/messages/count_tokens", _with_model(body, raw, upstream_model)

        async with await self.fleet.open(body["model"], build, cold_load=False) as upstream:
            meter.routed(upstream.neuron)
            data = await upstream.read()
        meter.finished(None)
        if upstream.status != 200:
            raise upstream_error(upstream, data)
        return Response(data, media_type="application/json")

    def _anthropic_build(self, body: dict[str, Any], raw: bytes) -> Build:
        def build(kind: NeuronKind, upstream_model: str) -> tuple[str, bytes]:
            if kind == "cortex":
                return "/v1/messages", _with_model(body, raw, upstream_model)
            field_of(body, "max_tokens", int)  # a third-party server may answer a wrong type with a 500
            openai_body = {**translate.anthropic_to_openai_request(body), "model": upstream_model}
            self._fit_max_tokens(openai_body)
            if body.get("stream") is True:
                openai_body["stream_options"] = {"include_usage": True}
            return "/v1/chat/completions", msgspec.json.encode(openai_body)

        return build

    def _fit_max_tokens(self, body: dict[str, Any]) -> None:
        """An ``openai`` neuron does not clamp ``max_tokens`` (Claude Code asks for 128000): with a
        tokenizer it is lowered to what fits after the prompt; without one a limit beyond the context
        is left out, so the server generates until its context is full."""
        model = self.model_label(str(body["model"]))
        limit = body.get("max_completion_tokens")
        context = self.fleet.max_model_len(model)
        if not isinstance(limit, int) or context is None:
            return
        profile = self.fleet.profile(model)
        if self.tokens.can_count(profile):
            room = context - self.tokens.count_openai(profile, body)
            body["max_completion_tokens"] = max(1, min(limit, room))
        elif limit >= context:
            del body["max_completion_tokens"]

    def _whole(
        self, dialect: Dialect, upstream: FleetUpstream, data: bytes, requested: str, meter: RequestMeter
    ) -> Response[Any]:
        if upstream.status != 200:
            meter.finished(None)
            raise upstream_error(upstream, data)
        answer = msgspec.json.decode(data)
        if dialect == "openai":
            meter.finished(answer.get("usage") if isinstance(answer, dict) else None)
            return Response(data, media_type="application/json")
        if upstream.kind == "openai":
            meter.finished(answer.get("usage"))
            message = translate.openai_to_anthropic_response(answer)
        else:
            message = answer
            meter.finished(anthropic_usage_to_openai(message.get("usage"), "usage"))
        message["model"] = requested
        return Response(msgspec.json.encode(message), media_type="application/json")

    async def stream(
        self,
        opening: asyncio.Future[FleetUpstream],
        meter: RequestMeter,
        *,
        error_dialect: Dialect,
        scanner: Scanner,
        passes: Callable[[FleetUpstream], AsyncIterator[bytes]],
    ) -> AsyncIterator[bytes]:
        """A streamed answer to the caller: keep-alives while the request is routed (a cold load),
        then what ``passes`` makes of the upstream; a failure from here on is an error event in
        ``error_dialect``. ``scanner`` has what the metrics need once the stream ends."""
        try:
            while not opening.done():
                await asyncio.wait({opening}, timeout=self.keepalive_s)
                if not opening.done():
                    yield sse.KEEPALIVE_COMMENT  # a cold load: before message_start only comments
            upstream = opening.result()
        except (FleetError, InvalidRequestError) as error:
            meter.failed("stream_error")
            yield sse.error_event(error_dialect, error)
            return
        except BaseException:  # the caller left while the request was being routed
            opening.cancel()
            opening.add_done_callback(_close_when_opened)
            raise
        meter.routed(upstream.neuron)
        async with upstream:
            meter.start_stream()
            if upstream.status != 200:
                yield sse.error_event(error_dialect, upstream_error(upstream, await upstream.read()))
                return
            try:
                async for data in passes(upstream):
                    yield data
            except (FleetError, InvalidRequestError) as error:
                meter.failed("stream_error")
                yield sse.error_event(error_dialect, error)
            finally:
                meter.first_output_at = scanner.first_output_at
                meter.finished(scanner.usage)

    async def _bytes(self, upstream: FleetUpstream, scanner: StreamScanner) -> AsyncIterator[bytes]:
        async for data in sse.with_keepalive(upstream.read_chunk, self.keepalive_s):
            if isinstance(data, sse.KeepAlive):
                yield sse.ANTHROPIC_PING if scanner.started else sse.KEEPALIVE_COMMENT
            elif out := scanner.feed(data):
                yield out
        if out := scanner.flush():
            yield out
        # a cortex neuron always ends with its terminator; an ``openai`` one may stop after its last choice
        ended = scanner.ended or (upstream.kind == "openai" and scanner.finished)
        if not ended:  # the neuron's connection ended mid-stream (a crash between two chunks)
            raise FleetStreamError(upstream.neuron, "the stream ended before its last event")

    async def _translated(
        self,
        upstream: FleetUpstream,
        scanner: StreamScanner,
        requested: str,
        prompt_tokens: Callable[[], int | None],
    ) -> AsyncIterator[bytes]:
        """An OpenAI stream from an ``openai`` neuron as Anthropic events."""
        builder: AnthropicStreamBuilder | None = None
        async for chunk in upstream.events():
            if builder is None:
                usage = chunk.get("usage")
                counted = usage.get("prompt_tokens") if isinstance(usage, dict) else None
                builder = AnthropicStreamBuilder(
                    model=requested, message_id=None, input_tokens=counted if counted else prompt_tokens()
                )
            for event in builder.feed(chunk):
                yield scanner.feed(sse.anthropic_event(event))
            if builder.done:
                break
        if builder is None:  # the upstream ended without a chunk: still a complete message
            builder = AnthropicStreamBuilder(model=requested, message_id=None, input_tokens=None)
        for event in builder.finish():
            yield scanner.feed(sse.anthropic_event(event))


def _wants_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _with_model(body: dict[str, Any], raw: bytes, upstream_model: str) -> bytes:
    """The caller's bytes as they are, unless the model was named by an alias."""
    return raw if body["model"] == upstream_model else msgspec.json.encode({**body, "model": upstream_model})


def _openai_build(body: dict[str, Any], raw: bytes, path: str) -> Build:
    stream = body.get("stream") is True

    def build(_: NeuronKind, upstream_model: str) -> tuple[str, bytes]:
        if stream and not _wants_usage(body):  # the usage is always asked for (the metrics need it)
            options = body.get("stream_options")
            options = options if isinstance(options, dict) else {}
            return path, msgspec.json.encode(
                {**body, "model": upstream_model, "stream_options": {**options, "include_usage": True}}
            )
        return path, _with_model(body, raw, upstream_model)

    return build


def upstream_error(upstream: FleetUpstream, data: bytes) -> UpstreamError:
    retry_after = next((upstream.headers[h] for h in _HOP_HEADERS if h in upstream.headers), None)
    try:
        body: Any = msgspec.json.decode(data)
    except msgspec.DecodeError:
        body = error_body("openai", upstream.status, data.decode(errors="replace")[:500])
    return UpstreamError(upstream.neuron, upstream.status, body, retry_after=retry_after)


def _close_when_opened(task: asyncio.Future[FleetUpstream]) -> None:
    if not task.cancelled() and task.exception() is None:
        task.result().close()
