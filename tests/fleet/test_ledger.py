"""The ledger's view of what a load takes: the neuron's own split raised to a profile's min_devices, the
neuron's per-device estimate at that split, and where that cannot be (too few GPUs, a split the shapes
do not allow) a problem that keeps placement away; GPUs and the models on them as polled."""

from __future__ import annotations

from typing import Any

from cortex.fleet.ledger import Ledger
from cortex.fleet.poller import NeuronState
from cortex.fleet.profiles import ModelProfile, NeuronSpec
from cortex.fleet.snapshot import DeviceRoom, LoadNeed

GB = 1 << 30


def polled(gpus: int, *, split: int = 1, models: list[dict[str, Any]] = ()) -> NeuronState:
    state = NeuronState(NeuronSpec(name="a", url="http://127.0.0.1:1"))
    devices = [
        {"index": i, "device": f"cuda:{i}", "memory_total_bytes": 24 * GB, "memory_reserved_bytes": 0}
        for i in range(gpus)
    ] or [{"index": 0, "device": "cpu", "memory_total_bytes": 64 * GB}]
    for entry in models:
        for device in devices:
            if device["device"] in entry.get("devices", []):
                device["memory_reserved_bytes"] += entry["memory_per_device_bytes"]
    health = {
        "status": "ok",
        "devices": devices,
        "models": list(models),
        "in_flight": 0,
        "queued": 0,
        "memory_budget_bytes": 96 * GB,
        "memory_used_bytes": 0,
    }
    per_device = {"1": 40 * GB, "2": 21 * GB, "4": 11 * GB}
    discovery = {
        "models": [
            {
                "id": "big",
                "estimated_memory_bytes": split * per_device[str(split)],
                "tensor_parallel": split,
                "memory_per_device_bytes": per_device,
            }
        ]
    }
    state.apply(health, {}, discovery, sent_s=0.0, now_s=0.0)
    return state


def need(state: NeuronState, **profile: Any) -> LoadNeed:
    ledger = Ledger([ModelProfile("big", **profile)] if profile else [], {"a": state})
    return ledger.load_need("big", state)


def test_min_devices_raises_the_split_and_the_estimate_follows_it() -> None:
    assert need(polled(4)) == LoadNeed(40 * GB)
    assert need(polled(4), min_devices=2) == LoadNeed(42 * GB, devices=2, tensor_parallel=2)
    assert need(polled(4, split=4), min_devices=2) == LoadNeed(44 * GB, devices=4, tensor_parallel=4)
    # the profile's figure is the need over all its devices
    assert need(polled(4), min_devices=2, memory_bytes=50 * GB).memory_bytes == 50 * GB


def test_too_few_gpus_or_a_split_with_no_estimate_is_a_problem() -> None:
    assert need(polled(1), min_devices=2).problem == (
        "it is split over 2 GPUs (min_devices=2); this neuron has 1"
    )
    assert need(polled(0), min_devices=2).problem == (
        "it is split over 2 GPUs (min_devices=2); this neuron has 0"
    )
    assert "do not split over 3 devices" in (need(polled(4), min_devices=3).problem or "")


def test_a_cpu_neuron_split_takes_one_device_and_the_whole_need() -> None:
    assert need(polled(0, split=2)) == LoadNeed(42 * GB, devices=1, tensor_parallel=2)


def test_views_carry_each_gpus_room_and_the_gpus_each_model_spans() -> None:
    spanning = {
        "id": "big",
        "status": "loaded",
        "devices": ["cuda:0", "cuda:1"],
        "memory_per_device_bytes": 21 * GB,
    }
    state = polled(3, models=[spanning])
    (view,) = Ledger([], {"a": state}).views(now=0.0)
    assert view.devices == (
        DeviceRoom("cuda:0", 3 * GB),
        DeviceRoom("cuda:1", 3 * GB),
        DeviceRoom("cuda:2", 24 * GB),
    )
    slot = view.models["big"]
    assert (slot.devices, slot.device_bytes) == (("cuda:0", "cuda:1"), 21 * GB)
    state.note_unloaded("big", 42 * GB)
    assert Ledger([], {"a": state}).views(now=0.0)[0].devices[0] == DeviceRoom("cuda:0", 24 * GB)
    state.note_loaded("big", 42 * GB, {"id": "big", "status": "loaded", "devices": ["cuda:1", "cuda:2"]})
    rooms = [room.free_bytes for room in Ledger([], {"a": state}).views(now=0.0)[0].devices]
    assert rooms == [24 * GB, 3 * GB, 3 * GB]
