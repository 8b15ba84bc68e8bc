"""The Engine at tensor_parallel_size=2 (two rank processes, gloo on CPU) against tensor_parallel_size=1,
for every architecture: the same greedy tokens over batched, chunked prefill and decode (and from the
prefix cache), and the same log-probabilities (the top 20 of each step's distribution) within 1e-5 in
float32."""

from __future__ import annotations

from pathlib import Path

import pytest
from hf_checkpoints import ARCHS, build_hf_model, save_checkpoint

from cortex.engine.engine import Engine
from cortex.engine.errors import ShardingError
from cortex.engine.progress import ProgressSnapshot
from cortex.engine.sampling_params import SamplingParams
from cortex.engine.structured.params import StructuredOutputsParams
from cortex.errors import InvalidRequestError

PROMPTS = [list(range(3, 8)), list(range(10, 90)), [(7 * i) % 500 + 1 for i in range(23)]]
GREEDY = SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True, logprobs=20)
SEEDED = SamplingParams(max_tokens=12, temperature=0.9, top_k=40, seed=5, ignore_eos=True)
OPTIONS = {"max_model_len": 256, "max_num_batched_tokens": 64, "prefill_chunk_size": 16}


@pytest.fixture(scope="module", params=ARCHS)
def checkpoint(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    # untied: a tied random embedding makes greedy decoding repeat one token
    return save_checkpoint(build_hf_model(request.param, tie=False), tmp_path_factory.mktemp(request.param))


def test_tensor_parallel_engine_matches_one_device(checkpoint):
    with Engine.from_pretrained(checkpoint, **OPTIONS) as engine:
        expected = engine.generate(PROMPTS, [GREEDY, GREEDY, SEEDED])
    with Engine.from_pretrained(checkpoint, tensor_parallel_size=2, **OPTIONS) as engine:
        assert engine.devices == ("cpu", "cpu")
        got = engine.generate(PROMPTS, [GREEDY, GREEDY, SEEDED])
        # the long prompt again: served from the prefix cache (KV blocks, and a state snapshot restored
        # on every rank for the hybrid models)
        (again,) = engine.generate([PROMPTS[1]], GREEDY)
        stats = engine.stats()
    assert again.token_ids == expected[1].token_ids
    assert stats.prefix_cache is not None
    assert stats.prefix_cache.num_hit_tokens > 0
    assert [out.token_ids for out in got] == [out.token_ids for out in expected]
    for out, ref in zip(got[:2], expected[:2], strict=True):
        assert out.logprobs is not None
        assert ref.logprobs is not None
        for step, ref_step in zip(out.logprobs, ref.logprobs, strict=True):
            assert [token for token, _, _ in step.top] == [token for token, _, _ in ref_step.top]
            diffs = [abs(a - b) for (_, _, a), (_, _, b) in zip(step.top, ref_step.top, strict=True)]
            assert max([*diffs, abs(step.logprob - ref_step.logprob)]) < 1e-5
    assert (stats.num_running, stats.num_kv_blocks_used, stats.num_state_slots_used) == (0, 0, 0)


def test_heads_that_do_not_divide_are_refused_before_any_rank_starts(hf_checkpoint):
    with pytest.raises(ShardingError, match=r"num_attention_heads=4 \(attention query heads\)"):
        Engine.from_pretrained(hf_checkpoint("qwen3_5").path, tensor_parallel_size=3)


def test_structured_outputs_are_refused_with_a_clear_error(tensor_parallel_engine):
    params = SamplingParams(max_tokens=8, structured_outputs=StructuredOutputsParams(json_object=True))
    with pytest.raises(InvalidRequestError, match="not supported yet with tensor_parallel_size=2"):
        tensor_parallel_engine.generate([[1, 2, 3]], params)
    assert tensor_parallel_engine.generate([[1, 2, 3]], SamplingParams(max_tokens=2))[0].token_ids


def test_a_tensor_parallel_load_reports_rank_0s_progress_in_the_engines_process(
    tensor_parallel_engine, load_progress
):
    fractions = [snapshot.fraction for snapshot in load_progress]
    assert fractions == sorted(fractions)
    assert (fractions[0], fractions[-1]) == (0.0, 1.0)
    assert load_progress[-1].done
    assert load_progress[-1].tensors_done == load_progress[-1].tensors_total > 1


@pytest.fixture(scope="module")
def load_progress() -> list[ProgressSnapshot]:
    """What the module's tensor-parallel engine reported while it loaded."""
    return []


@pytest.fixture(scope="module")
def tensor_parallel_engine(hf_checkpoint, load_progress):
    with Engine.from_pretrained(
        hf_checkpoint("qwen3").path, tensor_parallel_size=2, max_model_len=128, progress=load_progress.append
    ) as engine:
        yield engine
