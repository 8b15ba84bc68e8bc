"""benchmarks/fleet_sim.py stays runnable, and the real policy beats the naive baseline on it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SIM_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "fleet_sim.py"


def test_policy_beats_naive_baseline_on_a_small_trace() -> None:
    if not SIM_PATH.exists():
        pytest.skip("benchmarks/ is not part of this checkout")
    spec = importlib.util.spec_from_file_location("fleet_sim", SIM_PATH)
    assert spec is not None
    assert spec.loader is not None
    sim = importlib.util.module_from_spec(spec)
    sys.modules["fleet_sim"] = sim
    spec.loader.exec_module(sim)
    trace = sim.make_trace(num_requests=600, num_models=12, rate=20.0, seed=1)
    results = {p: sim.Simulation(trace, 4, 16, p, seed=1).run() for p in ("lru", "priority", "naive")}
    for policy in ("lru", "priority"):
        assert results[policy]["load_calls"] < results["naive"]["load_calls"] / 3
        assert results[policy]["p50_s"] <= results["naive"]["p50_s"]
