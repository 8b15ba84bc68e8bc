"""The neuron's models: what it can load (discovery), what is loaded, and load / unload.

A model id is the NAME of a folder directly under one of the configured model folders (or an id the
operator listed in ``[[neuron.catalogue]]``). Ids are validated before any path is built: no
separators, no ``..``, nothing absolute, and the resolved folder (symlinks followed) must still lie
inside its root, so a request can never make the neuron read an arbitrary path.

Loads are single-flight per model: concurrent ``load`` calls share one task, whose progress (bytes
and tensors read, rate, time left) is kept for ``/health`` and logged. A load that would push
the estimated memory of loaded models past the budget is refused (507); the neuron never evicts on
its own (the fleet decides). Unload refuses (409) while requests run unless forced.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cortex.engine.progress import ProgressReporter, ProgressSnapshot
from cortex.server.admission import Admission
from cortex.server.config import NeuronConfig
from cortex.server.errors import (
    InsufficientMemoryError,
    ModelBusyError,
    ModelLoadFailedError,
    ModelNotFoundError,
)
from cortex.server.served_engine import EngineLoader, ModelFacts, ServedEngine

ModelStatus = Literal["loading", "loaded", "unloading", "failed"]
_MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")


@dataclass(frozen=True, slots=True)
class LocalModel:
    id: str
    path: Path
    facts: ModelFacts

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "path": str(self.path),
            "architecture": self.facts.architecture,
            "estimated_memory_bytes": self.facts.estimated_memory_bytes,
            "max_model_len": self.facts.max_model_len,
        }


@dataclass(slots=True)
class HostedModel:
    """A model this neuron holds (or is loading), with its own admission control."""

    model: LocalModel
    admission: Admission
    status: ModelStatus = "loading"
    engine: ServedEngine | None = None
    error: str | None = None
    loaded_at: float = 0.0
    load_progress: ProgressSnapshot | None = None  # the latest, while loading (set by the loading thread)

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
            "estimated_memory_bytes": self.model.facts.estimated_memory_bytes,
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
        on_loaded: Callable[[str, float], None] | None = None,
    ) -> None:
        self.config = config
        self.loader = loader
        self.memory_budget_bytes = memory_budget_bytes
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

    def discover(self) -> list[LocalModel]:
        """Every model this neuron can load: catalogue entries first, then folders under the roots."""
        found: dict[str, LocalModel] = {}
        for entry in self.config.catalogue:
            facts = self._inspect(entry.path.expanduser())
            if facts is not None:
                found.setdefault(entry.id, LocalModel(entry.id, entry.path.expanduser(), facts))
        for root in self.config.model_dirs:
            if not root.is_dir():
                continue
            for child in sorted(root.iterdir()):
                if child.name in found or not _MODEL_ID.fullmatch(child.name):
                    continue
                path = self._under_root(root, child.name)
                facts = self._inspect(path) if path else None
                if path and facts:
                    found[child.name] = LocalModel(child.name, path, facts)
        return list(found.values())

    def find(self, model_id: Any) -> LocalModel:
        """The loadable model ``model_id``; raises ModelNotFoundError for anything else."""
        validate_model_id(model_id)
        for entry in self.config.catalogue:
            if entry.id == model_id:
                facts = self._inspect(entry.path.expanduser())
                if facts is not None:
                    return LocalModel(model_id, entry.path.expanduser(), facts)
        for root in self.config.model_dirs:
            path = self._under_root(root, model_id)
            facts = self._inspect(path) if path else None
            if path and facts:
                return LocalModel(model_id, path, facts)
        raise ModelNotFoundError(f"model {model_id!r} does not exist on this neuron")

    # residency

    def hosted(self) -> list[HostedModel]:
        return list(self._hosted.values())

    def get(self, model_id: str) -> HostedModel | None:
        hosted = self._hosted.get(model_id)
        return hosted if hosted is not None and hosted.status == "loaded" else None

    @property
    def memory_used_bytes(self) -> int:
        return sum(
            h.model.facts.estimated_memory_bytes for h in self._hosted.values() if h.status != "failed"
        )

    async def ensure(self, model_id: str) -> HostedModel:
        """The loaded model, loading it first when ``auto_load`` is on."""
        hosted = self.get(model_id)
        if hosted is not None:
            return hosted
        if not self.config.auto_load:
            self.find(model_id)
            raise ModelNotFoundError(f"model {model_id!r} is not loaded; POST /models/load first")
        return await self.load(model_id)

    async def load(self, model_id: str) -> HostedModel:
        """Load ``model_id`` (single-flight) and return it once loaded."""
        hosted = self.get(model_id)
        if hosted is not None:
            return hosted
        task = self._loads.get(model_id)
        if task is None:
            model = self.find(model_id)
            need = model.facts.estimated_memory_bytes
            if self.memory_used_bytes + need > self.memory_budget_bytes:
                raise InsufficientMemoryError(
                    f"model {model_id!r} needs about {need} bytes; {self.memory_used_bytes} of the "
                    f"{self.memory_budget_bytes}-byte budget are in use: unload a model first"
                )
            task = asyncio.ensure_future(self._load(model))
            self._loads[model_id] = task
            task.add_done_callback(lambda _: self._loads.pop(model_id, None))
        return await asyncio.shield(task)

    async def _load(self, model: LocalModel) -> HostedModel:
        config = self.config
        admission = Admission(
            max_running=config.max_running,
            max_queue=config.max_queue,
            queue_timeout_s=config.queue_timeout_s,
            retry_after_s=config.retry_after_s,
        )
        hosted = HostedModel(model=model, admission=admission)
        self._hosted[model.id] = hosted
        started = time.monotonic()
        report = ProgressReporter()

        def progress(snapshot: ProgressSnapshot) -> None:
            hosted.load_progress = snapshot
            report(snapshot)

        try:
            hosted.engine = await asyncio.to_thread(self.loader.load, model.path, progress)
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
