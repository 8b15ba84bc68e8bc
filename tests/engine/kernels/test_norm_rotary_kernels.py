"""RMSNorm variants and partial rotary."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cortex.engine.kernels.rms_norm import gated_rms_norm, rms_norm
from cortex.engine.kernels.rotary import apply_rotary, rotary_cos_sin


def test_rms_norm_conventions() -> None:
    x, w = torch.randn(5, 16), torch.randn(16)
    normed = x / x.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()
    torch.testing.assert_close(rms_norm(x, w, 1e-6, zero_centred=False), normed * w)
    torch.testing.assert_close(rms_norm(x, w, 1e-6, zero_centred=True), normed * (1 + w))
    z = torch.randn(5, 16)
    torch.testing.assert_close(gated_rms_norm(x, z, w, 1e-6), normed * w * F.silu(z))


def test_rms_norm_bfloat16_computes_in_float32() -> None:
    x, w = torch.randn(4, 64) * 100, torch.randn(64)
    out = rms_norm(x.bfloat16(), w.bfloat16(), 1e-6, zero_centred=True)
    assert out.dtype == torch.bfloat16
    expected = rms_norm(x.bfloat16().float(), w.bfloat16().float(), 1e-6, zero_centred=True)
    torch.testing.assert_close(out.float(), expected, atol=0.05, rtol=0.01)


def test_partial_rotary_is_relative_and_leaves_the_tail() -> None:
    rotary_dim, head_dim = 8, 32
    inv_freq = 1.0 / (1e7 ** (torch.arange(0, rotary_dim, 2).float() / rotary_dim))
    q, k = torch.randn(1, 1, head_dim), torch.randn(1, 1, head_dim)

    def rotated(x: torch.Tensor, position: int) -> torch.Tensor:
        cos, sin = rotary_cos_sin(torch.tensor([position]), inv_freq, torch.float32)
        return apply_rotary(x, cos, sin)

    assert torch.equal(rotated(q, 7)[..., rotary_dim:], q[..., rotary_dim:])
    torch.testing.assert_close(rotated(q, 0), q)
    # the score depends only on the distance between positions
    a = (rotated(q, 10) * rotated(k, 3)).sum()
    b = (rotated(q, 107) * rotated(k, 100)).sum()
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
