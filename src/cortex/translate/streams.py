"""Streams in both directions, sync and async: thin loops over the two stream builders.

Each function consumes an iterable of parsed SSE payloads (dicts; for OpenAI input the ``"[DONE]"``
sentinel may be passed too) and yields the other dialect's payloads; the caller owns the SSE framing.
A TranslationError raised mid-stream (e.g. malformed tool arguments) is for the server to turn into
an error event in the caller's dialect.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from typing import Any, Protocol

from cortex.translate.anthropic_stream import AnthropicStreamBuilder
from cortex.translate.fields import JSON
from cortex.translate.openai_stream import OpenAIStreamBuilder


class _StreamBuilder(Protocol):
    done: bool

    def feed(self, item: Any) -> list[JSON]: ...

    def finish(self) -> list[JSON]: ...


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
    return _translate(builder, chunks)


def aopenai_to_anthropic_stream(
    chunks: AsyncIterable[Any],
    *,
    model: str | None = None,
    message_id: str | None = None,
    input_tokens: int | None = None,
) -> AsyncIterator[JSON]:
    """The async twin of ``openai_to_anthropic_stream``."""
    builder = AnthropicStreamBuilder(model=model, message_id=message_id, input_tokens=input_tokens)
    return _atranslate(builder, chunks)


def anthropic_to_openai_stream(
    events: Iterable[Any],
    *,
    model: str | None = None,
    completion_id: str | None = None,
    created: int | None = None,
    include_usage: bool = True,
) -> Iterator[JSON]:
    """Anthropic stream events as OpenAI ``chat.completion.chunk`` dicts.

    Usage is carried over by default, as ``stream_options.include_usage`` gives it: a last chunk with
    ``choices: []`` and the usage (other chunks carry ``usage: null``); ``include_usage=False`` for a
    caller that did not ask for it.
    """
    builder = OpenAIStreamBuilder(
        model=model, completion_id=completion_id, created=created, include_usage=include_usage
    )
    return _translate(builder, events)


def aanthropic_to_openai_stream(
    events: AsyncIterable[Any],
    *,
    model: str | None = None,
    completion_id: str | None = None,
    created: int | None = None,
    include_usage: bool = True,
) -> AsyncIterator[JSON]:
    """The async twin of ``anthropic_to_openai_stream``."""
    builder = OpenAIStreamBuilder(
        model=model, completion_id=completion_id, created=created, include_usage=include_usage
    )
    return _atranslate(builder, events)


def _translate(builder: _StreamBuilder, items: Iterable[Any]) -> Iterator[JSON]:
    """Feed ``items`` until the builder is done (input after the end is not read), then finish."""
    for item in items:
        yield from builder.feed(item)
        if builder.done:
            return
    yield from builder.finish()


async def _atranslate(builder: _StreamBuilder, items: AsyncIterable[Any]) -> AsyncIterator[JSON]:
    """The async twin of ``_translate``."""
    async for item in items:
        for out in builder.feed(item):
            yield out
        if builder.done:
            return
    for out in builder.finish():
        yield out
