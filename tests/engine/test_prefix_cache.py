"""The prefix cache's bookkeeping alone (no tensors): block hashes, the snapshot pool, lookups and where
snapshots go, and the scheduler driving them."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cortex.engine.cache.block_allocator import BlockAllocator
from cortex.engine.cache.block_hash import extend_block_hashes, hash_block
from cortex.engine.cache.prefix_cache import PrefixCache
from cortex.engine.cache.slot_allocator import SlotAllocator
from cortex.engine.cache.snapshot_pool import SnapshotPool
from cortex.engine.request import Request, RequestStatus
from cortex.engine.sampling_params import SamplingParams
from cortex.engine.scheduler import ScheduledBatch, Scheduler

BLOCK = 4


def make_request(request_id: str, prompt: list[int], max_tokens: int = 4, turn_boundary: int | None = None):
    return Request(
        request_id=request_id,
        prompt_token_ids=prompt,
        params=SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True).resolve(),
        max_tokens=max_tokens,
        eos_token_ids=frozenset(),
        turn_boundary=turn_boundary,
    )


def make_scheduler(
    *, num_blocks: int = 64, num_slots: int = 4, num_snapshots: int | None = 8, interval: int = 4, **kw: int
) -> Scheduler:
    snapshots = SnapshotPool(num_snapshots, first_row=num_slots) if num_snapshots is not None else None
    allocator = BlockAllocator(num_blocks, on_evict=snapshots.drop if snapshots is not None else None)
    cache = PrefixCache(allocator, snapshots, block_size=BLOCK, snapshot_interval_blocks=interval)
    return Scheduler(
        block_allocator=allocator,
        slot_allocator=SlotAllocator(num_slots),
        block_size=BLOCK,
        max_num_seqs=num_slots,
        max_num_batched_tokens=kw.get("max_num_batched_tokens", 64),
        prefill_chunk_size=kw.get("prefill_chunk_size", 64),
        max_model_len=kw.get("max_model_len", 128),
        prefix_cache=cache,
    )


def run(scheduler: Scheduler, token_id: int = 7) -> list[ScheduledBatch]:
    batches = []
    while scheduler.has_work():
        batch = scheduler.schedule()
        batches.append(batch)
        scheduler.update(batch, [token_id for seq in batch.seqs if seq.samples])
    return batches


def chunks(batches: list[ScheduledBatch], request_id: str) -> list[tuple[int, int]]:
    return [
        (seq.num_cached_tokens, seq.num_new_tokens)
        for batch in batches
        for seq in batch.seqs
        if seq.request.request_id == request_id and not seq.is_decode
    ]


def test_block_hashes_chain_the_whole_prefix():
    a = [1, 2, 3, 4, 5, 6, 7, 8]
    hashes: list[bytes] = []
    extend_block_hashes(hashes, lambda s, e: a[s:e], num_tokens=7, block_size=BLOCK)
    assert hashes == [hash_block(None, [1, 2, 3, 4])]  # only full blocks
    extend_block_hashes(hashes, lambda s, e: a[s:e], num_tokens=8, block_size=BLOCK)
    assert hashes[1] == hash_block(hashes[0], [5, 6, 7, 8])
    assert hash_block(hash_block(None, [9, 2, 3, 4]), [5, 6, 7, 8]) != hashes[1]  # same block, other prefix
    assert len(hashes[0]) == 32  # sha256


def test_snapshot_pool_reserve_commit_pin_evict():
    pool = SnapshotPool(2, first_row=3)
    a, b = pool.reserve(b"a", kept=False), pool.reserve(b"b", kept=False)
    assert {a, b} == {3, 4}
    assert pool.reserve(b"a", kept=False) is None  # pending already
    assert pool.reserve(b"c", kept=False) is None  # both rows pending
    assert pool.lookup(b"a") is None  # not usable before its step ran
    pool.commit(b"a")
    pool.commit(b"b")
    assert pool.lookup(b"a") == a
    pool.pin(a)
    c = pool.reserve(b"c", kept=False)  # evicts the least recently used unpinned snapshot: b
    assert c == b
    assert pool.lookup(b"b") is None
    assert pool.reserve(b"d", kept=False) is None  # a is pinned, c pending
    pool.drop(b"a")  # a restore is in flight: kept
    assert pool.lookup(b"a") == a
    pool.unpin(a)
    pool.cancel(b"c")
    assert pool.num_used == 1
    pool.drop(b"a")
    assert (pool.lookup(b"a"), pool.num_used) == (None, 0)


def test_snapshot_pool_evicts_spare_snapshots_before_kept_ones():
    pool = SnapshotPool(3, first_row=0)
    for key, kept in ((b"turn", True), (b"interval", False), (b"rolling", False)):
        pool.reserve(key, kept=kept)
        pool.commit(key)
    pool.keep(b"rolling")  # its generation finished
    interval_row = pool.lookup(b"interval")
    assert pool.reserve(b"x", kept=False) == interval_row  # the one spare snapshot goes first
    pool.commit(b"x")
    assert pool.lookup(b"turn") is not None
    assert pool.lookup(b"rolling") is not None
    row = pool.lookup(b"x")
    assert row is not None
    pool.pin(row)
    pool.unpin(row)  # a request resumed from it: kept from now on, and the most recently used
    assert pool.reserve(b"y", kept=False) is not None  # no spare left: the oldest kept one goes
    assert [pool.lookup(k) is None for k in (b"turn", b"rolling", b"x")] == [True, False, False]


def test_a_generation_keeps_one_rolling_snapshot_and_the_next_turn_resumes_after_it():
    scheduler = make_scheduler(interval=100)
    a = make_request("a", list(range(1, 11)), max_tokens=9)  # computes 10 + 8 tokens
    scheduler.add(a)
    batches = run(scheduler)
    # the prompt's last boundary (8), then decode steps ending at 12 and 16: no cut, a save each
    assert chunks(batches, "a") == [(0, 8), (8, 2)]
    saved_at = [s.num_cached_tokens + s.num_new_tokens for b in batches for s in b.seqs if s.save_key]
    assert saved_at == [8, 12, 16]
    cache = scheduler.prefix_cache
    assert cache.snapshots is not None
    assert cache.snapshots.num_used == 2  # 8 and 16: the rolling snapshot at 12 was replaced
    # the next turn repeats the prompt and the reply: it resumes at the reply's last block boundary
    b = make_request("b", [*a.prompt_token_ids, *a.output_token_ids, 50, 51])
    scheduler.add(b)
    run(scheduler)
    assert b.num_cached_tokens == 16


def test_a_long_prompts_interval_snapshots_leave_another_conversations_turn():
    scheduler = make_scheduler(num_snapshots=3, interval=1)  # a snapshot every block
    scheduler.add(make_request("a", list(range(1, 11)), max_tokens=1, turn_boundary=9))
    run(scheduler)  # snapshots at 4 (interval) and 8 (the turn boundary, kept)
    scheduler.add(make_request("c", list(range(100, 130)), max_tokens=1))  # 7 interval snapshots
    run(scheduler)
    b = make_request("b", [*range(1, 10), 99, 98])  # a's next turn
    scheduler.add(b)
    run(scheduler)
    assert b.num_cached_tokens == 8


def test_an_identical_prompt_resumes_before_its_last_token():
    scheduler = make_scheduler()
    prompt = list(range(1, 19))  # 18 tokens: 4 full blocks, the last boundary before token 18 is 16
    first = make_request("a", prompt)
    scheduler.add(first)
    batches = run(scheduler)
    assert chunks(batches, "a") == [(0, 16), (16, 2)]  # cut at the snapshot position
    assert [len(b.state_saves) for b in batches[:2]] == [1, 0]
    second = make_request("b", prompt)
    scheduler.add(second)
    batches = run(scheduler)
    assert chunks(batches, "b") == [(16, 2)]
    assert second.num_cached_tokens == 16
    (restore,) = batches[0].state_restores
    assert restore[1] == 0  # into b's slot
    stats = scheduler.prefix_cache.stats()
    assert (stats.num_queries, stats.num_hits, stats.num_hit_tokens) == (2, 1, 16)


def test_snapshots_at_the_interval_and_the_turn_boundary():
    scheduler = make_scheduler(interval=2)  # every 8 tokens
    scheduler.add(make_request("a", list(range(1, 31)), turn_boundary=22))
    batches = run(scheduler)
    # 8, 16 (interval), 20 (turn boundary 22 -> its block boundary), 24 (interval); 28 is the last
    assert chunks(batches, "a") == [(0, 8), (8, 8), (16, 4), (20, 4), (24, 4), (28, 2)]
    # the next turn shares 22 tokens and continues differently: it resumes at 20
    scheduler.add(make_request("b", [*range(1, 23), 99, 98, 97, 96, 95]))
    assert chunks(run(scheduler), "b")[0] == (20, 4)  # and snapshots its own last boundary


def test_an_interval_of_one_chunk_keeps_a_long_prefill_in_whole_chunks():
    """docs/engine.md, tuning: with ``snapshot_interval_blocks`` = chunk / block size the interval
    positions are where the chunks end anyway; only the prompt's last boundary costs a shorter step."""
    scheduler = make_scheduler(interval=4, prefill_chunk_size=16, max_num_batched_tokens=16)
    scheduler.add(make_request("a", list(range(1, 60)), turn_boundary=57))
    assert chunks(run(scheduler), "a") == [(0, 16), (16, 16), (32, 16), (48, 8), (56, 3)]
    finer = make_scheduler(interval=1, prefill_chunk_size=16, max_num_batched_tokens=16)
    finer.add(make_request("a", list(range(1, 60)), turn_boundary=57))
    assert len(chunks(run(finer), "a")) == 15  # a cut at every block


