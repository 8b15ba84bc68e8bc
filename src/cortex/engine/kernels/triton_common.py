"""Building blocks shared by the kernels (the Gated DeltaNet ones, paged attention, fused MoE, the norms):
two device functions and the host-side choices their launches make.

- ``ragged_block``: which sequence, and which block of it, a program of a ragged launch works on. The
  launch has ``num_tokens // BLOCK + num_seqs`` programs; sequence ``i``'s blocks are programs
  ``cu_seqlens[i] // BLOCK + i`` onwards (these starts grow by at least the sequence's block count, so
  the ranges never overlap, and at most one program per sequence is wasted). It is found by binary
  search over ``cu_seqlens`` on the device: no chunk table is built on the host, nothing is read back.
- ``gates``: ``g = -exp(A_log) * softplus(a + dt_bias)`` (torch's softplus, threshold 20) and ``beta =
  sigmoid(b)``.
- ``SUM`` / ``MAX``: the combiners for ``tl.reduce`` / ``tl.associative_scan``, which the kernels call
  instead of ``tl.sum`` / ``tl.cumsum`` / ``tl.max``. Those are themselves jit functions, and Triton's
  interpreter re-patches the language on every jit-function call (about 5 ms each); with ``SUM`` and
  ``MAX`` the operations are the same on a GPU and plain numpy reductions in the interpreter, which
  keeps the kernel tests affordable in CI.
- ``dot_operand_dtype``: the dtype ``tl.dot`` operands are cast to. On a GPU that is the model's dtype
  (the tensor cores read 16-bit operands); on CPU tensors, which only Triton's interpreter runs, it is
  float32, because Triton 3.9's interpreter multiplies bfloat16 operands as their raw 16-bit integers.
  The operands are rounded to the model's dtype first either way, so both see the same numbers.

Only Triton APIs that both Triton 3.6 (the GPU machine) and 3.9 (CI) have are used.
"""

from __future__ import annotations

from typing import Any

import torch

from cortex.engine.kernels.triton_import import HAS_TRITON, jit, tl

MIN_HEAD_DIM = 16  # tl.dot needs 16 in every dimension
MAX_HEAD_DIM = 256  # the state block [head_k_dim, BV] stays in registers
SUM = tl.standard._sum_combine if HAS_TRITON else None
MAX = tl.standard._elementwise_max if HAS_TRITON else None


def check_head_dims(*dims: int) -> None:
    """The Gated DeltaNet kernels' shape limits: head dims that are powers of two in [16, 256]."""
    for dim in dims:
        if dim < MIN_HEAD_DIM or dim > MAX_HEAD_DIM or dim & (dim - 1):
            raise ValueError(
                "the Gated DeltaNet Triton kernels need head dims that are powers of two in "
                f"[{MIN_HEAD_DIM}, {MAX_HEAD_DIM}], got {dim}"
            )


def packed_heads(x: torch.Tensor) -> torch.Tensor:
    """``x: [num_tokens, num_heads, head_dim]`` with each token's heads packed (any token stride), else
    a packed copy."""
    if x.stride(2) != 1 or x.stride(1) != x.shape[2]:
        return x.contiguous()
    return x


def row_major(x: torch.Tensor) -> torch.Tensor:
    """``x: [rows, cols]`` with unit column stride (any row stride), else a contiguous copy."""
    return x if x.stride(1) == 1 else x.contiguous()


def search_steps(num_seqs: int) -> int:
    """Binary-search iterations ``ragged_block`` needs to pick one of ``num_seqs`` sequences."""
    return max(num_seqs, 1).bit_length()


def dot_operand_dtype(x: torch.Tensor) -> Any:
    """The ``tl.dot`` operand dtype for kernels reading ``x`` (see the module docstring)."""
    if x.device.type == "cpu":
        return tl.float32
    return {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}[x.dtype]


def dot_precision(x: torch.Tensor) -> str:
    """``input_precision`` of float32 ``tl.dot``s: exact for a float32 model, TF32 (flash-linear-attention's
    choice for the triangular solve's merges) when the model runs in 16 bits."""
    return "ieee" if x.dtype == torch.float32 else "tf32"


def state_block_v(num_seqs: int, num_v_heads: int, head_v_dim: int) -> int:
    """BV, the slice of head_v_dim one program of a state kernel holds: 32, or 16 when 32 would leave an
    H100/H200 (132 SMs) fewer than two programs per SM."""
    return 32 if head_v_dim >= 32 and num_seqs * num_v_heads * (head_v_dim // 32) >= 264 else 16


@jit
def gates(a, b, A_h, dt_bias_h) -> Any:
    # a, b: float32 raw projections (any shape); A_h = exp(A_log), dt_bias_h: scalars -> (g, beta)
    x = a + dt_bias_h
    return -A_h * tl.where(x > 20.0, x, tl.log(1.0 + tl.exp(tl.minimum(x, 20.0)))), 1.0 / (1.0 + tl.exp(-b))


@jit
def ragged_block(cu_seqlens, pid, num_seqs, num_search_steps, BLOCK: tl.constexpr) -> Any:
    # -> (seq, bos, eos, block): program pid covers tokens [bos + block * BLOCK, ...) of sequence seq
    lo = pid * 0
    hi = lo + num_seqs - 1
    for _ in range(num_search_steps):
        mid = (lo + hi + 1) // 2
        start = tl.load(cu_seqlens + mid) // BLOCK + mid
        take = start <= pid
        lo = tl.where(take, mid, lo)
        hi = tl.where(take, hi, mid - 1)
    bos = tl.load(cu_seqlens + lo)
    eos = tl.load(cu_seqlens + lo + 1)
    return lo, bos, eos, pid - (bos // BLOCK + lo)
