"""``Bf16Linear``: fp32 activations times bf16-stored weights on x86 CPUs without bf16 arithmetic.

There torch's bf16 matmul is emulated (a fraction of its fp32 rate) and its fp32 matmul needs an fp32
copy of the weights, twice the bytes to read and hold. ``cpu_bf16_linear.c`` reads the stored bf16
weights, widens them in registers and sums in fp32 (AVX2 + FMA), for one activation row (batch-1
decode) and for many (batched decode, prefill); measured in ``benchmarks/cpu_kernels.py``. Built and
loaded by :mod:`cortex.engine.kernels.cpu_native`.
"""

from __future__ import annotations

import ctypes
from functools import cache

import torch

from cortex.engine.kernels import cpu_native


class Bf16Linear:
    """The loaded kernel: ``y = x @ weight.T + bias`` with x fp32 [M, K], weight bf16 [N, K]."""

    def __init__(self, library: ctypes.CDLL) -> None:
        self._fn = library.cortex_bf16_linear
        self._fn.restype = None
        i64, ptr = ctypes.c_int64, ctypes.c_void_p
        self._fn.argtypes = [ptr, i64, ptr, i64, ptr, ptr, i64, i64, i64, i64, ctypes.c_int]

    def __call__(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        # x: [M, K] fp32; weight: [N, K] bf16, rows contiguous; bias: [N] fp32 -> [M, N] fp32
        if x.dtype != torch.float32 or weight.dtype != torch.bfloat16 or x.dim() != 2:
            raise TypeError(f"Bf16Linear takes fp32 [M, K] and bf16 weights, got {x.dtype} {weight.dtype}")
        if x.stride(-1) != 1:
            x = x.contiguous()
        num_rows, in_features = x.shape
        out_features = weight.shape[0]
        if weight.stride(-1) != 1 or weight.shape[1] != in_features:
            raise ValueError(f"weight {tuple(weight.shape)} does not take rows of {in_features}")
        y = torch.empty(num_rows, out_features, dtype=torch.float32)
        self._fn(
            x.data_ptr(),
            x.stride(0),
            weight.data_ptr(),
            weight.stride(0),
            None if bias is None else bias.data_ptr(),
            y.data_ptr(),
            out_features,
            num_rows,
            out_features,
            in_features,
            torch.get_num_threads(),
        )
        return y


@cache
def load(cpu_flags: frozenset[str]) -> Bf16Linear | None:
    """The kernel for a CPU with ``cpu_flags`` (built once per process), or ``None`` (logged)."""
    library = cpu_native.library("cpu_bf16_linear", cpu_flags)
    return None if library is None else Bf16Linear(library)
