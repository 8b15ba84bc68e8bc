"""The gateway's OpenAI Responses API: conversations from the durable store, the turn relayed to a neuron.

``POST /v1/responses``: the stored conversation that ``previous_response_id`` ends (each stored
response's input items, then its output items, oldest first; ``instructions`` are not inherited, as
OpenAI does) is put in front of the request's ``input``, and the whole turn goes to a neuron, which
is stateless: a cortex neuron gets it at its own ``/v1/responses``, an ``openai`` neuron as a Chat
Completions request through :mod:`cortex.translate` (and its answer back). The Response the caller
gets names the model it asked for, its ``previous_response_id`` and whether it was stored. With
``store`` (the default) a completed or incomplete Response is written, with the request's own input
items, before the caller sees it end (``response.completed`` in a stream), so a client that continues
at once finds it; a stream the caller leaves early is not stored, and ``store: false`` never is.

``GET /v1/responses/{id}``, ``GET /v1/responses/{id}/input_items`` (``after``, ``limit`` 1-100,
``order`` ``asc`` / ``desc``, the request's own items) and ``DELETE /v1/responses/{id}`` read and
change the store only. A missing id is a 404; a ``previous_response_id`` that is not stored (never,
deleted, expired) is a 400 naming it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
from litestar import Request, Response
from litestar.response import Stream

from cortex import translate
from cortex.errors import InvalidRequestError
from cortex.fleet import FleetStreamError, FleetUpstream
from cortex.fleet.profiles import NeuronKind
from cortex.server import sse
from cortex.server.affinity import affinity_key, shared_prefix_key
from cortex.server.errors import ResponseNotFoundError
from cortex.server.relay import Relay, upstream_error
from cortex.server.responses_events import ResponsesScanner, chat_usage
from cortex.server.responses_store import ResponsesStore

MAX_PAGE = 100
_KEPT = ("completed", "incomplete")  # what a conversation can continue from


class PreviousResponseNotFoundError(InvalidRequestError):
    """``previous_response_id`` names no stored response (400, as OpenAI answers)."""

    code = "previous_response_not_found"

    def __init__(self, response_id: str) -> None:
        super().__init__(
            f"Previous response with id {response_id!r} not found.", param="previous_response_id"
        )


@dataclass(slots=True)
class _Turn:
    """One ``POST /v1/responses``: the caller's body, its own items, and the conversation before it."""

    body: dict[str, Any]
    own_items: list[dict[str, Any]]
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def previous(self) -> str | None:
        previous = self.body.get("previous_response_id")
        return previous if isinstance(previous, str) else None

    @property
    def stored(self) -> bool:
        return self.body.get("store") is not False

    def build(self, kind: NeuronKind, upstream_model: str) -> tuple[str, bytes]:
        whole = {key: value for key, value in self.body.items() if key != "previous_response_id"}
        whole.update(model=upstream_model, input=self.history + self.own_items, store=False)
        if kind == "cortex":
            return "/v1/responses", msgspec.json.encode(whole)
        return "/v1/chat/completions", msgspec.json.encode(translate.responses_to_openai_request(whole))

    def patch(self, response: dict[str, Any]) -> None:
        """What the gateway says in the Response: the caller's model name, the conversation, the store."""
        response.update(model=self.body["model"], previous_response_id=self.previous, store=self.stored)

    def response(self, kind: NeuronKind, answer: Any) -> dict[str, Any]:
        response = answer if kind == "cortex" else translate.openai_to_responses_response(answer, self.body)
        self.patch(response)
        return dict(response)


