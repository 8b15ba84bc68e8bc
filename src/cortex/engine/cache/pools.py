"""The cache tensors: a KV pool (k/v pages per full-attention layer) and a recurrent-state pool.

``allocate_caches`` turns a :class:`CachePlan` into one :data:`LayerCache` per layer, in layer order, as
the model's forward expects. Tensors are zero-initialised once; which page or slot belongs to which
request is the scheduler's bookkeeping (``BlockAllocator`` / ``SlotAllocator``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from cortex.engine.cache.cache_plan import CachePlan
from cortex.engine.cache.layer_cache import (
    AttentionCache,
    AttentionCacheSpec,
    LayerCache,
    LayerCacheSpec,
    LinearStateCache,
)


def allocate_caches(
    specs: Sequence[LayerCacheSpec], plan: CachePlan, *, dtype: torch.dtype, device: torch.device
) -> list[LayerCache]:
    caches: list[LayerCache] = []
    for spec in specs:
        if isinstance(spec, AttentionCacheSpec):
            # k, v: [num_blocks, block_size, num_kv_heads, head_dim]
            shape = (plan.num_blocks, plan.block_size, spec.num_kv_heads, spec.head_dim)
            caches.append(
                AttentionCache(
                    k=torch.zeros(shape, dtype=dtype, device=device),
                    v=torch.zeros(shape, dtype=dtype, device=device),
                )
            )
        else:
            caches.append(
                LinearStateCache(
                    # conv: [num_slots, conv_dim, conv_kernel - 1]
                    conv=torch.zeros(
                        (plan.num_slots, spec.conv_dim, spec.conv_kernel - 1), dtype=dtype, device=device
                    ),
                    # ssm: [num_slots, num_v_heads, head_k_dim, head_v_dim], always float32
                    ssm=torch.zeros(
                        (plan.num_slots, spec.num_v_heads, spec.head_k_dim, spec.head_v_dim),
                        dtype=torch.float32,
                        device=device,
                    ),
                )
            )
    return caches
