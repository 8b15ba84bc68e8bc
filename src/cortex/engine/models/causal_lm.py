"""CausalLM: the shell every supported model shares: embeddings, a stack of decoder layers, the final
norm and the LM head, under Hugging Face's parameter names (``model.embed_tokens``, ``model.layers.N``,
``model.norm``, ``lm_head``) so checkpoints load by name.

Forward contract (the runtime relies on it)::

    model(batch: ForwardBatch, caches: Sequence[LayerCache]) -> logits [num_logits, vocab] float32

``caches[i]`` is layer i's ``AttentionCache`` (full attention) or ``LinearStateCache`` (Gated
DeltaNet). The forward writes new K/V at ``batch.slot_mapping`` and each sequence's conv history and
delta state into ``state_slots``, in place; logits are computed only for ``batch.logits_indices``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from cortex.engine.batch import ForwardBatch
from cortex.engine.cache.layer_cache import LayerCache
from cortex.engine.config import ModelConfig
from cortex.engine.layers.norm import RMSNorm
from cortex.engine.layers.rotary import RotaryEmbedding


class DecoderLayer(nn.Module):
    """What a layer factory returns: ``x -> x`` for one layer, given rotary cos/sin and its cache."""

    def forward(
        self,
        x: torch.Tensor,
        cos_sin: tuple[torch.Tensor, torch.Tensor],
        batch: ForwardBatch,
        cache: LayerCache,
    ) -> torch.Tensor:
        raise NotImplementedError


class TextModel(nn.Module):
    def __init__(self, config: ModelConfig, make_layer: Callable[[ModelConfig, int], DecoderLayer]) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(make_layer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, zero_centred=config.norm_zero_centred)


class CausalLM(nn.Module):
    def __init__(self, config: ModelConfig, make_layer: Callable[[ModelConfig, int], DecoderLayer]) -> None:
        super().__init__()
        self.config = config
        self.model = TextModel(config, make_layer)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.rotary = RotaryEmbedding(config.rotary_dim, config.rope_theta)

    def forward(self, batch: ForwardBatch, caches: Sequence[LayerCache]) -> torch.Tensor:
        if len(caches) != len(self.model.layers):
            raise ValueError(f"expected {len(self.model.layers)} layer caches, got {len(caches)}")
        h = self.model.embed_tokens(batch.input_ids)  # [num_tokens, hidden_size]
        cos_sin = self.rotary(batch.positions, h.dtype)
        for layer, cache in zip(self.model.layers, caches, strict=True):
            h = layer(h, cos_sin, batch, cache)
        h = self.model.norm(h[batch.logits_indices])
        logits: torch.Tensor = self.lm_head(h)
        return logits.float()  # [num_logits, vocab_size]
