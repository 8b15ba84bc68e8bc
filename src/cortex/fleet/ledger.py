"""The fleet's own bookkeeping, and the ``NeuronView`` snapshots built from it plus polled state.

Owns: requests this fleet has in flight per (neuron, model), when each model was last used and when
this fleet loaded it, which models are being unloaded, sticky affinity keys, and the mapping between
canonical model ids and the ids neurons know them by. Keys are (neuron name, canonical model id).
A neuron's load is estimated as (its polled load minus our requests counted at that poll) plus our
requests now, so it is current between polls.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Mapping, Sequence

from cortex.fleet.poller import LocalLoad, NeuronState
from cortex.fleet.profiles import ModelProfile
from cortex.fleet.snapshot import LoadNeed, ModelSlot, ModelStatus, NeuronView

__all__ = ["Ledger"]

_MAX_AFFINITY_KEYS = 10_000
_STATUSES: dict[str, ModelStatus] = {s: s for s in ("loading", "loaded", "unloading", "failed")}


class Ledger:
    def __init__(self, profiles: Sequence[ModelProfile], states: Mapping[str, NeuronState]) -> None:
        self.states = states
        self._by_id = {p.id: p for p in profiles}
        self._by_upstream = {p.upstream_id: p.id for p in profiles}
        self.in_flight: Counter[tuple[str, str]] = Counter()
        self.last_used: dict[tuple[str, str], float] = {}
        self.loaded_at: dict[tuple[str, str], float] = {}
        self.unloading: set[tuple[str, str]] = set()
        self._affinity: OrderedDict[tuple[str, str], str] = OrderedDict()

    def profile(self, model: str) -> ModelProfile | None:
        return self._by_id.get(model)

    def canonical(self, upstream: str) -> str:
        return self._by_upstream.get(upstream, upstream)

    def upstream(self, model: str) -> str:
        profile = self._by_id.get(model)
        return profile.upstream_id if profile else model

    def memory_need(self, model: str, state: NeuronState) -> int:
        """Bytes ``model`` needs on ``state``'s neuron (over all the devices it spans there)."""
        return self.load_need(model, state).memory_bytes

    def load_need(self, model: str, state: NeuronState) -> LoadNeed:
        """What loading ``model`` on ``state``'s neuron takes. The split is the neuron's own for it
        (``/discovery``'s ``tensor_parallel``), raised to the profile's ``min_devices``; the memory is the
        profile's figure, else the neuron's per-device estimate at that split times the split, else its
        ``estimated_memory_bytes`` (neurons that report no splits), else 0."""
        profile = self._by_id.get(model)
        entry = state.loadable.get(self.upstream(model), {})
        own = entry.get("tensor_parallel")
        own = own if isinstance(own, int) and own >= 1 else 1
        wanted = profile.min_devices if profile is not None and profile.min_devices else None
        split = max(wanted or 1, own)
        gpus = state.gpus
        problem = None
        if wanted is not None and len(gpus) < split:
            problem = f"it is split over {split} GPUs (min_devices={wanted}); this neuron has {len(gpus)}"
        per_device = entry.get("memory_per_device_bytes", {}).get(str(split))
        estimate = entry.get("estimated_memory_bytes")
        if profile is not None and profile.memory_bytes is not None:
            memory = profile.memory_bytes
        elif isinstance(per_device, int):
            memory = per_device * split
        elif split == own and isinstance(estimate, int):
            memory = estimate
        else:
            memory = 0
            problem = (
                problem or f"its shapes do not split over {split} devices there (no estimate in /discovery)"
            )
        return LoadNeed(memory, devices=split if gpus else 1, tensor_parallel=split, problem=problem)

    def where(self, model: str, statuses: Sequence[str]) -> list[str]:
        """Healthy neurons reporting ``model`` in one of ``statuses``."""
        upstream = self.upstream(model)
        return sorted(
            name
            for name, state in self.states.items()
            if state.healthy and state.models.get(upstream, {}).get("status") in statuses
        )

    def sticky(self, model: str, *affinity_keys: str | None) -> str | None:
        """The neuron the first of ``affinity_keys`` that has been routed before last went to."""
        for key in affinity_keys:
            neuron = self._affinity.get((model, key)) if key is not None else None
            if neuron is not None:
                return neuron
        return None

    def claim(self, neuron: str, model: str, *affinity_keys: str | None) -> None:
        self.in_flight[(neuron, model)] += 1
        self.last_used[(neuron, model)] = time.monotonic()
        for key in affinity_keys:
            if key is not None:
                self._affinity[(model, key)] = neuron
                self._affinity.move_to_end((model, key))
        while len(self._affinity) > _MAX_AFFINITY_KEYS:
            self._affinity.popitem(last=False)

    def release(self, neuron: str, model: str) -> None:
        key = (neuron, model)
        self.in_flight[key] -= 1
        if self.in_flight[key] <= 0:
            del self.in_flight[key]
        if self.upstream(model) in self.states[neuron].models:
            self.last_used[key] = time.monotonic()  # idle TTLs count from the end of the last request

    def mark_loaded(self, neuron: str, model: str) -> None:
        now = time.monotonic()
        self.loaded_at[(neuron, model)] = now
        self.last_used[(neuron, model)] = now

    def forget(self, neuron: str, model: str) -> None:
        self.loaded_at.pop((neuron, model), None)
        self.last_used.pop((neuron, model), None)

    def local_load(self, neuron: str) -> LocalLoad:
        by_model = {self.upstream(m): n for (name, m), n in self.in_flight.items() if name == neuron}
        return sum(by_model.values()), by_model

    def prune(self) -> None:
        """Forget use times of models no neuron reports any more."""
        present = {(name, self.canonical(u)) for name, state in self.states.items() for u in state.models}
        for table in (self.last_used, self.loaded_at):
            for key in [k for k in table if k not in present and k not in self.in_flight]:
                del table[key]

    def views(self, now: float) -> list[NeuronView]:
        """One snapshot per neuron. Models first seen loaded by someone else count as used ``now``."""
        return [self._view(name, state, now) for name, state in self.states.items()]

    def _view(self, name: str, state: NeuronState, now: float) -> NeuronView:
        local_total, local_by_model = self.local_load(name)
        polled_total, polled_by_model = state.local_at_poll
        models: dict[str, ModelSlot] = {}
        for upstream, entry in state.models.items():
            model = self.canonical(upstream)
            key = (name, model)
            status = _STATUSES.get("unloading" if key in self.unloading else str(entry.get("status")))
            if status is None:
                continue
            others = (
                int(entry.get("in_flight", 0))
                + int(entry.get("queued", 0))
                - polled_by_model.get(upstream, 0)
            )
            profile = self._by_id.get(model)
            spans = entry.get("devices")
            share = entry.get("memory_per_device_bytes")
            models[model] = ModelSlot(
                model=model,
                status=status,
                load=max(0, others) + local_by_model.get(upstream, 0),
                memory_bytes=self.memory_need(model, state),
                priority=profile.priority if profile else 0,
                pinned=profile.pinned if profile else False,
                last_used_s=self.last_used.setdefault(key, now),
                loaded_at_s=self.loaded_at.get(key, 0.0),
                devices=tuple(map(str, spans)) if isinstance(spans, list) else (),
                device_bytes=share if isinstance(share, int) else 0,
            )
        for upstream, reserved in state.reserved_bytes.items():
            model = self.canonical(upstream)
            models.setdefault(
                model, ModelSlot(model, "loading", memory_bytes=reserved, last_used_s=now, loaded_at_s=now)
            )
        return NeuronView(
            name=name,
            healthy=state.healthy,
            slow=state.slow,
            load=max(0, state.in_flight + state.queued - polled_total) + local_total,
            free_bytes=state.free_bytes,
            models=models,
            loadable={m: self.load_need(m, state) for m in map(self.canonical, state.loadable)},
            devices=state.device_rooms(),
        )
