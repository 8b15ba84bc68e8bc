"""Which conversation a request belongs to, so the fleet keeps it on one neuron (prefix-cache reuse).

The key is the client's session id (``X-Claude-Code-Session-Id``), else its user (``user``, or
Anthropic's ``metadata.user_id``), else a hash of the conversation's start (system prompt and first
message), which is the same for every turn of one conversation.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any


def affinity_key(headers: Mapping[str, str], body: dict[str, Any]) -> str:
    session = headers.get("x-claude-code-session-id")
    if session:
        return f"session:{session}"
    metadata = body.get("metadata")
    user = body.get("user") or (metadata.get("user_id") if isinstance(metadata, dict) else None)
    if isinstance(user, str) and user:
        return f"user:{user}"
    start = json.dumps([body.get("system"), (body.get("messages") or [None])[0]], sort_keys=True, default=str)
    return "prefix:" + hashlib.sha256(start.encode()).hexdigest()[:16]
