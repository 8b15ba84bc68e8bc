"""HTTP client for one neuron: the neuron contract's routes, and requests relayed as bytes.

One ``aiohttp.ClientSession`` per neuron, made on first use inside the running loop (chosen over httpx
by ``benchmarks/upstream_client.py``: several times less CPU per request; docs/benchmarks.md). Its
connection pool keeps connections alive; cookies are never kept. A ``cortex`` neuron is polled on
``/health``, ``/models`` and ``/discovery``; an ``openai`` one (any OpenAI-compatible server) only on
``/v1/models``. Every transport failure surfaces as :class:`NeuronTransportError`; this module does
no retrying (the fleet does).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from cortex.fleet.errors import NeuronTransportError
from cortex.fleet.profiles import NeuronSpec

__all__ = ["NeuronClient", "SSEDecoder", "UpstreamReply", "UpstreamResponse"]

_FAILURES = (aiohttp.ClientError, asyncio.TimeoutError, OSError)
# Idle pooled connections are closed well before a server's own keep-alive timeout (uvicorn's is 5 s),
# so a request is seldom sent on a connection the server is closing at that moment.
KEEPALIVE_S = 2.0


def _transport_error(exc: BaseException, *, answering: bool = False) -> NeuronTransportError:
    """What a failure says about the neuron. A refused connection is evidence of death (``gone``); a
    timeout, connecting included, is slowness (``timed_out``); a connection closed or reset is evidence
    of death only once the answer was ``answering`` (arriving), else it is ``dropped``."""
    message = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, TimeoutError):
        return NeuronTransportError(message, gone=False, timed_out=True)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return NeuronTransportError(message, gone=True)
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError):
        return NeuronTransportError(message, gone=answering, dropped=not answering)
    return NeuronTransportError(message, gone=False)


@dataclass(frozen=True)
class UpstreamReply:
    """A neuron's complete answer: HTTP status and the decoded JSON body (or text if not JSON)."""

    status: int
    body: Any
    headers: Mapping[str, str]


class SSEDecoder:
    """Incremental server-sent-events decoder: feed lines, get the parsed ``data`` JSON of each event.

    ``event:``, ``id:`` and comment lines are ignored (the JSON carries its own ``type``); ``done`` turns
    true at ``data: [DONE]``. Multi-line ``data`` fields are joined with newlines, per the SSE spec.
    """

    def __init__(self) -> None:
        self._data: list[str] = []
        self.done = False

    def feed(self, line: str) -> list[dict[str, Any]]:
        line = line.rstrip("\r\n")
        if line:
            if line.startswith("data:"):
                value = line[5:]
                self._data.append(value[1:] if value.startswith(" ") else value)
            return []
        if not self._data:
            return []
        data, self._data = "\n".join(self._data), []
        if data.strip() == "[DONE]":
            self.done = True
            return []
        event = json.loads(data)
        return [event] if isinstance(event, dict) else [{"data": event}]


class UpstreamResponse:
    """An open answer from a neuron: ``status`` and ``headers`` at once, the body read as it arrives.

    :meth:`read_chunk` is safe to cancel (a timeout around it loses no data), which is what lets the
    gateway send keep-alives without a task per chunk. :meth:`close` drops the connection of a body
    not read to its end (so the neuron sees the caller leave) and is idempotent.
    """

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status
        self.headers: Mapping[str, str] = response.headers

    async def read(self) -> bytes:
        try:
            return await self._response.read()
        except _FAILURES as exc:
            raise _transport_error(exc, answering=True) from exc

    async def read_chunk(self) -> bytes:
        """The next bytes of the body as they arrive; ``b""`` at its end."""
        try:
            return await self._response.content.readany()
        except _FAILURES as exc:
            raise _transport_error(exc, answering=True) from exc

    def close(self) -> None:
        self._response.close()


