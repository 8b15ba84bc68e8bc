"""Qwen3 dense text models (``qwen3``): full attention in every layer with q/k norms and full rotary,
no output gate, SwiGLU MLP, and plain-weight RMSNorm (``w * x``, not ``(1 + w)``). Checked against
transformers 5.24 ``Qwen3ForCausalLM``.
"""

from __future__ import annotations

import torch

from cortex.engine.batch import ForwardBatch
from cortex.engine.cache.layer_cache import AttentionCache, LayerCache
from cortex.engine.config import ModelConfig
from cortex.engine.layers.attention import Attention
from cortex.engine.layers.mlp import SwiGLUMLP
from cortex.engine.layers.norm import RMSNorm
from cortex.engine.models.causal_lm import CausalLM, DecoderLayer


class Qwen3DecoderLayer(DecoderLayer):
    def __init__(self, config: ModelConfig, layer_idx: int) -> None:
        super().__init__()
        self.self_attn = Attention(
            config.hidden_size,
            num_heads=config.num_attention_heads,
            num_kv_heads=config.num_kv_heads,
            head_dim=config.head_dim,
            rms_norm_eps=config.rms_norm_eps,
            zero_centred_norm=False,
            output_gate=False,
            bias=config.attention_bias,
        )
        self.mlp = SwiGLUMLP(config.hidden_size, config.intermediate_size)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, zero_centred=False)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, zero_centred=False)

    def forward(
        self,
        x: torch.Tensor,
        cos_sin: tuple[torch.Tensor, torch.Tensor],
        batch: ForwardBatch,
        cache: LayerCache,
    ) -> torch.Tensor:
        # x: [num_tokens, hidden_size]
        assert isinstance(cache, AttentionCache)
        x = x + self.self_attn(self.input_layernorm(x), cos_sin, batch, cache)
        ffn: torch.Tensor = self.mlp(self.post_attention_layernorm(x))
        return x + ffn


class Qwen3ForCausalLM(CausalLM):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config, Qwen3DecoderLayer)
