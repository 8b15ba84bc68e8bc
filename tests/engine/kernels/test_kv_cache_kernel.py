"""The KV-cache store kernel against its reference: random slots (some skipped), bf16 and fp32.

A store is a copy, so the tolerance is exact equality in every dtype.
"""

from __future__ import annotations

import pytest
import torch

from cortex.engine.kernels.kv_cache import store_kv_cache

NUM_BLOCKS, BLOCK, KV_HEADS, DIM = 6, 4, 2, 32


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_store_matches_reference(device, dtype):
    gen = torch.Generator().manual_seed(0)
    num_tokens = 13
    slots = torch.randperm(NUM_BLOCKS * BLOCK, generator=gen)[:num_tokens]
    slots[[2, 7]] = -1  # padding rows: skipped
    k = torch.randn(num_tokens, KV_HEADS, DIM, generator=gen).to(dtype)
    v = torch.randn(num_tokens, KV_HEADS, DIM, generator=gen).to(dtype)
    caches = {}
    for kernels in ("ref", "triton"):
        k_cache = torch.randn(NUM_BLOCKS, BLOCK, KV_HEADS, DIM, generator=torch.Generator().manual_seed(1))
        v_cache = torch.randn(NUM_BLOCKS, BLOCK, KV_HEADS, DIM, generator=torch.Generator().manual_seed(2))
        k_cache, v_cache = k_cache.to(dtype).to(device), v_cache.to(dtype).to(device)
        store_kv_cache(k.to(device), v.to(device), k_cache, v_cache, slots.to(device), kernels=kernels)
        caches[kernels] = (k_cache.cpu(), v_cache.cpu())
    assert torch.equal(caches["triton"][0], caches["ref"][0])
    assert torch.equal(caches["triton"][1], caches["ref"][1])
    # the written rows hold the new keys; an untouched row keeps its old contents
    row = int(slots[0])
    assert torch.equal(caches["triton"][0].view(-1, KV_HEADS, DIM)[row], k[0])


def test_store_from_a_strided_token_view(device):
    # k as a slice of a wider projection output: rows strided, heads contiguous within a row
    wide = torch.randn(5, 3 * KV_HEADS * DIM, device=device)
    k = wide[:, : KV_HEADS * DIM].view(5, KV_HEADS, DIM)
    v = wide[:, KV_HEADS * DIM : 2 * KV_HEADS * DIM].view(5, KV_HEADS, DIM)
    k_cache = torch.zeros(NUM_BLOCKS, BLOCK, KV_HEADS, DIM, device=device)
    v_cache = torch.zeros_like(k_cache)
    store_kv_cache(k, v, k_cache, v_cache, torch.tensor([3, 0, 9, 22, 5], device=device), kernels="triton")
    assert torch.equal(k_cache.view(-1, KV_HEADS, DIM)[22], k[3])
    assert torch.equal(v_cache.view(-1, KV_HEADS, DIM)[9], v[2])
