"""KV-cache store: write each new token's key and value into its paged-cache slot.

``slot_mapping[t] = block_id * block_size + offset`` is token ``t``'s row in the flattened cache; a
negative slot means "skip" (padding rows of a CUDA-graph batch). The Triton kernel runs one program
per token and copies its ``num_kv_heads * head_dim`` keys and values.
"""

from __future__ import annotations

import torch

from cortex.engine.kernels.compile_specs import CompileSpec, ModelShape, meta
from cortex.engine.kernels.launch import KernelLaunch
from cortex.engine.kernels.selection import KernelBackend
from cortex.engine.kernels.triton_import import jit, tl, triton


def store_kv_cache(
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    *,
    kernels: KernelBackend,
) -> None:
    # k, v: [num_tokens, num_kv_heads, head_dim]; k_cache, v_cache: [num_blocks, block_size, num_kv_heads,
    # head_dim]; slot_mapping: [num_tokens] int64. Writes the caches in place.
    if kernels == "triton":
        store_kv_cache_launch(k, v, k_cache, v_cache, slot_mapping)()
    else:
        store_kv_cache_ref(k, v, k_cache, v_cache, slot_mapping)


def store_kv_cache_ref(
    k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, slot_mapping: torch.Tensor
) -> None:
    valid = slot_mapping >= 0
    slots = slot_mapping[valid]
    k_cache.view(-1, *k_cache.shape[2:])[slots] = k[valid].to(k_cache.dtype)
    v_cache.view(-1, *v_cache.shape[2:])[slots] = v[valid].to(v_cache.dtype)


@jit
def _store_kv_kernel(
    k_ptr,
    v_ptr,
    k_cache_ptr,
    v_cache_ptr,
    slot_mapping_ptr,
    k_stride,
    v_stride,
    ROW: tl.constexpr,  # num_kv_heads * head_dim
    BLOCK: tl.constexpr,  # next power of two of ROW
) -> None:
    token = tl.program_id(0)
    slot = tl.load(slot_mapping_ptr + token).to(tl.int64)
    if slot >= 0:
        offs = tl.arange(0, BLOCK)
        mask = offs < ROW
        key = tl.load(k_ptr + token * k_stride + offs, mask=mask)
        value = tl.load(v_ptr + token * v_stride + offs, mask=mask)
        tl.store(k_cache_ptr + slot * ROW + offs, key.to(k_cache_ptr.dtype.element_ty), mask=mask)
        tl.store(v_cache_ptr + slot * ROW + offs, value.to(v_cache_ptr.dtype.element_ty), mask=mask)


def store_kv_cache_launch(
    k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, slot_mapping: torch.Tensor
) -> KernelLaunch:
    row = k.shape[1] * k.shape[2]
    # each token's heads must be one contiguous row (true for projections viewed as heads)
    for x in (k, v):
        assert x.stride(2) == 1, "head_dim must be contiguous"
        assert x.stride(1) == x.shape[2], "a token's heads must be one contiguous row"
    assert k_cache.is_contiguous(), "the KV cache is one contiguous pool"
    assert v_cache.is_contiguous(), "the KV cache is one contiguous pool"
    return KernelLaunch(
        _store_kv_kernel,
        grid=(k.shape[0],),
        args={
            "k_ptr": k,
            "v_ptr": v,
            "k_cache_ptr": k_cache,
            "v_cache_ptr": v_cache,
            "slot_mapping_ptr": slot_mapping,
            "k_stride": k.stride(0),
            "v_stride": v.stride(0),
        },
        constexprs={"ROW": row, "BLOCK": triton.next_power_of_2(row)},
        num_warps=4,
        num_stages=1,
    )


def compile_specs(shape: ModelShape) -> list[CompileSpec]:
    kv = meta(64, shape.num_kv_heads, shape.head_dim, dtype=shape.dtype)
    cache = meta(1024, 16, shape.num_kv_heads, shape.head_dim, dtype=shape.dtype)
    launch = store_kv_cache_launch(kv, kv, cache, cache, meta(64, dtype=torch.int64))
    return [CompileSpec.of("store_kv_cache", launch)]
