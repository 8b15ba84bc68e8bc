"""RMSNorm variants: plain ``w`` (Qwen3), zero-centred ``(1 + w)`` (Qwen3.5, Qwen3-Next), the same with
the residual add fused in, and the gated norm of Gated DeltaNet outputs, ``w * rmsnorm(x) * silu(z)``.

Checked against transformers' ``Qwen3RMSNorm``, ``Qwen3_5RMSNorm`` and ``Qwen3_5RMSNormGated``. The
kernels compute in fp32 and round where the references round (the residual sum and the normalised
value to the model dtype), so bf16 results differ from the references only by fp32 summation order.
One program normalises a few rows (about 4096 elements).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cortex.engine.kernels.compile_specs import STEP_NUM_TOKENS, CompileSpec, ModelShape, meta
from cortex.engine.kernels.launch import KernelLaunch
from cortex.engine.kernels.selection import KernelBackend
from cortex.engine.kernels.triton_common import SUM
from cortex.engine.kernels.triton_import import jit, tl, triton


def rms_norm(
    x: torch.Tensor, weight: torch.Tensor, eps: float, *, zero_centred: bool, kernels: KernelBackend
) -> torch.Tensor:
    # x: [..., dim]; weight: [dim]
    if kernels == "triton":
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        _rms_norm_launch(x, None, weight, out, None, eps, zero_centred=zero_centred)()
        return out
    return rms_norm_ref(x, weight, eps, zero_centred=zero_centred)


def add_rms_norm(
    x: torch.Tensor,
    residual: torch.Tensor,
    weight: torch.Tensor,
    eps: float,
    *,
    zero_centred: bool,
    kernels: KernelBackend,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``residual = x + residual`` (in x's dtype), then ``(rms_norm(residual), residual)``.

    x, residual: [num_tokens, dim]; returns two new tensors of that shape.
    """
    if kernels == "triton":
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        residual_out = torch.empty_like(out)
        _rms_norm_launch(x, residual, weight, out, residual_out, eps, zero_centred=zero_centred)()
        return out, residual_out
    return add_rms_norm_ref(x, residual, weight, eps, zero_centred=zero_centred)


def gated_rms_norm(
    x: torch.Tensor, z: torch.Tensor, weight: torch.Tensor, eps: float, *, kernels: KernelBackend
) -> torch.Tensor:
    # x, z: [..., dim]; weight: [dim] (plain, initialised to ones). Normalise, then gate with silu(z).
    if kernels == "triton":
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        _gated_rms_norm_launch(x, z, weight, out, eps)()
        return out
    return gated_rms_norm_ref(x, z, weight, eps)


def rms_norm_ref(x: torch.Tensor, weight: torch.Tensor, eps: float, *, zero_centred: bool) -> torch.Tensor:
    x32 = x.float()
    normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    if zero_centred:
        return (normed * (1.0 + weight.float())).to(x.dtype)
    # Qwen3 (Llama convention): cast back first, then scale in the model dtype
    return weight * normed.to(x.dtype)


