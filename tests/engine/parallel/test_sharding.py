"""Sharding without processes: each rank's slices of real checkpoints, put back together, equal the
unsharded tensors, and each rank loads a model of its shapes from them, as large as its config
estimates."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from hf_checkpoints import ARCHS
from safetensors import safe_open

from cortex.engine.config import ModelConfig
from cortex.engine.models import load_model
from cortex.engine.parallel.shard_config import shard_config
from cortex.engine.parallel.sharding import RankShard


@pytest.fixture(params=ARCHS)
def checkpoint(request: pytest.FixtureRequest, hf_checkpoint: Callable):
    return hf_checkpoint(request.param).path


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
        # the per-device weights a neuron estimates from config.json alone (engine_loader.py)
        assert config.estimate_weight_bytes("float32") == 4 * rank_params[-1]
    # everything split in halves, except what every rank holds whole (norms, routers, KV replicas)
    assert num_params / 2 < rank_params[0] == rank_params[1] < num_params * 0.6
