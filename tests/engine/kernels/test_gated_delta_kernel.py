"""Gated delta rule: the chunked form and the decode step against the exact recurrence, on ragged
batches with carried state."""

from __future__ import annotations

import pytest
import torch

from cortex.engine.kernels.gated_delta import (
    chunk_gated_delta_rule_ref,
    gated_delta_rule_decode,
    gated_delta_rule_prefill,
    gated_delta_rule_ref,
)

HK, HV, DK, DV = 2, 4, 16, 8


def _inputs(num_tokens: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(num_tokens, HK, DK, generator=gen)
    k = torch.randn(num_tokens, HK, DK, generator=gen)
    v = torch.randn(num_tokens, HV, DV, generator=gen)
    g = -torch.rand(num_tokens, HV, generator=gen) * 2
    beta = torch.rand(num_tokens, HV, generator=gen)
    return q, k, v, g, beta


def _state(num_slots: int = 6) -> torch.Tensor:
    return torch.randn(num_slots, HV, DK, DV, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("chunk_size", [16, 64])
def test_chunked_matches_recurrence_on_ragged_batch(chunk_size: int) -> None:
    lens = [5, 70, 130, 1, 64]
    q, k, v, g, beta = _inputs(sum(lens))
    slots = torch.tensor([3, 0, 5, 1, 2])
    init = [True, False, True, True, False]
    s_ref, s_chunk = _state(), _state()
    kw = {"query_lens": lens, "state_slots": slots, "has_initial_state": init}
    o_ref = gated_delta_rule_ref(q, k, v, g, beta, s_ref, **kw)
    o_chunk = chunk_gated_delta_rule_ref(q, k, v, g, beta, s_chunk, chunk_size=chunk_size, **kw)
    torch.testing.assert_close(o_chunk, o_ref, atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(s_chunk, s_ref, atol=2e-6, rtol=1e-5)
    # slot 4 belongs to no sequence and is untouched
    torch.testing.assert_close(s_ref[4], _state()[4], atol=0, rtol=0)


def test_fresh_prefill_ignores_slot_contents() -> None:
    q, k, v, g, beta = _inputs(10)
    kw = {"query_lens": [10], "state_slots": torch.tensor([0]), "has_initial_state": [False]}
    o1 = gated_delta_rule_prefill(q, k, v, g, beta, torch.zeros(1, HV, DK, DV), **kw)
    o2 = gated_delta_rule_prefill(q, k, v, g, beta, torch.randn(1, HV, DK, DV), **kw)
    torch.testing.assert_close(o1, o2, atol=0, rtol=0)


def test_prefill_in_chunks_then_decode_matches_one_prefill() -> None:
    total = 150
    q, k, v, g, beta = _inputs(total)
    slot = torch.tensor([2])
    whole_state = _state()
    whole = gated_delta_rule_prefill(
        q, k, v, g, beta, whole_state, query_lens=[total], state_slots=slot, has_initial_state=[False]
    )
    state = _state()
    outs, start = [], 0
    for size in (40, 70):
        span = slice(start, start + size)
        outs.append(
            gated_delta_rule_prefill(
                q[span],
                k[span],
                v[span],
                g[span],
                beta[span],
                state,
                query_lens=[size],
                state_slots=slot,
                has_initial_state=[start > 0],
            )
        )
        start += size
    for t in range(start, total):
        span = slice(t, t + 1)
        outs.append(
            gated_delta_rule_decode(q[span], k[span], v[span], g[span], beta[span], state, state_slots=slot)
        )
    torch.testing.assert_close(torch.cat(outs), whole, atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(state, whole_state, atol=2e-6, rtol=1e-5)


def test_decode_updates_only_its_slots() -> None:
    q, k, v, g, beta = _inputs(3)
    slots = torch.tensor([4, 1, 3])
    state = _state()
    before = state.clone()
    out = gated_delta_rule_decode(q, k, v, g, beta, state, state_slots=slots)
    expected_state = before.clone()
    expected = gated_delta_rule_ref(
        q,
        k,
        v,
        g,
        beta,
        expected_state,
        query_lens=[1, 1, 1],
        state_slots=slots,
        has_initial_state=[True] * 3,
    )
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(state, expected_state, atol=1e-6, rtol=1e-5)
    for untouched in (0, 2, 5):
        assert torch.equal(state[untouched], before[untouched])
