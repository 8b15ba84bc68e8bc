"""Prefix caching in the Engine over the scripted fake model, which fails loudly if a shared KV page or a
restored state slot does not hold exactly the context it claims (see fake_model.py)."""

from __future__ import annotations

import asyncio
import logging

import pytest
from fake_model import FakeModel, char_tokenizer, fake_config, next_greedy_tokens
from hypothesis import given, settings
from hypothesis import strategies as st

from cortex.engine.engine import Engine
from cortex.engine.engine_config import EngineConfig
from cortex.engine.sampling_params import SamplingParams
from cortex.errors import InvalidRequestError

GREEDY = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)
SYSTEM = [(5 * i) % 60 + 1 for i in range(37)]  # a 37-token "system prompt": 9 blocks of 4 and a bit


def make_engine(model: FakeModel | None = None, **config) -> Engine:
    config.setdefault("max_model_len", 128)
    config.setdefault("block_size", 4)
    config.setdefault("snapshot_interval_blocks", 4)
    return Engine(model or FakeModel(), fake_config(max_position_embeddings=256), EngineConfig(**config))


def assert_all_free(engine: Engine) -> None:
    stats = engine.stats()
    assert (stats.num_running, stats.num_waiting) == (0, 0)
    assert (stats.num_kv_blocks_used, stats.num_state_slots_used) == (0, 0)


def computed(model: FakeModel, since: int = 0) -> int:
    """Tokens the model computed in its steps since step ``since``."""
    return sum(sum(lens) for lens, _ in model.steps[since:])


def test_a_multi_turn_conversation_prefills_only_each_new_turn():
    model = FakeModel()
    with make_engine(model) as engine:
        history, previous_computed = list(SYSTEM), 0
        for turn in range(4):
            prompt = [*history, 40 + turn, 41, 42]  # the user's turn
            since = len(model.steps)
            (out,) = engine.generate([prompt], GREEDY, turn_boundaries=[len(prompt)])
            assert out.token_ids == next_greedy_tokens(prompt, 6)
            # the next turn repeats the prompt and the reply: it resumes at the last block boundary of
            # what the previous turn computed (its reply's last token was sampled, never computed)
            assert out.num_cached_tokens == previous_computed // 4 * 4
            assert computed(model, since) == len(prompt) - out.num_cached_tokens + 5  # + 5 decodes
            history, previous_computed = [*prompt, *out.token_ids], len(prompt) + 5
        stats = engine.stats().prefix_cache
        assert stats is not None
        assert stats.num_hits == 3
        assert 0 < stats.hit_rate < 1
        assert stats.num_snapshots_used > 0
        assert stats.snapshot_bytes_used == stats.num_snapshots_used * engine.cache_plan.bytes_per_slot
        assert_all_free(engine)


def test_a_chatml_conversation_fed_its_own_replies_resumes_after_each_reply():
    """ChatML repeats a reply as generated (here one character per token, so it survives detokenizing):
    each turn resumes at the last block boundary of what the previous turn computed, its reply included,
    from the snapshot that turn's generation left at its end."""
    messages: list[dict[str, str]] = [{"role": "system", "content": "be brief."}]
    config = EngineConfig(max_model_len=512, block_size=4, snapshot_interval_blocks=100)
    with Engine(
        FakeModel(), fake_config(max_position_embeddings=512), config, tokenizer=char_tokenizer()
    ) as engine:
        assert engine.tokenizer is not None
        assert engine.tokenizer.chat_template.is_fallback
        computed = 0
        for question in ("say hi.", "again.", "once more."):
            messages.append({"role": "user", "content": question})
            reply = engine.chat(messages, SamplingParams(max_tokens=9, temperature=0.0))
            assert reply.usage.cached_tokens == computed // 4 * 4
            computed = reply.usage.prompt_tokens + reply.usage.completion_tokens - 1
            messages.append({"role": "assistant", "content": reply.text})
        assert_all_free(engine)


def test_a_shared_system_prompt_serves_different_users():
    with make_engine() as engine:
        engine.generate([[*SYSTEM, 50]], GREEDY)
        users = [[*SYSTEM, 50 + i, 51, 52, 53] for i in range(1, 4)]
        outs = engine.generate(users, GREEDY)
    assert [o.token_ids for o in outs] == [next_greedy_tokens(p, 6) for p in users]
    # the first request snapshotted its last boundary (36); the users share it
    assert [o.num_cached_tokens for o in outs] == [36, 36, 36]


@pytest.mark.parametrize("shared", [24, 26])  # diverge exactly at a block boundary, and inside a block
def test_prompts_diverging_at_and_inside_a_block(shared):
    with make_engine(snapshot_interval_blocks=2) as engine:
        base = SYSTEM[:shared]
        first, second = [*base, 1, 2, 3, 4, 5, 6], [*base, 9, 8, 7, 6, 5, 4]
        engine.generate([first], GREEDY)
        (out,) = engine.generate([second], GREEDY)
    assert out.token_ids == next_greedy_tokens(second, 6)
    assert out.num_cached_tokens == 24  # the last interval snapshot (every 8 tokens) at or before the split


async def test_concurrent_requests_sharing_a_prefix():
    model = FakeModel()
    prompts = [[*SYSTEM, 7, i] for i in range(6)]
    with make_engine(model, max_num_batched_tokens=16, prefill_chunk_size=16) as engine:

        async def one(prompt: list[int], delay_s: float) -> list[int]:
            await asyncio.sleep(delay_s)
            return [t async for d in engine.stream(prompt, GREEDY) for t in d.token_ids]

        outs = await asyncio.gather(*(one(p, 0.01 * i) for i, p in enumerate(prompts)))
        assert list(outs) == [next_greedy_tokens(p, 6) for p in prompts]
        assert_all_free(engine)
        assert engine.stats().prefix_cache.num_hits > 0


