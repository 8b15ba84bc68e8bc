"""The Engine over the real model code: tiny random transformers checkpoints of each architecture.

transformers' greedy ``generate`` is the oracle. Prompts are longer than the prefill chunk (16 here)
and than the 64-token delta-rule chunk; batches mix lengths; a tiny cache budget forces preemption.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hf_checkpoints import ARCHS, build_hf_model, save_checkpoint

from cortex.engine.engine import Engine
from cortex.engine.sampling_params import SamplingParams

NUM_TOKENS = 32
PROMPTS = [list(range(3, 8)), list(range(10, 90)), [(7 * i) % 500 + 1 for i in range(23)]]
GREEDY = SamplingParams(max_tokens=NUM_TOKENS, temperature=0.0, ignore_eos=True)


@pytest.fixture(scope="module", params=ARCHS)
def checkpoint(request, tmp_path_factory) -> tuple[Path, list[list[int]]]:
    """(folder, transformers' greedy tokens for each of PROMPTS)."""
    model = build_hf_model(request.param, tie=False)  # untied: tied random embeddings repeat one token
    folder = save_checkpoint(model, tmp_path_factory.mktemp(request.param))
    expected = []
    with torch.no_grad():
        for prompt in PROMPTS:
            out = model.generate(
                torch.tensor([prompt]),
                max_new_tokens=NUM_TOKENS,
                min_new_tokens=NUM_TOKENS,
                do_sample=False,
                pad_token_id=0,
            )
            expected.append(out[0, len(prompt) :].tolist())
    return folder, expected


def test_greedy_matches_transformers_alone_and_batched(checkpoint):
    folder, expected = checkpoint
    with Engine.from_pretrained(
        folder, max_model_len=256, max_num_batched_tokens=64, prefill_chunk_size=16
    ) as engine:
        alone = [engine.generate([prompt], GREEDY)[0].token_ids for prompt in PROMPTS]
        batched = [out.token_ids for out in engine.generate(PROMPTS, GREEDY)]
        stats = engine.stats()
    assert alone == expected
    assert batched == expected
    assert (stats.num_kv_blocks_used, stats.num_state_slots_used) == (0, 0)


def test_forced_preemption_matches_transformers(checkpoint):
    folder, expected = checkpoint
    with Engine.from_pretrained(folder, max_model_len=128, block_size=16) as engine:
        per_block, per_slot = engine.cache_plan.bytes_per_block, engine.cache_plan.bytes_per_slot
    # 3 slots, 10 blocks (the requests need 3 + 7 + 4 blocks), and as much again for prefix-cache snapshots
    # where the model has state to snapshot
    budget = (2 if per_slot else 1) * (3 * per_slot + 10 * per_block)
    with Engine.from_pretrained(
        folder,
        max_model_len=128,
        block_size=16,
        cache_memory_bytes=budget,
        prefill_chunk_size=32,
        snapshot_memory_fraction=0.5,
    ) as engine:
        assert (engine.cache_plan.num_slots, engine.cache_plan.num_blocks) == (3, 10)
        outs = engine.generate(PROMPTS, GREEDY)
        stats = engine.stats()
    assert stats.num_preemptions > 0
    assert [out.token_ids for out in outs] == expected
    assert (stats.num_kv_blocks_used, stats.num_state_slots_used) == (0, 0)


async def test_stream_and_abort(checkpoint):
    folder, expected = checkpoint
    max_model_len = 256
    with Engine.from_pretrained(folder, max_model_len=max_model_len) as engine:
        tokens: list[int] = []
        params = SamplingParams(max_tokens=None, temperature=0.0, ignore_eos=True)  # long enough to abort
        aborted = False
        async for delta in engine.stream(PROMPTS[1], params, request_id="r"):
            tokens.extend(delta.token_ids)
            if len(tokens) >= 5 and not aborted:
                # the step thread may have run ahead of this loop on a busy machine: deltas it queued
                # before the abort still arrive, then the abort ends the stream
                engine.abort("r")
                aborted = True
        assert len(tokens) >= 5
        assert tokens[:NUM_TOKENS] == expected[1][: len(tokens)]
        assert delta.finish_reason == "abort"
        assert len(PROMPTS[1]) + len(tokens) < max_model_len  # the abort ended it, not the context
        stats = engine.stats()
        assert (stats.num_running, stats.num_kv_blocks_used, stats.num_state_slots_used) == (0, 0, 0)


@pytest.mark.gpu
def test_cuda_greedy_matches_transformers(checkpoint):
    folder, expected = checkpoint
    with Engine.from_pretrained(
        folder, device="cuda", max_model_len=256, max_num_batched_tokens=64, prefill_chunk_size=16
    ) as engine:
        outs = engine.generate(PROMPTS, GREEDY)
    # fp32 on a GPU differs from the CPU in the last bits; tiny random models rarely have near-ties
    assert [out.token_ids for out in outs] == expected


@pytest.mark.gpu
def test_cuda_bfloat16_runs_with_seeds(checkpoint):
    folder, _ = checkpoint
    params = SamplingParams(max_tokens=16, temperature=0.8, seed=3, ignore_eos=True)
    with Engine.from_pretrained(folder, device="cuda", dtype="bfloat16", max_model_len=256) as engine:
        (alone,) = engine.generate([PROMPTS[0]], params)
        batched = engine.generate(PROMPTS, [params, GREEDY, GREEDY])
    assert len(alone.token_ids) == 16
    assert batched[0].token_ids == alone.token_ids


def test_seeded_sampling_is_independent_of_batch_mates(checkpoint):
    folder, _ = checkpoint
    seeded = SamplingParams(max_tokens=16, temperature=0.9, top_k=50, seed=11, ignore_eos=True)
    with Engine.from_pretrained(folder, max_model_len=256) as engine:
        (alone,) = engine.generate([PROMPTS[2]], seeded)
        batched = engine.generate(PROMPTS, [GREEDY, GREEDY, seeded])
    assert batched[2].token_ids == alone.token_ids
