"""How a model's tensors split over tensor-parallel ranks: each rank's slice of every checkpoint tensor.

:class:`RankShard` reads one rank's slice of each checkpoint tensor straight from safetensors
(``safe_open(...).get_slice``: only the rank's bytes are read from the memory map), shaped for the
rank's config (``shard_config.py``, which also says what must divide).

The split, Megatron-style (column-parallel in, row-parallel out, one all-reduce per block):

- full attention: query heads split (``q_proj`` rows, with each head's ``[query | gate]`` together);
  KV heads split when there are at least as many as ranks, else replicated (rank ``r`` holds KV head
  ``r * num_kv_heads // world_size``, the one its query heads read); ``o_proj`` columns split.
- Gated DeltaNet: key heads and value heads split together, so each rank keeps whole GVA groups: the
  q, k and v row blocks of ``in_proj_qkv`` and of the conv weight, ``in_proj_z/b/a``, ``A_log``,
  ``dt_bias``; each rank's state slots hold only its value heads; ``out_proj`` columns split.
  Qwen3-Next's grouped ``in_proj_qkvz`` / ``in_proj_ba`` are grouped by key head, so a rank's part is
  one contiguous row block.
- dense MLP and the shared expert: the intermediate dimension split (``gate/up`` rows, ``down`` cols).
- MoE experts: every rank holds every expert with its intermediate dimension split. For the Qwen3.5 /
  3.6 MoE shapes (256 experts, top-8, expert width 512: 256 per rank at TP=2, 128 at TP=4) this keeps
  the work of every rank equal at any batch size (each token's 8 experts run on every rank, at a
  fraction of the width), needs no token dispatch, and costs the same single all-reduce per layer as
  the dense MLP; splitting the experts instead would leave the step waiting for the rank that drew the
  most of each token's experts. The router is replicated, so every rank routes identically.
- embeddings and LM head: the vocabulary split in ``ceil(vocab / world_size)`` rows per rank (the last
  rank zero-padded); a tied LM head shares the embedding's shard.
- norms, the router and the shared-expert gate: replicated.

A row-parallel bias (``o_proj`` with ``attention_bias``) is kept on rank 0 and zero elsewhere, so the
all-reduce adds it once.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from cortex.engine.config import ModelConfig
from cortex.engine.errors import ShardingError, WeightsError
from cortex.engine.parallel.shard_config import shard_config


def _shape(tensor: Any) -> tuple[int, ...]:
    # a safetensors PySafeSlice (get_shape) or a torch.Tensor
    return tuple(tensor.get_shape()) if hasattr(tensor, "get_shape") else tuple(tensor.shape)


def _take(tensor: Any, dim: int, ranges: Sequence[tuple[int, int]]) -> torch.Tensor:
    """Rows ``ranges`` of ``tensor`` along ``dim``, concatenated; reads only those bytes."""
    pieces = [tensor[(slice(None),) * dim + (slice(start, stop),)] for start, stop in ranges]
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=dim)


@dataclass(frozen=True)
class RankShard:
    """Rank ``rank`` of ``world_size``: its config and its slice of each checkpoint tensor.

    ``model`` is the whole model's config; :attr:`config` the rank's (see :func:`shard_config`).
    Satisfies ``cortex.engine.models.weights.WeightShard``.
    """

    model: ModelConfig
    rank: int
    world_size: int

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world_size:
            raise ShardingError(f"rank {self.rank} is outside [0, {self.world_size})")

    @functools.cached_property
    def config(self) -> ModelConfig:
        return shard_config(self.model, self.world_size)

    @property
    def vocab_range(self) -> tuple[int, int]:
        """The [start, stop) token ids whose embedding rows (and logits) this rank holds."""
        per_rank = self.config.vocab_size
        start = self.rank * per_rank
        return start, max(start, min(self.model.vocab_size, start + per_rank))

    def read(self, name: str, tensor: Any) -> torch.Tensor:
        """This rank's part of checkpoint tensor ``name`` (cortex's name, e.g. ``model.layers.0...``)."""
        for suffixes, rule in self._rules():
            if name.endswith(suffixes):
                return rule(tensor)
        replicated: torch.Tensor = tensor[:]
        return replicated

    # ---- the split of each kind of tensor -----------------------------------------------------------

    def _rules(self) -> list[tuple[tuple[str, ...], Callable[[Any], torch.Tensor]]]:
        return [
            (("embed_tokens.weight", "lm_head.weight"), self._vocab),
            (("self_attn.k_proj.weight", "self_attn.k_proj.bias"), self._kv),
            (("self_attn.v_proj.weight", "self_attn.v_proj.bias"), self._kv),
            (("self_attn.o_proj.bias",), self._row_bias),
            (("linear_attn.in_proj_qkv.weight", "linear_attn.conv1d.weight"), self._gdn_qkv),
            (("mlp.experts.gate_up_proj",), self._expert_gate_up),
            (("o_proj.weight", "out_proj.weight", "down_proj.weight", "mlp.experts.down_proj"), self._row),
            (
                (
                    "q_proj.weight",
                    "q_proj.bias",
                    "in_proj_z.weight",
                    "in_proj_b.weight",
                    "in_proj_a.weight",
                    "in_proj_qkvz.weight",
                    "in_proj_ba.weight",
                    "linear_attn.A_log",
                    "linear_attn.dt_bias",
                    "gate_proj.weight",
                    "up_proj.weight",
                ),
                self._column,
            ),
        ]

    def _equal_part(self, size: int, *, what: str) -> tuple[int, int]:
        if size % self.world_size:
            raise WeightsError(
                f"{what} has {size} rows, not divisible by tensor_parallel_size={self.world_size}"
            )
        part = size // self.world_size
        return self.rank * part, (self.rank + 1) * part

    def _column(self, tensor: Any) -> torch.Tensor:
        return _take(tensor, 0, [self._equal_part(_shape(tensor)[0], what="a column-parallel tensor")])

    def _row(self, tensor: Any) -> torch.Tensor:
        dim = len(_shape(tensor)) - 1
        return _take(tensor, dim, [self._equal_part(_shape(tensor)[dim], what="a row-parallel tensor")])

    def _row_bias(self, tensor: Any) -> torch.Tensor:
        full = tensor[:]
        return full if self.rank == 0 else torch.zeros_like(full)

    def _kv(self, tensor: Any) -> torch.Tensor:
        kv, world = self.model.num_kv_heads, self.world_size
        if kv >= world:
            return self._column(tensor)
        head = self.rank * kv // world
        head_dim = self.model.head_dim
        return _take(tensor, 0, [(head * head_dim, (head + 1) * head_dim)])

    def _gdn_qkv(self, tensor: Any) -> torch.Tensor:
        # rows [q (HK*dk) | k (HK*dk) | v (HV*dv)]: the rank's heads of each block
        key_dim, value_dim = self.model.linear_key_dim, self.model.linear_value_dim
        ranges = []
        for offset, size in ((0, key_dim), (key_dim, key_dim), (2 * key_dim, value_dim)):
            start, stop = self._equal_part(size, what="a Gated DeltaNet q/k/v block")
            ranges.append((offset + start, offset + stop))
        return _take(tensor, 0, ranges)

    def _expert_gate_up(self, tensor: Any) -> torch.Tensor:
        # [num_experts, 2 * I, H]: gate rows then up rows, each split
        width = self.model.moe_intermediate_size
        start, stop = self._equal_part(width, what="an expert's gate/up block")
        return _take(tensor, 1, [(start, stop), (width + start, width + stop)])

    def _vocab(self, tensor: Any) -> torch.Tensor:
        start, stop = self.vocab_range
        rows = _take(tensor, 0, [(start, stop)])
        missing = self.config.vocab_size - rows.shape[0]
        if missing:
            rows = torch.cat([rows, rows.new_zeros(missing, *rows.shape[1:])])
        return rows
