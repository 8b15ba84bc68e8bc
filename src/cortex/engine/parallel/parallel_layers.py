"""Tensor parallelism applied to a rank's model from outside: the layers' math is untouched.

A rank's ``CausalLM`` is built from its sharded config (``sharding.shard_config``) and loaded with its
slices (``sharding.RankShard``), so each token mixer and FFN computes a partial sum of its output
over the rank's heads or intermediate columns. :func:`parallelize` then adds, as forward hooks (as
gpt-fast's ``tp.py`` does), the communication that makes the ranks agree:

- after every decoder layer's token mixer (attention or Gated DeltaNet) and FFN (MLP or MoE block):
  an all-reduce (sum) of the output, ``[num_tokens, hidden_size]``;
- the token embedding becomes :class:`VocabParallelEmbedding` (the same weight): each rank looks up
  the ids in its vocabulary range, zeros the others, and an all-reduce combines them;
- after the LM head: an all-gather of each rank's logits columns, padding dropped, so every rank
  holds the full ``[num_logits, vocab_size]`` logits (only rank 0 samples).

Every collective goes through ``torch.distributed`` on the group's backend (gloo on CPU, NCCL on
CUDA) and is bounded by the group's timeout (see ``worker.py``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from cortex.engine.models.causal_lm import CausalLM
from cortex.engine.parallel.sharding import RankShard


class VocabParallelEmbedding(nn.Module):
    """A rank's embedding (rows ``[vocab_start, vocab_start + num_rows)``); the ranks' lookups summed.

    Wraps the rank's own embedding module, whatever layout it was given (``models/cpu_layout.py``).
    """

    def __init__(self, embedding: nn.Module, *, vocab_start: int, num_rows: int, group: Any) -> None:
        super().__init__()
        self.embedding = embedding  # [num_rows, hidden_size] rows, shared with a tied LM head
        self.vocab_start = vocab_start
        self.num_rows = num_rows
        self.group = group

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        # input_ids: [num_tokens] -> [num_tokens, hidden_size]
        local = input_ids - self.vocab_start
        outside = (local < 0) | (local >= self.num_rows)
        h: torch.Tensor = self.embedding(local.masked_fill(outside, 0))
        h = h.masked_fill(outside[:, None], 0)
        dist.all_reduce(h, group=self.group)
        return h


def _all_reduce_output(group: Any) -> Any:
    def hook(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(output, group=group)
        return output

    return hook


def _gather_vocab(group: Any, *, world_size: int, vocab_size: int) -> Any:
    def hook(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        # output: [num_logits, vocab_per_rank] -> [num_logits, vocab_size], ranks' columns in order
        num_logits, per_rank = output.shape
        gathered = output.new_empty(world_size * num_logits, per_rank)
        dist.all_gather_single(gathered, output.contiguous(), group=group)
        logits = gathered.view(world_size, num_logits, per_rank).transpose(0, 1)
        return logits.reshape(num_logits, world_size * per_rank)[:, :vocab_size]

    return hook


def parallelize(model: CausalLM, shard: RankShard, *, group: Any) -> CausalLM:
    """Install the collectives on a rank's loaded model (in place, after any re-layout of its
    modules, such as the CPU's); returns it."""
    if shard.world_size == 1:
        return model
    for layer in model.model.layers:
        mixer = layer.get_submodule("linear_attn" if layer.layer_type == "linear_attention" else "self_attn")
        mixer.register_forward_hook(_all_reduce_output(group))
        layer.get_submodule("mlp").register_forward_hook(_all_reduce_output(group))
    embedding = VocabParallelEmbedding(
        model.model.embed_tokens,
        vocab_start=shard.vocab_range[0],
        num_rows=shard.config.vocab_size,
        group=group,
    )
    model.model.register_module("embed_tokens", embedding)
    model.lm_head.register_forward_hook(
        _gather_vocab(group, world_size=shard.world_size, vocab_size=shard.model.vocab_size)
    )
    return model
