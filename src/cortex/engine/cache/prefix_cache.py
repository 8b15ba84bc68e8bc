"""PrefixCache: finds the longest reusable prefix of a request, and decides where state snapshots go.

Pure bookkeeping (no tensors) over the :class:`BlockAllocator` (full KV blocks by hash) and, for hybrid
models, the :class:`SnapshotPool` (Gated DeltaNet state by the hash of a prefix's last block). The
scheduler calls it; the runner only executes the state copies the scheduler puts in a step.

- **Where a request resumes** (:meth:`match`): the longest run of leading full blocks that are all
  cached and, when the model has linear-attention layers, whose last block has a state snapshot, so
  that the KV pages can be shared and the state slot initialised from the snapshot. At least one token
  is always left to compute (it yields the logits), so a hit ends at or before ``num_tokens - 1``.
- **Where snapshots are taken** (:meth:`next_snapshot`): a step leaves a sequence's state at the end of
  what it computed, so the scheduler ends a prefill chunk at each snapshot position. Positions are block
  boundaries of the prompt: every ``snapshot_interval_blocks`` blocks (absolute, so requests sharing a
  prefix snapshot at the same places), the last one at or before the request's ``turn_boundary`` hint
  (where the next turn of a chat will diverge), and the last one before the prompt's last token (so an
  identical prompt hits). A position whose snapshot exists or is being saved is skipped.
- **The end of a generation**: the next turn of a chat usually repeats this one's prompt *and* output
  (ChatML always; the Qwen3.6 template within a tool loop), so every step over generated tokens that
  ends at a block boundary (a decode step every ``block_size`` tokens; no cut needed) saves a *rolling*
  snapshot that replaces the request's previous one (:meth:`commit_snapshot`): a request holds at most
  one, and when it finishes that one marks the last block boundary of its prompt + output.
- **Which snapshots are kept longer** (the pool's two tiers): those at the turn boundary, the prompt's
  last boundary and a finished generation's end; interval and rolling snapshots are evicted first.
- **What becomes cached** (:meth:`cache_computed_blocks`): after each step, the request's newly
  completed full blocks are registered under their hashes (prompt and generated tokens alike).

A partial last block is never shared: it is recomputed by whoever needs it, into its own page.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from cortex.engine.cache.block_allocator import BlockAllocator
from cortex.engine.cache.block_hash import BlockHash, extend_block_hashes
from cortex.engine.cache.snapshot_pool import SnapshotPool
from cortex.engine.request import Request
from cortex.engine.stats import PrefixCacheStats

logger = logging.getLogger(__name__)

NOT_EFFECTIVE_LOG_INTERVAL_S = 300.0


@dataclass(frozen=True, slots=True)
class CachedPrefix:
    """What :meth:`PrefixCache.match` found. ``num_tokens`` tokens can be skipped: ``block_ids`` hold
    their KV and ``snapshot_row`` (hybrid models) their recurrent state. ``num_matched_tokens`` is how far
    the cached KV blocks alone reached (beyond ``num_tokens`` when no snapshot covered the rest)."""

    num_tokens: int = 0
    block_ids: tuple[int, ...] = ()
    snapshot_row: int | None = None
    num_matched_tokens: int = 0


NO_PREFIX = CachedPrefix()


class PrefixCache:
    """``snapshots`` is None for models without linear-attention layers (a KV prefix is enough there)."""

    def __init__(
        self,
        block_allocator: BlockAllocator,
        snapshots: SnapshotPool | None,
        *,
        block_size: int,
        snapshot_interval_blocks: int,
        bytes_per_snapshot: int = 0,
    ) -> None:
        self.block_allocator = block_allocator
        self.snapshots = snapshots
        self.block_size = block_size
        self.bytes_per_snapshot = bytes_per_snapshot
        self.snapshot_interval_blocks = snapshot_interval_blocks
        self._num_queries = 0
        self._num_hits = 0
        self._num_query_tokens = 0
        self._num_hit_tokens = 0
        self._num_snapshot_miss_tokens = 0
        self._last_warning_s: float | None = None

    def _hashes(self, request: Request, num_tokens: int) -> list[BlockHash]:
        """The request's block hashes covering at least its first ``num_tokens`` tokens' full blocks."""
        extend_block_hashes(
            request.block_hashes,
            request.token_ids_between,
            num_tokens=num_tokens,
            block_size=self.block_size,
        )
        return request.block_hashes

    # ---- lookup ---------------------------------------------------------------------------------

    def match(self, request: Request) -> CachedPrefix:
        """The longest usable cached prefix of ``request``'s tokens (see the module docstring). Does not
        change the cache; the result is valid until the allocator or the pool next changes."""
        num_blocks = (request.num_tokens - 1) // self.block_size
        hashes = self._hashes(request, num_blocks * self.block_size)
        block_ids: list[int] = []
        best, best_row = 0, None
        for block_hash in hashes[:num_blocks]:
            block_id = self.block_allocator.lookup(block_hash)
            if block_id is None:
                break
            block_ids.append(block_id)
            if self.snapshots is None:
                best = len(block_ids)
            elif (row := self.snapshots.lookup(block_hash)) is not None:
                best, best_row = len(block_ids), row
        return CachedPrefix(
            num_tokens=best * self.block_size,
            block_ids=tuple(block_ids[:best]),
            snapshot_row=best_row,
            num_matched_tokens=len(block_ids) * self.block_size,
        )

    def num_free_blocks_in(self, prefix: CachedPrefix) -> int:
        """Blocks of ``prefix`` that are free now (cached, unowned): acquiring them takes them off the free
        list, so a caller checking room for new blocks must count them too."""
        return sum(1 for block_id in prefix.block_ids if self.block_allocator.ref_count(block_id) == 0)

    def acquire(self, request: Request, prefix: CachedPrefix) -> None:
        """``request`` is admitted with ``prefix``: own its blocks, pin its snapshot (until
        :meth:`release_restore`), and count the lookup."""
        for block_id in prefix.block_ids:
            self.block_allocator.share(block_id)
        if prefix.snapshot_row is not None:
            assert self.snapshots is not None
            self.snapshots.pin(prefix.snapshot_row)
        request.num_committed_blocks = len(prefix.block_ids)
        self._num_queries += 1
        self._num_query_tokens += request.num_tokens
        if prefix.num_tokens:
            self._num_hits += 1
            self._num_hit_tokens += prefix.num_tokens
        missed = prefix.num_matched_tokens - prefix.num_tokens
        if missed:
            self._num_snapshot_miss_tokens += missed
            self._warn_not_effective()

    def release_restore(self, row: int) -> None:
        """The step restoring from snapshot ``row`` ran (or was discarded)."""
        assert self.snapshots is not None
        self.snapshots.unpin(row)

    def _warn_not_effective(self) -> None:
        now_s = time.monotonic()
        if self._last_warning_s is not None and now_s - self._last_warning_s < NOT_EFFECTIVE_LOG_INTERVAL_S:
            return
        self._last_warning_s = now_s
        logger.warning(
            "prefix cache: %d prompt tokens so far matched cached KV blocks but were recomputed because no "
            "state snapshot covered them (hit rate %.1f%%): prompts diverge between snapshots; a smaller "
            "snapshot_interval_blocks (now %d) or a turn_boundary hint places snapshots where they diverge",
            self._num_snapshot_miss_tokens,
            100 * self.stats().hit_rate,
            self.snapshot_interval_blocks,
        )

    # ---- snapshots ------------------------------------------------------------------------------

    def _anchors(self, request: Request) -> set[int]:
        """The prompt's block boundaries that its next turn is expected to come back to: the last one
        before its last token and the last one at or before its turn boundary."""
        size = self.block_size
        anchors = {(request.num_prompt_tokens - 1) // size * size}
        if request.turn_boundary is not None:
            anchors.add(request.turn_boundary // size * size)
        return anchors

    def next_snapshot(self, request: Request, *, start: int, end: int) -> int | None:
        """The first snapshot position in ``(start, end]`` that ``request`` should save, or None: a prompt
        position (the scheduler cuts the chunk there), or ``end`` itself when the step ends at a block
        boundary at or past the prompt's end (the rolling snapshot of the generation)."""
        if self.snapshots is None or self.snapshots.num_snapshots == 0 or end <= start:
            return None
        size = self.block_size
        last = (request.num_prompt_tokens - 1) // size * size
        interval = self.snapshot_interval_blocks * size
        first = (start // interval + 1) * interval  # the first interval position after ``start``
        positions = self._anchors(request) | set(range(first, min(end, last) + 1, interval))
        if end >= request.num_prompt_tokens and end % size == 0:
            positions.add(end)
        candidates = sorted(p for p in positions if start < p <= end and p > 0)
        if not candidates:
            return None
        hashes = self._hashes(request, candidates[-1])
        return next((p for p in candidates if not self.snapshots.has(hashes[p // size - 1])), None)

    def reserve_snapshot(self, request: Request, position: int) -> tuple[BlockHash, int] | None:
        """(key, row) for saving ``request``'s state at ``position`` after the step that ends there, or
        None when the pool has no row to give (every row pinned or pending)."""
        assert self.snapshots is not None
        key = self._hashes(request, position)[position // self.block_size - 1]
        row = self.snapshots.reserve(key, kept=position in self._anchors(request))
        return None if row is None else (key, row)

    def commit_snapshot(self, request: Request, key: BlockHash, *, position: int) -> None:
        """The step that saved ``request``'s state at ``position`` under ``key`` ran. A snapshot among its
        generated tokens replaces the request's previous one (unless a request resumed from that)."""
        assert self.snapshots is not None
        self.snapshots.commit(key)
        if position >= request.num_prompt_tokens and position not in self._anchors(request):
            if request.output_snapshot_key is not None:
                self.snapshots.drop(request.output_snapshot_key, only_spare=True)
            request.output_snapshot_key = key

    def finish(self, request: Request, *, aborted: bool) -> None:
        """``request`` ended: the snapshot at the end of what it generated is kept (the next turn of its
        conversation may repeat all of it), unless it was aborted."""
        if self.snapshots is not None and request.output_snapshot_key is not None and not aborted:
            self.snapshots.keep(request.output_snapshot_key)

    def cancel_snapshot(self, key: BlockHash) -> None:
        assert self.snapshots is not None
        self.snapshots.cancel(key)

    # ---- after a step ---------------------------------------------------------------------------

    def cache_computed_blocks(self, request: Request) -> None:
        """Register the full blocks ``request`` has computed since the last call under their hashes."""
        num_full = request.num_computed_tokens // self.block_size
        if num_full <= request.num_committed_blocks:
            return
        hashes = self._hashes(request, num_full * self.block_size)
        for index in range(request.num_committed_blocks, num_full):
            self.block_allocator.cache_block(request.block_table[index], hashes[index])
        request.num_committed_blocks = num_full

    def stats(self) -> PrefixCacheStats:
        return PrefixCacheStats(
            num_queries=self._num_queries,
            num_hits=self._num_hits,
            num_query_tokens=self._num_query_tokens,
            num_hit_tokens=self._num_hit_tokens,
            num_snapshot_miss_tokens=self._num_snapshot_miss_tokens,
            num_snapshots_used=self.snapshots.num_used if self.snapshots else 0,
            num_snapshots_total=self.snapshots.num_snapshots if self.snapshots else 0,
            num_cached_blocks=self.block_allocator.num_cached,
            bytes_per_snapshot=self.bytes_per_snapshot,
        )