async def test_abort_in_the_middle_of_a_prefill_others_share():
    model = FakeModel(delay_s=0.01)
    long_prompt = [*SYSTEM, *SYSTEM]  # 74 tokens, prefilled 8 at a time
    params = SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True)
    with make_engine(model, max_num_batched_tokens=16, prefill_chunk_size=8) as engine:

        async def consume(request_id: str) -> tuple[list[int], str | None]:
            deltas = [d async for d in engine.stream(long_prompt, params, request_id=request_id)]
            return [t for d in deltas for t in d.token_ids], deltas[-1].finish_reason

        doomed = asyncio.ensure_future(consume("doomed"))
        while len(model.steps) < 3:  # 24 of its tokens are in, with a snapshot at 16
            await asyncio.sleep(0.002)
        sharer = asyncio.ensure_future(consume("sharer"))
        while engine.stats().num_running < 2:
            await asyncio.sleep(0.002)
        await asyncio.sleep(0.02)  # both are prefilling, the sharer on the doomed one's pages
        assert engine.abort("doomed")
        assert (await doomed) == ([], "abort")
        assert await sharer == (next_greedy_tokens(long_prompt, 4), "length")
        assert_all_free(engine)
        stats = engine.stats().prefix_cache
    assert stats.num_hit_tokens >= 16


def test_preemption_with_shared_prefixes_gives_the_same_tokens():
    params = SamplingParams(max_tokens=20, temperature=0.0, ignore_eos=True)
    prompts = [[*SYSTEM[:20], i] for i in range(5)]
    with make_engine(max_model_len=64, cache_memory_bytes=9000, prefill_chunk_size=8) as engine:
        outs = engine.generate(prompts, params)
        stats = engine.stats()
        assert stats.num_preemptions > 0
        assert stats.prefix_cache.num_hits > 0
        assert_all_free(engine)
    assert [o.token_ids for o in outs] == [next_greedy_tokens(p, 20) for p in prompts]


def test_prefix_caching_off_computes_everything():
    model = FakeModel()
    with make_engine(model, enable_prefix_caching=False) as engine:
        outs = engine.generate([[*SYSTEM, 1], [*SYSTEM, 1]], GREEDY)
        assert engine.stats().prefix_cache is None
        assert engine.cache_plan.num_snapshots == 0
    assert [o.num_cached_tokens for o in outs] == [0, 0]
    assert computed(model) == 2 * (len(SYSTEM) + 1) + 2 * 5


def test_turn_boundary_is_validated():
    with make_engine() as engine:
        with pytest.raises(InvalidRequestError, match="turn_boundary must be a prompt position"):
            engine.generate([[1, 2, 3]], GREEDY, turn_boundaries=[4])
        with pytest.raises(InvalidRequestError, match="1 turn_boundaries for 2 prompts"):
            engine.generate([[1], [2]], GREEDY, turn_boundaries=[None])
        with pytest.raises(InvalidRequestError, match="snapshot_memory_fraction"):
            EngineConfig(snapshot_memory_fraction=1.0)


def test_no_room_for_snapshots_is_logged(caplog):
    def engine(**config) -> Engine:
        return Engine(FakeModel(), fake_config(), EngineConfig(block_size=4, **config))

    with engine(enable_prefix_caching=False) as plain:
        budget = plain.cache_plan.total_bytes  # exactly what the pages and slots take
    with (
        caplog.at_level(logging.WARNING, logger="cortex.engine"),
        engine(cache_memory_bytes=budget, snapshot_memory_fraction=0) as full,
    ):
        assert full.cache_plan.num_snapshots == 0
    assert "prefix caching is not effective for this model" in caplog.text


def test_prompts_that_diverge_before_any_snapshot_are_logged(caplog):
    with make_engine(snapshot_interval_blocks=100) as engine, caplog.at_level(logging.WARNING):
        engine.generate([[*SYSTEM, *SYSTEM]], GREEDY)
        (out,) = engine.generate([[*SYSTEM, 59]], GREEDY)
        stats = engine.stats().prefix_cache
    assert out.num_cached_tokens == 0
    assert stats.num_snapshot_miss_tokens == 36
    assert "no state snapshot covered them" in caplog.text


@settings(max_examples=20, deadline=None)
@given(
    picks=st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 40), st.integers(1, 12)), min_size=1, max_size=7
    ),
    budget=st.integers(6000, 14000),
    chunk=st.integers(1, 16),
    interval=st.integers(1, 4),
)
def test_any_shared_prefix_workload_gives_each_prompt_its_greedy_tokens(picks, budget, chunk, interval):
    stems = [SYSTEM, [3] * 40, [*SYSTEM[:13], *range(20, 47)]]
    prompts = [[*stems[stem][:cut], 61, tail] for stem, cut, tail in picks]
    params = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)
    with make_engine(
        max_model_len=64,
        cache_memory_bytes=budget,
        max_num_batched_tokens=16,
        prefill_chunk_size=chunk,
        snapshot_interval_blocks=interval,
    ) as engine:
        first = engine.generate(prompts, params)  # all at once: sharing within a batch
        again = engine.generate(prompts[::-1], params)  # then again, against what the first run cached
        assert_all_free(engine)
    expected = [next_greedy_tokens(p, 8) for p in prompts]
    assert [o.token_ids for o in first] == expected
    assert [o.token_ids for o in again] == expected[::-1]
