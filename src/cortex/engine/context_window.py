"""The one rule for what fits a model's context: the prompt plus every token it may generate.

:func:`output_budget` is the check ``Engine.add_request`` (and so every engine call) applies;
:func:`fit_max_tokens` is the clamp for callers that ask for more than can fit and expect to get what
does (Anthropic's clients: Claude Code asks for 128000), and leaves the check to the engine.
"""

from __future__ import annotations

from cortex.errors import ContextLengthError


def output_budget(*, num_prompt_tokens: int, max_tokens: int | None, max_model_len: int) -> int:
    """How many tokens a request may generate: ``max_tokens``, or all the room the prompt leaves when
    None. ContextLengthError when the prompt leaves no room or ``max_tokens`` does not fit."""
    room = max_model_len - num_prompt_tokens
    if room < 1:
        raise ContextLengthError(
            f"the prompt has {num_prompt_tokens} tokens; this model's context is {max_model_len} tokens",
            param="prompt",
        )
    if max_tokens is None:
        return room
    if max_tokens > room:
        raise ContextLengthError(
            f"max_tokens ({max_tokens}) + the prompt ({num_prompt_tokens} tokens) exceed this model's "
            f"context of {max_model_len} tokens; at most {room} tokens can be generated",
            param="max_tokens",
        )
    return max_tokens


def fit_max_tokens(max_tokens: int | None, *, num_prompt_tokens: int, max_model_len: int) -> int | None:
    """``max_tokens`` lowered to the room the prompt leaves; unchanged when it fits or when the prompt
    leaves no room at all (that is :func:`output_budget`'s error to raise)."""
    room = max_model_len - num_prompt_tokens
    if max_tokens is None or room < 1:
        return max_tokens
    return min(max_tokens, room)
