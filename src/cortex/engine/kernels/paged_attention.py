"""Causal attention of ragged query chunks over a paged KV cache (prefill over a cached prefix; decode).

The new tokens' keys and values must already be stored in the cache (``store_kv_cache``): a
sequence's context is read entirely from its blocks, ``block_tables[i]``, up to ``seq_lens[i]``.
Query token ``j`` of sequence ``i`` sits at position ``seq_lens[i] - query_len_i + j`` and attends to
every position up to and including its own. GQA: query head ``h`` reads kv head
``h // (num_heads // num_kv_heads)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def paged_attention_decode(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    *,
    seq_lens: Sequence[int],
    block_tables: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    # q: [num_seqs, num_heads, head_dim], one query token per sequence; returns [num_seqs, num_heads,
    # head_dim]. Equal to paged_attention_ref with query_lens 1, in one attention call for all sequences:
    # their blocks gathered and padded to the longest context, positions past each seq_len masked out.
    # GQA without copying K/V per query head: the ``group`` query heads sharing a kv head are that kv
    # head's queries (one token, so no causal order among them).
    num_seqs, num_heads, head_dim = q.shape
    block_size, num_kv_heads = k_cache.shape[1], k_cache.shape[2]
    max_len = max(seq_lens)
    blocks = block_tables[:, : -(-max_len // block_size)].long().clamp(min=0)  # padding -1 -> any block
    group = num_heads // num_kv_heads

    def context(cache: torch.Tensor) -> torch.Tensor:
        # [num_seqs, num_kv_heads, max_len, head_dim]
        return cache[blocks].flatten(1, 2)[:, :max_len].to(q.dtype).transpose(1, 2)

    lens = torch.tensor(seq_lens, device=q.device)
    mask = torch.arange(max_len, device=q.device)[None, :] < lens[:, None]  # [num_seqs, max_len]
    o = F.scaled_dot_product_attention(
        q.reshape(num_seqs, num_kv_heads, group, head_dim),
        context(k_cache),
        context(v_cache),
        attn_mask=mask[:, None, None, :],
        scale=scale,
    )  # [num_seqs, num_kv_heads, group, head_dim]
    return o.reshape(num_seqs, num_heads, head_dim)


def paged_attention_ref(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    *,
    query_lens: Sequence[int],
    seq_lens: Sequence[int],
    block_tables: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    # q: [num_tokens, num_heads, head_dim]; k_cache, v_cache: [num_blocks, block_size, num_kv_heads, head_dim]
    # block_tables: [num_seqs, max_num_blocks] int32; query_lens, seq_lens: host ints per sequence
    # returns o: [num_tokens, num_heads, head_dim] in q's dtype
    num_heads = q.shape[1]
    block_size, num_kv_heads = k_cache.shape[1], k_cache.shape[2]
    group = num_heads // num_kv_heads
    out = torch.empty_like(q)
    start = 0
    for i, (query_len, seq_len) in enumerate(zip(query_lens, seq_lens, strict=True)):
        num_blocks = -(-seq_len // block_size)
        blocks = block_tables[i, :num_blocks].long()
        k = k_cache[blocks].flatten(0, 1)[:seq_len]  # [seq_len, num_kv_heads, head_dim]
        v = v_cache[blocks].flatten(0, 1)[:seq_len]
        qi = q[start : start + query_len].transpose(0, 1)  # [num_heads, query_len, head_dim]
        k = k.repeat_interleave(group, dim=1).transpose(0, 1).to(q.dtype)
        v = v.repeat_interleave(group, dim=1).transpose(0, 1).to(q.dtype)
        q_pos = torch.arange(seq_len - query_len, seq_len, device=q.device)
        mask = q_pos[:, None] >= torch.arange(seq_len, device=q.device)[None, :]
        o = F.scaled_dot_product_attention(qi[None], k[None], v[None], attn_mask=mask, scale=scale)
        out[start : start + query_len] = o[0].transpose(0, 1)
        start += query_len
    return out


# Dispatch points (see kernels/__init__.py): the references serve every device until a GPU kernel lands.
paged_attention_prefill = paged_attention_ref
