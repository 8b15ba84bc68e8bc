"""The CPU layout of a bf16 checkpoint (each plan ``engine/cpu.py`` can choose) against transformers.

The stated tolerance in bf16, against transformers' fp32 model on the same (bf16-rounded) weights:
prefill logits within 0.1 (0.25 for MoE, whose routing sees bf16 scores), and every greedy token one
that transformers, given the same prefix, scores within that of its best (bf16 rounding may swap
near-tied tokens, nothing more). In fp32 the layout is not applied and greedy outputs are
transformers' exactly (test_model_parity.py, test_engine_models.py).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
from forward_helpers import NaiveRunner

from cortex.engine.cpu import CpuPlan, cpu_capabilities
from cortex.engine.kernels import cpu_native
from cortex.engine.models import load_model
from cortex.engine.models.cpu_layout import CpuEmbedding, CpuLinear, apply_cpu_plan

PLANS = {
    "native-bf16": CpuPlan(torch.bfloat16, torch.bfloat16, "storage", gemv_without_onednn=True),
    "fp32-copy": CpuPlan(torch.bfloat16, torch.float32, "fp32_copy", gemv_without_onednn=False),
    "fp32-upcast": CpuPlan(torch.bfloat16, torch.float32, "upcast", gemv_without_onednn=False),
    "bf16-kernel": CpuPlan(torch.bfloat16, torch.float32, "bf16_kernel", gemv_without_onednn=False),
}
KERNEL_MISSING = cpu_native.unavailable(cpu_capabilities().flags)
needs_kernel = pytest.mark.skipif(KERNEL_MISSING is not None, reason=f"no CPU kernel here: {KERNEL_MISSING}")


def _prompt(n: int, seed: int) -> list[int]:
    return torch.randint(0, 512, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


TOLERANCE = {"qwen3_5": 0.1, "qwen3_5_moe": 0.25}
# fp32-upcast runs fp32-copy's arithmetic on weights converted per call: checked equal to it, not again here
CASES = [
    ("qwen3_5", "native-bf16"),
    ("qwen3_5", "fp32-copy"),
    ("qwen3_5_moe", "fp32-copy"),
    pytest.param("qwen3_5", "bf16-kernel", marks=needs_kernel),
    pytest.param("qwen3_5_moe", "bf16-kernel", marks=needs_kernel),
]


def _oracle(hf_checkpoint: Callable, arch: str) -> tuple:
    """(folder, transformers fp32 model on the bf16-rounded weights)."""
    ckpt = hf_checkpoint(arch)
    rounded = copy.deepcopy(ckpt.model)
    with torch.no_grad():
        for param in rounded.parameters():
            param.copy_(param.bfloat16().float())
    return ckpt.path, rounded


@pytest.mark.parametrize(("arch", "plan_name"), CASES)
def test_each_cpu_plan_stays_close_to_transformers(
    hf_checkpoint: Callable, arch: str, plan_name: str
) -> None:
    folder, hf = _oracle(hf_checkpoint, arch)
    tolerance = TOLERANCE[arch]
    plan = PLANS[plan_name]
    model, config = load_model(folder, dtype="bfloat16", device="cpu")
    apply_cpu_plan(model, plan)
    linears = [m for m in model.modules() if isinstance(m, CpuLinear)]
    assert linears
    assert all(m.weight.dtype == torch.bfloat16 for m in linears)  # stored as the checkpoint says
    assert all((m.weight_fp32 is not None) == (plan.batched_weights == "fp32_copy") for m in linears)
    assert all((m.kernel is not None) == (plan.batched_weights == "bf16_kernel") for m in linears)
    if plan.mixed:
        assert isinstance(model.model.embed_tokens, CpuEmbedding)
        assert model.lm_head.weight is model.model.embed_tokens.weight or not config.tie_word_embeddings
    prompts = [_prompt(40, seed=6), _prompt(33, seed=7)]
    with torch.no_grad():
        expected_logits = hf(torch.tensor([prompts[0]])).logits[0]
    logits = NaiveRunner(model, config, dtype=torch.bfloat16).prefill_logits(prompts[0])  # many-row matmuls
    assert (logits - expected_logits).abs().max() < tolerance
    # one sequence decodes through one-row matmuls (the gemv path), two together through the batched path
    alone = NaiveRunner(model, config, dtype=torch.bfloat16).greedy(prompts[:1], 8)
    together = NaiveRunner(model, config, dtype=torch.bfloat16).greedy(prompts, 8)
    for prompt, tokens in [(prompts[0], alone[0]), *zip(prompts, together, strict=True)]:
        with torch.no_grad():
            scores = hf(torch.tensor([prompt + tokens[:-1]])).logits[0, len(prompt) - 1 :]  # [8, vocab]
        chosen = scores.gather(-1, torch.tensor(tokens)[:, None])[:, 0]
        assert (scores.amax(-1) - chosen).max() < tolerance


def test_upcast_per_call_computes_what_the_fp32_copy_computes(hf_checkpoint: Callable) -> None:
    folder = hf_checkpoint("qwen3_5").path
    logits = {}
    for plan_name in ("fp32-copy", "fp32-upcast"):
        model, config = load_model(folder, dtype="bfloat16", device="cpu")
        apply_cpu_plan(model, PLANS[plan_name])
        runner = NaiveRunner(model, config, dtype=torch.bfloat16)
        logits[plan_name] = runner.prefill_logits(_prompt(40, seed=6))  # many-row matmuls
    assert torch.equal(logits["fp32-copy"], logits["fp32-upcast"])


def test_fp32_weights_are_left_as_loaded(hf_checkpoint: Callable) -> None:
    model, _ = load_model(hf_checkpoint("qwen3_5").path, dtype="float32", device="cpu")
    apply_cpu_plan(model, CpuPlan(torch.float32, torch.float32, "storage", gemv_without_onednn=False))
    assert not any(isinstance(m, CpuLinear) for m in model.modules())
