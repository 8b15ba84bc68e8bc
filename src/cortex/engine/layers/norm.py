"""RMSNorm modules: plain (Qwen3, weight initialised to ones) or zero-centred ``(1 + w)`` (Qwen3.5 /
Qwen3-Next, weight initialised to zeros), and the gated norm used on Gated DeltaNet outputs."""

from __future__ import annotations

import torch
from torch import nn

from cortex.engine.kernels.rms_norm import add_rms_norm, gated_rms_norm, rms_norm
from cortex.engine.kernels.selection import KernelBackend


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float, *, zero_centred: bool, kernels: KernelBackend) -> None:
        super().__init__()
        self.eps = eps
        self.zero_centred = zero_centred
        self.kernels = kernels
        self.weight = nn.Parameter(torch.zeros(dim) if zero_centred else torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps, zero_centred=self.zero_centred, kernels=self.kernels)

    def add_forward(self, x: torch.Tensor, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``residual += x``, then normalise it: returns ``(norm(x + residual), x + residual)``."""
        return add_rms_norm(
            x, residual, self.weight, self.eps, zero_centred=self.zero_centred, kernels=self.kernels
        )


class GatedRMSNorm(nn.Module):
    """``w * rmsnorm(x) * silu(z)`` over the last dim; ``w`` is a plain weight (not zero-centred)."""

    def __init__(self, dim: int, eps: float, *, kernels: KernelBackend) -> None:
        super().__init__()
        self.eps = eps
        self.kernels = kernels
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return gated_rms_norm(x, z, self.weight, self.eps, kernels=self.kernels)
