"""Streams in both directions, sync and async: thin loops over the two stream builders.

Each function consumes an iterable of parsed SSE payloads (dicts; for OpenAI input the ``"[DONE]"``
sentinel may be passed too) and yields the other dialect's payloads; the caller owns the SSE framing.
A TranslationError raised mid-stream (e.g. malformed tool arguments) is for the server to turn into
an error event in the caller's dialect.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from typing import Any

from cortex.translate.anthropic_stream import AnthropicStreamBuilder
from cortex.translate.fields import JSON
from cortex.translate.openai_stream import OpenAIStreamBuilder


def openai_to_anthropic_stream(
    chunks: Iterable[Any],
    *,
    model: str | None = None,
    message_id: str | None = None,
    input_tokens: int | None = None,
) -> Iterator[JSON]:
    """OpenAI ``chat.completion.chunk`` dicts as Anthropic stream events.

    ``model`` and ``message_id`` override the upstream's; ``input_tokens`` fills ``message_start``
    when the upstream reports usage only at the end.
    """
    builder = AnthropicStreamBuilder(model=model, message_id=message_id, input_tokens=input_tokens)
    for chunk in chunks:
        yield from builder.feed(chunk)
        if builder.done:
            return
    yield from builder.finish()


async def aopenai_to_anthropic_stream(
    chunks: AsyncIterable[Any],
    *,
    model: str | None = None,
    message_id: str | None = None,
    input_tokens: int | None = None,
) -> AsyncIterator[JSON]:
    """The async twin of ``openai_to_anthropic_stream``."""
    builder = AnthropicStreamBuilder(model=model, message_id=message_id, input_tokens=input_tokens)
    async for chunk in chunks:
        for event in builder.feed(chunk):
            yield event
        if builder.done:
            return
    for event in builder.finish():
        yield event


def anthropic_to_openai_stream(
    events: Iterable[Any],
    *,
    model: str | None = None,
    completion_id: str | None = None,
    created: int | None = None,
    include_usage: bool = False,
) -> Iterator[JSON]:
    """Anthropic stream events as OpenAI ``chat.completion.chunk`` dicts.

    ``include_usage`` mirrors the request's ``stream_options.include_usage``.
    """
    builder = OpenAIStreamBuilder(
        model=model, completion_id=completion_id, created=created, include_usage=include_usage
    )
    for event in events:
        yield from builder.feed(event)
        if builder.done:
            return
    yield from builder.finish()


async def aanthropic_to_openai_stream(
    events: AsyncIterable[Any],
    *,
    model: str | None = None,
    completion_id: str | None = None,
    created: int | None = None,
    include_usage: bool = False,
) -> AsyncIterator[JSON]:
    """The async twin of ``anthropic_to_openai_stream``."""
    builder = OpenAIStreamBuilder(
        model=model, completion_id=completion_id, created=created, include_usage=include_usage
    )
    async for event in events:
        for chunk in builder.feed(event):
            yield chunk
        if builder.done:
            return
    for chunk in builder.finish():
        yield chunk
