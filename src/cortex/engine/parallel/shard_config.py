"""The config of one tensor-parallel rank: the model's shapes divided over the ranks (no torch).

:func:`shard_config` turns the model's ``ModelConfig`` into the config of one of ``world_size`` ranks:
the model code builds a rank's modules from it unchanged, and the runtime sizes the rank's caches from
it. :func:`sharding_problems` names every dimension that does not divide (``shard_config`` raises them
as one :class:`ShardingError`); the neuron uses both to estimate a model's memory per device without
loading it. How each tensor is split is in ``sharding.py``.
"""

from __future__ import annotations

import dataclasses

from cortex.engine.config import ModelConfig
from cortex.engine.errors import ShardingError


def _divides(world_size: int, value: int, name: str, what: str) -> str | None:
    if value % world_size:
        return f"{name}={value} ({what}) is not divisible by tensor_parallel_size={world_size}"
    return None


def sharding_problems(config: ModelConfig, world_size: int) -> list[str]:
    """Each dimension of ``config`` that cannot split over ``world_size`` ranks, as a sentence."""
    problems: list[str | None] = []
    if "full_attention" in config.layer_types:
        problems.append(
            _divides(world_size, config.num_attention_heads, "num_attention_heads", "attention query heads")
        )
        kv = config.num_kv_heads
        if kv >= world_size:
            problems.append(_divides(world_size, kv, "num_key_value_heads", "attention KV heads"))
        elif world_size % kv:
            problems.append(
                f"num_key_value_heads={kv} (attention KV heads) is fewer than tensor_parallel_size="
                f"{world_size} and does not divide it, so the heads cannot be replicated evenly"
            )
    if config.has_linear_attention:
        problems.append(
            _divides(
                world_size, config.linear_num_key_heads, "linear_num_key_heads", "Gated DeltaNet key heads"
            )
        )
        problems.append(
            _divides(
                world_size,
                config.linear_num_value_heads,
                "linear_num_value_heads",
                "Gated DeltaNet value heads",
            )
        )
    moe = config.moe_layers or (False,) * config.num_hidden_layers
    if not all(moe):
        problems.append(
            _divides(world_size, config.intermediate_size, "intermediate_size", "dense MLP width")
        )
    if any(moe):
        problems.append(
            _divides(world_size, config.moe_intermediate_size, "moe_intermediate_size", "expert width")
        )
        problems.append(
            _divides(
                world_size,
                config.shared_expert_intermediate_size,
                "shared_expert_intermediate_size",
                "shared expert width",
            )
        )
    return [p for p in problems if p is not None]


def shard_config(config: ModelConfig, world_size: int) -> ModelConfig:
    """The config of one of ``world_size`` ranks; raises ShardingError naming what does not divide."""
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ShardingError(f"tensor_parallel_size must be a positive integer, got {world_size!r}")
    if world_size == 1:
        return config
    problems = sharding_problems(config, world_size)
    if problems:
        raise ShardingError(
            f"{config.model_type} cannot be split over {world_size} ranks: " + "; ".join(problems)
        )
    return dataclasses.replace(
        config,
        vocab_size=-(-config.vocab_size // world_size),
        num_attention_heads=config.num_attention_heads // world_size,
        num_kv_heads=max(1, config.num_kv_heads // world_size),
        linear_num_key_heads=config.linear_num_key_heads // world_size,
        linear_num_value_heads=config.linear_num_value_heads // world_size,
        intermediate_size=config.intermediate_size // world_size,
        moe_intermediate_size=config.moe_intermediate_size // world_size,
        shared_expert_intermediate_size=config.shared_expert_intermediate_size // world_size,
    )
