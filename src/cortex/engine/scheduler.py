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
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from cortex.engine.cache.block_allocator import BlockAllocator
from cortex.engine.cache.slot_allocator import SlotAllocator
from cortex.engine.outputs import FinishReason
from cortex.engine.request import Request, RequestStatus


@dataclass(frozen=True, slots=True)
class ScheduledSeq:
    """One request's share of a step: ``num_new_tokens`` tokens after its ``num_cached_tokens``."""

    request: Request
    num_cached_tokens: int
    num_new_tokens: int

    @property
    def samples(self) -> bool:
        """True when this step computes the request's last known token, so a new token is sampled."""
        return self.num_cached_tokens + self.num_new_tokens == self.request.num_tokens

    @property
    def is_decode(self) -> bool:
        return self.num_new_tokens == 1 and self.request.num_output_tokens > 0


@dataclass(frozen=True, slots=True)
class ScheduledBatch:
    seqs: tuple[ScheduledSeq, ...]
    preempted: tuple[Request, ...] = ()

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
    ) -> None:
        self.block_allocator = block_allocator
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

    def _blocks_needed(self, request: Request, num_tokens: int) -> int:
        return max(0, -(-num_tokens // self.block_size) - len(request.block_table))

    def _release(self, request: Request) -> None:
        self.block_allocator.free(request.block_table)
        request.block_table = []
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
        recomputed from its first token. For the requests of a failed step, whose caches it may have
        half-written."""
        self._preempt(request)

    def schedule(self, only: Collection[Request] | None = None) -> ScheduledBatch:
        budget = self.max_num_batched_tokens
        seqs: list[ScheduledSeq] = []
        preempted: list[Request] = []
        evicted: list[Request] = []  # running requests outside ``only``, preempted to make room for it
        scheduled: set[Request] = set()
        runnable = self.running if only is None else [r for r in self.running if r in only]
        decodes = [r for r in runnable if r.num_tokens - r.num_computed_tokens == 1]
        prefills = [r for r in runnable if r.num_tokens - r.num_computed_tokens > 1]
        for request in decodes + prefills:
            if budget == 0:
                break
            if request.status is not RequestStatus.RUNNING:
                continue  # preempted earlier in this loop
            num_new = min(request.num_tokens - request.num_computed_tokens, budget, self.prefill_chunk_size)
            needed = self._blocks_needed(request, request.num_computed_tokens + num_new)
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
            seqs.append(ScheduledSeq(request, request.num_computed_tokens, num_new))
            scheduled.add(request)
            budget -= num_new
        while not preempted and budget > 0:
            newcomer = next((r for r in self.waiting if only is None or r in only), None)
            if newcomer is None:
                break
            num_new = min(newcomer.num_tokens, budget, self.prefill_chunk_size)
            needed = self._blocks_needed(newcomer, num_new)
            while only is not None and not self._can_admit(needed):
                outsider = next((r for r in reversed(self.running) if r not in only), None)
                if outsider is None:
                    break
                self._preempt(outsider)
                evicted.append(outsider)
            if not self._can_admit(needed):
                break
            self.waiting.remove(newcomer)
            newcomer.block_table = self.block_allocator.allocate(needed)
            newcomer.state_slot = self.slot_allocator.allocate()
            newcomer.status = RequestStatus.RUNNING
            self.running.append(newcomer)
            seqs.append(ScheduledSeq(newcomer, 0, num_new))
            budget -= num_new
        return ScheduledBatch(tuple(seqs), tuple(preempted + evicted))

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
        for seq in batch.seqs:
            token_id = next(sampled) if seq.samples else None
            request = seq.request
            if request.status is not RequestStatus.RUNNING:
                continue
            request.num_computed_tokens += seq.num_new_tokens
            if token_id is None:
                continue
            request.output_token_ids.append(token_id)
            if request.grammar is not None:
                request.grammar.accept(token_id)
            request.check_stop(token_id, max_model_len=self.max_model_len)
            if request.finish_reason is not None:
                self.finish(request, request.finish_reason, request.stop_reason)
            updated.append(request)
        return updated

    def finish(self, request: Request, reason: FinishReason, stop_reason: str | int | None = None) -> None:
        """End ``request`` now: free its blocks and slot and forget it. A finished request is left alone."""
        if request.status is RequestStatus.FINISHED:
            return
        if request.status is RequestStatus.RUNNING:
            self.running.remove(request)
        else:
            self.waiting.remove(request)
        self._release(request)
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