@dataclass(frozen=True, slots=True)
class ResponsesGateway:
    relay: Relay
    store: ResponsesStore

    async def _turn(self, body: dict[str, Any]) -> _Turn:
        turn = _Turn(body, translate.responses_input_items(body))
        if turn.previous is not None:
            try:
                chain = await self.store.conversation(turn.previous)
            except ResponseNotFoundError:
                raise PreviousResponseNotFoundError(turn.previous) from None
            for stored in chain:
                turn.history += stored.input_items + list(stored.response.get("output") or [])
        return turn

    async def _keep(self, turn: _Turn, response: dict[str, Any]) -> None:
        if turn.stored and response.get("status") in _KEPT:
            await self.store.put(response, turn.own_items, previous_response_id=turn.previous)

    async def create(self, request: Request[Any, Any, Any]) -> Response[Any]:
        raw = await request.body()
        body, meter = await self.relay.begin(request, "responses", raw)
        turn = await self._turn(body)
        # the conversation's key from its first items, also when previous_response_id stands for them
        whole = {**body, "input": turn.history + turn.own_items}
        key, shared = affinity_key(request.headers, whole), shared_prefix_key(whole)
        fleet = self.relay.fleet
        if body.get("stream") is not True:
            async with await fleet.open(
                body["model"], turn.build, affinity_key=key, prefix_key=shared
            ) as upstream:
                meter.routed(upstream.neuron)
                data = await upstream.read()
            if upstream.status != 200:
                meter.finished(None)
                raise upstream_error(upstream, data)
            response = turn.response(upstream.kind, msgspec.json.decode(data))
            meter.finished(chat_usage(response.get("usage")))
            await self._keep(turn, response)
            return Response(msgspec.json.encode(response), media_type="application/json")
        opening = await self.relay.open_stream(body["model"], turn.build, affinity_key=key, prefix_key=shared)
        if opening.done() and opening.result().status != 200:
            async with opening.result() as upstream:
                meter.routed(upstream.neuron)
                data = await upstream.read()
            meter.finished(None)
            raise upstream_error(upstream, data)
        scanner = ResponsesScanner(turn.patch)

        async def passes(upstream: FleetUpstream) -> AsyncIterator[bytes]:
            kept = False
            async for data in self._events(upstream, turn):
                out = scanner.feed(data) if data is not sse.KEEPALIVE_COMMENT else data
                if not kept and scanner.final is not None:
                    kept = True
                    await self._keep(turn, scanner.final)  # stored before the caller sees it end
                if out:
                    yield out
            if out := scanner.flush():
                yield out
            if not scanner.ended:  # the neuron's connection ended mid-stream (a crash between two events)
                raise FleetStreamError(upstream.neuron, "the stream ended before its last event")

        events = self.relay.stream(opening, meter, error_dialect="openai", scanner=scanner, passes=passes)
        return Stream(events, media_type="text/event-stream", headers=sse.HEADERS)

    async def _events(self, upstream: FleetUpstream, turn: _Turn) -> AsyncIterator[bytes]:
        """The neuron's Responses bytes (keep-alive comments while it is silent), or an ``openai``
        neuron's chat chunks as Responses events."""
        if upstream.kind == "cortex":
            async for data in sse.with_keepalive(upstream.read_chunk, self.relay.keepalive_s):
                yield sse.KEEPALIVE_COMMENT if isinstance(data, sse.KeepAlive) else data
            return
        async for event in translate.aopenai_to_responses_stream(upstream.events(), turn.body):
            yield sse.anthropic_event(event)  # named events, as a cortex neuron sends them

    async def retrieve(self, response_id: str) -> dict[str, Any]:
        stored = await self.store.get(response_id)
        if stored is None:
            raise ResponseNotFoundError(response_id)
        return stored.response

    async def input_items(
        self, response_id: str, *, after: str | None, limit: int, order: Literal["asc", "desc"]
    ) -> dict[str, Any]:
        """A page of the response's own input items, as the OpenAI SDK's cursor pages read them."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidRequestError(f"limit must be between 1 and {MAX_PAGE}, got {limit}", param="limit")
        stored = await self.store.get(response_id)
        if stored is None:
            raise ResponseNotFoundError(response_id)
        items = stored.input_items if order == "asc" else stored.input_items[::-1]
        if after is not None:
            ids = [item.get("id") for item in items]
            if after not in ids:
                raise InvalidRequestError(
                    f"no input item {after!r} in response {response_id!r}", param="after"
                )
            items = items[ids.index(after) + 1 :]
        page = items[:limit]
        return {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(items) > limit,
        }

    async def delete(self, response_id: str) -> dict[str, Any]:
        if not await self.store.delete(response_id):
            raise ResponseNotFoundError(response_id)
        return {"id": response_id, "object": "response", "deleted": True}
