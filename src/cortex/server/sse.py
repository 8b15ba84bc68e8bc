"""Server-sent events: encoding both dialects' events, and keep-alives while a stream is silent.

OpenAI streams are ``data: {json}`` lines ending with ``data: [DONE]``; Anthropic streams, and OpenAI
Responses streams, are ``event: <type>`` + ``data: {json}`` pairs with no terminator. A keep-alive is an
SSE comment line (``: keep-alive``), which every SSE parser ignores; once an Anthropic stream has sent
``message_start``, ``ping`` events instead (the SDKs reject any event before it). Keep-alives come
from :func:`with_keepalive`, the one mechanism both servers use.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final, Generic, Literal, TypeVar

import anyio
from litestar.response import Stream

from cortex.server.edge import Dialect, error_envelope

T = TypeVar("T")
StreamDialect = Dialect | Literal["responses"]  # a stream's framing; Responses errors are OpenAI's

OPENAI_DONE: Final = b"data: [DONE]\n\n"
KEEPALIVE_COMMENT: Final = b": keep-alive\n\n"
ANTHROPIC_PING: Final = b'event: ping\ndata: {"type":"ping"}\n\n'
HEADERS: Final = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class KeepAlive:
    """Yielded by :func:`with_keepalive` when the source stayed silent for one interval."""

    __slots__ = ()


KEEPALIVE: Final = KeepAlive()


def dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def openai_event(data: dict[str, Any]) -> bytes:
    return f"data: {dumps(data)}\n\n".encode()


def anthropic_event(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {dumps(event)}\n\n".encode()


async def with_keepalive(
    read: Callable[[], Awaitable[T | None]], interval_s: float
) -> AsyncIterator[T | KeepAlive]:
    """Yield what ``read()`` returns until it returns nothing, plus :data:`KEEPALIVE` whenever
    ``interval_s`` passes without an item. ``read`` must be safe to cancel (a timeout around it loses
    nothing): the upstream reader of the gateway is, an async generator is not (wrap it in :class:`Pump`).
    The one keep-alive mechanism of both servers; it makes no task."""
    while True:
        try:
            async with asyncio.timeout(interval_s):
                item = await read()
        except TimeoutError:
            yield KEEPALIVE
            continue
        if not item:
            return
        yield item


class Pump(Generic[T]):
    """An async iterator advanced in one task of its own (one per stream), so that reading it can time
    out safely. :meth:`aclose` cancels the task and closes the source, which is how a client disconnect
    reaches the engine."""

    def __init__(self, source: AsyncIterator[T]) -> None:
        self._source = source
        self._queue: asyncio.Queue[tuple[T | None, BaseException | None]] = asyncio.Queue()
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        try:
            async for item in self._source:
                self._queue.put_nowait((item, None))
            self._queue.put_nowait((None, None))
        except Exception as error:  # handed to the reader, raised there
            self._queue.put_nowait((None, error))

    async def read(self) -> T | None:
        """The next item; None at the end."""
        item, error = await self._queue.get()
        if error is not None:
            raise error
        return item

    async def aclose(self) -> None:
        # Shielded: the server cancels the stream's scope on a client disconnect (anyio level
        # cancellation), and this must still run to the end to reach the engine.
        with anyio.CancelScope(shield=True):
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            await aclose_quietly(self._source)


async def aclose_quietly(source: object) -> None:
    """Close an async generator (if it is one), shielded from the caller's cancellation."""
    aclose = getattr(source, "aclose", None)
    if aclose is not None:
        with anyio.CancelScope(shield=True):
            await aclose()


def event_stream(
    dialect: StreamDialect,
    items: AsyncIterator[dict[str, Any]],
    *,
    owner: contextlib.AsyncExitStack,
    keepalive_s: float,
    on_error: Callable[[BaseException], None],
) -> Stream:
    """``items`` (OpenAI chunk dicts, Anthropic or Responses events) as an SSE response with keep-alives. The
    stream's body takes over ``owner`` (the request's admission slot, in-flight count...) and closes it
    when the stream ends, however it ends. An error after the 200 becomes an error event."""

    async def body() -> AsyncIterator[bytes]:
        async with owner:
            pump = Pump(items)
            started = False  # Anthropic: pings only after message_start (the SDKs reject any before it)
            try:
                async for item in with_keepalive(pump.read, keepalive_s):
                    if isinstance(item, KeepAlive):
                        yield ANTHROPIC_PING if started else KEEPALIVE_COMMENT
                    elif dialect == "openai":
                        yield openai_event(item)
                    else:  # Anthropic and Responses events are named events
                        started = dialect == "anthropic"
                        yield anthropic_event(item)
                if dialect == "openai":
                    yield OPENAI_DONE
            except Exception as error:  # after the 200: the error goes into the stream
                on_error(error)
                yield error_event("anthropic" if dialect == "anthropic" else "openai", error)
            finally:
                await pump.aclose()

    return Stream(body(), media_type="text/event-stream", headers=HEADERS)


def error_event(dialect: Dialect, error: BaseException) -> bytes:
    """An error after the response started, as the stream's last event in ``dialect``."""
    envelope = error_envelope(dialect, error)
    return anthropic_event(envelope) if dialect == "anthropic" else openai_event(envelope)
