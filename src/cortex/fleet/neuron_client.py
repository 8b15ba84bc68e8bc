"""HTTP client for one neuron: the neuron contract's routes, JSON bodies and SSE decoding.

One ``httpx.AsyncClient`` per neuron. The transport is a seam: a real network by default, or any
``httpx.AsyncBaseTransport`` (an ``httpx.ASGITransport`` over a neuron app, a mock) in tests.
Transport failures surface as ``httpx.TransportError``; this module does no retrying (the fleet does).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from cortex.fleet.profiles import NeuronSpec

__all__ = ["NeuronClient", "SSEDecoder", "UpstreamReply", "UpstreamStream"]

# Hop-by-hop headers and the caller's credentials for the gateway are never forwarded to a neuron.
_DROPPED_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "accept-encoding",
        "authorization",
        "x-api-key",
    }
)


@dataclass(frozen=True)
class UpstreamReply:
    """A neuron's complete answer: HTTP status and the decoded JSON body (or text if not JSON)."""

    status: int
    body: Any


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


class UpstreamStream:
    """An open streamed answer. ``status`` is known at once; iterate ``events()`` only when it is 200."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status = response.status_code

    async def error_body(self) -> Any:
        """Read the (non-streamed) error body of a non-200 answer."""
        await self._response.aread()
        return _decode(self._response)

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        decoder = SSEDecoder()
        async for line in self._response.aiter_lines():
            for event in decoder.feed(line):
                yield event
            if decoder.done:
                return
        for event in decoder.feed(""):
            yield event


class NeuronClient:
    """The neuron HTTP contract (see docs/fleet.md, "Neuron contract") for one neuron."""

    def __init__(self, spec: NeuronSpec, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.spec = spec
        headers = {"authorization": f"Bearer {spec.api_key}"} if spec.api_key else {}
        self._client = httpx.AsyncClient(
            base_url=spec.url,
            transport=transport,
            headers=headers,
            timeout=httpx.Timeout(spec.timeout_s, connect=min(spec.timeout_s, 5.0)),
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def get(self, path: str, *, timeout_s: float) -> Any:
        """GET a JSON route; raises ``httpx.HTTPError`` on transport failure or non-2xx status."""
        response = await self._client.get(path, timeout=timeout_s)
        response.raise_for_status()
        return response.json()

    async def health(self, *, timeout_s: float) -> dict[str, Any]:
        return _as_dict(await self.get("/health", timeout_s=timeout_s))

    async def discovery(self, *, timeout_s: float) -> dict[str, Any]:
        return _as_dict(await self.get("/discovery", timeout_s=timeout_s))

    async def models(self, *, timeout_s: float) -> dict[str, Any]:
        return _as_dict(await self.get("/models", timeout_s=timeout_s))

    async def load(self, model: str, *, timeout_s: float) -> UpstreamReply:
        """``POST /models/load``: blocks until the neuron has the model loaded (or refuses)."""
        return await self.post("/models/load", {"model": model}, timeout_s=timeout_s)

    async def unload(self, model: str, *, force: bool = False) -> UpstreamReply:
        body: dict[str, Any] = {"model": model}
        if force:
            body["force"] = True
        return await self.post("/models/unload", body)

    async def post(
        self,
        path: str,
        body: Mapping[str, Any],
        *,
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> UpstreamReply:
        response = await self._client.post(
            path,
            json=dict(body),
            headers=_forward_headers(headers),
            timeout=timeout_s if timeout_s is not None else httpx.USE_CLIENT_DEFAULT,
        )
        return UpstreamReply(response.status_code, _decode(response))

    @asynccontextmanager
    async def stream(
        self, path: str, body: Mapping[str, Any], *, headers: Mapping[str, str] | None = None
    ) -> AsyncIterator[UpstreamStream]:
        """Open a streamed POST; the connection is released when the ``async with`` block exits."""
        forwarded = {**_forward_headers(headers), "accept": "text/event-stream"}
        async with self._client.stream("POST", path, json=dict(body), headers=forwarded) as response:
            yield UpstreamStream(response)


def _forward_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    if not headers:
        return {}
    return {k: v for k, v in headers.items() if k.lower() not in _DROPPED_HEADERS}


def _decode(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def _as_dict(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise httpx.DecodingError(f"expected a JSON object, got {type(value).__name__}")
    return value
