"""The neuron's models: what it can load (discovery), what is loaded, and load / unload.

A model id is the NAME of a folder directly under one of the configured model folders (or an id the
operator listed in ``[[neuron.catalogue]]``). Ids are validated before any path is built: no
separators, no ``..``, nothing absolute, and the resolved folder (symlinks followed) must still lie
inside its root, so a request can never make the neuron read an arbitrary path.

Loads are single-flight per model: concurrent ``load`` calls share one task, whose progress (bytes
and tensors read, rate, time left) is kept for ``/health`` and logged. A load that would push
the estimated memory of loaded models past the budget is refused (507); the neuron never evicts on
its own (the fleet decides). Unload refuses (409) while requests run unless forced.

Devices: a model is loaded over ``tensor_parallel`` devices (the request's, else its catalogue entry's,
else ``[neuron] tensor_parallel``), chosen by ``device_plan.py``; a split its shapes do not allow is a
400 naming the dimension. A loaded model whose engine has failed (a tensor-parallel rank died or
stopped answering) is reported ``failed`` with the reason and its engine closed, the first time the
store is looked at after it; loading it again brings it back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cortex.engine.progress import ProgressReporter, ProgressSnapshot
from cortex.errors import InvalidRequestError
from cortex.server.admission import Admission
from cortex.server.config import CatalogueEntry, NeuronConfig
from cortex.server.device_plan import Device, max_tensor_parallel, plan_devices
from cortex.server.errors import (
    InsufficientMemoryError,
    ModelBusyError,
    ModelLoadFailedError,
    ModelNotFoundError,
)
from cortex.server.served_engine import EngineLoader, LoadPlan, ModelFacts, ServedEngine

log = logging.getLogger("cortex.server")
ModelStatus = Literal["loading", "loaded", "unloading", "failed"]
_MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")


@dataclass(frozen=True, slots=True)
class LocalModel:
    id: str
    path: Path
    facts: ModelFacts
    tensor_parallel: int = 1  # the split it loads with unless a load asks for another
    devices: tuple[int, ...] | None = None  # GPU indices its catalogue entry pins it to

    @property
    def estimated_memory_bytes(self) -> int:
        """The need over all its devices at its own split (its one-device need if it cannot split so)."""
        per_device = self.facts.memory_per_device(self.tensor_parallel)
        if per_device is None:
            return self.facts.estimated_memory_bytes
        return per_device * self.tensor_parallel

    def describe(self) -> dict[str, Any]:
        splits = {1: self.facts.estimated_memory_bytes, **self.facts.split_memory_bytes}
        return {
            "id": self.id,
            "path": str(self.path),
            "architecture": self.facts.architecture,
            "estimated_memory_bytes": self.estimated_memory_bytes,
            "max_model_len": self.facts.max_model_len,
            "tensor_parallel": self.tensor_parallel,
            # what each device needs at each split this neuron could load it with
            "memory_per_device_bytes": {str(size): need for size, need in sorted(splits.items())},
            **({"devices": list(self.devices)} if self.devices is not None else {}),
        }


@dataclass(slots=True)
class HostedModel:
    """A model this neuron holds (or is loading), with its own admission control."""

    model: LocalModel
    admission: Admission
    plan: LoadPlan
    memory_per_device_bytes: int
    status: ModelStatus = "loading"
    engine: ServedEngine | None = None
    error: str | None = None
    loaded_at: float = 0.0
    load_progress: ProgressSnapshot | None = None  # the latest, while loading (set by the loading thread)

    @property
    def memory_bytes(self) -> int:
        return self.memory_per_device_bytes * self.plan.tensor_parallel

    @property
    def id(self) -> str:
        return self.model.id

    def served(self) -> ServedEngine:
        """The engine, for a request that was admitted; raises ModelNotFoundError (404) once unloaded."""
        if self.engine is None:
            raise ModelNotFoundError(f"model {self.id!r} was unloaded")
        return self.engine

    def describe(self) -> dict[str, Any]:
        stats = engine_stats(self)
        entry: dict[str, Any] = {
            "id": self.id,
            "status": self.status,
            "in_flight": self.admission.num_running,
            "queued": self.admission.num_queued,
            "kv_cache_usage": stats.get("kv_cache_usage", 0.0),
            "estimated_memory_bytes": self.memory_bytes,
            "tensor_parallel": self.plan.tensor_parallel,
            "devices": list(self.plan.devices),
            "memory_per_device_bytes": self.memory_per_device_bytes,
            "max_model_len": self.model.facts.max_model_len,
            "prefill_tokens_per_s": stats.get("prefill_tokens_per_s", 0.0),
            "decode_tokens_per_s": stats.get("decode_tokens_per_s", 0.0),
        }
        if "prefix_cache_hit_rate" in stats:
            entry["prefix_cache"] = {
                "hit_rate": stats["prefix_cache_hit_rate"],
                "snapshots_used": int(stats["prefix_cache_snapshots_used"]),
                "snapshots_total": int(stats["prefix_cache_snapshots_total"]),
            }
        if self.status == "loading" and self.load_progress is not None:
            entry["load_progress"] = self.load_progress.as_dict()
        if self.error:
            entry["error"] = self.error
        return entry


def engine_stats(hosted: HostedModel) -> dict[str, float]:
    """The subset of a loaded model's ``engine.stats()`` (an ``EngineStats``) the neuron reports; empty
    while it is not loaded. The ``prefix_cache_*`` keys are there when the engine caches prefixes."""
    if hosted.engine is None or hosted.status != "loaded":
        return {}
    stats = hosted.engine.stats()
    out = {
        "kv_cache_usage": stats.kv_cache_usage,
        "prefill_tokens_per_s": stats.prefill_tokens_per_s,
        "decode_tokens_per_s": stats.decode_tokens_per_s,
    }
    cache = stats.prefix_cache
    if cache is not None:
        out.update(
            prefix_cache_hit_rate=cache.hit_rate,
            prefix_cache_query_tokens=float(cache.num_query_tokens),
            prefix_cache_hit_tokens=float(cache.num_hit_tokens),
            prefix_cache_snapshot_miss_tokens=float(cache.num_snapshot_miss_tokens),
            prefix_cache_snapshots_used=float(cache.num_snapshots_used),
            prefix_cache_snapshots_total=float(cache.num_snapshots_total),
            prefix_cache_snapshot_bytes=float(cache.snapshot_bytes_used),
        )
    return out


def validate_model_id(model_id: Any) -> str:
    """Return ``model_id`` if it can name a folder under a root; else raise ModelNotFoundError (404)."""
    if not isinstance(model_id, str) or not _MODEL_ID.fullmatch(model_id) or ".." in model_id:
        raise ModelNotFoundError(f"model {model_id!r} does not exist: a model id is a folder name")
    return model_id


class ModelStore:
    def __init__(
        self,
        config: NeuronConfig,
        loader: EngineLoader,
        *,
        memory_budget_bytes: int,
        devices: Sequence[Device] = (Device(0, "cpu", 0),),
        on_loaded: Callable[[str, float], None] | None = None,
    ) -> None:
        self.config = config
        self.loader = loader
        self.memory_budget_bytes = memory_budget_bytes
        self.devices = tuple(devices)  # the GPUs models go on, or the host's one "cpu"
        self.max_tensor_parallel = max_tensor_parallel(config, self.devices)
        self._on_loaded = on_loaded
        self._hosted: dict[str, HostedModel] = {}
        self._loads: dict[str, asyncio.Task[HostedModel]] = {}
        self._facts: dict[tuple[Path, float], ModelFacts] = {}

    # discovery

    def _inspect(self, path: Path) -> ModelFacts | None:
        config_file = path / "config.json"
        try:
            key = (path, config_file.stat().st_mtime)
        except OSError:
            return None
        if key not in self._facts:
            try:
                self._facts[key] = self.loader.inspect(path)
            except Exception:  # an unreadable folder is not loadable; /discovery must still answer
                return None
        return self._facts[key]

    def _under_root(self, root: Path, name: str) -> Path | None:
        root = root.resolve()
        candidate = (root / name).resolve()
        if candidate.parent != root or not candidate.is_dir():
            return None
        return candidate

    def _catalogued(self, entry: CatalogueEntry, facts: ModelFacts) -> LocalModel:
        pinned = len(entry.devices) if entry.devices is not None else None
        tensor_parallel = entry.tensor_parallel or pinned or self.config.tensor_parallel
        return LocalModel(entry.id, entry.path.expanduser(), facts, tensor_parallel, entry.devices)

    def _folder(self, model_id: str, path: Path, facts: ModelFacts) -> LocalModel:
        # [neuron] tensor_parallel is a default: a model whose shapes do not split so loads whole
        split = self.config.tensor_parallel
        return LocalModel(model_id, path, facts, split if facts.memory_per_device(split) is not None else 1)

    def discover(self) -> list[LocalModel]:
        """Every model this neuron can load: catalogue entries first, then folders under the roots."""
        found: dict[str, LocalModel] = {}
        for entry in self.config.catalogue:
            facts = self._inspect(entry.path.expanduser())
            if facts is not None:
                found.setdefault(entry.id, self._catalogued(entry, facts))
        for root in self.config.model_dirs:
            if not root.is_dir():
                continue
            for child in sorted(root.iterdir()):
                if child.name in found or not _MODEL_ID.fullmatch(child.name):
                    continue
                path = self._under_root(root, child.name)
                facts = self._inspect(path) if path else None
                if path and facts:
                    found[child.name] = self._folder(child.name, path, facts)
        return list(found.values())

    def find(self, model_id: Any) -> LocalModel:
        """The loadable model ``model_id``; raises ModelNotFoundError for anything else."""
        validate_model_id(model_id)
        for entry in self.config.catalogue:
            if entry.id == model_id:
                facts = self._inspect(entry.path.expanduser())
                if facts is not None:
                    return self._catalogued(entry, facts)
        for root in self.config.model_dirs:
            path = self._under_root(root, model_id)
            facts = self._inspect(path) if path else None
            if path and facts:
                return self._folder(model_id, path, facts)
        raise ModelNotFoundError(f"model {model_id!r} does not exist on this neuron")

    # residency

    def hosted(self) -> list[HostedModel]:
        self._reap_failures()
        return list(self._hosted.values())

    def get(self, model_id: str) -> HostedModel | None:
        self._reap_failures()
        hosted = self._hosted.get(model_id)
        return hosted if hosted is not None and hosted.status == "loaded" else None

    def _reap_failures(self) -> None:
        """Mark models whose engine failed (its ranks are gone) ``failed`` and close the engine."""
        for hosted in self._hosted.values():
            engine = hosted.engine
            if hosted.status == "loaded" and engine is not None and engine.failure is not None:
                hosted.status, hosted.error = "failed", f"{type(engine.failure).__name__}: {engine.failure}"
                log.error("model %r failed and must be loaded again: %s", hosted.id, hosted.error)
                hosted.engine = None
                hosted.admission.drain()
                engine.close()  # its ranks were already stopped: this only joins its threads

    @property
    def memory_used_bytes(self) -> int:
        return sum(h.memory_bytes for h in self._hosted.values() if h.status != "failed")

    def device_use(self) -> dict[str, tuple[int, list[str]]]:
        """Per device: (bytes the estimates of the models on it add up to, those models' ids)."""
        use: dict[str, tuple[int, list[str]]] = {device.device: (0, []) for device in self.devices}
        for hosted in self._hosted.values():
            if hosted.status == "failed":
                continue
            for device in dict.fromkeys(hosted.plan.devices):  # a CPU split lists "cpu" once per rank
                used, ids = use.setdefault(device, (0, []))
                share = hosted.memory_per_device_bytes * hosted.plan.devices.count(device)
                use[device] = (used + share, [*ids, hosted.id])
        return use

    def _plan(
        self, model: LocalModel, tensor_parallel: int | None, devices: Sequence[int] | None
    ) -> tuple[LoadPlan, int]:
        """The devices ``model`` loads on and what each needs; raises 400 / 507 naming the problem."""
        size = tensor_parallel or model.tensor_parallel
        if size > self.max_tensor_parallel:
            raise InvalidRequestError(
                f"this neuron splits a model over at most {self.max_tensor_parallel} device(s) (its GPUs, "
                f"or [neuron] tensor_parallel on a CPU neuron); model {model.id!r} asked for {size}",
                param="tensor_parallel",
            )
        per_device = model.facts.memory_per_device(size)
        if per_device is None:
            reason = model.facts.split_errors.get(size, f"no estimate for a split over {size} devices")
            raise InvalidRequestError(f"model {model.id!r}: {reason}", param="tensor_parallel")
        need = per_device * size
        if self.memory_used_bytes + need > self.memory_budget_bytes:
            raise InsufficientMemoryError(
                f"model {model.id!r} needs about {need} bytes over {size} device(s); "
                f"{self.memory_used_bytes} of the {self.memory_budget_bytes}-byte budget are in use: "
                "unload a model first"
            )
        reserved = {device: used for device, (used, _) in self.device_use().items()}
        chosen = plan_devices(
            model.id,
            size=size,
            per_device_bytes=per_device,
            devices=self.devices,
            reserved=reserved,
            indices=devices if devices is not None else model.devices,
        )
        return LoadPlan(chosen), per_device

    async def ensure(self, model_id: str) -> HostedModel:
        """The loaded model, loading it first when ``auto_load`` is on."""
        hosted = self.get(model_id)
        if hosted is not None:
            return hosted
        if not self.config.auto_load:
            self.find(model_id)
            raise ModelNotFoundError(f"model {model_id!r} is not loaded; POST /models/load first")
        return await self.load(model_id)

    async def load(
        self, model_id: str, *, tensor_parallel: int | None = None, devices: Sequence[int] | None = None
    ) -> HostedModel:
        """Load ``model_id`` (single-flight) and return it once loaded. ``tensor_parallel`` and
        ``devices`` apply to a load this call starts; a loaded (or loading) model is returned as it is."""
        hosted = self.get(model_id)
        if hosted is not None:
            return hosted
        task = self._loads.get(model_id)
        if task is None:
            model = self.find(model_id)
            plan, per_device = self._plan(model, tensor_parallel, devices)
            task = asyncio.ensure_future(self._load(model, plan, per_device))
            self._loads[model_id] = task
            task.add_done_callback(lambda _: self._loads.pop(model_id, None))
        return await asyncio.shield(task)

    async def _load(self, model: LocalModel, plan: LoadPlan, per_device: int) -> HostedModel:
        config = self.config
        admission = Admission(
            max_running=config.max_running,
            max_queue=config.max_queue,
            queue_timeout_s=config.queue_timeout_s,
            retry_after_s=config.retry_after_s,
        )
        hosted = HostedModel(model=model, admission=admission, plan=plan, memory_per_device_bytes=per_device)
        self._hosted[model.id] = hosted
        started = time.monotonic()
        report = ProgressReporter()

        def progress(snapshot: ProgressSnapshot) -> None:
            hosted.load_progress = snapshot
            report(snapshot)

        try:
            hosted.engine = await asyncio.to_thread(self.loader.load, model.path, plan, progress)
        except Exception as error:
            hosted.status, hosted.error = "failed", f"{type(error).__name__}: {error}"
            raise ModelLoadFailedError(f"loading model {model.id!r} failed: {hosted.error}") from error
        hosted.status, hosted.loaded_at = "loaded", time.monotonic()
        if self._on_loaded is not None:
            self._on_loaded(model.id, hosted.loaded_at - started)
        return hosted

    async def unload(self, model_id: str, *, force: bool = False) -> bool:
        """Unload ``model_id``; False when it was not loaded. Busy models need ``force``."""
        validate_model_id(model_id)
        hosted = self._hosted.get(model_id)
        if hosted is None:
            return False
        if hosted.status == "loading":
            raise ModelBusyError(f"model {model_id!r} is still loading")
        if hosted.admission.busy and not force:
            raise ModelBusyError(
                f"model {model_id!r} has {hosted.admission.num_running} requests in flight and "
                f"{hosted.admission.num_queued} queued; retry later or pass force=true"
            )
        hosted.status = "unloading"
        hosted.admission.drain()
        engine, hosted.engine = hosted.engine, None
        self._hosted.pop(model_id, None)
        if engine is not None:
            await asyncio.to_thread(engine.close)
        return True

    async def drain(self, timeout_s: float) -> None:
        """Stop admitting, let in-flight requests finish within ``timeout_s``, then close every engine."""
        for hosted in self._hosted.values():
            hosted.admission.drain()
        deadline = time.monotonic() + timeout_s
        for hosted in list(self._hosted.values()):
            await hosted.admission.wait_idle(max(0.0, deadline - time.monotonic()))
        for task in list(self._loads.values()):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        for model_id in list(self._hosted):
            hosted = self._hosted.pop(model_id)
            if hosted.engine is not None:
                await asyncio.to_thread(hosted.engine.close)
