"""The same model code on CUDA with the reference ops: logits and greedy tokens agree with the CPU run."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from forward_helpers import NaiveRunner

from cortex.engine.models import load_model


@pytest.mark.gpu
@pytest.mark.parametrize("arch", ["qwen3_5", "qwen3_5_moe", "qwen3_next", "qwen3"])
def test_cuda_float32_matches_cpu(arch: str, hf_checkpoint: Callable) -> None:
    path = hf_checkpoint(arch).path
    prompt = list(range(1, 100))
    cpu_model, config = load_model(path, dtype="float32", device="cpu")
    cuda_model, _ = load_model(path, dtype="float32", device="cuda")
    cpu_logits = NaiveRunner(cpu_model, config).prefill_logits(prompt)
    cuda_logits = NaiveRunner(cuda_model, config, device="cuda").prefill_logits(prompt, chunk_sizes=[64])
    assert (cuda_logits.cpu() - cpu_logits).abs().max() < 1e-3
    expected = NaiveRunner(cpu_model, config).greedy([prompt[:20], prompt[:7]], 16)
    assert NaiveRunner(cuda_model, config, device="cuda").greedy([prompt[:20], prompt[:7]], 16) == expected


@pytest.mark.gpu
def test_cuda_bfloat16_runs(hf_checkpoint: Callable) -> None:
    model, config = load_model(hf_checkpoint("qwen3_5").path, dtype="bfloat16", device="cuda")
    runner = NaiveRunner(model, config, dtype=torch.bfloat16, device="cuda")
    logits = runner.prefill_logits(list(range(1, 80)), chunk_sizes=[30])
    assert logits.dtype == torch.float32
    assert bool(torch.isfinite(logits).all())
