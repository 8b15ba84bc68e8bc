"""TorchEngineLoader: the neuron's [neuron] prefix-caching and state-dtype keys reach the engine it loads."""

from __future__ import annotations

from pathlib import Path

from cortex.engine.engine import Engine
from cortex.server.config import NeuronConfig
from cortex.server.engine_loader import TorchEngineLoader
from cortex.server.neuron_state import NeuronState
from cortex.server.served_engine import LoadPlan


def _loader(config: NeuronConfig) -> TorchEngineLoader:
    loader = NeuronState.create(config).store.loader
    assert isinstance(loader, TorchEngineLoader)
    return loader


def test_prefix_caching_keys_reach_the_engine(tiny_qwen_root: Path) -> None:
    budget = 64 * 2**20
    config = NeuronConfig(
        model_dirs=(tiny_qwen_root,),
        device="cpu",
        cache_memory_bytes=budget,
        snapshot_interval_blocks=8,
        snapshot_memory_fraction=0.5,
    )
    engine = _loader(config).load(tiny_qwen_root / "tiny", LoadPlan(("cpu",)), progress=lambda snapshot: None)
    assert isinstance(engine, Engine)
    with engine:
        assert engine.config.enable_prefix_caching
        assert (engine.config.snapshot_interval_blocks, engine.config.snapshot_memory_fraction) == (8, 0.5)
        assert engine.cache_plan.snapshot_bytes >= budget // 2 - engine.cache_plan.bytes_per_slot
    off = _loader(NeuronConfig(model_dirs=(tiny_qwen_root,), device="cpu", enable_prefix_caching=False))
    assert off.enable_prefix_caching is False


def test_ssm_state_dtype_reaches_the_engine(tiny_qwen_root: Path) -> None:
    config = NeuronConfig(model_dirs=(tiny_qwen_root,), device="cpu", ssm_state_dtype="bfloat16")
    engine = _loader(config).load(tiny_qwen_root / "tiny", LoadPlan(("cpu",)), progress=lambda snapshot: None)
    assert isinstance(engine, Engine)
    with engine:
        assert engine.config.ssm_state_dtype == "bfloat16"
    assert _loader(NeuronConfig(model_dirs=(tiny_qwen_root,), device="cpu")).ssm_state_dtype == "float32"
