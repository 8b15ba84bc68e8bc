"""``GatedDeltaDecode``: the gated delta rule's one-token decode over fp32 state slots, on x86 CPUs.

``cpu_gated_delta_decode.c`` updates each sequence's state in its slot reading and writing it once
(the reference in ``gated_delta.py``, three torch ops per sequence, passes over it three times).
Built and loaded by :mod:`cortex.engine.kernels.cpu_native`; measured in ``benchmarks/cpu_kernels.py``.
"""

from __future__ import annotations

import ctypes
from functools import cache

import torch

from cortex.engine.kernels import cpu_native

COLUMN_BLOCK = 16  # head_v_dim must be a multiple of it (the C file's COLS)


class GatedDeltaDecode:
    def __init__(self, library: ctypes.CDLL) -> None:
        self._fn = library.cortex_gated_delta_decode
        self._fn.restype = None
        i64, ptr = ctypes.c_int64, ctypes.c_void_p
        self._fn.argtypes = [ptr, ptr, ptr, ptr, ptr, ptr, ptr, ptr, i64, i64, i64, i64, ctypes.c_int]

    @staticmethod
    def supports(state: torch.Tensor) -> bool:
        """Whether the kernel takes this state pool: fp32, contiguous, head_v_dim a multiple of 16."""
        return state.dtype == torch.float32 and state.is_contiguous() and state.shape[-1] % COLUMN_BLOCK == 0

    def __call__(
        self,
        state: torch.Tensor,
        slots: torch.Tensor,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        decay: torch.Tensor,
        beta: torch.Tensor,
    ) -> torch.Tensor:
        # state: [num_slots, H, dk, dv] fp32, updated in place; slots: [N]; q, k: [N, H, dk] normalised;
        # v: [N, H, dv]; decay (exp of the gate), beta: [N, H]; all fp32 -> o: [N, H, dv] fp32
        num_seqs, num_heads, dk = q.shape
        dv = v.shape[-1]
        if not self.supports(state) or state.shape[1:] != (num_heads, dk, dv):
            raise ValueError(f"state {tuple(state.shape)} does not fit heads of {num_heads} x {dk} x {dv}")
        q, k, v = (t.float().contiguous() for t in (q, k, v))
        decay, beta = decay.float().contiguous(), beta.float().contiguous()
        slots = slots.to(torch.int64).contiguous()
        out = torch.empty(num_seqs, num_heads, dv, dtype=torch.float32)
        self._fn(
            state.data_ptr(),
            slots.data_ptr(),
            q.data_ptr(),
            k.data_ptr(),
            v.data_ptr(),
            decay.data_ptr(),
            beta.data_ptr(),
            out.data_ptr(),
            num_seqs,
            num_heads,
            dk,
            dv,
            torch.get_num_threads(),
        )
        return out


@cache
def load(cpu_flags: frozenset[str]) -> GatedDeltaDecode | None:
    """The kernel for a CPU with ``cpu_flags`` (built once per process), or ``None`` (logged)."""
    library = cpu_native.library("cpu_gated_delta_decode", cpu_flags)
    return None if library is None else GatedDeltaDecode(library)
