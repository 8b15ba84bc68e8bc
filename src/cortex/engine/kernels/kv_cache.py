"""KV-cache store: write each new token's key and value into its paged-cache slot."""

from __future__ import annotations

import torch


def store_kv_cache_ref(
    k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, slot_mapping: torch.Tensor
) -> None:
    # k, v: [num_tokens, num_kv_heads, head_dim]; k_cache, v_cache: [num_blocks, block_size, num_kv_heads,
    # head_dim]; slot_mapping: [num_tokens] int64 (block_id * block_size + offset; negative = skip).
    # Writes the caches in place.
    valid = slot_mapping >= 0
    slots = slot_mapping[valid]
    k_cache.view(-1, *k_cache.shape[2:])[slots] = k[valid].to(k_cache.dtype)
    v_cache.view(-1, *v_cache.shape[2:])[slots] = v[valid].to(v_cache.dtype)


# Dispatch points (see kernels/__init__.py): the references serve every device until a GPU kernel lands.
store_kv_cache = store_kv_cache_ref
