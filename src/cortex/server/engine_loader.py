"""The neuron's real :class:`~cortex.server.model_store.EngineLoader`: ``cortex.Engine`` over a folder.

Inspecting a folder reads only its config.json (through ``ModelConfig.from_hf``); the memory estimate
is the weights in the serving dtype plus the engine's cache budget, on one device, and per device for
each tensor-parallel split up to ``max_tensor_parallel`` (``cortex.engine.parallel.shard_config``: a
rank's shapes, or which dimension does not divide). torch is imported when an engine is first built,
not when this module is imported.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cortex.engine.progress import ProgressCallback
from cortex.server.served_engine import LoadPlan, ModelFacts, ServedEngine

if TYPE_CHECKING:
    from cortex.engine.text.tokenizer import Tokenizer

# KV pages + state slots per model when [neuron] cache_memory_bytes is unset. Always passed to the engine
# explicitly (the engine's own CUDA default takes most free memory), so the estimate matches the use.
DEFAULT_CACHE_BYTES = {"cpu": 2**30, "cuda": 4 * 2**30}


@dataclass(frozen=True, slots=True)
class TorchEngineLoader:
    device: str
    dtype: str
    max_num_seqs: int
    max_model_len: int | None = None
    cache_memory_bytes: int | None = None
    enable_prefix_caching: bool = True
    snapshot_interval_blocks: int = 64
    snapshot_memory_fraction: float = 0.2
    ssm_state_dtype: str = "float32"
    max_tensor_parallel: int = 1  # the largest split to estimate (the neuron's devices, or its config)
    rank_timeout_s: float = 60.0

    def inspect(self, path: Path) -> ModelFacts:
        from cortex.engine.config import ModelConfig
        from cortex.engine.errors import ShardingError
        from cortex.engine.parallel.shard_config import shard_config

        config = ModelConfig.from_hf(path)
        max_len = config.max_position_embeddings
        if self.max_model_len is not None:
            max_len = min(max_len, self.max_model_len)
        # each rank holds its shard of the weights and a cache budget of its own
        split: dict[int, int] = {}
        errors: dict[int, str] = {}
        for size in range(2, self.max_tensor_parallel + 1):
            try:
                rank = shard_config(config, size)
            except ShardingError as error:
                errors[size] = str(error)
                continue
            split[size] = rank.estimate_weight_bytes(self._dtype) + self._cache_bytes
        return ModelFacts(
            architecture=config.arch,
            estimated_memory_bytes=config.estimate_weight_bytes(self._dtype) + self._cache_bytes,
            max_model_len=max_len,
            split_memory_bytes=split,
            split_errors=errors,
        )

    def tokenizer(self, path: Path) -> Tokenizer | None:
        from cortex.engine.text.tokenizer import Tokenizer

        return Tokenizer.from_folder(path)

    def load(self, path: Path, plan: LoadPlan, progress: ProgressCallback) -> ServedEngine:
        from cortex.engine.engine import Engine

        return Engine.from_pretrained(
            path,
            device=plan.devices[0],
            tensor_parallel_size=plan.tensor_parallel,
            devices=plan.devices if plan.tensor_parallel > 1 else None,
            rank_timeout_s=self.rank_timeout_s,
            dtype=self._dtype,
            max_num_seqs=self.max_num_seqs,
            max_model_len=self.max_model_len,
            cache_memory_bytes=self._cache_bytes,
            enable_prefix_caching=self.enable_prefix_caching,
            snapshot_interval_blocks=self.snapshot_interval_blocks,
            snapshot_memory_fraction=self.snapshot_memory_fraction,
            ssm_state_dtype=self.ssm_state_dtype,
            progress=progress,
        )

    @property
    def _dtype(self) -> str:
        if self.dtype != "auto":
            return self.dtype
        return "float32" if self.device == "cpu" else "bfloat16"

    @property
    def _cache_bytes(self) -> int:
        return self.cache_memory_bytes or DEFAULT_CACHE_BYTES["cpu" if self.device == "cpu" else "cuda"]
