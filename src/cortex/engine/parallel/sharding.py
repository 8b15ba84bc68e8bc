"""How a model splits over tensor-parallel ranks: the rank's shapes, and its slice of every tensor.

:func:`shard_config` turns the model's ``ModelConfig`` into the config of one rank (the model code
builds a rank's modules from it unchanged), and raises :class:`ShardingError` naming every dimension
that does not divide. :class:`RankShard` reads one rank's slice of each checkpoint tensor straight from
safetensors (``safe_open(...).get_slice``: only the rank's bytes are read from the memory map).

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

import dataclasses
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from cortex.engine.config import ModelConfig
from cortex.engine.errors import ShardingError, WeightsError


def _divides(world_size: int, value: int, name: str, what: str) -> str | None:
    if value % world_size:
        return f"{name}={value} ({what}) is not divisible by tensor_parallel_size={world_size}"
    return None


def sharding_problems(config: ModelConfig, world_size: int) -> list[str]:
    """Each dimension of ``config`` that cannot split over ``world_size`` ranks, as a sentence."""
    problems: list[str | None] = []
    if "full_attention" in config.layer_types:
        problems.append(
            _divides(world_size, config.num_attention_heads, "num_attention_heads", "attention query heads")
        )
        kv = config.num_kv_heads
        if kv >= world_size:
            problems.append(_divides(world_size, kv, "num_key_value_heads", "attention KV heads"))
        elif world_size % kv:
            problems.append(
                f"num_key_value_heads={kv} (attention KV heads) is fewer than tensor_parallel_size="
                f"{world_size} and does not divide it, so the heads cannot be replicated evenly"
            )
    if config.has_linear_attention:
        problems.append(
            _divides(
                world_size, config.linear_num_key_heads, "linear_num_key_heads", "Gated DeltaNet key heads"
            )
        )
        problems.append(
            _divides(
                world_size,
                config.linear_num_value_heads,
                "linear_num_value_heads",
                "Gated DeltaNet value heads",
            )
        )
    moe = config.moe_layers or (False,) * config.num_hidden_layers
    if not all(moe):
        problems.append(
            _divides(world_size, config.intermediate_size, "intermediate_size", "dense MLP width")
        )
    if any(moe):
        problems.append(
            _divides(world_size, config.moe_intermediate_size, "moe_intermediate_size", "expert width")
        )
        problems.append(
            _divides(
                world_size,
                config.shared_expert_intermediate_size,
                "shared_expert_intermediate_size",
                "shared expert width",
            )
        )
    return [p for p in problems if p is not None]


def shard_config(config: ModelConfig, world_size: int) -> ModelConfig:
    """The config of one of ``world_size`` ranks; raises ShardingError naming what does not divide."""
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ShardingError(f"tensor_parallel_size must be a positive integer, got {world_size!r}")
    if world_size == 1:
        return config
    problems = sharding_problems(config, world_size)
    if problems:
        raise ShardingError(
            f"{config.model_type} cannot be split over {world_size} ranks: " + "; ".join(problems)
        )
    return dataclasses.replace(
        config,
        vocab_size=-(-config.vocab_size // world_size),
        num_attention_heads=config.num_attention_heads // world_size,
        num_kv_heads=max(1, config.num_kv_heads // world_size),
        linear_num_key_heads=config.linear_num_key_heads // world_size,
        linear_num_value_heads=config.linear_num_value_heads // world_size,
        intermediate_size=config.intermediate_size // world_size,
        moe_intermediate_size=config.moe_intermediate_size // world_size,
        shared_expert_intermediate_size=config.shared_expert_intermediate_size // world_size,
    )


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
