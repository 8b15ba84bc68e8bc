"""KernelLaunch: one Triton kernel launch, described as data (kernel, grid, arguments, compile options).

Every op builds its launches through one function of its inputs, which both runs them (``launch()``)
and, called with meta tensors at a model's shapes, gives the sm_90 compile harness
(:mod:`cortex.engine.kernels.compile_specs`) exactly the signature and constexprs the op launches with.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

_TRITON_DTYPES: Mapping[torch.dtype, str] = {
    torch.float32: "fp32",
    torch.float16: "fp16",
    torch.bfloat16: "bf16",
    torch.float64: "fp64",
    torch.int64: "i64",
    torch.int32: "i32",
    torch.int16: "i16",
    torch.int8: "i8",
    torch.uint8: "u8",
    torch.bool: "i1",
}


@dataclass(frozen=True, slots=True)
class KernelLaunch:
    """``kernel[grid](**args, **constexprs, num_warps=..., num_stages=...)``.

    ``args`` are the runtime arguments (tensors, ints, floats) and ``constexprs`` the compile-time ones,
    each keyed by the kernel's parameter name.
    """

    kernel: Any  # a triton JITFunction (or InterpretedFunction under TRITON_INTERPRET=1)
    grid: tuple[int, ...]
    args: Mapping[str, Any]
    constexprs: Mapping[str, Any] = field(default_factory=dict)
    num_warps: int = 4
    num_stages: int = 2

    def __call__(self) -> None:
        if min(self.grid, default=0) == 0:
            return
        self.kernel[self.grid](
            **self.args,
            **self.constexprs,
            num_warps=self.num_warps,
            num_stages=self.num_stages,
            enable_fp_fusion=True,  # Triton's default, stated: 3.9 warns when it is left implicit
        )

    def signature(self) -> dict[str, str]:
        """Triton's type string per parameter (``*bf16``, ``i32``, ``fp32``, ``constexpr``)."""
        signature = {name: _type_string(value) for name, value in self.args.items()}
        signature.update(dict.fromkeys(self.constexprs, "constexpr"))
        return signature


def _type_string(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return "*" + _TRITON_DTYPES[value.dtype]
    if isinstance(value, bool):
        return "i1"
    if isinstance(value, int):
        return "i32" if -(2**31) <= value < 2**31 else "i64"
    if isinstance(value, float):
        return "fp32"
    raise TypeError(f"no Triton type for a kernel argument of type {type(value).__name__}")