def test_a_kv_only_model_needs_no_snapshot_and_no_cut():
    scheduler = make_scheduler(num_snapshots=None)
    scheduler.add(make_request("a", list(range(1, 19))))
    batches = run(scheduler)
    assert chunks(batches, "a") == [(0, 18)]
    assert not any(b.state_saves for b in batches)
    scheduler.add(make_request("b", [*range(1, 15), 50, 51]))  # diverges inside block 3
    assert chunks(run(scheduler), "b") == [(12, 4)]


def test_kv_blocks_without_a_snapshot_are_not_a_hit_for_a_hybrid_model():
    scheduler = make_scheduler(interval=100)
    scheduler.add(make_request("a", list(range(1, 41))))  # one snapshot, at 36
    run(scheduler)
    b = make_request("b", [*range(1, 30), 77, 78, 79])  # shares 29 tokens: 7 KV blocks, no snapshot there
    scheduler.add(b)
    assert chunks(run(scheduler), "b")[0] == (0, 28)  # cut at b's own last boundary
    stats = scheduler.prefix_cache.stats()
    assert stats.num_snapshot_miss_tokens == 28
    assert b.num_cached_tokens == 0


def test_abort_mid_step_drops_the_pending_snapshot_and_keeps_computed_blocks():
    scheduler = make_scheduler(prefill_chunk_size=8, max_num_batched_tokens=8)
    a = make_request("a", list(range(1, 21)))
    scheduler.add(a)
    scheduler.update(scheduler.schedule(), [])  # tokens 0..8 computed, blocks 0 and 1 cached
    batch = scheduler.schedule()  # 8..16, cut at the interval snapshot 16
    assert batch.state_saves
    scheduler.abort(["a"])
    scheduler.update(batch, [])
    cache = scheduler.prefix_cache
    assert cache.stats().num_snapshots_used == 0
    assert cache.stats().num_cached_blocks == 2
    assert scheduler.block_allocator.num_used == 0


