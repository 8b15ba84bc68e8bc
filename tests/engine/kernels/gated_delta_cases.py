"""Inputs for the Gated DeltaNet op tests: ragged batches laid out as the layer lays them out (q, k, v as
views of one conv output), a state pool with random contents, and the float64 oracle.

Shapes are small (the Triton kernels run under the interpreter in CI) but keep what matters: GVA (two
value heads per key head), a head_v_dim of two state blocks, and head dims unequal so that a swapped
axis cannot pass.
"""

from __future__ import annotations

from typing import Any

import torch

from cortex.engine.kernels.gated_delta import gated_delta_rule_ref

HK, HV, DK, DV = 2, 4, 16, 32
CONV_DIM = 2 * HK * DK + HV * DV


def ragged_inputs(
    query_lens: list[int],
    *,
    dtype: torch.dtype,
    seed: int,
    correlated: bool = False,
) -> dict[str, torch.Tensor]:
    """q, k, v, a, b, A_log, dt_bias and cu_seqlens for sequences of ``query_lens`` tokens (CPU, dtype).

    ``correlated``: nearly parallel keys with beta near 1 and almost no decay, the worst conditioned
    systems the chunked solve meets.
    """
    gen = torch.Generator().manual_seed(seed)
    num_tokens = sum(query_lens)
    mixed = torch.randn(num_tokens, CONV_DIM, generator=gen)
    a = torch.randn(num_tokens, HV, generator=gen)
    b = torch.randn(num_tokens, HV, generator=gen)
    if correlated:
        keys = mixed[:, HK * DK : 2 * HK * DK]
        keys.copy_(3 * keys[:, :1] + 0.05 * keys)
        a -= 6
        b += 4
    mixed = mixed.to(dtype)
    lens = torch.tensor(query_lens)
    return {
        "q": mixed[:, : HK * DK].view(num_tokens, HK, DK),
        "k": mixed[:, HK * DK : 2 * HK * DK].view(num_tokens, HK, DK),
        "v": mixed[:, 2 * HK * DK :].view(num_tokens, HV, DV),
        "a": a.to(dtype),
        "b": b.to(dtype),
        "A_log": torch.rand(HV, generator=gen).to(dtype),
        "dt_bias": torch.rand(HV, generator=gen).to(dtype),
        "cu_seqlens": torch.cat((torch.zeros(1, dtype=torch.int64), lens.cumsum(0))).to(torch.int32),
    }


def state_pool(num_slots: int, *, dtype: torch.dtype = torch.float32, seed: int = 1) -> torch.Tensor:
    """``[num_slots, HV, DK, DV]`` of random contents (so reading a slot it should not is visible)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(num_slots, HV, DK, DV, generator=gen).to(dtype)


def to_device(tensors: dict[str, torch.Tensor], device: torch.device) -> dict[str, Any]:
    return {name: t.to(device) for name, t in tensors.items()}


def exact_prefill(
    inputs: dict[str, torch.Tensor], state: torch.Tensor, **metadata: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The float64 per-token recurrence from the same (rounded) inputs: (o, final pool)."""
    wide = {name: t.double() if t.is_floating_point() else t for name, t in inputs.items()}
    pool = state.double()
    o = gated_delta_rule_ref(
        wide["q"],
        wide["k"],
        wide["v"],
        **{n: t for n, t in wide.items() if n not in ("q", "k", "v")},
        state=pool,
        **metadata,
    )
    return o, pool


def rel_rms(x: torch.Tensor, ref: torch.Tensor) -> float:
    """RMS(x - ref) / RMS(ref), in float64."""
    x, ref = x.double().cpu(), ref.double().cpu()
    return float((x - ref).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt())
