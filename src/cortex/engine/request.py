"""Request: one generation request's tokens, status, KV block table and recurrent-state slot.

Plain Python (no tensors). The scheduler owns every mutation: it assigns blocks and the slot, advances
``num_computed_tokens`` after each step, appends sampled tokens and decides when the request finishes.
Invariant: ``num_computed_tokens <= num_tokens``, and the caches hold exactly the first
``num_computed_tokens`` tokens of prompt + output (zero after a preemption, or the length of the cached
prefix it resumed from). The first ``num_committed_blocks`` pages of ``block_table`` are full and
registered in the prefix cache (possibly shared); ``block_hashes`` are the chain hashes of the full
blocks of its tokens, computed as they are needed.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cortex.engine.cache.block_hash import BlockHash
from cortex.engine.outputs import FinishReason
from cortex.engine.sampling_params import SamplingParams

if TYPE_CHECKING:
    from cortex.engine.structured.matcher import GrammarMatcher


class RequestStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False)
class Request:
    """``params`` are resolved (no None left for the model's defaults); ``max_tokens`` is the effective
    limit (the request's, or what the context leaves when the request gave None). ``turn_boundary`` is a
    hint: the prompt position up to which later prompts are expected to repeat this one (for a chat, where
    the generation prompt starts); the prefix cache snapshots state at the block boundary at or before it.
    ``num_cached_tokens``: prompt tokens served from the prefix cache when the request was first admitted.
    ``output_snapshot_key``: the prefix cache's latest state snapshot among its generated tokens."""

    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    max_tokens: int
    eos_token_ids: frozenset[int]
    turn_boundary: int | None = None
    output_token_ids: list[int] = field(default_factory=list)
    status: RequestStatus = RequestStatus.WAITING
    block_table: list[int] = field(default_factory=list)
    state_slot: int | None = None
    num_computed_tokens: int = 0
    num_preemptions: int = 0
    num_cached_tokens: int = 0
    num_committed_blocks: int = 0
    block_hashes: list[BlockHash] = field(default_factory=list)
    output_snapshot_key: BlockHash | None = None
    finish_reason: FinishReason | None = None
    stop_reason: str | int | None = None
    grammar: GrammarMatcher | None = None  # the output constraint, advanced by the scheduler

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.output_token_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    def token_ids_between(self, start: int, end: int) -> list[int]:
        """``(prompt_token_ids + output_token_ids)[start:end]`` without copying the whole sequence."""
        num_prompt = len(self.prompt_token_ids)
        if end <= num_prompt:
            return self.prompt_token_ids[start:end]
        if start >= num_prompt:
            return self.output_token_ids[start - num_prompt : end - num_prompt]
        return self.prompt_token_ids[start:] + self.output_token_ids[: end - num_prompt]

    @property
    def is_finished(self) -> bool:
        return self.status is RequestStatus.FINISHED

    def check_stop(self, token_id: int, *, max_model_len: int) -> None:
        """Set ``finish_reason`` / ``stop_reason`` if ``token_id`` (just appended) ends the request."""
        if token_id in self.params.stop_token_ids:
            self.finish_reason, self.stop_reason = "stop", token_id
        elif not self.params.ignore_eos and token_id in self.eos_token_ids:
            self.finish_reason = "stop"
        elif self.grammar is not None and self.grammar.is_terminated:
            self.finish_reason = "stop"  # the constrained output is complete
        elif self.num_output_tokens >= self.max_tokens or self.num_tokens >= max_model_len:
            self.finish_reason = "length"
