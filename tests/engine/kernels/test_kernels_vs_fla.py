"""The Gated DeltaNet kernels against flash-linear-attention (``fla-core``), an implementation nobody here
wrote, on ragged batches with random slots and bfloat16 inputs.

Skipped where fla-core is not installed (CI); the GPU check's machine carries it. fla's chunked kernels
and its conv autotune, which needs a GPU, so those tests are ``gpu``; its fused recurrent kernel also runs
on CPU tensors under Triton's interpreter. fla is given what it does not compute itself: ``g`` and
``beta`` from our reference gates (held to the model's definition in test_gated_delta_kernel.py), the
initial states gathered from the pool (zeros for a fresh sequence) and q/k repeated per value head (so
that fla releases without grouped-value support compute the same thing); the q/k l2 norm and the
``head_k_dim**-0.5`` scale are its own.

Tolerance, relative RMS: 1e-2 on outputs and states (bfloat16 inputs: both sides round the output to
bfloat16 and sum in float32 in different orders and algorithms; the float32 prefill case too, as fla's
dots may take TF32 on a GPU). A one-off CPU run of the prefill case in float32 with fla-core 0.6.0's
chunked kernels forced through the interpreter (its autotuning stubbed) agreed to 6.7e-7 (outputs) and
2.8e-7 (states); the conv case agreed exactly.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from gated_delta_cases import HV, ragged_inputs, rel_rms, state_pool, to_device

from cortex.engine.kernels.causal_conv1d import causal_conv1d_prefill
from cortex.engine.kernels.gated_delta import (
    gated_delta_gates_ref,
    gated_delta_rule_decode_multi,
    gated_delta_rule_prefill,
)

with warnings.catch_warnings():  # fla warns at import on a machine without a GPU
    warnings.simplefilter("ignore")
    fla = pytest.importorskip("fla.ops.gated_delta_rule")

TOLERANCE = 1e-2
LENS = [1, 63, 64, 65, 130]
NUM_SLOTS = 8


def _fla_inputs(inputs: dict[str, torch.Tensor], batch: int) -> dict[str, torch.Tensor]:
    """q, k (repeated per value head), v, g and beta as fla's ``[batch, T, heads, dim]``."""
    group = HV // inputs["q"].shape[1]
    g, beta = gated_delta_gates_ref(
        inputs["a"], inputs["b"], inputs["A_log"], inputs["dt_bias"], torch.float32
    )
    tensors = {
        "q": inputs["q"].repeat_interleave(group, dim=1),
        "k": inputs["k"].repeat_interleave(group, dim=1),
        "v": inputs["v"],
        "g": g,
        "beta": beta.to(inputs["v"].dtype),
    }
    return {n: t.contiguous().reshape(batch, -1, *t.shape[1:]) for n, t in tensors.items()}


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
def test_prefill_matches_fla_chunk(device, dtype):
    inputs = to_device(ragged_inputs(LENS, dtype=dtype, seed=21), device)
    slots = torch.tensor([6, 0, 3, 7, 1], device=device)
    initial = torch.tensor([True, False, True, True, False], device=device)
    before = state_pool(NUM_SLOTS, seed=4).to(device)
    state = before.clone()
    o = gated_delta_rule_prefill(
        **inputs, state=state, state_slots=slots, has_initial_state=initial, kernels="triton"
    )
    h0 = torch.where(initial[:, None, None, None], before[slots], 0.0)
    o_fla, final = fla.chunk_gated_delta_rule(
        **_fla_inputs(inputs, 1),
        initial_state=h0,
        output_final_state=True,
        cu_seqlens=inputs["cu_seqlens"].long(),
        use_qk_l2norm_in_kernel=True,
    )
    assert rel_rms(o, o_fla[0]) < TOLERANCE
    assert rel_rms(state[slots], final) < TOLERANCE


@pytest.mark.parametrize("num_tokens", [1, 4])
def test_decode_matches_fla_fused_recurrent(device, num_tokens):
    num_seqs = 3
    inputs = ragged_inputs([num_seqs * num_tokens], dtype=torch.bfloat16, seed=22)
    del inputs["cu_seqlens"]
    inputs = to_device(inputs, device)
    home = torch.tensor([5, 2, 7], device=device)
    # the last token's state goes back home, the others to free slots
    others = torch.tensor([[0, 1, 3], [4, 6, 8], [9, 10, 11]], device=device)[:, : num_tokens - 1]
    token_slots = torch.cat((others, home[:, None]), dim=1)
    before = state_pool(12, seed=6).to(device)
    state = before.clone()
    o = gated_delta_rule_decode_multi(
        **inputs, state=state, initial_state_slots=home, token_state_slots=token_slots, kernels="triton"
    )
    with warnings.catch_warnings():  # on CPU tensors fla notes that it runs without a GPU
        warnings.simplefilter("ignore")
        o_fla, final = fla.fused_recurrent_gated_delta_rule(
            **_fla_inputs(inputs, num_seqs),
            initial_state=before[home],
            output_final_state=True,
            use_qk_l2norm_in_kernel=True,
        )
    assert rel_rms(o, o_fla.reshape(o.shape)) < TOLERANCE
    assert rel_rms(state[home], final) < TOLERANCE


@pytest.mark.gpu
def test_conv_prefill_matches_fla(device):
    causal_conv1d = pytest.importorskip("fla.modules.convolution").causal_conv1d
    gen = torch.Generator().manual_seed(23)
    dim, width = 160, 4
    x = torch.randn(sum(LENS), dim, generator=gen).bfloat16().to(device)
    weight = torch.randn(dim, width, generator=gen).bfloat16().to(device)
    cu = F.pad(torch.tensor(LENS).cumsum(0), (1, 0)).to(torch.int32).to(device)
    slots = torch.tensor([4, 0, 2, 7, 5], device=device)
    initial = torch.tensor([True, True, False, True, False], device=device)
    before = torch.randn(NUM_SLOTS, dim, width - 1, generator=gen).bfloat16().to(device)
    history = before.clone()
    y = causal_conv1d_prefill(
        x, weight, history, cu_seqlens=cu, state_slots=slots, has_initial_state=initial, kernels="triton"
    )
    # fla's state is the last `width` inputs, ours the last width - 1 (the oldest is never read)
    h0 = torch.where(initial[:, None, None], F.pad(before[slots], (1, 0)), 0.0)
    y_fla, final = causal_conv1d(
        x[None],
        weight=weight,
        initial_state=h0,
        activation="silu",
        cu_seqlens=cu.long(),
        output_final_state=True,
    )
    assert rel_rms(y, y_fla[0]) < TOLERANCE
    assert torch.equal(history[slots], final[..., 1:].to(history.dtype))
