"""cortex models against transformers (the oracle) on tiny random checkpoints, float32 on CPU:
prefill logits, greedy decoding, chunked prefill across the 64-token delta chunk, ragged batches."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from forward_helpers import NaiveRunner

from cortex.engine.models import CausalLM, ModelConfig, load_model

ARCHS = ["qwen3_5", "qwen3_5_moe", "qwen3_next", "qwen3"]


@pytest.fixture(params=ARCHS)
def pair(request: pytest.FixtureRequest, hf_checkpoint: Callable) -> tuple[object, CausalLM, ModelConfig]:
    ckpt = hf_checkpoint(request.param)
    model, config = load_model(ckpt.path, dtype="float32", device="cpu")
    return ckpt.model, model, config


def _prompt(n: int, seed: int) -> list[int]:
    return torch.randint(0, 512, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def _hf_logits(hf: object, prompt: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return hf(torch.tensor([prompt])).logits[0]  # type: ignore[operator]


def test_prefill_logits_match_transformers(pair: tuple) -> None:
    hf, model, config = pair
    prompt = _prompt(150, seed=1)  # > 2 delta-rule chunks of 64
    expected = _hf_logits(hf, prompt)
    runner = NaiveRunner(model, config)
    whole = runner.prefill_logits(prompt)
    assert (whole - expected).abs().max() < 1e-4
    chunked = runner.prefill_logits(prompt, chunk_sizes=[50, 37])  # 3 chunks: 50, 37, 63
    assert (chunked - expected).abs().max() < 1e-4
    assert (chunked - whole).abs().max() < 1e-5


def test_greedy_decode_matches_transformers_generate(pair: tuple) -> None:
    hf, model, config = pair
    prompt = _prompt(20, seed=2)
    with torch.no_grad():
        generated = hf.generate(torch.tensor([prompt]), max_new_tokens=32, do_sample=False)
    expected = generated[0, len(prompt) :].tolist()
    assert len(expected) == 32
    assert len(set(expected)) > 4  # a real sequence, not one repeated token
    assert NaiveRunner(model, config).greedy([prompt], 32)[0] == expected
    # the same with a long prompt prefilled in chunks of 48 tokens
    long_prompt = _prompt(130, seed=3)
    with torch.no_grad():
        generated = hf.generate(torch.tensor([long_prompt]), max_new_tokens=32, do_sample=False)
    expected_long = generated[0, len(long_prompt) :].tolist()
    assert NaiveRunner(model, config).greedy([long_prompt], 32, chunk_size=48)[0] == expected_long


def test_ragged_batch_matches_each_sequence_alone(pair: tuple) -> None:
    _, model, config = pair
    prompts = [_prompt(n, seed=10 + n) for n in (3, 70, 1, 29)]
    alone = [NaiveRunner(model, config).greedy([p], 8)[0] for p in prompts]
    together = NaiveRunner(model, config).greedy(prompts, 8, chunk_size=32)
    assert together == alone


def test_mixed_prefill_and_decode_step_matches_separate_steps(pair: tuple) -> None:
    _, model, config = pair
    a, b = _prompt(12, seed=4), _prompt(40, seed=5)
    separate = NaiveRunner(model, config)
    separate.add(0)
    separate.add(1)
    separate.step([(0, a)])
    decode_alone = separate.step([(0, [7])], all_logits=True)[0]
    prefill_alone = separate.step([(1, b)], all_logits=True)[0]
    mixed = NaiveRunner(model, config)
    mixed.add(0)
    mixed.add(1)
    mixed.step([(0, a)])
    decode_mixed, prefill_mixed = mixed.step([(0, [7]), (1, b)], all_logits=True)
    torch.testing.assert_close(decode_mixed, decode_alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(prefill_mixed, prefill_alone, atol=1e-5, rtol=1e-5)


def test_bfloat16_prefill_stays_close(hf_checkpoint: Callable) -> None:
    ckpt = hf_checkpoint("qwen3_5")
    model, config = load_model(ckpt.path, dtype="bfloat16", device="cpu")
    assert model.model.embed_tokens.weight.dtype == torch.bfloat16
    prompt = _prompt(40, seed=6)
    logits = NaiveRunner(model, config, dtype=torch.bfloat16).prefill_logits(prompt)
    assert logits.dtype == torch.float32
    assert (logits - _hf_logits(ckpt.model, prompt)).abs().max() < 0.1
