"""Which models to unload from a neuron to make room, and which have outlived their idle TTL.

Pure functions over ``NeuronView``. Invariants: a pinned model, a model with requests in flight or
queued, a model still loading, and a model loaded less than ``min_residency_s`` ago are never chosen.
``lru`` orders the rest by last use; ``priority`` by (priority, last use) and skips models of higher
priority than the incoming one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from cortex.fleet.profiles import EvictionStrategy
from cortex.fleet.snapshot import ModelSlot, NeuronView

__all__ = ["EvictionPlan", "eviction_candidates", "idle_expired", "plan_eviction"]


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


def plan_eviction(
    view: NeuronView,
    needed_bytes: int,
    *,
    strategy: EvictionStrategy,
    incoming_priority: int,
    now_s: float,
    min_residency_s: float,
) -> EvictionPlan:
    """The shortest prefix of the eviction order that frees ``needed_bytes`` (``()`` if it already fits)."""
    if view.free_bytes >= needed_bytes:
        return EvictionPlan(())
    freed = view.free_bytes
    victims: list[str] = []
    candidates = eviction_candidates(
        view,
        strategy=strategy,
        incoming_priority=incoming_priority,
        now_s=now_s,
        min_residency_s=min_residency_s,
    )
    for slot in candidates:
        victims.append(slot.model)
        freed += slot.memory_bytes
        if freed >= needed_bytes:
            return EvictionPlan(tuple(victims))
    # Would it fit once every evictable-in-principle model (not pinned, not higher priority) is idle?
    movable = [
        s
        for s in view.models.values()
        if not s.pinned and (strategy == "lru" or s.priority <= incoming_priority) and s.status != "unloading"
    ]
    eventual = view.free_bytes + sum(s.memory_bytes for s in movable if s.status in ("loaded", "loading"))
    busy = sorted(s.model for s in movable if s not in candidates)
    if eventual >= needed_bytes and busy:
        return EvictionPlan(None, retriable=True, reason=f"waiting for busy or just-loaded models {busy}")
    pinned = sorted(s.model for s in view.models.values() if s.pinned)
    higher = sorted(s.model for s in view.models.values() if s not in movable and not s.pinned)
    parts = [f"needs {needed_bytes} bytes, {view.free_bytes} free"]
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
