"""A 2-rank gloo group run by a test: each rank loads its shard of several checkpoints and reports
rank 0's prefill logits and greedy tokens (the target of ``multiprocessing`` spawn processes)."""

from __future__ import annotations

import datetime
import pickle
from collections.abc import Sequence
from multiprocessing.queues import Queue
from typing import Any

import torch
import torch.distributed as dist
from forward_helpers import NaiveRunner

from cortex.engine.config import ModelConfig
from cortex.engine.models import load_model
from cortex.engine.parallel.parallel_layers import parallelize
from cortex.engine.parallel.sharding import RankShard

PROMPT = [(37 * i) % 500 + 1 for i in range(150)]  # past two 64-token delta-rule chunks
BATCH = [list(range(3, 8)), list(range(10, 90))]


def model_outputs(model: Any, config: ModelConfig) -> dict[str, Any]:
    """What the test compares: whole and chunked prefill logits, batched greedy tokens."""
    with torch.inference_mode():
        return {
            "whole": NaiveRunner(model, config).prefill_logits(PROMPT),
            "chunked": NaiveRunner(model, config).prefill_logits(PROMPT, chunk_sizes=[50, 37]),
            "greedy": NaiveRunner(model, config).greedy(BATCH, 12, chunk_size=16),
        }


def run_rank(rank: int, store_path: str, folders: Sequence[tuple[str, str]], results: Queue) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        store=dist.FileStore(store_path, 2),
        rank=rank,
        world_size=2,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        for arch, folder in folders:
            shard = RankShard(ModelConfig.from_hf(folder), rank, 2)
            model, config = load_model(folder, dtype="float32", device="cpu", shard=shard)
            outputs = model_outputs(parallelize(model, shard, group=dist.group.WORLD), config)
            if rank == 0:
                # plain pickle: tensors by value, not as fds that die with this process
                results.put((arch, pickle.dumps(outputs)))
    finally:
        dist.destroy_process_group()
