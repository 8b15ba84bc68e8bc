"""Triton kernels for the causal conv1d ops (``causal_conv1d.py`` has the contract and the references).

Prefill is two launches: ``_conv_prefill_kernel`` (one program per ragged block of BT tokens x BD
channels, see ``triton_common.ragged_block``) computes ``silu(sum_j w[:, j] * x[t - kernel + 1 + j])``
in float32, reading positions before the sequence's start from its slot's history (or zeros); then
``_conv_history_kernel`` (one program per sequence x BD channels) writes each slot's new history. The
split keeps a sequence's later blocks from overwriting the history its first block still has to read.
Decode is one in-place launch, ``_conv_decode_kernel``, one program per sequence x BD channels: the
history in registers, ``num_tokens`` tokens in turn, the history after each stored to that token's slot
(one token and its own slot for ``causal_conv1d_decode``). Checked against the references.
"""

from __future__ import annotations

import torch

from cortex.engine.kernels.compile_specs import STEP_NUM_TOKENS, CompileSpec, ModelShape, meta
from cortex.engine.kernels.launch import KernelLaunch
from cortex.engine.kernels.triton_common import SUM, ragged_block, row_major, search_steps
from cortex.engine.kernels.triton_import import jit, tl, triton

BLOCK_TOKENS = 32
BLOCK_CHANNELS = 128


@jit
def _conv_prefill_kernel(
    x,
    weight,
    conv_state,
    y,
    cu_seqlens,
    state_slots,
    has_initial_state,
    num_seqs,
    num_search_steps,
    stride_x,
    stride_y,
    dim,
    W: tl.constexpr,
    BT: tl.constexpr,
    BD: tl.constexpr,
) -> None:
    # x: [T, dim] (row stride stride_x); weight: [dim, W]; conv_state: [num_slots, dim, W - 1]; y: [T, dim]
    seq, bos, eos, i_b = ragged_block(cu_seqlens, tl.program_id(0), num_seqs, num_search_steps, BT)
    length = eos - bos
    if i_b * BT >= length:
        return
    o_t = tl.arange(0, BT)
    rows = i_b * BT + o_t  # positions within the sequence
    cols = tl.program_id(1) * BD + tl.arange(0, BD)
    m = (rows < length)[:, None] & (cols < dim)[None, :]
    slot = tl.load(state_slots + seq).to(tl.int64)
    initial = tl.load(has_initial_state + seq) != 0
    t0 = (bos + i_b * BT).to(tl.int64)  # the block's first token; offsets within it stay int32
    x += t0 * stride_x
    acc = tl.zeros([BT, BD], dtype=tl.float32)
    for j in tl.static_range(W):
        x_j = tl.load(
            x + (o_t - (W - 1) + j)[:, None] * stride_x + cols[None, :],
            mask=m & (rows - (W - 1) + j >= 0)[:, None],
            other=0.0,
        )
        w_j = tl.load(weight + cols * W + j, mask=cols < dim, other=0.0)
        acc += x_j.to(tl.float32) * w_j.to(tl.float32)[None, :]
    if i_b == 0 and initial:
        # the first W - 1 positions also see the carried history (history index W - 1 + position - tap)
        history = conv_state + slot * dim * (W - 1) + cols[None, :] * (W - 1)
        for j in tl.static_range(W - 1):
            src = rows - (W - 1) + j
            h_j = tl.load(history + (W - 1 + src)[:, None], mask=m & (src < 0)[:, None], other=0.0)
            w_j = tl.load(weight + cols * W + j, mask=cols < dim, other=0.0)
            acc += h_j.to(tl.float32) * w_j.to(tl.float32)[None, :]
    out = acc / (1.0 + tl.exp(-acc))  # silu
    tl.store(y + t0 * stride_y + o_t[:, None] * stride_y + cols[None, :], out.to(y.dtype.element_ty), mask=m)


