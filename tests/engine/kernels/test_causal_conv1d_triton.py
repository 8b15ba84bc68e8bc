"""The Triton causal conv1d kernels against the references and a float64 convolution.

Ragged prefills with lengths shorter than the history (1, 2), at and past a token block (32, 33) and
random slots, with and without carried history; rows read from a strided view (a slice of a wider
projection); decodes updating slots in place; multi-token decodes keeping the history after every token, the
last token's history in the initial slot. Tolerances, as relative RMS error: float32 1e-6 (a
float32 sum of four products in either); bfloat16 1e-2 (the kernel sums in float32 and rounds once,
the reference rounds the convolution and the SiLU separately). The carried history is copied, so it is
compared exactly.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from gated_delta_cases import rel_rms

from cortex.engine.kernels.causal_conv1d import (
    causal_conv1d_decode,
    causal_conv1d_decode_multi,
    causal_conv1d_decode_multi_ref,
    causal_conv1d_decode_ref,
    causal_conv1d_prefill,
    causal_conv1d_prefill_ref,
)

DIM, KERNEL, NUM_SLOTS = 160, 4, 9  # DIM: one full channel block of 128 and a partial one
TOLERANCE = {torch.float32: 1e-6, torch.bfloat16: 1e-2}


def _exact(x: torch.Tensor, weight: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
    # one sequence in float64: x [n, DIM], history [DIM, KERNEL - 1]
    window = torch.cat((history.double(), x.double().t()), dim=1)
    return F.silu(F.conv1d(window[None], weight.double()[:, None, :], groups=DIM)[0]).t()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_prefill_matches_references(device, dtype):
    gen = torch.Generator().manual_seed(0)
    lens = [1, 2, 33, 32, 5, 70]
    slots = torch.randperm(NUM_SLOTS, generator=gen)[: len(lens)]
    initial = torch.tensor([True, True, False, True, False, True])
    wide = torch.randn(sum(lens), DIM + 24, generator=gen).to(dtype)
    x = wide[:, 8 : 8 + DIM]  # rows strided by DIM + 24, as a slice of a wider projection
    weight = torch.randn(DIM, KERNEL, generator=gen).to(dtype)
    before = torch.randn(NUM_SLOTS, DIM, KERNEL - 1, generator=gen).to(dtype)
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32)
    metadata = {"cu_seqlens": cu, "state_slots": slots, "has_initial_state": initial}

    state = before.to(device, copy=True)
    y = causal_conv1d_prefill(
        x.to(device),
        weight.to(device),
        state,
        **{n: t.to(device) for n, t in metadata.items()},
        kernels="triton",
    )
    state_ref = before.clone()
    y_ref = causal_conv1d_prefill_ref(x, weight, state_ref, **metadata)
    assert rel_rms(y, y_ref) < TOLERANCE[dtype]
    assert torch.equal(state.cpu(), state_ref)
    bounds = cu.tolist()
    for i, slot in enumerate(slots.tolist()):
        history = before[slot] if initial[i] else torch.zeros(DIM, KERNEL - 1)
        exact = _exact(x[bounds[i] : bounds[i + 1]], weight, history)
        assert rel_rms(y[bounds[i] : bounds[i + 1]], exact) < TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_decode_matches_reference(device, dtype):
    gen = torch.Generator().manual_seed(1)
    slots = torch.tensor([4, 0, 8])
    x = torch.randn(3, DIM, generator=gen).to(dtype)
    weight = torch.randn(DIM, KERNEL, generator=gen).to(dtype)
    before = torch.randn(NUM_SLOTS, DIM, KERNEL - 1, generator=gen).to(dtype)
    state = before.to(device, copy=True)
    y = causal_conv1d_decode(
        x.to(device), weight.to(device), state, state_slots=slots.to(device), kernels="triton"
    )
    state_ref = before.clone()
    y_ref = causal_conv1d_decode_ref(x, weight, state_ref, state_slots=slots)
    assert rel_rms(y, y_ref) < TOLERANCE[dtype]
    assert torch.equal(state.cpu(), state_ref)
    for i, slot in enumerate(slots.tolist()):
        assert rel_rms(y[i : i + 1], _exact(x[i : i + 1], weight, before[slot])) < TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_decode_multi_keeps_every_tokens_history(device, dtype):
    gen = torch.Generator().manual_seed(2)
    num_seqs, num_tokens = 2, 5  # more tokens than the history holds
    initial = torch.tensor([6, 1])
    # each token's history in its own slot, the last one back in the sequence's initial slot
    token_slots = torch.tensor([[0, 2, 3, 4, 6], [5, 7, 8, 9, 1]])
    wide = torch.randn(num_seqs * num_tokens, DIM + 8, generator=gen).to(dtype)
    x = wide[:, :DIM]
    weight = torch.randn(DIM, KERNEL, generator=gen).to(dtype)
    before = torch.randn(NUM_SLOTS + 1, DIM, KERNEL - 1, generator=gen).to(dtype)
    slots = {"initial_state_slots": initial, "token_state_slots": token_slots}
    state = before.to(device, copy=True)
    y = causal_conv1d_decode_multi(
        x.to(device),
        weight.to(device),
        state,
        **{n: t.to(device) for n, t in slots.items()},
        kernels="triton",
    )
    state_ref = before.clone()
    y_ref = causal_conv1d_decode_multi_ref(x, weight, state_ref, **slots)
    assert rel_rms(y, y_ref) < TOLERANCE[dtype]
    assert torch.equal(state.cpu(), state_ref)
    for i, home in enumerate(initial.tolist()):
        rows = x[i * num_tokens : (i + 1) * num_tokens]
        exact = _exact(rows, weight, before[home])
        assert rel_rms(y[i * num_tokens : (i + 1) * num_tokens], exact) < TOLERANCE[dtype]
        window = torch.cat((before[home], rows.t()), dim=1)
        for t in range(num_tokens):
            expected = window[:, t + 1 : t + KERNEL]  # the KERNEL - 1 inputs ending at token t
            assert torch.equal(state[token_slots[i, t]].cpu(), expected)
