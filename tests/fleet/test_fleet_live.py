"""Fleet against several fake neurons served by uvicorn on loopback ports (real HTTP, real sockets)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from fake_neuron import GB, FakeNeuron, NeuronServer

from cortex.fleet import (
    Fleet,
    FleetPolicy,
    FleetStreamError,
    LoadTimeoutError,
    ModelNotFoundError,
    ModelProfile,
    NeuronSpec,
    NoCapacityError,
    UpstreamError,
)

Serve = Callable[[FakeNeuron], NeuronServer]
CHAT = "/v1/chat/completions"
BODY: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def make_fleet(
    servers: Sequence[NeuronServer], profiles: Sequence[ModelProfile] = (), **policy: Any
) -> Fleet:
    settings: dict[str, Any] = {
        "poll_interval_s": 0.2,
        "poll_timeout_s": 2.0,
        "min_residency_s": 0.0,
        "backoff_base_s": 0.01,
        "ttl_sweep_interval_s": 0.05,
        "max_load_wait_s": 10.0,
        **policy,
    }
    specs = [NeuronSpec(s.neuron.name, s.url) for s in servers]
    return Fleet(specs, profiles, FleetPolicy(**settings))


async def chat(fleet: Fleet, model: str, **kwargs: Any) -> str:
    response = await fleet.post(model, CHAT, BODY, **kwargs)
    assert response.status == 200, response.json
    return response.neuron


async def test_catalogue_merges_neurons_and_resolves_aliases(serve: Serve) -> None:
    a = serve(FakeNeuron("a", {"qwen-a": GB, "qwen-b": GB}, loaded=["qwen-a"]))
    b = serve(FakeNeuron("b", {"qwen-b": GB, "qwen-c": 2 * GB}))
    profiles = [
        ModelProfile("qwen-a", aliases=("claude-*", "gpt-4o"), max_model_len=2048, display_name="Qwen A")
    ]
    async with make_fleet([a, b], profiles) as fleet:
        entries = {e.id: e for e in fleet.catalogue()}
        assert list(entries) == ["qwen-a", "qwen-b", "qwen-c"]
        assert entries["qwen-a"].loaded_on == ("a",)
        assert entries["qwen-a"].max_model_len == 2048
        assert entries["qwen-b"].loadable_on == ("a", "b")
        assert entries["qwen-c"].memory_bytes == 2 * GB
        assert fleet.resolve("claude-sonnet-4-5") == "qwen-a"
        assert fleet.resolve("gpt-4o") == "qwen-a"
        with pytest.raises(ModelNotFoundError) as info:
            fleet.resolve("llama-70b")
        assert info.value.http_status == 404
        openai_ids = [m["id"] for m in fleet.openai_models()["data"]]
        assert openai_ids == ["qwen-a", "gpt-4o", "qwen-b", "qwen-c"]
        anthropic = fleet.anthropic_models()
        assert anthropic["data"][0] == {
            "type": "model",
            "id": "qwen-a",
            "display_name": "Qwen A",
            "created_at": anthropic["data"][0]["created_at"],
            "lifecycle": "active",
            "max_input_tokens": 2048,  # the context, as the Models API names it
            "max_tokens": 2048,
        }
        assert (anthropic["first_id"], anthropic["last_id"], anthropic["has_more"]) == (
            "qwen-a",
            "qwen-c",
            False,
        )
        # An alias routes to the canonical model, sent to the neuron under its own id.
        assert await chat(fleet, "claude-opus-4") == "a"
        assert a.neuron.calls("start") == ["qwen-a"]


async def test_least_loaded_routing(serve: Serve) -> None:
    a = serve(FakeNeuron("a", {"m": GB}, loaded=["m"], extra_queued=5))
    b = serve(FakeNeuron("b", {"m": GB}, loaded=["m"]))
    async with make_fleet([a, b]) as fleet:
        assert await chat(fleet, "m") == "b"
        a.neuron.extra_queued = 0
        a.neuron.infer_delay_s = b.neuron.infer_delay_s = 0.2
        await fleet.refresh()
        served = Counter(await asyncio.gather(*(chat(fleet, "m") for _ in range(10))))
        assert served == {"a": 5, "b": 5}


async def test_affinity_is_sticky_until_overloaded(serve: Serve) -> None:
    a = serve(FakeNeuron("a", {"m": GB}, loaded=["m"]))
    b = serve(FakeNeuron("b", {"m": GB}, loaded=["m"]))
    neurons = {"a": a.neuron, "b": b.neuron}
    async with make_fleet([a, b], affinity_max_imbalance=2) as fleet:
        first = await chat(fleet, "m", affinity_key="session-1")
        other = "b" if first == "a" else "a"
        neurons[first].extra_queued = 2  # within the allowed imbalance: stays
        await fleet.refresh()
        assert [await chat(fleet, "m", affinity_key="session-1") for _ in range(3)] == [first] * 3
        assert await chat(fleet, "m") == other  # no key: least loaded
        neurons[first].extra_queued = 3  # beyond it: moves, and sticks to the new neuron
        await fleet.refresh()
        assert await chat(fleet, "m", affinity_key="session-1") == other
        neurons[first].extra_queued = 0
        await fleet.refresh()
        assert await chat(fleet, "m", affinity_key="session-1") == other
        assert "affinity" in fleet.explain("m", affinity_key="session-1")["reason"]


async def test_a_new_conversation_starts_where_its_shared_prefix_went(serve: Serve) -> None:
    a = serve(FakeNeuron("a", {"m": GB}, loaded=["m"], extra_queued=1))
    b = serve(FakeNeuron("b", {"m": GB}, loaded=["m"]))
    async with make_fleet([a, b], affinity_max_imbalance=2) as fleet:
        assert await chat(fleet, "m", affinity_key="c1", prefix_key="system-1") == "b"  # least loaded
        a.neuron.extra_queued, b.neuron.extra_queued = 0, 2  # b busier, within the allowed imbalance
        await fleet.refresh()
        assert "affinity" in fleet.explain("m", affinity_key="c2", prefix_key="system-1")["reason"]
        assert await chat(fleet, "m", affinity_key="c2", prefix_key="system-1") == "b"  # where system-1 is
        assert (
            await chat(fleet, "m", affinity_key="c3", prefix_key="system-2") == "a"
        )  # unknown: least loaded
        b.neuron.extra_queued = 3  # beyond it: a new conversation goes to the least loaded, and system-1 too
        await fleet.refresh()
        assert await chat(fleet, "m", affinity_key="c4", prefix_key="system-1") == "a"
        b.neuron.extra_queued = 0
        await fleet.refresh()
        assert await chat(fleet, "m", affinity_key="c5", prefix_key="system-1") == "a"
        assert await chat(fleet, "m", affinity_key="c1", prefix_key="system-1") == "b"  # its own key first


async def test_cold_load_on_demand_prefers_preferred_neuron(serve: Serve) -> None:
    a = serve(FakeNeuron("a", {"m": GB}, memory_budget_bytes=16 * GB))
    b = serve(FakeNeuron("b", {"m": GB}, memory_budget_bytes=4 * GB))
    profiles = [ModelProfile("m", preferred_neurons=("b",))]
    async with make_fleet([a, b], profiles) as fleet:
        explained = fleet.explain("m")
        assert (explained["action"], explained["neuron"]) == ("load", "b")
        assert await chat(fleet, "m") == "b"
        assert (a.neuron.calls("load"), b.neuron.calls("load")) == ([], ["m"])
        assert fleet.status().counters["loads"] == 1
        assert fleet.explain("m")["action"] == "serve"


async def test_single_flight_under_50_concurrent_requests(serve: Serve) -> None:
    a = serve(FakeNeuron("a", {"m": GB}, load_delay_s=0.3))
    b = serve(FakeNeuron("b", {"m": GB}, load_delay_s=0.3))
    async with make_fleet([a, b]) as fleet:
        served = await asyncio.gather(*(chat(fleet, "m") for _ in range(50)))
        assert a.neuron.calls("load") + b.neuron.calls("load") == ["m"]
        assert len(served) == 50
        assert len(set(served)) == 1
        assert fleet.status().counters["load_calls"] == 1


async def test_stream_waits_for_a_cold_load_then_streams_both_dialects(serve: Serve) -> None:
    a = serve(FakeNeuron("a", {"m": GB}, load_delay_s=0.4, num_chunks=3))
    async with make_fleet([a]) as fleet:
        chunks = [item async for item in fleet.stream("m", CHAT, {**BODY, "stream": True})]
        assert [c["index"] for c in chunks] == [0, 1, 2]
        anthropic = [i async for i in fleet.stream("m", "/v1/messages", {"stream": True})]
        assert [e["type"] for e in anthropic] == ["content_block_delta"] * 3


@pytest.mark.parametrize(("strategy", "victim"), [("lru", "m1"), ("priority", "m2")])
async def test_eviction_order_follows_strategy(serve: Serve, strategy: str, victim: str) -> None:
    a = serve(FakeNeuron("a", {"m1": GB, "m2": GB, "m3": GB}, memory_budget_bytes=2 * GB))
    profiles = [
        ModelProfile("m1", priority=5),
        ModelProfile("m2", priority=0),
        ModelProfile("m3", priority=9),
    ]
    async with make_fleet([a], profiles, eviction=strategy) as fleet:
        await chat(fleet, "m1")
        await chat(fleet, "m2")  # m1 is now the least recently used, m2 the lowest priority
        assert fleet.explain("m3")["evict"] == [victim]
        await chat(fleet, "m3")
        assert a.neuron.calls("unload") == [victim]
        assert fleet.status().counters["evictions"] == 1


async def test_priority_strategy_never_evicts_a_higher_priority_model(serve: Serve) -> None:
    a = serve(FakeNeuron("a", {"hi": GB, "lo": GB}, memory_budget_bytes=GB, loaded=["hi"]))
    profiles = [ModelProfile("hi", priority=9), ModelProfile("lo", priority=1)]
    async with make_fleet([a], profiles, eviction="priority") as fleet:
        with pytest.raises(NoCapacityError) as info:
            await chat(fleet, "lo")
        assert info.value.http_status == 503
        assert "higher priority" in info.value.reason
        assert a.neuron.calls("unload") == []


async def test_pinned_model_is_loaded_at_start_and_never_evicted(serve: Serve) -> None:
    a = serve(FakeNeuron("a", {"p": GB, "m2": GB, "m3": GB}, memory_budget_bytes=2 * GB))
    profiles = [ModelProfile("p", pinned=True), ModelProfile("m2"), ModelProfile("m3")]
    async with make_fleet([a], profiles) as fleet:
        await fleet.load("p")  # joins the load started by start()
        assert a.neuron.calls("load") == ["p"]
        await chat(fleet, "m2")  # p is now the least recently used, but pinned
        await chat(fleet, "m3")
        assert a.neuron.calls("unload") == ["m2"]
        assert sorted(a.neuron.status) == ["m3", "p"]


async def test_model_with_requests_in_flight_is_not_evicted(serve: Serve) -> None:
    a = serve(FakeNeuron("a", {"m1": GB, "m2": GB}, memory_budget_bytes=GB, infer_delay_s=0.5))
    async with make_fleet([a]) as fleet:
        slow = asyncio.create_task(chat(fleet, "m1"))
        while a.neuron.calls("start") != ["m1"]:
            await asyncio.sleep(0.01)
        assert fleet.explain("m2")["action"] == "wait"
        await chat(fleet, "m2")
        await slow
        events = a.neuron.events
        assert events.index(("end", "m1")) < events.index(("unload", "m1")) < events.index(("load", "m2"))


async def test_alternating_models_do_not_thrash(serve: Serve) -> None:
    a = serve(
        FakeNeuron("a", {"m1": GB, "m2": GB}, memory_budget_bytes=GB, infer_delay_s=0.05, load_delay_s=0.05)
    )
    async with make_fleet([a], min_residency_s=0.5) as fleet:
        models = ["m1", "m2"] * 10
        await asyncio.gather(*(chat(fleet, m) for m in models))
        assert len(a.neuron.calls("load")) == 2
        assert len(a.neuron.calls("start")) == 20


async def test_idle_ttl_is_measured_from_the_end_of_the_last_request(serve: Serve) -> None:
    a = serve(FakeNeuron("a", {"m": GB}, infer_delay_s=0.4))
    async with make_fleet([a], [ModelProfile("m", idle_ttl_s=0.3)]) as fleet:
        await chat(fleet, "m")
        ended = time.monotonic()
        while not fleet.status().counters.get("ttl_unloads"):
            assert time.monotonic() - ended < 5
            await asyncio.sleep(0.02)
        # Measured from the start, the TTL would have expired mid-request and unloaded at its end.
        assert time.monotonic() - ended >= 0.25
        assert a.neuron.calls("unload") == ["m"]


async def test_killed_neuron_loses_no_request_and_recovers(serve: Serve) -> None:
    a = serve(FakeNeuron("a", {"m": GB}, loaded=["m"], infer_delay_s=0.3))
    b = serve(FakeNeuron("b", {"m": GB}, loaded=["m"], infer_delay_s=0.3))
    async with make_fleet([a, b], poll_interval_s=0.1) as fleet:
        requests = [asyncio.create_task(chat(fleet, "m")) for _ in range(20)]
        while len(a.neuron.calls("start")) < 10:
            await asyncio.sleep(0.01)
        await asyncio.to_thread(a.kill)
        served = await asyncio.gather(*requests)
        assert served == ["b"] * 20  # every request that was on a was retried on b
        assert fleet.status().counters["failovers"] >= 10
        deadline = time.monotonic() + 5
        while fleet.status().neurons[0].healthy:  # failed requests and polls take it out
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert await chat(fleet, "m") == "b"

        await asyncio.to_thread(a.start)  # same port, same loaded model
        b.neuron.extra_queued = 3
        deadline = time.monotonic() + 5
        while not fleet.status().neurons[0].healthy:  # the poller notices the recovery
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert await chat(fleet, "m") == "a"


async def test_5xx_fails_over_then_surfaces_upstream_error(serve: Serve) -> None:
    a = serve(FakeNeuron("a", {"m": GB}, loaded=["m"], fail_next=1))
    b = serve(FakeNeuron("b", {"m": GB}, loaded=["m"], extra_queued=1))
    async with make_fleet([a, b]) as fleet:
        response = await fleet.post("m", CHAT, BODY)
        assert (response.status, response.neuron, response.attempts) == (200, "b", 2)
        a.neuron.fail_next = b.neuron.fail_next = 5
        with pytest.raises(UpstreamError) as info:
            await fleet.post("m", CHAT, BODY)
        assert info.value.http_status == 500
        assert info.value.body["error"]["message"] == "injected failure"


async def test_stream_fails_over_before_first_item_and_errors_after(serve: Serve) -> None:
    a = serve(FakeNeuron("a", {"m": GB}, loaded=["m"], break_stream_after=0))
    b = serve(FakeNeuron("b", {"m": GB}, loaded=["m"], extra_queued=1))
    async with make_fleet([a, b]) as fleet:
        items = [i async for i in fleet.stream("m", CHAT, {**BODY, "stream": True})]
        assert [i["neuron"] for i in items if isinstance(i, dict)] == ["b", "b", "b"]
        b.neuron.break_stream_after = 1
        await fleet.refresh()
        received: list[Any] = []

        async def consume() -> None:
            async for item in fleet.stream("m", CHAT, {**BODY, "stream": True}):
                received.append(item)

        with pytest.raises(FleetStreamError):
            await consume()
        assert len(received) == 1
        assert fleet.status().counters["stream_errors"] == 1
        a.neuron.break_stream_after = b.neuron.break_stream_after = None
        a.neuron.bad_data_after = b.neuron.bad_data_after = 0
        with pytest.raises(FleetStreamError, match="undecodable"):  # bytes are relayed, not retried
            await consume()


async def test_no_feasible_neuron_gives_503_with_a_reason(serve: Serve) -> None:
    a = serve(FakeNeuron("a", {"small": GB, "big": 64 * GB}, memory_budget_bytes=8 * GB))
    profiles = [ModelProfile("elsewhere", allowed_neurons=("z",)), ModelProfile("big")]
    async with make_fleet([a], profiles) as fleet:
        with pytest.raises(NoCapacityError, match="not in the profile's allowed_neurons"):
            await chat(fleet, "elsewhere")
        with pytest.raises(NoCapacityError, match="does not fit"):
            await chat(fleet, "big")
        assert fleet.explain("big")["candidates"][0]["neuron"] == "a"
        assert a.neuron.calls("load") == []


async def test_client_errors_are_returned_or_raised_without_failover(serve: Serve) -> None:
    a = serve(FakeNeuron("a", {"m": GB}, loaded=["m"]))
    async with make_fleet([a]) as fleet:
        response = await fleet.post("m", "/nope", BODY)
        assert (response.status, response.attempts) == (404, 1)
        with pytest.raises(UpstreamError) as info:
            _ = [item async for item in fleet.stream("m", "/nope", {"stream": True})]
        assert info.value.http_status == 404
        assert fleet.status().counters.get("failovers", 0) == 0


async def test_closing_a_stream_while_it_waits_for_a_load_releases_everything(serve: Serve) -> None:
    a = serve(FakeNeuron("a", {"m": GB}, load_delay_s=0.3))
    async with make_fleet([a]) as fleet:
        items = fleet.stream("m", CHAT, {**BODY, "stream": True})
        waiting = asyncio.ensure_future(anext(items))
        await asyncio.sleep(0.05)
        waiting.cancel()  # the caller leaves while the model loads
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert await fleet.load("m") == "a"  # the load went on without the abandoned request
        assert a.neuron.calls("load") == ["m"]
        assert a.neuron.calls("start") == []
        assert fleet.status().neurons[0].load == 0


async def test_poller_is_concurrent_bounded_and_tracks_health(serve: Serve) -> None:
    servers = [serve(FakeNeuron(name, {"m": GB}, loaded=["m"], health_delay_s=0.3)) for name in "abc"]
    async with make_fleet(servers, poll_interval_s=60, poll_timeout_s=0.5, unhealthy_after=2) as fleet:
        started = time.monotonic()
        await fleet.refresh()
        assert time.monotonic() - started < 0.5  # three neurons polled at once, not 3 x 0.3 s
        a = servers[0].neuron
        a.health_delay_s = 5.0  # beyond the poll timeout
        await fleet.refresh()
        neuron_a = fleet.status().neurons[0]
        assert neuron_a.healthy  # a timeout is no evidence of death: slow, routed around
        assert neuron_a.slow
        assert "no answer to its health check" in str(neuron_a.last_error)
        a.health_delay_s, a.health_error = 0.0, True
        await fleet.refresh()
        assert fleet.status().neurons[0].healthy  # one error is tolerated
        await fleet.refresh()
        assert not fleet.status().neurons[0].healthy
        assert fleet.catalogue()[0].loaded_on == ("b", "c")
        assert set(await asyncio.gather(*(chat(fleet, "m") for _ in range(4)))) == {"b", "c"}
        a.health_error = False
        await fleet.refresh()
        assert fleet.status().neurons[0].healthy
        assert not fleet.status().neurons[0].slow
        assert fleet.catalogue()[0].loaded_on == ("a", "b", "c")


def freeze(neuron: FakeNeuron, frozen: bool = True) -> None:
    """As SIGSTOP looks from outside: nothing answers and streams go silent (connections stay open)."""
    neuron.health_delay_s = neuron.infer_delay_s = neuron.chunk_delay_s = 60.0 if frozen else 0.0


async def test_a_frozen_neuron_is_cut_after_its_polls_time_out_and_its_waiting_requests_fail_over(
    serve: Serve,
) -> None:
    a = serve(FakeNeuron("a", {"m": GB}, loaded=["m"], num_chunks=1000, chunk_delay_s=0.02))
    b = serve(FakeNeuron("b", {"m": GB}, loaded=["m"], extra_queued=5))  # a is the least loaded
    policy = {"poll_interval_s": 0.1, "poll_timeout_s": 0.3, "frozen_after_s": 0.5}
    bound_s = 0.5 + 2 * (0.1 + 0.3) + 0.5  # frozen after a timed-out poll and its probe, then cut
    async with make_fleet([a, b], **policy) as fleet:
        stream = fleet.stream("m", CHAT, {**BODY, "stream": True})
        assert (await anext(stream))["neuron"] == "a"
        freeze(a.neuron)
        frozen_at = time.monotonic()
        waiting = asyncio.create_task(chat(fleet, "m"))  # sent to a before any poll finds it frozen
        with pytest.raises(FleetStreamError, match="neuron a is frozen"):
            async for _ in stream:
                pass
        assert time.monotonic() - frozen_at < bound_s
        assert await waiting == "b"
        assert time.monotonic() - frozen_at < bound_s
        status = fleet.status().neurons[0]
        assert status.healthy  # not dead: routed around, restored once it answers
        assert status.slow
        assert await chat(fleet, "m") == "b"
        freeze(a.neuron, False)
        await asyncio.sleep(0.5)  # the sleeping health checks end
        deadline = time.monotonic() + 0.1 + 0.3 + 0.5
        while fleet.status().neurons[0].slow:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        assert await chat(fleet, "m") == "a"


async def test_a_busy_neuron_still_streaming_is_slow_not_dead_and_keeps_its_streams(serve: Serve) -> None:
    a = serve(FakeNeuron("a", {"m": GB}, loaded=["m"], num_chunks=60, chunk_delay_s=0.02))
    b = serve(FakeNeuron("b", {"m": GB}, loaded=["m"], extra_queued=5))
    async with make_fleet([a, b], poll_interval_s=0.05, poll_timeout_s=0.2, frozen_after_s=0.3) as fleet:
        stream = fleet.stream("m", CHAT, {**BODY, "stream": True})
        assert (await anext(stream))["neuron"] == "a"
        a.neuron.health_delay_s = 60.0  # its health checks time out, its stream goes on
        items = [item async for item in stream]
        assert len(items) == 59  # the rest of the stream, uncut
        status = fleet.status().neurons[0]
        assert status.healthy
        assert status.slow
        assert await chat(fleet, "m") == "b"  # routed around while b can serve


async def test_a_starved_neuron_that_answers_its_health_late_is_slow_not_frozen(serve: Serve) -> None:
    """Its polls time out but its liveness probe is answered: a request waiting there in silence (a long
    prefill on a CPU-starved host) is not cut."""
    a = serve(FakeNeuron("a", {"m": GB}, loaded=["m"], infer_delay_s=1.5))
    async with make_fleet([a], poll_interval_s=0.05, poll_timeout_s=0.2, frozen_after_s=1.0) as fleet:
        a.neuron.health_delay_s = 0.4
        await fleet.refresh()
        assert fleet.status().neurons[0].slow
        assert await chat(fleet, "m") == "a"
        status = fleet.status().neurons[0]
        assert status.healthy
        assert status.slow


async def test_an_answer_that_goes_silent_is_cut_after_the_idle_timeout(serve: Serve) -> None:
    a = serve(FakeNeuron("a", {"m": GB}, loaded=["m"], num_chunks=2, chunk_delay_s=30.0))
    async with make_fleet([a], stream_idle_timeout_s=0.3) as fleet:
        stream = fleet.stream("m", CHAT, {**BODY, "stream": True})
        await anext(stream)
        started = time.monotonic()
        with pytest.raises(FleetStreamError, match=r"sent nothing for 0\.3 s"):
            await anext(stream)
        assert time.monotonic() - started < 2.0


@pytest.mark.parametrize("code", ["model_not_found", None])
async def test_model_unloaded_behind_the_fleets_back_is_retried_elsewhere(
    serve: Serve, code: str | None
) -> None:
    a = serve(FakeNeuron("a", {"m": GB}, loaded=["m"], not_loaded_code=code))
    b = serve(FakeNeuron("b", {"m": GB}, loaded=["m"], extra_queued=1))
    async with make_fleet([a, b], poll_interval_s=60) as fleet:
        del a.neuron.status["m"]  # e.g. another gateway unloaded it since the last poll
        response = await fleet.post("m", CHAT, BODY)
        assert (response.status, response.neuron, response.attempts) == (200, "b", 2)
        assert fleet.catalogue()[0].loaded_on == ("b",)


async def test_failed_load_is_retried_on_another_neuron(serve: Serve) -> None:
    # The profile underestimates the model: neuron a accepts the plan but answers 507.
    a = serve(FakeNeuron("a", {"m": 10 * GB}, memory_budget_bytes=8 * GB))
    b = serve(FakeNeuron("b", {"m": 10 * GB}, memory_budget_bytes=16 * GB))
    profiles = [ModelProfile("m", memory_bytes=GB, preferred_neurons=("a",))]
    async with make_fleet([a, b], profiles) as fleet:
        assert await chat(fleet, "m") == "b"
        assert (a.neuron.calls("load"), b.neuron.calls("load")) == (["m"], ["m"])
        counters = fleet.status().counters
        assert (counters["load_calls"], counters["load_failures"], counters["loads"]) == (2, 1, 1)


async def test_cold_load_wait_is_bounded(serve: Serve) -> None:
    a = serve(FakeNeuron("a", {"m": GB}, load_delay_s=1.0))
    async with make_fleet([a], max_load_wait_s=0.2) as fleet:
        with pytest.raises(LoadTimeoutError) as info:
            await chat(fleet, "m")
        assert info.value.http_status == 503


async def test_eviction_refused_by_a_busy_neuron_is_replanned(serve: Serve) -> None:
    a = serve(FakeNeuron("a", {"v": GB, "m": GB}, memory_budget_bytes=GB, loaded=["v"]))
    async with make_fleet([a], poll_interval_s=0.1) as fleet:
        a.neuron.in_flight["v"] = 1  # another gateway's request, not yet seen by a poll
        request = asyncio.create_task(chat(fleet, "m"))
        while not a.neuron.calls("unload_refused"):
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)
        assert not request.done()  # waiting for v to drain, not hammering the neuron
        assert len(a.neuron.calls("unload_refused")) == 1
        a.neuron.in_flight["v"] = 0
        assert await request == "a"
        assert a.neuron.calls("unload") == ["v"]


async def test_a_min_devices_model_goes_where_that_many_gpus_have_room_and_evicts_by_gpu(
    serve: Serve,
) -> None:
    catalogue = {"big": 40 * GB, "other": 40 * GB}
    one = serve(FakeNeuron("one", catalogue, memory_budget_bytes=96 * GB, gpus=[96 * GB]))
    three = serve(FakeNeuron("three", catalogue, memory_budget_bytes=96 * GB, gpus=[24 * GB] * 3))
    profiles = [ModelProfile("big", min_devices=2), ModelProfile("other", min_devices=2)]
    async with make_fleet([one, three], profiles) as fleet:
        explained = fleet.explain("big")
        assert (explained["action"], explained["neuron"]) == ("load", "three")
        notes = {c["neuron"]: c["note"] for c in explained["candidates"]}
        assert notes["one"] == "cannot load it: it is split over 2 GPUs (min_devices=2); this neuron has 1"
        assert await chat(fleet, "big") == "three"
        assert three.neuron.load_bodies == [{"model": "big", "tensor_parallel": 2}]
        assert three.neuron.placed == {"big": [0, 1]}
        await fleet.refresh()
        # "other" needs 20 GB on each of 2 GPUs: cuda:2 has room, cuda:0 and cuda:1 only 4 GB, although
        # the neuron's memory holds both; evicting "big" frees its share on the GPUs it spans
        assert fleet.explain("other")["evict"] == ["big"]
        assert await chat(fleet, "other") == "three"
        assert three.neuron.calls("unload") == ["big"]
        assert three.neuron.placed == {"other": [0, 1]}
        assert one.neuron.calls("load") == []
