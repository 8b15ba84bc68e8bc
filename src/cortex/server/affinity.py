"""Which conversation a request belongs to, so the fleet keeps it on one neuron (prefix-cache reuse).

The key is the client's session id (``X-Claude-Code-Session-Id``), else its user (``user``, or
Anthropic's ``metadata.user_id``), else a hash of the conversation's start: its system prompt (Anthropic
``system``, Responses ``instructions``, or the leading system / developer messages) and its first other
message, or the first ``PROMPT_START_CHARS`` characters of a completions ``prompt``. That start is the
same on every turn of one conversation, and differs between users who share a system prompt but not
their first question. Neither key counts what changes between sends of the same thing: Claude Code's
billing-header system block, a Responses item's id.

A second key, :func:`shared_prefix_key`, is what different conversations share (tools and system
prompt): the fleet sends a conversation it has not seen where that key last went (docs/fleet.md).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from cortex.translate.requests import without_billing_header

# of a completions prompt: a chat rendered as text starts with its system turn, and a first call is at
# least this long for the key to hold from it on (shorter ones key on their whole text)
PROMPT_START_CHARS = 512
_SYSTEM_ROLES = ("system", "developer")


def affinity_key(headers: Mapping[str, str], body: dict[str, Any]) -> str:
    session = headers.get("x-claude-code-session-id")
    if session:
        return f"session:{session}"
    metadata = body.get("metadata")
    user = body.get("user") or (metadata.get("user_id") if isinstance(metadata, dict) else None)
    if isinstance(user, str) and user:
        return f"user:{user}"
    return _digest("prefix", _conversation_start(body))


def shared_prefix_key(body: dict[str, Any]) -> str | None:
    """What different conversations share: the tools and the system prompt, or None when a request has
    neither. The fleet routes a
    conversation it has not seen to where this last went, so its first call reuses that prefix."""
    system = without_billing_header(body.get("system"))
    items = body.get("messages", body.get("input"))
    leading = [_what_was_said(item) for item in _leading_system(items)] if isinstance(items, list) else []
    shared = [body.get("tools"), system, body.get("instructions"), leading]
    return _digest("shared", shared) if any(shared) else None


def _digest(kind: str, value: Any) -> str:
    return (
        f"{kind}:" + hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]
    )


def _leading_system(items: list[Any]) -> list[Any]:
    leading = 0
    while leading < len(items) and _is_system(items[leading]):
        leading += 1
    return items[:leading]


def _conversation_start(body: dict[str, Any]) -> list[Any]:
    """The system prompt and the first message that is not one, in whichever dialect ``body`` is."""
    prompt = body.get("prompt")
    if prompt is not None:  # text, token ids, or a batch of either: its start
        return [str(prompt)[:PROMPT_START_CHARS]]
    items = body.get("messages", body.get("input"))
    if not isinstance(items, list):
        items = [items]
    leading = len(_leading_system(items))
    system = without_billing_header(body.get("system"))
    return [system, body.get("instructions"), *map(_what_was_said, items[: leading + 1])]


def _what_was_said(item: Any) -> Any:
    """A message's role and content, less what differs between sends of it (a Responses item's id)."""
    return {"role": item.get("role"), "content": item.get("content")} if isinstance(item, dict) else item


def _is_system(item: Any) -> bool:
    return isinstance(item, dict) and item.get("role") in _SYSTEM_ROLES
