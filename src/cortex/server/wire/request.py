"""The neuron's parsed requests, whatever dialect they came in, and fitting them to the model's context.

A dialect module (``openai.py``, ``anthropic.py``) turns a body into a :class:`ChatRequest` or
:class:`CompletionRequest`; the neuron runs it on an engine and the same dialect module shapes the
output.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from cortex.engine.sampling_params import SamplingParams
from cortex.errors import ContextLengthError


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """What both kinds of request share after parsing."""

    model: str
    params: SamplingParams
    stream: bool
    include_usage: bool
    clamp_max_tokens: bool  # Anthropic callers: lower max_tokens to what fits instead of a 400
    logprobs: bool
    n: int = 1  # choices, each its own engine request


@dataclass(frozen=True, slots=True)
class ChatRequest(GenerationRequest):
    messages: list[dict[str, Any]] = field(default_factory=list)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str = "auto"  # "required": the reply is one or more calls to ``tools``
    parallel_tool_calls: bool = True
    template_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CompletionRequest(GenerationRequest):
    prompt: str | list[int] = ""


def clamp_params(
    params: SamplingParams, *, prompt_len: int, max_model_len: int, clamp: bool
) -> SamplingParams:
    """Check that the prompt and the requested output fit; with ``clamp`` lower max_tokens to fit."""
    room = max_model_len - prompt_len
    if room < 1:
        raise ContextLengthError(
            f"the prompt has {prompt_len} tokens; this model's context is {max_model_len} tokens",
            param="messages",
        )
    if params.max_tokens is not None and params.max_tokens > room:
        if not clamp:
            raise ContextLengthError(
                f"max_tokens ({params.max_tokens}) + the prompt ({prompt_len} tokens) exceed this model's "
                f"context of {max_model_len} tokens; at most {room} tokens can be generated",
                param="max_tokens",
            )
        return dataclasses.replace(params, max_tokens=room)
    return params


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())
