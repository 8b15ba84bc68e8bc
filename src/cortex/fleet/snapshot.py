"""Immutable views of the fleet at one instant: what the pure routing, placement and eviction
functions decide from. The fleet builds them from polled neuron state plus its own bookkeeping
(requests it has in flight, when each model was last used), so the policy runs unchanged in
``benchmarks/fleet_sim.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["DeviceRoom", "LoadNeed", "ModelSlot", "ModelStatus", "NeuronView"]

ModelStatus = Literal["loading", "loaded", "unloading", "failed"]


@dataclass(frozen=True)
class ModelSlot:
    """One model on one neuron. ``load`` is in-flight + queued requests; times are monotonic seconds.
    ``devices`` are the GPUs it spans and ``device_bytes`` what it takes on each (unloading it frees
    that much on each of them)."""

    model: str
    status: ModelStatus
    load: int = 0
    memory_bytes: int = 0
    priority: int = 0
    pinned: bool = False
    last_used_s: float = 0.0
    loaded_at_s: float = 0.0
    devices: tuple[str, ...] = ()
    device_bytes: int = 0


@dataclass(frozen=True)
class LoadNeed:
    """What loading a model on one neuron takes: ``memory_bytes`` in all, an equal share on each of
    ``devices`` distinct GPUs (1: one GPU, or a CPU neuron's RAM), in ``tensor_parallel`` ranks (a
    CPU neuron runs them all on its CPU). ``problem`` says why this neuron cannot load it so."""

    memory_bytes: int
    devices: int = 1
    tensor_parallel: int = 1
    problem: str | None = None


@dataclass(frozen=True)
class DeviceRoom:
    """One GPU of a neuron and the memory its models' estimates leave on it."""

    device: str
    free_bytes: int


@dataclass(frozen=True)
class NeuronView:
    """One neuron. ``free_bytes`` is its memory budget minus what is used or reserved by loads;
    ``loadable`` maps each model it can load (from ``/discovery``) to what loading it takes (memory 0
    if unknown); ``devices`` are its GPUs with their room (empty on a CPU neuron, or one that does not
    report per-device use).
    ``slow``: its last health check timed out; routing prefers any other neuron that can serve.
    """

    name: str
    healthy: bool
    load: int = 0
    free_bytes: int = 0
    models: Mapping[str, ModelSlot] = field(default_factory=dict)
    loadable: Mapping[str, LoadNeed] = field(default_factory=dict)
    slow: bool = False
    devices: tuple[DeviceRoom, ...] = ()

    def status_of(self, model: str) -> ModelStatus | None:
        slot = self.models.get(model)
        return slot.status if slot is not None else None
