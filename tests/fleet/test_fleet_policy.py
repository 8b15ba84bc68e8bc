"""The pure policy: routing, placement and eviction over hand-built snapshots (no I/O)."""

from __future__ import annotations

from cortex.fleet.eviction import idle_expired, plan_eviction
from cortex.fleet.profiles import FleetPolicy, ModelProfile
from cortex.fleet.routing import route
from cortex.fleet.snapshot import DeviceRoom, LoadNeed, ModelSlot, NeuronView

GB = 1 << 30
POLICY = FleetPolicy(min_residency_s=5.0)


def neuron(
    name: str, *slots: ModelSlot, free: int = 0, load: int = 0, healthy: bool = True, **loadable: int
) -> NeuronView:
    needs = {model: LoadNeed(size) for model, size in loadable.items()}
    return NeuronView(name, healthy, load, free, {s.model: s for s in slots}, needs)


def slot(model: str, **kwargs: object) -> ModelSlot:
    fields: dict = {"status": "loaded", "memory_bytes": GB, "loaded_at_s": 0.0, **kwargs}
    return ModelSlot(model, **fields)


def test_serve_least_loaded_healthy_neuron_with_the_model() -> None:
    views = [
        neuron("a", slot("m"), load=3),
        neuron("b", slot("m"), load=1),
        neuron("c", slot("m"), load=0, healthy=False),
        neuron("d", load=0, m=GB, free=8 * GB),
    ]
    decision = route("m", views, profile=None, policy=POLICY, now_s=100.0)
    assert (decision.action, decision.neuron) == ("serve", "b")
    assert route("m", views, profile=None, policy=POLICY, now_s=100.0, exclude={"b"}).neuron == "a"
    sticky = route("m", views, profile=None, policy=POLICY, now_s=100.0, affinity_neuron="a")
    assert sticky.neuron == "a"  # 3 <= 1 + 4
    moved = route(
        "m",
        views,
        profile=None,
        policy=FleetPolicy(affinity_max_imbalance=1),
        now_s=100.0,
        affinity_neuron="a",
    )
    assert moved.neuron == "b"


def test_a_slow_neuron_serves_only_when_no_responsive_one_can() -> None:
    slow = NeuronView("a", True, 0, 0, {"m": slot("m")}, slow=True)
    views = [slow, neuron("b", slot("m"), load=7)]
    assert route("m", views, profile=None, policy=POLICY, now_s=100.0).neuron == "b"
    assert route("m", [slow], profile=None, policy=POLICY, now_s=100.0).neuron == "a"
    loading = NeuronView("a", True, 0, 0, {"m": slot("m", status="loading")}, slow=True)
    joined = route(
        "m",
        [loading, neuron("b", slot("m", status="loading"), load=7)],
        profile=None,
        policy=POLICY,
        now_s=100.0,
    )
    assert (joined.action, joined.neuron) == ("join", "b")


def test_placement_ranks_fit_then_preference_then_free_memory() -> None:
    views = [
        neuron("a", free=10 * GB, m=GB),
        neuron("b", free=3 * GB, m=GB),
        neuron("c", slot("x", last_used_s=1.0), free=0, m=GB),
        neuron("d", free=100 * GB),  # cannot load m
    ]
    decision = route("m", views, profile=None, policy=POLICY, now_s=100.0)
    assert (decision.action, decision.neuron, decision.evict) == ("load", "a", ())
    preferred = ModelProfile("m", preferred_neurons=("b", "c"))
    assert route("m", views, profile=preferred, policy=POLICY, now_s=100.0).neuron == "b"
    only_c = ModelProfile("m", allowed_neurons=("c",))
    decision = route("m", views, profile=only_c, policy=POLICY, now_s=100.0)
    assert (decision.neuron, decision.evict) == ("c", ("x",))
    notes = dict(route("m", views, profile=None, policy=POLICY, now_s=100.0).notes)
    assert notes["d"] == "cannot load it (not in its /discovery)"


def test_loading_model_is_joined_not_loaded_twice() -> None:
    views = [neuron("a", slot("m", status="loading"), load=5), neuron("b", free=8 * GB, m=GB)]
    decision = route("m", views, profile=None, policy=POLICY, now_s=100.0)
    assert (decision.action, decision.neuron) == ("join", "a")