@jit
def _conv_history_kernel(
    x,
    conv_state,
    cu_seqlens,
    state_slots,
    has_initial_state,
    stride_x,
    dim,
    W: tl.constexpr,
    WP: tl.constexpr,
    BD: tl.constexpr,
) -> None:
    # conv_state[slot, :, p] <- input p - (W - 1) from the sequence's end (from the old history when the
    # sequence is shorter than W - 1); WP: W - 1 rounded up to a power of two
    i_n = tl.program_id(0)
    bos = tl.load(cu_seqlens + i_n)
    length = tl.load(cu_seqlens + i_n + 1) - bos
    cols = tl.program_id(1) * BD + tl.arange(0, BD)
    m_cols = cols < dim
    p = tl.arange(0, WP)
    m_p = p < W - 1
    src = length - (W - 1) + p  # [WP]
    slot = tl.load(state_slots + i_n).to(tl.int64)
    initial = tl.load(has_initial_state + i_n) != 0
    history = conv_state + slot * dim * (W - 1) + cols[:, None] * (W - 1)
    m = m_cols[:, None] & m_p[None, :]
    from_x = tl.load(
        x + (bos + src).to(tl.int64)[None, :] * stride_x + cols[:, None],
        mask=m & (src >= 0)[None, :],
        other=0.0,
    )
    from_h = tl.load(history + (W - 1 + src)[None, :], mask=m & (src < 0)[None, :], other=0.0)
    from_h = tl.where(initial, from_h, 0.0)
    tl.store(history + p[None, :], from_x.to(conv_state.dtype.element_ty) + from_h, mask=m)


@jit
def _conv_decode_kernel(
    x,
    weight,
    conv_state,
    y,
    initial_state_slots,
    token_state_slots,
    num_tokens,
    stride_x,
    stride_y,
    dim,
    W: tl.constexpr,
    WP: tl.constexpr,
    BD: tl.constexpr,
) -> None:
    # x, y: [num_seqs * num_tokens, dim], sequence-major; initial_state_slots: [num_seqs];
    # token_state_slots: [num_seqs, num_tokens]. The history h [BD, WP] stays in float32 registers
    # (exact: it holds model-dtype inputs) and is stored after each token
    i_n = tl.program_id(0)
    cols = tl.program_id(1) * BD + tl.arange(0, BD)
    m_cols = cols < dim
    p = tl.arange(0, WP)
    m = m_cols[:, None] & (p < W - 1)[None, :]
    tile = cols[:, None] * (W - 1) + p[None, :]
    slot = tl.load(initial_state_slots + i_n).to(tl.int64)
    h = tl.load(conv_state + slot * dim * (W - 1) + tile, mask=m, other=0.0).to(tl.float32)
    w_h = tl.load(weight + cols[:, None] * W + p[None, :], mask=m, other=0.0).to(tl.float32)
    w_x = tl.load(weight + cols * W + W - 1, mask=m_cols, other=0.0).to(tl.float32)
    # shift[q, p] = (q == p + 1): sum_q h[:, q] shift[q, p] = h[:, p + 1], the history moved one step
    shift = (p[:, None] == p[None, :] + 1).to(tl.float32)
    newest = (p == W - 2)[None, :]
    for t in range(num_tokens):
        row = (i_n * num_tokens + t).to(tl.int64)
        b_x = tl.load(x + row * stride_x + cols, mask=m_cols, other=0.0).to(tl.float32)
        acc = tl.reduce(h * w_h, 1, SUM) + b_x * w_x
        tl.store(y + row * stride_y + cols, (acc / (1.0 + tl.exp(-acc))).to(y.dtype.element_ty), mask=m_cols)
        h = tl.where(newest, b_x[:, None], tl.reduce(h[:, :, None] * shift[None, :, :], 1, SUM))
        out_slot = tl.load(token_state_slots + i_n * num_tokens + t).to(tl.int64)
        tl.store(conv_state + out_slot * dim * (W - 1) + tile, h.to(conv_state.dtype.element_ty), mask=m)


def _history_width(kernel: int) -> int:
    return int(triton.next_power_of_2(max(kernel - 1, 1)))


