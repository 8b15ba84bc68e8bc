"""Causal conv1d: prefill with carried history, chunked prefill and decode all agree with one
zero-padded convolution over the whole sequence."""

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


def test_ragged_prefill_matches_padded_conv() -> None:
    lens = [1, 2, 9]
    x = torch.randn(sum(lens), DIM)
    weight = torch.randn(DIM, KERNEL)
    state = torch.randn(4, DIM, KERNEL - 1)
    out = causal_conv1d_prefill(
        x, weight, state, query_lens=lens, state_slots=torch.tensor([2, 0, 3]), has_initial_state=[False] * 3
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
            x[:2], weight, state, query_lens=[2], state_slots=slot, has_initial_state=[False]
        ),
        causal_conv1d_prefill_ref(
            x[2:9], weight, state, query_lens=[7], state_slots=slot, has_initial_state=[True]
        ),
    ]
    for t in range(9, 20):
        outs.append(causal_conv1d_decode(x[t : t + 1], weight, state, state_slots=slot))
    torch.testing.assert_close(torch.cat(outs), _whole(x, weight))
    torch.testing.assert_close(state[1], x[-(KERNEL - 1) :].t())
