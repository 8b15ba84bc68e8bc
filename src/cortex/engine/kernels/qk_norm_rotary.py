"""Per-head q/k RMSNorm followed by (partial) rotary, fused: the first ops of full attention.

``q = rotary(rms_norm(q, q_weight))``, ``k = rotary(rms_norm(k, k_weight))`` per head over
``head_dim``; rotary (NeoX, rotate-half) touches the first ``rotary_dim`` dims only. The reference is
the two unfused ops; the kernel rounds to the model dtype where they do (after the norm, after each
rotary product and after their sum), so only fp32 summation order differs. One launch: program
(token, 0) handles the token's q heads, (token, 1) its k heads.
"""

from __future__ import annotations

import torch

from cortex.engine.kernels.compile_specs import STEP_NUM_TOKENS, CompileSpec, ModelShape, meta
from cortex.engine.kernels.launch import KernelLaunch
from cortex.engine.kernels.rms_norm import rms_norm_ref
from cortex.engine.kernels.rotary import apply_rotary_ref
from cortex.engine.kernels.selection import KernelBackend
from cortex.engine.kernels.triton_common import SUM
from cortex.engine.kernels.triton_import import jit, tl, triton


def qk_norm_rotary(
    q: torch.Tensor,
    k: torch.Tensor,
    q_weight: torch.Tensor,
    k_weight: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    eps: float,
    *,
    zero_centred: bool,
    kernels: KernelBackend,
) -> tuple[torch.Tensor, torch.Tensor]:
    # q: [num_tokens, num_heads, head_dim], k: [num_tokens, num_kv_heads, head_dim] (any token/head
    # strides, head_dim contiguous); cos, sin: [num_tokens, rotary_dim]. Returns new contiguous q, k.
    if kernels == "triton":
        q_out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
        k_out = torch.empty(k.shape, dtype=k.dtype, device=k.device)
        qk_norm_rotary_launch(
            q, k, q_weight, k_weight, cos, sin, q_out, k_out, eps, zero_centred=zero_centred
        )()
        return q_out, k_out
    return qk_norm_rotary_ref(q, k, q_weight, k_weight, cos, sin, eps, zero_centred=zero_centred)


def qk_norm_rotary_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    q_weight: torch.Tensor,
    k_weight: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    eps: float,
    *,
    zero_centred: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    q = apply_rotary_ref(rms_norm_ref(q, q_weight, eps, zero_centred=zero_centred), cos, sin)
    k = apply_rotary_ref(rms_norm_ref(k, k_weight, eps, zero_centred=zero_centred), cos, sin)
    return q, k


@jit
def _norm_rotary_heads(
    src,
    stride_head,
    weight_ptr,
    cos_row,
    sin_row,
    dst,
    eps,
    NUM: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    ROTARY_DIM: tl.constexpr,
    ZERO_CENTRED: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_D: tl.constexpr,
) -> None:
    # one token's NUM heads: src[h * stride_head + d] -> dst[h * HEAD_DIM + d]
    dtype = dst.dtype.element_ty
    half: tl.constexpr = ROTARY_DIM // 2
    h = tl.arange(0, BLOCK_H)[:, None]
    d = tl.arange(0, BLOCK_D)[None, :]
    mask = (h < NUM) & (d < HEAD_DIM)
    in_rotary = d < ROTARY_DIM
    partner = tl.where(d < half, d + half, d - half)
    x = tl.load(src + h * stride_head + d, mask=mask, other=0.0).to(tl.float32)
    x_partner = tl.load(src + h * stride_head + partner, mask=mask & in_rotary, other=0.0).to(tl.float32)
    rstd = tl.rsqrt(tl.reduce(x * x, 1, SUM) / HEAD_DIM + eps)[:, None]
    w = tl.load(weight_ptr + d, mask=d < HEAD_DIM, other=0.0).to(tl.float32)
    w_partner = tl.load(weight_ptr + partner, mask=in_rotary, other=0.0).to(tl.float32)
    if ZERO_CENTRED:
        y = (x * rstd * (1.0 + w)).to(dtype).to(tl.float32)
        y_partner = (x_partner * rstd * (1.0 + w_partner)).to(dtype).to(tl.float32)
    else:
        y = ((x * rstd).to(dtype).to(tl.float32) * w).to(dtype).to(tl.float32)
        y_partner = ((x_partner * rstd).to(dtype).to(tl.float32) * w_partner).to(dtype).to(tl.float32)
    cos = tl.load(cos_row + d, mask=in_rotary, other=1.0).to(tl.float32)
    sin = tl.load(sin_row + d, mask=in_rotary, other=0.0).to(tl.float32)
    rotated = tl.where(d < half, -y_partner, y_partner)
    out = (y * cos).to(dtype).to(tl.float32) + (rotated * sin).to(dtype).to(tl.float32)
    tl.store(dst + h * HEAD_DIM + d, tl.where(in_rotary, out, y).to(dtype), mask=mask)


