"""Prefix caching over the real model code, every architecture: greedy outputs with the cache on are the
ones a cache-off engine gives (itself checked against transformers in test_engine_models.py).

Tiny random transformers checkpoints; 16-token blocks, snapshots every 2 blocks, 16-token prefill chunks,
so that hits, snapshot cuts, chunked prefills after a restored state and the 64-token delta-rule chunk all
occur with short prompts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from hf_checkpoints import ARCHS, build_hf_model, save_checkpoint

from cortex.engine.engine import Engine
from cortex.engine.sampling_params import SamplingParams

GREEDY = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)
SYSTEM = [(11 * i) % 480 + 3 for i in range(70)]  # shared by every conversation below
OPTIONS = {"max_model_len": 256, "max_num_batched_tokens": 48, "prefill_chunk_size": 16, "block_size": 16}


@pytest.fixture(scope="module", params=ARCHS)
def folder(request, tmp_path_factory) -> Path:
    model = build_hf_model(request.param, tie=False)
    return save_checkpoint(model, tmp_path_factory.mktemp(f"{request.param}_prefix"))


async def until(condition: Callable[[], bool], timeout_s: float = 60.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.001)


def reference(
    folder: Path, prompts: list[list[int]], params: SamplingParams = GREEDY, device: str = "cpu"
) -> list[list[int]]:
    with Engine.from_pretrained(folder, device=device, enable_prefix_caching=False, **OPTIONS) as engine:
        return [out.token_ids for out in engine.generate(prompts, params)]


def test_conversations_users_and_divergences_match_the_cache_off_engine(folder):
    prompts, outputs = conversations_and_divergences(folder, "cpu")
    assert outputs == reference(folder, prompts)


@pytest.mark.gpu
def test_cuda_prefix_cache_matches_the_cache_off_engine(folder):
    # the snapshot copies and shared pages on the device; fp32 keeps near-ties out of the comparison
    prompts, outputs = conversations_and_divergences(folder, "cuda")
    assert outputs == reference(folder, prompts, device="cuda")


def conversations_and_divergences(folder: Path, device: str) -> tuple[list[list[int]], list[list[int]]]:
    """Run the scenarios on a cache-on engine; returns (prompts, greedy outputs) in the order run."""
    prompts: list[list[int]] = []
    outputs: list[list[int]] = []
    cached: list[int] = []
    with Engine.from_pretrained(folder, device=device, snapshot_interval_blocks=2, **OPTIONS) as engine:

        def run(batch: list[list[int]], boundaries: list[int | None] | None = None) -> list[list[int]]:
            outs = engine.generate(batch, GREEDY, turn_boundaries=boundaries)
            prompts.extend(batch)
            outputs.extend(o.token_ids for o in outs)
            cached.extend(o.num_cached_tokens for o in outs)
            return [o.token_ids for o in outs]

        # a three-turn conversation: each prompt repeats the last one and its reply, then a new user turn
        history = [*SYSTEM, 400, 401]
        for turn in range(3):
            prompt = [*history, 410 + turn, 411, 412]
            (reply,) = run([prompt], [len(prompt) - 1])  # the "generation prompt" is the last token
            history = [*prompt, *reply]
        # each turn resumes at the last full block of what the previous turn computed, its reply included:
        # a KV-only model from the cached blocks alone, a hybrid one from its rolling output snapshot
        assert cached == [0, 80, 80]
        # the same system prompt, different users, all at once
        run([[*SYSTEM, 300 + i, 301, 302] for i in range(4)])
        assert min(cached[-4:]) >= 64
        # diverging exactly at a block boundary (96) and inside a block (100)
        run([[*SYSTEM, *range(100, 126), 7, 8, 9, 10]])
        run([[*SYSTEM, *range(100, 126), 20, 21, 22, 23], [*SYSTEM, *range(100, 126), 7, 8, 30, 31, 32]])
        assert cached[-2:] == [96, 96]
        stats = engine.stats()
    assert (stats.num_kv_blocks_used, stats.num_state_slots_used) == (0, 0)
    return prompts, outputs


async def test_concurrent_streams_sharing_a_prefix_and_an_abort_mid_prefill(folder):
    prompts = [[*SYSTEM, *SYSTEM[:50], 200 + i] for i in range(3)]
    params = SamplingParams(max_tokens=None, temperature=0.0, ignore_eos=True)
    with Engine.from_pretrained(folder, snapshot_interval_blocks=2, **OPTIONS) as engine:

        async def consume(index: int, request_id: str) -> list[int]:
            tokens: list[int] = []
            async for delta in engine.stream(prompts[index], params, request_id=request_id):
                tokens.extend(delta.token_ids)
                if len(tokens) >= GREEDY.max_tokens:
                    engine.abort(request_id)
            return tokens[: GREEDY.max_tokens]

        doomed = asyncio.ensure_future(consume(0, "doomed"))
        await until(lambda: engine.stats().prefix_cache.num_cached_blocks >= 2)  # its first 32 tokens are in
        others = [asyncio.ensure_future(consume(i, f"r{i}")) for i in (1, 2)]
        await until(lambda: engine.stats().num_running == 3)
        engine.abort("doomed")  # mid-prefill: the others share its pages and snapshots
        assert len(await doomed) < GREEDY.max_tokens
        outs = [await task for task in others]
        stats = engine.stats()
    assert outs == reference(folder, prompts[1:])
    assert stats.prefix_cache is not None
    assert stats.prefix_cache.num_hit_tokens > 0
    assert (stats.num_kv_blocks_used, stats.num_state_slots_used) == (0, 0)


def test_preemption_under_cache_pressure_matches_the_cache_off_engine(folder):
    with Engine.from_pretrained(folder, **OPTIONS) as engine:
        per_block, per_slot = engine.cache_plan.bytes_per_block, engine.cache_plan.bytes_per_slot
    # 3 slots and 12 blocks for 4 requests that need 6 blocks each, and as much again for snapshots
    budget = (2 if per_slot else 1) * (3 * per_slot + 12 * per_block)
    prompts = [[*SYSTEM[:60], 250 + i, 251] for i in range(4)]
    params = SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True)
    options = {**OPTIONS, "max_model_len": 128}
    with Engine.from_pretrained(
        folder, cache_memory_bytes=budget, snapshot_memory_fraction=0.5, snapshot_interval_blocks=1, **options
    ) as engine:
        assert engine.cache_plan.num_blocks == 12
        outs = engine.generate(prompts, params)
        again = engine.generate(prompts[:1], params)
        stats = engine.stats()
    assert stats.num_preemptions > 0
    assert stats.prefix_cache is not None
    assert stats.prefix_cache.num_hits > 0
    expected = reference(folder, prompts, params)
    assert [o.token_ids for o in outs] == expected
    assert again[0].token_ids == expected[0]
    assert (stats.num_kv_blocks_used, stats.num_state_slots_used) == (0, 0)
