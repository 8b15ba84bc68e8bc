"""Paged attention and the KV-cache store: the references against dense causal attention, then the
Triton kernels (prefill and split-K decode, with the output gate) against the references.

Batches are ragged: query lengths 1, a block multiple, a block + 1 and random ones, cached prefixes
that end mid-block, block tables in random order, GQA groups of 2 and 3 (not a power of two).
Tolerances: fp32 ``atol = rtol = 1e-4`` (different summation order in the softmax); bf16
``atol = rtol = 2e-2`` (P is rounded to bf16 before the P @ V product, as flash attention does).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cortex.engine.kernels.kv_cache import store_kv_cache
from cortex.engine.kernels.paged_attention import (
    num_decode_splits,
    paged_attention_decode,
    paged_attention_prefill,
    paged_attention_ref,
)

HEADS, KV_HEADS, DIM, BLOCK = 4, 2, 8, 4
TOLERANCE = {torch.float32: {"atol": 1e-4, "rtol": 1e-4}, torch.bfloat16: {"atol": 2e-2, "rtol": 2e-2}}


def _dense(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # one sequence, whole context: q, k, v [n, heads, dim]
    k = k.repeat_interleave(HEADS // KV_HEADS, dim=1)
    v = v.repeat_interleave(HEADS // KV_HEADS, dim=1)
    o = F.scaled_dot_product_attention(
        q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), is_causal=True
    )
    return o.transpose(0, 1)


def test_store_kv_cache_writes_slots_and_skips_negative() -> None:
    k_cache = torch.zeros(3, BLOCK, KV_HEADS, DIM)
    v_cache = torch.zeros(3, BLOCK, KV_HEADS, DIM)
    k, v = torch.randn(3, KV_HEADS, DIM), torch.randn(3, KV_HEADS, DIM)
    store_kv_cache(k, v, k_cache, v_cache, torch.tensor([9, -1, 2]), kernels="ref")
    assert torch.equal(k_cache[2, 1], k[0])
    assert torch.equal(v_cache[0, 2], v[2])
    assert int((k_cache != 0).any(-1).any(-1).sum()) == 2


def test_reference_prefill_over_cached_prefix_and_decode_match_dense() -> None:
    lens = [11, 6]
    blocks = [[5, 0, 7], [2, 4]]  # scattered, out of order
    k_cache = torch.randn(8, BLOCK, KV_HEADS, DIM)
    v_cache = torch.randn(8, BLOCK, KV_HEADS, DIM)
    q = [torch.randn(n, HEADS, DIM) for n in lens]
    k = [torch.randn(n, KV_HEADS, DIM) for n in lens]
    v = [torch.randn(n, KV_HEADS, DIM) for n in lens]
    table = torch.tensor([b + [-1] * (3 - len(b)) for b in blocks], dtype=torch.int32)

    def slots(i: int, positions: range) -> list[int]:
        return [blocks[i][p // BLOCK] * BLOCK + p % BLOCK for p in positions]

    def step(spans: list[range]) -> torch.Tensor:
        store_kv_cache(
            torch.cat([k[i][s.start : s.stop] for i, s in enumerate(spans)]),
            torch.cat([v[i][s.start : s.stop] for i, s in enumerate(spans)]),
            k_cache,
            v_cache,
            torch.tensor([x for i, s in enumerate(spans) for x in slots(i, s)]),
            kernels="ref",
        )
        cu = torch.tensor([0, *torch.tensor([len(s) for s in spans]).cumsum(0).tolist()], dtype=torch.int32)
        return paged_attention_ref(
            torch.cat([q[i][s.start : s.stop] for i, s in enumerate(spans)]),
            k_cache,
            v_cache,
            cu_seqlens_q=cu,
            seq_lens=torch.tensor([s.stop for s in spans], dtype=torch.int32),
            block_tables=table,
            scale=DIM**-0.5,
        )

    o1 = step([range(7), range(4)])  # both prefill
    o2 = step([range(7, 11), range(4, 6)])  # both continue over their cached prefixes
    expected = [_dense(q[i], k[i], v[i]) for i in range(2)]
    torch.testing.assert_close(torch.cat([o1[:7], o2[:4]]), expected[0])
    torch.testing.assert_close(torch.cat([o1[7:], o2[4:]]), expected[1])


def _ragged_case(
    query_lens: list[int],
    cached: list[int],
    *,
    heads: int,
    kv_heads: int,
    dim: int,
    dtype: torch.dtype,
    seed: int,
) -> dict[str, torch.Tensor]:
    """A step's inputs: caches filled with random K/V for every context position, random block tables."""
    gen = torch.Generator().manual_seed(seed)
    block_size = 16
    seq_lens = [c + n for c, n in zip(cached, query_lens, strict=True)]
    blocks_per_seq = [-(-s // block_size) for s in seq_lens]
    num_blocks = sum(blocks_per_seq) + 3
    order = torch.randperm(num_blocks, generator=gen).tolist()
    width = max(blocks_per_seq)
    tables, used = [], 0
    for n in blocks_per_seq:
        tables.append(order[used : used + n] + [-1] * (width - n))
        used += n
    num_tokens = sum(query_lens)
    qg = torch.randn(num_tokens, heads, 2 * dim, generator=gen).to(dtype)
    return {
        "q": qg[..., :dim],
        "gate": qg[..., dim:],
        "k_cache": torch.randn(num_blocks, block_size, kv_heads, dim, generator=gen).to(dtype),
        "v_cache": torch.randn(num_blocks, block_size, kv_heads, dim, generator=gen).to(dtype),
        "cu_seqlens_q": torch.tensor([0, *torch.tensor(query_lens).cumsum(0).tolist()], dtype=torch.int32),
        "seq_lens": torch.tensor(seq_lens, dtype=torch.int32),
        "block_tables": torch.tensor(tables, dtype=torch.int32),
    }


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("heads", "kv_heads", "dim"), [(4, 2, 32), (6, 2, 16)])
def test_prefill_kernel_matches_reference(device, dtype, heads, kv_heads, dim) -> None:
    # a fresh prompt, one block exactly, block + 1 over a prefix ending mid-block, a decode row, random
    query_lens = [37, 16, 17, 1, 9]
    cached = [0, 0, 21, 40, 5]
    case = _ragged_case(query_lens, cached, heads=heads, kv_heads=kv_heads, dim=dim, dtype=dtype, seed=0)
    for gate in (None, case["gate"]):
        expected = paged_attention_ref(
            case["q"],
            case["k_cache"],
            case["v_cache"],
            cu_seqlens_q=case["cu_seqlens_q"],
            seq_lens=case["seq_lens"],
            block_tables=case["block_tables"],
            scale=dim**-0.5,
            gate=gate,
        )
        got = paged_attention_prefill(
            case["q"].to(device),
            case["k_cache"].to(device),
            case["v_cache"].to(device),
            cu_seqlens_q=case["cu_seqlens_q"].to(device),
            seq_lens=case["seq_lens"].to(device),
            block_tables=case["block_tables"].to(device),
            max_query_len=max(query_lens),
            scale=dim**-0.5,
            gate=gate.to(device) if gate is not None else None,
            kernels="triton",
        )
        torch.testing.assert_close(got.cpu(), expected, **TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("max_seq_len", [None, 2048])  # the batch's own bound, or a CUDA graph's larger one
def test_split_k_decode_matches_reference(device, dtype, max_seq_len) -> None:
    cached = [0, 15, 16, 150, 63, 300]  # lengths 1, a block, a block + 1, long (split), ...
    query_lens = [1] * len(cached)
    case = _ragged_case(query_lens, cached, heads=6, kv_heads=2, dim=32, dtype=dtype, seed=1)
    bound = max_seq_len or int(case["seq_lens"].max())
    assert num_decode_splits(len(cached), 2, bound) > 1
    expected = paged_attention_ref(
        case["q"],
        case["k_cache"],
        case["v_cache"],
        cu_seqlens_q=case["cu_seqlens_q"],
        seq_lens=case["seq_lens"],
        block_tables=case["block_tables"],
        scale=32**-0.5,
        gate=case["gate"],
    )
    got = paged_attention_decode(
        case["q"].to(device),
        case["k_cache"].to(device),
        case["v_cache"].to(device),
        seq_lens=case["seq_lens"].to(device),
        block_tables=case["block_tables"].to(device),
        max_seq_len=bound,
        scale=32**-0.5,
        gate=case["gate"].to(device),
        kernels="triton",
    )
    torch.testing.assert_close(got.cpu(), expected, **TOLERANCE[dtype])


def test_decode_padding_rows_are_zero(device) -> None:
    case = _ragged_case([1, 1], [5, 0], heads=4, kv_heads=2, dim=16, dtype=torch.float32, seed=2)
    seq_lens = torch.tensor([6, 0], dtype=torch.int32)  # row 1: a CUDA-graph padding row
    got = paged_attention_decode(
        case["q"].to(device),
        case["k_cache"].to(device),
        case["v_cache"].to(device),
        seq_lens=seq_lens.to(device),
        block_tables=case["block_tables"].to(device),
        max_seq_len=64,
        scale=0.25,
        kernels="triton",
    )
    assert torch.equal(got[1].cpu(), torch.zeros(4, 16))
    assert bool(got[0].abs().sum() > 0)
