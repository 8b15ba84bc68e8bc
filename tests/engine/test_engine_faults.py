"""No blast radius: a request whose step fails fails alone, its batch-mates get their exact tokens, and
the engine keeps serving. Over the scripted fake model, which raises if a recomputed cache is wrong."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
import torch
from fake_model import FakeModel, next_greedy_tokens
from test_engine import GREEDY, assert_all_free, make_engine

from cortex.engine.batch import ForwardBatch
from cortex.engine.cache.layer_cache import LayerCache
from cortex.engine.engine import Engine
from cortex.engine.engine_config import EngineConfig
from cortex.engine.errors import EngineError
from cortex.engine.models.weights import load_model
from cortex.engine.runner import Model
from cortex.engine.sampling_params import SamplingParams

POISON = 60  # a prompt starting with this token makes the forward raise once it reaches position ``at``
NORMAL = [[1, 2, 3], list(range(5, 30)), [9] * 11, [4, 8]]


class Poisoned:
    """Wraps a model: a step that computes a token at or past position ``at`` of a poisoned sequence (one
    whose prompt starts with POISON) runs the forward, so every cache in it is written, and then raises,
    whatever else the step holds: a request whose input breaks the forward after the damage is done.

    It recognises a poisoned sequence by its first token, so the engines it runs in have prefix caching
    off: a requeued request must recompute from position 0 for the wrapper to see that token again."""

    def __init__(self, model: Model, at: int = 0) -> None:
        self.model = model
        self.at = at
        self.num_raised = 0
        self._poisoned_slots: set[int] = set()  # state slots held by poisoned sequences

    def __call__(self, batch: ForwardBatch, caches: Sequence[LayerCache]) -> torch.Tensor:
        logits = self.model(batch, caches)
        poisoned = False
        for i, (num_new, num_cached) in enumerate(
            zip(batch.query_lens_host, batch.num_cached_tokens_host, strict=True)
        ):
            slot = int(batch.state_slots[i])
            if num_cached == 0:
                first = int(batch.input_ids[int(batch.cu_seqlens_q[i])])
                (self._poisoned_slots.add if first == POISON else self._poisoned_slots.discard)(slot)
            poisoned |= slot in self._poisoned_slots and num_cached + num_new > self.at
        if poisoned:
            self.num_raised += 1
            raise RuntimeError("poisoned input")
        return logits


async def collect(engine: Engine, prompt: list[int], params: SamplingParams) -> list[int] | BaseException:
    tokens: list[int] = []
    try:
        async for delta in engine.stream(prompt, params):
            tokens.extend(delta.token_ids)
    except EngineError as error:
        return error
    return tokens


async def run_beside(engine: Engine, poisoned: list[int], params: SamplingParams = GREEDY) -> list:
    """The poisoned prompt in the middle of the normal ones, all submitted together."""
    prompts = [*NORMAL[:2], poisoned, *NORMAL[2:]]
    return await asyncio.gather(*(collect(engine, p, params) for p in prompts))


@pytest.mark.parametrize(
    ("at", "description"), [(0, "as it arrives"), (8, "while it decodes, beside requests that had run")]
)
async def test_a_request_that_breaks_the_forward_fails_alone(at, description):
    model = Poisoned(FakeModel(), at=at)
    with make_engine(model, max_num_seqs=8, enable_prefix_caching=False) as engine:
        results = await run_beside(engine, [POISON, 1, 2, 3, 4])
        error = results.pop(2)
        assert isinstance(error, EngineError), description
        assert "a forward step failed: RuntimeError('poisoned input')" in str(error)
        assert results == [next_greedy_tokens(p, 12) for p in NORMAL]  # exact: recomputed caches are right
        assert model.num_raised >= 2  # it failed beside the others, then alone
        assert engine.stats().num_failed_steps == model.num_raised
        assert_all_free(engine)
        assert engine.generate(NORMAL, GREEDY)[3].token_ids == next_greedy_tokens(NORMAL[3], 12)


async def test_seeded_batch_mates_keep_their_tokens_through_a_quarantine():
    params = SamplingParams(max_tokens=12, temperature=1.0, seed=5, ignore_eos=True)
    with make_engine(FakeModel()) as engine:
        expected = [await collect(engine, p, params) for p in NORMAL]
    with make_engine(Poisoned(FakeModel(), at=4), enable_prefix_caching=False) as engine:
        results = await run_beside(engine, [POISON, 7], params)
        assert isinstance(results.pop(2), EngineError)
        assert results == expected


async def test_a_request_that_breaks_sampling_fails_alone_without_a_recompute():
    # resolved (so used as is), then past validation: the int64 overflow that once failed every step
    poisoned = SamplingParams(max_tokens=12, temperature=1.0, top_p=1, top_k=5, min_p=0, repetition_penalty=1)
    object.__setattr__(poisoned, "top_k", 2**63)
    model = FakeModel()
    with make_engine(model) as engine:
        prompts = [NORMAL[0], [7, 7], NORMAL[1]]
        results = await asyncio.gather(
            *(collect(engine, p, poisoned if i == 1 else GREEDY) for i, p in enumerate(prompts))
        )
        error = results.pop(1)
        assert isinstance(error, EngineError)
        assert "sampling failed: ValueError('Overflow" in str(error)
        assert results == [next_greedy_tokens(p, 12) for p in (NORMAL[0], NORMAL[1])]
        assert engine.stats().num_failed_steps == 0
        starts = [cached for _, cached_lens in model.steps for cached in cached_lens if cached == 0]
        assert len(starts) == len(prompts)  # each prompt prefilled once: nothing was recomputed
        assert_all_free(engine)


async def test_a_transient_failure_costs_nobody_their_result():
    class Flaky(FakeModel):
        num_failures = 1

        def __call__(self, batch, caches):
            if self.num_failures and batch.num_seqs > 1:
                self.num_failures -= 1
                raise RuntimeError("device hiccup")
            return super().__call__(batch, caches)

    with make_engine(Flaky()) as engine:
        results = await asyncio.gather(*(collect(engine, p, GREEDY) for p in NORMAL))
        assert results == [next_greedy_tokens(p, 12) for p in NORMAL]
        assert engine.stats().num_failed_steps == 1


async def test_a_forward_that_always_fails_fails_every_request_without_hanging():
    class Broken(FakeModel):
        def __call__(self, batch, caches):
            raise RuntimeError("kernel exploded")

    with make_engine(Broken()) as engine:
        results = await asyncio.wait_for(asyncio.gather(*(collect(engine, p, GREEDY) for p in NORMAL)), 10)
        assert all(isinstance(r, EngineError) and "kernel exploded" in str(r) for r in results)
        assert_all_free(engine)


async def test_requests_that_arrive_during_a_quarantine_wait_and_then_run():
    model = Poisoned(FakeModel(delay_s=0.005), at=6)
    with make_engine(model, enable_prefix_caching=False) as engine:
        first = asyncio.ensure_future(run_beside(engine, [POISON, 1]))
        while model.num_raised == 0:
            await asyncio.sleep(0.001)
        late = await collect(engine, [3, 1, 4], GREEDY)
        assert late == next_greedy_tokens([3, 1, 4], 12)
        results = await first
        assert isinstance(results.pop(2), EngineError)
        assert results == [next_greedy_tokens(p, 12) for p in NORMAL]


def test_the_real_model_batch_mates_of_a_failed_step_get_their_exact_tokens(tiny_checkpoint):
    """Qwen3.5's Gated DeltaNet states, updated in place, were half-written by the failed step."""
    folder = tiny_checkpoint("qwen3_5")
    model, model_config = load_model(folder, dtype="float32")
    config = EngineConfig(
        max_model_len=128, block_size=16, prefill_chunk_size=16, enable_prefix_caching=False
    )
    prompts = [list(range(3, 40)), [POISON, *range(100, 130)], [7, 11, 13], [5] * 20]
    params = SamplingParams(max_tokens=10, temperature=0.0, ignore_eos=True)
    with Engine(model, model_config, config) as engine:
        expected = [out.token_ids for out in engine.generate(prompts[:1] + prompts[2:], params)]
    poisoned = Poisoned(model, at=len(prompts[1]) + 3)
    with Engine(poisoned, model_config, config) as engine:

        async def run() -> list:
            return await asyncio.gather(*(collect(engine, p, params) for p in prompts))

        results = asyncio.run(run())
        assert poisoned.num_raised >= 2
        assert isinstance(results.pop(1), EngineError)
        assert results == expected
