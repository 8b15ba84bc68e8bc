"""RMSNorm variants: plain ``w`` (Qwen3), zero-centred ``(1 + w)`` (Qwen3.5, Qwen3-Next) and the gated
norm of Gated DeltaNet outputs, ``w * rmsnorm(x) * silu(z)``.

Checked against transformers' ``Qwen3RMSNorm``, ``Qwen3_5RMSNorm`` and ``Qwen3_5RMSNormGated``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rms_norm_ref(x: torch.Tensor, weight: torch.Tensor, eps: float, *, zero_centred: bool) -> torch.Tensor:
    # x: [..., dim]; weight: [dim]
    x32 = x.float()
    normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    if zero_centred:
        return (normed * (1.0 + weight.float())).to(x.dtype)
    # Qwen3 (Llama convention): cast back first, then scale in the model dtype
    return weight * normed.to(x.dtype)


def gated_rms_norm_ref(x: torch.Tensor, z: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    # x, z: [..., dim]; weight: [dim] (plain, initialised to ones). Normalise, then gate with silu(z).
    x32 = x.float()
    normed = (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)
    return (weight * normed * F.silu(z.float())).to(x.dtype)


# Dispatch points (see kernels/__init__.py): the references serve every device until a GPU kernel lands.
rms_norm = rms_norm_ref
gated_rms_norm = gated_rms_norm_ref
