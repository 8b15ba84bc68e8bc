"""``FleetUpstream``: a neuron's answer as ``Fleet.open`` hands it over, with the request slot it holds.

The answer's head (status, headers) and, for a 200, its first body bytes have arrived (everything
before that fails over). The rest is read as bytes (:meth:`FleetUpstream.read_chunk`, safe to cancel)
or whole (:meth:`FleetUpstream.read`). A transport failure from here on is a ``FleetStreamError``, and
so is an answer that sends nothing for ``idle_timeout_s`` or that the fleet :meth:`cut` (its neuron
stopped answering health checks).
:meth:`FleetUpstream.close` (or leaving ``async with``) releases the fleet's slot and the connection,
once, however the answer ended.
"""

from __future__ import annotations

import asyncio
import time
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
        idle_timeout_s: float,
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
        self._idle_timeout_s = idle_timeout_s
        self.last_bytes_s = time.monotonic()  # when the last bytes arrived
        self._cut: str | None = None  # why the fleet cut the answer, once it has
        self._on_broken = on_broken
        self._on_close: Callable[[], None] | None = on_close

    async def read_chunk(self) -> bytes:
        """The next body bytes as they arrive; ``b""`` at the end."""
        if self._first:
            first, self._first = self._first, b""
            return first
        if self._complete:
            return b""
        # the idle time counts across calls: a caller's own timeout around this one restarts nothing
        remaining_s = self._idle_timeout_s - (time.monotonic() - self.last_bytes_s)
        try:
            async with asyncio.timeout(max(remaining_s, 0.0)):
                chunk = await self._response.read_chunk()
        except TimeoutError:
            silent = f"sent nothing for {self._idle_timeout_s:g} s"
            raise FleetStreamError(
                self.neuron, self._on_broken(NeuronTransportError(silent, gone=False, timed_out=True))
            ) from None
        except NeuronTransportError as exc:
            if self._cut is not None:
                raise FleetStreamError(self.neuron, self._cut) from exc
            raise FleetStreamError(self.neuron, self._on_broken(exc)) from exc
        if self._cut is not None:  # the cut closed the connection: its end is not the answer's
            raise FleetStreamError(self.neuron, self._cut)
        self.last_bytes_s = time.monotonic()
        return chunk

    async def read(self) -> bytes:
        """The rest of the body."""
        parts = []
        while chunk := await self.read_chunk():
            parts.append(chunk)
        return b"".join(parts)

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """The body as SSE ``data`` objects up to ``data: [DONE]``; undecodable data, or an end before
        ``[DONE]`` (a cut connection), is a ``FleetStreamError``. An ``openai`` neuron (a third-party
        server may send no ``[DONE]``) may also end after a choice with a ``finish_reason``."""
        decoder = SSEDecoder()
        pending = b""
        finished = False
        while chunk := await self.read_chunk():
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                try:
                    events = decoder.feed(line.decode())
                except ValueError as exc:
                    raise FleetStreamError(self.neuron, f"undecodable stream data: {exc}") from exc
                for event in events:
                    finished = finished or _has_finish(event)
                    yield event
                if decoder.done:
                    return
        if not (self.kind == "openai" and finished):
            raise FleetStreamError(self.neuron, "the stream ended before data: [DONE]")

    def cut(self, reason: str) -> None:
        """End the answer from outside (its neuron is frozen): a read pending or to come raises
        ``FleetStreamError(reason)``."""
        if self._cut is None:
            self._cut = reason
            self._response.close()

    @property
    def closed(self) -> bool:
        return self._on_close is None

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


def _has_finish(event: Mapping[str, Any]) -> bool:
    choices = event.get("choices")
    return isinstance(choices, list) and any(
        isinstance(choice, dict) and choice.get("finish_reason") is not None for choice in choices
    )
