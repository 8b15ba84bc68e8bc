"""The neuron's parsed requests, whatever dialect they came in.

A dialect module (``openai.py``, ``anthropic.py``) turns a body into a :class:`ChatRequest` or
:class:`CompletionRequest`; the neuron runs it on an engine (:mod:`cortex.server.generation`) and the
same dialect module shapes the output.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from cortex.engine.sampling_params import SamplingParams


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """What both kinds of request share after parsing."""

    model: str
    params: SamplingParams
    stream: bool
    include_usage: bool
    clamp_max_tokens: bool  # Anthropic callers: max_tokens lowered to what fits instead of a 400
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


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())
