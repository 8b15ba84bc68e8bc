"""Causal attention of ragged query chunks over a paged KV cache (prefill over a cached prefix; decode),
with Qwen3.5's output gate fused in.

The new tokens' keys and values must already be stored in the cache (``store_kv_cache``): a
sequence's context is read entirely from its blocks, ``block_tables[i]``, up to ``seq_lens[i]``.
Query token ``j`` of sequence ``i`` sits at position ``seq_lens[i] - query_len_i + j`` and attends to
every position up to and including its own. GQA: query head ``h`` reads kv head
``h // (num_heads // num_kv_heads)``. With ``gate`` the output is ``o * sigmoid(gate)``.

Kernels (flash attention: online softmax in fp32, ``tl.dot`` on tiles; a FlashAttention-2 /
vLLM-triton-unified-attention layout, written here):

- prefill: one program per (block of query tokens of one sequence, kv head). Its rows are
  ``BLOCK_Q`` tokens x the kv head's query heads (padded to a power of two), so every K/V tile
  loaded from the cache serves the whole GQA group. Programs find their sequence by binary search
  over ``cu_seqlens_q``; the grid is sized from host values, and programs past their sequence's end
  return at once, so the launch reads no device value back.
- decode (one token per sequence): split-K. Program (seq, kv head, split) attends over one slice of
  the context and writes an unnormalised partial output with its running max and sum; a second
  kernel combines the splits and applies the gate. The number of splits is a host choice from
  ``max_seq_len``, so a CUDA graph captured at the largest ``max_seq_len`` replays for any shorter
  one (each split's slice is computed from the device ``seq_lens``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cortex.engine.kernels.compile_specs import CompileSpec, ModelShape, meta
from cortex.engine.kernels.launch import KernelLaunch
from cortex.engine.kernels.selection import KernelBackend
from cortex.engine.kernels.triton_common import (
    MAX,
    SUM,
    dot_operand_dtype,
    dot_precision,
    ragged_block,
    search_steps,
)
from cortex.engine.kernels.triton_import import jit, tl, triton

DECODE_TILE = 64  # context tokens per K/V tile in decode
PREFILL_TILE = 32  # context tokens per K/V tile in prefill
TARGET_PROGRAMS = 264  # two waves of an H200's 132 SMs: split decode until there are about this many


def paged_attention_prefill(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    *,
    cu_seqlens_q: torch.Tensor,
    seq_lens: torch.Tensor,
    block_tables: torch.Tensor,
    max_query_len: int,
    scale: float,
    gate: torch.Tensor | None = None,
    kernels: KernelBackend,
) -> torch.Tensor:
    # q: [num_tokens, num_heads, head_dim]; k_cache, v_cache: [num_blocks, block_size, num_kv_heads,
    # head_dim]; cu_seqlens_q: [num_seqs + 1] int32; seq_lens: [num_seqs] int32; block_tables:
    # [num_seqs, max_num_blocks] int32; gate: like q or None. Returns o: [num_tokens, num_heads, head_dim].
    if kernels == "triton":
        out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
        _prefill_launch(
            q, k_cache, v_cache, cu_seqlens_q, seq_lens, block_tables, out, gate, scale, max_query_len
        )()
        return out
    return paged_attention_ref(
        q,
        k_cache,
        v_cache,
        cu_seqlens_q=cu_seqlens_q,
        seq_lens=seq_lens,
        block_tables=block_tables,
        scale=scale,
        gate=gate,
    )


def paged_attention_decode(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    *,
    seq_lens: torch.Tensor,
    block_tables: torch.Tensor,
    max_seq_len: int,
    scale: float,
    gate: torch.Tensor | None = None,
    kernels: KernelBackend,
) -> torch.Tensor:
    # q: [num_seqs, num_heads, head_dim], one query token per sequence (seq_lens[i] == 0: a padding row,
    # whose output is zeros)
    if kernels == "triton":
        out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
        for launch in _decode_launches(
            q, k_cache, v_cache, seq_lens, block_tables, out, gate, scale, max_seq_len
        ):
            launch()
        return out
    return paged_attention_decode_ref(
        q, k_cache, v_cache, seq_lens=seq_lens, block_tables=block_tables, scale=scale, gate=gate
    )


def paged_attention_decode_ref(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    *,
    seq_lens: torch.Tensor,
    block_tables: torch.Tensor,
    scale: float,
    gate: torch.Tensor | None = None,
) -> torch.Tensor:
    """``paged_attention_ref`` with query lengths 1, in one attention call for all sequences: their
    blocks gathered and padded to the longest context, positions past each seq_len masked out. GQA
    without copying K/V per query head: the ``group`` query heads sharing a kv head are that kv head's
    queries (one token, so no causal order among them). Returns [num_seqs, num_heads, head_dim]."""
    num_seqs, num_heads, head_dim = q.shape
    block_size, num_kv_heads = k_cache.shape[1], k_cache.shape[2]
    max_len = max(1, int(seq_lens.max()))
    blocks = block_tables[:, : -(-max_len // block_size)].long().clamp(min=0)  # padding -1 -> any block
    group = num_heads // num_kv_heads

    def context(cache: torch.Tensor) -> torch.Tensor:
        # [num_seqs, num_kv_heads, max_len, head_dim]
        return cache[blocks].flatten(1, 2)[:, :max_len].to(q.dtype).transpose(1, 2)

    lens = seq_lens.to(q.device).long()
    mask = torch.arange(max_len, device=q.device)[None, :] < lens[:, None]  # [num_seqs, max_len]
    o = F.scaled_dot_product_attention(
        q.reshape(num_seqs, num_kv_heads, group, head_dim),
        context(k_cache),
        context(v_cache),
        attn_mask=mask[:, None, None, :],
        scale=scale,
    ).reshape(num_seqs, num_heads, head_dim)  # from [num_seqs, num_kv_heads, group, head_dim]
    o = torch.where((lens > 0)[:, None, None], o, 0.0)  # padding rows (no context): zeros
    return o * torch.sigmoid(gate) if gate is not None else o


def paged_attention_ref(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    *,
    cu_seqlens_q: torch.Tensor,
    seq_lens: torch.Tensor,
    block_tables: torch.Tensor,
    scale: float,
    gate: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per sequence: gather its context from the blocks, SDPA with a causal mask (reads the metadata back)."""
    num_heads = q.shape[1]
    block_size, num_kv_heads = k_cache.shape[1], k_cache.shape[2]
    group = num_heads // num_kv_heads
    out = torch.zeros_like(q)
    starts = cu_seqlens_q.tolist()
    for i, seq_len in enumerate(seq_lens.tolist()):
        start, end = starts[i], starts[i + 1]
        query_len = end - start
        if seq_len == 0 or query_len == 0:
            continue
        num_blocks = -(-seq_len // block_size)
        blocks = block_tables[i, :num_blocks].long()
        k = k_cache[blocks].flatten(0, 1)[:seq_len]  # [seq_len, num_kv_heads, head_dim]
        v = v_cache[blocks].flatten(0, 1)[:seq_len]
        qi = q[start:end].transpose(0, 1)  # [num_heads, query_len, head_dim]
        k = k.repeat_interleave(group, dim=1).transpose(0, 1).to(q.dtype)
        v = v.repeat_interleave(group, dim=1).transpose(0, 1).to(q.dtype)
        q_pos = torch.arange(seq_len - query_len, seq_len, device=q.device)
        mask = q_pos[:, None] >= torch.arange(seq_len, device=q.device)[None, :]
        o = F.scaled_dot_product_attention(qi[None], k[None], v[None], attn_mask=mask, scale=scale)
        out[start:end] = o[0].transpose(0, 1)
    if gate is not None:
        out = out * torch.sigmoid(gate)
    return out


# ---- the kernels ----------------------------------------------------------------------------------


@jit
def _prefill_kernel(
    q_ptr,
    k_cache_ptr,
    v_cache_ptr,
    gate_ptr,
    out_ptr,
    cu_seqlens_q_ptr,
    seq_lens_ptr,
    block_tables_ptr,
    scale,
    num_seqs,
    num_search_steps,
    q_stride_token,
    q_stride_head,
    gate_stride_token,
    gate_stride_head,
    block_table_stride,
    NUM_HEADS: tl.constexpr,
    NUM_KV_HEADS: tl.constexpr,
    GROUP: tl.constexpr,  # query heads per kv head
    GROUP_PAD: tl.constexpr,  # next power of two
    HEAD_DIM: tl.constexpr,
    HEAD_DIM_PAD: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,  # KV page size
    BLOCK_Q: tl.constexpr,  # query tokens per program; BLOCK_M = BLOCK_Q * GROUP_PAD rows
    TILE: tl.constexpr,  # context tokens per K/V tile
    HAS_GATE: tl.constexpr,
    DOT_DT: tl.constexpr,  # tl.dot operands (triton_common.dot_operand_dtype)
    PRECISION: tl.constexpr,
) -> None:
    kv_head = tl.program_id(1)
    seq, q_start, q_end, local_block = ragged_block(
        cu_seqlens_q_ptr, tl.program_id(0), num_seqs, num_search_steps, BLOCK_Q
    )
    query_len = q_end - q_start
    if local_block * BLOCK_Q < query_len:
        BLOCK_M: tl.constexpr = BLOCK_Q * GROUP_PAD
        seq_len = tl.load(seq_lens_ptr + seq)
        context_len = seq_len - query_len
        m = tl.arange(0, BLOCK_M)
        d = tl.arange(0, HEAD_DIM_PAD)
        q_pos = local_block * BLOCK_Q + m // GROUP_PAD  # within this step's query chunk
        head = kv_head * GROUP + m % GROUP_PAD
        row_valid = (q_pos < query_len) & (m % GROUP_PAD < GROUP)
        d_valid = d < HEAD_DIM
        token = (q_start + q_pos).to(tl.int64)
        q = tl.load(
            q_ptr + token[:, None] * q_stride_token + head[:, None] * q_stride_head + d[None, :],
            mask=row_valid[:, None] & d_valid[None, :],
            other=0.0,
        )
        running_max = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        running_sum = tl.zeros([BLOCK_M], dtype=tl.float32)
        acc = tl.zeros([BLOCK_M, HEAD_DIM_PAD], dtype=tl.float32)
        # causal: the block's last query token sees up to its own position
        last = tl.minimum(context_len + (local_block + 1) * BLOCK_Q, seq_len)
        abs_pos = context_len + q_pos
        t = tl.arange(0, TILE)
        for start in range(0, last, TILE):
            pos = start + t
            in_seq = pos < last
            page = tl.load(
                block_tables_ptr + seq * block_table_stride + pos // BLOCK_SIZE, mask=in_seq, other=0
            )
            slot = (page.to(tl.int64) * BLOCK_SIZE + pos % BLOCK_SIZE) * NUM_KV_HEADS + kv_head
            k = tl.load(
                k_cache_ptr + slot[None, :] * HEAD_DIM + d[:, None],
                mask=in_seq[None, :] & d_valid[:, None],
                other=0.0,
            )  # [HEAD_DIM_PAD, TILE]
            v = tl.load(
                v_cache_ptr + slot[:, None] * HEAD_DIM + d[None, :],
                mask=in_seq[:, None] & d_valid[None, :],
                other=0.0,
            )  # [TILE, HEAD_DIM_PAD]
            scores = tl.dot(q.to(DOT_DT), k.to(DOT_DT), input_precision=PRECISION) * scale
            visible = row_valid[:, None] & in_seq[None, :] & (pos[None, :] <= abs_pos[:, None])
            scores = tl.where(visible, scores, float("-inf"))
            new_max = tl.maximum(running_max, tl.reduce(scores, 1, MAX))
            new_max = tl.where(new_max > float("-inf"), new_max, 0.0)  # fully masked rows stay finite
            p = tl.exp(scores - new_max[:, None])
            alpha = tl.exp(running_max - new_max)
            running_sum = running_sum * alpha + tl.reduce(p, 1, SUM)
            acc = acc * alpha[:, None]
            acc += tl.dot(p.to(v.dtype).to(DOT_DT), v.to(DOT_DT), input_precision=PRECISION)
            running_max = new_max
        o = acc / tl.where(running_sum > 0, running_sum, 1.0)[:, None]
        out_mask = row_valid[:, None] & d_valid[None, :]
        if HAS_GATE:
            g = tl.load(
                gate_ptr + token[:, None] * gate_stride_token + head[:, None] * gate_stride_head + d[None, :],
                mask=out_mask,
                other=0.0,
            ).to(tl.float32)
            o = o / (1.0 + tl.exp(-g))
        out_offs = (token[:, None] * NUM_HEADS + head[:, None]) * HEAD_DIM + d[None, :]
        tl.store(out_ptr + out_offs, o.to(out_ptr.dtype.element_ty), mask=out_mask)


@jit
def _decode_split_kernel(
    q_ptr,
    k_cache_ptr,
    v_cache_ptr,
    partial_out_ptr,  # [num_seqs, num_heads, num_splits, HEAD_DIM_PAD] fp32, unnormalised
    partial_max_ptr,  # [num_seqs, num_heads, num_splits] fp32
    partial_sum_ptr,  # [num_seqs, num_heads, num_splits] fp32
    seq_lens_ptr,
    block_tables_ptr,
    scale,
    num_splits,
    q_stride_token,
    q_stride_head,
    block_table_stride,
    NUM_HEADS: tl.constexpr,
    NUM_KV_HEADS: tl.constexpr,
    GROUP: tl.constexpr,
    HEADS_PAD: tl.constexpr,  # max(16, next power of two of GROUP): the rows of tl.dot
    HEAD_DIM: tl.constexpr,
    HEAD_DIM_PAD: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
    TILE: tl.constexpr,
    DOT_DT: tl.constexpr,
    PRECISION: tl.constexpr,
) -> None:
    seq = tl.program_id(0).to(tl.int64)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)
    seq_len = tl.load(seq_lens_ptr + seq)
    # each split covers a whole number of tiles of the context
    span = ((seq_len + num_splits - 1) // num_splits + TILE - 1) // TILE * TILE
    begin = split * span
    end = tl.minimum(begin + span, seq_len)
    h = tl.arange(0, HEADS_PAD)
    d = tl.arange(0, HEAD_DIM_PAD)
    head = kv_head * GROUP + h
    head_valid = h < GROUP
    d_valid = d < HEAD_DIM
    q = tl.load(
        q_ptr + seq * q_stride_token + head[:, None] * q_stride_head + d[None, :],
        mask=head_valid[:, None] & d_valid[None, :],
        other=0.0,
    )
    running_max = tl.full([HEADS_PAD], float("-inf"), dtype=tl.float32)
    running_sum = tl.zeros([HEADS_PAD], dtype=tl.float32)
    acc = tl.zeros([HEADS_PAD, HEAD_DIM_PAD], dtype=tl.float32)
    t = tl.arange(0, TILE)
    for start in range(begin, end, TILE):
        pos = start + t
        in_seq = pos < end
        page = tl.load(block_tables_ptr + seq * block_table_stride + pos // BLOCK_SIZE, mask=in_seq, other=0)
        slot = (page.to(tl.int64) * BLOCK_SIZE + pos % BLOCK_SIZE) * NUM_KV_HEADS + kv_head
        k = tl.load(
            k_cache_ptr + slot[None, :] * HEAD_DIM + d[:, None],
            mask=in_seq[None, :] & d_valid[:, None],
            other=0.0,
        )
        v = tl.load(
            v_cache_ptr + slot[:, None] * HEAD_DIM + d[None, :],
            mask=in_seq[:, None] & d_valid[None, :],
            other=0.0,
        )
        scores = tl.dot(q.to(DOT_DT), k.to(DOT_DT), input_precision=PRECISION) * scale
        scores = tl.where(in_seq[None, :], scores, float("-inf"))
        new_max = tl.maximum(running_max, tl.reduce(scores, 1, MAX))
        p = tl.exp(scores - new_max[:, None])
        alpha = tl.exp(running_max - new_max)
        running_sum = running_sum * alpha + tl.reduce(p, 1, SUM)
        acc = acc * alpha[:, None]
        acc += tl.dot(p.to(v.dtype).to(DOT_DT), v.to(DOT_DT), input_precision=PRECISION)
        running_max = new_max
    row = (seq * NUM_HEADS + head) * num_splits + split  # [HEADS_PAD]
    tl.store(partial_max_ptr + row, running_max, mask=head_valid)
    tl.store(partial_sum_ptr + row, running_sum, mask=head_valid)
    tl.store(partial_out_ptr + row[:, None] * HEAD_DIM_PAD + d[None, :], acc, mask=head_valid[:, None])


@jit
def _decode_combine_kernel(
    partial_out_ptr,
    partial_max_ptr,
    partial_sum_ptr,
    gate_ptr,
    out_ptr,
    num_splits,
    gate_stride_token,
    gate_stride_head,
    NUM_HEADS: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    HEAD_DIM_PAD: tl.constexpr,
    SPLITS_PAD: tl.constexpr,
    HAS_GATE: tl.constexpr,
) -> None:
    seq = tl.program_id(0).to(tl.int64)
    head = tl.program_id(1)
    s = tl.arange(0, SPLITS_PAD)
    d = tl.arange(0, HEAD_DIM_PAD)
    s_valid = s < num_splits
    row = (seq * NUM_HEADS + head) * num_splits + s
    split_max = tl.load(partial_max_ptr + row, mask=s_valid, other=float("-inf"))
    split_sum = tl.load(partial_sum_ptr + row, mask=s_valid, other=0.0)
    overall = tl.reduce(split_max, 0, MAX)
    overall = tl.where(overall > float("-inf"), overall, 0.0)  # no context at all (a padding row)
    weight = tl.where(split_sum > 0, tl.exp(split_max - overall), 0.0)
    partial = tl.load(
        partial_out_ptr + row[:, None] * HEAD_DIM_PAD + d[None, :], mask=s_valid[:, None], other=0.0
    )
    total = tl.reduce(weight * split_sum, 0, SUM)
    o = tl.reduce(partial * weight[:, None], 0, SUM) / tl.where(total > 0, total, 1.0)
    d_valid = d < HEAD_DIM
    if HAS_GATE:
        g = tl.load(gate_ptr + seq * gate_stride_token + head * gate_stride_head + d, mask=d_valid, other=0.0)
        o = o / (1.0 + tl.exp(-g.to(tl.float32)))
    tl.store(out_ptr + (seq * NUM_HEADS + head) * HEAD_DIM + d, o.to(out_ptr.dtype.element_ty), mask=d_valid)


# ---- launch builders ------------------------------------------------------------------------------


def _check_cache(k_cache: torch.Tensor, v_cache: torch.Tensor, q: torch.Tensor) -> None:
    assert k_cache.is_contiguous(), "the KV cache is one contiguous pool"
    assert v_cache.is_contiguous(), "the KV cache is one contiguous pool"
    assert q.stride(2) == 1, "head_dim must be contiguous"
    assert q.shape[1] % k_cache.shape[2] == 0, "num_heads is a multiple of num_kv_heads"


def _gate_args(gate: torch.Tensor | None, q: torch.Tensor) -> dict[str, object]:
    if gate is not None:
        assert gate.shape == q.shape, "the gate has q's shape"
        assert gate.stride(2) == 1, "the gate's head_dim must be contiguous"
    g = gate if gate is not None else q
    return {"gate_ptr": g, "gate_stride_token": g.stride(0), "gate_stride_head": g.stride(1)}


def _prefill_launch(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    seq_lens: torch.Tensor,
    block_tables: torch.Tensor,
    out: torch.Tensor,
    gate: torch.Tensor | None,
    scale: float,
    max_query_len: int,
) -> KernelLaunch:
    _check_cache(k_cache, v_cache, q)
    num_tokens, num_heads, head_dim = q.shape
    num_kv_heads = k_cache.shape[2]
    group = num_heads // num_kv_heads
    group_pad = triton.next_power_of_2(group)
    # 64 rows per program, or 16 when every query is short (decode rows in a mixed batch)
    block_m = max(16, group_pad) if max_query_len * group_pad <= 16 else max(64, group_pad)
    block_q = block_m // group_pad
    num_seqs = seq_lens.shape[0]
    gate_args = _gate_args(gate, q)
    return KernelLaunch(
        _prefill_kernel,
        grid=(num_tokens // block_q + num_seqs, num_kv_heads),
        args={
            "q_ptr": q,
            "k_cache_ptr": k_cache,
            "v_cache_ptr": v_cache,
            "gate_ptr": gate_args["gate_ptr"],
            "out_ptr": out,
            "cu_seqlens_q_ptr": cu_seqlens_q,
            "seq_lens_ptr": seq_lens,
            "block_tables_ptr": block_tables,
            "scale": float(scale),
            "num_seqs": num_seqs,
            "num_search_steps": search_steps(num_seqs),
            "q_stride_token": q.stride(0),
            "q_stride_head": q.stride(1),
            "gate_stride_token": gate_args["gate_stride_token"],
            "gate_stride_head": gate_args["gate_stride_head"],
            "block_table_stride": block_tables.stride(0),
        },
        constexprs={
            "NUM_HEADS": num_heads,
            "NUM_KV_HEADS": num_kv_heads,
            "GROUP": group,
            "GROUP_PAD": group_pad,
            "HEAD_DIM": head_dim,
            "HEAD_DIM_PAD": triton.next_power_of_2(head_dim),
            "BLOCK_SIZE": k_cache.shape[1],
            "BLOCK_Q": block_q,
            "TILE": PREFILL_TILE,
            "HAS_GATE": gate is not None,
            "DOT_DT": dot_operand_dtype(q),
            "PRECISION": dot_precision(q),
        },
        num_warps=8 if head_dim >= 128 else 4,
        num_stages=2,
    )


def num_decode_splits(num_seqs: int, num_kv_heads: int, max_seq_len: int) -> int:
    """Split the context until about TARGET_PROGRAMS programs run, but never below one tile a split."""
    wanted = -(-TARGET_PROGRAMS // max(1, num_seqs * num_kv_heads))
    return max(1, min(wanted, -(-max_seq_len // DECODE_TILE), 64))


def _decode_launches(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    seq_lens: torch.Tensor,
    block_tables: torch.Tensor,
    out: torch.Tensor,
    gate: torch.Tensor | None,
    scale: float,
    max_seq_len: int,
) -> tuple[KernelLaunch, KernelLaunch]:
    _check_cache(k_cache, v_cache, q)
    num_seqs, num_heads, head_dim = q.shape
    num_kv_heads = k_cache.shape[2]
    group = num_heads // num_kv_heads
    head_dim_pad = triton.next_power_of_2(head_dim)
    splits = num_decode_splits(num_seqs, num_kv_heads, max_seq_len)
    partial_out = torch.empty(num_seqs, num_heads, splits, head_dim_pad, dtype=torch.float32, device=q.device)
    partial_max = torch.empty(num_seqs, num_heads, splits, dtype=torch.float32, device=q.device)
    partial_sum = torch.empty(num_seqs, num_heads, splits, dtype=torch.float32, device=q.device)
    split = KernelLaunch(
        _decode_split_kernel,
        grid=(num_seqs, num_kv_heads, splits),
        args={
            "q_ptr": q,
            "k_cache_ptr": k_cache,
            "v_cache_ptr": v_cache,
            "partial_out_ptr": partial_out,
            "partial_max_ptr": partial_max,
            "partial_sum_ptr": partial_sum,
            "seq_lens_ptr": seq_lens,
            "block_tables_ptr": block_tables,
            "scale": float(scale),
            "num_splits": splits,
            "q_stride_token": q.stride(0),
            "q_stride_head": q.stride(1),
            "block_table_stride": block_tables.stride(0),
        },
        constexprs={
            "NUM_HEADS": num_heads,
            "NUM_KV_HEADS": num_kv_heads,
            "GROUP": group,
            "HEADS_PAD": max(16, triton.next_power_of_2(group)),
            "HEAD_DIM": head_dim,
            "HEAD_DIM_PAD": head_dim_pad,
            "BLOCK_SIZE": k_cache.shape[1],
            "TILE": DECODE_TILE,
            "DOT_DT": dot_operand_dtype(q),
            "PRECISION": dot_precision(q),
        },
        num_warps=4,
        num_stages=2,
    )
    gate_args = _gate_args(gate, q)
    combine = KernelLaunch(
        _decode_combine_kernel,
        grid=(num_seqs, num_heads),
        args={
            "partial_out_ptr": partial_out,
            "partial_max_ptr": partial_max,
            "partial_sum_ptr": partial_sum,
            "gate_ptr": gate_args["gate_ptr"],
            "out_ptr": out,
            "num_splits": splits,
            "gate_stride_token": gate_args["gate_stride_token"],
            "gate_stride_head": gate_args["gate_stride_head"],
        },
        constexprs={
            "NUM_HEADS": num_heads,
            "HEAD_DIM": head_dim,
            "HEAD_DIM_PAD": head_dim_pad,
            "SPLITS_PAD": triton.next_power_of_2(splits),
            "HAS_GATE": gate is not None,
        },
        num_warps=4,
        num_stages=1,
    )
    return split, combine


def compile_specs(shape: ModelShape) -> list[CompileSpec]:
    block_size, num_blocks, max_blocks = 16, 4096, 2048
    cache = meta(num_blocks, block_size, shape.num_kv_heads, shape.head_dim, dtype=shape.dtype)
    specs = []
    for num_tokens, max_query_len, num_seqs in ((4096, 4096, 1), (64, 1, 64)):
        q = meta(num_tokens, shape.num_heads, 2 * shape.head_dim, dtype=shape.dtype)[..., : shape.head_dim]
        launch = _prefill_launch(
            q,
            cache,
            cache,
            meta(num_seqs + 1, dtype=torch.int32),
            meta(num_seqs, dtype=torch.int32),
            meta(num_seqs, max_blocks, dtype=torch.int32),
            meta(num_tokens, shape.num_heads, shape.head_dim, dtype=shape.dtype),
            q,
            shape.head_dim**-0.5,
            max_query_len,
        )
        specs.append(CompileSpec.of("paged_attention_prefill", launch))
    for num_seqs, max_seq_len in ((1, 32768), (32, 8192)):
        q = meta(num_seqs, shape.num_heads, 2 * shape.head_dim, dtype=shape.dtype)[..., : shape.head_dim]
        launches = _decode_launches(
            q,
            cache,
            cache,
            meta(num_seqs, dtype=torch.int32),
            meta(num_seqs, max_blocks, dtype=torch.int32),
            meta(num_seqs, shape.num_heads, shape.head_dim, dtype=shape.dtype),
            q,
            shape.head_dim**-0.5,
            max_seq_len,
        )
        specs += [
            CompileSpec.of(f"paged_attention_decode_{part}", launch)
            for part, launch in zip(("split", "combine"), launches, strict=True)
        ]
    return specs
