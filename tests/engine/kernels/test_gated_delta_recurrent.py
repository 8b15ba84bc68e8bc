"""The Triton gated delta rule decode (one token per sequence) and its multi-token variant (the state
after every token kept, for a speculative-decoding verifier) against the references and the float64
recurrence, on random slots.

Tolerances, as relative RMS error: float32 2e-6 (the same per-token arithmetic in another order);
bfloat16 inputs 1e-2 (only the output's rounding to bfloat16 differs); bfloat16 state 2e-2 (the state is
rounded to bfloat16 after every token, in the kernel and in the reference alike).
"""

from __future__ import annotations

import pytest
import torch
from gated_delta_cases import exact_prefill, ragged_inputs, rel_rms, state_pool, to_device

from cortex.engine.kernels.gated_delta import (
    gated_delta_rule_decode,
    gated_delta_rule_decode_multi,
    gated_delta_rule_decode_multi_ref,
    gated_delta_rule_decode_ref,
)

NUM_SLOTS = 16
TOLERANCE = {(torch.float32, torch.float32): 2e-6, (torch.bfloat16, torch.float32): 1e-2}


def _tokens(num_rows: int, dtype: torch.dtype, seed: int) -> dict[str, torch.Tensor]:
    inputs = ragged_inputs([num_rows], dtype=dtype, seed=seed)
    del inputs["cu_seqlens"]
    return inputs


@pytest.mark.parametrize(
    ("dtype", "state_dtype"),
    [(torch.float32, torch.float32), (torch.bfloat16, torch.float32), (torch.bfloat16, torch.bfloat16)],
    ids=["fp32", "bf16", "bf16-state"],
)
def test_decode_matches_references(device, dtype, state_dtype):
    slots = torch.tensor([11, 2, 7, 0, 14])
    tokens = _tokens(len(slots), dtype, seed=5)
    before = state_pool(NUM_SLOTS, dtype=state_dtype)
    state = before.to(device, copy=True)
    o = gated_delta_rule_decode(
        **to_device(tokens, device), state=state, state_slots=slots.to(device), kernels="triton"
    )
    state_ref = before.clone()
    o_ref = gated_delta_rule_decode_ref(**tokens, state=state_ref, state_slots=slots)
    # a decode is a one-token prefill continuing the slot's state
    exact_inputs = tokens | {"cu_seqlens": torch.arange(len(slots) + 1, dtype=torch.int32)}
    initial = torch.ones(len(slots), dtype=torch.bool)
    o_exact, state_exact = exact_prefill(exact_inputs, before, state_slots=slots, has_initial_state=initial)
    tol = TOLERANCE.get((dtype, state_dtype), 2e-2)
    assert o.dtype == dtype
    assert rel_rms(o, o_ref) < tol
    assert rel_rms(o, o_exact) < tol
    assert rel_rms(state[slots], state_ref[slots]) < tol
    assert rel_rms(state[slots], state_exact[slots]) < tol
    for slot in set(range(NUM_SLOTS)) - set(slots.tolist()):
        assert torch.equal(state[slot].cpu(), before[slot])


def test_multi_token_keeps_every_tokens_state(device):
    # 3 sequences x 4 tokens; sequence 1 writes its last state back into its own (initial) slot
    num_seqs, num_tokens = 3, 4
    initial_slots = torch.tensor([9, 4, 13])
    token_slots = torch.tensor([[0, 1, 2, 3], [5, 6, 8, 4], [10, 11, 12, 15]])
    tokens = _tokens(num_seqs * num_tokens, torch.float32, seed=8)
    before = state_pool(NUM_SLOTS)
    state = before.to(device, copy=True)
    o = gated_delta_rule_decode_multi(
        **to_device(tokens, device),
        state=state,
        initial_state_slots=initial_slots.to(device),
        token_state_slots=token_slots.to(device),
        kernels="triton",
    )
    state_ref = before.clone()
    o_ref = gated_delta_rule_decode_multi_ref(
        **tokens, state=state_ref, initial_state_slots=initial_slots, token_state_slots=token_slots
    )
    assert rel_rms(o, o_ref) < 2e-6
    assert rel_rms(state, state_ref) < 2e-6
    # what a verifier keeps after accepting n tokens: the state after exactly those n tokens
    for i in range(num_seqs):
        for accepted in range(1, num_tokens + 1):
            rows = slice(i * num_tokens, i * num_tokens + accepted)
            prefix = {n: t[rows] for n, t in tokens.items() if n in ("q", "k", "v", "a", "b")}
            prefix |= {"A_log": tokens["A_log"], "dt_bias": tokens["dt_bias"]}
            prefix["cu_seqlens"] = torch.tensor([0, accepted], dtype=torch.int32)
            o_exact, state_exact = exact_prefill(
                prefix,
                before,
                state_slots=initial_slots[i : i + 1],
                has_initial_state=torch.tensor([True]),
            )
            kept = state[token_slots[i, accepted - 1]]
            assert rel_rms(kept, state_exact[initial_slots[i]]) < 2e-6
            assert rel_rms(o[rows], o_exact) < 2e-6
    # slots of no sequence are untouched
    assert torch.equal(state[7].cpu(), before[7])
    assert torch.equal(state[14].cpu(), before[14])
