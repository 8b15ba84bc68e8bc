"""Fused MoE (Qwen3.5-MoE, Qwen3.6-35B-A3B, Qwen3-Next): the routed experts' SwiGLU GEMMs over the
tokens routed to each, the weighted sum over each token's top-k, and the gated shared expert.

``out[t] = sum_j w[t, j] * down_e(silu(gate_e x_t) * up_e x_t) + sigmoid(g_t) * shared[t]`` with
``e = topk_ids[t, j]``, ``gate_e, up_e`` the two halves of ``gate_up_proj[e]: [2I, H]`` (gate rows
first) and ``down_e = down_proj[e]: [H, I]``. The router (softmax, top-k, renormalisation) and the
shared expert's own GEMMs are plain torch in the layer; here ``shared`` and its gate logit ``g`` are
added in the final sum.

The kernel path follows vLLM's fused_moe design (written here, not copied): the ``num_tokens *
top_k`` (token, expert) pairs are sorted by expert and each expert's run padded to a multiple of
``BLOCK_M`` (``align_by_expert``, plain torch ops, no host read: the padded layout's size is a host
bound, and blocks past the real end return at once). Then one grouped GEMM computes
``silu(gate) * up`` for every block of one expert's rows (the SwiGLU fused in its epilogue), a
second multiplies by ``down_proj`` and the routing weight, and a third sums each token's top-k rows
with the gated shared expert. No Python loop over experts, no device value read back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cortex.engine.kernels.compile_specs import STEP_NUM_TOKENS, CompileSpec, ModelShape, meta
from cortex.engine.kernels.launch import KernelLaunch
from cortex.engine.kernels.selection import KernelBackend
from cortex.engine.kernels.triton_common import dot_operand_dtype, dot_precision
from cortex.engine.kernels.triton_import import jit, tl, triton


def fused_moe(
    x: torch.Tensor,
    gate_up_proj: torch.Tensor,
    down_proj: torch.Tensor,
    topk_weights: torch.Tensor,
    topk_ids: torch.Tensor,
    *,
    shared: torch.Tensor | None = None,
    shared_gate: torch.Tensor | None = None,
    kernels: KernelBackend,
) -> torch.Tensor:
    # x: [num_tokens, H]; gate_up_proj: [E, 2I, H]; down_proj: [E, H, I]; topk_weights: [num_tokens,
    # top_k] (x's dtype); topk_ids: [num_tokens, top_k] int64; shared: [num_tokens, H] or None;
    # shared_gate: [num_tokens, 1] logits or None. Returns [num_tokens, H] in x's dtype.
    if kernels == "triton":
        return _fused_moe_triton(x, gate_up_proj, down_proj, topk_weights, topk_ids, shared, shared_gate)
    return fused_moe_ref(
        x, gate_up_proj, down_proj, topk_weights, topk_ids, shared=shared, shared_gate=shared_gate
    )


def fused_moe_ref(
    x: torch.Tensor,
    gate_up_proj: torch.Tensor,
    down_proj: torch.Tensor,
    topk_weights: torch.Tensor,
    topk_ids: torch.Tensor,
    *,
    shared: torch.Tensor | None = None,
    shared_gate: torch.Tensor | None = None,
) -> torch.Tensor:
    """One expert at a time over the tokens routed to it (reads the routing back to the host)."""
    out = torch.zeros_like(x)
    for expert in torch.unique(topk_ids).tolist():
        token_idx, k_idx = torch.where(topk_ids == expert)
        gate, up = F.linear(x[token_idx], gate_up_proj[expert]).chunk(2, dim=-1)
        y = F.linear(F.silu(gate) * up, down_proj[expert])
        out.index_add_(0, token_idx, y * topk_weights[token_idx, k_idx, None])
    if shared is not None:
        assert shared_gate is not None, "the shared expert comes with its gate"
        out = out + torch.sigmoid(shared_gate) * shared
    return out


def align_by_expert(
    topk_ids: torch.Tensor, num_experts: int, block_m: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sort the (token, k) pairs by expert, each expert's run padded to a multiple of ``block_m``.

    topk_ids: [num_tokens, top_k] -> (sorted_ids [max_padded] int32: flat pair index ``t * top_k + j``,
    or ``num_tokens * top_k`` for padding; block_experts [max_padded // block_m] int32: the expert of
    each block, ``num_experts`` past the end; num_padded [1] int32: the padded length). ``max_padded``
    is a host bound, so nothing is read back.
    """
    flat = topk_ids.reshape(-1)
    num_pairs = flat.numel()
    max_padded = _max_padded(num_pairs, num_experts, block_m)
    counts = torch.zeros(num_experts, dtype=torch.int64, device=flat.device)
    counts.scatter_add_(0, flat, torch.ones_like(flat))
    padded_counts = (counts + block_m - 1) // block_m * block_m
    padded_ends = padded_counts.cumsum(0)
    order = torch.sort(flat, stable=True).indices  # pair indices, grouped by expert
    sorted_experts = flat[order]
    first_of_expert = counts.cumsum(0) - counts
    rank = torch.arange(num_pairs, device=flat.device) - first_of_expert[sorted_experts]
    dest = padded_ends[sorted_experts] - padded_counts[sorted_experts] + rank
    sorted_ids = torch.full((max_padded,), num_pairs, dtype=torch.int32, device=flat.device)
    sorted_ids.scatter_(0, dest, order.to(torch.int32))
    block_starts = torch.arange(0, max_padded, block_m, device=flat.device)
    block_experts = torch.searchsorted(padded_ends, block_starts, right=True).to(torch.int32)
    return sorted_ids, block_experts, padded_ends[-1:].to(torch.int32)


