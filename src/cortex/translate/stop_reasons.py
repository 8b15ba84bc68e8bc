"""Why generation stopped: OpenAI ``finish_reason`` <-> Anthropic ``stop_reason`` / ``stop_sequence``.

A turn that called a tool always stops with ``tool_use`` / ``tool_calls``, whatever the upstream
said, because that is what tells a client to run the tools. OpenAI has no ``stop_sequence`` field:
the matched string travels in the choice's ``stop_reason`` (vLLM's extension), which is read back.
"""

from __future__ import annotations

from typing import Any

_TO_ANTHROPIC = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
_TO_OPENAI = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def anthropic_stop(finish_reason: Any, matched_stop: Any, *, called_tool: bool) -> tuple[str, str | None]:
    """``(stop_reason, stop_sequence)`` for an OpenAI finish; an unknown or missing one is end_turn."""
    if called_tool:
        return "tool_use", None
    if finish_reason == "stop" and isinstance(matched_stop, str):
        return "stop_sequence", matched_stop
    return _TO_ANTHROPIC.get(finish_reason, "end_turn"), None


def openai_finish(stop_reason: Any, *, called_tool: bool) -> str:
    """OpenAI ``finish_reason`` for an Anthropic ``stop_reason``; an unknown or missing one is stop."""
    if called_tool:
        return "tool_calls"
    return _TO_OPENAI.get(stop_reason, "stop")
