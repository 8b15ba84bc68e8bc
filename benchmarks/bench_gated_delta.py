"""The Gated DeltaNet kernels against their references and flash-linear-attention, at the models' shapes.

For each linear-attention head shape of Qwen3.5-0.8B, -9B, -27B and Qwen3.6-35B-A3B (the 9B and 35B-A3B
layers share one), bfloat16 activations:

- ``gated_delta_rule_prefill``: 1 x 8192 tokens from a fresh state (the issue's target: at most 0.34 ms
  on an H200 at 16 q/k heads, 32 v heads, head dim 128), and a ragged batch of 8 sequences (8192
  tokens, lengths 1 to 3000) continuing states by slot, with a float32 and a bfloat16 state pool.
  Peer: flash-linear-attention's ``chunk_gated_delta_rule`` with ``cu_seqlens`` and the q/k l2 norm in
  its kernel. The peer is given what it cannot compute itself, outside its timing: ``g`` and ``beta``
  already activated, the initial states gathered from the pool, contiguous q/k/v; its final states are
  not scattered back. Ours computes all of that inside its time.
- ``gated_delta_rule_decode``: batch 1 and 32, float32 and bfloat16 state, in place by slot; and
  ``gated_delta_rule_decode_multi``: 8 sequences x 4 tokens keeping every token's state. Peer:
  ``fused_recurrent_gated_delta_rule`` (the same head-start as above; for the multi-token case it keeps
  only the last state, less work than ours).
- ``causal_conv1d_prefill`` over the same ragged batch (peer: flash-linear-attention's ``causal_conv1d``
  with SiLU, from zero history) and ``causal_conv1d_decode`` at batch 32 (no peer).

Columns: median time (``triton.testing.do_bench``) of ours, the PyTorch reference and the peer; ours'
speed-up over the peer; the bytes a perfect kernel moves and the chunked algorithm's FLOPs turned into
TB/s and TFLOP/s and into fractions of the H200's 4.8 TB/s and 989 dense bf16 TFLOP/s; and the relative
RMS difference between our output and the peer's (an independent implementation of the same maths).
When flash-linear-attention does not install, the peer columns say so and the rest still runs.

    python benchmarks/bench_gated_delta.py --device cuda
    python benchmarks/bench_gated_delta.py --device cuda --models 9b                # the target's shape
    TRITON_INTERPRET=1 python benchmarks/bench_gated_delta.py --device cpu --tiny   # a dry run

``cases`` (the rows, one at a time), ``measure`` and ``table_row`` let another script (a table of every
kernel) take these rows. Rows are printed as they are measured, the target's shape first. CPU timings
(the dry run) say nothing about GPU speed.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from cortex.engine.kernels.causal_conv1d import causal_conv1d_decode, causal_conv1d_prefill
from cortex.engine.kernels.compile_specs import MODEL_SHAPES, ModelShape
from cortex.engine.kernels.gated_delta import (
    gated_delta_gates_ref,
    gated_delta_rule_decode,
    gated_delta_rule_decode_multi,
    gated_delta_rule_prefill,
)
from cortex.engine.kernels.gated_delta_chunk import CHUNK_SIZE
from cortex.engine.kernels.selection import KernelBackend, resolve_kernels

H200_BYTES_PER_S = 4.8e12
H200_BF16_FLOPS = 989e12
PREFILL_TARGET_MS = 0.34  # issue 10, at 16 q/k heads, 32 v heads, head dim 128
TARGET_V_HEADS = 32
DECODE_BATCH = 32
RAGGED_LENS = (1, 63, 64, 65, 999, 3000, 2000, 2000)  # 8192 tokens: short, chunk - 1, chunk, chunk + 1


@dataclass(frozen=True, slots=True)
class LinearShape:
    """The sizes of one model's Gated DeltaNet layer, and which models have it."""

    models: str
    num_k_heads: int
    num_v_heads: int
    head_k_dim: int
    head_v_dim: int
    conv_kernel: int

    @property
    def conv_dim(self) -> int:
        return 2 * self.num_k_heads * self.head_k_dim + self.num_v_heads * self.head_v_dim


@dataclass(frozen=True, slots=True)
class Peer:
    name: str
    run: Callable[[], torch.Tensor]  # returns the output, shaped as ours


