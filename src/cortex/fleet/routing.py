"""Where the next request for a model goes: pure functions over ``NeuronView`` snapshots.

Order of preference: a healthy neuron where the model is loaded (least loaded first; an affinity
key's neuron while its load is within ``affinity_max_imbalance`` of the least loaded); else a neuron
where it is already loading (join that load); else a cold load chosen by ``placement.place``; else
wait for capacity (busy models will drain) or give up with a reason. A slow neuron (its last health
check timed out) serves or is joined only when no responsive one can.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from cortex.fleet.placement import place
from cortex.fleet.profiles import FleetPolicy, ModelProfile
from cortex.fleet.snapshot import NeuronView

__all__ = ["RouteAction", "RouteDecision", "route"]

RouteAction = Literal["serve", "join", "load", "wait", "none"]


@dataclass(frozen=True)
class RouteDecision:
    """``serve``: send to ``neuron``. ``join``: the model is loading on ``neuron``; wait for it there.
    ``load``: evict ``evict`` then load on ``neuron``. ``wait``: capacity will free up. ``none``: no
    neuron can take the model (``reason`` says why). ``notes`` holds one verdict per neuron."""

    model: str
    action: RouteAction
    neuron: str | None
    reason: str
    evict: tuple[str, ...] = ()
    notes: tuple[tuple[str, str], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "action": self.action,
            "neuron": self.neuron,
            "evict": list(self.evict),
            "reason": self.reason,
            "candidates": [{"neuron": n, "note": note} for n, note in self.notes],
        }


def route(
    model: str,
    views: Sequence[NeuronView],
    *,
    profile: ModelProfile | None,
    policy: FleetPolicy,
    now_s: float,
    affinity_neuron: str | None = None,
    exclude: Collection[str] = (),
) -> RouteDecision:
    usable = [v for v in views if v.healthy and v.name not in exclude]
    loaded = _responsive_first([v for v in usable if v.status_of(model) == "loaded"])
    if loaded:
        notes = tuple((v.name, f"loaded, load {v.load}") for v in loaded)
        least = min(loaded, key=lambda v: (v.load, v.name))
        sticky = next((v for v in loaded if v.name == affinity_neuron), None)
        if sticky is not None and sticky.load <= least.load + policy.affinity_max_imbalance:
            reason = f"affinity: sticky neuron load {sticky.load}, least loaded {least.load}"
            return RouteDecision(model, "serve", sticky.name, reason, notes=notes)
        moved = f" (affinity neuron {affinity_neuron} too loaded or gone)" if affinity_neuron else ""
        reason = f"least loaded of {len(loaded)} neuron(s) with the model loaded: load {least.load}{moved}"
        return RouteDecision(model, "serve", least.name, reason, notes=notes)
    loading = _responsive_first([v for v in usable if v.status_of(model) == "loading"])
    if loading:
        target = min(loading, key=lambda v: (v.load, v.name))
        return RouteDecision(model, "join", target.name, "the model is loading there")
    result = place(model, views, profile=profile, policy=policy, now_s=now_s, exclude=exclude)
    if result.placement is not None:
        chosen = result.placement
        why = "preferred neuron, " if chosen.preferred else ""
        evicting = f"evicting {list(chosen.evict)}" if chosen.evict else "without eviction"
        reason = f"cold load: {why}fits {evicting}; {chosen.free_bytes} bytes free"
        return RouteDecision(model, "load", chosen.neuron, reason, chosen.evict, result.notes)
    if result.retriable:
        return RouteDecision(model, "wait", None, "no room now; busy models will drain", notes=result.notes)
    reason = "; ".join(f"{n}: {note}" for n, note in result.notes) or "no neurons configured"
    return RouteDecision(model, "none", None, reason, notes=result.notes)


def _responsive_first(views: list[NeuronView]) -> list[NeuronView]:
    """The neurons that are not slow, or all of them when every one is."""
    return [v for v in views if not v.slow] or views
