"""Sharding without processes: each rank's config, and its slices of real checkpoints, put back together
equal the unsharded tensors; dimensions that do not divide are named in the error."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
import torch
from hf_checkpoints import ARCHS
from safetensors import safe_open

from cortex.engine.config import ModelConfig
from cortex.engine.errors import ShardingError
from cortex.engine.models import load_model
from cortex.engine.parallel.sharding import RankShard, shard_config


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


def test_kv_heads_are_replicated_when_fewer_than_ranks(hf_checkpoint):
    full = ModelConfig.from_hf(hf_checkpoint("qwen3").path)  # 4 query heads, 2 KV heads
    assert shard_config(full, 4).num_kv_heads == 1
    with safe_open(str(hf_checkpoint("qwen3").path / "model.safetensors"), "pt") as f:
        name = "model.layers.0.self_attn.k_proj.weight"
        whole = f.get_tensor(name)
        parts = [RankShard(full, rank, 4).read(name, f.get_slice(name)) for rank in range(4)]
    head_dim = full.head_dim
    # ranks 0-1 read query heads 0-1, which use KV head 0; ranks 2-3 use KV head 1
    for rank, part in enumerate(parts):
        head = rank // 2
        assert torch.equal(part, whole[head * head_dim : (head + 1) * head_dim])


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


def _unshard(name: str, parts: list[torch.Tensor], full: ModelConfig) -> torch.Tensor:
    """Put the ranks' parts of ``name`` back together the way RankShard split it."""
    if name.endswith(("embed_tokens.weight", "lm_head.weight")):
        return torch.cat(parts)[: full.vocab_size]
    if name.endswith(("o_proj.weight", "out_proj.weight", "down_proj.weight", "experts.down_proj")):
        return torch.cat(parts, dim=-1)
    if name.endswith(("in_proj_qkv.weight", "conv1d.weight")):
        blocks = [
            part.split([p // 2 for p in (full.linear_key_dim, full.linear_key_dim, full.linear_value_dim)])
            for part in parts
        ]
        return torch.cat([torch.cat([b[i] for b in blocks]) for i in range(3)])
    if name.endswith("experts.gate_up_proj"):
        halves = [part.chunk(2, dim=1) for part in parts]
        return torch.cat([torch.cat([h[i] for h in halves], dim=1) for i in range(2)], dim=1)
    if parts[0].shape == parts[1].shape and not torch.equal(parts[0], parts[1]):
        return torch.cat(parts)  # column-parallel
    return parts[0]  # replicated


def test_the_ranks_slices_put_together_are_the_checkpoint(checkpoint):
    full = ModelConfig.from_hf(checkpoint)
    shards = [RankShard(full, rank, 2) for rank in range(2)]
    files = sorted(checkpoint.glob("*.safetensors"))
    for path in files:
        with safe_open(str(path), "pt") as f:
            for name in f.keys():  # noqa: SIM118
                whole = f.get_tensor(name)
                parts = [shard.read(name, f.get_slice(name)) for shard in shards]
                assert torch.equal(_unshard(name, parts, full), whole), name


def test_each_rank_loads_a_model_of_its_shapes_from_its_slices(checkpoint):
    full = ModelConfig.from_hf(checkpoint)
    whole, _ = load_model(checkpoint, dtype="float32", device="cpu")
    num_params = sum(p.numel() for p in whole.parameters())
    rank_params = []
    for rank in range(2):
        model, config = load_model(checkpoint, dtype="float32", device="cpu", shard=RankShard(full, rank, 2))
        assert config == shard_config(full, 2)
        rank_params.append(sum(p.numel() for p in model.parameters()))
    # everything split in halves, except what every rank holds whole (norms, routers, KV replicas)
    assert num_params / 2 < rank_params[0] == rank_params[1] < num_params * 0.6
