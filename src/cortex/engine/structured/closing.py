"""The closing path: bytes that complete a grammar from a matcher's current state, soon.

A random-weight model constrained to a JSON string picks among ~200k allowed tokens, of which a few
hundred close it, so it may never reach the closing quote before ``max_tokens``. The engine therefore
keeps, per constrained request, the length of a closing path (its text in greedy longest-prefix tokens, plus
its special tokens and the end-of-sequence token where the grammar ends on it): the tokens still needed
when only that path is followed. Once the
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

    def compute_ff_tokens(self) -> list[int]: ...


class Vocabulary(Protocol):
    """What the search needs to know of the tokenizer (the GrammarBackend)."""

    @property
    def byte_tokens(self) -> Sequence[int]: ...  # byte_tokens[b]: the token id of the single byte b

    def special_token(self, token_id: int) -> bool: ...

    def token_bytes(self, token_id: int) -> bytes: ...

    def greedy_tokens(self, data: bytes) -> list[int]: ...


Segment = bytes | int  # text (each byte one single-byte token at most), or a special token's id


@dataclass(frozen=True, slots=True)
class ClosingPath:
    segments: tuple[Segment, ...]  # complete the grammar, in order
    needs_eos: bool  # the grammar ends on the end-of-sequence token after them
    num_tokens: int  # to follow it: text in greedy longest-prefix tokens, plus specials and EOS


def closing_path(
    matcher: Matcher,
    vocabulary: Vocabulary,
    *,
    closers: Sequence[bytes] = CLOSERS,
    limit: int = 1024,
) -> ClosingPath | None:
    """The greedy closing path from ``matcher``'s state, which is left unchanged; None past ``limit``."""
    search = _Search(matcher, vocabulary)
    try:
        return search.run(closers, limit)
    finally:
        matcher.rollback(search.consumed)


class _Search:
    def __init__(self, matcher: Matcher, vocabulary: Vocabulary) -> None:
        self.matcher = matcher
        self.vocabulary = vocabulary
        self.byte_tokens = vocabulary.byte_tokens
        self.consumed = 0  # tokens taken on the matcher, rolled back at the end
        self.segments: list[Segment] = []
        self.length = 0  # in bytes and special tokens

    def _add(self, segment: Segment) -> None:
        if isinstance(segment, bytes) and self.segments and isinstance(self.segments[-1], bytes):
            self.segments[-1] += segment
        else:
            self.segments.append(segment)
        self.length += len(segment) if isinstance(segment, bytes) else 1

    def run(self, closers: Sequence[bytes], limit: int) -> ClosingPath | None:
        while not self.matcher.is_stopped():
            if self.matcher.is_accepting():
                return self._path(needs_eos=True)
            if self.length >= limit:
                return None
            forced = self.matcher.compute_ff_tokens()  # what the grammar forces (a key, a special token)
            if forced and self.matcher.try_consume_tokens(forced) == len(forced):
                self.consumed += len(forced)
                for token_id in forced:
                    special = self.vocabulary.special_token(token_id)
                    self._add(token_id if special else self.vocabulary.token_bytes(token_id))
                continue
            step = self._free_step(closers) if self._is_free() else self._structure_step()
            if step is None:
                return None  # only multi-byte tokens continue from here
            self._add(step)
        return self._path(needs_eos=False)

    def _path(self, *, needs_eos: bool) -> ClosingPath:
        num_tokens = needs_eos + sum(
            len(self.vocabulary.greedy_tokens(s)) if isinstance(s, bytes) else 1 for s in self.segments
        )
        return ClosingPath(tuple(self.segments), needs_eos=needs_eos, num_tokens=num_tokens)

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
