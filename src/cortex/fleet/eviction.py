"""Which models to unload from a neuron to make room, and which have outlived their idle TTL.

Pure functions over ``NeuronView``. Invariants: a pinned model, a model with requests in flight or
queued, a model still loading, and a model loaded less than ``min_residency_s`` ago are never chosen.
``lru`` orders the rest by last use; ``priority`` by (priority, last use) and skips models of higher
priority than the incoming one. A model fits when the neuron's free memory holds it and, where the
neuron reports its GPUs, enough of them have room for its share (a tensor-parallel split needs one
share on each of its devices); evicting a model frees its share on each GPU it spans.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cortex.fleet.profiles import EvictionStrategy
from cortex.fleet.snapshot import ModelSlot, NeuronView

__all__ = ["EvictionPlan", "eviction_candidates", "fits", "idle_expired", "plan_eviction"]


@dataclass(frozen=True)
class EvictionPlan:
    """``victims`` in unload order (possibly empty); ``retriable`` is set when no plan exists now but one
    could once busy or freshly loaded models become idle; ``reason`` explains a missing plan."""

    victims: tuple[str, ...] | None
    retriable: bool = False
    reason: str = ""


def eviction_candidates(
    view: NeuronView,
    *,
    strategy: EvictionStrategy,
    incoming_priority: int,
    now_s: float,
    min_residency_s: float,
) -> list[ModelSlot]:
    """Models that may be evicted now, first victim first."""
    slots = [
        slot
        for slot in view.models.values()
        if slot.status == "loaded"
        and not slot.pinned
        and slot.load == 0
        and now_s - slot.loaded_at_s >= min_residency_s
        and (strategy == "lru" or slot.priority <= incoming_priority)
    ]
    if strategy == "priority":
        return sorted(slots, key=lambda s: (s.priority, s.last_used_s, s.model))
    return sorted(slots, key=lambda s: (s.last_used_s, s.model))


def fits(view: NeuronView, needed_bytes: int, num_devices: int, freed: Sequence[ModelSlot] = ()) -> bool:
    """Whether ``needed_bytes`` fit once ``freed`` are gone: within the neuron's free memory, and (on a
    neuron that reports its GPUs, or a split over several) on ``num_devices`` GPUs with room for an
    equal share each."""
    if view.free_bytes + sum(slot.memory_bytes for slot in freed) < needed_bytes:
        return False
    if num_devices == 1 and not view.devices:
        return True
    share = -(-needed_bytes // num_devices)
    rooms = [
        device.free_bytes + sum(slot.device_bytes for slot in freed if device.device in slot.devices)
        for device in view.devices
    ]
    return sum(room >= share for room in rooms) >= num_devices


def plan_eviction(
    view: NeuronView,
    needed_bytes: int,
    *,
    num_devices: int = 1,
    strategy: EvictionStrategy,
    incoming_priority: int,
    now_s: float,
    min_residency_s: float,
) -> EvictionPlan:
    """The shortest prefix of the eviction order after which ``needed_bytes`` fit over ``num_devices``
    devices (:func:`fits`; ``()`` if they already do)."""
    if fits(view, needed_bytes, num_devices):
        return EvictionPlan(())
    victims: list[ModelSlot] = []
    candidates = eviction_candidates(
        view,
        strategy=strategy,
        incoming_priority=incoming_priority,
        now_s=now_s,
        min_residency_s=min_residency_s,
    )
    for slot in candidates:
        victims.append(slot)
        if fits(view, needed_bytes, num_devices, victims):
            return EvictionPlan(tuple(victim.model for victim in victims))
    # Would it fit once every evictable-in-principle model (not pinned, not higher priority) is idle?
    movable = [
        s
        for s in view.models.values()
        if not s.pinned and (strategy == "lru" or s.priority <= incoming_priority) and s.status != "unloading"
    ]
    eventual = fits(
        view, needed_bytes, num_devices, [s for s in movable if s.status in ("loaded", "loading")]
    )
    busy = sorted(s.model for s in movable if s not in candidates)
    if eventual and busy:
        return EvictionPlan(None, retriable=True, reason=f"waiting for busy or just-loaded models {busy}")
    pinned = sorted(s.model for s in view.models.values() if s.pinned)
    higher = sorted(s.model for s in view.models.values() if s not in movable and not s.pinned)
    parts = [f"needs {needed_bytes} bytes, {view.free_bytes} free"]
    share = -(-needed_bytes // num_devices)
    if view.devices:
        roomy = sum(device.free_bytes >= share for device in view.devices)
        parts.append(
            f"{share} bytes on each of {num_devices} GPU(s), {roomy} of {len(view.devices)} have room"
        )
    elif num_devices > 1:
        parts.append(f"split over {num_devices} GPUs, but it reports no GPUs with their use")
    if pinned:
        parts.append(f"pinned {pinned}")
    if higher:
        parts.append(f"higher priority or unloading {higher}")
    return EvictionPlan(None, reason="; ".join(parts))


def idle_expired(view: NeuronView, idle_ttl_s: Mapping[str, float], *, now_s: float) -> list[str]:
    """Loaded, unpinned, idle models whose last use ended at least their TTL ago."""
    return sorted(
        slot.model
        for slot in view.models.values()
        if slot.status == "loaded"
        and not slot.pinned
        and slot.load == 0
        and slot.model in idle_ttl_s
        and now_s - max(slot.last_used_s, slot.loaded_at_s) >= idle_ttl_s[slot.model]
    )
