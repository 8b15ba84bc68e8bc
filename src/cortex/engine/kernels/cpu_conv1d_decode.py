"""``Conv1dDecode``: the causal conv1d's one-token decode over a bf16 or fp32 history pool, on x86 CPUs.

``cpu_conv1d_decode.c`` does per channel what the reference in ``causal_conv1d.py`` does with a gather,
a concatenation, a multiply-sum, a SiLU and an index copy (five passes and four temporaries at
Qwen3.5's 6,144 channels). Built and loaded by :mod:`cortex.engine.kernels.cpu_native`; measured in
``benchmarks/cpu_kernels.py``.
"""

from __future__ import annotations

import ctypes
from functools import cache

import torch

from cortex.engine.kernels import cpu_native

MAX_KERNEL = 16  # the C file's MAX_KERNEL


class Conv1dDecode:
    def __init__(self, library: ctypes.CDLL) -> None:
        self._fn = library.cortex_conv1d_decode
        self._fn.restype = None
        i64, ptr = ctypes.c_int64, ctypes.c_void_p
        self._fn.argtypes = [ptr, i64, ptr, ptr, ctypes.c_int, ptr, ptr, i64, i64, i64, ctypes.c_int]

    @staticmethod
    def supports(x: torch.Tensor, weight: torch.Tensor, conv_state: torch.Tensor) -> bool:
        """fp32 inputs and weights, a contiguous bf16 or fp32 pool, a kernel of at most 16 taps."""
        return (
            x.dtype == weight.dtype == torch.float32
            and conv_state.dtype in (torch.bfloat16, torch.float32)
            and conv_state.is_contiguous()
            and weight.shape[-1] <= MAX_KERNEL
        )

    def __call__(
        self, x: torch.Tensor, weight: torch.Tensor, conv_state: torch.Tensor, state_slots: torch.Tensor
    ) -> torch.Tensor:
        # x: [num_seqs, conv_dim] fp32 (rows may be strided); weight: [conv_dim, kernel] fp32;
        # conv_state: [num_slots, conv_dim, kernel - 1], updated in place; state_slots: [num_seqs]
        if not self.supports(x, weight, conv_state) or conv_state.shape[1:] != (
            x.shape[1],
            weight.shape[1] - 1,
        ):
            raise ValueError(f"conv_state {tuple(conv_state.shape)} does not fit x {tuple(x.shape)}")
        if x.stride(-1) != 1:
            x = x.contiguous()
        weight = weight.contiguous()
        slots = state_slots.to(torch.int64).contiguous()
        out = torch.empty(x.shape, dtype=torch.float32)
        self._fn(
            x.data_ptr(),
            x.stride(0),
            weight.data_ptr(),
            conv_state.data_ptr(),
            int(conv_state.dtype == torch.bfloat16),
            slots.data_ptr(),
            out.data_ptr(),
            x.shape[0],
            x.shape[1],
            weight.shape[1],
            torch.get_num_threads(),
        )
        return out


@cache
def load(cpu_flags: frozenset[str]) -> Conv1dDecode | None:
    """The kernel for a CPU with ``cpu_flags`` (built once per process), or ``None`` (logged)."""
    library = cpu_native.library("cpu_conv1d_decode", cpu_flags)
    return None if library is None else Conv1dDecode(library)
