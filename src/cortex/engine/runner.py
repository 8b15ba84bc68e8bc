"""ModelRunner: a StepInput -> ForwardBatch tensors on the device -> model -> sampled tokens.

No policy: the scheduler decided what runs and the engine wrote it down as a
:class:`~cortex.engine.step_input.StepInput`; the runner only builds the step's tensors, restores state
slots from prefix-cache snapshots, calls the model with the cache tensors it owns, saves the snapshots
the step was cut for, and samples. It keeps one ``torch.Generator`` per request (seeded from
``SamplingParams.seed``, or randomly) alive across steps and preemptions, so a seeded request's draws
depend only on its own history, and forgets it when a step lists the request as finished. A
tensor-parallel rank runs the same runner over its shard of the model (``cortex.engine.parallel``):
every rank calls :meth:`forward` (state copies included), one samples.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from itertools import accumulate

import torch

from cortex.engine.batch import ForwardBatch
from cortex.engine.cache.layer_cache import LayerCache
from cortex.engine.cache.pools import copy_state_rows
from cortex.engine.sampling import SamplerOutput, SamplingRow, sample
from cortex.engine.step_input import StepInput
from cortex.engine.structured.logits import GrammarRow, keep_within_budget, mask_logits

Model = Callable[[ForwardBatch, Sequence[LayerCache]], torch.Tensor]


class ModelRunner:
    def __init__(
        self, model: Model, caches: Sequence[LayerCache], *, block_size: int, device: torch.device
    ) -> None:
        self.model = model
        self.caches = caches
        self.block_size = block_size
        self.device = device
        self._generators: dict[str, torch.Generator] = {}

    def prepare(self, step: StepInput) -> ForwardBatch:
        """Flatten the step's new tokens and metadata into device tensors (see ``ForwardBatch``)."""
        input_ids: list[int] = []
        positions: list[int] = []
        slot_mapping: list[int] = []
        logits_indices: list[int] = []
        state_slots: list[int] = []
        query_lens = tuple(seq.num_new_tokens for seq in step.seqs)
        num_cached = tuple(seq.num_cached_tokens for seq in step.seqs)
        cu_seqlens = [0, *accumulate(query_lens)]
        max_num_blocks = max(len(seq.block_table) for seq in step.seqs)
        block_tables: list[list[int]] = []
        for i, seq in enumerate(step.seqs):
            start, end = seq.num_cached_tokens, seq.num_cached_tokens + seq.num_new_tokens
            input_ids.extend(seq.token_ids)
            positions.extend(range(start, end))
            state_slots.append(seq.state_slot)
            table = seq.block_table
            slot_mapping.extend(
                table[p // self.block_size] * self.block_size + p % self.block_size for p in range(start, end)
            )
            block_tables.append([*table, *[-1] * (max_num_blocks - len(table))])
            if seq.sampling is not None:
                logits_indices.append(cu_seqlens[i + 1] - 1)

        def tensor(values: Sequence[int] | Sequence[Sequence[int]], dtype: torch.dtype) -> torch.Tensor:
            return torch.tensor(values, dtype=dtype).to(self.device, non_blocking=True)

        return ForwardBatch(
            input_ids=tensor(input_ids, torch.int64),
            positions=tensor(positions, torch.int64),
            cu_seqlens_q=tensor(cu_seqlens, torch.int32),
            num_cached_tokens=tensor(num_cached, torch.int32),
            seq_lens=tensor([c + q for c, q in zip(num_cached, query_lens, strict=True)], torch.int32),
            slot_mapping=tensor(slot_mapping, torch.int64),
            block_tables=tensor(block_tables, torch.int32),
            state_slots=tensor(state_slots, torch.int64),
            logits_indices=tensor(logits_indices, torch.int64),
            query_lens_host=query_lens,
            num_cached_tokens_host=num_cached,
        )

    def forward(self, step: StepInput) -> torch.Tensor:
        """Run the model over the step, with its state copies; logits [num_sampling_seqs, vocab] float32."""
        forward_batch = self.prepare(step)
        copy_state_rows(self.caches, step.state_restores, device=self.device)
        logits = self.model(forward_batch, self.caches)
        copy_state_rows(self.caches, step.state_saves, device=self.device)
        return logits

    def execute(self, step: StepInput) -> SamplerOutput:
        """Run one step; returns one sampled token per sampling seq of ``step``, in order."""
        for request_id in step.finished_request_ids:
            self._generators.pop(request_id, None)
        logits = self.forward(step)
        rows = [
            SamplingRow(
                params=seq.sampling.params,
                prompt_token_ids=seq.sampling.prompt_token_ids,
                output_token_ids=seq.sampling.output_token_ids,
                generator=self._generator(seq.request_id, seq.sampling.params.seed),
            )
            for seq in step.seqs
            if seq.sampling is not None
        ]
        if not rows:
            return SamplerOutput([], [])
        # structured outputs: the grammar masks before sampling and vets the sampled token after it
        sampling = [seq.sampling for seq in step.seqs if seq.sampling is not None]
        grammars: list[GrammarRow] = [
            (i, row.grammar, row.remaining_tokens)
            for i, row in enumerate(sampling)
            if row.grammar is not None
        ]
        if grammars:
            mask_logits(logits, grammars)
        output = sample(logits, rows)
        if grammars:
            keep_within_budget(logits, output, grammars)
        return output

    def _generator(self, request_id: str, seed: int | None) -> torch.Generator:
        generator = self._generators.get(request_id)
        if generator is None:
            generator = torch.Generator()  # CPU: the sampler draws its uniforms there on any device
            generator.manual_seed(seed if seed is not None else random.getrandbits(63))
            self._generators[request_id] = generator
        return generator
