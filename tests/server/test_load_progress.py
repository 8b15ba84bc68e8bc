"""A neuron's /health shows a load in progress with its fraction done: over the scripted loader held
halfway, and over real cortex Engines loading a real checkpoint through a throttled reader."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import httpx
import pytest
from server_fakes import make_neuron

from cortex.engine.checkpoint import make_model
from cortex.engine.progress import ProgressCallback, ProgressSnapshot
from cortex.engine.safetensors_file import read_header
from cortex.engine.text.tokenizer import Tokenizer
from cortex.server.config import NeuronConfig
from cortex.server.engine_loader import TorchEngineLoader
from cortex.server.neuron import create_app
from cortex.server.served_engine import LoadPlan, ModelFacts, ServedEngine


async def _health_model(client: httpx.AsyncClient, model: str) -> dict | None:
    models = (await client.get("/health")).json()["models"]
    return next((m for m in models if m["id"] == model), None)


async def _wait_for_progress(client: httpx.AsyncClient, model: str, *, timeout_s: float = 30.0) -> dict:
    async with asyncio.timeout(timeout_s):
        while True:
            entry = await _health_model(client, model)
            progress = (entry or {}).get("load_progress") or {}
            if entry is not None and entry["status"] == "loading" and progress.get("fraction", 0) >= 0.5:
                return entry
            await asyncio.sleep(0.02)


async def test_health_shows_a_load_in_progress(models_root: Path) -> None:
    app, loader = make_neuron(models_root)
    loader.load_gate = threading.Event()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://n") as client:
        load = asyncio.create_task(client.post("/models/load", json={"model": "alpha"}))
        entry = await _wait_for_progress(client, "alpha")
        progress = entry["load_progress"]
        assert progress["fraction"] == 0.5
        assert (progress["bytes_done"], progress["bytes_total"]) == (2000, 4000)
        assert (progress["tensors_done"], progress["tensors_total"]) == (2, 4)
        assert set(progress) == {
            "fraction",
            "bytes_done",
            "bytes_total",
            "tensors_done",
            "tensors_total",
            "bytes_per_s",
            "elapsed_s",
            "eta_s",
        }
        models = (await client.get("/models")).json()["models"]
        assert models[0]["load_progress"] == progress
        loader.load_gate.set()
        assert (await load).status_code == 200
        entry = await _health_model(client, "alpha")
        assert entry is not None
        assert entry["status"] == "loaded"
        assert "load_progress" not in entry


class ThrottledLoader:
    """Real cortex Engines, whose weight reading stops at the first tensor past halfway until released."""

    def __init__(self) -> None:
        self.inner = TorchEngineLoader(
            device="cpu", dtype="float32", max_num_seqs=2, cache_memory_bytes=2**24
        )
        self.release = threading.Event()
        self.seen: list[ProgressSnapshot] = []

    def inspect(self, path: Path) -> ModelFacts:
        return self.inner.inspect(path)

    def tokenizer(self, path: Path) -> Tokenizer | None:
        return self.inner.tokenizer(path)

    def load(self, path: Path, plan: LoadPlan, progress: ProgressCallback) -> ServedEngine:
        def throttled(snapshot: ProgressSnapshot) -> None:
            self.seen.append(snapshot)
            progress(snapshot)
            if 0.5 <= snapshot.fraction < 1.0:
                self.release.wait(timeout=30)

        return self.inner.load(path, plan, throttled)


@pytest.mark.slow
async def test_health_shows_a_real_load_moving(tmp_path: Path) -> None:
    folder = make_model(tmp_path / "models" / "tiny", arch="qwen3_5", preset="tiny", progress=lambda _: None)
    header = read_header(folder / "model.safetensors")
    loader = ThrottledLoader()
    config = NeuronConfig(model_dirs=(tmp_path / "models",), device="cpu", memory_budget_bytes=2**34)
    app = create_app(config, loader=loader)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://n") as client:
        load = asyncio.create_task(client.post("/models/load", json={"model": "tiny"}))
        try:
            entry = await _wait_for_progress(client, "tiny")
        finally:
            loader.release.set()
        progress = entry["load_progress"]
        assert 0.5 <= progress["fraction"] < 1.0
        assert progress["bytes_total"] == sum(e.num_bytes for e in header.values())
        assert progress["tensors_total"] == len(header)
        assert 0 < progress["tensors_done"] < len(header)
        assert progress["eta_s"] is not None
        assert (await load).status_code == 200
        assert (await _health_model(client, "tiny") or {})["status"] == "loaded"
        await app.state.neuron.store.unload("tiny")
    fractions = [s.fraction for s in loader.seen]
    assert fractions == sorted(fractions)
    assert fractions[-1] == 1.0
