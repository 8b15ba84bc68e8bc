"""The Anthropic dialect on the neuron: Messages and count_tokens bodies in, a Message and its events out.

A Messages body is mapped onto the OpenAI request by :mod:`cortex.translate` and parsed by the same
rules; ``max_tokens`` is always clamped to what the model can still produce (Claude Code asks for
128000). Outputs are the OpenAI ones mapped back, with the exact prompt token count in
``message_start``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

from cortex import translate
from cortex.server.generation import Generation
from cortex.server.wire import openai
from cortex.server.wire.request import ChatRequest


def parse_messages_request(body: dict[str, Any]) -> ChatRequest:
    parsed = openai.parse_chat_request(translate.anthropic_to_openai_request(body))
    return dataclasses.replace(parsed, clamp_max_tokens=True)


def parse_count_tokens_request(body: dict[str, Any]) -> ChatRequest:
    """A count_tokens body is a Messages body without ``max_tokens``."""
    return openai.parse_chat_request(
        translate.anthropic_to_openai_request({**body, "max_tokens": body.get("max_tokens", 1)})
    )


async def message(gen: Generation, request: ChatRequest) -> dict[str, Any]:
    """A whole Message."""
    return translate.openai_to_anthropic_response(await openai.chat_completion(gen, request))


def message_events(gen: Generation, request: ChatRequest) -> AsyncIterator[dict[str, Any]]:
    """The Messages stream's events, from ``message_start`` (with the prompt's token count) on."""
    return translate.aopenai_to_anthropic_stream(
        openai.chat_completion_chunks(gen, request), model=request.model, input_tokens=gen.num_prompt_tokens
    )
