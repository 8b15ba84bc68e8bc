"""Qwen3.5 / Qwen3.6 text models, dense (``qwen3_5``) and MoE (``qwen3_5_moe``).

A hybrid stack: ``linear_attention`` layers are Gated DeltaNet, ``full_attention`` layers (every
fourth by default) are gated attention with q/k norms and partial rotary; the FFN is a SwiGLU MLP or
a sparse MoE block with a shared expert. Every RMSNorm is zero-centred ``(1 + w)`` except the gated
norm inside Gated DeltaNet. Checked against transformers 5.24 ``Qwen3_5ForCausalLM`` and
``Qwen3_5MoeForCausalLM``.
"""

from __future__ import annotations

import torch
from torch import nn

from cortex.engine.batch import ForwardBatch
from cortex.engine.cache.layer_cache import AttentionCache, LayerCache, LinearStateCache
from cortex.engine.config import ModelConfig
from cortex.engine.layers.attention import Attention
from cortex.engine.layers.gated_delta_net import GatedDeltaNet
from cortex.engine.layers.mlp import SwiGLUMLP
from cortex.engine.layers.moe import SparseMoeBlock
from cortex.engine.layers.norm import RMSNorm
from cortex.engine.models.causal_lm import CausalLM, DecoderLayer


def make_ffn(config: ModelConfig, layer_idx: int) -> nn.Module:
    if config.moe_layers and config.moe_layers[layer_idx]:
        return SparseMoeBlock(
            config.hidden_size,
            num_experts=config.num_experts,
            top_k=config.num_experts_per_tok,
            moe_intermediate_size=config.moe_intermediate_size,
            shared_expert_intermediate_size=config.shared_expert_intermediate_size,
            norm_topk_prob=config.norm_topk_prob,
        )
    return SwiGLUMLP(config.hidden_size, config.intermediate_size)


class HybridDecoderLayer(DecoderLayer):
    def __init__(self, config: ModelConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_type = config.layer_types[layer_idx]
        if self.layer_type == "linear_attention":
            self.linear_attn = GatedDeltaNet(
                config.hidden_size,
                num_k_heads=config.linear_num_key_heads,
                num_v_heads=config.linear_num_value_heads,
                head_k_dim=config.linear_key_head_dim,
                head_v_dim=config.linear_value_head_dim,
                conv_kernel=config.linear_conv_kernel_dim,
                rms_norm_eps=config.rms_norm_eps,
            )
        else:
            self.self_attn = Attention(
                config.hidden_size,
                num_heads=config.num_attention_heads,
                num_kv_heads=config.num_kv_heads,
                head_dim=config.head_dim,
                rms_norm_eps=config.rms_norm_eps,
                zero_centred_norm=True,
                output_gate=config.attn_output_gate,
                bias=config.attention_bias,
            )
        self.mlp = make_ffn(config, layer_idx)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, zero_centred=True)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, zero_centred=True)

    def forward(
        self,
        x: torch.Tensor,
        cos_sin: tuple[torch.Tensor, torch.Tensor],
        batch: ForwardBatch,
        cache: LayerCache,
    ) -> torch.Tensor:
        # x: [num_tokens, hidden_size]
        h = self.input_layernorm(x)
        if self.layer_type == "linear_attention":
            assert isinstance(cache, LinearStateCache), "linear-attention layers take a LinearStateCache"
            h = self.linear_attn(h, batch, cache)
        else:
            assert isinstance(cache, AttentionCache), "full-attention layers take an AttentionCache"
            h = self.self_attn(h, cos_sin, batch, cache)
        x = x + h
        ffn: torch.Tensor = self.mlp(self.post_attention_layernorm(x))
        return x + ffn


class Qwen3_5ForCausalLM(CausalLM):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config, HybridDecoderLayer)
