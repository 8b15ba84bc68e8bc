"""Where to cold-load a model: pure ranking of the neurons that could hold it.

A neuron is eligible when it is healthy, not excluded by the caller, allowed by the model's profile,
lists the model in its ``/discovery``, can load it as the profile asks (``min_devices``: that many
GPUs, at a split the model's shapes allow there) and has room for it, after evictions, in its memory
and on enough of its GPUs (``eviction.fits``). Eligible neurons rank by: fits without eviction first,
then preferred neurons, then fewest evictions, then most free memory, then name (deterministic).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from cortex.fleet.eviction import plan_eviction
from cortex.fleet.profiles import FleetPolicy, ModelProfile
from cortex.fleet.snapshot import NeuronView

__all__ = ["Placement", "PlacementResult", "place"]


@dataclass(frozen=True)
class Placement:
    neuron: str
    evict: tuple[str, ...]
    free_bytes: int
    preferred: bool


@dataclass(frozen=True)
class PlacementResult:
    """The chosen placement (or ``None``), whether waiting could help, and a note per neuron."""

    placement: Placement | None
    retriable: bool
    notes: tuple[tuple[str, str], ...]


def place(
    model: str,
    views: Sequence[NeuronView],
    *,
    profile: ModelProfile | None,
    policy: FleetPolicy,
    now_s: float,
    exclude: Collection[str] = (),
) -> PlacementResult:
    options: list[Placement] = []
    notes: list[tuple[str, str]] = []
    retriable = False
    for view in views:
        if view.name in exclude:
            notes.append((view.name, "excluded after a failure in this request"))
        elif not view.healthy:
            notes.append((view.name, "unhealthy"))
        elif profile is not None and not profile.allows(view.name):
            notes.append((view.name, "not in the profile's allowed_neurons"))
        elif model not in view.loadable:
            notes.append((view.name, "cannot load it (not in its /discovery)"))
        elif view.loadable[model].problem is not None:
            notes.append((view.name, f"cannot load it: {view.loadable[model].problem}"))
        else:
            need = view.loadable[model]
            needed = profile.memory_bytes if profile and profile.memory_bytes else need.memory_bytes
            plan = plan_eviction(
                view,
                needed,
                num_devices=need.devices,
                strategy=policy.eviction,
                incoming_priority=profile.priority if profile else 0,
                now_s=now_s,
                min_residency_s=policy.min_residency_s,
            )
            if plan.victims is None:
                retriable = retriable or plan.retriable
                notes.append((view.name, f"does not fit: {plan.reason}"))
                continue
            preferred = profile is not None and view.name in profile.preferred_neurons
            options.append(Placement(view.name, plan.victims, view.free_bytes, preferred))
            how = f"fits after evicting {list(plan.victims)}" if plan.victims else "fits"
            over = f" over {need.devices} GPUs" if need.devices > 1 else ""
            notes.append((view.name, f"{how} (needs {needed} bytes{over}, {view.free_bytes} free)"))
    if not options:
        return PlacementResult(None, retriable, tuple(notes))
    best = min(options, key=lambda p: (bool(p.evict), not p.preferred, len(p.evict), -p.free_bytes, p.neuron))
    return PlacementResult(best, False, tuple(notes))
