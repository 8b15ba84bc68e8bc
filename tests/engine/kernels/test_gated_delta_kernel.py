"""The gated delta rule references: the chunked form and the decode steps against the exact per-token
recurrence in float64, on ragged batches with carried state (the Triton kernels are checked against
both in test_gated_delta_chunk.py and test_gated_delta_recurrent.py). Tolerance: relative RMS error
1e-6, float32 rounding."""

from __future__ import annotations

import pytest
import torch
from gated_delta_cases import exact_prefill, ragged_inputs, rel_rms, state_pool

from cortex.engine.kernels.gated_delta import (
    chunk_gated_delta_rule_ref,
    gated_delta_gates_ref,
    gated_delta_rule_decode,
    gated_delta_rule_decode_multi_ref,
    gated_delta_rule_prefill,
)

LENS = [5, 70, 130, 1, 64]
SLOTS = torch.tensor([3, 0, 5, 1, 2])
INITIAL = torch.tensor([True, False, True, True, False])


@pytest.mark.parametrize("chunk_size", [16, 64])
def test_chunked_matches_float64_recurrence_on_ragged_batch(chunk_size: int) -> None:
    inputs = ragged_inputs(LENS, dtype=torch.float32, seed=0)
    before = state_pool(6)
    state = before.clone()
    o = chunk_gated_delta_rule_ref(
        **inputs, state=state, state_slots=SLOTS, has_initial_state=INITIAL, chunk_size=chunk_size
    )
    o_exact, state_exact = exact_prefill(inputs, before, state_slots=SLOTS, has_initial_state=INITIAL)
    assert rel_rms(o, o_exact) < 1e-6
    assert rel_rms(state, state_exact) < 1e-6
    # slot 4 belongs to no sequence and is untouched
    assert torch.equal(state[4], before[4])


def test_gates_follow_the_model_definition() -> None:
    a, b = torch.tensor([[-30.0, 0.0, 25.0]]), torch.tensor([[0.0, 2.0, -2.0]])
    A_log, dt_bias = torch.tensor([0.0, 1.0, -1.0]), torch.tensor([0.5, 0.0, 0.0])
    g, beta = gated_delta_gates_ref(a, b, A_log, dt_bias, torch.float64)
    expected = -A_log.double().exp() * torch.log1p((a.double() + dt_bias.double()).exp())
    torch.testing.assert_close(g, expected)
    torch.testing.assert_close(beta, torch.sigmoid(b.double()))


def test_fresh_prefill_ignores_slot_contents() -> None:
    inputs = ragged_inputs([10], dtype=torch.float32, seed=2)
    kw = {"state_slots": torch.tensor([0]), "has_initial_state": torch.tensor([False]), "kernels": "ref"}
    o1 = gated_delta_rule_prefill(**inputs, state=torch.zeros_like(state_pool(1)), **kw)
    o2 = gated_delta_rule_prefill(**inputs, state=state_pool(1), **kw)
    assert torch.equal(o1, o2)


def test_decode_steps_continue_a_prefill() -> None:
    total, slot = 80, torch.tensor([2])
    inputs = ragged_inputs([total], dtype=torch.float32, seed=3)
    before = state_pool(4)
    o_exact, state_exact = exact_prefill(
        inputs, before, state_slots=slot, has_initial_state=torch.tensor([False])
    )
    head = {n: t[:75] for n, t in inputs.items() if n in ("q", "k", "v", "a", "b")}
    params = {"A_log": inputs["A_log"], "dt_bias": inputs["dt_bias"]}
    state = before.clone()
    outs = [
        gated_delta_rule_prefill(
            **head,
            **params,
            state=state,
            cu_seqlens=torch.tensor([0, 75], dtype=torch.int32),
            state_slots=slot,
            has_initial_state=torch.tensor([False]),
            kernels="ref",
        )
    ]
    for t in range(75, total):
        token = {n: inputs[n][t : t + 1] for n in ("q", "k", "v", "a", "b")}
        outs.append(gated_delta_rule_decode(**token, **params, state=state, state_slots=slot, kernels="ref"))
    assert rel_rms(torch.cat(outs), o_exact) < 1e-6
    assert rel_rms(state[2], state_exact[2]) < 1e-6


@pytest.mark.parametrize("state_dtype", [torch.float32, torch.bfloat16], ids=["fp32-state", "bf16-state"])
def test_decode_reference_updates_only_its_slots(state_dtype: torch.dtype) -> None:
    # one token for each of five sequences: the fp32 pool is updated where it lies, a bf16 one via a copy
    slots = torch.tensor([6, 1, 4, 0, 3])
    inputs = ragged_inputs([len(slots)], dtype=torch.float32, seed=6)
    del inputs["cu_seqlens"]
    before = state_pool(8, dtype=state_dtype)
    o_exact, state_exact = exact_prefill(  # a decode is a one-token prefill continuing each slot's state
        inputs | {"cu_seqlens": torch.arange(len(slots) + 1, dtype=torch.int32)},
        before,
        state_slots=slots,
        has_initial_state=torch.ones(len(slots), dtype=torch.bool),
    )
    state = before.clone()
    o = gated_delta_rule_decode(**inputs, state=state, state_slots=slots, kernels="ref")
    tol = 1e-6 if state_dtype == torch.float32 else 1e-2
    assert rel_rms(o, o_exact) < tol
    assert rel_rms(state[slots], state_exact[slots]) < tol
    for slot in {2, 5, 7}:
        assert torch.equal(state[slot], before[slot])


def test_multi_token_reference_keeps_each_state() -> None:
    # two sequences of three tokens: the state after token t of sequence i lands in token_state_slots[i, t]
    inputs = ragged_inputs([6], dtype=torch.float32, seed=4)
    del inputs["cu_seqlens"]
    before = state_pool(8)
    state = before.clone()
    token_slots = torch.tensor([[4, 5, 0], [6, 7, 1]])
    gated_delta_rule_decode_multi_ref(
        **inputs, state=state, initial_state_slots=torch.tensor([0, 1]), token_state_slots=token_slots
    )
    for i in range(2):
        for t in range(3):
            prefix = {n: inputs[n][3 * i : 3 * i + t + 1] for n in ("q", "k", "v", "a", "b")}
            prefix |= {"A_log": inputs["A_log"], "dt_bias": inputs["dt_bias"]}
            prefix["cu_seqlens"] = torch.tensor([0, t + 1], dtype=torch.int32)
            _, exact = exact_prefill(
                prefix, before, state_slots=torch.tensor([i]), has_initial_state=torch.tensor([True])
            )
            assert rel_rms(state[token_slots[i, t]], exact[i]) < 1e-6
