"""The OpenAI Responses dialect on the neuron: ``POST /v1/responses`` bodies in, a Response and its
events out. Stateless: the neuron keeps nothing.

A Responses body is mapped onto the Chat Completions request by :mod:`cortex.translate` and parsed by
the same rules as ``/v1/chat/completions`` (so ``text.format`` and a forcing ``tool_choice`` are
enforced by constrained decoding, docs/structured.md); the outputs are the chat outputs mapped back.
``previous_response_id`` is refused here with a 400: conversations are kept by the gateway's
Responses store, which puts the stored items in front of ``input`` before the request reaches a
neuron. ``store`` is accepted and answered as ``store: false``, which is what happened here; the
gateway says what it stored.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from cortex import translate
from cortex.engine.outputs import ChatDelta
from cortex.server.edge import error_type_name, message_of
from cortex.server.generation import Generation
from cortex.server.wire import openai
from cortex.server.wire.request import ChatRequest
from cortex.translate.responses_output import ResponsesStreamBuilder


def parse_responses_request(body: dict[str, Any]) -> tuple[ChatRequest, dict[str, Any]]:
    """The engine's request, and the body the Response echoes (with ``store: false``)."""
    return openai.parse_chat_request(translate.responses_to_openai_request(body)), {**body, "store": False}


async def response(
    gen: Generation,
    request: ChatRequest,
    choices: AsyncIterator[tuple[int, ChatDelta]],
    body: dict[str, Any],
) -> dict[str, Any]:
    """A whole Response object."""
    return translate.openai_to_responses_response(await openai.chat_completion(gen, request, choices), body)


async def response_events(
    gen: Generation,
    request: ChatRequest,
    choices: AsyncIterator[tuple[int, ChatDelta]],
    body: dict[str, Any],
    *,
    on_error: Callable[[BaseException], None],
) -> AsyncIterator[dict[str, Any]]:
    """The Responses stream's events, from ``response.created`` (sent before the prefill) to
    ``response.completed``. A failure after the stream started ends it with ``response.failed``."""
    builder = ResponsesStreamBuilder(body)
    try:
        async for chunk in openai.chat_completion_chunks(gen, request, choices):
            for event in builder.feed(chunk):
                yield event
    except Exception as error:
        on_error(error)
        kind = "invalid_request_error" if error_type_name(error) == "invalid_request" else "server_error"
        failed = {"error": {"message": message_of(error), "type": kind}}
        for event in builder.feed(failed):
            yield event
        return
    for event in builder.finish():
        yield event
