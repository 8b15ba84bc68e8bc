"""Scheduler: continuous batching with chunked prefill and recompute preemption. No tensors.

Each step, ``schedule()`` picks work within ``max_num_batched_tokens``:

1. running requests first: their decodes (1 token each, oldest first), then the next chunks of
   unfinished prefills (at most ``prefill_chunk_size`` tokens each, oldest first), so a long prompt
   never stalls the generations already running. If the KV blocks for a piece of work are not free, the
   newest running request not yet in this step is preempted (its blocks and slot freed, its progress
   dropped, and it goes back to the front of the waiting queue), repeatedly, until the work fits or the
   request itself was the one preempted;
2. then, if nothing was preempted this step, waiting requests in arrival order while a state slot, the
   blocks for their first chunk, the token budget and ``max_num_seqs`` allow.

``schedule(only=...)`` restricts a step to some requests (the engine's quarantine of a failed step's
requests, see ``quarantine.py``): the others wait, and running ones keep their blocks unless a waiting
request of ``only`` needs the room, in which case they are preempted, newest first.

A resumed request recomputes its prompt and the tokens it had generated (as one long prefill, chunked
like any other) and then samples its next token, so its output is the one it would have had without the
preemption. ``update()`` applies a step's sampled tokens; ``finish()`` ends a request at once and
returns its blocks and slot (abort, stop strings).

With a :class:`~cortex.engine.cache.prefix_cache.PrefixCache`, a request being admitted (first time or
resumed) starts after the longest cached prefix it can reuse: it shares that prefix's KV blocks and its
step restores its state slot from the prefix's snapshot (``ScheduledBatch.state_restores``, copied
before the forward). A prefill chunk is cut short to end at the next snapshot position, and the step
saves the slot there (``state_saves``, copied after the forward), so a snapshot costs at most one
extra step per position; a decode step that ends at a block boundary saves the generation's rolling
snapshot without any cut. Blocks and snapshots become visible to lookups only in ``update()``, once the
step that computed them ran; ``discard()`` forgets a step whose forward failed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from cortex.engine.cache.block_allocator import BlockAllocator
from cortex.engine.cache.block_hash import BlockHash
from cortex.engine.cache.prefix_cache import NO_PREFIX, CachedPrefix, PrefixCache
from cortex.engine.cache.slot_allocator import SlotAllocator
from cortex.engine.outputs import FinishReason
from cortex.engine.request import Request, RequestStatus


@dataclass(frozen=True, slots=True)
class ScheduledSeq:
    """One request's share of a step: ``num_new_tokens`` tokens after its ``num_cached_tokens``;
    ``save_key``: the prefix the step's state snapshot (in ``ScheduledBatch.state_saves``) is for."""

    request: Request
    num_cached_tokens: int
    num_new_tokens: int
    save_key: BlockHash | None = None

    @property
    def samples(self) -> bool:
        """True when this step computes the request's last known token, so a new token is sampled."""
        return self.num_cached_tokens + self.num_new_tokens == self.request.num_tokens

    @property
    def is_decode(self) -> bool:
        return self.num_new_tokens == 1 and self.request.num_output_tokens > 0


@dataclass(frozen=True, slots=True)
class ScheduledBatch:
    """``state_restores`` / ``state_saves``: (source row, destination row) copies of every linear-attention
    layer's state, made before / after the forward (rows index the state tensors: request slots, then
    snapshot rows)."""

    seqs: tuple[ScheduledSeq, ...]
    preempted: tuple[Request, ...] = ()
    state_restores: tuple[tuple[int, int], ...] = ()
    state_saves: tuple[tuple[int, int], ...] = ()

    @property
    def is_empty(self) -> bool:
        return not self.seqs

    @property
    def num_tokens(self) -> int:
        return sum(seq.num_new_tokens for seq in self.seqs)

    @property
    def num_decode_tokens(self) -> int:
        return sum(1 for seq in self.seqs if seq.is_decode)

    @property
    def num_prefill_tokens(self) -> int:
        return self.num_tokens - self.num_decode_tokens


