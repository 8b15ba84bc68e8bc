"""Triton kernel for the gated delta rule decode: a few tokens per sequence, state updated by slot.

One program per (sequence, value head, block of head_v_dim) holds the state block ``S: [head_k_dim,
BV]`` in float32 registers, reads it from ``state[initial_state_slots[i]]``, runs the sequence's tokens
through the exact recurrence (gates, l2 norms and scaling computed in the kernel from the raw
projections) and writes the state after token ``t`` to ``state[token_state_slots[i, t]]``. The
single-token decode is the case ``num_tokens == 1`` with both slot arrays equal, so one kernel serves
both ops. Memory-bound: each token step reads q, k, v and writes o; the state is read once and written
once per token kept. Checked against ``gated_delta_rule_decode_multi_ref`` (``gated_delta.py``).
"""

from __future__ import annotations

from typing import Any

import torch

from cortex.engine.kernels.compile_specs import STEP_NUM_TOKENS, CompileSpec, ModelShape, meta
from cortex.engine.kernels.launch import KernelLaunch
from cortex.engine.kernels.triton_common import (
    SUM,
    check_head_dims,
    gates,
    packed_heads,
    row_major,
    state_block_v,
)
from cortex.engine.kernels.triton_import import jit, tl


@jit
def delta_rule_step(S, b_q, b_k, b_v, b_a, b_b, A_h, dt_bias_h, scale) -> Any:
    # one token of one value head: S [K, BV] float32; b_q, b_k [K] and b_v [BV] raw; b_a, b_b raw scalars;
    # A_h = exp(A_log). Returns (S after the token, o [BV] float32). Shared with the chunked prefill,
    # which runs its short sequences through it.
    q = b_q.to(tl.float32)
    k = b_k.to(tl.float32)
    q = q * (tl.rsqrt(tl.reduce(q * q, 0, SUM) + 1e-6) * scale)
    k = k * tl.rsqrt(tl.reduce(k * k, 0, SUM) + 1e-6)
    g, beta = gates(b_a.to(tl.float32), b_b.to(tl.float32), A_h, dt_bias_h)
    S = S * tl.exp(g)
    delta = beta * (b_v.to(tl.float32) - tl.reduce(S * k[:, None], 0, SUM))
    S = S + k[:, None] * delta[None, :]
    return S, tl.reduce(S * q[:, None], 0, SUM)


@jit
def _recurrent_kernel(
    q,
    k,
    v,
    a,
    b,
    A_log,
    dt_bias,
    o,
    state,
    initial_state_slots,
    token_state_slots,
    num_tokens,
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
    BV: tl.constexpr,
) -> None:
    # q, k: [num_seqs * num_tokens, HK, K]; v, o: [.., HV, V]; a, b: [.., HV]; state: [num_slots, HV, K, V]
    # initial_state_slots: [num_seqs]; token_state_slots: [num_seqs, num_tokens]
    i_v = tl.program_id(0)
    i_h = tl.program_id(1)
    i_n = tl.program_id(2)
    i_kh = i_h // (HV // HK)
    cols_k = tl.arange(0, K)
    cols_v = i_v * BV + tl.arange(0, BV)
    tile = i_h * K * V + cols_k[:, None] * V + cols_v[None, :]
    slot = tl.load(initial_state_slots + i_n).to(tl.int64)
    S = tl.load(state + slot * HV * K * V + tile).to(tl.float32)  # [K, BV]
    A_h = tl.exp(tl.load(A_log + i_h).to(tl.float32))
    dt_bias_h = tl.load(dt_bias + i_h).to(tl.float32)
    for t in range(num_tokens):
        row = (i_n * num_tokens + t).to(tl.int64)
        S, b_o = delta_rule_step(
            S,
            tl.load(q + row * stride_q + i_kh * K + cols_k),
            tl.load(k + row * stride_k + i_kh * K + cols_k),
            tl.load(v + row * stride_v + i_h * V + cols_v),
            tl.load(a + row * stride_a + i_h),
            tl.load(b + row * stride_b + i_h),
            A_h,
            dt_bias_h,
            scale,
        )
        tl.store(o + row * HV * V + i_h * V + cols_v, b_o.to(o.dtype.element_ty))
        out_slot = tl.load(token_state_slots + i_n * num_tokens + t).to(tl.int64)
        tl.store(state + out_slot * HV * K * V + tile, S.to(state.dtype.element_ty))


