"""What the gateway reads of a Responses stream it passes on: the lifecycle events.

:class:`ResponsesScanner` takes a Responses stream's bytes as they arrive (named SSE events,
``event: <type>`` + ``data``) and returns the complete events among them, holding back a trailing
partial one. Every event passes unchanged except the lifecycle events (``response.created``,
``.in_progress``, ``.completed``, ``.incomplete``, ``.failed``), whose Response gets the gateway's
fields (``patch``: the model name the caller used, ``previous_response_id``, ``store``) and is
re-serialised; the terminal one's Response is kept in :attr:`final` for the store, and its usage (as
OpenAI Chat Completions usage) for the metrics. Deltas are never parsed. :attr:`ended` tells a stream
that ran to its end (a terminal event, or an error) from one that was cut.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import msgspec

from cortex.server.relay_events import EventBuffer

_BOUNDARY = re.compile(rb"\r?\n\r?\n")
_LIFECYCLE = (b"response.created", b"response.in_progress", b"response.queued")
_TERMINAL = (b"response.completed", b"response.incomplete", b"response.failed")
_ERROR = re.compile(rb'data: ?\{"error"')  # an error after the 200 (OpenAI's envelope, unnamed)
_OUTPUT = (b"response.output_text.delta", b"response.reasoning_text.delta", b"response.output_item.added")


class ResponsesScanner(EventBuffer):
    def __init__(self, patch: Callable[[dict[str, Any]], None]) -> None:
        super().__init__()
        self._patch = patch
        self.final: dict[str, Any] | None = None
        self.usage: dict[str, Any] | None = None  # OpenAI-shaped, for the metrics
        self.first_output_at: float | None = None
        self.ended = False  # a terminal or an error event has gone out

    def _pass(self, complete: bytes) -> bytes:
        return b"".join(self._event(event) for event in _BOUNDARY.split(complete) if event)

    def _event(self, event: bytes) -> bytes:
        name, _, data = event.partition(b"\ndata:")
        kind = name.removeprefix(b"event:").strip()
        if self.first_output_at is None and kind in _OUTPUT:
            self.first_output_at = time.monotonic()
        if kind in _TERMINAL or _ERROR.match(event):
            self.ended = True
        if kind not in _LIFECYCLE and kind not in _TERMINAL:
            return event + b"\n\n"
        try:
            body = msgspec.json.decode(data.strip())
        except msgspec.DecodeError:
            return event + b"\n\n"
        response = body.get("response") if isinstance(body, dict) else None
        if not isinstance(response, dict):
            return event + b"\n\n"
        self._patch(response)
        if kind in _TERMINAL:
            self.final = response
            self.usage = chat_usage(response.get("usage"))
        return name + b"\ndata: " + msgspec.json.encode(body) + b"\n\n"


def chat_usage(usage: Any) -> dict[str, Any] | None:
    """Responses usage as Chat Completions usage (what the metrics count)."""
    if not isinstance(usage, dict):
        return None
    details = usage.get("input_tokens_details") or {}
    return {
        "prompt_tokens": usage.get("input_tokens", 0),
        "completion_tokens": usage.get("output_tokens", 0),
        "total_tokens": usage.get("total_tokens", 0),
        "prompt_tokens_details": {"cached_tokens": details.get("cached_tokens", 0)},
        "completion_tokens_details": (usage.get("output_tokens_details") or {}),
    }
