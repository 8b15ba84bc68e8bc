"""Sparse MoE block (Qwen3.5-MoE, Qwen3-Next): softmax router, top-k experts, a shared expert.

``p = softmax(x Wg^T)`` in fp32, top-k, renormalised to sum 1 when ``norm_topk_prob``; each expert is
a SwiGLU with fused ``gate_up_proj: [E, 2 * I, H]`` (gate rows first) and ``down_proj: [E, H, I]``;
``out = sum_k w_k expert_k(x) + sigmoid(shared_expert_gate(x)) * shared_expert(x)``. The experts and
the gated sum run in one op, ``kernels/fused_moe.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cortex.engine.kernels.fused_moe import fused_moe
from cortex.engine.kernels.selection import KernelBackend
from cortex.engine.layers.mlp import SwiGLUMLP


class Experts(nn.Module):
    """The routed experts' weights, under the checkpoint's fused names."""

    def __init__(self, num_experts: int, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        self.gate_up_proj = nn.Parameter(torch.empty(num_experts, 2 * intermediate_size, hidden_size))
        self.down_proj = nn.Parameter(torch.empty(num_experts, hidden_size, intermediate_size))


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
        kernels: KernelBackend,
    ) -> None:
        super().__init__()
        self.top_k = top_k
        self.norm_topk_prob = norm_topk_prob
        self.kernels = kernels
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
        return fused_moe(
            x,
            self.experts.gate_up_proj,
            self.experts.down_proj,
            weights.to(x.dtype),
            expert_ids,
            shared=self.shared_expert(x),
            shared_gate=self.shared_expert_gate(x),
            kernels=self.kernels,
        )
