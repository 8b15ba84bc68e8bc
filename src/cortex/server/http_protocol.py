"""The HTTP/1.1 protocol both servers run: uvicorn's httptools protocol with a bound on a request's arrival.

uvicorn closes a keep-alive connection idle between requests after ``timeout_keep_alive``, but nothing
bounds how long a request itself may take to arrive: a connection opened and left silent, or one that
sends its head or its body a byte at a time (slowloris), holds a connection and its buffers forever.
Here a request must have arrived whole (head and body) within ``request_timeout_s`` of the connection
opening or of its first byte; else the connection is closed, after a ``408`` when the head is still
incomplete (no handler has seen the request). How long the *response* takes is not bounded here.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["bounded_request_protocol"]

_TIMED_OUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class _BoundedRequestProtocol(HttpToolsProtocol):
    request_timeout_s: float  # set on the subclass :func:`bounded_request_protocol` makes

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._arrival: asyncio.TimerHandle | None = None  # armed while a request is due or arriving
        self._head_pending = False  # a request has begun and its head is not complete yet

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_pending = True
        if self._arrival is None:  # a request after a response: its first byte starts its clock
            self._arm()

    def on_headers_complete(self) -> None:
        self._head_pending = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()

    def _arm(self) -> None:
        self._arrival = self.loop.call_later(self.request_timeout_s, self._timed_out)

    def _disarm(self) -> None:
        if self._arrival is not None:
            self._arrival.cancel()
            self._arrival = None

    def _timed_out(self) -> None:
        self._arrival = None
        if self.transport.is_closing():
            return
        if self._head_pending or self.cycle is None:  # no handler has the request: say why it ends
            self.transport.write(_TIMED_OUT)
        self.transport.close()


def bounded_request_protocol(request_timeout_s: float) -> type[asyncio.Protocol]:
    """uvicorn's ``http`` protocol class for a server whose requests must arrive within
    ``request_timeout_s``."""
    return type(
        "BoundedRequestProtocol", (_BoundedRequestProtocol,), {"request_timeout_s": request_timeout_s}
    )
