"""sample() and its logits transforms, with transformers' logits processors as the oracle."""

from __future__ import annotations

import math

import pytest
import torch
from transformers.generation.logits_process import (
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from cortex.engine.sampling import (
    SamplingRow,
    apply_min_p,
    apply_presence_frequency_penalties,
    apply_repetition_penalty,
    apply_top_k,
    apply_top_p,
    sample,
)
from cortex.engine.sampling_params import SamplingParams

VOCAB = 50


def logits(rows: int = 4, seed: int = 0) -> torch.Tensor:
    return 2.0 * torch.randn(rows, VOCAB, generator=torch.Generator().manual_seed(seed))


def row(seed: int | None = None, prompt=(1, 2), output=(), **params) -> SamplingRow:
    return SamplingRow(
        params=SamplingParams(seed=seed, **params).resolve(),
        prompt_token_ids=list(prompt),
        output_token_ids=list(output),
        generator=torch.Generator().manual_seed(seed if seed is not None else 0),
    )


@pytest.mark.parametrize("k", [1, 5, 49])
def test_top_k_matches_transformers(k):
    x = logits()
    expected = TopKLogitsWarper(top_k=k)(None, x.clone())
    assert torch.equal(apply_top_k(x, torch.full((4,), k)), expected)


def test_top_k_disabled_and_per_row():
    x = logits(2)
    out = apply_top_k(x, torch.tensor([0, 3]))
    assert torch.equal(out[0], x[0])
    assert int(torch.isfinite(out[1]).sum()) == 3


@pytest.mark.parametrize("p", [0.05, 0.5, 0.9, 1.0])
def test_top_p_matches_transformers(p):
    x = logits()
    expected = TopPLogitsWarper(top_p=p)(None, x.clone())
    assert torch.equal(apply_top_p(x, torch.full((4,), p)), expected)


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 1.0])
def test_min_p_matches_transformers(p):
    x = logits()
    out = apply_min_p(x, torch.full((4,), p))
    if p == 0.0:
        assert torch.equal(out, x)
    else:
        assert torch.equal(out, MinPLogitsWarper(min_p=p)(None, x.clone()))


@pytest.mark.parametrize("penalty", [0.5, 1.3, 2.0])
def test_repetition_penalty_matches_transformers(penalty):
    x = logits(1)
    seen = torch.tensor([3, 7, 7, 11, 40])
    expected = RepetitionPenaltyLogitsProcessor(penalty=penalty)(seen.unsqueeze(0), x.clone())
    out = apply_repetition_penalty(x, torch.zeros_like(seen), seen, torch.tensor([penalty]))
    assert torch.equal(out, expected)


def test_repetition_penalty_applies_per_row():
    x = logits(2)
    out = apply_repetition_penalty(x, torch.tensor([1, 1]), torch.tensor([4, 9]), torch.tensor([1.0, 2.0]))
    assert torch.equal(out[0], x[0])
    assert out[1, 4] == (x[1, 4] / 2 if x[1, 4] > 0 else x[1, 4] * 2)
    assert torch.equal(out[1, :4], x[1, :4])


def test_presence_and_frequency_penalties_follow_openai():
    x = torch.zeros(2, 5)
    out = apply_presence_frequency_penalties(
        x,
        torch.tensor([0, 0, 0, 0, 1]),
        torch.tensor([1, 1, 1, 3, 2]),
        presence=torch.tensor([0.5, 0.0]),
        frequency=torch.tensor([0.25, 1.0]),
    )
    assert out.tolist() == [[0.0, -(0.5 + 3 * 0.25), 0.0, -(0.5 + 0.25), 0.0], [0.0, 0.0, -1.0, 0.0, 0.0]]


def test_greedy_is_argmax():
    x = logits()
    out = sample(x, [row(temperature=0.0) for _ in range(4)])
    assert out.token_ids == x.argmax(-1).tolist()
    assert out.logprobs == [None] * 4