def gated_delta_rule_recurrent_launch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    a: torch.Tensor,
    b: torch.Tensor,
    A_log: torch.Tensor,
    dt_bias: torch.Tensor,
    state: torch.Tensor,
    initial_state_slots: torch.Tensor,
    token_state_slots: torch.Tensor,
    out: torch.Tensor,
) -> KernelLaunch:
    """The launch of ``gated_delta.gated_delta_rule_decode_multi`` (and, with one token per sequence, of
    ``gated_delta_rule_decode``), writing ``out: [num_seqs * num_tokens, num_v_heads, head_v_dim]``."""
    _, num_k_heads, head_k_dim = q.shape
    _, num_v_heads, head_v_dim = v.shape
    num_seqs, num_tokens = token_state_slots.shape
    check_head_dims(head_k_dim, head_v_dim)
    q, k, v, a, b = packed_heads(q), packed_heads(k), packed_heads(v), row_major(a), row_major(b)
    block_v = state_block_v(num_seqs, num_v_heads, head_v_dim)
    return KernelLaunch(
        _recurrent_kernel,
        grid=(head_v_dim // block_v, num_v_heads, num_seqs if num_tokens else 0),
        args={
            "q": q, "k": k, "v": v, "a": a, "b": b, "A_log": A_log, "dt_bias": dt_bias, "o": out,
            "state": state, "initial_state_slots": initial_state_slots,
            "token_state_slots": token_state_slots.contiguous(), "num_tokens": num_tokens,
            "stride_q": q.stride(0), "stride_k": k.stride(0), "stride_v": v.stride(0),
            "stride_a": a.stride(0), "stride_b": b.stride(0), "scale": head_k_dim**-0.5,
            "HK": num_k_heads, "HV": num_v_heads,
        },
        constexprs={"K": head_k_dim, "V": head_v_dim, "BV": block_v},
        num_warps=4,
        num_stages=1,
    )  # fmt: skip


def compile_specs(shape: ModelShape) -> list[CompileSpec]:
    """Decode at the step sizes a batch can have (one token per sequence), fp32 and bf16 state, and a
    4-token verify."""
    specs = []
    key_dim = shape.linear_num_k_heads * shape.linear_head_k_dim
    cases = [(n, 1, torch.float32) for n in STEP_NUM_TOKENS[:2]] + [
        (1, 1, torch.bfloat16),
        (8, 4, torch.float32),
    ]
    for num_seqs, num_tokens, state_dtype in cases:
        rows = num_seqs * num_tokens
        mixed = meta(rows, shape.conv_dim, dtype=shape.dtype)
        q = mixed[:, :key_dim].view(rows, shape.linear_num_k_heads, shape.linear_head_k_dim)
        v = mixed[:, 2 * key_dim :].view(rows, shape.linear_num_v_heads, shape.linear_head_v_dim)
        gates = meta(rows, shape.linear_num_v_heads, dtype=shape.dtype)
        heads = meta(shape.linear_num_v_heads, dtype=shape.dtype)
        state = meta(
            64, shape.linear_num_v_heads, shape.linear_head_k_dim, shape.linear_head_v_dim, dtype=state_dtype
        )
        launch = gated_delta_rule_recurrent_launch(
            q, q, v, a=gates, b=gates, A_log=heads, dt_bias=heads, state=state,
            initial_state_slots=meta(num_seqs, dtype=torch.int64),
            token_state_slots=meta(num_seqs, num_tokens, dtype=torch.int64), out=v.new_empty(v.shape),
        )  # fmt: skip
        specs.append(CompileSpec.of("gated_delta_recurrent", launch))
    return specs
