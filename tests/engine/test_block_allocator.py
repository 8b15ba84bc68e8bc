"""Block and slot allocators (with the prefix cache's cached blocks), cache sizing and the cache tensors."""

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
from cortex.engine.cache.pools import allocate_caches, copy_state_rows
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


def test_a_cached_block_outlives_its_owner_until_evicted_oldest_first():
    evicted: list[bytes] = []
    allocator = BlockAllocator(4, on_evict=evicted.append)
    a, b, c = allocator.allocate(3)
    assert allocator.cache_block(a, b"ha")
    assert allocator.cache_block(b, b"hb")
    assert not allocator.cache_block(c, b"ha")  # another block holds that prefix already
    assert not allocator.cache_block(a, b"hx")  # a block is cached once
    allocator.free([b, a, c])
    assert (allocator.num_used, allocator.num_free, allocator.num_cached) == (0, 4, 2)
    assert allocator.lookup(b"ha") == a
    # empty blocks go first (the never-used one, then c); only then the least recently freed cached one
    assert set(allocator.allocate(2)) == {3, c}
    assert evicted == []
    assert allocator.allocate(1) == [b]
    assert evicted == [b"hb"]
    assert allocator.lookup(b"hb") is None
    with pytest.raises(ValueError, match="free and cannot be cached"):
        allocator.cache_block(a, b"again")


def test_sharing_a_free_cached_block_takes_it_back_into_use():
    allocator = BlockAllocator(2)
    (block,) = allocator.allocate(1)
    allocator.cache_block(block, b"h")
    allocator.free([block])
    allocator.share(block)
    allocator.share(block)
    assert (allocator.ref_count(block), allocator.num_free) == (2, 1)
    allocator.free([block, block])
    assert allocator.lookup(b"h") == block  # still cached
    assert allocator.allocate(2)[1] == block  # evicted only when nothing else is left
    assert allocator.num_cached == 0


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


def test_plan_sets_snapshot_memory_aside_and_keeps_one_full_request():
    specs = [LINEAR, LINEAR, ATTN]
    block, slot = bytes_per_block(specs, block_size=4, dtype_bytes=4), bytes_per_slot(specs, dtype_bytes=4)
    common = {"block_size": 4, "dtype_bytes": 4, "max_num_seqs": 8, "model_max_len": 1024}
    budget = 10 * slot + 200 * block
    plan = plan_cache(
        specs, cache_memory_bytes=budget, max_model_len=None, snapshot_memory_fraction=0.25, **common
    )
    without = plan_cache(specs, cache_memory_bytes=budget, max_model_len=None, **common)
    assert without.num_snapshots == 0
    assert plan.snapshot_bytes >= budget // 4 - slot
    assert plan.total_bytes <= budget
    assert plan.max_model_len < without.max_model_len  # the pages gave up what the snapshots took
    # an explicit context length comes first: the snapshots shrink to what is left
    tight = plan_cache(
        specs,
        cache_memory_bytes=slot + 16 * block + 2 * slot,
        max_model_len=64,
        snapshot_memory_fraction=0.9,
        **common,
    )
    assert (tight.num_slots, tight.num_blocks, tight.num_snapshots) == (1, 16, 2)
    # no state to snapshot: no snapshots
    assert (
        plan_cache(
            [ATTN], cache_memory_bytes=budget, max_model_len=64, snapshot_memory_fraction=0.5, **common
        ).num_snapshots
        == 0
    )


def test_copy_state_rows_copies_every_linear_layer():
    plan = plan_cache(
        [LINEAR, ATTN, LINEAR],
        cache_memory_bytes=1 << 20,
        block_size=4,
        dtype_bytes=4,
        max_num_seqs=2,
        max_model_len=8,
        model_max_len=8,
        snapshot_memory_fraction=0.5,
    )
    caches = allocate_caches([LINEAR, ATTN, LINEAR], plan, dtype=torch.float32, device=torch.device("cpu"))
    linear = [c for c in caches if isinstance(c, LinearStateCache)]
    assert linear[0].ssm.shape[0] == plan.num_slots + plan.num_snapshots
    for i, cache in enumerate(linear):
        cache.conv[0].fill_(1 + i)
        cache.ssm[1].fill_(10 + i)
    copy_state_rows(caches, [(0, 2), (1, 3)], device=torch.device("cpu"))
    for i, cache in enumerate(linear):
        assert torch.equal(cache.conv[2], cache.conv[0])
        assert torch.equal(cache.ssm[3], cache.ssm[1])
        assert cache.ssm[3].eq(10 + i).all()
    assert caches[1].k.count_nonzero() == 0


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
