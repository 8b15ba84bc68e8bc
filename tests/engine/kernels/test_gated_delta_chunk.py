"""The Triton chunked gated delta rule prefill against the chunked reference and the float64 recurrence.

Ragged batches with lengths 1, exact chunk multiples (64, 128), chunk + 1 (65) and random ones; random
slots, with and without an initial state; the inputs as strided views of one conv output, as the layer
passes them. Tolerances, as relative RMS error (``rel_rms``) against each reference:

- float32 inputs and state: 2e-5 (the kernel and the references differ only in summation order);
- bfloat16 inputs: 2e-2 (the kernel rounds w, u, the scores and the state to bfloat16 for its tensor-core
  dots, as flash-linear-attention does; the references compute in float32);
- bfloat16 state: 3e-2 for the state (rounded once on load and once on store).
"""

from __future__ import annotations

import pytest
import torch
from gated_delta_cases import exact_prefill, ragged_inputs, rel_rms, state_pool, to_device

from cortex.engine.kernels.gated_delta import (
    chunk_gated_delta_rule_ref,
    gated_delta_rule_decode,
    gated_delta_rule_prefill,
)

TOLERANCE = {torch.float32: 2e-5, torch.bfloat16: 2e-2}
EDGE_LENS = [1, 64, 65, 7, 128, 30]
NUM_SLOTS = 8


def _metadata(num_seqs: int, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        "state_slots": torch.randperm(NUM_SLOTS, generator=gen)[:num_seqs],
        "has_initial_state": torch.rand(num_seqs, generator=gen) < 0.5,
    }


@pytest.mark.parametrize(
    ("dtype", "state_dtype", "lens", "correlated"),
    [
        (torch.float32, torch.float32, EDGE_LENS, False),
        (torch.bfloat16, torch.float32, EDGE_LENS, False),
        (torch.float32, torch.float32, "random", True),
        (torch.bfloat16, torch.bfloat16, "random", False),
    ],
    ids=["fp32", "bf16", "fp32-random-ill-conditioned", "bf16-state"],
)
def test_prefill_matches_references(device, dtype, state_dtype, lens, correlated):
    gen = torch.Generator().manual_seed(7)
    query_lens = torch.randint(1, 150, (4,), generator=gen).tolist() if lens == "random" else lens
    inputs = ragged_inputs(query_lens, dtype=dtype, seed=len(query_lens), correlated=correlated)
    metadata = _metadata(len(query_lens), seed=3)
    metadata["has_initial_state"][0] = True  # a one-token (or first random) sequence continuing a state
    before = state_pool(NUM_SLOTS, dtype=state_dtype)

    state = before.to(device, copy=True)
    o = gated_delta_rule_prefill(
        **to_device(inputs, device), state=state, **to_device(metadata, device), kernels="triton"
    )
    state_ref = before.clone()
    o_ref = chunk_gated_delta_rule_ref(**inputs, state=state_ref, **metadata)
    o_exact, state_exact = exact_prefill(inputs, before, **metadata)

    tol = TOLERANCE[dtype]
    state_tol = 3e-2 if state_dtype == torch.bfloat16 else tol
    assert o.dtype == dtype
    assert state.dtype == state_dtype
    assert rel_rms(o, o_ref) < tol
    assert rel_rms(o, o_exact) < tol
    assert rel_rms(state, state_ref) < state_tol
    assert rel_rms(state, state_exact) < state_tol
    # the chunked reference itself is exact to float32 rounding
    assert rel_rms(o_ref, o_exact) < (1e-5 if dtype == torch.float32 else 1e-2)
    # slots of no sequence are untouched
    used = set(metadata["state_slots"].tolist())
    for slot in set(range(NUM_SLOTS)) - used:
        assert torch.equal(state[slot].cpu(), before[slot])


def test_prefill_in_pieces_then_decode_matches_one_prefill(device):
    # 70 + 45 prefilled tokens, then 3 decodes, carrying the state through the slot between the calls
    total, slot = 118, torch.tensor([5])
    inputs = ragged_inputs([total], dtype=torch.float32, seed=11)
    before = state_pool(NUM_SLOTS)
    o_exact, state_exact = exact_prefill(
        inputs, before, state_slots=slot, has_initial_state=torch.tensor([False])
    )
    state = before.to(device, copy=True)
    outs, start = [], 0
    for size in (70, 45):
        piece = {n: t[start : start + size] for n, t in inputs.items() if n in ("q", "k", "v", "a", "b")}
        piece |= {"A_log": inputs["A_log"], "dt_bias": inputs["dt_bias"]}
        piece["cu_seqlens"] = torch.tensor([0, size], dtype=torch.int32)
        outs.append(
            gated_delta_rule_prefill(
                **to_device(piece, device),
                state=state,
                state_slots=slot.to(device),
                has_initial_state=torch.tensor([start > 0], device=device),
                kernels="triton",
            )
        )
        start += size
    for t in range(start, total):
        token = {n: inputs[n][t : t + 1] for n in ("q", "k", "v", "a", "b")}
        token |= {"A_log": inputs["A_log"], "dt_bias": inputs["dt_bias"]}
        outs.append(
            gated_delta_rule_decode(
                **to_device(token, device), state=state, state_slots=slot.to(device), kernels="triton"
            )
        )
    assert rel_rms(torch.cat(outs), o_exact) < 2e-5
    assert rel_rms(state[5], state_exact[5]) < 2e-5
