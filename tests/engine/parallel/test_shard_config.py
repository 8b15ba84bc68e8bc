"""Each rank's config: heads and widths divided over the ranks; dimensions that do not divide are named."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
from hf_checkpoints import ARCHS

from cortex.engine.config import ModelConfig
from cortex.engine.errors import ShardingError
from cortex.engine.parallel.shard_config import shard_config


@pytest.fixture(params=ARCHS)
def checkpoint(request: pytest.FixtureRequest, hf_checkpoint: Callable):
    return hf_checkpoint(request.param).path


def test_rank_config_divides_heads_and_widths(checkpoint):
    full = ModelConfig.from_hf(checkpoint)
    rank = shard_config(full, 2)
    assert rank.hidden_size == full.hidden_size
    assert rank.num_attention_heads * 2 == full.num_attention_heads
    assert rank.num_kv_heads * 2 == full.num_kv_heads
    assert rank.vocab_size * 2 == full.vocab_size
    if full.has_linear_attention:
        assert (rank.linear_num_key_heads * 2, rank.linear_num_value_heads * 2) == (
            full.linear_num_key_heads,
            full.linear_num_value_heads,
        )
    assert (rank.intermediate_size * 2, rank.moe_intermediate_size * 2) == (
        full.intermediate_size,
        full.moe_intermediate_size,
    )
    assert rank.num_experts == full.num_experts  # experts are not split: their width is
    assert shard_config(full, 1) is full


@pytest.mark.parametrize(
    ("change", "world_size", "named"),
    [
        ({}, 3, "num_attention_heads=4 (attention query heads) is not divisible by tensor_parallel_size=3"),
        ({"num_kv_heads": 3, "num_attention_heads": 6}, 2, "num_key_value_heads=3"),
        ({"linear_num_key_heads": 1, "linear_num_value_heads": 2}, 2, "linear_num_key_heads=1"),
        ({"intermediate_size": 129}, 2, "intermediate_size=129 (dense MLP width)"),
    ],
)
def test_dimensions_that_do_not_divide_are_named(hf_checkpoint, change, world_size, named):
    full = dataclasses.replace(ModelConfig.from_hf(hf_checkpoint("qwen3_5").path), **change)
    with pytest.raises(ShardingError, match=named.replace("(", r"\(").replace(")", r"\)")):
        shard_config(full, world_size)


def test_kv_heads_that_cannot_be_replicated_evenly_are_named(hf_checkpoint):
    full = ModelConfig.from_hf(hf_checkpoint("qwen3").path)  # 2 KV heads
    full = dataclasses.replace(full, num_attention_heads=6)
    with pytest.raises(ShardingError, match=r"num_key_value_heads=2 .* does not divide it"):
        shard_config(full, 3)


def test_moe_widths_are_named(hf_checkpoint):
    full = dataclasses.replace(
        ModelConfig.from_hf(hf_checkpoint("qwen3_5_moe").path), moe_intermediate_size=33
    )
    with pytest.raises(ShardingError, match="moe_intermediate_size=33 \\(expert width\\)"):
        shard_config(full, 2)
