"""Gated DeltaNet token mixer (Qwen3.5 / Qwen3-Next ``linear_attention`` layers).

``in_proj_qkv`` -> causal depthwise conv1d (kernel 4, SiLU, history carried in the state slot) ->
split q | k | v; the gated delta rule with the state in the slot (the op computes ``beta =
sigmoid(in_proj_b)``, ``g = -exp(A_log) * softplus(in_proj_a + dt_bias)`` and the q/k l2 norms itself);
``GatedRMSNorm(o, in_proj_z)``; ``out_proj``.
Qwen3-Next's grouped ``in_proj_qkvz`` / ``in_proj_ba`` are split into this layout when loading.
"""

from __future__ import annotations

import torch
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
        self.norm = GatedRMSNorm(head_v_dim, rms_norm_eps, kernels=kernels)
        self.out_proj = nn.Linear(self.value_dim, hidden_size, bias=False)

    def forward(self, x: torch.Tensor, batch: ForwardBatch, cache: LinearStateCache) -> torch.Tensor:
        # x: [num_tokens, hidden_size]. Nothing here reads a device value back: the decode / prefill
        # choice uses the batch's host sizes, everything else stays on the device.
        num_tokens = x.shape[0]
        mixed = self.in_proj_qkv(x)  # [num_tokens, conv_dim]
        conv_weight = self.conv1d.weight[:, 0, :]  # [conv_dim, kernel]
        decode = all(n == 1 for n in batch.query_lens_host) and all(
            c > 0 for c in batch.num_cached_tokens_host
        )
        if decode:
            mixed = causal_conv1d_decode(
                mixed, conv_weight, cache.conv, state_slots=batch.state_slots, kernels=self.kernels
            )
            has_initial_state = None
        else:
            has_initial_state = batch.num_cached_tokens > 0  # [num_seqs] bool, on the device
            mixed = causal_conv1d_prefill(
                mixed,
                conv_weight,
                cache.conv,
                cu_seqlens=batch.cu_seqlens_q,
                state_slots=batch.state_slots,
                has_initial_state=has_initial_state,
                kernels=self.kernels,
            )
        # views of the conv output: the kernels read q, k, v in place (token stride conv_dim)
        q, k, v = torch.split(mixed, [self.key_dim, self.key_dim, self.value_dim], dim=-1)
        q = q.reshape(num_tokens, self.num_k_heads, self.head_k_dim)
        k = k.reshape(num_tokens, self.num_k_heads, self.head_k_dim)
        v = v.reshape(num_tokens, self.num_v_heads, self.head_v_dim)
        # the raw gate projections: sigmoid / softplus gating happens inside the ops
        gates = {"a": self.in_proj_a(x), "b": self.in_proj_b(x), "A_log": self.A_log, "dt_bias": self.dt_bias}
        if has_initial_state is None:
            o = gated_delta_rule_decode(
                q, k, v, **gates, state=cache.ssm, state_slots=batch.state_slots, kernels=self.kernels
            )
        else:
            o = gated_delta_rule_prefill(
                q,
                k,
                v,
                **gates,
                state=cache.ssm,
                cu_seqlens=batch.cu_seqlens_q,
                state_slots=batch.state_slots,
                has_initial_state=has_initial_state,
                kernels=self.kernels,
            )
        z = self.in_proj_z(x).view(num_tokens, self.num_v_heads, self.head_v_dim)
        o = self.norm(o, z).reshape(num_tokens, self.value_dim)
        out: torch.Tensor = self.out_proj(o)
        return out
