"""Which conversation a request belongs to, so the fleet keeps it on one neuron (prefix-cache reuse).

The key is the client's session id (``X-Claude-Code-Session-Id``), else its user (``user``, or
Anthropic's ``metadata.user_id``), else a hash of the conversation's start: its system prompt (Anthropic
``system``, Responses ``instructions``, or the leading system / developer messages) and its first other
message, or the first ``PROMPT_START_CHARS`` characters of a completions ``prompt``. That start is the
same on every turn of one conversation, and differs between users who share a system prompt but not
their first question.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

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
    start = json.dumps(_conversation_start(body), sort_keys=True, default=str)
    return "prefix:" + hashlib.sha256(start.encode()).hexdigest()[:16]


def _conversation_start(body: dict[str, Any]) -> list[Any]:
    """The system prompt and the first message that is not one, in whichever dialect ``body`` is."""
    prompt = body.get("prompt")
    if prompt is not None:  # text, token ids, or a batch of either: its start
        return [str(prompt)[:PROMPT_START_CHARS]]
    items = body.get("messages", body.get("input"))
    if not isinstance(items, list):
        items = [items]
    leading = 0
    while leading < len(items) and _is_system(items[leading]):
        leading += 1
    return [body.get("system"), body.get("instructions"), *items[: leading + 1]]


def _is_system(item: Any) -> bool:
    return isinstance(item, dict) and item.get("role") in _SYSTEM_ROLES
