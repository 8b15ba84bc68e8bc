"""Rotary embedding: the inverse frequencies of a (partial) rotary and cos/sin for given positions."""

from __future__ import annotations

import torch
from torch import nn

from cortex.engine.kernels.rotary import rotary_cos_sin


class RotaryEmbedding(nn.Module):
    """Holds no tensors (the model is built on the meta device); inv_freq is rotary_dim / 2 values."""

    def __init__(self, rotary_dim: int, theta: float) -> None:
        super().__init__()
        self.rotary_dim = rotary_dim
        self.theta = theta

    def forward(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        # positions: [num_tokens] -> cos, sin: [num_tokens, rotary_dim] in dtype
        exponents = torch.arange(0, self.rotary_dim, 2, device=positions.device).float() / self.rotary_dim
        inv_freq = 1.0 / (self.theta**exponents)
        return rotary_cos_sin(positions, inv_freq, dtype)
