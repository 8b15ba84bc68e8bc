"""Thinking controls: Anthropic ``thinking`` (+ ``output_config.effort``) <-> OpenAI ``reasoning_effort``
and ``chat_template_kwargs.enable_thinking`` (the switch Qwen-style chat templates read).

An explicit ``budget_tokens`` becomes the effort level whose range holds it; the reverse direction
uses adaptive thinking with that effort, which is what Anthropic's API offers for effort levels.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cortex.translate.errors import TranslationError
from cortex.translate.fields import JSON, as_dict, field, str_field

ANTHROPIC_EFFORTS = ("low", "medium", "high", "xhigh", "max")
OPENAI_EFFORTS = ("none", "minimal", *ANTHROPIC_EFFORTS)
# budget_tokens up to (and including) the bound -> effort; larger budgets -> "high".
_BUDGET_EFFORT = ((2048, "low"), (16384, "medium"))


def effort_for_budget(budget_tokens: int) -> str:
    for bound, effort in _BUDGET_EFFORT:
        if budget_tokens <= bound:
            return effort
    return "high"


def anthropic_thinking_to_openai(thinking: Any, effort: Any) -> JSON:
    """OpenAI fields for Anthropic ``thinking`` and ``output_config.effort``; ``display`` is a hint."""
    out: JSON = {}
    if effort is not None:
        if effort not in ANTHROPIC_EFFORTS:
            raise TranslationError(f"unknown effort {effort!r}", param="output_config.effort")
        out["reasoning_effort"] = effort
    if thinking is None:
        return out
    config = as_dict(thinking, "thinking")
    kind = str_field(config, "type", "thinking")
    if kind == "disabled":
        return {"reasoning_effort": "none", "chat_template_kwargs": {"enable_thinking": False}}
    if kind == "enabled":
        budget = field(config, "budget_tokens", "thinking")
        if not isinstance(budget, int) or isinstance(budget, bool):
            raise TranslationError("expected an integer", param="thinking.budget_tokens")
        out.setdefault("reasoning_effort", effort_for_budget(budget))
    elif kind != "adaptive":
        raise TranslationError(f"unknown thinking type {kind!r}", param="thinking.type")
    out["chat_template_kwargs"] = {"enable_thinking": True}
    return out


def openai_thinking_to_anthropic(reasoning_effort: Any, chat_template_kwargs: Any) -> JSON:
    """Anthropic ``thinking`` / ``output_config`` for OpenAI ``reasoning_effort``, falling back to
    ``chat_template_kwargs.enable_thinking``; other template kwargs have no Anthropic meaning."""
    if reasoning_effort is not None:
        if reasoning_effort not in OPENAI_EFFORTS:
            raise TranslationError(f"unknown reasoning effort {reasoning_effort!r}", param="reasoning_effort")
        if reasoning_effort == "none":
            return {"thinking": {"type": "disabled"}}
        effort = "low" if reasoning_effort == "minimal" else reasoning_effort
        return {"thinking": {"type": "adaptive"}, "output_config": {"effort": effort}}
    kwargs: Mapping[str, Any] = as_dict(chat_template_kwargs or {}, "chat_template_kwargs")
    enable = kwargs.get("enable_thinking")
    if enable is None:
        return {}
    return {"thinking": {"type": "adaptive" if enable else "disabled"}}