def causal_conv1d_prefill_launches(
    x: torch.Tensor,
    weight: torch.Tensor,
    conv_state: torch.Tensor,
    *,
    cu_seqlens: torch.Tensor,
    state_slots: torch.Tensor,
    has_initial_state: torch.Tensor,
    out: torch.Tensor,
) -> tuple[KernelLaunch, KernelLaunch]:
    """The two launches of ``causal_conv1d.causal_conv1d_prefill``, writing ``out: [num_tokens, conv_dim]``
    (contiguous); run them in order."""
    num_tokens, dim = x.shape
    kernel = weight.shape[1]
    num_seqs = state_slots.shape[0]
    x, weight = row_major(x), weight.contiguous()
    channel_blocks = triton.cdiv(dim, BLOCK_CHANNELS)
    ragged = {"cu_seqlens": cu_seqlens, "state_slots": state_slots, "has_initial_state": has_initial_state}
    conv = KernelLaunch(
        _conv_prefill_kernel,
        grid=(num_tokens // BLOCK_TOKENS + num_seqs if num_tokens else 0, channel_blocks),
        args={
            "x": x, "weight": weight, "conv_state": conv_state, "y": out, **ragged,
            "num_seqs": num_seqs, "num_search_steps": search_steps(num_seqs),
            "stride_x": x.stride(0), "stride_y": out.stride(0), "dim": dim,
        },
        constexprs={"W": kernel, "BT": BLOCK_TOKENS, "BD": BLOCK_CHANNELS},
        num_warps=4,
        num_stages=1,
    )  # fmt: skip
    history = KernelLaunch(
        _conv_history_kernel,
        grid=(num_seqs if num_tokens else 0, channel_blocks),
        args={"x": x, "conv_state": conv_state, **ragged, "stride_x": x.stride(0), "dim": dim},
        constexprs={"W": kernel, "WP": _history_width(kernel), "BD": BLOCK_CHANNELS},
        num_warps=4,
        num_stages=1,
    )
    return conv, history


def causal_conv1d_decode_launch(
    x: torch.Tensor,
    weight: torch.Tensor,
    conv_state: torch.Tensor,
    *,
    initial_state_slots: torch.Tensor,
    token_state_slots: torch.Tensor,
    out: torch.Tensor,
) -> KernelLaunch:
    """The launch of ``causal_conv1d.causal_conv1d_decode_multi`` (and, with one token per sequence, of
    ``causal_conv1d_decode``), writing ``out: [num_seqs * num_tokens, conv_dim]``."""
    dim = x.shape[1]
    kernel = weight.shape[1]
    num_seqs, num_tokens = token_state_slots.shape
    x, weight = row_major(x), weight.contiguous()
    return KernelLaunch(
        _conv_decode_kernel,
        grid=(num_seqs if num_tokens else 0, triton.cdiv(dim, BLOCK_CHANNELS)),
        args={
            "x": x, "weight": weight, "conv_state": conv_state, "y": out,
            "initial_state_slots": initial_state_slots,
            "token_state_slots": token_state_slots.contiguous(), "num_tokens": num_tokens,
            "stride_x": x.stride(0), "stride_y": out.stride(0), "dim": dim,
        },
        constexprs={"W": kernel, "WP": _history_width(kernel), "BD": BLOCK_CHANNELS},
        num_warps=4,
        num_stages=1,
    )  # fmt: skip


def compile_specs(shape: ModelShape) -> list[CompileSpec]:
    """A 4096-token prefill of 32 sequences, a decode of 32 and a 4-token verify of 8."""
    dim = shape.conv_dim
    weight = meta(dim, shape.conv_kernel, dtype=shape.dtype)
    conv_state = meta(64, dim, shape.conv_kernel - 1, dtype=shape.dtype)
    x = meta(STEP_NUM_TOKENS[-1], dim, dtype=shape.dtype)
    num_seqs = 32
    ragged = {
        "cu_seqlens": meta(num_seqs + 1, dtype=torch.int32),
        "state_slots": meta(num_seqs, dtype=torch.int64),
        "has_initial_state": meta(num_seqs, dtype=torch.bool),
    }
    conv, history = causal_conv1d_prefill_launches(x, weight, conv_state, **ragged, out=x.new_empty(x.shape))
    specs = [CompileSpec.of("causal_conv1d_prefill", conv), CompileSpec.of("causal_conv1d_history", history)]
    for seqs, tokens in ((num_seqs, 1), (8, 4)):
        rows = seqs * tokens
        decode = causal_conv1d_decode_launch(
            x[:rows], weight, conv_state, initial_state_slots=meta(seqs, dtype=torch.int64),
            token_state_slots=meta(seqs, tokens, dtype=torch.int64), out=x.new_empty(rows, dim),
        )  # fmt: skip
        specs.append(CompileSpec.of("causal_conv1d_decode", decode))
    return specs