def add_rms_norm_ref(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float, *, zero_centred: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    residual = x + residual
    return rms_norm_ref(residual, weight, eps, zero_centred=zero_centred), residual


def gated_rms_norm_ref(x: torch.Tensor, z: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    x32 = x.float()
    normed = (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)
    return (weight * normed * F.silu(z.float())).to(x.dtype)


@jit
def _rms_norm_kernel(
    x_ptr,
    residual_ptr,
    weight_ptr,
    out_ptr,
    residual_out_ptr,
    x_stride,
    residual_stride,
    num_rows,
    dim,
    eps,
    HAS_RESIDUAL: tl.constexpr,
    ZERO_CENTRED: tl.constexpr,
    BLOCK_ROWS: tl.constexpr,
    BLOCK: tl.constexpr,
) -> None:
    rows = tl.program_id(0).to(tl.int64) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    offs = tl.arange(0, BLOCK)
    mask = (rows < num_rows)[:, None] & (offs < dim)[None, :]
    dtype = out_ptr.dtype.element_ty
    x = tl.load(x_ptr + rows[:, None] * x_stride + offs[None, :], mask=mask, other=0.0).to(tl.float32)
    if HAS_RESIDUAL:
        residual = tl.load(
            residual_ptr + rows[:, None] * residual_stride + offs[None, :], mask=mask, other=0.0
        )
        x = (x + residual.to(tl.float32)).to(dtype)
        tl.store(residual_out_ptr + rows[:, None] * dim + offs[None, :], x, mask=mask)
        x = x.to(tl.float32)
    rstd = tl.rsqrt(tl.reduce(x * x, 1, SUM) / dim + eps)
    weight = tl.load(weight_ptr + offs, mask=offs < dim, other=0.0).to(tl.float32)[None, :]
    normed = x * rstd[:, None]
    # Qwen3.5: (1 + w) in fp32; Qwen3 (Llama convention): round first, then scale
    y = normed * (1.0 + weight) if ZERO_CENTRED else normed.to(dtype).to(tl.float32) * weight
    tl.store(out_ptr + rows[:, None] * dim + offs[None, :], y.to(dtype), mask=mask)


def _as_rows(x: torch.Tensor) -> torch.Tensor:
    """``x`` as [rows, dim] with a contiguous last dim (a view where the rows are evenly spaced)."""
    rows = x.reshape(-1, x.shape[-1])
    return rows if rows.stride(-1) == 1 else rows.contiguous()


def _tiling(dim: int) -> tuple[int, int, int]:
    """(BLOCK, BLOCK_ROWS, num_warps): a program normalises BLOCK_ROWS rows, about 4096 elements."""
    block = triton.next_power_of_2(dim)
    block_rows = max(1, min(16, 4096 // block))
    return block, block_rows, 8 if block >= 4096 else 4


def _rms_norm_launch(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    weight: torch.Tensor,
    out: torch.Tensor,
    residual_out: torch.Tensor | None,
    eps: float,
    *,
    zero_centred: bool,
) -> KernelLaunch:
    # x, residual: [..., dim]; out, residual_out: contiguous, x's shape
    x2 = _as_rows(x)
    r2 = _as_rows(residual) if residual is not None else x2
    dim = x.shape[-1]
    block, block_rows, num_warps = _tiling(dim)
    return KernelLaunch(
        _rms_norm_kernel,
        grid=(triton.cdiv(x2.shape[0], block_rows),),
        args={
            "x_ptr": x2,
            "residual_ptr": r2,
            "weight_ptr": weight,
            "out_ptr": out,
            "residual_out_ptr": residual_out if residual_out is not None else out,
            "x_stride": x2.stride(0),
            "residual_stride": r2.stride(0),
            "num_rows": x2.shape[0],
            "dim": dim,
            "eps": float(eps),
        },
        constexprs={
            "HAS_RESIDUAL": residual is not None,
            "ZERO_CENTRED": zero_centred,
            "BLOCK_ROWS": block_rows,
            "BLOCK": block,
        },
        num_warps=num_warps,
        num_stages=1,
    )


@jit
def _gated_rms_norm_kernel(
    x_ptr,
    z_ptr,
    weight_ptr,
    out_ptr,
    x_stride,
    z_stride,
    num_rows,
    dim,
    eps,
    BLOCK_ROWS: tl.constexpr,
    BLOCK: tl.constexpr,
) -> None:
    rows = tl.program_id(0).to(tl.int64) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    offs = tl.arange(0, BLOCK)
    mask = (rows < num_rows)[:, None] & (offs < dim)[None, :]
    dtype = out_ptr.dtype.element_ty
    x = tl.load(x_ptr + rows[:, None] * x_stride + offs[None, :], mask=mask, other=0.0).to(tl.float32)
    z = tl.load(z_ptr + rows[:, None] * z_stride + offs[None, :], mask=mask, other=0.0).to(tl.float32)
    weight = tl.load(weight_ptr + offs, mask=offs < dim, other=0.0).to(tl.float32)[None, :]
    rstd = tl.rsqrt(tl.reduce(x * x, 1, SUM) / dim + eps)
    normed = (x * rstd[:, None]).to(dtype).to(tl.float32)
    scaled = (weight * normed).to(dtype).to(tl.float32)
    tl.store(
        out_ptr + rows[:, None] * dim + offs[None, :], (scaled * z / (1.0 + tl.exp(-z))).to(dtype), mask=mask
    )


def _gated_rms_norm_launch(
    x: torch.Tensor, z: torch.Tensor, weight: torch.Tensor, out: torch.Tensor, eps: float
) -> KernelLaunch:
    # x, z: [..., dim]; out: contiguous, x's shape
    x2, z2 = _as_rows(x), _as_rows(z)
    dim = x.shape[-1]
    block, block_rows, num_warps = _tiling(dim)
    return KernelLaunch(
        _gated_rms_norm_kernel,
        grid=(triton.cdiv(x2.shape[0], block_rows),),
        args={
            "x_ptr": x2,
            "z_ptr": z2,
            "weight_ptr": weight,
            "out_ptr": out,
            "x_stride": x2.stride(0),
            "z_stride": z2.stride(0),
            "num_rows": x2.shape[0],
            "dim": dim,
            "eps": float(eps),
        },
        constexprs={"BLOCK_ROWS": block_rows, "BLOCK": block},
        num_warps=num_warps,
        num_stages=1,
    )


def compile_specs(shape: ModelShape) -> list[CompileSpec]:
    specs = []
    for num_tokens in STEP_NUM_TOKENS:
        x = meta(num_tokens, shape.hidden_size, dtype=shape.dtype)
        w = meta(shape.hidden_size, dtype=shape.dtype)
        for residual in (None, x):
            launch = _rms_norm_launch(x, residual, w, x, residual, 1e-6, zero_centred=True)
            specs.append(CompileSpec.of("add_rms_norm" if residual is not None else "rms_norm", launch))
        o = meta(num_tokens, shape.linear_num_v_heads, shape.linear_head_v_dim, dtype=shape.dtype)
        gate_w = meta(shape.linear_head_v_dim, dtype=shape.dtype)
        specs.append(CompileSpec.of("gated_rms_norm", _gated_rms_norm_launch(o, o, gate_w, o, 1e-6)))
    return specs
