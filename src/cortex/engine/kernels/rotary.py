"""Rotary position embedding, NeoX (rotate-half) style, on the first ``rotary_dim`` dims of each head.

Qwen3.5 declares interleaved M-RoPE (``mrope_section``) over three position streams; for text the
three streams are equal, so every frequency sees the same position and M-RoPE is exactly this 1-D RoPE.
"""

from __future__ import annotations

import torch


def rotary_cos_sin(
    positions: torch.Tensor, inv_freq: torch.Tensor, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    # positions: [num_tokens] int64; inv_freq: [rotary_dim // 2] float32 -> cos, sin: [num_tokens, rotary_dim]
    freqs = positions.float()[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rotary_ref(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x: [num_tokens, num_heads, head_dim]; cos, sin: [num_tokens, rotary_dim]; returns a new tensor
    rotary_dim = cos.shape[-1]
    rot, rest = x[..., :rotary_dim], x[..., rotary_dim:]
    half = rotary_dim // 2
    rotated = torch.cat((-rot[..., half:], rot[..., :half]), dim=-1)
    out = rot * cos[:, None, :] + rotated * sin[:, None, :]
    return torch.cat((out, rest), dim=-1)
