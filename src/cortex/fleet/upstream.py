"""``FleetUpstream``: a neuron's answer as ``Fleet.open`` hands it over, with the request slot it holds.

The answer's head (status, headers) and, for a 200, its first body bytes have arrived (everything
before that fails over). The rest is read as bytes (:meth:`FleetUpstream.read_chunk`, safe to cancel)
or whole (:meth:`FleetUpstream.read`). A transport failure from here on is a ``FleetStreamError``.
:meth:`FleetUpstream.close` (or leaving ``async with``) releases the fleet's slot and the connection,
once, however the answer ended.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from types import TracebackType
from typing import Any

from cortex.fleet.errors import FleetStreamError, NeuronTransportError
from cortex.fleet.neuron_client import SSEDecoder, UpstreamResponse
from cortex.fleet.profiles import NeuronKind

__all__ = ["FleetUpstream"]


class FleetUpstream:
    def __init__(
        self,
        response: UpstreamResponse,
        *,
        first: bytes,
        complete: bool,
        neuron: str,
        kind: NeuronKind,
        model: str,
        attempts: int,
        on_broken: Callable[[NeuronTransportError], str],
        on_close: Callable[[], None],
    ) -> None:
        self.status = response.status
        self.headers: Mapping[str, str] = response.headers
        self.neuron = neuron
        self.kind = kind
        self.model = model
        self.attempts = attempts
        self._response = response
        self._first = first
        self._complete = complete  # the whole body is in ``first`` (an error answer, read at once)
        self._on_broken = on_broken
        self._on_close: Callable[[], None] | None = on_close

    async def read_chunk(self) -> bytes:
        """The next body bytes as they arrive; ``b""`` at the end."""
        if self._first:
            first, self._first = self._first, b""
            return first
        if self._complete:
            return b""
        try:
            return await self._response.read_chunk()
        except NeuronTransportError as exc:
            raise FleetStreamError(self.neuron, self._on_broken(exc)) from exc

    async def read(self) -> bytes:
        """The rest of the body."""
        parts = []
        while chunk := await self.read_chunk():
            parts.append(chunk)
        return b"".join(parts)

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """The body as SSE ``data`` objects; undecodable data is a ``FleetStreamError``."""
        decoder = SSEDecoder()
        pending = b""
        while chunk := await self.read_chunk():
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                try:
                    events = decoder.feed(line.decode())
                except ValueError as exc:
                    raise FleetStreamError(self.neuron, f"undecodable stream data: {exc}") from exc
                for event in events:
                    yield event
                if decoder.done:
                    return

    def close(self) -> None:
        self._response.close()
        if self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            on_close()

    async def __aenter__(self) -> FleetUpstream:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