def test_eviction_skips_pinned_busy_and_fresh_models() -> None:
    view = neuron(
        "a",
        slot("pinned", pinned=True, last_used_s=1.0),
        slot("busy", load=2, last_used_s=2.0),
        slot("fresh", loaded_at_s=98.0, last_used_s=3.0),
        slot("old", last_used_s=4.0),
        slot("new", last_used_s=50.0),
        free=0,
    )
    kwargs = {"strategy": "lru", "incoming_priority": 0, "now_s": 100.0, "min_residency_s": 5.0}
    assert plan_eviction(view, GB, **kwargs).victims == ("old",)
    assert plan_eviction(view, 2 * GB, **kwargs).victims == ("old", "new")
    blocked = plan_eviction(view, 4 * GB, **kwargs)  # needs busy or fresh too: wait for them
    assert blocked.victims is None
    assert blocked.retriable
    assert "busy" in blocked.reason
    never = plan_eviction(view, 5 * GB, **kwargs)  # would need the pinned model: give up
    assert never.victims is None
    assert not never.retriable
    assert "pinned ['pinned']" in never.reason


def test_priority_strategy_orders_by_priority_and_protects_higher() -> None:
    view = neuron(
        "a", slot("lo", priority=1, last_used_s=9.0), slot("hi", priority=7, last_used_s=1.0), free=0
    )
    lru = plan_eviction(view, GB, strategy="lru", incoming_priority=0, now_s=100.0, min_residency_s=0.0)
    prio = plan_eviction(view, GB, strategy="priority", incoming_priority=5, now_s=100.0, min_residency_s=0.0)
    assert (lru.victims, prio.victims) == (("hi",), ("lo",))
    refused = plan_eviction(
        view, 2 * GB, strategy="priority", incoming_priority=5, now_s=100.0, min_residency_s=0.0
    )
    assert refused.victims is None
    assert not refused.retriable
    assert "higher priority" in refused.reason


def test_idle_expired_uses_last_use_and_ignores_busy_and_pinned() -> None:
    view = neuron(
        "a",
        slot("idle", last_used_s=10.0),
        slot("recent", last_used_s=95.0),
        slot("busy", last_used_s=10.0, load=1),
        slot("pinned", last_used_s=10.0, pinned=True),
        slot("no_ttl", last_used_s=10.0),
    )
    ttl = {"idle": 30.0, "recent": 30.0, "busy": 30.0, "pinned": 30.0}
    assert idle_expired(view, ttl, now_s=100.0) == ["idle"]


def gpus(*free: int) -> tuple[DeviceRoom, ...]:
    return tuple(DeviceRoom(f"cuda:{i}", room) for i, room in enumerate(free))


def test_a_split_model_goes_only_where_that_many_gpus_have_room_for_its_share() -> None:
    need = {"m": LoadNeed(8 * GB, devices=2, tensor_parallel=2)}
    views = [
        NeuronView("one-gpu", True, free_bytes=80 * GB, loadable=need, devices=gpus(80 * GB)),
        NeuronView("lopsided", True, free_bytes=20 * GB, loadable=need, devices=gpus(16 * GB, 3 * GB)),
        NeuronView("roomy", True, free_bytes=10 * GB, loadable=need, devices=gpus(5 * GB, 1 * GB, 5 * GB)),
        NeuronView("cpu", True, free_bytes=99 * GB, loadable={"m": LoadNeed(8 * GB, problem="no GPUs")}),
    ]
    decision = route("m", views, profile=None, policy=POLICY, now_s=100.0)
    assert (decision.action, decision.neuron) == ("load", "roomy")
    notes = dict(decision.notes)
    assert "4294967296 bytes on each of 2 GPU(s), 1 of 1 have room" in notes["one-gpu"]
    assert "1 of 2 have room" in notes["lopsided"]
    assert notes["roomy"].startswith("fits (needs 8589934592 bytes over 2 GPUs")
    assert notes["cpu"] == "cannot load it: no GPUs"


def test_evicting_a_model_frees_its_share_on_each_gpu_it_spans() -> None:
    split = slot(
        "split", last_used_s=1.0, memory_bytes=6 * GB, devices=("cuda:0", "cuda:1"), device_bytes=3 * GB
    )
    whole = slot("whole", last_used_s=2.0, memory_bytes=3 * GB, devices=("cuda:2",), device_bytes=3 * GB)
    view = NeuronView(
        "a", True, free_bytes=3 * GB, models={"split": split, "whole": whole}, devices=gpus(GB, GB, 0, GB)
    )
    kwargs = {"strategy": "lru", "incoming_priority": 0, "now_s": 100.0, "min_residency_s": 0.0}
    # 4 GB over two GPUs: evicting "split" frees 3 GB on cuda:0 and cuda:1, 4 GB on each
    assert plan_eviction(view, 4 * GB, num_devices=2, **kwargs).victims == ("split",)
    # one GPU with 3 GB: already there after the same eviction, never by evicting "whole" first
    assert plan_eviction(view, 3 * GB, **kwargs).victims == ("split",)
    assert plan_eviction(view, GB, **kwargs).victims == ()
    never = plan_eviction(view, 12 * GB, num_devices=4, **kwargs)
    assert never.victims is None
    assert "3221225472 bytes on each of 4 GPU(s), 0 of 4 have room" in never.reason
