"""Full attention over the paged KV cache: Qwen3.5 / Qwen3-Next gated attention and Qwen3 attention.

Per token: ``q = q_norm(q)``, ``k = k_norm(k)`` per head, rotary on the first ``rotary_dim`` dims, the
new K/V stored at ``batch.slot_mapping``, then causal GQA over each sequence's cached context. With
``output_gate`` (Qwen3.5, Qwen3-Next), ``q_proj`` emits per head ``[query (head_dim) | gate (head_dim)]``
and the attention output is multiplied by ``sigmoid(gate)`` before ``o_proj``.
"""

from __future__ import annotations

import torch
from torch import nn

from cortex.engine.batch import ForwardBatch
from cortex.engine.cache.layer_cache import AttentionCache
from cortex.engine.kernels.kv_cache import store_kv_cache
from cortex.engine.kernels.paged_attention import paged_attention_decode, paged_attention_prefill
from cortex.engine.kernels.qk_norm_rotary import qk_norm_rotary
from cortex.engine.kernels.selection import KernelBackend
from cortex.engine.layers.norm import RMSNorm


class Attention(nn.Module):
    def __init__(
        self,
        hidden_size: int,
        *,
        num_heads: int,
        num_kv_heads: int,
        head_dim: int,
        rms_norm_eps: float,
        zero_centred_norm: bool,
        output_gate: bool,
        bias: bool,
        kernels: KernelBackend,
    ) -> None:
        super().__init__()
        self.kernels = kernels
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.output_gate = output_gate
        self.scale = head_dim**-0.5
        q_out = num_heads * head_dim * (2 if output_gate else 1)
        self.q_proj = nn.Linear(hidden_size, q_out, bias=bias)
        self.k_proj = nn.Linear(hidden_size, num_kv_heads * head_dim, bias=bias)
        self.v_proj = nn.Linear(hidden_size, num_kv_heads * head_dim, bias=bias)
        self.o_proj = nn.Linear(num_heads * head_dim, hidden_size, bias=bias)
        # weight holders for the fused qk_norm_rotary op
        self.q_norm = RMSNorm(head_dim, rms_norm_eps, zero_centred=zero_centred_norm, kernels=kernels)
        self.k_norm = RMSNorm(head_dim, rms_norm_eps, zero_centred=zero_centred_norm, kernels=kernels)

    def forward(
        self,
        x: torch.Tensor,
        cos_sin: tuple[torch.Tensor, torch.Tensor],
        batch: ForwardBatch,
        cache: AttentionCache,
    ) -> torch.Tensor:
        # x: [num_tokens, hidden_size]; cos, sin: [num_tokens, rotary_dim]
        num_tokens = x.shape[0]
        q = self.q_proj(x).view(num_tokens, self.num_heads, -1)
        gate = None
        if self.output_gate:
            q, gate = q.split(self.head_dim, dim=-1)
        k = self.k_proj(x).view(num_tokens, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x).view(num_tokens, self.num_kv_heads, self.head_dim)
        cos, sin = cos_sin
        q, k = qk_norm_rotary(
            q,
            k,
            self.q_norm.weight,
            self.k_norm.weight,
            cos,
            sin,
            self.q_norm.eps,
            zero_centred=self.q_norm.zero_centred,
            kernels=self.kernels,
        )
        store_kv_cache(k, v, cache.k, cache.v, batch.slot_mapping, kernels=self.kernels)
        # the output gate, sigmoid(gate), is applied inside the attention op
        if batch.max_query_len == 1 and all(c > 0 for c in batch.num_cached_tokens_host):
            o = paged_attention_decode(
                q,
                cache.k,
                cache.v,
                seq_lens=batch.seq_lens,
                block_tables=batch.block_tables,
                max_seq_len=batch.max_seq_len,
                scale=self.scale,
                gate=gate,
                kernels=self.kernels,
            )
        else:
            o = paged_attention_prefill(
                q,
                cache.k,
                cache.v,
                cu_seqlens_q=batch.cu_seqlens_q,
                seq_lens=batch.seq_lens,
                block_tables=batch.block_tables,
                max_query_len=batch.max_query_len,
                scale=self.scale,
                gate=gate,
                kernels=self.kernels,
            )
        o = o.reshape(num_tokens, self.num_heads * self.head_dim)
        out: torch.Tensor = self.o_proj(o)
        return out
