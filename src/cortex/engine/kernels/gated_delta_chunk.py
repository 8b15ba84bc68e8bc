"""Triton kernels for the chunked gated delta rule prefill (chunk 64, WY / UT form) over ragged batches.

Two launches, checked against ``chunk_gated_delta_rule_ref`` (``gated_delta.py`` has the math):

1. ``_chunk_prep_kernel``, one program per (chunk, value head), all in parallel. From the raw q, k, v,
   a and b it computes in registers the gates (``g = -exp(A_log) * softplus(a + dt_bias)``, its in-chunk
   cumsum ``G``, ``beta = sigmoid(b)``) and the q/k l2 norms, builds the chunk's system ``A =
   strict_lower(beta k k^T * exp(G_i - G_j))`` with one 64 x 64 ``tl.dot``, and applies ``T = (I +
   A)^{-1}`` without a sequential solve: the 16 x 16 diagonal blocks are inverted as a batch by
   recursive doubling in exact float32, and the rest by the block-nilpotent series ``I - N + N^2 - N^3``
   (``N = D A_off``), all as ``tl.dot``s. It writes the chunk's ``w = T (beta exp(G) k)`` and ``u = T
   (beta v)`` (one 16-bit ``tl.dot`` each), the causal scores ``aqk = (q k^T) * exp(G_i - G_j)`` and ``G``.
2. ``_chunk_state_kernel``, one program per (value-dim block, value head, sequence). It walks its
   sequence's chunks in order with the state block ``S: [head_k_dim, BV]`` in float32 registers, read
   from ``state[slot]`` (or zeros) and written back there at the end; per chunk ``v_new = u - w S``,
   ``o = diag(exp(G)) q S + aqk v_new`` and ``S <- exp(G_last) S + k^T diag(exp(G_last - G)) v_new``.

Where this differs from flash-linear-attention's forward (l2norm of q and of k, gate + cumsum, kkt +
solve, w/u, state pass, output: six launches and more): the per-chunk states ``h`` and ``v_new`` never
go to HBM (the state pass writes the output itself, which removes the largest intermediate and one
launch); normalised q/k, ``g`` and ``beta`` are never stored (the l2 norms are row scales applied
around the dots, so the tensor cores read the raw 16-bit q/k); and varlen batches need no host-built
chunk table (``triton_common.ragged_block``).

Shapes: head dims powers of two in [16, 256]. The state may be float32 (default) or bfloat16 (rounded
once when loaded and once when stored).
"""

from __future__ import annotations

from typing import Any

import torch

from cortex.engine.kernels.compile_specs import CompileSpec, ModelShape, meta
from cortex.engine.kernels.gated_delta_recurrent import delta_rule_step
from cortex.engine.kernels.launch import KernelLaunch
from cortex.engine.kernels.triton_common import (
    SUM,
    check_head_dims,
    dot_operand_dtype,
    dot_precision,
    gates,
    packed_heads,
    ragged_block,
    row_major,
    search_steps,
    state_block_v,
)
from cortex.engine.kernels.triton_import import jit, tl

CHUNK_SIZE = 64
SUB_CHUNK = 16  # the diagonal blocks of the triangular solve
# sequences this short run token by token in the state kernel and skip the chunk preparation: a decode
# in a mixed batch costs one recurrence step, not a 64-token solve
RECURRENT_MAX_TOKENS = 16