def test_penalties_apply_before_greedy():
    x = torch.zeros(1, VOCAB)
    x[0, 5], x[0, 6] = 2.0, 1.5
    assert sample(x, [row(temperature=0.0, output=[5], presence_penalty=1.0)]).token_ids == [6]
    assert sample(x, [row(temperature=0.0, prompt=[5], repetition_penalty=2.0)]).token_ids == [6]
    assert sample(x, [row(temperature=0.0, prompt=[5], presence_penalty=1.0)]).token_ids == [5]


def test_same_seed_same_tokens_whatever_the_batch():
    x = logits(3)
    alone = sample(x[1:2], [row(seed=42, temperature=1.0)]).token_ids
    batch = sample(
        x, [row(seed=7, temperature=0.7, top_p=0.9), row(seed=42, temperature=1.0), row(temperature=0.0)]
    )
    assert batch.token_ids[1] == alone[0]
    other = sample(x[[2, 1]], [row(seed=3, temperature=1.0, top_k=5), row(seed=42, temperature=1.0)])
    assert other.token_ids[1] == alone[0]


def test_draws_follow_the_warped_distribution():
    x = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05] + [1e-9] * (VOCAB - 4)]))
    generator_row = row(seed=1, temperature=1.0, top_k=3)
    counts = torch.zeros(VOCAB)
    for _ in range(3000):
        counts[sample(x, [generator_row]).token_ids[0]] += 1
    freq = counts / counts.sum()
    assert counts[3:].sum() == 0  # top_k=3 removed the rest
    assert freq[:3].tolist() == pytest.approx([0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95], abs=0.03)


def test_low_temperature_concentrates_on_the_argmax():
    x = logits(1)
    tokens = {sample(x, [row(seed=s, temperature=0.01)]).token_ids[0] for s in range(20)}
    assert tokens == {int(x.argmax())}


def test_logprobs_are_the_raw_distribution():
    x = logits(2)
    out = sample(
        x, [row(temperature=0.0, logprobs=3, repetition_penalty=2.0), row(temperature=0.0, logprobs=0)]
    )
    raw = x.log_softmax(-1)
    first = out.logprobs[0]
    assert first is not None
    assert first.logprob == pytest.approx(float(raw[0, out.token_ids[0]]))
    assert [t for t, _ in first.top] == raw[0].topk(3).indices.tolist()
    assert all(math.isclose(lp, float(raw[0, t]), rel_tol=1e-6) for t, lp in first.top)
    second = out.logprobs[1]
    assert second is not None
    assert second.top == ()


def test_top_k_fast_path_draws_from_the_same_support_as_full_filtering():
    x = logits(1, seed=3)
    k, p = torch.tensor([10]), torch.tensor([0.6])
    support = set(torch.isfinite(apply_top_p(apply_top_k(x, k), p))[0].nonzero().flatten().tolist())
    drawn = {sample(x, [row(seed=s, temperature=1.0, top_k=10, top_p=0.6)]).token_ids[0] for s in range(200)}
    assert drawn == support


def poisoned_row(**params) -> SamplingRow:
    """A row whose top_k got past validation (as 2**63 once did) and overflows the sampler's int64."""
    poisoned = row(**params)
    object.__setattr__(poisoned.params, "top_k", 2**63)
    return poisoned


def test_a_row_that_cannot_be_sampled_fails_alone():
    x = logits(3)
    clean = sample(x[[0, 2]], [row(seed=42, temperature=1.0), row(temperature=0.0, logprobs=2)])
    rows = [
        row(seed=42, temperature=1.0),
        poisoned_row(seed=1, temperature=1.0),
        row(temperature=0.0, logprobs=2),
    ]
    out = sample(x, rows)
    assert list(out.errors) == [1]
    assert "Overflow" in str(out.errors[1])
    assert out.token_ids == [clean.token_ids[0], -1, clean.token_ids[1]]
    assert out.logprobs == [None, None, clean.logprobs[1]]
    alone = sample(x[:1], [poisoned_row(seed=1, temperature=1.0)])
    assert (alone.token_ids, list(alone.errors)) == ([-1], [0])
