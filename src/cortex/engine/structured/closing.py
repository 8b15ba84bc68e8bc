"""The closing path: bytes that complete a grammar from a matcher's current state, soon.

A random-weight model constrained to a JSON string picks among ~200k allowed tokens, of which a few
hundred close it, so it may never reach the closing quote before ``max_tokens``. The engine therefore
keeps, per constrained request, the length of a closing path (in single-byte tokens, plus one for the
end-of-sequence token where the grammar ends on it): an upper bound on the tokens still needed. Once the
request's remaining budget reaches that bound, only tokens that follow the path are allowed, so the
output is complete within ``max_tokens`` (see :mod:`cortex.engine.structured.matcher`).

The path is found greedily, a byte at a time, by trying single-byte tokens on the matcher and rolling
back afterwards (each try is a few microseconds). Bytes the grammar forces (a property name) are taken
at once; otherwise:

- at a *free* position (most of :data:`PROBES` allowed: inside a string or free text), the first of the
  grammar's closers (``"``, then e.g. ``\\n</parameter>\\n``) after which the position is no longer free;
  if none is allowed yet (a ``minLength`` string), the first allowed probe byte;
- at any other position, the first allowed byte of :data:`PRIORITY`: closing brackets before separators
  before digits (``1`` before ``0``, so that a bounded number ends) before openers and letters.

A grammar whose greedy path loops (a string ``pattern`` like ``a*b``) exhausts ``limit`` and has no path
(None): such a request is constrained but has no termination guarantee (docs/structured.md).
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

PROBES = b"aQ7~ #"
_MIN_FREE_PROBES = 4
PRIORITY = (
    b'}]"'
    + b"<>/"
    + b",:"
    + b"1023456789.-+eE"
    + b"{["
    + b"\n"
    + string.ascii_letters.encode()
    + bytes(b for b in range(0x21, 0x7F) if not chr(b).isalnum() and b not in b'}]"<>/,:.-+{[')
    + b" \t"
)
# A JSON string ends at its quote; a tool-call parameter value (text/tool_grammar.py) at its end tag.
CLOSERS = (b'"', b"\n</parameter>\n")


class Matcher(Protocol):
    """The part of ``llguidance.LLMatcher`` the search uses."""

    def try_consume_tokens(self, tokens: list[int]) -> int: ...

    def rollback(self, num_tokens: int) -> bool: ...

    def is_stopped(self) -> bool: ...

    def is_accepting(self) -> bool: ...

    def compute_ff_bytes(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class ClosingPath:
    data: bytes  # completes the grammar; each byte is one single-byte token
    needs_eos: bool  # the grammar ends on the end-of-sequence token after ``data``

    @property
    def num_tokens(self) -> int:
        return len(self.data) + self.needs_eos


def closing_path(
    matcher: Matcher,
    byte_tokens: Sequence[int],
    *,
    closers: Sequence[bytes] = CLOSERS,
    limit: int = 1024,
) -> ClosingPath | None:
    """The greedy closing path from ``matcher``'s state, which is left unchanged; None past ``limit``.

    ``byte_tokens[b]`` is the token id of the single byte ``b``.
    """
    search = _Search(matcher, byte_tokens)
    try:
        return search.run(closers, limit)
    finally:
        matcher.rollback(search.consumed)


class _Search:
    def __init__(self, matcher: Matcher, byte_tokens: Sequence[int]) -> None:
        self.matcher = matcher
        self.byte_tokens = byte_tokens
        self.consumed = 0  # tokens taken on the matcher, rolled back at the end

    def run(self, closers: Sequence[bytes], limit: int) -> ClosingPath | None:
        path = bytearray()
        while not self.matcher.is_stopped():
            if self.matcher.is_accepting():
                return ClosingPath(bytes(path), needs_eos=True)
            if len(path) >= limit:
                return None
            forced = self.matcher.compute_ff_bytes()
            if forced and self._take(forced):
                path += forced
                continue
            step = self._free_step(closers) if self._is_free() else self._structure_step()
            if step is None:
                return None  # only multi-byte or special tokens continue from here
            path += step
        return ClosingPath(bytes(path), needs_eos=False)

    def _take(self, data: bytes) -> bool:
        tokens = [self.byte_tokens[b] for b in data]
        n = self.matcher.try_consume_tokens(tokens)
        if n < len(tokens):
            self.matcher.rollback(n)
            return False
        self.consumed += n
        return True

    def _undo(self, data: bytes) -> None:
        self.matcher.rollback(len(data))
        self.consumed -= len(data)

    def _allows(self, byte: int) -> bool:
        if self.matcher.try_consume_tokens([self.byte_tokens[byte]]):
            self.matcher.rollback(1)
            return True
        return False

    def _is_free(self) -> bool:
        return sum(self._allows(b) for b in PROBES) >= _MIN_FREE_PROBES

    def _free_step(self, closers: Sequence[bytes]) -> bytes | None:
        for closer in closers:
            if self._take(closer):
                if not self._is_free():
                    return closer
                self._undo(closer)
        return self._first(PROBES)

    def _structure_step(self) -> bytes | None:
        return self._first(PRIORITY)

    def _first(self, candidates: bytes) -> bytes | None:
        return next((bytes([b]) for b in candidates if self._take(bytes([b]))), None)