@jit
def _chunk_prep_kernel(
    q,
    k,
    v,
    a,
    b,
    A_log,
    dt_bias,
    w,
    u,
    aqk,
    gcum,
    cu_seqlens,
    num_seqs,
    num_search_steps,
    stride_q,
    stride_k,
    stride_v,
    stride_a,
    stride_b,
    scale,
    HK,
    HV,
    K: tl.constexpr,
    V: tl.constexpr,
    BT: tl.constexpr,
    BC: tl.constexpr,
    DOT_DT: tl.constexpr,
    PRECISION: tl.constexpr,
    SHORT: tl.constexpr,
) -> None:
    # in: q, k: [T, HK, K] (token strides stride_q, stride_k); v: [T, HV, V]; a, b: [T, HV]; A_log,
    # dt_bias: [HV]
    # out: w: [T, HV, K]; u: [T, HV, V]; aqk: [T, HV, BT] (row t: its scores against its chunk's tokens);
    # gcum: [T, HV] float32. DOT_DT: the tl.dot operand dtype (the model's; float32 under the interpreter)
    i_h = tl.program_id(1)
    _, bos, eos, i_c = ragged_block(cu_seqlens, tl.program_id(0), num_seqs, num_search_steps, BT)
    length = eos - bos
    if i_c * BT >= length or length <= SHORT:  # short sequences take the state kernel's token path
        return
    tl.static_assert(BT == 4 * BC and BC == 16)  # the solve below is written for 4 blocks of 16
    NB: tl.constexpr = BT // BC
    i_kh = i_h // (HV // HK)
    t0 = (bos + i_c * BT).to(tl.int64)  # the chunk's first token; offsets within the chunk stay int32
    o_t = tl.arange(0, BT)
    valid = i_c * BT + o_t < length
    cols_k = tl.arange(0, K)
    cols_v = tl.arange(0, V)
    head = t0 * HV + i_h  # this chunk's row of w, u, aqk and gcum
    # the gates and the l2 norms (row scales), in float32
    b_a = tl.load(a + t0 * stride_a + i_h + o_t * stride_a, mask=valid, other=0.0).to(tl.float32)
    b_b = tl.load(b + t0 * stride_b + i_h + o_t * stride_b, mask=valid, other=0.0).to(tl.float32)
    A_h = tl.exp(tl.load(A_log + i_h).to(tl.float32))
    g, beta = gates(b_a, b_b, A_h, tl.load(dt_bias + i_h).to(tl.float32))
    g = tl.where(valid, g, 0.0)
    beta = tl.where(valid, beta, 0.0)
    G = tl.associative_scan(g, 0, SUM)  # [BT]: cumulative log decay from the chunk's start (<= 0, falling)
    tl.store(gcum + head + o_t * HV, G, mask=valid)
    diff = G[:, None] - G[None, :]
    b_k = tl.load(
        k + t0 * stride_k + i_kh * K + o_t[:, None] * stride_k + cols_k[None, :],
        mask=valid[:, None],
        other=0.0,
    )
    dt = b_k.dtype
    k32 = b_k.to(tl.float32)
    rk = tl.rsqrt(tl.reduce(k32 * k32, 1, SUM) + 1e-6)
    kt_dot = tl.trans(b_k).to(DOT_DT)

    # aqk = causal(rq_i rk_j (q_i . k_j) exp(G_i - G_j)), diagonal included
    b_q = tl.load(
        q + t0 * stride_q + i_kh * K + o_t[:, None] * stride_q + cols_k[None, :],
        mask=valid[:, None],
        other=0.0,
    )
    q32 = b_q.to(tl.float32)
    rq = tl.rsqrt(tl.reduce(q32 * q32, 1, SUM) + 1e-6) * scale
    causal = o_t[:, None] >= o_t[None, :]
    b_aqk = tl.dot(b_q.to(DOT_DT), kt_dot, input_precision=PRECISION) * rq[:, None] * rk[None, :]
    b_aqk = tl.where(causal, b_aqk * tl.exp(tl.where(causal, diff, 0.0)), 0.0)
    tl.store(
        aqk + head * BT + o_t[:, None] * (HV * BT) + o_t[None, :],
        b_aqk.to(aqk.dtype.element_ty),
        mask=valid[:, None],
    )

    # A = strict_lower(beta_i rk_i rk_j (k_i . k_j) exp(G_i - G_j)), the chunk's [BT, BT] system
    strict = o_t[:, None] > o_t[None, :]
    A = tl.dot(b_k.to(DOT_DT), kt_dot, input_precision=PRECISION) * (beta * rk)[:, None] * rk[None, :]
    A = tl.where(strict, A * tl.exp(tl.where(strict, diff, 0.0)), 0.0)
    # T = (I + A)^{-1}. With A_d its diagonal BC x BC blocks, A_o the rest and D = (I + A_d)^{-1}:
    # I + A = (I + A_d)(I + N), N = D A_o strictly block-lower, so N^NB = 0 and T = (I - N + N^2 - N^3) D
    # for NB = 4. D, batched over the NB blocks in exact float32, by recursive doubling (blocked forward
    # substitution, as stable as the row-by-row one): with D_s the inverse of the s x s diagonal blocks
    # and E_s the part of A_d coupling the two halves of each 2s block, D_2s = D_s - D_s E_s D_s.
    same_block = (o_t[:, None] // BC) == (o_t[None, :] // BC)
    L = tl.reduce(tl.reshape(tl.where(same_block, A, 0.0), (NB, BC, NB, BC)), 2, SUM)  # [NB, BC, BC]
    r = tl.arange(0, BC)[:, None]
    c = tl.arange(0, BC)[None, :]
    D = (r == c).to(tl.float32)[None, :, :] - tl.where(((r // 2 == c // 2) & (r > c))[None, :, :], L, 0.0)
    E = tl.where(((r // 4 == c // 4) & (r % 4 >= 2) & (c % 4 < 2))[None, :, :], L, 0.0)
    D -= tl.dot(tl.dot(D, E, input_precision="ieee"), D, input_precision="ieee")
    E = tl.where(((r // 8 == c // 8) & (r % 8 >= 4) & (c % 8 < 4))[None, :, :], L, 0.0)
    D -= tl.dot(tl.dot(D, E, input_precision="ieee"), D, input_precision="ieee")
    E = tl.where(((r % 16 >= 8) & (c % 16 < 8))[None, :, :], L, 0.0)
    D -= tl.dot(tl.dot(D, E, input_precision="ieee"), D, input_precision="ieee")
    A_o = tl.reshape(tl.where(same_block, 0.0, A), (NB, BC, BT))
    N = tl.reshape(tl.dot(D, A_o, input_precision="ieee"), (BT, BT))
    N2 = tl.dot(N, N, input_precision=PRECISION)
    X = N2 - N - tl.dot(N, N2, input_precision=PRECISION) + (o_t[:, None] == o_t[None, :]).to(tl.float32)
    # T = X D, a right product with the block-diagonal D: T^T = D^T X^T, batched over X's column blocks
    T = tl.trans(
        tl.reshape(
            tl.dot(tl.permute(D, (0, 2, 1)), tl.reshape(tl.trans(X), (NB, BC, BT)), input_precision="ieee"),
            (BT, BT),
        )
    )
    T_dot = T.to(dt).to(DOT_DT)

    # w = T diag(beta exp(G) rk) k ; u = T diag(beta) v, with T and the scaled tiles in the model's dtype
    # (one rounding each, as flash-linear-attention stores T and the scaled keys)
    xk = (k32 * (beta * tl.exp(G) * rk)[:, None]).to(dt).to(DOT_DT)
    b_w = tl.dot(T_dot, xk, input_precision=PRECISION)
    tl.store(
        w + head * K + o_t[:, None] * (HV * K) + cols_k[None, :],
        b_w.to(w.dtype.element_ty),
        mask=valid[:, None],
    )
    b_v = tl.load(
        v + t0 * stride_v + i_h * V + o_t[:, None] * stride_v + cols_v[None, :],
        mask=valid[:, None],
        other=0.0,
    )
    yv = (b_v.to(tl.float32) * beta[:, None]).to(dt).to(DOT_DT)
    b_u = tl.dot(T_dot, yv, input_precision=PRECISION)
    tl.store(
        u + head * V + o_t[:, None] * (HV * V) + cols_v[None, :],
        b_u.to(u.dtype.element_ty),
        mask=valid[:, None],
    )


@jit
def _chunk_state_kernel(
    q,
    k,
    v,
    a,
    b,
    A_log,
    dt_bias,
    w,
    u,
    aqk,
    gcum,
    o,
    state,
    state_slots,
    has_initial_state,
    cu_seqlens,
    stride_q,
    stride_k,
    stride_v,
    stride_a,
    stride_b,
    scale,
    HK,
    HV,
    K: tl.constexpr,
    V: tl.constexpr,
    BT: tl.constexpr,
    BV: tl.constexpr,
    SHORT: tl.constexpr,
    DOT_DT: tl.constexpr,
    PRECISION: tl.constexpr,
) -> None:
    # o: [T, HV, V]; state: [num_slots, HV, K, V]; the rest as _chunk_prep_kernel
    i_v = tl.program_id(0)
    i_h = tl.program_id(1)
    i_n = tl.program_id(2)
    bos = tl.load(cu_seqlens + i_n)
    length = tl.load(cu_seqlens + i_n + 1) - bos
    i_kh = i_h // (HV // HK)
    cols_k = tl.arange(0, K)
    cols_v = i_v * BV + tl.arange(0, BV)
    o_t = tl.arange(0, BT)
    slot = tl.load(state_slots + i_n).to(tl.int64)
    p_state = state + slot * HV * K * V + i_h * K * V + cols_k[:, None] * V + cols_v[None, :]
    initial = tl.load(has_initial_state + i_n) != 0
    S = tl.where(initial, tl.load(p_state).to(tl.float32), 0.0)  # [K, BV]
    dt = q.dtype.element_ty
    # per-chunk bases advance as int64 scalars; the tile offsets are int32 and loop-invariant
    bos = bos.to(tl.int64)
    q += bos * stride_q + i_kh * K
    k += bos * stride_k + i_kh * K
    w += (bos * HV + i_h) * K
    u += (bos * HV + i_h) * V
    aqk += (bos * HV + i_h) * BT
    gcum += bos * HV + i_h
    o += (bos * HV + i_h) * V
    off_q = o_t[:, None] * stride_q + cols_k[None, :]
    off_k = o_t[:, None] * stride_k + cols_k[None, :]
    off_w = o_t[:, None] * (HV * K) + cols_k[None, :]
    off_v = o_t[:, None] * (HV * V) + cols_v[None, :]
    off_a = o_t[:, None] * (HV * BT) + o_t[None, :]
    if length <= SHORT:
        # a short sequence (a decode in a mixed batch, a prompt's last few tokens): token by token
        v += bos * stride_v + i_h * V
        a += bos * stride_a + i_h
        b += bos * stride_b + i_h
        A_h = tl.exp(tl.load(A_log + i_h).to(tl.float32))
        dt_bias_h = tl.load(dt_bias + i_h).to(tl.float32)
        for t in range(length):
            S, b_o = delta_rule_step(
                S,
                tl.load(q + t * stride_q + cols_k),
                tl.load(k + t * stride_k + cols_k),
                tl.load(v + t * stride_v + cols_v),
                tl.load(a + t * stride_a),
                tl.load(b + t * stride_b),
                A_h,
                dt_bias_h,
                scale,
            )
            tl.store(o + t * (HV * V) + cols_v, b_o.to(o.dtype.element_ty))
    else:
        for i_c in range((length + BT - 1) // BT):
            valid = i_c * BT + o_t < length
            t0 = i_c * BT
            b_q = tl.load(q + t0 * stride_q + off_q, mask=valid[:, None], other=0.0)
            b_k = tl.load(k + t0 * stride_k + off_k, mask=valid[:, None], other=0.0)
            b_w = tl.load(w + t0 * (HV * K) + off_w, mask=valid[:, None], other=0.0)
            b_u = tl.load(u + t0 * (HV * V) + off_v, mask=valid[:, None], other=0.0).to(tl.float32)
            b_aqk = tl.load(aqk + t0 * (HV * BT) + off_a, mask=valid[:, None], other=0.0)
            G = tl.load(gcum + t0 * HV + o_t * HV, mask=valid, other=0.0)
            G_last = tl.load(gcum + (tl.minimum(t0 + BT, length) - 1) * HV)
            q32 = b_q.to(tl.float32)
            k32 = b_k.to(tl.float32)
            rq = tl.rsqrt(tl.reduce(q32 * q32, 1, SUM) + 1e-6) * scale
            rk = tl.rsqrt(tl.reduce(k32 * k32, 1, SUM) + 1e-6)
            S_dot = S.to(dt).to(DOT_DT)
            v_new = b_u - tl.dot(b_w.to(DOT_DT), S_dot, input_precision=PRECISION)  # [BT, BV]
            b_o = tl.dot(b_q.to(DOT_DT), S_dot, input_precision=PRECISION) * (rq * tl.exp(G))[:, None]
            b_o += tl.dot(b_aqk.to(DOT_DT), v_new.to(dt).to(DOT_DT), input_precision=PRECISION)
            tl.store(o + t0 * (HV * V) + off_v, b_o.to(o.dtype.element_ty), mask=valid[:, None])
            v_dec = v_new * tl.where(valid, rk * tl.exp(G_last - G), 0.0)[:, None]
            S = S * tl.exp(G_last) + tl.dot(
                tl.trans(b_k).to(DOT_DT), v_dec.to(dt).to(DOT_DT), input_precision=PRECISION
            )
    tl.store(p_state, S.to(state.dtype.element_ty))


def chunk_gated_delta_rule_launches(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    a: torch.Tensor,
    b: torch.Tensor,
    A_log: torch.Tensor,
    dt_bias: torch.Tensor,
    state: torch.Tensor,
    cu_seqlens: torch.Tensor,
    state_slots: torch.Tensor,
    has_initial_state: torch.Tensor,
    out: torch.Tensor,
) -> tuple[KernelLaunch, KernelLaunch]:
    """The two launches of a prefill (the contract of ``gated_delta.gated_delta_rule_prefill``), writing
    ``out: [num_tokens, num_v_heads, head_v_dim]``. Sizes come from shapes only: nothing is read back."""
    num_tokens, num_k_heads, head_k_dim = q.shape
    _, num_v_heads, head_v_dim = v.shape
    num_seqs = state_slots.shape[0]
    check_head_dims(head_k_dim, head_v_dim)
    q, k, v, a, b = packed_heads(q), packed_heads(k), packed_heads(v), row_major(a), row_major(b)
    # the WY factors in the dtype the tensor cores read (the model's), G in float32
    w = q.new_empty(num_tokens, num_v_heads, head_k_dim, dtype=v.dtype)
    u = q.new_empty(num_tokens, num_v_heads, head_v_dim, dtype=v.dtype)
    aqk = q.new_empty(num_tokens, num_v_heads, CHUNK_SIZE, dtype=v.dtype)
    gcum = q.new_empty(num_tokens, num_v_heads, dtype=torch.float32)
    shared = {"HK": num_k_heads, "HV": num_v_heads, "scale": head_k_dim**-0.5}
    constexprs: dict[str, Any] = {
        "K": head_k_dim,
        "V": head_v_dim,
        "BT": CHUNK_SIZE,
        "DOT_DT": dot_operand_dtype(v),
        "PRECISION": dot_precision(v),
    }
    prep = KernelLaunch(
        _chunk_prep_kernel,
        grid=(num_tokens // CHUNK_SIZE + num_seqs if num_tokens else 0, num_v_heads),
        args={
            "q": q, "k": k, "v": v, "a": a, "b": b, "A_log": A_log, "dt_bias": dt_bias,
            "w": w, "u": u, "aqk": aqk, "gcum": gcum,
            "cu_seqlens": cu_seqlens, "num_seqs": num_seqs, "num_search_steps": search_steps(num_seqs),
            "stride_q": q.stride(0), "stride_k": k.stride(0), "stride_v": v.stride(0),
            "stride_a": a.stride(0), "stride_b": b.stride(0), **shared,
        },
        constexprs={**constexprs, "BC": SUB_CHUNK, "SHORT": RECURRENT_MAX_TOKENS},
        num_warps=4,
        num_stages=1,
    )  # fmt: skip
    block_v = state_block_v(num_seqs, num_v_heads, head_v_dim)
    state_pass = KernelLaunch(
        _chunk_state_kernel,
        grid=(head_v_dim // block_v, num_v_heads, num_seqs if num_tokens else 0),
        args={
            "q": q, "k": k, "v": v, "a": a, "b": b, "A_log": A_log, "dt_bias": dt_bias,
            "w": w, "u": u, "aqk": aqk, "gcum": gcum, "o": out, "state": state,
            "state_slots": state_slots, "has_initial_state": has_initial_state, "cu_seqlens": cu_seqlens,
            "stride_q": q.stride(0), "stride_k": k.stride(0), "stride_v": v.stride(0),
            "stride_a": a.stride(0), "stride_b": b.stride(0), **shared,
        },
        constexprs={**constexprs, "BV": block_v, "SHORT": RECURRENT_MAX_TOKENS},
        num_warps=4,
        num_stages=2,
    )  # fmt: skip
    return prep, state_pass


def compile_specs(shape: ModelShape) -> list[CompileSpec]:
    """A 4096-token prefill of one sequence and of 32 (the two state-block sizes), fp32 state, and the
    bf16-state option."""
    specs = []
    num_tokens = 4096
    key_dim = shape.linear_num_k_heads * shape.linear_head_k_dim
    for num_seqs, state_dtype in ((1, torch.float32), (32, torch.float32), (1, torch.bfloat16)):
        mixed = meta(num_tokens, shape.conv_dim, dtype=shape.dtype)  # the conv output q | k | v
        q = mixed[:, :key_dim].view(num_tokens, shape.linear_num_k_heads, shape.linear_head_k_dim)
        v = mixed[:, 2 * key_dim :].view(num_tokens, shape.linear_num_v_heads, shape.linear_head_v_dim)
        gates = meta(num_tokens, shape.linear_num_v_heads, dtype=shape.dtype)
        heads = meta(shape.linear_num_v_heads, dtype=shape.dtype)
        state = meta(
            64, shape.linear_num_v_heads, shape.linear_head_k_dim, shape.linear_head_v_dim, dtype=state_dtype
        )
        launches = chunk_gated_delta_rule_launches(
            q, q, v, a=gates, b=gates, A_log=heads, dt_bias=heads, state=state,
            cu_seqlens=meta(num_seqs + 1, dtype=torch.int32), state_slots=meta(num_seqs, dtype=torch.int64),
            has_initial_state=meta(num_seqs, dtype=torch.bool), out=v.new_empty(v.shape),
        )  # fmt: skip
        names = ("gated_delta_chunk_prep", "gated_delta_chunk_state")
        specs += [CompileSpec.of(name, launch) for name, launch in zip(names, launches, strict=True)]
    return specs
