"""ModelRunner: a StepInput -> ForwardBatch tensors on the device -> model -> sampled tokens.

No policy: the scheduler decided what runs and the engine wrote it down as a
:class:`~cortex.engine.step_input.StepInput`; the runner only builds the step's tensors, restores state
slots from prefix-cache snapshots, calls the model with the cache tensors it owns, saves the snapshots
the step was cut for, and samples. It keeps one ``torch.Generator`` per request (seeded from
``SamplingParams.seed``, or randomly) alive across steps and preemptions, so a seeded request's draws
depend only on its own history, and forgets it when a step lists the request as finished. A
tensor-parallel rank runs the same runner over its shard of the model (``cortex.engine.parallel``):
every rank calls :meth:`forward` (state copies included), one samples.

A step reads nothing back from the device until its tokens are sampled: the runner builds every
array of the step on the host (the forward's metadata and the sampler's columns, including each
sampled row's uniform drawn from its CPU generator), copies them in one pinned transfer
(:class:`HostPacket`), runs the forward and the sampler on the device, and copies the sampled ids
(and logprobs) back once.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from itertools import accumulate

import torch

from cortex.engine.batch import ForwardBatch
from cortex.engine.cache.layer_cache import LayerCache
from cortex.engine.cache.pools import copy_state_rows
from cortex.engine.host_packet import HostPacket
from cortex.engine.sampling import SamplerOutput, SamplingInputs, SamplingRow, draw_uniforms, sample
from cortex.engine.step_input import SeqInput, StepInput
from cortex.engine.structured.logits import GrammarRow, keep_within_budget, mask_logits

Model = Callable[[ForwardBatch, Sequence[LayerCache]], torch.Tensor]


class ModelRunner:
    def __init__(
        self,
        model: Model,
        caches: Sequence[LayerCache],
        *,
        block_size: int,
        vocab_size: int,
        device: torch.device,
    ) -> None:
        self.model = model
        self.caches = caches
        self.block_size = block_size
        self.vocab_size = vocab_size
        self.device = device
        self._generators: dict[str, torch.Generator] = {}

    # ---- the step's arrays ------------------------------------------------------------------------

    def _put_forward(
        self, seqs: Sequence[SeqInput], packet: HostPacket
    ) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Add the forward's arrays (see ``ForwardBatch``) to ``packet``; returns the host query lengths
        and cached-token counts."""
        input_ids: list[int] = []
        positions: list[int] = []
        slot_mapping: list[int] = []
        logits_indices: list[int] = []
        state_slots: list[int] = []
        query_lens = tuple(seq.num_new_tokens for seq in seqs)
        num_cached = tuple(seq.num_cached_tokens for seq in seqs)
        cu_seqlens = [0, *accumulate(query_lens)]
        width = max(len(seq.block_table) for seq in seqs)
        block_tables: list[list[int]] = []
        for i, seq in enumerate(seqs):
            start, end = seq.num_cached_tokens, seq.num_cached_tokens + seq.num_new_tokens
            input_ids.extend(seq.token_ids)
            positions.extend(range(start, end))
            state_slots.append(seq.state_slot)
            table = seq.block_table
            slot_mapping.extend(
                table[p // self.block_size] * self.block_size + p % self.block_size for p in range(start, end)
            )
            block_tables.append([*table, *[-1] * (width - len(table))])
            if seq.sampling is not None:
                logits_indices.append(cu_seqlens[i + 1] - 1)
        packet.put("input_ids", input_ids, torch.int64)
        packet.put("positions", positions, torch.int64)
        packet.put("cu_seqlens_q", cu_seqlens, torch.int32)
        packet.put("num_cached_tokens", num_cached, torch.int32)
        packet.put("seq_lens", [c + q for c, q in zip(num_cached, query_lens, strict=True)], torch.int32)
        packet.put("slot_mapping", slot_mapping, torch.int64)
        packet.put("block_tables", block_tables, torch.int32)
        packet.put("state_slots", state_slots, torch.int64)
        packet.put("logits_indices", logits_indices, torch.int64)
        return query_lens, num_cached

    @staticmethod
    def _forward_batch(
        tensors: dict[str, torch.Tensor], query_lens: tuple[int, ...], num_cached: tuple[int, ...]
    ) -> ForwardBatch:
        return ForwardBatch(
            input_ids=tensors["input_ids"],
            positions=tensors["positions"],
            cu_seqlens_q=tensors["cu_seqlens_q"],
            num_cached_tokens=tensors["num_cached_tokens"],
            seq_lens=tensors["seq_lens"],
            slot_mapping=tensors["slot_mapping"],
            block_tables=tensors["block_tables"],
            state_slots=tensors["state_slots"],
            logits_indices=tensors["logits_indices"],
            query_lens_host=query_lens,
            num_cached_tokens_host=num_cached,
            max_query_len=max(query_lens),
            max_seq_len=max(c + q for c, q in zip(num_cached, query_lens, strict=True)),
        )

    # ---- one step ---------------------------------------------------------------------------------

    def forward(self, step: StepInput) -> torch.Tensor:
        """Run the model over the step, with its state copies; logits [num_sampling_seqs, vocab] float32."""
        return self._forward(step, None)[0]

    def _forward(
        self, step: StepInput, inputs: SamplingInputs | None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], bool]:
        """(logits of the sampling seqs, the step's device arrays, whether the sampler's columns
        ``inputs`` are among them). One packet, one transfer. State rows are restored from prefix-cache
        snapshots before the forward and saved after it."""
        packet = HostPacket()
        query_lens, num_cached = self._put_forward(step.seqs, packet)
        shipped = False
        if inputs is not None:
            try:
                inputs.put(packet)
                shipped = True
            except (OverflowError, RuntimeError, ValueError):  # a bad row: sample() isolates it
                shipped = False
        tensors = packet.to(self.device)
        copy_state_rows(self.caches, step.state_restores, device=self.device)
        logits = self.model(self._forward_batch(tensors, query_lens, num_cached), self.caches)
        copy_state_rows(self.caches, step.state_saves, device=self.device)
        return logits, tensors, shipped

    def execute(self, step: StepInput) -> SamplerOutput:
        """Run one step; returns one sampled token per sampling seq of ``step``, in order."""
        for request_id in step.finished_request_ids:
            self._generators.pop(request_id, None)
        sampling = [(seq, seq.sampling) for seq in step.seqs if seq.sampling is not None]
        rows = [
            SamplingRow(
                params=row.params,
                prompt_token_ids=row.prompt_token_ids,
                output_token_ids=row.output_token_ids,
                generator=self._generator(seq.request_id, row.params.seed),
            )
            for seq, row in sampling
        ]
        # the draws are taken before the forward (they ship with it); a step that fails gives them back,
        # so a request rerun after a failed step draws exactly what it would have drawn
        drawing = [row.generator for row in rows if not row.params.greedy]
        states = [generator.get_state() for generator in drawing]
        uniforms = draw_uniforms(rows)
        inputs = SamplingInputs.build(rows, self.vocab_size, uniforms)
        try:
            logits, tensors, shipped = self._forward(step, inputs)
        except BaseException:
            for generator, state in zip(drawing, states, strict=True):
                generator.set_state(state)
            raise
        if not rows:
            return SamplerOutput([], [])
        # structured outputs: the grammar masks before sampling and vets the sampled token after it
        grammars: list[GrammarRow] = [
            (i, row.grammar, row.remaining_tokens)
            for i, (_, row) in enumerate(sampling)
            if row.grammar is not None
        ]
        if grammars:
            mask_logits(logits, grammars)
        output = sample(logits, rows, uniforms=uniforms, shipped=(inputs, tensors) if shipped else None)
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