def _max_padded(num_pairs: int, num_experts: int, block_m: int) -> int:
    # every non-empty expert adds at most block_m - 1 padding rows; at most min(E, pairs) are non-empty
    bound = num_pairs + min(num_experts, num_pairs) * (block_m - 1)
    return -(-bound // block_m) * block_m


def _block_m(num_pairs: int, num_experts: int) -> int:
    """Rows per GEMM block: 16 when experts see few tokens each (decode), else 64."""
    return 16 if num_pairs <= 4 * num_experts else 64


@jit
def _gate_up_kernel(
    x_ptr,
    w_ptr,  # [E, 2I, H]
    out_ptr,  # [num_pairs, I]: silu(gate) * up per (token, k) pair
    sorted_ids_ptr,
    block_experts_ptr,
    num_padded_ptr,
    num_pairs,
    hidden,
    inter,
    x_stride,
    w_stride_e,
    TOP_K: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    DOT_DT: tl.constexpr,
    PRECISION: tl.constexpr,
) -> None:
    block = tl.program_id(0)
    n_block = tl.program_id(1)
    if block * BLOCK_M < tl.load(num_padded_ptr):
        expert = tl.load(block_experts_ptr + block).to(tl.int64)
        rows = block * BLOCK_M + tl.arange(0, BLOCK_M)
        pair = tl.load(sorted_ids_ptr + rows)
        row_valid = pair < num_pairs
        token = (pair // TOP_K).to(tl.int64)
        n = n_block * BLOCK_N + tl.arange(0, BLOCK_N)
        n_valid = n < inter
        kk = tl.arange(0, BLOCK_K)
        w_gate = w_ptr + expert * w_stride_e + n[None, :].to(tl.int64) * hidden
        w_up = w_gate + inter * hidden
        gate = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        up = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        for k0 in range(0, hidden, BLOCK_K):
            k = k0 + kk
            k_valid = k < hidden
            a = tl.load(
                x_ptr + token[:, None] * x_stride + k[None, :],
                mask=row_valid[:, None] & k_valid[None, :],
                other=0.0,
            )
            b_mask = k_valid[:, None] & n_valid[None, :]
            gate += tl.dot(
                a.to(DOT_DT),
                tl.load(w_gate + k[:, None], mask=b_mask, other=0.0).to(DOT_DT),
                input_precision=PRECISION,
            )
            up += tl.dot(
                a.to(DOT_DT),
                tl.load(w_up + k[:, None], mask=b_mask, other=0.0).to(DOT_DT),
                input_precision=PRECISION,
            )
        dtype = out_ptr.dtype.element_ty
        # the references round each GEMM's output to the model dtype before the SwiGLU
        gate = gate.to(dtype).to(tl.float32)
        up = up.to(dtype).to(tl.float32)
        act = (gate * (1.0 / (1.0 + tl.exp(-gate)))).to(dtype).to(tl.float32) * up
        tl.store(
            out_ptr + pair[:, None].to(tl.int64) * inter + n[None, :],
            act.to(dtype),
            mask=row_valid[:, None] & n_valid[None, :],
        )


@jit
def _down_kernel(
    act_ptr,  # [num_pairs, I]
    w_ptr,  # [E, H, I]
    weights_ptr,  # [num_pairs] routing weights
    out_ptr,  # [num_pairs, H]
    sorted_ids_ptr,
    block_experts_ptr,
    num_padded_ptr,
    num_pairs,
    hidden,
    inter,
    w_stride_e,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    DOT_DT: tl.constexpr,
    PRECISION: tl.constexpr,
) -> None:
    block = tl.program_id(0)
    n_block = tl.program_id(1)
    if block * BLOCK_M < tl.load(num_padded_ptr):
        expert = tl.load(block_experts_ptr + block).to(tl.int64)
        rows = block * BLOCK_M + tl.arange(0, BLOCK_M)
        pair = tl.load(sorted_ids_ptr + rows).to(tl.int64)
        row_valid = pair < num_pairs
        n = n_block * BLOCK_N + tl.arange(0, BLOCK_N)
        n_valid = n < hidden
        kk = tl.arange(0, BLOCK_K)
        w = w_ptr + expert * w_stride_e + n[None, :].to(tl.int64) * inter
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        for k0 in range(0, inter, BLOCK_K):
            k = k0 + kk
            k_valid = k < inter
            a = tl.load(
                act_ptr + pair[:, None] * inter + k[None, :],
                mask=row_valid[:, None] & k_valid[None, :],
                other=0.0,
            )
            b = tl.load(w + k[:, None], mask=k_valid[:, None] & n_valid[None, :], other=0.0)
            acc += tl.dot(a.to(DOT_DT), b.to(DOT_DT), input_precision=PRECISION)
        dtype = out_ptr.dtype.element_ty
        weight = tl.load(weights_ptr + pair, mask=row_valid, other=0.0).to(tl.float32)
        y = acc.to(dtype).to(tl.float32) * weight[:, None]
        tl.store(
            out_ptr + pair[:, None] * hidden + n[None, :],
            y.to(dtype),
            mask=row_valid[:, None] & n_valid[None, :],
        )


@jit
def _combine_kernel(
    expert_out_ptr,  # [num_tokens * TOP_K, H]
    shared_ptr,
    shared_gate_ptr,
    out_ptr,
    hidden,
    shared_stride,
    shared_gate_stride,
    TOP_K: tl.constexpr,
    HAS_SHARED: tl.constexpr,
    BLOCK: tl.constexpr,
) -> None:
    token = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = h < hidden
    dtype = out_ptr.dtype.element_ty
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for j in range(TOP_K):
        acc += tl.load(expert_out_ptr + (token * TOP_K + j) * hidden + h, mask=mask, other=0.0).to(tl.float32)
    if HAS_SHARED:
        g = tl.load(shared_gate_ptr + token * shared_gate_stride).to(tl.float32)
        s = tl.load(shared_ptr + token * shared_stride + h, mask=mask, other=0.0).to(tl.float32)
        acc = acc.to(dtype).to(tl.float32) + ((1.0 / (1.0 + tl.exp(-g))).to(dtype).to(tl.float32) * s).to(
            dtype
        ).to(tl.float32)
    tl.store(out_ptr + token * hidden + h, acc.to(dtype), mask=mask)


def _gemm_tiles(n: int, k: int) -> tuple[int, int]:
    return min(64, max(16, triton.next_power_of_2(n))), min(64, max(16, triton.next_power_of_2(k)))


def fused_moe_launches(
    x: torch.Tensor,
    gate_up_proj: torch.Tensor,
    down_proj: torch.Tensor,
    topk_weights: torch.Tensor,
    sorted_ids: torch.Tensor,
    block_experts: torch.Tensor,
    num_padded: torch.Tensor,
    act: torch.Tensor,
    expert_out: torch.Tensor,
    out: torch.Tensor,
    shared: torch.Tensor | None,
    shared_gate: torch.Tensor | None,
    *,
    top_k: int,
    block_m: int,
) -> tuple[KernelLaunch, KernelLaunch, KernelLaunch]:
    """The three launches over an ``align_by_expert`` layout (``act``, ``expert_out``: scratch)."""
    num_tokens, hidden = x.shape
    inter = down_proj.shape[2]
    num_pairs = num_tokens * top_k
    assert x.stride(1) == 1, "rows of x must be contiguous"
    assert gate_up_proj.is_contiguous(), "expert weights are contiguous"
    assert down_proj.is_contiguous(), "expert weights are contiguous"
    num_blocks = sorted_ids.shape[0] // block_m
    dots = {"DOT_DT": dot_operand_dtype(x), "PRECISION": dot_precision(x)}
    n1, k1 = _gemm_tiles(inter, hidden)
    gate_up = KernelLaunch(
        _gate_up_kernel,
        grid=(num_blocks, triton.cdiv(inter, n1)),
        args={
            "x_ptr": x,
            "w_ptr": gate_up_proj,
            "out_ptr": act,
            "sorted_ids_ptr": sorted_ids,
            "block_experts_ptr": block_experts,
            "num_padded_ptr": num_padded,
            "num_pairs": num_pairs,
            "hidden": hidden,
            "inter": inter,
            "x_stride": x.stride(0),
            "w_stride_e": gate_up_proj.stride(0),
        },
        constexprs={"TOP_K": top_k, "BLOCK_M": block_m, "BLOCK_N": n1, "BLOCK_K": k1, **dots},
        num_warps=4,
        num_stages=3,
    )
    n2, k2 = _gemm_tiles(hidden, inter)
    down = KernelLaunch(
        _down_kernel,
        grid=(num_blocks, triton.cdiv(hidden, n2)),
        args={
            "act_ptr": act,
            "w_ptr": down_proj,
            "weights_ptr": topk_weights,
            "out_ptr": expert_out,
            "sorted_ids_ptr": sorted_ids,
            "block_experts_ptr": block_experts,
            "num_padded_ptr": num_padded,
            "num_pairs": num_pairs,
            "hidden": hidden,
            "inter": inter,
            "w_stride_e": down_proj.stride(0),
        },
        constexprs={"BLOCK_M": block_m, "BLOCK_N": n2, "BLOCK_K": k2, **dots},
        num_warps=4,
        num_stages=3,
    )
    block = min(1024, triton.next_power_of_2(hidden))
    combine = KernelLaunch(
        _combine_kernel,
        grid=(num_tokens, triton.cdiv(hidden, block)),
        args={
            "expert_out_ptr": expert_out,
            "shared_ptr": shared if shared is not None else x,
            "shared_gate_ptr": shared_gate if shared_gate is not None else x,
            "out_ptr": out,
            "hidden": hidden,
            "shared_stride": shared.stride(0) if shared is not None else 0,
            "shared_gate_stride": shared_gate.stride(0) if shared_gate is not None else 0,
        },
        constexprs={"TOP_K": top_k, "HAS_SHARED": shared is not None, "BLOCK": block},
        num_warps=4,
        num_stages=1,
    )
    return gate_up, down, combine


def _fused_moe_triton(
    x: torch.Tensor,
    gate_up_proj: torch.Tensor,
    down_proj: torch.Tensor,
    topk_weights: torch.Tensor,
    topk_ids: torch.Tensor,
    shared: torch.Tensor | None,
    shared_gate: torch.Tensor | None,
) -> torch.Tensor:
    num_tokens, top_k = topk_ids.shape
    num_experts, inter = down_proj.shape[0], down_proj.shape[2]
    block_m = _block_m(num_tokens * top_k, num_experts)
    sorted_ids, block_experts, num_padded = align_by_expert(topk_ids, num_experts, block_m)
    act = torch.empty(num_tokens * top_k, inter, dtype=x.dtype, device=x.device)
    expert_out = torch.empty(num_tokens * top_k, x.shape[1], dtype=x.dtype, device=x.device)
    out = torch.empty_like(x)
    launches = fused_moe_launches(
        x,
        gate_up_proj,
        down_proj,
        topk_weights.reshape(-1).contiguous(),
        sorted_ids,
        block_experts,
        num_padded,
        act,
        expert_out,
        out,
        shared,
        shared_gate,
        top_k=top_k,
        block_m=block_m,
    )
    for launch in launches:
        launch()
    return out


def compile_specs(shape: ModelShape) -> list[CompileSpec]:
    if not shape.num_experts:
        return []
    specs = []
    e, k, inter, hidden = (
        shape.num_experts,
        shape.num_experts_per_tok,
        shape.moe_intermediate_size,
        shape.hidden_size,
    )
    for num_tokens in STEP_NUM_TOKENS:
        num_pairs = num_tokens * k
        block_m = _block_m(num_pairs, e)
        padded = _max_padded(num_pairs, e, block_m)
        x = meta(num_tokens, hidden, dtype=shape.dtype)
        launches = fused_moe_launches(
            x,
            meta(e, 2 * inter, hidden, dtype=shape.dtype),
            meta(e, hidden, inter, dtype=shape.dtype),
            meta(num_pairs, dtype=shape.dtype),
            meta(padded, dtype=torch.int32),
            meta(padded // block_m, dtype=torch.int32),
            meta(1, dtype=torch.int32),
            meta(num_pairs, inter, dtype=shape.dtype),
            meta(num_pairs, hidden, dtype=shape.dtype),
            x,
            x,
            meta(num_tokens, 1, dtype=shape.dtype),
            top_k=k,
            block_m=block_m,
        )
        specs += [
            CompileSpec.of(f"fused_moe_{name}", launch)
            for name, launch in zip(("gate_up", "down", "combine"), launches, strict=True)
        ]
    return specs