@dataclass(frozen=True, slots=True)
class Case:
    """One row: what runs, what a perfect kernel moves and computes, and how close ours is to the peer."""

    op: str
    models: str
    setup: str
    bytes_moved: int
    flops: int
    ours: Callable[[], torch.Tensor]
    reference: Callable[[], torch.Tensor]
    peer: Peer | None  # None: no peer for this op, or it cannot run here (peer_missing says which)
    peer_missing: str = ""  # why the peer could not run (not installed, refused the shape)
    error_vs_peer: float | None = None  # relative RMS of our output against the peer's


@dataclass(frozen=True, slots=True)
class Row:
    case: Case
    ours_ms: float
    reference_ms: float
    peer_ms: float | None


def linear_shapes(tiny: bool) -> list[LinearShape]:
    """The distinct linear-attention shapes of ``MODEL_SHAPES`` (or one tiny one for a dry run)."""
    if tiny:
        return [LinearShape("tiny", 2, 4, 16, 32, 4)]
    by_sizes: dict[tuple[int, ...], list[ModelShape]] = {}
    for shape in MODEL_SHAPES:
        sizes = (
            shape.linear_num_k_heads,
            shape.linear_num_v_heads,
            shape.linear_head_k_dim,
            shape.linear_head_v_dim,
            shape.conv_kernel,
        )
        by_sizes.setdefault(sizes, []).append(shape)
    return [LinearShape(" / ".join(s.name for s in shapes), *sizes) for sizes, shapes in by_sizes.items()]


def rel_rms(x: torch.Tensor, ref: torch.Tensor) -> float:
    x, ref = x.double(), ref.double()
    return float((x - ref).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt())


