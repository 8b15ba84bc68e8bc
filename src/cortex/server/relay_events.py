"""What the relay reads of a stream it passes on as bytes: event boundaries, first output, usage.

:class:`StreamScanner` takes the upstream's bytes as they arrive and returns the complete SSE events
among them, unchanged, holding back a trailing partial event (so a keep-alive is only ever sent
between events). It looks inside an event only where metrics need it: the first event carrying
output (time to first token), the usage (OpenAI: the chunk with a ``usage`` object; Anthropic:
``message_start`` and ``message_delta``), and Anthropic's ``message_start`` to put the model name the
caller used back in. An OpenAI usage-only chunk the caller did not ask for is left out. Nothing else is
parsed or re-serialised. ``ended`` tells a stream that ran to its end (``data: [DONE]``,
``message_stop``, or an error event) from one that was cut; ``finished`` says an OpenAI choice with a
``finish_reason`` has gone out (the only end a third-party server that sends no ``[DONE]`` shows).
"""

from __future__ import annotations

import re
import time
from abc import ABC, abstractmethod
from typing import Any

import msgspec

from cortex.server.edge import Dialect
from cortex.translate.usage import anthropic_usage_to_openai

_BOUNDARY = re.compile(rb"\r?\n\r?\n")
_OPENAI_OUTPUT = re.compile(rb'"(?:content|reasoning_content|text)":"[^"]|"tool_calls":\[\{')
_ANTHROPIC_OUTPUT = b"content_block_delta"
_OPENAI_USAGE = b'"usage":{'
_ANTHROPIC_USAGE = (b"message_start", b"message_delta")
_ENDS = {
    "openai": re.compile(rb'^data: ?(\[DONE\]|\{"error")', re.MULTILINE),
    "anthropic": re.compile(rb"^event: ?(message_stop|error)\r?$", re.MULTILINE),
}
_OPENAI_FINISH = re.compile(rb'"finish_reason": ?"')


class EventBuffer(ABC):
    """SSE bytes in as they arrive, complete events out: a trailing partial event is held back."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, data: bytes) -> bytes:
        """The complete events of ``pending + data``, to pass on."""
        data = self._pending + data
        end = complete_end(data)
        if not end:
            self._pending = data
            return b""
        complete, self._pending = data[:end], data[end:]
        return self._pass(complete)

    def flush(self) -> bytes:
        """What is left when the upstream ended (a last event without its blank line)."""
        rest, self._pending = self._pending, b""
        return self.feed(rest + b"\n\n") if rest.strip() else b""

    @abstractmethod
    def _pass(self, complete: bytes) -> bytes:
        """What to pass on of these complete events."""


class StreamScanner(EventBuffer):
    def __init__(self, dialect: Dialect, *, drop_usage_chunk: bool = False, model: str | None = None) -> None:
        super().__init__()
        self._dialect = dialect
        self._drop_usage_chunk = drop_usage_chunk
        self._model = model  # the name to show in Anthropic's message_start (the caller's)
        self.first_output_at: float | None = None
        self.usage: dict[str, Any] | None = None  # OpenAI-shaped, for the metrics
        self.started = False  # Anthropic: message_start has gone out (pings are allowed from here)
        self.ended = False  # its last event (the terminator, or an error) has gone out
        self.finished = False  # OpenAI: a choice with a finish_reason has gone out
        self._input_usage: dict[str, Any] = {}  # Anthropic: message_start's usage, less output_tokens

    def _pass(self, complete: bytes) -> bytes:
        if not self.ended and _ENDS[self._dialect].search(complete) is not None:
            self.ended = True
        if self._dialect == "openai" and not self.finished and _OPENAI_FINISH.search(complete) is not None:
            self.finished = True
        if self.first_output_at is None and self._has_output(complete):
            self.first_output_at = time.monotonic()
        if self._dialect == "openai":
            if _OPENAI_USAGE in complete:
                complete = self._openai_usage(complete)
        elif not self.started or _ANTHROPIC_USAGE[1] in complete:
            complete = self._anthropic_events(complete)
        return complete

    def _has_output(self, events: bytes) -> bool:
        if self._dialect == "openai":
            return _OPENAI_OUTPUT.search(events) is not None
        return _ANTHROPIC_OUTPUT in events

    def _openai_usage(self, complete: bytes) -> bytes:
        kept = []
        for event in _BOUNDARY.split(complete):
            if _OPENAI_USAGE in event and event.startswith(b"data:"):
                chunk = _decode(event.partition(b":")[2])
                usage = chunk.get("usage") if isinstance(chunk, dict) else None
                if isinstance(usage, dict):
                    self.usage = usage
                    if self._drop_usage_chunk and chunk.get("choices") == []:
                        continue
            if event:
                kept.append(event + b"\n\n")
        return b"".join(kept)

    def _anthropic_events(self, complete: bytes) -> bytes:
        kept = []
        for event in _BOUNDARY.split(complete):
            if not event:
                continue
            name, _, data = event.partition(b"\ndata:")
            if name.endswith(b"message_start"):
                self.started = True
                body = _decode(data)
                message = body.get("message") if isinstance(body, dict) else None
                if isinstance(message, dict):
                    self._count(message.get("usage"))
                    if self._model is not None and message.get("model") != self._model:
                        message["model"] = self._model
                        event = name + b"\ndata: " + msgspec.json.encode(body)
            elif name.endswith(b"message_delta"):
                body = _decode(data)
                self._count(body.get("usage") if isinstance(body, dict) else None, final=True)
            kept.append(event + b"\n\n")
        return b"".join(kept)

    def _count(self, usage: Any, *, final: bool = False) -> None:
        if not isinstance(usage, dict):
            return
        if final:  # message_delta: the cumulative output on top of message_start's input
            usage = {**self._input_usage, **usage}
        else:
            self._input_usage = {k: v for k, v in usage.items() if k != "output_tokens"}
        self.usage = anthropic_usage_to_openai(usage, "usage")


def _decode(data: bytes) -> Any:
    try:
        return msgspec.json.decode(data.strip())
    except msgspec.DecodeError:
        return None


def complete_end(data: bytes) -> int:
    """Where the last complete event of ``data`` ends (after its blank line); 0 if none has."""
    ends = [cut + len(boundary) for boundary in (b"\n\n", b"\r\n\r\n") if (cut := data.rfind(boundary)) >= 0]
    return max(ends, default=0)
