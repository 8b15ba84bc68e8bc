"""The CPU weight layout: a loaded model's linear layers and embeddings rearranged for a ``CpuPlan``.

Applied from outside the model after loading (the model code never sees it): every ``nn.Linear``
becomes a :class:`CpuLinear` that keeps the stored weight (shared with the embedding table when the
LM head is tied) and picks its matmul per call from the number of rows, as ``engine/cpu.py`` decides:

- one row (batch-1 decode, bandwidth-bound): the stored bf16 weight through ATen's bf16 gemv, the
  activation rounded to bf16 as transformers' bf16 model rounds it, the result back in the compute dtype;
- several rows (batched decode, prefill): the stored weight when the CPU multiplies that dtype natively,
  else fp32 from a second fp32 copy of the weight (``fp32_copy``) or the weight upcast per call;
- with ``bf16_kernel``, any number of rows: cortex's kernel reads the stored bf16 weight and sums in fp32
  (no second copy, the activation not rounded).

When the compute dtype differs from the stored one (fp32 over bf16), the embedding lookup returns the
compute dtype and every other parameter (norms, conv, decay, experts) is converted to it (they are small
next to the linear weights, except MoE experts, which are then held in fp32).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cortex.engine.cpu import CpuPlan, cpu_capabilities, plan_cpu
from cortex.engine.kernels import cpu_bf16_linear
from cortex.engine.kernels.cpu_bf16_linear import Bf16Linear
from cortex.engine.models.huge_pages import move_to_huge_pages


class CpuLinear(nn.Module):
    def __init__(
        self, weight: torch.Tensor, bias: torch.Tensor | None, plan: CpuPlan, kernel: Bf16Linear | None
    ) -> None:
        super().__init__()
        self.plan = plan
        self.kernel = kernel
        self.weight = weight  # [out_features, in_features], plan.weight_dtype
        self.bias = None if bias is None else nn.Parameter(bias.to(plan.compute_dtype), requires_grad=False)
        self.weight_fp32: torch.Tensor | None
        self.register_buffer(
            "weight_fp32", weight.float() if plan.batched_weights == "fp32_copy" else None, persistent=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [num_tokens, in_features] in plan.compute_dtype -> [num_tokens, out_features]
        if self.kernel is not None:
            return self.kernel(x, self.weight, self.bias)
        if x.shape[0] == 1:
            return self._gemv(x)
        if self.weight_fp32 is not None:
            return F.linear(x, self.weight_fp32, self.bias)
        if self.plan.batched_weights == "upcast":
            return F.linear(x, self.weight.float(), self.bias)
        return F.linear(x, self.weight, self.bias)

    def _gemv(self, x: torch.Tensor) -> torch.Tensor:
        if not self.plan.gemv_without_onednn:
            y = F.linear(x.to(self.weight.dtype), self.weight).to(x.dtype)
        else:
            enabled = torch._C._get_mkldnn_enabled()  # torch.backends.mkldnn.enabled, without its property
            torch._C._set_mkldnn_enabled(False)
            try:
                y = F.linear(x.to(self.weight.dtype), self.weight).to(x.dtype)
            finally:
                torch._C._set_mkldnn_enabled(enabled)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        out_features, in_features = self.weight.shape
        plan = self.plan
        return f"{in_features}, {out_features}, {plan.weight_dtype} weights, {plan.compute_dtype} compute"


class CpuEmbedding(nn.Module):
    """An embedding table in the stored dtype whose lookups come out in the compute dtype."""

    def __init__(self, weight: torch.Tensor, compute_dtype: torch.dtype) -> None:
        super().__init__()
        self.weight = weight  # [vocab_size, hidden_size]
        self.compute_dtype = compute_dtype

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        # input_ids: [num_tokens] -> [num_tokens, hidden_size] in compute_dtype
        return F.embedding(input_ids, self.weight).to(self.compute_dtype)


def apply_cpu_plan(model: nn.Module, plan: CpuPlan) -> nn.Module:
    """Rearrange ``model`` (loaded in ``plan.weight_dtype``, on the CPU) for ``plan``, in place."""
    if not plan.mixed and not plan.gemv_without_onednn:
        return model
    kernel = _bf16_kernel() if plan.batched_weights == "bf16_kernel" else None
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, CpuLinear(child.weight, child.bias, plan, kernel))
            elif isinstance(child, nn.Embedding) and plan.mixed:
                setattr(parent, name, CpuEmbedding(child.weight, plan.compute_dtype))
    if plan.mixed:
        kept = {id(m.weight) for m in model.modules() if isinstance(m, CpuLinear | CpuEmbedding)}
        with torch.no_grad():
            for module in model.modules():
                for name, param in list(module.named_parameters(recurse=False)):
                    if id(param) not in kept and param.dtype != plan.compute_dtype:
                        setattr(module, name, nn.Parameter(param.to(plan.compute_dtype), requires_grad=False))
    return model


def prepare_cpu_model(model: nn.Module, weight_dtype: torch.dtype) -> CpuPlan:
    """Plan ``model`` (loaded on the CPU in ``weight_dtype``) from this CPU's capabilities and apply it."""
    linear_weights = {id(m.weight): m.weight for m in model.modules() if isinstance(m, nn.Linear)}
    weight_bytes = sum(w.numel() * w.element_size() for w in linear_weights.values())
    caps = cpu_capabilities()
    # build the kernel only where a plan could choose it: bf16 weights, no bf16 arithmetic
    wanted = weight_dtype == torch.bfloat16 and not caps.native_bf16
    built = wanted and cpu_bf16_linear.load(caps.flags) is not None
    plan = plan_cpu(caps, weight_dtype, weight_bytes=weight_bytes, bf16_kernel=built)
    apply_cpu_plan(model, plan)
    move_to_huge_pages(model)
    return plan


def _bf16_kernel() -> Bf16Linear:
    kernel = cpu_bf16_linear.load(cpu_capabilities().flags)
    if kernel is None:
        raise RuntimeError(
            "the plan needs cortex's bf16 CPU kernel, which could not be built here (see the log)"
        )
    return kernel
