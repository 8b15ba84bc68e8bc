"""Stop strings matched across chunk boundaries.

Text arrives in arbitrary chunks (one decoded token at a time). :class:`StopStringMatcher` emits what is
certainly not part of a stop string and holds back the longest tail that could still grow into one, so a
stop string split across tokens is still found and never emitted.
"""

from __future__ import annotations

from collections.abc import Sequence

from cortex.engine.text.markup import held_prefix_len


class StopStringMatcher:
    """Finds the first stop string to complete in a stream of text.

    "First" is the occurrence that ends earliest (ties: the longer one), which is what a character-by-
    character stream would hit first, so the result does not depend on how the text is chunked.

    Invariant: the held-back buffer is always a proper prefix of some stop string (or empty), so a match
    can only start inside the buffer or in new text; scanning ``buffer + text`` finds it.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        if any(not stop for stop in stops):
            raise ValueError("stop strings must not be empty")
        self._stops = tuple(stops)
        self._held = ""
        self.matched: str | None = None

    def feed(self, text: str) -> tuple[str, str | None]:
        """Add ``text``; return (text safe to emit now, the stop string matched or None).

        After a match the emitted text ends just before the stop string, and later calls emit nothing.
        """
        if self.matched is not None:
            return "", self.matched
        buffer = self._held + text
        best_pos, best_end, best_stop = -1, -1, None
        for stop in self._stops:
            pos = buffer.find(stop)
            end = pos + len(stop)
            if pos != -1 and (best_stop is None or (end, pos) < (best_end, best_pos)):
                best_pos, best_end, best_stop = pos, end, stop
        if best_stop is not None:
            self._held = ""
            self.matched = best_stop
            return buffer[:best_pos], best_stop
        keep = held_prefix_len(buffer, self._stops)
        self._held = buffer[len(buffer) - keep :]
        return buffer[: len(buffer) - keep], None

    def flush(self) -> str:
        """Return the held-back text at the end of the request (empty after a match)."""
        held, self._held = self._held, ""
        return held
