"""The per-layer cache tensors a model forward reads and writes, and the spec that sizes them.

The runtime allocates the tensors (sized from a memory budget) and owns which block or slot belongs
to which request; the model only indexes them through ``ForwardBatch.slot_mapping``,
``block_tables`` and ``state_slots``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch


class AttentionCache(NamedTuple):
    # k, v: [num_blocks, block_size, num_kv_heads, head_dim], model dtype
    k: torch.Tensor
    v: torch.Tensor


class LinearStateCache(NamedTuple):
    # conv: [num_slots, conv_dim, conv_kernel - 1], model dtype: the last inputs of the causal conv1d
    conv: torch.Tensor
    # ssm: [num_slots, num_v_heads, head_k_dim, head_v_dim], float32 (or bfloat16, see
    # EngineConfig.ssm_state_dtype): the gated delta rule state
    ssm: torch.Tensor


LayerCache = AttentionCache | LinearStateCache


@dataclass(frozen=True, slots=True)
class AttentionCacheSpec:
    num_kv_heads: int
    head_dim: int


@dataclass(frozen=True, slots=True)
class LinearStateSpec:
    conv_dim: int
    conv_kernel: int
    num_v_heads: int
    head_k_dim: int
    head_v_dim: int


LayerCacheSpec = AttentionCacheSpec | LinearStateSpec
