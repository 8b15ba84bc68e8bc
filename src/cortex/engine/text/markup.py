"""Small helpers shared by the streaming parsers: holding back text that may be the start of a tag."""

from __future__ import annotations

from collections.abc import Iterable


def held_prefix_len(text: str, tags: Iterable[str]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of one of ``tags``.

    That suffix must be held back: the next chunk may complete the tag.
    """
    best = 0
    for tag in tags:
        for n in range(min(len(tag) - 1, len(text)), best, -1):
            if text.endswith(tag[:n]):
                best = n
                break
    return best


class WhitespaceTrimmer:
    """Streams text with leading and trailing whitespace removed, without knowing where the text ends.

    Trailing whitespace is held until non-whitespace follows it; ``trim_leading`` drops whitespace until
    the first non-whitespace character. The concatenated output equals ``text.strip()`` (or ``rstrip``).
    """

    def __init__(self, *, trim_leading: bool) -> None:
        self.trim_leading = trim_leading
        self._pending = ""

    def push(self, text: str) -> str:
        text = self._pending + text
        if self.trim_leading:
            text = text.lstrip()
            if not text:
                self._pending = ""
                return ""
            self.trim_leading = False
        kept = text.rstrip()
        self._pending = text[len(kept) :]
        return kept

    def take_pending(self) -> str:
        """Return (and forget) the held trailing whitespace."""
        pending, self._pending = self._pending, ""
        return pending
