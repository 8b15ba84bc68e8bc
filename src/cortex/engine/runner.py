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
(and logprobs) back once. After :meth:`capture_decode_graphs`, pure-decode steps replay a CUDA graph
(:class:`DecodeGraphs`) instead of launching the forward's kernels one by one.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from itertools import accumulate

import torch

from cortex.engine.batch import ForwardBatch
from cortex.engine.cache.layer_cache import LayerCache
from cortex.engine.cache.pools import copy_state_rows
from cortex.engine.cuda_graphs import DecodeGraphs
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
        self._graphs: DecodeGraphs | None = None
        self._padding_slot = 0
        self._graph_num_blocks = 0

    # ---- CUDA graphs ------------------------------------------------------------------------------

    def capture_decode_graphs(self, sizes: Sequence[int], *, max_model_len: int, padding_slot: int) -> None:
        """Capture a decode graph per batch size (CUDA, Triton kernels). ``padding_slot``: a state slot
        no request owns, for the padding rows."""
        self._padding_slot = padding_slot
        self._graph_num_blocks = -(-max_model_len // self.block_size)

        def padding_packet(packet: HostPacket, size: int) -> None:
            self._put_forward((), packet, pad_to=size)

        def batch_of(tensors: dict[str, torch.Tensor], size: int) -> ForwardBatch:
            return self._forward_batch(tensors, (1,) * size, (1,) * size, max_seq_len=max_model_len)

        self._graphs = DecodeGraphs(
            self.model,
            self.caches,
            sizes=sizes,
            vocab_size=self.vocab_size,
            device=self.device,
            padding_packet=padding_packet,
            batch_of=batch_of,
        )

    @property
    def decode_graphs(self) -> DecodeGraphs | None:
        return self._graphs

    def _graph_size(self, step: StepInput) -> int | None:
        """The decode graph this step can replay, if any: every seq decodes one token and samples."""
        if self._graphs is None:
            return None
        if not all(
            seq.num_new_tokens == 1 and seq.num_cached_tokens > 0 and seq.sampling is not None
            for seq in step.seqs
        ):
            return None
        return self._graphs.size_for(len(step.seqs))

    # ---- the step's arrays ------------------------------------------------------------------------

    def _put_forward(
        self, seqs: Sequence[SeqInput], packet: HostPacket, *, pad_to: int | None = None
    ) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Add the forward's arrays (see ``ForwardBatch``) to ``packet``; returns the host query lengths
        and cached-token counts.

        ``pad_to``: lay the arrays out for a decode graph of that many rows (block tables as wide as
        ``max_model_len`` needs); rows past ``seqs`` are padding (see ``cuda_graphs.py``).
        """
        input_ids: list[int] = []
        positions: list[int] = []
        slot_mapping: list[int] = []
        logits_indices: list[int] = []
        state_slots: list[int] = []
        query_lens = tuple(seq.num_new_tokens for seq in seqs)
        num_cached = tuple(seq.num_cached_tokens for seq in seqs)
        cu_seqlens = [0, *accumulate(query_lens)]
        width = self._graph_num_blocks if pad_to is not None else max(len(seq.block_table) for seq in seqs)
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
        num_padding = 0 if pad_to is None else pad_to - len(seqs)
        # a padding row has no context at all (seq_lens 0), so attention reads none of its (absent) blocks
        seq_lens = [c + q for c, q in zip(num_cached, query_lens, strict=True)] + [0] * num_padding
        if num_padding:
            input_ids += [0] * num_padding
            positions += [0] * num_padding
            slot_mapping += [-1] * num_padding  # no KV written
            state_slots += [self._padding_slot] * num_padding
            block_tables += [[-1] * width] * num_padding
            logits_indices += range(len(seqs), len(seqs) + num_padding)
            cu_seqlens += range(cu_seqlens[-1] + 1, cu_seqlens[-1] + 1 + num_padding)
            query_lens += (1,) * num_padding
            num_cached += (0,) * num_padding
        packet.put("input_ids", input_ids, torch.int64)
        packet.put("positions", positions, torch.int64)
        packet.put("cu_seqlens_q", cu_seqlens, torch.int32)
        packet.put("num_cached_tokens", num_cached, torch.int32)
        packet.put("seq_lens", seq_lens, torch.int32)
        packet.put("slot_mapping", slot_mapping, torch.int64)
        packet.put("block_tables", block_tables, torch.int32)
        packet.put("state_slots", state_slots, torch.int64)
        packet.put("logits_indices", logits_indices, torch.int64)
        return query_lens, num_cached

    @staticmethod
    def _forward_batch(
        tensors: dict[str, torch.Tensor],
        query_lens: tuple[int, ...],
        num_cached: tuple[int, ...],
        *,
        max_seq_len: int | None = None,
    ) -> ForwardBatch:
        # max_seq_len: the bound a graph is captured with (default: this batch's longest context)
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
            max_seq_len=max_seq_len or max(c + q for c, q in zip(num_cached, query_lens, strict=True)),
        )

    # ---- one step ---------------------------------------------------------------------------------

    def forward(self, step: StepInput) -> torch.Tensor:
        """Run the model over the step, with its state copies; logits [num_sampling_seqs, vocab] float32."""
        return self._forward(step, None)[0]

    def _forward(
        self, step: StepInput, inputs: SamplingInputs | None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], bool]:
        """(logits of the sampling seqs, the step's device arrays, whether the sampler's columns
        ``inputs`` are among them). One packet, one transfer: through a decode graph when one fits the
        step. State rows are restored from prefix-cache snapshots before the forward and saved after it."""
        graph_size = self._graph_size(step)
        for pad_to in dict.fromkeys((graph_size, None)):
            packet = HostPacket()
            query_lens, num_cached = self._put_forward(step.seqs, packet, pad_to=pad_to)
            shipped = False
            if inputs is not None:
                try:
                    inputs.put(packet)
                    shipped = True
                except (OverflowError, RuntimeError, ValueError):  # a bad row: sample() isolates it
                    shipped = False
            graphs = self._graphs
            if pad_to is not None and graphs is not None:
                if packet.nbytes > graphs.buffer.numel():
                    continue  # more sampler columns than the graphs' buffer holds: run eagerly
                tensors = packet.to(self.device, into=graphs.buffer)
                copy_state_rows(self.caches, step.state_restores, device=self.device)
                logits = graphs.replay(pad_to)[: len(step.seqs)]
            else:
                tensors = packet.to(self.device)
                copy_state_rows(self.caches, step.state_restores, device=self.device)
                logits = self.model(self._forward_batch(tensors, query_lens, num_cached), self.caches)
            copy_state_rows(self.caches, step.state_saves, device=self.device)
            return logits, tensors, shipped
        raise AssertionError("the eager pass always returns")

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
