"""Gated DeltaNet token mixer (Qwen3.5 / Qwen3-Next ``linear_attention`` layers).

``in_proj_qkv`` -> causal depthwise conv1d (kernel 4, SiLU, history carried in the state slot) ->
split q | k | v; ``beta = sigmoid(in_proj_b)``, ``g = -exp(A_log) * softplus(in_proj_a + dt_bias)``;
the gated delta rule with the fp32 state in the slot; ``GatedRMSNorm(o, in_proj_z)``; ``out_proj``.
Qwen3-Next's grouped ``in_proj_qkvz`` / ``in_proj_ba`` are split into this layout when loading.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cortex.engine.batch import ForwardBatch
from cortex.engine.cache.layer_cache import LinearStateCache
from cortex.engine.kernels.causal_conv1d import causal_conv1d_decode, causal_conv1d_prefill
from cortex.engine.kernels.gated_delta import gated_delta_rule_decode, gated_delta_rule_prefill
from cortex.engine.kernels.selection import KernelBackend
from cortex.engine.layers.norm import GatedRMSNorm


class GatedDeltaNet(nn.Module):
    def __init__(
        self,
        hidden_size: int,
        *,
        num_k_heads: int,
        num_v_heads: int,
        head_k_dim: int,
        head_v_dim: int,
        conv_kernel: int,
        rms_norm_eps: float,
        kernels: KernelBackend,
    ) -> None:
        super().__init__()
        self.kernels = kernels  # the ops' backend (kernels/selection.py)
        self.num_k_heads = num_k_heads
        self.num_v_heads = num_v_heads
        self.head_k_dim = head_k_dim
        self.head_v_dim = head_v_dim
        self.key_dim = num_k_heads * head_k_dim
        self.value_dim = num_v_heads * head_v_dim
        conv_dim = 2 * self.key_dim + self.value_dim
        self.in_proj_qkv = nn.Linear(hidden_size, conv_dim, bias=False)
        self.in_proj_z = nn.Linear(hidden_size, self.value_dim, bias=False)
        self.in_proj_b = nn.Linear(hidden_size, num_v_heads, bias=False)
        self.in_proj_a = nn.Linear(hidden_size, num_v_heads, bias=False)
        # holds the depthwise weight [conv_dim, 1, kernel] under the checkpoint's name; the conv itself
        # runs through the causal_conv1d ops, which carry history across steps
        self.conv1d = nn.Conv1d(conv_dim, conv_dim, conv_kernel, groups=conv_dim, bias=False)
        self.A_log = nn.Parameter(torch.zeros(num_v_heads))
        self.dt_bias = nn.Parameter(torch.ones(num_v_heads))
        self.norm = GatedRMSNorm(head_v_dim, rms_norm_eps)
        self.out_proj = nn.Linear(self.value_dim, hidden_size, bias=False)

    def forward(self, x: torch.Tensor, batch: ForwardBatch, cache: LinearStateCache) -> torch.Tensor:
        # x: [num_tokens, hidden_size]
        num_tokens = x.shape[0]
        mixed = self.in_proj_qkv(x)  # [num_tokens, conv_dim]
        conv_weight = self.conv1d.weight[:, 0, :]  # [conv_dim, kernel]
        has_initial_state = [c > 0 for c in batch.num_cached_tokens_host]
        decode = all(n == 1 for n in batch.query_lens_host) and all(has_initial_state)
        if decode:
            mixed = causal_conv1d_decode(mixed, conv_weight, cache.conv, state_slots=batch.state_slots)
        else:
            mixed = causal_conv1d_prefill(
                mixed,
                conv_weight,
                cache.conv,
                query_lens=batch.query_lens_host,
                state_slots=batch.state_slots,
                has_initial_state=has_initial_state,
            )
        q, k, v = torch.split(mixed, [self.key_dim, self.key_dim, self.value_dim], dim=-1)
        q = q.reshape(num_tokens, self.num_k_heads, self.head_k_dim)
        k = k.reshape(num_tokens, self.num_k_heads, self.head_k_dim)
        v = v.reshape(num_tokens, self.num_v_heads, self.head_v_dim)
        beta = torch.sigmoid(self.in_proj_b(x))
        g = -self.A_log.float().exp() * F.softplus(self.in_proj_a(x).float() + self.dt_bias)
        if decode:
            o = gated_delta_rule_decode(q, k, v, g, beta, cache.ssm, state_slots=batch.state_slots)
        else:
            o = gated_delta_rule_prefill(
                q,
                k,
                v,
                g,
                beta,
                cache.ssm,
                query_lens=batch.query_lens_host,
                state_slots=batch.state_slots,
                has_initial_state=has_initial_state,
            )
        z = self.in_proj_z(x).view(num_tokens, self.num_v_heads, self.head_v_dim)
        o = self.norm(o, z).reshape(num_tokens, self.value_dim)
        out: torch.Tensor = self.out_proj(o)
        return out
