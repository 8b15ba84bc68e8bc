"""The Gated DeltaNet layer on its Triton kernels equals the layer on the references, over a step that
mixes a fresh prefill, a prefill continuing cached state and a decode, then a pure-decode step; and on
CUDA its forward reads nothing back from the device.

Tolerance: relative RMS error 1e-5 (float32; the ops differ in summation order only).
"""

from __future__ import annotations

import pytest
import torch

from cortex.engine.batch import ForwardBatch
from cortex.engine.cache.layer_cache import LinearStateCache
from cortex.engine.kernels.selection import KernelBackend
from cortex.engine.layers.gated_delta_net import GatedDeltaNet

HIDDEN, HK, HV, DK, DV, KERNEL, NUM_SLOTS = 64, 2, 4, 16, 32, 4, 6
CONV_DIM = 2 * HK * DK + HV * DV
# without CUDA the kernels run on CPU tensors under Triton's interpreter (set by the root conftest)
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _layer(kernels: KernelBackend, device: torch.device) -> GatedDeltaNet:
    torch.manual_seed(0)
    layer = GatedDeltaNet(
        HIDDEN,
        num_k_heads=HK,
        num_v_heads=HV,
        head_k_dim=DK,
        head_v_dim=DV,
        conv_kernel=KERNEL,
        rms_norm_eps=1e-6,
        kernels=kernels,
    )
    with torch.no_grad():
        for param in layer.parameters():
            param.copy_(torch.randn_like(param) * 0.3)
    return layer.to(device)


def _batch(
    query_lens: list[int], num_cached: list[int], slots: list[int], device: torch.device
) -> ForwardBatch:
    # only the fields a linear-attention layer reads are meaningful here
    num_tokens = sum(query_lens)
    cu = [0]
    for n in query_lens:
        cu.append(cu[-1] + n)

    def t(values: list[int], dtype: torch.dtype) -> torch.Tensor:
        return torch.tensor(values, dtype=dtype, device=device)

    return ForwardBatch(
        input_ids=t([0] * num_tokens, torch.int64),
        positions=t([0] * num_tokens, torch.int64),
        cu_seqlens_q=t(cu, torch.int32),
        num_cached_tokens=t(num_cached, torch.int32),
        seq_lens=t([c + n for c, n in zip(num_cached, query_lens, strict=True)], torch.int32),
        slot_mapping=t([0] * num_tokens, torch.int64),
        block_tables=t([[0]] * len(query_lens), torch.int32),
        state_slots=t(slots, torch.int64),
        logits_indices=t([n - 1 for n in cu[1:]], torch.int64),
        query_lens_host=tuple(query_lens),
        num_cached_tokens_host=tuple(num_cached),
        max_query_len=max(query_lens),
        max_seq_len=max(c + n for c, n in zip(num_cached, query_lens, strict=True)),
    )


def _cache(device: torch.device) -> LinearStateCache:
    gen = torch.Generator().manual_seed(1)
    conv = torch.randn(NUM_SLOTS, CONV_DIM, KERNEL - 1, generator=gen)
    ssm = torch.randn(NUM_SLOTS, HV, DK, DV, generator=gen)
    return LinearStateCache(conv.to(device), ssm.to(device))


def _steps(device: torch.device) -> list[tuple[ForwardBatch, torch.Tensor]]:
    gen = torch.Generator().manual_seed(2)
    mixed = _batch([70, 5, 1], [0, 10, 20], [4, 0, 2], device)
    decode = _batch([1, 1, 1], [70, 15, 21], [4, 0, 2], device)
    return [(b, torch.randn(b.num_tokens, HIDDEN, generator=gen).to(device)) for b in (mixed, decode)]


def _rel_rms(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float((x - ref).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt())


def test_triton_layer_matches_reference_layer():
    device = DEVICE
    caches = {kernels: _cache(device) for kernels in ("ref", "triton")}
    layers = {kernels: _layer(kernels, device) for kernels in caches}
    for batch, x in _steps(device):
        with torch.no_grad():
            out = {kernels: layers[kernels](x, batch, caches[kernels]) for kernels in caches}
        assert _rel_rms(out["triton"], out["ref"]) < 1e-5
        assert _rel_rms(caches["triton"].ssm, caches["ref"].ssm) < 1e-5
        assert _rel_rms(caches["triton"].conv, caches["ref"].conv) < 1e-6


@pytest.mark.gpu
def test_cuda_forward_reads_nothing_back():
    device = torch.device("cuda")
    layer, cache = _layer("triton", device), _cache(device)
    steps = _steps(device)
    with torch.no_grad():
        for batch, x in steps:  # warm up: compile the kernels outside the checked region
            layer(x, batch, cache)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for batch, x in steps:
                layer(x, batch, cache)
        finally:
            torch.cuda.set_sync_debug_mode("default")