def test_a_failed_step_is_discarded():
    scheduler = make_scheduler()
    scheduler.add(make_request("a", list(range(1, 19))))
    run(scheduler)
    scheduler.add(make_request("b", list(range(1, 19))))
    batch = scheduler.schedule()
    assert batch.state_restores
    scheduler.discard(batch)
    scheduler.abort(["b"])
    cache = scheduler.prefix_cache
    assert cache.snapshots is not None
    # the restore's pin is gone: the snapshot can be evicted again
    assert all(cache.snapshots.reserve(bytes([i]), kept=False) is not None for i in range(8))


def test_cached_blocks_that_are_free_count_against_admission():
    scheduler = make_scheduler(num_blocks=6, interval=100, num_slots=2)
    scheduler.add(make_request("a", list(range(1, 19)), max_tokens=1))
    run(scheduler)  # 5 blocks: 4 cached (free now), 1 empty
    assert (scheduler.block_allocator.num_free, scheduler.block_allocator.num_cached) == (6, 4)
    c = make_request("c", [60, 61, 62, 63], max_tokens=2)
    scheduler.add(c)
    scheduler.update(scheduler.schedule(), [7])  # c's prompt takes an empty block, its decode the other
    b = make_request("b", list(range(1, 19)), max_tokens=1)
    scheduler.add(b)
    batch = scheduler.schedule()
    # b would reuse the 4 cached blocks and need 1 more: 5 of the 4 free blocks, so it waits
    assert [seq.request for seq in batch.seqs] == [c]
    scheduler.update(batch, [7])  # c finishes
    batch = scheduler.schedule()
    assert [(s.num_cached_tokens, s.num_new_tokens) for s in batch.seqs] == [(16, 2)]
    assert all(scheduler.block_allocator.ref_count(blk) == 1 for blk in b.block_table)


