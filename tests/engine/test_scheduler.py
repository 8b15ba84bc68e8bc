"""The scheduler alone (no tensors): batching, chunked prefill, admission, preemption, abort."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cortex.engine.cache.block_allocator import BlockAllocator
from cortex.engine.cache.slot_allocator import SlotAllocator
from cortex.engine.request import Request, RequestStatus
from cortex.engine.sampling_params import SamplingParams
from cortex.engine.scheduler import ScheduledBatch, Scheduler

PARAMS = SamplingParams(max_tokens=None, temperature=0.0).resolve()


def make_scheduler(
    *,
    num_blocks: int = 64,
    num_slots: int = 8,
    block_size: int = 4,
    max_num_seqs: int = 8,
    max_num_batched_tokens: int = 32,
    prefill_chunk_size: int = 16,
    max_model_len: int = 64,
) -> Scheduler:
    return Scheduler(
        block_allocator=BlockAllocator(num_blocks),
        slot_allocator=SlotAllocator(num_slots),
        block_size=block_size,
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max_num_batched_tokens,
        prefill_chunk_size=prefill_chunk_size,
        max_model_len=max_model_len,
    )


def make_request(request_id: str, num_prompt: int, max_tokens: int = 8, **params: object) -> Request:
    return Request(
        request_id=request_id,
        prompt_token_ids=list(range(1, num_prompt + 1)),
        params=SamplingParams(max_tokens=max_tokens, temperature=0.0, **params).resolve(),
        max_tokens=max_tokens,
        eos_token_ids=frozenset({0}),
    )


def step(scheduler: Scheduler, token_id: int = 7) -> tuple[ScheduledBatch, list[Request]]:
    batch = scheduler.schedule()
    sampled = [token_id for seq in batch.seqs if seq.samples]
    return batch, scheduler.update(batch, sampled)


def shape(batch: ScheduledBatch) -> list[tuple[str, int, int]]:
    return [(s.request.request_id, s.num_cached_tokens, s.num_new_tokens) for s in batch.seqs]


def test_long_prompt_is_prefilled_in_chunks_then_decodes():
    scheduler = make_scheduler(prefill_chunk_size=8)
    request = make_request("a", 20)
    scheduler.add(request)
    shapes = [shape(step(scheduler)[0]) for _ in range(4)]
    assert shapes == [[("a", 0, 8)], [("a", 8, 8)], [("a", 16, 4)], [("a", 20, 1)]]
    assert request.output_token_ids == [7, 7]
    assert len(request.block_table) == 6  # 22 tokens in 4-token blocks


def test_prefill_and_decode_share_the_token_budget():
    scheduler = make_scheduler(max_num_batched_tokens=10, prefill_chunk_size=10)
    scheduler.add(make_request("a", 3))
    step(scheduler)
    scheduler.add(make_request("b", 30))
    scheduler.add(make_request("c", 5))
    batch, _ = step(scheduler)
    assert shape(batch) == [("a", 3, 1), ("b", 0, 9)]
    assert (batch.num_decode_tokens, batch.num_prefill_tokens) == (1, 9)
    assert shape(step(scheduler)[0]) == [("a", 4, 1), ("b", 9, 9)]


def test_decodes_go_before_an_older_requests_prefill_chunks():
    scheduler = make_scheduler(max_num_batched_tokens=8, prefill_chunk_size=8)
    old, new = make_request("old", 4, max_tokens=30), make_request("new", 2)
    scheduler.add(old)
    scheduler.add(new)
    step(scheduler)  # both prefilled, one token each
    old.output_token_ids.extend([7] * 20)  # as if old had to recompute 25 tokens (e.g. a resume)
    old.num_computed_tokens = 0
    batch, _ = step(scheduler)
    assert shape(batch) == [("new", 2, 1), ("old", 0, 7)]  # new's decode is not starved by old's chunk


def test_admission_respects_max_num_seqs_and_slots():
    scheduler = make_scheduler(max_num_seqs=8, num_slots=2)
    for name in "abc":
        scheduler.add(make_request(name, 2))
    batch, _ = step(scheduler)
    assert [s.request.request_id for s in batch.seqs] == ["a", "b"]
    assert (scheduler.num_running, scheduler.num_waiting) == (2, 1)


def test_finished_requests_free_blocks_and_slot():
    scheduler = make_scheduler()
    request = make_request("a", 5, max_tokens=2)
    scheduler.add(request)
    step(scheduler)
    _, updated = step(scheduler)
    assert updated == [request]
    assert request.finish_reason == "length"
    assert request.status is RequestStatus.FINISHED
    assert scheduler.block_allocator.num_used == scheduler.slot_allocator.num_used == 0
    assert not scheduler.has_work()


def test_stop_token_and_eos():
    scheduler = make_scheduler()
    stopper, eos, ignorer = (
        make_request("s", 2, stop_token_ids=[7]),
        make_request("e", 2),
        make_request("i", 2, max_tokens=3, ignore_eos=True),
    )
    for request in (stopper, eos, ignorer):
        scheduler.add(request)
    step(scheduler, token_id=7)
    assert (stopper.finish_reason, stopper.stop_reason) == ("stop", 7)
    step(scheduler, token_id=0)
    assert (eos.finish_reason, eos.stop_reason) == ("stop", None)
    assert ignorer.finish_reason is None
    step(scheduler, token_id=0)
    assert ignorer.finish_reason == "length"
    assert ignorer.output_token_ids == [7, 0, 0]


def test_out_of_blocks_preempts_the_newest_and_resumes_it_first():
    # 6 blocks of 4 tokens: a and b (8 prompt tokens each) take 2 blocks, then grow by one every 4 tokens
    scheduler = make_scheduler(num_blocks=6, max_model_len=24)
    a, b = make_request("a", 8, max_tokens=12), make_request("b", 8, max_tokens=12)
    scheduler.add(a)
    scheduler.add(b)
    step(scheduler)
    preempted = []
    while b.num_preemptions == 0:
        batch, _ = step(scheduler)
        preempted.extend(batch.preempted)
    assert preempted == [b]
    assert b.status is RequestStatus.WAITING
    assert (b.num_computed_tokens, b.block_table, b.state_slot) == (0, [], None)
    assert scheduler.waiting[0] is b
    generated = list(b.output_token_ids)
    assert generated  # it had made progress, which it keeps
    while not a.is_finished:
        step(scheduler)
    batch, _ = step(scheduler)
    # resuming recomputes the prompt and the generated tokens
    assert shape(batch) == [("b", 0, 8 + len(generated))]
    while not b.is_finished:
        step(scheduler)
    assert len(b.output_token_ids) == 12
    assert scheduler.block_allocator.num_used == 0


def test_a_request_preempts_itself_when_it_is_the_newest():
    scheduler = make_scheduler(num_blocks=4, max_model_len=16)
    a, b = make_request("a", 6, max_tokens=4), make_request("b", 8, max_tokens=4)
    scheduler.add(a)
    scheduler.add(b)
    step(scheduler)  # both prefilled: 2 + 2 blocks
    batch, _ = step(scheduler)  # a's position 6 fits its blocks; b's position 8 needs a 5th block
    assert shape(batch) == [("a", 6, 1)]
    assert batch.preempted == (b,)
    while not b.is_finished:
        step(scheduler)
    assert a.is_finished
    assert len(b.output_token_ids) == 4


def test_waiting_request_is_not_admitted_without_blocks():
    scheduler = make_scheduler(num_blocks=3, max_model_len=12)
    a = make_request("a", 8, max_tokens=4)
    b = make_request("b", 2, max_tokens=4)
    scheduler.add(a)
    step(scheduler)
    scheduler.add(b)
    step(scheduler)  # a decodes into its 3rd block; b finds no block left
    assert b.status is RequestStatus.WAITING
    while not a.is_finished:
        step(scheduler)
    while not b.is_finished:
        step(scheduler)
    assert a.num_preemptions == b.num_preemptions == 0


def test_abort_frees_at_once_and_skips_the_step_in_flight():
    scheduler = make_scheduler()
    a, b = make_request("a", 5), make_request("b", 5)
    scheduler.add(a)
    scheduler.add(b)
    batch = scheduler.schedule()
    assert scheduler.abort(["a", "missing"]) == [a]
    assert (a.finish_reason, a.status) == ("abort", RequestStatus.FINISHED)
    assert a.block_table == []
    updated = scheduler.update(batch, [7, 7])
    assert updated == [b]
    assert a.output_token_ids == []
    scheduler.abort(["b"])
    assert scheduler.block_allocator.num_used == scheduler.slot_allocator.num_used == 0
    assert scheduler.abort(["b"]) == []


def test_abort_a_waiting_request():
    scheduler = make_scheduler()
    scheduler.add(make_request("a", 5))
    (request,) = scheduler.abort(["a"])
    assert request.finish_reason == "abort"
    assert not scheduler.has_work()


@settings(max_examples=40, deadline=None)
@given(
    actions=st.lists(
        st.one_of(
            st.tuples(st.just("add"), st.integers(1, 30), st.integers(1, 12)),
            st.tuples(st.just("abort"), st.integers(0, 20), st.just(0)),
            st.tuples(st.just("step"), st.just(0), st.just(0)),
        ),
        max_size=60,
    )
)
def test_random_workloads_keep_the_books_balanced(actions):
    scheduler = make_scheduler(
        num_blocks=14, num_slots=3, max_num_batched_tokens=12, prefill_chunk_size=8, max_model_len=48
    )
    requests: list[Request] = []
    for kind, a, b in actions:
        if kind == "add":
            requests.append(make_request(str(len(requests)), a, max_tokens=b))
            scheduler.add(requests[-1])
        elif kind == "abort" and a < len(requests):
            scheduler.abort([requests[a].request_id])
        elif kind == "step" and scheduler.has_work():
            batch, _ = step(scheduler)
            assert batch.num_tokens <= 12
            assert not batch.is_empty
        tables = [blk for r in scheduler.running for blk in r.block_table]
        assert len(tables) == len(set(tables)) == scheduler.block_allocator.num_used
        slots = [r.state_slot for r in scheduler.running]
        assert len(set(slots)) == len(slots) == scheduler.slot_allocator.num_used
        assert all(r.block_table == [] and r.state_slot is None for r in scheduler.waiting)
    while scheduler.has_work():
        step(scheduler)
    assert all(r.is_finished for r in requests)
    assert all(len(r.output_token_ids) == r.max_tokens for r in requests if r.finish_reason == "length")
    assert scheduler.block_allocator.num_used == scheduler.slot_allocator.num_used == 0


def test_requeue_drops_a_running_requests_progress():
    scheduler = make_scheduler()
    a = make_request("a", 5)
    scheduler.add(a)
    step(scheduler)
    scheduler.requeue(a)
    assert (a.status, a.num_computed_tokens, a.state_slot) == (RequestStatus.WAITING, 0, None)
    assert scheduler.block_allocator.num_used == scheduler.slot_allocator.num_used == 0
    assert shape(scheduler.schedule()) == [("a", 0, 6)]


def test_schedule_only_runs_those_and_preempts_others_for_their_room():
    scheduler = make_scheduler(num_slots=2, max_num_seqs=2)
    a, b, c = make_request("a", 5), make_request("b", 5), make_request("c", 5)
    for request in (a, b, c):
        scheduler.add(request)
    assert shape(step(scheduler)[0]) == [("a", 0, 5), ("b", 0, 5)]
    batch = scheduler.schedule(only={c})
    assert shape(batch) == [("c", 0, 5)]
    assert batch.preempted == (b,)  # the newest outsider, for c's slot; a keeps its blocks and waits
    assert (a.status, a.num_computed_tokens) == (RequestStatus.RUNNING, 5)
    scheduler.update(batch, [7])
    assert shape(scheduler.schedule(only={c})) == [("c", 5, 1)]
