"""Block and slot allocators, cache sizing and the cache tensors they size."""

from __future__ import annotations

import pytest
import torch

from cortex.engine.cache.block_allocator import BlockAllocator
from cortex.engine.cache.cache_plan import bytes_per_block, bytes_per_slot, plan_cache
from cortex.engine.cache.layer_cache import (
    AttentionCache,
    AttentionCacheSpec,
    LinearStateCache,
    LinearStateSpec,
)
from cortex.engine.cache.pools import allocate_caches
from cortex.engine.cache.slot_allocator import SlotAllocator
from cortex.engine.errors import CacheExhaustedError

ATTN = AttentionCacheSpec(num_kv_heads=2, head_dim=8)
LINEAR = LinearStateSpec(conv_dim=12, conv_kernel=4, num_v_heads=2, head_k_dim=4, head_v_dim=4)


def test_allocate_and_free_return_blocks():
    allocator = BlockAllocator(4)
    blocks = allocator.allocate(3)
    assert sorted(blocks) == [0, 1, 2]
    assert (allocator.num_used, allocator.num_free) == (3, 1)
    assert not allocator.can_allocate(2)
    with pytest.raises(ValueError, match="only 1 free"):
        allocator.allocate(2)
    allocator.free(blocks[:2])
    assert (allocator.num_used, allocator.num_free) == (1, 3)
    with pytest.raises(ValueError, match="already free"):
        allocator.free([blocks[0]])


def test_shared_block_is_freed_by_its_last_owner():
    allocator = BlockAllocator(2)
    (block,) = allocator.allocate(1)
    allocator.share(block)
    assert allocator.ref_count(block) == 2
    allocator.free([block])
    assert allocator.num_used == 1
    allocator.free([block])
    assert allocator.num_used == 0
    with pytest.raises(ValueError, match="free and cannot be shared"):
        allocator.share(block)


def test_slots_are_unique_and_reused():
    slots = SlotAllocator(2)
    a, b = slots.allocate(), slots.allocate()
    assert {a, b} == {0, 1}
    with pytest.raises(ValueError, match="no free state slot"):
        slots.allocate()
    slots.free(a)
    assert (slots.num_used, slots.num_free) == (1, 1)
    assert slots.allocate() == a
    with pytest.raises(ValueError, match="not in use"):
        SlotAllocator(1).free(0)


def test_byte_sizes():
    # K and V, 16 tokens, 2 heads x 8 dims, 2 bytes
    assert bytes_per_block([ATTN, LINEAR, ATTN], block_size=16, dtype_bytes=2) == 2 * (2 * 16 * 2 * 8 * 2)
    # conv history (12 x 3 in bf16) + fp32 state (2 x 4 x 4)
    assert bytes_per_slot([ATTN, LINEAR], dtype_bytes=2) == 12 * 3 * 2 + 2 * 4 * 4 * 4


def test_plan_fits_budget_and_one_full_request():
    specs = [LINEAR, LINEAR, ATTN]
    block, slot = bytes_per_block(specs, block_size=4, dtype_bytes=4), bytes_per_slot(specs, dtype_bytes=4)
    budget = 3 * slot + 40 * block
    plan = plan_cache(
        specs,
        cache_memory_bytes=budget,
        block_size=4,
        dtype_bytes=4,
        max_num_seqs=8,
        max_model_len=64,
        model_max_len=1024,
    )
    assert plan.total_bytes <= budget
    assert plan.num_blocks * 4 >= 64  # a full-length request always fits
    assert 1 <= plan.num_slots <= 8
    assert plan.max_model_len == 64


def test_plan_caps_at_what_max_num_seqs_can_use():
    plan = plan_cache(
        [ATTN, LINEAR],
        cache_memory_bytes=1 << 30,
        block_size=16,
        dtype_bytes=4,
        max_num_seqs=2,
        max_model_len=100,
        model_max_len=4096,
    )
    assert (plan.num_slots, plan.num_blocks) == (2, 2 * 7)


def test_plan_lowers_default_context_to_the_budget():
    block = bytes_per_block([ATTN], block_size=16, dtype_bytes=4)
    plan = plan_cache(
        [ATTN],
        cache_memory_bytes=10 * block,
        block_size=16,
        dtype_bytes=4,
        max_num_seqs=4,
        max_model_len=None,
        model_max_len=4096,
    )
    assert plan.max_model_len == 160


def test_plan_too_small_is_a_clear_error():
    with pytest.raises(CacheExhaustedError, match="cannot hold one request of max_model_len=4096"):
        plan_cache(
            [ATTN, LINEAR],
            cache_memory_bytes=10_000,
            block_size=16,
            dtype_bytes=4,
            max_num_seqs=4,
            max_model_len=4096,
            model_max_len=4096,
        )


def test_allocate_caches_shapes_and_dtypes():
    plan = plan_cache(
        [LINEAR, ATTN],
        cache_memory_bytes=1 << 20,
        block_size=4,
        dtype_bytes=2,
        max_num_seqs=3,
        max_model_len=32,
        model_max_len=32,
    )
    linear, attention = allocate_caches(
        [LINEAR, ATTN], plan, dtype=torch.bfloat16, device=torch.device("cpu")
    )
    assert isinstance(linear, LinearStateCache)
    assert isinstance(attention, AttentionCache)
    assert linear.conv.shape == (3, 12, 3)
    assert linear.conv.dtype == torch.bfloat16
    assert linear.ssm.shape == (3, 2, 4, 4)
    assert linear.ssm.dtype == torch.float32
    assert attention.k.shape == attention.v.shape == (plan.num_blocks, 4, 2, 8)
