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
from collections.abc import AsyncIterator
from typing import Any, Final, TypeVar

import anyio

T = TypeVar("T")

OPENAI_DONE: Final = b"data: [DONE]\n\n"
KEEPALIVE_COMMENT: Final = b": keep-alive\n\n"
ANTHROPIC_PING: Final = b'event: ping\ndata: {"type":"ping"}\n\n'


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
