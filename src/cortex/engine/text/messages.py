"""Prepare OpenAI-style chat messages for a Hugging Face chat template.

Clients send shapes that templates written for transformers do not expect, so before rendering:

- ``developer`` messages are treated as ``system`` (OpenAI's newer name for it);
- every ``system`` message after the first position is merged into one leading system message, joined
  by a blank line (Claude Code sends mid-conversation system messages; Qwen's template raises
  "System message must be at the beginning.");
- content given as a list of text parts (``[{"type": "text", "text": ...}]``) is joined into one string;
  lists holding anything else (images) are left for the template;
- tool-call ``arguments`` given as a JSON string are parsed to an object (Qwen's template iterates
  ``arguments|items``); a string that is not a JSON object is rejected.

The input is not modified.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from cortex.errors import InvalidRequestError


def _join_text_parts(content: Any) -> Any:
    if not isinstance(content, list) or not content:
        return content
    texts = []
    for part in content:
        if not isinstance(part, Mapping) or part.get("type", "text") != "text" or "text" not in part:
            return content
        texts.append(str(part["text"]))
    return "".join(texts)


def _parse_arguments(tool_call: Mapping[str, Any]) -> dict[str, Any]:
    call = dict(tool_call)
    function = call.get("function")
    target = dict(function) if isinstance(function, Mapping) else call
    arguments = target.get("arguments")
    if isinstance(arguments, str):
        try:
            parsed = json.loads(arguments) if arguments.strip() else {}
        except ValueError as exc:
            raise InvalidRequestError(
                f"tool call arguments must be a JSON object, got {arguments!r}", param="messages"
            ) from exc
        if not isinstance(parsed, dict):
            raise InvalidRequestError(
                f"tool call arguments must be a JSON object, got {arguments!r}", param="messages"
            )
        target["arguments"] = parsed
    if isinstance(function, Mapping):
        call["function"] = target
        return call
    return target


def _system_text(message: Mapping[str, Any]) -> str:
    content = _join_text_parts(message.get("content"))
    if content is None:
        return ""
    if not isinstance(content, str):
        raise InvalidRequestError("system message content must be text", param="messages")
    return content


def prepare_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Return template-ready copies of ``messages`` (see the module docstring for the rules)."""
    prepared: list[dict[str, Any]] = []
    system_parts: list[str] = []
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise InvalidRequestError(f"messages[{index}] must be an object", param="messages")
        out = dict(message)
        if out.get("role") == "developer":
            out["role"] = "system"
        if out.get("role") == "system":
            system_parts.append(_system_text(out))
            continue
        if "content" in out:
            out["content"] = _join_text_parts(out["content"])
        tool_calls = out.get("tool_calls")
        if isinstance(tool_calls, list):
            out["tool_calls"] = [
                _parse_arguments(call) if isinstance(call, Mapping) else call for call in tool_calls
            ]
        prepared.append(out)
    if system_parts:
        first = messages[0] if messages[0].get("role") in ("system", "developer") else {}
        system = {**first, "role": "system", "content": "\n\n".join(part for part in system_parts if part)}
        prepared.insert(0, system)
    return prepared
