"""What a neuron app holds: its config, model store, metrics and device, and what the handlers ask of them.

:meth:`NeuronState.create` builds it from a :class:`~cortex.server.config.NeuronConfig` (real cortex
engines unless a loader is given). :meth:`NeuronState.generation` is how a handler runs an inference
request: the model is loaded if needed (unknown ids raise before they could become metric labels),
counted, then admitted (:meth:`cortex.server.generation.Generation.admitted`).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cortex.errors import InvalidRequestError
from cortex.server.config import NeuronConfig
from cortex.server.device_plan import Device, max_tensor_parallel
from cortex.server.devices import devices_for, resolve_device
from cortex.server.engine_loader import TorchEngineLoader
from cortex.server.generation import Generation
from cortex.server.metrics import FunctionCollector, MetricValues, NeuronMetrics, neuron_gauges
from cortex.server.model_store import ModelStore
from cortex.server.served_engine import EngineLoader

if TYPE_CHECKING:
    from cortex.engine.text.tokenizer import Tokenizer


@dataclass(slots=True)
class NeuronState:
    config: NeuronConfig
    store: ModelStore
    metrics: NeuronMetrics
    device: str
    # the host's devices as /health reports them (cortex.server.devices; a scripted list in tests)
    probe_devices: Callable[[], list[dict[str, Any]]] = list
    tokenizers: dict[Path, Tokenizer | None] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        config: NeuronConfig,
        *,
        loader: EngineLoader | None = None,
        metrics: NeuronMetrics | None = None,
        probe_devices: Callable[[], list[dict[str, Any]]] | None = None,
    ) -> NeuronState:
        device = resolve_device(config.device)
        probe = probe_devices or functools.partial(devices_for, device)
        devices = probe()
        model_devices = [Device(d["index"], d["device"], d["memory_total_bytes"]) for d in devices]
        if loader is None:
            loader = TorchEngineLoader(
                device=device,
                dtype=config.dtype,
                max_num_seqs=config.max_running,
                max_model_len=config.max_model_len,
                cache_memory_bytes=config.cache_memory_bytes,
                enable_prefix_caching=config.enable_prefix_caching,
                snapshot_interval_blocks=config.snapshot_interval_blocks,
                snapshot_memory_fraction=config.snapshot_memory_fraction,
                ssm_state_dtype=config.ssm_state_dtype,
                max_tensor_parallel=max_tensor_parallel(config, model_devices),
                rank_timeout_s=config.rank_timeout_s,
            )
        metrics = metrics or NeuronMetrics()
        budget = config.memory_budget_bytes
        if budget is None:
            budget = sum(d["memory_total_bytes"] for d in devices)

        def on_loaded(model_id: str, seconds: float) -> None:
            metrics.model_loads.labels(model_id, config.name).inc()
            metrics.model_load_duration.labels(model_id, config.name).observe(seconds)

        store = ModelStore(
            config,
            loader,
            memory_budget_bytes=budget,
            devices=model_devices,
            on_loaded=on_loaded,
        )
        state = cls(config=config, store=store, metrics=metrics, device=device, probe_devices=probe)
        metrics.registry.register(FunctionCollector(state.gauges))
        return state

    @property
    def name(self) -> str:
        return self.config.name

    def health(self) -> dict[str, Any]:
        hosted = self.store.hosted()
        described = [h.describe() for h in hosted]
        return {
            "status": "ok",
            "name": self.name,
            "devices": self.devices(),
            "models": described,
            "in_flight": sum(h.admission.num_running for h in hosted),
            "queued": sum(h.admission.num_queued for h in hosted),
            "memory_budget_bytes": self.store.memory_budget_bytes,
            "memory_used_bytes": self.store.memory_used_bytes,
            "prefill_tokens_per_s": sum(m["prefill_tokens_per_s"] for m in described),
            "decode_tokens_per_s": sum(m["decode_tokens_per_s"] for m in described),
        }

    def devices(self) -> list[dict[str, Any]]:
        """The host's devices, each with the models on it and what their estimates reserve there."""
        use = self.store.device_use()
        described = []
        for device in self.probe_devices():
            reserved, models = use.get(device["device"], (0, []))
            described.append({**device, "memory_reserved_bytes": reserved, "models": models})
        return described

    def tokenizer_for(self, model_id: str) -> Tokenizer:
        """The model's tokenizer: the loaded engine's, else read from its folder (cached), never its
        weights (count_tokens never loads a model)."""
        hosted = self.store.get(model_id)
        if hosted is not None and hosted.engine is not None and hosted.engine.tokenizer is not None:
            return hosted.engine.tokenizer
        path = self.store.find(model_id).path
        if path not in self.tokenizers:
            self.tokenizers[path] = self.store.loader.tokenizer(path)
        tokenizer = self.tokenizers[path]
        if tokenizer is None:
            raise InvalidRequestError(
                f"model {model_id!r} has no tokenizer; send token ids to /v1/completions"
            )
        return tokenizer

    def known_label(self, model: Any) -> str:
        """``model`` as a metric label: a loaded model's id, else ``"unknown"`` (labels stay bounded)."""
        return model if isinstance(model, str) and self.store.get(model) is not None else "unknown"

    def record_error(self, model: str, error_type: str) -> None:
        self.metrics.errors.labels(model, self.name, error_type).inc()

    @contextlib.asynccontextmanager
    async def generation(self, model_id: str, endpoint: str) -> AsyncIterator[Generation]:
        hosted = await self.store.ensure(model_id)
        self.metrics.requests.labels(model_id, self.name, endpoint).inc()
        async with Generation.admitted(
            hosted, endpoint=endpoint, neuron=self.name, metrics=self.metrics
        ) as gen:
            yield gen

    def gauges(self) -> dict[str, MetricValues]:
        return neuron_gauges(
            self.name,
            self.store.hosted(),
            self.probe_devices(),
            memory_budget_bytes=self.store.memory_budget_bytes,
            memory_used_bytes=self.store.memory_used_bytes,
        )
