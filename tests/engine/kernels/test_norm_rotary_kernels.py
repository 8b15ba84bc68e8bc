"""RMSNorm variants, the fused residual add, the gated norm and fused q/k norm + partial rotary: the
references' conventions, then each Triton kernel against its reference.

Tolerances: fp32 ``atol = rtol = 1e-5`` (only the order of the fp32 sum of squares differs); bf16
``atol = rtol = 1.6e-2``, about two bf16 rounding steps: the kernels round where the references round,
but Triton's interpreter (3.9) truncates fp32 -> bf16 where the GPU and torch round to nearest even.
The rotary output is a sum of two rounded products that can cancel, so its bf16 ``atol`` is two units
in the last place of values near 4 (``4e-2``).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cortex.engine.kernels.qk_norm_rotary import qk_norm_rotary
from cortex.engine.kernels.rms_norm import (
    add_rms_norm,
    gated_rms_norm,
    gated_rms_norm_ref,
    rms_norm,
    rms_norm_ref,
)
from cortex.engine.kernels.rotary import apply_rotary_ref, rotary_cos_sin

TOLERANCE = {torch.float32: {"atol": 1e-5, "rtol": 1e-5}, torch.bfloat16: {"atol": 1.6e-2, "rtol": 1.6e-2}}
ROTARY_TOLERANCE = {**TOLERANCE, torch.bfloat16: {"atol": 4e-2, "rtol": 1.6e-2}}
DTYPES = [torch.float32, torch.bfloat16]


def _randn(*shape: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_rms_norm_conventions() -> None:
    x, w = torch.randn(5, 16), torch.randn(16)
    normed = x / x.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()
    torch.testing.assert_close(rms_norm_ref(x, w, 1e-6, zero_centred=False), normed * w)
    torch.testing.assert_close(rms_norm_ref(x, w, 1e-6, zero_centred=True), normed * (1 + w))
    z = torch.randn(5, 16)
    torch.testing.assert_close(gated_rms_norm_ref(x, z, w, 1e-6), normed * w * F.silu(z))


def test_rms_norm_bfloat16_computes_in_float32() -> None:
    x, w = torch.randn(4, 64) * 100, torch.randn(64)
    out = rms_norm_ref(x.bfloat16(), w.bfloat16(), 1e-6, zero_centred=True)
    assert out.dtype == torch.bfloat16
    expected = rms_norm_ref(x.bfloat16().float(), w.bfloat16().float(), 1e-6, zero_centred=True)
    torch.testing.assert_close(out.float(), expected, atol=0.05, rtol=0.01)


def test_partial_rotary_is_relative_and_leaves_the_tail() -> None:
    rotary_dim, head_dim = 8, 32
    inv_freq = 1.0 / (1e7 ** (torch.arange(0, rotary_dim, 2).float() / rotary_dim))
    q, k = torch.randn(1, 1, head_dim), torch.randn(1, 1, head_dim)

    def rotated(x: torch.Tensor, position: int) -> torch.Tensor:
        cos, sin = rotary_cos_sin(torch.tensor([position]), inv_freq, torch.float32)
        return apply_rotary_ref(x, cos, sin)

    assert torch.equal(rotated(q, 7)[..., rotary_dim:], q[..., rotary_dim:])
    torch.testing.assert_close(rotated(q, 0), q)
    # the score depends only on the distance between positions
    a = (rotated(q, 10) * rotated(k, 3)).sum()
    b = (rotated(q, 107) * rotated(k, 100)).sum()
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("zero_centred", [True, False])
@pytest.mark.parametrize(("num_tokens", "dim"), [(1, 64), (7, 96), (3, 1024)])
def test_rms_norm_and_residual_add_match_reference(device, dtype, zero_centred, num_tokens, dim) -> None:
    x = _randn(num_tokens, dim, seed=0, scale=3.0).to(dtype)
    residual = _randn(num_tokens, dim, seed=1, scale=3.0).to(dtype)
    w = _randn(dim, seed=2, scale=0.3).to(dtype)
    tol = TOLERANCE[dtype]
    expected = rms_norm(x, w, 1e-6, zero_centred=zero_centred, kernels="ref")
    got = rms_norm(x.to(device), w.to(device), 1e-6, zero_centred=zero_centred, kernels="triton")
    torch.testing.assert_close(got.cpu(), expected, **tol)
    exp_normed, exp_residual = add_rms_norm(x, residual, w, 1e-6, zero_centred=zero_centred, kernels="ref")
    normed, summed = add_rms_norm(
        x.to(device), residual.to(device), w.to(device), 1e-6, zero_centred=zero_centred, kernels="triton"
    )
    torch.testing.assert_close(summed.cpu(), exp_residual, **tol)
    torch.testing.assert_close(normed.cpu(), exp_normed, **tol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_rms_norm_of_strided_rows(device, dtype) -> None:
    wide = _randn(6, 4, 64, seed=3).to(dtype)
    x = wide[:, :, :32]  # q split from its gate: rows 64 apart
    w = _randn(32, seed=4).to(dtype)
    got = rms_norm(x.to(device), w.to(device), 1e-6, zero_centred=True, kernels="triton")
    torch.testing.assert_close(got.cpu(), rms_norm_ref(x, w, 1e-6, zero_centred=True), **TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("num_tokens", "num_heads", "dim"), [(1, 4, 16), (9, 3, 128)])
def test_gated_rms_norm_matches_reference(device, dtype, num_tokens, num_heads, dim) -> None:
    x = _randn(num_tokens, num_heads, dim, seed=5).to(dtype)
    z = _randn(num_tokens, num_heads, dim, seed=6, scale=2.0).to(dtype)
    w = (1 + _randn(dim, seed=7, scale=0.3)).to(dtype)
    expected = gated_rms_norm(x, z, w, 1e-6, kernels="ref")
    got = gated_rms_norm(x.to(device), z.to(device), w.to(device), 1e-6, kernels="triton")
    torch.testing.assert_close(got.cpu(), expected, **TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("head_dim", "rotary_dim", "zero_centred"),
    [(32, 8, True), (256, 64, True), (32, 32, False)],  # Qwen3.5 tiny, Qwen3.5 real, Qwen3 full rotary
)
def test_qk_norm_rotary_matches_reference(device, dtype, head_dim, rotary_dim, zero_centred) -> None:
    num_tokens, num_heads, num_kv_heads = 11, 4, 2
    qg = _randn(num_tokens, num_heads, 2 * head_dim, seed=8, scale=2.0).to(dtype)
    q = qg[..., :head_dim]  # strided, as split from the output gate
    k = _randn(num_tokens, num_kv_heads, head_dim, seed=9).to(dtype)
    wq = _randn(head_dim, seed=10, scale=0.3).to(dtype)
    wk = _randn(head_dim, seed=11, scale=0.3).to(dtype)
    positions = torch.randint(0, 5000, (num_tokens,), generator=torch.Generator().manual_seed(12))
    inv_freq = 1.0 / (1e7 ** (torch.arange(0, rotary_dim, 2).float() / rotary_dim))
    cos, sin = rotary_cos_sin(positions, inv_freq, dtype)
    exp_q, exp_k = qk_norm_rotary(q, k, wq, wk, cos, sin, 1e-6, zero_centred=zero_centred, kernels="ref")
    on = [t.to(device) for t in (q, k, wq, wk, cos, sin)]
    got_q, got_k = qk_norm_rotary(*on, 1e-6, zero_centred=zero_centred, kernels="triton")
    assert got_q.is_contiguous()
    torch.testing.assert_close(got_q.cpu(), exp_q, **ROTARY_TOLERANCE[dtype])
    torch.testing.assert_close(got_k.cpu(), exp_k, **ROTARY_TOLERANCE[dtype])
