"""GrammarMatcher: one request's output constraint, advanced on each sampled token.

Used by the engine's step thread only: the runner calls :meth:`fill_bitmask` before sampling and
:meth:`fits` after it, the scheduler calls :meth:`accept` with the token it keeps. The matcher holds
exactly the tokens the request has generated, so a preempted request (which recomputes its tokens and
then samples the next one) keeps its state unchanged.

Phases: ``reasoning`` (when ``reasoning_end_token_id`` is set: output is free until that token) ->
``constrained`` -> ``done`` (the grammar is complete; the request ends with finish reason "stop").

Termination within the budget (see :mod:`cortex.engine.structured.closing`): the matcher keeps the
length of a closing path, an upper bound on the tokens that complete the grammar, recomputed every
:data:`RECHECK_EVERY` tokens and at every token once the budget left is within twice the bound plus
:data:`RECHECK_MARGIN` (the *closing zone*). In the zone a sampled token is kept only if the grammar can
still be closed within the budget after it (:meth:`fits`); otherwise the runner takes the most likely
token that follows the path instead. When the budget left equals the bound, only tokens that follow the
path are allowed (its greedy longest-prefix tokenization, as the bound counts it). So a constrained output is
complete within ``max_tokens``. In the reasoning phase the reasoning end token is forced when the budget
left is the shortest completion of the grammar plus that token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
from llguidance import LLMatcher

from cortex.engine.structured.bitmask import allow_only, fill_bitmask
from cortex.engine.structured.closing import ClosingPath, Segment, closing_path
from cortex.errors import InvalidRequestError

if TYPE_CHECKING:
    from cortex.engine.structured.backend import GrammarBackend

RECHECK_EVERY = 8
RECHECK_MARGIN = 16


class GrammarMatcher:
    def __init__(
        self,
        matcher: LLMatcher,
        backend: GrammarBackend,
        *,
        max_tokens: int,
        reasoning_end_token_id: int | None,
    ) -> None:
        self._matcher = matcher
        self._backend = backend
        self._reasoning_end_token_id = reasoning_end_token_id
        self.phase: Literal["reasoning", "constrained", "done"] = (
            "reasoning" if reasoning_end_token_id is not None else "constrained"
        )
        self._shortest = self._bound = self._closing_path()
        self._guaranteed = self._shortest is not None  # else the greedy search loops: no closing logic
        needed = (self._shortest.num_tokens if self._shortest else 0) + (self.phase == "reasoning")
        if needed > max_tokens:
            raise InvalidRequestError(
                f"max_tokens ({max_tokens}) is too small for this output format: the shortest valid "
                f"output takes {needed} tokens",
                param="max_tokens",
            )
        self._tokens_since_bound = 0
        self._forced: list[Segment] | None = None  # the rest of the closing path being followed

    @property
    def is_terminated(self) -> bool:
        return self.phase == "done"

    def fill_bitmask(self, row: torch.Tensor, *, remaining: int) -> bool:
        """Write the tokens allowed next into ``row`` (int32 [words], CPU); False (row untouched) when
        the next token is free. ``remaining``: tokens the request may still generate, this one included."""
        if self.phase == "reasoning":
            if remaining > self._reasoning_reserve():
                return False
            assert self._reasoning_end_token_id is not None
            allow_only(row, [self._reasoning_end_token_id])
            return True
        if self._forced is None and self._guaranteed:
            if self._in_closing_zone(remaining) or self._tokens_since_bound >= RECHECK_EVERY:
                self._refresh_bound()
            if self._bound is not None and remaining <= self._bound.num_tokens:
                self._forced = list(self._bound.segments)
        if self._forced is not None:
            allow_only(row, self.closing_tokens())
        else:
            fill_bitmask(self._matcher, row)
        return True

    def fits(self, token_id: int, *, remaining: int) -> bool:
        """Whether the grammar can still be completed within the budget after ``token_id``."""
        if self.phase == "reasoning":
            return token_id == self._reasoning_end_token_id or remaining - 1 >= self._reasoning_reserve()
        if self._forced is not None or not self._guaranteed or not self._in_closing_zone(remaining):
            return True
        if not self._matcher.try_consume_tokens([token_id]):
            return False
        try:
            after = self._closing_path()
        finally:
            self._matcher.rollback(1)
        return after is not None and after.num_tokens <= remaining - 1

    def closing_tokens(self) -> list[int]:
        """Tokens that follow the closing path (the forced one, else the current bound's)."""
        path = (
            self._forced if self._forced is not None else list(self._bound.segments) if self._bound else None
        )
        if path is None:
            return []
        if not path:
            return [self._backend.eos_token_id]  # the path is followed; the grammar ends on EOS
        head = path[0]
        if isinstance(head, int):
            return [head]
        first = self._backend.greedy_tokens(head)[0]
        return [first] if self._allows(first) else [self._backend.byte_tokens[head[0]]]

    def accept(self, token_id: int) -> None:
        """Advance past the token the request keeps."""
        if self.phase == "done":
            return
        if self.phase == "reasoning":
            if token_id == self._reasoning_end_token_id:
                self.phase = "constrained"
            return
        if not self._matcher.consume_token(token_id):
            self.phase = "done"  # only a token the mask allowed can get here; stop rather than emit junk
            return
        self._tokens_since_bound += 1
        if self._forced is not None:
            self._forced = _follow(self._forced, token_id, self._backend.token_bytes(token_id))
        if self._matcher.is_stopped():
            self.phase = "done"

    def _reasoning_reserve(self) -> int:
        return (self._shortest.num_tokens if self._shortest else 0) + 1

    def _in_closing_zone(self, remaining: int) -> bool:
        bound = self._bound
        return bound is None or remaining <= 2 * bound.num_tokens + RECHECK_MARGIN

    def _refresh_bound(self) -> None:
        self._bound = self._closing_path()
        self._tokens_since_bound = 0

    def _closing_path(self) -> ClosingPath | None:
        return closing_path(self._matcher, self._backend)

    def _allows(self, token_id: int) -> bool:
        if self._matcher.try_consume_tokens([token_id]):
            self._matcher.rollback(1)
            return True
        return False


def _follow(path: list[Segment], token_id: int, data: bytes) -> list[Segment] | None:
    """The rest of ``path`` after ``token_id`` (with bytes ``data``); None if it left the path."""
    head = path[0] if path else None
    if isinstance(head, int):
        return path[1:] if token_id == head else None
    if head is None or not data or not head.startswith(data):
        return None
    rest = head[len(data) :]
    return ([rest] if rest else []) + path[1:]
