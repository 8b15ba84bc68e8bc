"""Server-sent events: encoding both dialects' events, and keep-alives while a stream is silent.

OpenAI streams are ``data: {json}`` lines ending with ``data: [DONE]``; Anthropic streams are
``event: <type>`` + ``data: {json}`` pairs with no terminator. A keep-alive is an SSE comment line
(``: keep-alive``), which every SSE parser ignores; once an Anthropic stream has sent
``message_start`` the gateway sends ``ping`` events instead (the SDKs reject any event before it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any, Final, TypeVar

import anyio
from litestar.response import Stream

from cortex.server.edge import Dialect, error_envelope

T = TypeVar("T")

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


async def with_keepalive(source: AsyncIterator[T], interval_s: float | None) -> AsyncIterator[T | KeepAlive]:
    """Yield ``source``'s items, plus :data:`KEEPALIVE` whenever ``interval_s`` passes without one.

    The source is advanced in its own task so that a timeout never cancels it mid-item. Closing this
    generator (or cancelling its consumer) cancels the pending step and closes ``source``, which is how a
    client disconnect reaches the engine.
    """
    if interval_s is None:
        async for item in source:
            yield item
        return
    pending: asyncio.Task[T] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(source))
            done, _ = await asyncio.wait({pending}, timeout=interval_s)
            if not done:
                yield KEEPALIVE
                continue
            step, pending = pending, None
            try:
                item = step.result()
            except StopAsyncIteration:
                return
            yield item
    finally:
        # Shielded: the server cancels this generator's scope on a client disconnect (anyio level
        # cancellation), and the cleanup below must still run to the end to reach the engine.
        with anyio.CancelScope(shield=True):
            if pending is not None:
                pending.cancel()
                with contextlib.suppress(BaseException):
                    await pending
            await aclose_quietly(source)


async def aclose_quietly(source: object) -> None:
    """Close an async generator (if it is one), shielded from the caller's cancellation."""
    aclose = getattr(source, "aclose", None)
    if aclose is not None:
        with anyio.CancelScope(shield=True):
            await aclose()


def event_stream(
    dialect: Dialect,
    items: AsyncIterator[dict[str, Any]],
    *,
    owner: contextlib.AsyncExitStack,
    keepalive_s: float,
    on_error: Callable[[BaseException], None],
) -> Stream:
    """``items`` (OpenAI chunk dicts, or Anthropic events) as an SSE response with keep-alives. The
    stream's body takes over ``owner`` (the request's admission slot, in-flight count...) and closes it
    when the stream ends, however it ends. An error after the 200 becomes an error event."""

    async def body() -> AsyncIterator[bytes]:
        async with owner:
            try:
                async for item in with_keepalive(items, keepalive_s):
                    if isinstance(item, KeepAlive):
                        yield ANTHROPIC_PING if dialect == "anthropic" else KEEPALIVE_COMMENT
                    elif dialect == "anthropic":
                        yield anthropic_event(item)
                    else:
                        yield openai_event(item)
                if dialect == "openai":
                    yield OPENAI_DONE
            except Exception as error:  # after the 200: the error goes into the stream
                on_error(error)
                envelope = error_envelope(dialect, error)
                yield anthropic_event(envelope) if dialect == "anthropic" else openai_event(envelope)

    return Stream(body(), media_type="text/event-stream", headers=HEADERS)