@jit
def _qk_norm_rotary_kernel(
    q_ptr,
    k_ptr,
    q_weight_ptr,
    k_weight_ptr,
    cos_ptr,
    sin_ptr,
    q_out_ptr,
    k_out_ptr,
    q_stride_token,
    q_stride_head,
    k_stride_token,
    k_stride_head,
    cos_stride,
    eps,
    NUM_HEADS: tl.constexpr,
    NUM_KV_HEADS: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    ROTARY_DIM: tl.constexpr,
    ZERO_CENTRED: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_KV: tl.constexpr,
    BLOCK_D: tl.constexpr,
) -> None:
    # program (token, 0): the token's q heads; (token, 1): its k heads
    token = tl.program_id(0).to(tl.int64)
    cos_row = cos_ptr + token * cos_stride
    sin_row = sin_ptr + token * cos_stride
    if tl.program_id(1) == 0:
        _norm_rotary_heads(
            q_ptr + token * q_stride_token,
            q_stride_head,
            q_weight_ptr,
            cos_row,
            sin_row,
            q_out_ptr + token * NUM_HEADS * HEAD_DIM,
            eps,
            NUM_HEADS,
            HEAD_DIM,
            ROTARY_DIM,
            ZERO_CENTRED,
            BLOCK_H,
            BLOCK_D,
        )
    else:
        _norm_rotary_heads(
            k_ptr + token * k_stride_token,
            k_stride_head,
            k_weight_ptr,
            cos_row,
            sin_row,
            k_out_ptr + token * NUM_KV_HEADS * HEAD_DIM,
            eps,
            NUM_KV_HEADS,
            HEAD_DIM,
            ROTARY_DIM,
            ZERO_CENTRED,
            BLOCK_KV,
            BLOCK_D,
        )


def qk_norm_rotary_launch(
    q: torch.Tensor,
    k: torch.Tensor,
    q_weight: torch.Tensor,
    k_weight: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    q_out: torch.Tensor,
    k_out: torch.Tensor,
    eps: float,
    *,
    zero_centred: bool,
) -> KernelLaunch:
    num_tokens, num_heads, head_dim = q.shape
    num_kv_heads = k.shape[1]
    rotary_dim = cos.shape[-1]
    assert q.stride(2) == 1, "head_dim must be contiguous"
    assert k.stride(2) == 1, "head_dim must be contiguous"
    assert cos.stride(-1) == 1, "cos and sin rows must be contiguous"
    assert sin.stride(0) == cos.stride(0), "cos and sin share a layout"
    assert rotary_dim % 2 == 0, "rotary_dim is even"
    assert rotary_dim <= head_dim, "rotary covers at most head_dim"
    return KernelLaunch(
        _qk_norm_rotary_kernel,
        grid=(num_tokens, 2),
        args={
            "q_ptr": q,
            "k_ptr": k,
            "q_weight_ptr": q_weight,
            "k_weight_ptr": k_weight,
            "cos_ptr": cos,
            "sin_ptr": sin,
            "q_out_ptr": q_out,
            "k_out_ptr": k_out,
            "q_stride_token": q.stride(0),
            "q_stride_head": q.stride(1),
            "k_stride_token": k.stride(0),
            "k_stride_head": k.stride(1),
            "cos_stride": cos.stride(0),
            "eps": float(eps),
        },
        constexprs={
            "NUM_HEADS": num_heads,
            "NUM_KV_HEADS": num_kv_heads,
            "HEAD_DIM": head_dim,
            "ROTARY_DIM": rotary_dim,
            "ZERO_CENTRED": zero_centred,
            "BLOCK_H": triton.next_power_of_2(num_heads),
            "BLOCK_KV": triton.next_power_of_2(num_kv_heads),
            "BLOCK_D": triton.next_power_of_2(head_dim),
        },
        num_warps=8 if num_heads * head_dim > 4096 else 4,
        num_stages=1,
    )


def compile_specs(shape: ModelShape) -> list[CompileSpec]:
    specs = []
    for num_tokens in STEP_NUM_TOKENS:
        # q as it leaves q_proj: [tokens, heads, 2 * head_dim] split into query | gate
        q = meta(num_tokens, shape.num_heads, 2 * shape.head_dim, dtype=shape.dtype)[..., : shape.head_dim]
        k = meta(num_tokens, shape.num_kv_heads, shape.head_dim, dtype=shape.dtype)
        w = meta(shape.head_dim, dtype=shape.dtype)
        cos = meta(num_tokens, shape.rotary_dim, dtype=shape.dtype)
        q_out = meta(num_tokens, shape.num_heads, shape.head_dim, dtype=shape.dtype)
        launch = qk_norm_rotary_launch(q, k, w, w, cos, cos, q_out, k, 1e-6, zero_centred=True)
        specs.append(CompileSpec.of("qk_norm_rotary", launch))
    return specs
