"""Paged attention and the KV-cache store against dense causal attention on contiguous tensors."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cortex.engine.kernels.kv_cache import store_kv_cache
from cortex.engine.kernels.paged_attention import paged_attention_decode, paged_attention_prefill

HEADS, KV_HEADS, DIM, BLOCK = 4, 2, 8, 4


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


def test_ragged_prefill_over_cached_prefix_and_decode_match_dense() -> None:
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

    # step 1: sequence 0 prefills 7 tokens, sequence 1 prefills 4
    first = [7, 4]
    store_kv_cache(
        torch.cat([k[0][:7], k[1][:4]]),
        torch.cat([v[0][:7], v[1][:4]]),
        k_cache,
        v_cache,
        torch.tensor(slots(0, range(7)) + slots(1, range(4))),
        kernels="ref",
    )
    o1 = paged_attention_prefill(
        torch.cat([q[0][:7], q[1][:4]]),
        k_cache,
        v_cache,
        query_lens=first,
        seq_lens=first,
        block_tables=table,
        scale=DIM**-0.5,
    )
    # step 2: sequence 0 continues with 4 tokens over its cached prefix, sequence 1 with 2
    store_kv_cache(
        torch.cat([k[0][7:], k[1][4:]]),
        torch.cat([v[0][7:], v[1][4:]]),
        k_cache,
        v_cache,
        torch.tensor(slots(0, range(7, 11)) + slots(1, range(4, 6))),
        kernels="ref",
    )
    o2 = paged_attention_prefill(
        torch.cat([q[0][7:], q[1][4:]]),
        k_cache,
        v_cache,
        query_lens=[4, 2],
        seq_lens=lens,
        block_tables=table,
        scale=DIM**-0.5,
    )
    expected = [_dense(q[i], k[i], v[i]) for i in range(2)]
    torch.testing.assert_close(torch.cat([o1[:7], o2[:4]]), expected[0])
    torch.testing.assert_close(torch.cat([o1[7:], o2[4:]]), expected[1])
    # decode: the last token of each sequence, one query per sequence
    decoded = paged_attention_decode(
        torch.stack([q[0][-1], q[1][-1]]),
        k_cache,
        v_cache,
        seq_lens=lens,
        block_tables=table,
        scale=DIM**-0.5,
    )
    torch.testing.assert_close(decoded, torch.stack([expected[0][-1], expected[1][-1]]))
