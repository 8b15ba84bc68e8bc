"""Which devices a model loads on: the GPUs with the most room, the ones asked for, or every rank on the
CPU; too few devices with room is a 507 naming each full one, bad indices a 400."""

from __future__ import annotations

import pytest

from cortex.errors import InvalidRequestError
from cortex.server.config import NeuronConfig
from cortex.server.device_plan import Device, max_tensor_parallel, plan_devices
from cortex.server.errors import InsufficientMemoryError

GPUS = [Device(i, f"cuda:{i}", 100) for i in range(4)]
CPU = [Device(0, "cpu", 1000)]


def plan(size: int, per_device: int, *, devices=GPUS, reserved=None, indices=None) -> tuple[str, ...]:
    return plan_devices(
        "m", size=size, per_device_bytes=per_device, devices=devices, reserved=reserved or {}, indices=indices
    )


def test_the_gpus_with_the_most_room_are_chosen_in_index_order() -> None:
    assert plan(2, 50) == ("cuda:0", "cuda:1")
    assert plan(2, 50, reserved={"cuda:0": 60, "cuda:2": 10}) == ("cuda:1", "cuda:3")
    assert plan(1, 40, reserved={"cuda:0": 60, "cuda:1": 70, "cuda:2": 80, "cuda:3": 90}) == ("cuda:0",)


def test_too_few_gpus_with_room_is_a_507_naming_the_full_ones() -> None:
    with pytest.raises(InsufficientMemoryError, match="cuda:2 has 10 left"):
        plan(4, 50, reserved={"cuda:2": 90})
    with pytest.raises(InsufficientMemoryError, match="split over 8 devices; this neuron has 4"):
        plan(8, 1)


def test_the_gpus_asked_for_are_used_or_refused() -> None:
    assert plan(2, 50, indices=[3, 1]) == ("cuda:1", "cuda:3")
    with pytest.raises(InsufficientMemoryError, match="cuda:1 has 40 left"):
        plan(2, 50, indices=[1, 3], reserved={"cuda:1": 60})
    for bad in ([1], [1, 1], [1, 7]):
        with pytest.raises(InvalidRequestError, match="2 distinct GPU indices") as refused:
            plan(2, 1, indices=bad)
        assert refused.value.param == "devices"


def test_a_cpu_neuron_runs_every_rank_on_the_cpu() -> None:
    assert plan(2, 10**9, devices=CPU) == ("cpu", "cpu")  # its memory budget bounds it, not the device
    with pytest.raises(InvalidRequestError, match="no GPUs"):
        plan(2, 1, devices=CPU, indices=[0, 1])


def test_the_largest_split_is_every_gpu_or_what_the_config_names() -> None:
    config = NeuronConfig(tensor_parallel=2, catalogue=[{"id": "x", "path": "/m", "tensor_parallel": 3}])
    assert max_tensor_parallel(config, GPUS) == 4
    assert max_tensor_parallel(config, CPU) == 3
    assert max_tensor_parallel(NeuronConfig(), CPU) == 1