class NeuronClient:
    """The neuron HTTP contract (see docs/fleet.md, "Neuron contract") for one neuron."""

    def __init__(self, spec: NeuronSpec) -> None:
        self.spec = spec
        self._headers = {"authorization": f"Bearer {spec.api_key}"} if spec.api_key else {}
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                self.spec.url.rstrip("/") + "/",
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=KEEPALIVE_S),
                cookie_jar=aiohttp.DummyCookieJar(),
                headers=self._headers,
                auto_decompress=False,
                # an idle (read) timeout, never a total one: a long generation is not cut off
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=min(self.spec.timeout_s, 5.0), sock_read=self.spec.timeout_s
                ),
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            await asyncio.sleep(0)  # the closed connections' transports finish closing on the next turn

    async def get(self, path: str, *, timeout_s: float) -> Any:
        """GET a JSON route; raises ``NeuronTransportError`` on transport failure or non-2xx status."""
        try:
            async with self._client().get(
                path.lstrip("/"), timeout=aiohttp.ClientTimeout(total=timeout_s)
            ) as reply:
                body = await reply.read()
        except _FAILURES as exc:
            raise _transport_error(exc) from exc
        if not 200 <= reply.status < 300:
            raise NeuronTransportError(f"GET {path} answered HTTP {reply.status}", gone=False)
        return json.loads(body)

    async def health(self, *, timeout_s: float) -> dict[str, Any]:
        return _as_dict(await self.get("/health", timeout_s=timeout_s))

    async def discovery(self, *, timeout_s: float) -> dict[str, Any]:
        return _as_dict(await self.get("/discovery", timeout_s=timeout_s))

    async def models(self, *, timeout_s: float) -> dict[str, Any]:
        return _as_dict(await self.get("/models", timeout_s=timeout_s))

    async def openai_models(self, *, timeout_s: float) -> dict[str, Any]:
        """``GET /v1/models`` of an OpenAI-compatible server: its catalogue."""
        return _as_dict(await self.get("/v1/models", timeout_s=timeout_s))

    async def load(
        self, model: str, *, tensor_parallel: int | None = None, timeout_s: float
    ) -> UpstreamReply:
        """``POST /models/load``: blocks until the neuron has the model loaded (or refuses);
        ``tensor_parallel`` asks for a split over that many devices (None: the neuron's own)."""
        body: dict[str, Any] = {"model": model}
        if tensor_parallel is not None:
            body["tensor_parallel"] = tensor_parallel
        return await self.post("/models/load", body, timeout_s=timeout_s)

    async def unload(self, model: str, *, force: bool = False) -> UpstreamReply:
        body: dict[str, Any] = {"model": model}
        if force:
            body["force"] = True
        return await self.post("/models/unload", body)

    async def post(
        self, path: str, body: Mapping[str, Any], *, timeout_s: float | None = None
    ) -> UpstreamReply:
        """POST a JSON body and read the whole answer."""
        response = await self.send(path, json.dumps(body).encode(), timeout_s=timeout_s)
        try:
            raw = await response.read()
        finally:
            response.close()
        return UpstreamReply(response.status, decode(raw), response.headers)

    async def send(self, path: str, body: bytes, *, timeout_s: float | None = None) -> UpstreamResponse:
        """POST ``body`` (JSON bytes, sent as they are) and return as soon as the answer's head arrives."""
        options: dict[str, Any] = (
            {} if timeout_s is None else {"timeout": aiohttp.ClientTimeout(total=timeout_s)}
        )
        try:
            response = await self._client().post(
                path.lstrip("/"), data=body, headers={"content-type": "application/json"}, **options
            )
        except _FAILURES as exc:
            raise _transport_error(exc) from exc
        return UpstreamResponse(response)


def decode(raw: bytes) -> Any:
    """A body as JSON, or as text when it is not JSON."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


def _as_dict(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise NeuronTransportError(f"expected a JSON object, got {type(value).__name__}", gone=False)
    return value
