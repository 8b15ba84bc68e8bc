"""The bfloat16 Gated DeltaNet state option: sizing, allocation, and an engine that generates with it.

The state is rounded to bfloat16 once per prefill and once per decoded token, so its outputs may drift
from the float32 state's; this checks that the option is wired through (half the state's bytes in the
plan, bfloat16 tensors in the pool, the engine running end to end), and that an unknown dtype is
refused. Its numerics are checked op by op in tests/engine/kernels (``bf16-state`` cases).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from cortex.engine.cache.cache_plan import bytes_per_slot, plan_cache
from cortex.engine.cache.layer_cache import LinearStateCache, LinearStateSpec
from cortex.engine.cache.pools import allocate_caches
from cortex.engine.engine import Engine
from cortex.engine.engine_config import EngineConfig
from cortex.engine.sampling_params import SamplingParams
from cortex.errors import InvalidRequestError

LINEAR = LinearStateSpec(conv_dim=12, conv_kernel=4, num_v_heads=2, head_k_dim=4, head_v_dim=4)


def test_bfloat16_state_halves_its_bytes_and_is_allocated_so():
    state_elements = 2 * 4 * 4
    fp32 = bytes_per_slot([LINEAR], dtype_bytes=2)
    bf16 = bytes_per_slot([LINEAR], dtype_bytes=2, ssm_dtype_bytes=2)
    assert fp32 - bf16 == state_elements * 2
    plan = plan_cache(
        [LINEAR],
        cache_memory_bytes=1 << 16,
        block_size=4,
        dtype_bytes=2,
        ssm_dtype_bytes=2,
        max_num_seqs=3,
        max_model_len=8,
        model_max_len=8,
    )
    assert plan.bytes_per_slot == bf16
    (cache,) = allocate_caches(
        [LINEAR], plan, dtype=torch.bfloat16, ssm_dtype=torch.bfloat16, device=torch.device("cpu")
    )
    assert isinstance(cache, LinearStateCache)
    assert cache.ssm.dtype == torch.bfloat16
    assert cache.conv.dtype == torch.bfloat16


def test_engine_generates_with_a_bfloat16_state(tiny_checkpoint: Callable[[str], Path]):
    path = tiny_checkpoint("qwen3_5")
    kwargs = {"max_model_len": 64, "cache_memory_bytes": 1 << 24, "max_num_seqs": 2}
    with (
        Engine.from_pretrained(path, **kwargs) as fp32,
        Engine.from_pretrained(path, ssm_state_dtype="bfloat16", **kwargs) as bf16,
    ):
        assert bf16.config.ssm_state_dtype == "bfloat16"
        assert bf16.cache_plan.bytes_per_slot < fp32.cache_plan.bytes_per_slot
        params = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)
        (out,) = bf16.generate([list(range(1, 30))], params)
        assert len(out.token_ids) == 6


def test_unknown_state_dtype_is_refused():
    with pytest.raises(InvalidRequestError, match="ssm_state_dtype"):
        EngineConfig(ssm_state_dtype="float16")
