"""Fused MoE: the expert-sorted layout, then the Triton kernels against the per-expert reference.

Tolerances: fp32 ``atol = rtol = 1e-5``; bf16 ``atol = 6e-2, rtol = 2e-2``: the kernels sum a token's
top-k expert outputs and the shared expert in fp32 and round once, where the reference adds them one
by one in bf16 (up to four roundings here), and such sums can cancel to well below their terms. On a
GPU, bf16 results are also checked to be at least as close to the fp32 result as the reference's are
(not under the interpreter, which truncates fp32 -> bf16 instead of rounding to nearest).
"""

from __future__ import annotations

import pytest
import torch

from cortex.engine.kernels.fused_moe import align_by_expert, fused_moe

TOLERANCE = {torch.float32: {"atol": 1e-5, "rtol": 1e-5}, torch.bfloat16: {"atol": 6e-2, "rtol": 2e-2}}


def test_align_by_expert_groups_and_pads_each_expert():
    topk_ids = torch.tensor([[3, 0], [3, 1], [0, 3], [2, 3]])
    sorted_ids, block_experts, num_padded = align_by_expert(topk_ids, num_experts=5, block_m=4)
    pad = topk_ids.numel()
    flat = topk_ids.reshape(-1).tolist()
    n = int(num_padded[0])
    assert n == 4 * 4  # experts 0, 1, 2, 3 used, each padded to one block of 4
    blocks = sorted_ids[:n].view(-1, 4).tolist()
    for block, expert in zip(blocks, block_experts[: n // 4].tolist(), strict=True):
        real = [p for p in block if p != pad]
        assert real == sorted(real)  # stable: pairs in token order
        assert all(flat[p] == expert for p in real)
    assert sorted(p for p in sorted_ids.tolist() if p != pad) == list(range(pad))
    assert block_experts[n // 4 :].eq(5).all()  # past the end: no expert


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("num_tokens", "num_experts", "top_k"), [(1, 8, 2), (37, 8, 2), (70, 4, 3)])
def test_fused_moe_matches_reference(device, dtype, num_tokens, num_experts, top_k):
    gen = torch.Generator().manual_seed(num_tokens)
    hidden, inter = 64, 32
    x = torch.randn(num_tokens, hidden, generator=gen).to(dtype)
    w13 = (0.2 * torch.randn(num_experts, 2 * inter, hidden, generator=gen)).to(dtype)
    w2 = (0.2 * torch.randn(num_experts, hidden, inter, generator=gen)).to(dtype)
    probs = torch.rand(num_tokens, num_experts, generator=gen).softmax(-1)
    weights, ids = probs.topk(top_k, dim=-1)
    weights = weights.to(dtype)
    shared = torch.randn(num_tokens, hidden, generator=gen).to(dtype)
    shared_gate = torch.randn(num_tokens, 1, generator=gen).to(dtype)
    for extra in ({}, {"shared": shared, "shared_gate": shared_gate}):
        expected = fused_moe(x, w13, w2, weights, ids, kernels="ref", **extra)
        on = {name: t.to(device) for name, t in extra.items()}
        got = fused_moe(
            x.to(device),
            w13.to(device),
            w2.to(device),
            weights.to(device),
            ids.to(device),
            kernels="triton",
            **on,
        )
        torch.testing.assert_close(got.cpu(), expected, **TOLERANCE[dtype])
        if dtype == torch.bfloat16 and device.type == "cuda":
            up = {name: t.float() for name, t in extra.items()}
            exact = fused_moe(x.float(), w13.float(), w2.float(), weights.float(), ids, kernels="ref", **up)
            kernel_error = (got.cpu().float() - exact).abs().mean()
            assert kernel_error <= 1.1 * (expected.float() - exact).abs().mean()
