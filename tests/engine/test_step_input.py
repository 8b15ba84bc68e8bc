"""StepInput: the scheduler's decision copied out of its requests as plain, picklable data."""

from __future__ import annotations

import pickle

from cortex.engine.cache.block_allocator import BlockAllocator
from cortex.engine.cache.slot_allocator import SlotAllocator
from cortex.engine.request import Request
from cortex.engine.sampling_params import SamplingParams
from cortex.engine.scheduler import Scheduler
from cortex.engine.step_input import SamplingInput, SeqInput, StepInput, build_step_input


def make_scheduler(*, prefill_chunk_size: int = 16, block_size: int = 4) -> Scheduler:
    return Scheduler(
        block_allocator=BlockAllocator(64),
        slot_allocator=SlotAllocator(8),
        block_size=block_size,
        max_num_seqs=8,
        max_num_batched_tokens=32,
        prefill_chunk_size=prefill_chunk_size,
        max_model_len=64,
    )


def make_request(request_id: str, num_prompt: int, **params: object) -> Request:
    return Request(
        request_id=request_id,
        prompt_token_ids=list(range(1, num_prompt + 1)),
        params=SamplingParams(max_tokens=8, temperature=0.0, **params).resolve(),
        max_tokens=8,
        eos_token_ids=frozenset({0}),
    )


def test_a_chunked_prefill_and_a_decode_become_plain_data_that_pickles():
    scheduler = make_scheduler(prefill_chunk_size=8, block_size=4)
    short, long = make_request("short", 3), make_request("long", 20)
    scheduler.add(short)
    scheduler.add(long)
    first = build_step_input(scheduler.schedule(), ["gone"])
    assert first.finished_request_ids == ("gone",)
    assert [(s.request_id, s.token_ids, s.num_cached_tokens) for s in first.seqs] == [
        ("short", (1, 2, 3), 0),
        ("long", tuple(range(1, 9)), 0),
    ]
    assert first.seqs[0].sampling == SamplingInput(params=short.params, remaining_tokens=8)  # no histories
    assert first.seqs[1].sampling is None  # the prefill has not reached its last prompt token
    assert first.seqs[1].block_table == tuple(long.block_table)
    assert first.seqs[1].state_slot == long.state_slot
    assert first.num_tokens == 11
    assert pickle.loads(pickle.dumps(first)) == first
    # the step is a copy: later scheduling does not change it
    long.block_table.append(99)
    assert 99 not in first.seqs[1].block_table


def test_penalties_carry_the_histories_they_read():
    def sampled(**params: object) -> SeqInput:
        request = Request(
            request_id="r",
            prompt_token_ids=[5, 6],
            params=SamplingParams(max_tokens=4, **params).resolve(),
            max_tokens=4,
            eos_token_ids=frozenset(),
            output_token_ids=[7],
        )
        scheduler = make_scheduler()
        scheduler.add(request)
        step = build_step_input(scheduler.schedule())
        assert isinstance(step, StepInput)
        return step.seqs[0]

    repetition = sampled(repetition_penalty=1.3).sampling
    assert repetition is not None
    assert (repetition.prompt_token_ids, repetition.output_token_ids) == ((5, 6), (7,))
    presence = sampled(presence_penalty=0.5).sampling
    assert presence is not None
    assert (presence.prompt_token_ids, presence.output_token_ids) == ((), (7,))
    plain = sampled().sampling
    assert plain is not None
    assert (plain.prompt_token_ids, plain.output_token_ids) == ((), ())
