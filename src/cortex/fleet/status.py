"""``Fleet.status()``: the fleet at one instant as typed records, and their JSON form for ``GET /status``.

Built by the fleet from polled neuron state and its own bookkeeping; read by the gateway's health
route, status page and metrics, and served as JSON (``as_dict``) to ``cortex status``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cortex.fleet.catalogue import CatalogueEntry
from cortex.fleet.snapshot import ModelStatus

__all__ = ["FleetStatus", "NeuronModelStatus", "NeuronStatus", "load_fraction"]


@dataclass(frozen=True)
class NeuronModelStatus:
    """One model on one neuron: its status, load (in flight + queued), seconds since last use and,
    while it loads, the fraction of its weights read (from the neuron's ``/health``; None if unknown)."""

    id: str
    status: ModelStatus
    load: int
    idle_s: float
    load_progress: float | None = None


def load_fraction(entry: Mapping[str, Any] | None) -> float | None:
    """The fraction done of a loading model, from its polled ``/health`` entry (``load_progress``)."""
    if entry is None or entry.get("status") != "loading":
        return None
    progress = entry.get("load_progress")
    fraction = progress.get("fraction") if isinstance(progress, Mapping) else None
    if not isinstance(fraction, int | float) or isinstance(fraction, bool):
        return None
    return min(max(float(fraction), 0.0), 1.0)


@dataclass(frozen=True)
class NeuronStatus:
    """One neuron: health, memory, load and models, as last polled plus the fleet's own requests."""

    name: str
    url: str
    healthy: bool
    slow: bool  # its last health check timed out (routed around while another neuron can serve)
    consecutive_failures: int
    last_error: str | None
    seconds_since_ok: float | None
    memory_budget_bytes: int
    memory_used_bytes: int
    memory_free_bytes: int
    load: int
    in_flight: int
    queued: int
    prefill_tokens_per_s: float
    decode_tokens_per_s: float
    devices: tuple[Mapping[str, Any], ...]
    models: tuple[NeuronModelStatus, ...]


@dataclass(frozen=True)
class FleetStatus:
    """The whole fleet: neurons, the merged catalogue, loads, recent routing decisions and counters."""

    neurons: tuple[NeuronStatus, ...]
    models: tuple[CatalogueEntry, ...]
    loads_in_progress: tuple[str, ...]
    load_errors: Mapping[str, str]
    decisions: tuple[Mapping[str, Any], ...]
    counters: Mapping[str, int]
    eviction: str

    @property
    def num_healthy(self) -> int:
        return sum(1 for neuron in self.neurons if neuron.healthy)

    def as_dict(self) -> dict[str, Any]:
        """The JSON body of ``GET /status`` (what ``cortex status`` reads)."""
        return {
            "neurons": [
                {
                    **{f.name: getattr(n, f.name) for f in dataclasses.fields(n) if f.name != "models"},
                    "devices": [dict(d) for d in n.devices],
                    "models": [dataclasses.asdict(m) for m in n.models],
                }
                for n in self.neurons
            ],
            "models": [entry.as_dict() for entry in self.models],
            "loads_in_progress": list(self.loads_in_progress),
            "load_errors": dict(self.load_errors),
            "decisions": [dict(d) for d in self.decisions],
            "counters": dict(self.counters),
            "policy": {"eviction": self.eviction},
        }