@pytest.mark.parametrize("num_snapshots", [None, 0, 3])
@settings(max_examples=30, deadline=None)
@given(
    actions=st.lists(
        st.one_of(
            st.tuples(st.just("add"), st.integers(0, 3), st.integers(1, 24), st.integers(1, 6)),
            st.tuples(st.just("abort"), st.integers(0, 20), st.just(0), st.just(0)),
            st.tuples(st.just("step"), st.just(0), st.just(0), st.just(0)),
        ),
        max_size=50,
    )
)
def test_random_shared_prefix_workloads_keep_the_books_balanced(num_snapshots, actions):
    scheduler = make_scheduler(
        num_blocks=16,
        num_slots=3,
        num_snapshots=num_snapshots,
        interval=2,
        max_num_batched_tokens=12,
        prefill_chunk_size=8,
        max_model_len=48,
    )
    stems = [[1] * 24, [1] * 10 + [2] * 14, list(range(24)), [5] * 24]
    requests: list[Request] = []
    for kind, a, b, c in actions:
        if kind == "add":
            requests.append(make_request(str(len(requests)), stems[a][:b] + [9, 9][: c % 3], max_tokens=c))
            scheduler.add(requests[-1])
        elif kind == "abort" and a < len(requests):
            scheduler.abort([requests[a].request_id])
        elif kind == "step" and scheduler.has_work():
            batch = scheduler.schedule()
            assert not batch.is_empty
            scheduler.update(batch, [7 for seq in batch.seqs if seq.samples])
        owners: dict[int, int] = {}
        for r in scheduler.running:
            for blk in r.block_table:
                owners[blk] = owners.get(blk, 0) + 1
        assert all(scheduler.block_allocator.ref_count(blk) == n for blk, n in owners.items())
        assert len(owners) == scheduler.block_allocator.num_used
        assert all(r.block_table == [] and r.state_slot is None for r in scheduler.waiting)
    while scheduler.has_work():
        batch = scheduler.schedule()
        scheduler.update(batch, [7 for seq in batch.seqs if seq.samples])
    assert all(r.status is RequestStatus.FINISHED for r in requests)
    assert all(len(r.output_token_ids) == r.max_tokens for r in requests if r.finish_reason == "length")
    assert scheduler.block_allocator.num_used == scheduler.slot_allocator.num_used == 0
    snapshots = scheduler.prefix_cache.snapshots
    if snapshots is not None and snapshots.num_snapshots:
        # nothing is left pinned or pending: every row can be handed out again
        assert all(
            snapshots.reserve(bytes([i]), kept=False) is not None for i in range(snapshots.num_snapshots)
        )
