"""CausalLM: the one model every supported architecture builds: embeddings, a stack of decoder layers,
the final norm and the LM head, under Hugging Face's parameter names (``model.embed_tokens``,
``model.layers.N``, ``model.norm``, ``lm_head``) so checkpoints load by name.

The architectures differ only in what ``ModelConfig`` says, so one ``DecoderLayer`` serves them all:

- Qwen3.5 / Qwen3.6, dense (``qwen3_5``) and MoE (``qwen3_5_moe``): a hybrid stack where
  ``linear_attention`` layers are Gated DeltaNet and ``full_attention`` layers (every fourth by
  default) are gated attention with q/k norms and partial rotary; the FFN is a SwiGLU MLP or a sparse
  MoE block with a shared expert; every RMSNorm is zero-centred ``(1 + w)`` except the gated norm
  inside Gated DeltaNet.
- Qwen3-Next (``qwen3_next``): the Qwen3.5-MoE stack with plain RoPE and a different checkpoint
  layout for Gated DeltaNet projections, converted when loading (``qwen3_next.py``).
- Qwen3 dense (``qwen3``): full attention in every layer with q/k norms and full rotary, no output
  gate, SwiGLU MLP and plain-weight RMSNorm (``w * x``).

Checked against transformers 5.24 ``Qwen3_5ForCausalLM``, ``Qwen3_5MoeForCausalLM``,
``Qwen3NextForCausalLM`` and ``Qwen3ForCausalLM``.

Forward contract (the runtime relies on it)::

    model(batch: ForwardBatch, caches: Sequence[LayerCache]) -> logits [num_logits, vocab] float32

``caches[i]`` is layer i's ``AttentionCache`` (full attention) or ``LinearStateCache`` (Gated
DeltaNet). The forward writes new K/V at ``batch.slot_mapping`` and each sequence's conv history and
delta state into ``state_slots``, in place; logits are computed only for ``batch.logits_indices``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cortex.engine.batch import ForwardBatch
from cortex.engine.cache.layer_cache import AttentionCache, LayerCache, LinearStateCache
from cortex.engine.config import ModelConfig
from cortex.engine.kernels.selection import KernelBackend
from cortex.engine.layers.attention import Attention
from cortex.engine.layers.gated_delta_net import GatedDeltaNet
from cortex.engine.layers.mlp import SwiGLUMLP
from cortex.engine.layers.moe import SparseMoeBlock
from cortex.engine.layers.norm import RMSNorm
from cortex.engine.layers.rotary import RotaryEmbedding


def make_ffn(config: ModelConfig, layer_idx: int, *, kernels: KernelBackend) -> nn.Module:
    if config.moe_layers and config.moe_layers[layer_idx]:
        return SparseMoeBlock(
            config.hidden_size,
            num_experts=config.num_experts,
            top_k=config.num_experts_per_tok,
            moe_intermediate_size=config.moe_intermediate_size,
            shared_expert_intermediate_size=config.shared_expert_intermediate_size,
            norm_topk_prob=config.norm_topk_prob,
            kernels=kernels,
        )
    return SwiGLUMLP(config.hidden_size, config.intermediate_size)


class DecoderLayer(nn.Module):
    """One layer: a pre-norm token mixer (Gated DeltaNet or attention) and a pre-norm FFN.

    The residual stream is carried as ``(hidden, residual)``, as in vLLM: each norm adds the previous
    sub-block's output to the residual and normalises the sum in one op (``add_rms_norm``). The first
    layer gets ``residual=None``; the stream's value after a layer is ``hidden + residual``.
    """

    def __init__(self, config: ModelConfig, layer_idx: int, *, kernels: KernelBackend) -> None:
        super().__init__()
        zero_centred = config.norm_zero_centred
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
                kernels=kernels,
            )
        else:
            self.self_attn = Attention(
                config.hidden_size,
                num_heads=config.num_attention_heads,
                num_kv_heads=config.num_kv_heads,
                head_dim=config.head_dim,
                rms_norm_eps=config.rms_norm_eps,
                zero_centred_norm=zero_centred,
                output_gate=config.attn_output_gate,
                bias=config.attention_bias,
                kernels=kernels,
            )
        self.mlp = make_ffn(config, layer_idx, kernels=kernels)
        self.input_layernorm = RMSNorm(
            config.hidden_size, config.rms_norm_eps, zero_centred=zero_centred, kernels=kernels
        )
        self.post_attention_layernorm = RMSNorm(
            config.hidden_size, config.rms_norm_eps, zero_centred=zero_centred, kernels=kernels
        )

    def forward(
        self,
        hidden: torch.Tensor,
        residual: torch.Tensor | None,
        cos_sin: tuple[torch.Tensor, torch.Tensor],
        batch: ForwardBatch,
        cache: LayerCache,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # hidden, residual: [num_tokens, hidden_size]
        if residual is None:
            h, residual = self.input_layernorm(hidden), hidden
        else:
            h, residual = self.input_layernorm.add_forward(hidden, residual)
        if self.layer_type == "linear_attention":
            assert isinstance(cache, LinearStateCache), "linear-attention layers take a LinearStateCache"
            h = self.linear_attn(h, batch, cache)
        else:
            assert isinstance(cache, AttentionCache), "full-attention layers take an AttentionCache"
            h = self.self_attn(h, cos_sin, batch, cache)
        h, residual = self.post_attention_layernorm.add_forward(h, residual)
        ffn: torch.Tensor = self.mlp(h)
        return ffn, residual


class TextModel(nn.Module):
    def __init__(self, config: ModelConfig, *, kernels: KernelBackend) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(
            DecoderLayer(config, i, kernels=kernels) for i in range(config.num_hidden_layers)
        )
        self.norm = RMSNorm(
            config.hidden_size, config.rms_norm_eps, zero_centred=config.norm_zero_centred, kernels=kernels
        )


class CausalLM(nn.Module):
    def __init__(self, config: ModelConfig, *, kernels: KernelBackend) -> None:
        super().__init__()
        self.config = config
        self.kernels = kernels  # which implementation of the ops every layer runs (kernels/selection.py)
        self.model = TextModel(config, kernels=kernels)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.rotary = RotaryEmbedding(config.rotary_dim, config.rope_theta)

    def forward(self, batch: ForwardBatch, caches: Sequence[LayerCache]) -> torch.Tensor:
        if len(caches) != len(self.model.layers):
            raise ValueError(f"expected {len(self.model.layers)} layer caches, got {len(caches)}")
        h = self.model.embed_tokens(batch.input_ids)  # [num_tokens, hidden_size]
        cos_sin = self.rotary(batch.positions, h.dtype)
        residual: torch.Tensor | None = None
        for layer, cache in zip(self.model.layers, caches, strict=True):
            h, residual = layer(h, residual, cos_sin, batch, cache)
        assert residual is not None, "a model has at least one layer"
        idx = batch.logits_indices
        h, _ = self.model.norm.add_forward(h[idx], residual[idx])
        logits: torch.Tensor = self.lm_head(h)
        return logits.float()  # [num_logits, vocab_size]
