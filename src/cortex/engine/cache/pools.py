"""The cache tensors: a KV pool (k/v pages per full-attention layer) and a recurrent-state pool.

``allocate_caches`` turns a :class:`CachePlan` into one :data:`LayerCache` per layer, in layer order, as
the model's forward expects. Tensors are zero-initialised once; which page or slot belongs to which
request is the scheduler's bookkeeping (``BlockAllocator`` / ``SlotAllocator`` / ``SnapshotPool``). The
state tensors have ``num_slots`` rows for running requests, then ``num_snapshots`` rows for prefix-cache
snapshots, then any spare rows; ``copy_state_rows`` copies whole rows between them.
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
    specs: Sequence[LayerCacheSpec],
    plan: CachePlan,
    *,
    dtype: torch.dtype,
    device: torch.device,
    ssm_dtype: torch.dtype = torch.float32,
    spare_slots: int = 0,
) -> list[LayerCache]:
    """``spare_slots`` extra state rows after the snapshots, owned by no request (the padding rows of a
    CUDA-graph decode step write there)."""
    caches: list[LayerCache] = []
    num_rows = plan.num_slots + plan.num_snapshots + spare_slots
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
                    # conv: [num_rows, conv_dim, conv_kernel - 1]; num_rows = slots + snapshots + spare
                    conv=torch.zeros(
                        (num_rows, spec.conv_dim, spec.conv_kernel - 1), dtype=dtype, device=device
                    ),
                    # ssm: [num_rows, num_v_heads, head_k_dim, head_v_dim], float32 unless asked otherwise
                    ssm=torch.zeros(
                        (num_rows, spec.num_v_heads, spec.head_k_dim, spec.head_v_dim),
                        dtype=ssm_dtype,
                        device=device,
                    ),
                )
            )
    return caches


def copy_state_rows(
    caches: Sequence[LayerCache], copies: Sequence[tuple[int, int]], *, device: torch.device
) -> None:
    """For each (src, dst) row pair, copy every linear-attention layer's conv and ssm state ``src -> dst``.

    Device tensor copies only (the indices travel host -> device; nothing is read back), so a CUDA step
    stays free of syncs, and each tensor-parallel rank replays the same pairs on its own heads' state.
    Sources and destinations are disjoint (snapshot rows -> slots, or slots -> snapshot rows).
    """
    if not copies:
        return
    src = torch.tensor([s for s, _ in copies], dtype=torch.int64).to(device, non_blocking=True)
    dst = torch.tensor([d for _, d in copies], dtype=torch.int64).to(device, non_blocking=True)
    for cache in caches:
        if isinstance(cache, LinearStateCache):
            cache.conv.index_copy_(0, dst, cache.conv.index_select(0, src))
            cache.ssm.index_copy_(0, dst, cache.ssm.index_select(0, src))
