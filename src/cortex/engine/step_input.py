"""StepInput: everything a model runner executes for one step, as plain host data.

The engine builds it from the scheduler's :class:`~cortex.engine.scheduler.ScheduledBatch` (under its
lock) with :func:`build_step_input`; a runner turns it into device tensors, runs the forward and
samples. It holds no ``Request`` objects and no tensors, only tuples, ints, strings and frozen
``SamplingParams``, so it pickles as it is: a tensor-parallel engine sends the same ``StepInput`` to
every rank process (``cortex.engine.parallel``) and every rank executes the same step. Whatever a
runner must do in a step (new tokens, cache bookkeeping, state copies, finished requests to forget)
belongs here, so that it happens on every rank. The one exception is a structured-output request's
``GrammarMatcher``, a live object of the engine's process that the scheduler advances: it is carried
by reference, so a tensor-parallel engine (whose sampler runs in rank 0's process) refuses such
requests.

Invariant: the ``StepInput`` of one step is built after the previous step's outputs were applied, and
describes the caches exactly as the scheduler left them (``num_cached_tokens`` tokens of each sequence
are in its blocks and state slot).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cortex.engine.request import Request
from cortex.engine.sampling_params import SamplingParams
from cortex.engine.scheduler import ScheduledBatch

if TYPE_CHECKING:
    from cortex.engine.structured.matcher import GrammarMatcher


@dataclass(frozen=True, slots=True)
class SamplingInput:
    """What sampling one token for a sequence needs. ``params`` are resolved.

    The token histories are filled only when a penalty reads them (repetition penalty: prompt and
    output; presence and frequency penalties: output); otherwise they are empty, so a step does not
    copy whole sequences it will not look at.
    """

    params: SamplingParams
    prompt_token_ids: tuple[int, ...] = ()
    output_token_ids: tuple[int, ...] = ()
    grammar: GrammarMatcher | None = None  # the output constraint (by reference; see the module doc)
    remaining_tokens: int = 0  # tokens the request may still generate, this step's included


@dataclass(frozen=True, slots=True)
class SeqInput:
    """One sequence's share of a step: ``token_ids`` are its new tokens after ``num_cached_tokens``."""

    request_id: str
    token_ids: tuple[int, ...]
    num_cached_tokens: int
    block_table: tuple[int, ...]  # KV blocks holding positions [0, num_cached_tokens + len(token_ids))
    state_slot: int
    sampling: SamplingInput | None  # set when this step computes the last known token: sample the next

    @property
    def num_new_tokens(self) -> int:
        return len(self.token_ids)


@dataclass(frozen=True, slots=True)
class StepInput:
    seqs: tuple[SeqInput, ...]
    # requests that finished (or were aborted) since the last step: the runner forgets their
    # per-request sampling state (generators) before running this one
    finished_request_ids: tuple[str, ...] = ()
    # prefix-cache state copies, (source row, destination row) of every linear-attention layer's state,
    # before / after the forward (ScheduledBatch.state_restores / state_saves)
    state_restores: tuple[tuple[int, int], ...] = ()
    state_saves: tuple[tuple[int, int], ...] = ()

    @property
    def num_tokens(self) -> int:
        return sum(seq.num_new_tokens for seq in self.seqs)


def _sampling_input(request: Request) -> SamplingInput:
    params = request.params
    repetition = params.repetition_penalty is not None and params.repetition_penalty != 1.0
    presence_or_frequency = bool(params.presence_penalty or params.frequency_penalty)
    return SamplingInput(
        params=params,
        prompt_token_ids=tuple(request.prompt_token_ids) if repetition else (),
        output_token_ids=tuple(request.output_token_ids) if repetition or presence_or_frequency else (),
        grammar=request.grammar,
        remaining_tokens=request.max_tokens - request.num_output_tokens,
    )


def build_step_input(batch: ScheduledBatch, finished_request_ids: Iterable[str] = ()) -> StepInput:
    """The step ``batch`` describes, copied out of its requests (call under the scheduler's lock)."""
    seqs = []
    for seq in batch.seqs:
        request = seq.request
        assert request.state_slot is not None, "a scheduled request holds a state slot"
        start = seq.num_cached_tokens
        seqs.append(
            SeqInput(
                request_id=request.request_id,
                token_ids=tuple(request.token_ids_between(start, start + seq.num_new_tokens)),
                num_cached_tokens=start,
                block_table=tuple(request.block_table),
                state_slot=request.state_slot,
                sampling=_sampling_input(request) if seq.samples else None,
            )
        )
    return StepInput(
        seqs=tuple(seqs),
        finished_request_ids=tuple(finished_request_ids),
        state_restores=batch.state_restores,
        state_saves=batch.state_saves,
    )
