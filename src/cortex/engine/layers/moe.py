"""Sparse MoE block (Qwen3.5-MoE, Qwen3-Next): softmax router, top-k experts, a shared expert.

``p = softmax(x Wg^T)`` in fp32, top-k, renormalised to sum 1 when ``norm_topk_prob``; each expert is
a SwiGLU with fused ``gate_up_proj: [E, 2 * I, H]`` (gate rows first) and ``down_proj: [E, H, I]``;
``out = sum_k w_k expert_k(x) + sigmoid(shared_expert_gate(x)) * shared_expert(x)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cortex.engine.layers.mlp import SwiGLUMLP


class Experts(nn.Module):
    def __init__(self, num_experts: int, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        self.gate_up_proj = nn.Parameter(torch.empty(num_experts, 2 * intermediate_size, hidden_size))
        self.down_proj = nn.Parameter(torch.empty(num_experts, hidden_size, intermediate_size))

    def forward(self, x: torch.Tensor, expert_ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        # x: [num_tokens, H]; expert_ids, weights: [num_tokens, top_k]
        out = torch.zeros_like(x)
        for expert in torch.unique(expert_ids).tolist():
            token_idx, k_idx = torch.where(expert_ids == expert)
            gate, up = F.linear(x[token_idx], self.gate_up_proj[expert]).chunk(2, dim=-1)
            y = F.linear(F.silu(gate) * up, self.down_proj[expert])
            out.index_add_(0, token_idx, y * weights[token_idx, k_idx, None])
        return out


class SparseMoeBlock(nn.Module):
    def __init__(
        self,
        hidden_size: int,
        *,
        num_experts: int,
        top_k: int,
        moe_intermediate_size: int,
        shared_expert_intermediate_size: int,
        norm_topk_prob: bool,
    ) -> None:
        super().__init__()
        self.top_k = top_k
        self.norm_topk_prob = norm_topk_prob
        self.gate = nn.Linear(hidden_size, num_experts, bias=False)
        self.experts = Experts(num_experts, hidden_size, moe_intermediate_size)
        self.shared_expert = SwiGLUMLP(hidden_size, shared_expert_intermediate_size)
        self.shared_expert_gate = nn.Linear(hidden_size, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [num_tokens, hidden_size]
        probs = F.softmax(self.gate(x), dim=-1, dtype=torch.float32)
        weights, expert_ids = torch.topk(probs, self.top_k, dim=-1)
        if self.norm_topk_prob:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        routed: torch.Tensor = self.experts(x, expert_ids, weights.to(x.dtype))
        shared: torch.Tensor = self.shared_expert(x)
        return routed + torch.sigmoid(self.shared_expert_gate(x)) * shared
