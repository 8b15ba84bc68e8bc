"""A minimal driver for a cortex model forward: sequences through prefill chunks and decodes over a
naive block allocation. Stands in for the runtime's scheduler and runner in model tests."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from cortex.engine.batch import ForwardBatch
from cortex.engine.cache.layer_cache import AttentionCache, AttentionCacheSpec, LayerCache, LinearStateCache
from cortex.engine.config import ModelConfig


@dataclass
class SeqState:
    slot: int
    blocks: list[int] = field(default_factory=list)
    num_cached: int = 0


class NaiveRunner:
    def __init__(
        self,
        model: torch.nn.Module,
        config: ModelConfig,
        *,
        block_size: int = 8,
        num_blocks: int = 256,
        num_slots: int = 8,
        dtype: torch.dtype = torch.float32,
        device: str = "cpu",
    ) -> None:
        self.model = model
        self.device = torch.device(device)
        self.block_size = block_size
        self.free_blocks = list(range(num_blocks))
        self.free_slots = list(range(num_slots))
        self.caches: list[LayerCache] = []
        for spec in config.layer_cache_specs():
            if isinstance(spec, AttentionCacheSpec):
                shape = (num_blocks, block_size, spec.num_kv_heads, spec.head_dim)
                # garbage, not zeros: the model must only read what it wrote
                self.caches.append(
                    AttentionCache(
                        torch.randn(shape, dtype=dtype, device=device),
                        torch.randn(shape, dtype=dtype, device=device),
                    )
                )
            else:
                conv = torch.randn(num_slots, spec.conv_dim, spec.conv_kernel - 1, dtype=dtype, device=device)
                ssm = torch.randn(
                    num_slots, spec.num_v_heads, spec.head_k_dim, spec.head_v_dim, device=device
                )
                self.caches.append(LinearStateCache(conv, ssm))
        self.seqs: dict[int, SeqState] = {}

    def add(self, seq_id: int) -> None:
        self.seqs[seq_id] = SeqState(slot=self.free_slots.pop())

    def step(
        self, work: Sequence[tuple[int, Sequence[int]]], *, all_logits: bool = False
    ) -> list[torch.Tensor]:
        """Run one forward over (seq_id, new token ids) chunks; per sequence, the logits of its last
        token ([vocab]) or, with ``all_logits``, of all its new tokens ([n, vocab])."""
        ids, positions, slots, cu, logits_idx = [], [], [], [0], []
        cached, query_lens, tables, state_slots = [], [], [], []
        for seq_id, tokens in work:
            seq = self.seqs[seq_id]
            total = seq.num_cached + len(tokens)
            while len(seq.blocks) * self.block_size < total:
                seq.blocks.append(self.free_blocks.pop(0))
            for j, token in enumerate(tokens):
                pos = seq.num_cached + j
                ids.append(token)
                positions.append(pos)
                slots.append(seq.blocks[pos // self.block_size] * self.block_size + pos % self.block_size)
            start = cu[-1]
            cu.append(start + len(tokens))
            logits_idx.extend(range(start, cu[-1]) if all_logits else [cu[-1] - 1])
            cached.append(seq.num_cached)
            query_lens.append(len(tokens))
            tables.append(seq.blocks)
            state_slots.append(seq.slot)
        width = max(len(t) for t in tables)
        batch = ForwardBatch(
            input_ids=torch.tensor(ids, dtype=torch.int64, device=self.device),
            positions=torch.tensor(positions, dtype=torch.int64, device=self.device),
            cu_seqlens_q=torch.tensor(cu, dtype=torch.int32, device=self.device),
            num_cached_tokens=torch.tensor(cached, dtype=torch.int32, device=self.device),
            seq_lens=torch.tensor(
                [c + n for c, n in zip(cached, query_lens, strict=True)],
                dtype=torch.int32,
                device=self.device,
            ),
            slot_mapping=torch.tensor(slots, dtype=torch.int64, device=self.device),
            block_tables=torch.tensor(
                [t + [-1] * (width - len(t)) for t in tables], dtype=torch.int32, device=self.device
            ),
            state_slots=torch.tensor(state_slots, dtype=torch.int64, device=self.device),
            logits_indices=torch.tensor(logits_idx, dtype=torch.int64, device=self.device),
            query_lens_host=tuple(query_lens),
            num_cached_tokens_host=tuple(cached),
            max_query_len=max(query_lens),
            max_seq_len=max(c + n for c, n in zip(cached, query_lens, strict=True)),
        )
        with torch.inference_mode():
            logits = self.model(batch, self.caches)
        for seq_id, tokens in work:
            self.seqs[seq_id].num_cached += len(tokens)
        if not all_logits:
            return list(logits)
        out, start = [], 0
        for n in query_lens:
            out.append(logits[start : start + n])
            start += n
        return out

    def prefill_logits(
        self, prompt: Sequence[int], *, chunk_sizes: Sequence[int] | None = None
    ) -> torch.Tensor:
        """All-token logits [len(prompt), vocab] of a fresh sequence, prefilled in the given chunks."""
        seq_id = len(self.seqs)
        self.add(seq_id)
        chunks = _split(prompt, chunk_sizes)
        return torch.cat([self.step([(seq_id, chunk)], all_logits=True)[0] for chunk in chunks])

    def greedy(
        self, prompts: Sequence[Sequence[int]], max_new_tokens: int, *, chunk_size: int | None = None
    ) -> list[list[int]]:
        """Greedy-decode every prompt together: prefills (in chunks of ``chunk_size``) batched with
        each other, then batched 1-token decodes."""
        base = len(self.seqs)
        seq_ids = [base + i for i in range(len(prompts))]
        for seq_id in seq_ids:
            self.add(seq_id)
        pending = {s: list(p) for s, p in zip(seq_ids, prompts, strict=True)}
        outputs: dict[int, list[int]] = {s: [] for s in seq_ids}
        while pending:
            work = [(s, toks[: chunk_size or len(toks)]) for s, toks in pending.items()]
            last = self.step(work)
            for (s, chunk), logits in zip(work, last, strict=True):
                pending[s] = pending[s][len(chunk) :]
                if not pending[s]:
                    del pending[s]
                    outputs[s].append(int(logits.argmax()))
        for _ in range(max_new_tokens - 1):
            work = [(s, [outputs[s][-1]]) for s in seq_ids]
            for (s, _tok), logits in zip(work, self.step(work), strict=True):
                outputs[s].append(int(logits.argmax()))
        return [outputs[s] for s in seq_ids]


def _split(tokens: Sequence[int], chunk_sizes: Sequence[int] | None) -> list[list[int]]:
    if not chunk_sizes:
        return [list(tokens)]
    chunks, start = [], 0
    for size in chunk_sizes:
        chunks.append(list(tokens[start : start + size]))
        start += size
    if start < len(tokens):
        chunks.append(list(tokens[start:]))
    return chunks
