"""Causal conv1d: prefill with carried history, chunked prefill and decode all agree with one
zero-padded convolution over the whole sequence (the references; the Triton kernels are checked
against them in test_causal_conv1d_triton.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cortex.engine.kernels.causal_conv1d import (
    causal_conv1d_decode,
    causal_conv1d_prefill,
    causal_conv1d_prefill_ref,
)

DIM, KERNEL = 12, 4


def _whole(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    # x: [num_tokens, DIM], one sequence from zero history
    y = F.conv1d(F.pad(x.t()[None], (KERNEL - 1, 0)), weight[:, None, :], groups=DIM)[0]
    return F.silu(y).t()


def _cu(lens: list[int]) -> torch.Tensor:
    return torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32)


def test_ragged_prefill_matches_padded_conv() -> None:
    lens = [1, 2, 9]
    x = torch.randn(sum(lens), DIM)
    weight = torch.randn(DIM, KERNEL)
    state = torch.randn(4, DIM, KERNEL - 1)
    out = causal_conv1d_prefill(
        x,
        weight,
        state,
        cu_seqlens=_cu(lens),
        state_slots=torch.tensor([2, 0, 3]),
        has_initial_state=torch.zeros(3, dtype=torch.bool),
        kernels="ref",
    )
    start = 0
    for n, slot in zip(lens, [2, 0, 3], strict=True):
        torch.testing.assert_close(out[start : start + n], _whole(x[start : start + n], weight))
        # the history is the last KERNEL - 1 inputs, zero-padded on the left for short sequences
        expected = F.pad(x[start : start + n].t(), (KERNEL - 1, 0))[:, -(KERNEL - 1) :]
        torch.testing.assert_close(state[slot], expected)
        start += n


def test_chunks_and_decodes_match_whole_sequence() -> None:
    x = torch.randn(20, DIM)
    weight = torch.randn(DIM, KERNEL)
    state = torch.randn(2, DIM, KERNEL - 1)
    slot = torch.tensor([1])
    outs = [
        causal_conv1d_prefill_ref(
            x[:2],
            weight,
            state,
            cu_seqlens=_cu([2]),
            state_slots=slot,
            has_initial_state=torch.tensor([False]),
        ),
        causal_conv1d_prefill_ref(
            x[2:9],
            weight,
            state,
            cu_seqlens=_cu([7]),
            state_slots=slot,
            has_initial_state=torch.tensor([True]),
        ),
    ]
    for t in range(9, 20):
        outs.append(causal_conv1d_decode(x[t : t + 1], weight, state, state_slots=slot, kernels="ref"))
    torch.testing.assert_close(torch.cat(outs), _whole(x, weight))
    torch.testing.assert_close(state[1], x[-(KERNEL - 1) :].t())