class Scheduler:
    def __init__(
        self,
        *,
        block_allocator: BlockAllocator,
        slot_allocator: SlotAllocator,
        block_size: int,
        max_num_seqs: int,
        max_num_batched_tokens: int,
        prefill_chunk_size: int,
        max_model_len: int,
        prefix_cache: PrefixCache | None = None,
    ) -> None:
        self.block_allocator = block_allocator
        self.prefix_cache = prefix_cache
        self.slot_allocator = slot_allocator
        self.block_size = block_size
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.prefill_chunk_size = prefill_chunk_size
        self.max_model_len = max_model_len
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []  # in admission order: the last one is preempted first
        self._requests: dict[str, Request] = {}

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def num_running(self) -> int:
        return len(self.running)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def add(self, request: Request) -> None:
        if request.request_id in self._requests:
            raise ValueError(f"request id {request.request_id!r} is already in use")
        self._requests[request.request_id] = request
        self.waiting.append(request)

    def _blocks_needed(self, num_blocks_held: int, num_tokens: int) -> int:
        return max(0, -(-num_tokens // self.block_size) - num_blocks_held)

    def _chunk(self, request: Request, start: int, budget: int) -> tuple[int, int | None]:
        """(tokens to compute from ``start`` this step, the snapshot position the chunk ends at or None)."""
        num_new = min(request.num_tokens - start, budget, self.prefill_chunk_size)
        if self.prefix_cache is not None:
            position = self.prefix_cache.next_snapshot(request, start=start, end=start + num_new)
            if position is not None:
                return position - start, position
        return num_new, None

    def _reserve_save(
        self, request: Request, position: int | None, saves: list[tuple[int, int]]
    ) -> BlockHash | None:
        """Reserve a snapshot row for ``request``'s state at ``position`` (appended to ``saves``)."""
        if position is None:
            return None
        assert self.prefix_cache is not None
        assert request.state_slot is not None
        reserved = self.prefix_cache.reserve_snapshot(request, position)
        if reserved is None:
            return None
        key, row = reserved
        saves.append((request.state_slot, row))
        return key

    def _release(self, request: Request) -> None:
        # the table's tail first, so the prefix cache evicts a sequence's end before its shared head
        self.block_allocator.free(reversed(request.block_table))
        request.block_table = []
        request.num_committed_blocks = 0
        if request.state_slot is not None:
            self.slot_allocator.free(request.state_slot)
            request.state_slot = None
        request.num_computed_tokens = 0

    def _preempt(self, request: Request) -> None:
        self.running.remove(request)
        self._release(request)
        request.status = RequestStatus.WAITING
        request.num_preemptions += 1
        self.waiting.appendleft(request)

    def requeue(self, request: Request) -> None:
        """Drop a running request's progress, as a preemption does: its blocks and slot go back and it is
        recomputed from its first token (or from a cached prefix: only completed steps' blocks and
        snapshots are ever cached). For the requests of a failed step, whose caches it may have
        half-written."""
        self._preempt(request)

    def schedule(self, only: Collection[Request] | None = None) -> ScheduledBatch:
        budget = self.max_num_batched_tokens
        seqs: list[ScheduledSeq] = []
        preempted: list[Request] = []
        evicted: list[Request] = []  # running requests outside ``only``, preempted to make room for it
        restores: list[tuple[int, int]] = []
        saves: list[tuple[int, int]] = []
        scheduled: set[Request] = set()
        runnable = self.running if only is None else [r for r in self.running if r in only]
        decodes = [r for r in runnable if r.num_tokens - r.num_computed_tokens == 1]
        prefills = [r for r in runnable if r.num_tokens - r.num_computed_tokens > 1]
        for request in decodes + prefills:
            if budget == 0:
                break
            if request.status is not RequestStatus.RUNNING:
                continue  # preempted earlier in this loop
            num_new, position = self._chunk(request, request.num_computed_tokens, budget)
            needed = self._blocks_needed(len(request.block_table), request.num_computed_tokens + num_new)
            while not self.block_allocator.can_allocate(needed):
                # the newest request not in this step yet (``request`` itself at the latest)
                victim = next(r for r in reversed(self.running) if r not in scheduled)
                self._preempt(victim)
                preempted.append(victim)
                if victim is request:
                    break
            if request.status is not RequestStatus.RUNNING:
                continue
            request.block_table.extend(self.block_allocator.allocate(needed))
            save_key = self._reserve_save(request, position, saves)
            seqs.append(ScheduledSeq(request, request.num_computed_tokens, num_new, save_key))
            scheduled.add(request)
            budget -= num_new
        while not preempted and budget > 0:
            newcomer = next((r for r in self.waiting if only is None or r in only), None)
            if newcomer is None:
                break
            cache = self.prefix_cache
            prefix = cache.match(newcomer) if cache is not None else NO_PREFIX
            start = prefix.num_tokens
            num_new, position = self._chunk(newcomer, start, budget)
            needed = self._blocks_needed(len(prefix.block_ids), start + num_new)
            while only is not None and not self._room_for(prefix, needed):
                outsider = next((r for r in reversed(self.running) if r not in only), None)
                if outsider is None:
                    break
                self._preempt(outsider)
                evicted.append(outsider)
            if not self._room_for(prefix, needed):
                break
            self.waiting.remove(newcomer)
            if cache is not None:
                cache.acquire(newcomer, prefix)
            newcomer.block_table = [*prefix.block_ids, *self.block_allocator.allocate(needed)]
            newcomer.state_slot = self.slot_allocator.allocate()
            newcomer.num_computed_tokens = start
            if newcomer.num_preemptions == 0:
                newcomer.num_cached_tokens = start
            if prefix.snapshot_row is not None:
                restores.append((prefix.snapshot_row, newcomer.state_slot))
            newcomer.status = RequestStatus.RUNNING
            self.running.append(newcomer)
            save_key = self._reserve_save(newcomer, position, saves)
            seqs.append(ScheduledSeq(newcomer, start, num_new, save_key))
            budget -= num_new
        return ScheduledBatch(tuple(seqs), tuple(preempted + evicted), tuple(restores), tuple(saves))

    def _room_for(self, prefix: CachedPrefix, num_new_blocks: int) -> bool:
        """Whether a request reusing ``prefix`` and needing ``num_new_blocks`` more can be admitted now: the
        prefix's blocks that are free (cached, unowned) leave the free list when it takes them."""
        cache = self.prefix_cache
        reused_free = cache.num_free_blocks_in(prefix) if cache is not None else 0
        return self._can_admit(num_new_blocks + reused_free)

    def _can_admit(self, num_blocks: int) -> bool:
        return (
            len(self.running) < self.max_num_seqs
            and self.slot_allocator.num_free > 0
            and self.block_allocator.can_allocate(num_blocks)
        )

    def update(self, batch: ScheduledBatch, sampled_token_ids: Sequence[int]) -> list[Request]:
        """Record a finished step: advance each request's computed tokens and append sampled tokens.

        ``sampled_token_ids`` has one id per sampling seq of ``batch``, in order. Requests aborted since
        ``schedule()`` are skipped. Returns the requests that got a new token; those
        that finished (stop token, eos, length) have already released their blocks and slot.
        """
        sampled = iter(sampled_token_ids)
        updated: list[Request] = []
        cache = self.prefix_cache
        for seq in batch.seqs:
            token_id = next(sampled) if seq.samples else None
            request = seq.request
            if request.status is not RequestStatus.RUNNING:
                if cache is not None and seq.save_key is not None:
                    cache.cancel_snapshot(seq.save_key)
                continue
            request.num_computed_tokens += seq.num_new_tokens
            if cache is not None:
                cache.cache_computed_blocks(request)
                if seq.save_key is not None:
                    position = seq.num_cached_tokens + seq.num_new_tokens
                    cache.commit_snapshot(request, seq.save_key, position=position)
            if token_id is None:
                continue
            request.output_token_ids.append(token_id)
            if request.grammar is not None:
                request.grammar.accept(token_id)
            request.check_stop(token_id, max_model_len=self.max_model_len)
            if request.finish_reason is not None:
                self.finish(request, request.finish_reason, request.stop_reason)
            updated.append(request)
        self._release_restores(batch)
        return updated

    def _release_restores(self, batch: ScheduledBatch) -> None:
        if self.prefix_cache is not None:
            for row, _ in batch.state_restores:
                self.prefix_cache.release_restore(row)

    def discard(self, batch: ScheduledBatch) -> None:
        """Forget a scheduled step whose forward failed: its snapshots are not saved, its restores end.
        Its requests keep their state as scheduled; the caller aborts them."""
        if self.prefix_cache is not None:
            for seq in batch.seqs:
                if seq.save_key is not None:
                    self.prefix_cache.cancel_snapshot(seq.save_key)
        self._release_restores(batch)

    def finish(self, request: Request, reason: FinishReason, stop_reason: str | int | None = None) -> None:
        """End ``request`` now: free its blocks and slot and forget it. A finished request is left alone."""
        if request.status is RequestStatus.FINISHED:
            return
        if request.status is RequestStatus.RUNNING:
            self.running.remove(request)
        else:
            self.waiting.remove(request)
        self._release(request)
        if self.prefix_cache is not None:
            self.prefix_cache.finish(request, aborted=reason == "abort")
        request.status = RequestStatus.FINISHED
        request.finish_reason = reason
        request.stop_reason = stop_reason
        del self._requests[request.request_id]

    def abort(self, request_ids: Iterable[str]) -> list[Request]:
        """Finish the named requests with reason "abort"; unknown or finished ids are ignored."""
        aborted = []
        for request_id in request_ids:
            request = self._requests.get(request_id)
            if request is not None:
                self.finish(request, "abort")
                aborted.append(request)
        return aborted