class _Inputs:
    """Random inputs laid out as the layer lays them out (q, k, v views of one conv output)."""

    def __init__(self, shape: LinearShape, num_tokens: int, device: torch.device, seed: int) -> None:
        gen = torch.Generator(device=device).manual_seed(seed)
        hk, hv, dk, dv = shape.num_k_heads, shape.num_v_heads, shape.head_k_dim, shape.head_v_dim
        self.shape = shape
        self.mixed = torch.randn(num_tokens, shape.conv_dim, generator=gen, device=device).bfloat16()
        self.q = self.mixed[:, : hk * dk].view(num_tokens, hk, dk)
        self.k = self.mixed[:, hk * dk : 2 * hk * dk].view(num_tokens, hk, dk)
        self.v = self.mixed[:, 2 * hk * dk :].view(num_tokens, hv, dv)
        self.a = torch.randn(num_tokens, hv, generator=gen, device=device).bfloat16()
        self.b = torch.randn(num_tokens, hv, generator=gen, device=device).bfloat16()
        # A_log, dt_bias as the checkpoints have them: decay rates exp(A_log) in [1, 16]
        self.A_log = torch.empty(hv, device=device).uniform_(0, 2.77, generator=gen)
        self.dt_bias = torch.rand(hv, generator=gen, device=device)
        weight = torch.randn(shape.conv_dim, shape.conv_kernel, generator=gen, device=device)
        self.conv_weight = (weight / 2).bfloat16()

    def gates(self) -> dict[str, torch.Tensor]:
        return {"a": self.a, "b": self.b, "A_log": self.A_log, "dt_bias": self.dt_bias}

    def pool(self, num_slots: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
        s = self.shape
        gen = torch.Generator(device=self.mixed.device).manual_seed(seed)
        size = (num_slots, s.num_v_heads, s.head_k_dim, s.head_v_dim)
        return (torch.randn(size, generator=gen, device=self.mixed.device) / 4).to(dtype)

    def fla_args(self) -> dict[str, torch.Tensor]:
        """q, k, v, g (log decay) and beta (activated), ``[1, T, heads, dim]``, for flash-linear-attention."""
        g, beta = gated_delta_gates_ref(self.a, self.b, self.A_log, self.dt_bias, torch.float32)
        return {
            "q": self.q.contiguous()[None],
            "k": self.k.contiguous()[None],
            "v": self.v.contiguous()[None],
            "g": g[None],
            "beta": beta.bfloat16()[None],
        }


def _cu_seqlens(lens: tuple[int, ...], device: torch.device) -> torch.Tensor:
    return F.pad(torch.tensor(lens, device=device).cumsum(0), (1, 0)).to(torch.int32)


def _fla_gva(fn: Callable[..., Any], args: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Its arguments as this flash-linear-attention takes them: natively grouped values (v0.5+) or q/k
    repeated per value head (older releases), with a note for the second."""
    try:
        fn(**args, use_qk_l2norm_in_kernel=True)
        return args, ""
    except Exception:
        group = args["v"].shape[2] // args["q"].shape[2]
        repeated = {n: args[n].repeat_interleave(group, dim=2).contiguous() for n in ("q", "k")}
        return {**args, **repeated}, " (q/k repeated)"


def _prefill_flops(shape: LinearShape, num_tokens: int) -> int:
    # per token and value head: q k^T, k k^T, T k (2C K each), T v, A v_new (2C V each), w S, q S, k^T v
    c, dk, dv = CHUNK_SIZE, shape.head_k_dim, shape.head_v_dim
    return num_tokens * shape.num_v_heads * (2 * c * (3 * dk + 2 * dv) + 6 * dk * dv)


def _qkv_gate_bytes(shape: LinearShape, num_tokens: int) -> int:
    # q, k, v read, o written, a and b read, all bf16
    per_token = 2 * shape.num_k_heads * shape.head_k_dim + 2 * shape.num_v_heads * shape.head_v_dim
    return 2 * num_tokens * (per_token + 2 * shape.num_v_heads)


def prefill_case(
    shape: LinearShape, device: torch.device, lens: tuple[int, ...], *, fresh: bool, state_dtype: torch.dtype
) -> Case:
    num_seqs, num_tokens = len(lens), sum(lens)
    x = _Inputs(shape, num_tokens, device, seed=num_tokens + num_seqs)
    cu = _cu_seqlens(lens, device)
    slots = torch.randperm(2 * num_seqs, device=device)[:num_seqs]
    initial = torch.full((num_seqs,), not fresh, dtype=torch.bool, device=device)
    before = x.pool(2 * num_seqs, state_dtype, seed=3)
    pool = before.clone()

    def run(kernels: KernelBackend) -> Callable[[], torch.Tensor]:
        return lambda: gated_delta_rule_prefill(
            x.q, x.k, x.v, **x.gates(), state=pool, cu_seqlens=cu, state_slots=slots,
            has_initial_state=initial, kernels=kernels,
        )  # fmt: skip

    ours = run("triton")
    state_bytes = num_seqs * shape.num_v_heads * shape.head_k_dim * shape.head_v_dim * state_dtype.itemsize
    setup = f"{num_seqs} x {num_tokens // num_seqs}" if len(set(lens)) == 1 else f"{num_seqs} seqs, ragged"
    setup += f", {'fresh' if fresh else 'by slot'}, state {str(state_dtype).removeprefix('torch.')}"
    case = Case(
        op="gated_delta_rule_prefill",
        models=shape.models,
        setup=f"{setup}, {num_tokens} tokens",
        bytes_moved=_qkv_gate_bytes(shape, num_tokens) + state_bytes * (1 if fresh else 2),
        flops=_prefill_flops(shape, num_tokens),
        ours=ours,
        reference=run("ref"),
        peer=None,
    )

    def peer() -> Peer:
        fla = importlib.import_module("fla.ops.gated_delta_rule")
        args: dict[str, Any] = {**x.fla_args(), "cu_seqlens": cu.long(), "output_final_state": True}
        if not fresh:
            args["initial_state"] = before[slots].float()
        args, note = _fla_gva(fla.chunk_gated_delta_rule, args)
        return Peer(
            "fla chunk_gated_delta_rule" + note,
            lambda: fla.chunk_gated_delta_rule(**args, use_qk_l2norm_in_kernel=True)[0][0],
        )

    return _attach_peer(case, peer, lambda: (pool.copy_(before), ours())[1])


def decode_case(
    shape: LinearShape, device: torch.device, num_seqs: int, num_tokens: int, state_dtype: torch.dtype
) -> Case:
    rows = num_seqs * num_tokens
    x = _Inputs(shape, rows, device, seed=rows + 7)
    home = torch.randperm(4 * num_seqs, device=device)[:num_seqs]
    before = x.pool(4 * num_seqs, state_dtype, seed=5)
    pool = before.clone()
    if num_tokens == 1:
        op = "gated_delta_rule_decode"

        def run(kernels: KernelBackend) -> Callable[[], torch.Tensor]:
            return lambda: gated_delta_rule_decode(
                x.q, x.k, x.v, **x.gates(), state=pool, state_slots=home, kernels=kernels
            )

    else:
        op = "gated_delta_rule_decode_multi"
        free = torch.tensor([s for s in range(4 * num_seqs) if s not in set(home.tolist())], device=device)
        token_slots = torch.cat((free[: num_seqs * (num_tokens - 1)].view(num_seqs, -1), home[:, None]), 1)

        def run(kernels: KernelBackend) -> Callable[[], torch.Tensor]:
            return lambda: gated_delta_rule_decode_multi(
                x.q, x.k, x.v, **x.gates(), state=pool, initial_state_slots=home,
                token_state_slots=token_slots, kernels=kernels,
            )  # fmt: skip

    ours = run("triton")
    state_bytes = shape.num_v_heads * shape.head_k_dim * shape.head_v_dim * state_dtype.itemsize
    case = Case(
        op=op,
        models=shape.models,
        setup=f"batch {num_seqs} x {num_tokens}, state {str(state_dtype).removeprefix('torch.')}",
        bytes_moved=_qkv_gate_bytes(shape, rows) + num_seqs * state_bytes * (1 + num_tokens),
        flops=rows * shape.num_v_heads * 8 * shape.head_k_dim * shape.head_v_dim,
        ours=ours,
        reference=run("ref"),
        peer=None,
    )

    def peer() -> Peer:
        fla = importlib.import_module("fla.ops.gated_delta_rule")
        # [num_seqs, num_tokens, ...]: one sequence per batch row
        args: dict[str, Any] = {
            n: t.reshape(num_seqs, num_tokens, *t.shape[2:]) for n, t in x.fla_args().items()
        }
        args |= {"initial_state": before[home].float(), "output_final_state": True}
        args, note = _fla_gva(fla.fused_recurrent_gated_delta_rule, args)
        return Peer(
            "fla fused_recurrent" + note,
            lambda: fla.fused_recurrent_gated_delta_rule(**args, use_qk_l2norm_in_kernel=True)[0].reshape(
                rows, shape.num_v_heads, shape.head_v_dim
            ),
        )

    return _attach_peer(case, peer, lambda: (pool.copy_(before), ours())[1])


def conv_cases(shape: LinearShape, device: torch.device, lens: tuple[int, ...]) -> list[Case]:
    num_seqs, num_tokens = len(lens), sum(lens)
    x = _Inputs(shape, num_tokens, device, seed=11)
    cu = _cu_seqlens(lens, device)
    num_slots = max(2 * num_seqs, DECODE_BATCH)
    slots = torch.randperm(num_slots, device=device)[:num_seqs]
    decode_slots = torch.randperm(num_slots, device=device)[:DECODE_BATCH]
    history = torch.zeros(num_slots, shape.conv_dim, shape.conv_kernel - 1, device=device).bfloat16()
    fresh = torch.zeros(num_seqs, dtype=torch.bool, device=device)

    def prefill(kernels: KernelBackend) -> Callable[[], torch.Tensor]:
        return lambda: causal_conv1d_prefill(
            x.mixed, x.conv_weight, history, cu_seqlens=cu, state_slots=slots, has_initial_state=fresh,
            kernels=kernels,
        )  # fmt: skip

    batch = x.mixed[:DECODE_BATCH]

    def decode(kernels: KernelBackend) -> Callable[[], torch.Tensor]:
        return lambda: causal_conv1d_decode(
            batch, x.conv_weight, history, state_slots=decode_slots, kernels=kernels
        )

    dim, width = shape.conv_dim, shape.conv_kernel
    prefill_case = Case(
        op="causal_conv1d_prefill",
        models=shape.models,
        setup=f"{num_seqs} seqs, ragged, fresh, {num_tokens} tokens",
        bytes_moved=2 * (2 * num_tokens * dim + num_seqs * dim * (width - 1)),
        flops=2 * num_tokens * dim * width,
        ours=prefill("triton"),
        reference=prefill("ref"),
        peer=None,
    )
    decode_case = Case(
        op="causal_conv1d_decode",
        models=shape.models,
        setup=f"batch {DECODE_BATCH}",
        bytes_moved=2 * DECODE_BATCH * dim * (2 + 2 * (width - 1)),
        flops=2 * DECODE_BATCH * dim * width,
        ours=decode("triton"),
        reference=decode("ref"),
        peer=None,
        peer_missing="no public peer",
    )

    def peer() -> Peer:
        try:
            module = importlib.import_module("fla.modules.conv")
        except ImportError:  # releases before the conv package
            module = importlib.import_module("fla.modules.convolution")
        mixed = x.mixed.contiguous()[None]
        return Peer(
            "fla causal_conv1d",
            lambda: module.causal_conv1d(
                mixed, weight=x.conv_weight, activation="silu", cu_seqlens=cu.long(), output_final_state=True
            )[0][0],
        )

    return [_attach_peer(prefill_case, peer, prefill_case.ours), decode_case]


def _attach_peer(case: Case, peer: Callable[[], Peer], ours_output: Callable[[], torch.Tensor]) -> Case:
    """``case`` with its peer and the error column (one run of each), or with why the peer cannot run
    here (not installed, fails to import, refuses the shape): that row's peer columns say so."""
    try:
        built = peer()
        theirs = built.run()
    except Exception as exc:  # whatever the peer raises, the table goes on without it
        why = (
            "not installed"
            if isinstance(exc, ImportError)
            else f"failed ({type(exc).__name__}: {exc}"[:90] + ")"
        )
        return dataclasses.replace(case, peer_missing=f"flash-linear-attention {why}")
    return dataclasses.replace(case, peer=built, error_vs_peer=rel_rms(ours_output(), theirs))


def cases(device: torch.device, *, tiny: bool = False, models: str = "") -> Iterator[Case]:
    """Every row of the table, one at a time (building one runs its kernel and its peer once, for the
    error column), for the head shapes whose model names contain ``models``; the target's shape first."""
    if resolve_kernels("triton", device) != "triton":  # raises KernelUnavailableError with the reason
        raise RuntimeError("the Triton kernels cannot run here")
    lens = (1, 15, 64, 65, 100) if tiny else RAGGED_LENS
    long = (130,) if tiny else (8192,)
    shapes = sorted(linear_shapes(tiny), key=lambda s: s.num_v_heads != TARGET_V_HEADS)
    for shape in (s for s in shapes if models in s.models):
        yield prefill_case(shape, device, long, fresh=True, state_dtype=torch.float32)
        for state_dtype in (torch.float32, torch.bfloat16):
            yield prefill_case(shape, device, lens, fresh=False, state_dtype=state_dtype)
        for num_seqs, state_dtype in ((1, torch.float32), (32, torch.float32), (32, torch.bfloat16)):
            yield decode_case(shape, device, num_seqs, 1, state_dtype)
        yield decode_case(shape, device, 8, 4, torch.float32)
        yield from conv_cases(shape, device, lens)


def time_ms(fn: Callable[[], torch.Tensor], device: torch.device, repeats: int) -> float:
    """Median milliseconds per call: CUDA-event timing on a GPU, wall time otherwise."""
    if device.type == "cuda":
        from triton.testing import do_bench

        return float(do_bench(fn, warmup=25, rep=100, return_mode="median"))
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def measure(case: Case, device: torch.device, repeats: int = 3) -> Row:
    peer_ms = time_ms(case.peer.run, device, repeats) if case.peer else None
    return Row(case, time_ms(case.ours, device, repeats), time_ms(case.reference, device, repeats), peer_ms)


HEADER = (
    "| op | models | setup | ours ms | ref ms | peer | peer ms | x peer | TB/s | TFLOP/s "
    "| % HBM | % bf16 | rel err vs peer |\n|" + "---|" * 13
)


def table_row(row: Row) -> str:
    """One markdown row under ``HEADER``."""
    c = row.case
    tb = c.bytes_moved / (row.ours_ms * 1e-3) / 1e12
    tf = c.flops / (row.ours_ms * 1e-3) / 1e12
    peer = c.peer.name if c.peer else c.peer_missing
    peer_ms = f"{row.peer_ms:.4f}" if row.peer_ms is not None else "-"
    ratio = f"{row.peer_ms / row.ours_ms:.2f}" if row.peer_ms is not None else "-"
    error = f"{c.error_vs_peer:.1e}" if c.error_vs_peer is not None else "-"
    return (
        f"| {c.op} | {c.models} | {c.setup} | {row.ours_ms:.4f} | {row.reference_ms:.3f} | {peer} "
        f"| {peer_ms} | {ratio} | {tb:.3f} | {tf:.1f} | {100 * tb * 1e12 / H200_BYTES_PER_S:.1f} "
        f"| {100 * tf * 1e12 / H200_BF16_FLOPS:.1f} | {error} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="one tiny head shape (a CPU dry run)")
    parser.add_argument("--models", default="", help="only the shapes of models whose name contains this")
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (Triton interpreter)"
    print(f"Gated DeltaNet kernels on {name}, torch {torch.__version__}")
    print(f"target: 1 x 8192 prefill at 16 q/k heads, 32 v heads, head dim 128 <= {PREFILL_TARGET_MS} ms")
    print(HEADER)
    for case in cases(device, tiny=args.tiny, models=args.models):  # each row as soon as it is measured
        print(table_row(measure(case, device)), flush=True)


if __name__ == "__main__":
    main()
