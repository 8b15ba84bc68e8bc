"""Which devices a model loads on: a neuron's split of a model over its GPUs (tensor parallelism).

A neuron's devices are its GPUs (``cuda:N``) or, with none, the host's one ``cpu``, where every rank of
a split model runs (for tests and demos). :func:`plan_devices` picks the ``tensor_parallel`` devices
of one load: the GPU indices asked for (the load's ``devices``, else its catalogue entry's), or else
the GPUs with the most memory left by the estimates of the models already on them; each must hold the
model's per-device estimate. Pure: the store passes what each device already holds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cortex.errors import InvalidRequestError
from cortex.server.config import NeuronConfig
from cortex.server.errors import InsufficientMemoryError


@dataclass(frozen=True, slots=True)
class Device:
    """One device models go on, as ``cortex.server.devices`` reports it."""

    index: int  # the GPU's index (0 for the cpu)
    device: str  # "cuda:N" or "cpu", as an engine takes it
    memory_bytes: int  # its total memory

    @property
    def is_cpu(self) -> bool:
        return self.device == "cpu"


def max_tensor_parallel(config: NeuronConfig, devices: Sequence[Device]) -> int:
    """The largest split a neuron estimates and loads: every GPU, or what its config names (on a CPU
    neuron only the config's splits: ``[neuron] tensor_parallel`` and the catalogue entries')."""
    splits = (entry.tensor_parallel or len(entry.devices or ()) for entry in config.catalogue)
    configured = max([config.tensor_parallel, *splits])
    gpus = 0 if any(device.is_cpu for device in devices) else len(devices)
    return max(gpus, configured)


def plan_devices(
    model_id: str,
    *,
    size: int,
    per_device_bytes: int,
    devices: Sequence[Device],
    reserved: Mapping[str, int],
    indices: Sequence[int] | None,
) -> tuple[str, ...]:
    """The ``size`` devices ``model_id`` loads on, in index order; ``reserved`` is what the estimates of
    the loaded models take on each device. Raises InvalidRequestError (400) for ``indices`` that are
    not ``size`` distinct GPUs of this neuron, InsufficientMemoryError (507) when too few devices have
    room."""
    if len(devices) == 1 and devices[0].is_cpu:
        if indices is not None:
            raise InvalidRequestError(
                f"this neuron has no GPUs, so devices cannot be chosen (got {list(indices)})", param="devices"
            )
        return ("cpu",) * size  # every rank on the host's cores and RAM; the budget bounds the memory
    by_index = {device.index: device for device in devices}
    if indices is not None:
        if len(indices) != size or len(set(indices)) != size or not set(indices) <= set(by_index):
            raise InvalidRequestError(
                f"devices must be {size} distinct GPU indices of this neuron's {sorted(by_index)}, "
                f"got {list(indices)}",
                param="devices",
            )
        chosen = [by_index[index] for index in indices]
    else:
        if size > len(devices):
            raise InsufficientMemoryError(
                f"model {model_id!r} is split over {size} devices; this neuron has {len(devices)}"
            )
        # the most room first (ties: the lower index)
        chosen = sorted(devices, key=lambda d: (reserved.get(d.device, 0) - d.memory_bytes, d.index))[:size]
    full = [d for d in chosen if reserved.get(d.device, 0) + per_device_bytes > d.memory_bytes]
    if full:
        rooms = ", ".join(f"{d.device} has {d.memory_bytes - reserved.get(d.device, 0)} left" for d in full)
        raise InsufficientMemoryError(
            f"model {model_id!r} needs about {per_device_bytes} bytes on each of {size} device(s); {rooms}"
        )
    return tuple(d.device for d in sorted(chosen, key=lambda d: d.index))
