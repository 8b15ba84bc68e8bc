"""The Engine over the scripted fake model: batching, chunking, preemption, abort, streams, text, errors."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from fake_model import VOCAB_SIZE, FakeModel, char_tokenizer, fake_config, next_greedy_tokens
from hypothesis import given, settings
from hypothesis import strategies as st

from cortex.engine.engine import Engine
from cortex.engine.engine_config import EngineConfig
from cortex.engine.errors import EngineError
from cortex.engine.sampling_params import SamplingParams
from cortex.engine.structured import StructuredOutputsParams, UnsupportedSchemaError
from cortex.errors import ContextLengthError, InvalidRequestError

GREEDY = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)
PROMPTS = [[1, 2, 3], list(range(5, 45)), [9] * 17, [4, 8]]


def make_engine(model: FakeModel | None = None, *, tokenizer=None, eos=VOCAB_SIZE - 1, **config) -> Engine:
    config.setdefault("max_model_len", 96)
    config.setdefault("block_size", 4)
    return Engine(
        model or FakeModel(), fake_config(eos_token_id=eos), EngineConfig(**config), tokenizer=tokenizer
    )


def assert_all_free(engine: Engine) -> None:
    stats = engine.stats()
    assert (stats.num_running, stats.num_waiting) == (0, 0)
    assert (stats.num_kv_blocks_used, stats.num_state_slots_used) == (0, 0)


def test_generate_greedy_token_ids_without_a_tokenizer():
    with make_engine() as engine:
        (out,) = engine.generate([[1, 2, 3]], GREEDY)
        assert out.prompt_token_ids == [1, 2, 3]
        assert out.token_ids == next_greedy_tokens([1, 2, 3], 12)
        assert (out.text, out.finish_reason, out.stop_reason, out.logprobs) == ("", "length", None, None)
        assert engine.tokenizer is None
        assert engine.max_model_len == 96


def test_a_batch_gives_each_prompt_its_own_tokens():
    model = FakeModel()
    with make_engine(model, max_num_batched_tokens=32, prefill_chunk_size=8) as engine:
        outs = engine.generate(PROMPTS, GREEDY)
        assert [o.token_ids for o in outs] == [next_greedy_tokens(p, 12) for p in PROMPTS]
        assert_all_free(engine)
    assert max(max(lens) for lens, _ in model.steps) == 8  # the 40-token prompt went in chunks of 8
    assert any(1 in lens and 8 in lens for lens, _ in model.steps)  # decodes mixed with a prefill chunk


def test_forced_preemption_gives_the_same_tokens():
    params = SamplingParams(max_tokens=30, temperature=0.0, ignore_eos=True)
    prompts = [list(range(i, i + 20)) for i in range(1, 5)]
    with make_engine(max_model_len=64, cache_memory_bytes=6000) as engine:
        assert engine.cache_plan.num_blocks < 4 * 13
        outs = engine.generate(prompts, params)
        assert engine.stats().num_preemptions > 0
        assert [o.token_ids for o in outs] == [next_greedy_tokens(p, 30) for p in prompts]
        assert_all_free(engine)


def test_seeded_sampling_is_independent_of_batch_mates():
    seeded = SamplingParams(max_tokens=16, temperature=1.0, top_p=0.95, seed=1234, ignore_eos=True)
    other = SamplingParams(max_tokens=10, temperature=0.8, seed=5, ignore_eos=True)
    with make_engine() as engine:
        (alone,) = engine.generate([[3, 4, 5]], seeded)
        batch = engine.generate([[7, 7], [3, 4, 5], list(range(30))], [other, seeded, GREEDY])
        again = engine.generate([[3, 4, 5], [3, 4, 5]], [dataclasses.replace(seeded, seed=99), seeded])
    assert batch[1].token_ids == alone.token_ids == again[1].token_ids
    assert again[0].token_ids != alone.token_ids


def test_eos_stop_token_ids_and_ignore_eos():
    prompt = [1, 2, 3]
    expected = next_greedy_tokens(prompt, 12)
    eos = expected[4]
    first = expected.index(eos)
    with make_engine(eos=eos) as engine:
        stopped, ignoring, by_stop_id = engine.generate(
            [prompt] * 3,
            [
                SamplingParams(max_tokens=12, temperature=0.0),
                GREEDY,
                SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True, stop_token_ids=[expected[2]]),
            ],
        )
    assert stopped.token_ids == expected[: first + 1]
    assert (stopped.finish_reason, stopped.stop_reason) == ("stop", None)
    assert ignoring.token_ids == expected
    assert by_stop_id.token_ids == expected[: expected.index(expected[2]) + 1]
    assert (by_stop_id.finish_reason, by_stop_id.stop_reason) == ("stop", expected[2])


def test_max_tokens_none_runs_until_the_context_is_full():
    with make_engine(max_model_len=40) as engine:
        (out,) = engine.generate(
            [[1] * 10], SamplingParams(max_tokens=None, temperature=0.0, ignore_eos=True)
        )
    assert (len(out.token_ids), out.finish_reason) == (30, "length")


def test_text_stop_strings_and_logprobs():
    tokenizer = char_tokenizer()
    prompt = [1, 2, 3]
    expected = next_greedy_tokens(prompt, 12)
    full_text = tokenizer.decode(expected)
    stop = full_text[5:7]
    with make_engine(tokenizer=tokenizer) as engine:
        plain, stopped = engine.generate(
            ["bcd", [1, 2, 3]],
            [
                SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True, logprobs=2),
                SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True, stop=[stop]),
            ],
        )
    assert plain.prompt_token_ids == prompt
    assert plain.text == full_text
    assert plain.logprobs is not None
    assert [lp.token_id for lp in plain.logprobs] == expected
    assert all(len(lp.top) == 2 and lp.top[0][1] == lp.token for lp in plain.logprobs)  # greedy = top-1
    assert stopped.text == full_text[: full_text.index(stop)]
    assert (stopped.finish_reason, stopped.stop_reason) == ("stop", stop)


def test_a_tokenizer_llguidance_cannot_read_loads_and_refuses_structured_outputs_clearly():
    with make_engine(tokenizer=char_tokenizer()) as engine:  # its Fuse decoder is one llguidance lacks
        structured = StructuredOutputsParams(json_object=True)
        for _ in range(2):  # tried once, at load; each request is told why
            with pytest.raises(UnsupportedSchemaError, match="cannot read this model's tokenizer"):
                engine.generate(["bcd"], SamplingParams(max_tokens=8, structured_outputs=structured))
        (out,) = engine.generate(["bcd"], SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True))
        assert len(out.token_ids) == 4


async def test_concurrent_streams_share_the_loop():
    with make_engine() as engine:

        async def collect(prompt: list[int]) -> tuple[list[int], list]:
            deltas = [d async for d in engine.stream(prompt, GREEDY)]
            return [t for d in deltas for t in d.token_ids], deltas

        results = await asyncio.gather(*(collect(p) for p in PROMPTS))
        for prompt, (tokens, deltas) in zip(PROMPTS, results, strict=True):
            assert tokens == next_greedy_tokens(prompt, 12)
            assert [d.finish_reason for d in deltas] == [None] * 11 + ["length"]
            assert deltas[-1].num_generated_tokens == 12
            assert deltas[-1].num_prompt_tokens == len(prompt)


async def test_closing_a_stream_aborts_its_request():
    with make_engine(FakeModel(delay_s=0.02)) as engine:
        stream = engine.stream([1, 2, 3], SamplingParams(max_tokens=None, temperature=0.0, ignore_eos=True))
        first = await stream.__anext__()
        assert first.finish_reason is None
        await stream.aclose()
        assert_all_free(engine)
        assert engine.stats().total_generated_tokens < 93  # it did not run to the end of its context


async def test_cancelling_the_consumer_task_aborts_its_request():
    with make_engine(FakeModel(delay_s=0.02)) as engine:
        started = asyncio.Event()

        async def consume() -> None:
            async for _ in engine.stream(
                [5, 6], SamplingParams(max_tokens=None, temperature=0.0, ignore_eos=True)
            ):
                started.set()

        task = asyncio.create_task(consume())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert_all_free(engine)


async def test_abort_by_id_ends_the_stream():
    with make_engine(FakeModel(delay_s=0.02)) as engine:
        params = SamplingParams(max_tokens=None, temperature=0.0, ignore_eos=True)
        deltas = []
        async for delta in engine.stream([1, 2], params, request_id="req-1"):
            deltas.append(delta)
            if len(deltas) == 3:
                assert engine.abort("req-1")
        assert deltas[-1].finish_reason == "abort"
        assert not engine.abort("req-1")
        assert_all_free(engine)


async def test_duplicate_request_ids_are_rejected():
    with make_engine(FakeModel(delay_s=0.02)) as engine:
        params = SamplingParams(max_tokens=None, temperature=0.0, ignore_eos=True)
        first = engine.stream([1, 2], params, request_id="same")
        await first.__anext__()
        with pytest.raises(InvalidRequestError, match="'same' is in use"):
            await engine.stream([3], params, request_id="same").__anext__()
        await first.aclose()
        assert_all_free(engine)


async def test_a_failing_step_raises_in_the_stream():
    class Broken(FakeModel):
        def __call__(self, batch, caches):
            raise RuntimeError("kernel exploded")

    with make_engine(Broken()) as engine:
        with pytest.raises(EngineError, match="kernel exploded") as info:
            async for _ in engine.stream([1, 2], GREEDY):
                pass
        assert isinstance(info.value.__cause__, RuntimeError)
        assert_all_free(engine)


async def test_stream_validation_errors_raise_on_first_iteration():
    with make_engine() as engine, pytest.raises(ContextLengthError):
        async for _ in engine.stream([1] * 200, GREEDY):
            pass


async def test_add_request_validates_before_queueing_and_closing_it_unread_aborts():
    with make_engine(FakeModel(delay_s=0.02)) as engine:
        with pytest.raises(ContextLengthError):
            await engine.add_request([1] * 200, GREEDY)
        assert engine.stats().num_waiting == 0
        params = SamplingParams(max_tokens=None, temperature=0.0, ignore_eos=True)
        deltas = await engine.add_request([1, 2, 3], params, request_id="unread")
        assert deltas.num_prompt_tokens == 3
        await deltas.aclose()  # never iterated: the request still ends in the engine
        assert not engine.abort("unread")
        assert [d async for d in deltas] == []
        finished = await engine.add_request([1, 2], GREEDY)
        last = [d async for d in finished][-1]
        assert last.finish_reason is not None
        await finished.aclose()  # after the last delta: nothing left to abort
        assert_all_free(engine)
        assert engine.stats().total_generated_tokens < 93 + 12  # "unread" did not run to its end


@pytest.mark.parametrize(
    ("prompts", "params", "error", "message"),
    [
        ([[1] * 96], GREEDY, ContextLengthError, "96 tokens; this model's context is 96 tokens"),
        ([[1] * 90], GREEDY, ContextLengthError, r"max_tokens \(12\) \+ the prompt \(90 tokens\) exceed"),
        (["hello"], GREEDY, InvalidRequestError, "no tokenizer"),
        ([[1, 2]], SamplingParams(stop=["x"]), InvalidRequestError, "stop strings need a tokenizer"),
        ([[1, VOCAB_SIZE]], GREEDY, InvalidRequestError, r"token ids must be in \[0, 64\)"),
        ([[]], GREEDY, InvalidRequestError, "empty"),
        ([1, 2, 3], GREEDY, InvalidRequestError, r"\[\[1, 2, 3\]\]"),
        ([[1], [2]], [GREEDY], InvalidRequestError, "1 SamplingParams for 2 prompts"),
    ],
)
def test_request_errors(prompts, params, error, message):
    with make_engine() as engine:
        with pytest.raises(error, match=message):
            engine.generate(prompts, params)
        assert_all_free(engine)


def test_a_failing_step_fails_its_requests_and_the_engine_recovers():
    class Flaky(FakeModel):
        fail = True

        def __call__(self, batch, caches):
            if self.fail:
                self.fail = False
                raise RuntimeError("device fell over")
            return super().__call__(batch, caches)

    with make_engine(Flaky()) as engine:
        with pytest.raises(EngineError, match="a forward step failed: RuntimeError\\('device fell over'\\)"):
            engine.generate([[1, 2]], GREEDY)
        assert_all_free(engine)
        assert engine.generate([[1, 2]], GREEDY)[0].token_ids == next_greedy_tokens([1, 2], 12)


def test_stats_and_close():
    engine = make_engine()
    engine.generate([[1, 2, 3], [4, 5]], GREEDY)
    stats = engine.stats()
    assert (stats.total_prompt_tokens, stats.total_generated_tokens) == (5, 24)
    assert stats.decode_tokens_per_s > 0
    assert stats.num_kv_blocks_total == engine.cache_plan.num_blocks
    assert stats.num_state_slots_total == engine.cache_plan.num_slots
    assert stats.kv_cache_usage == 0.0
    engine.close()
    engine.close()
    with pytest.raises(EngineError, match="closed"):
        engine.generate([[1]], GREEDY)


def test_engine_config_validation():
    with pytest.raises(InvalidRequestError, match="exceeds the model's max_position_embeddings"):
        make_engine(max_model_len=257)
    with pytest.raises(InvalidRequestError, match="max_num_seqs must be a positive integer"):
        EngineConfig(max_num_seqs=0)
    with pytest.raises(InvalidRequestError, match="prefill_chunk_size"):
        EngineConfig(max_num_batched_tokens=16, prefill_chunk_size=32)
    with pytest.raises(InvalidRequestError, match="dtype must be one of"):
        EngineConfig(dtype="float64")
    with pytest.raises(InvalidRequestError, match="device must be"):
        EngineConfig(device="tpu")
    assert EngineConfig(max_num_batched_tokens=100).chunk_size == 100


def test_chat_delegates_to_the_text_layer():
    params = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)
    with make_engine(tokenizer=char_tokenizer(), max_model_len=256) as engine:
        reply = engine.chat([{"role": "user", "content": "hi"}], params)
        assert reply.usage.completion_tokens == 8
        assert reply.usage.prompt_tokens > 2
        assert reply.finish_reason == "length"

        async def stream() -> list:
            return [d async for d in engine.chat_stream([{"role": "user", "content": "hi"}], params)]

        deltas = asyncio.run(stream())
    assert deltas[-1].finish_reason == "length"
    assert "".join(d.content + d.reasoning for d in deltas) == (reply.reasoning or "") + reply.text


@settings(max_examples=15, deadline=None)
@given(
    prompt_lens=st.lists(st.integers(1, 40), min_size=1, max_size=6),
    max_tokens=st.integers(1, 20),
    budget=st.integers(4300, 9000),
    chunk=st.integers(1, 16),
)
def test_any_workload_gives_each_prompt_its_greedy_tokens(prompt_lens, max_tokens, budget, chunk):
    prompts = [[(7 * i + n) % 60 for i in range(n)] for n in prompt_lens]
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    with make_engine(
        max_model_len=64, cache_memory_bytes=budget, max_num_batched_tokens=16, prefill_chunk_size=chunk
    ) as engine:
        outs = engine.generate(prompts, params)
        assert_all_free(engine)
    assert [o.token_ids for o in outs] == [next_greedy_tokens(p, max_tokens) for p in prompts]
