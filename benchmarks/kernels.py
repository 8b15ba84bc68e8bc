"""Every custom op of ``cortex.engine.kernels`` against its PyTorch reference and the best public peer
that runs here, at the shapes of Qwen3.5-0.8B, -9B, -27B and Qwen3.6-35B-A3B, as one table.

Per case: the time of cortex's Triton kernel, of its ``*_ref`` and of each peer; the bytes the op must
move at least and the FLOPs it does (the formulas are beside each case), hence achieved GB/s and
TFLOP/s; the fraction of the H200's roofline (``max(bytes / 4.8 TB/s, FLOPs / 989 TFLOP/s)`` in bf16,
the datasheet's figures; the machine's own copy bandwidth and matmul rate are measured and printed
above the table); and the speed ratio to the peer (``peer time / cortex time``: above 1 is faster).
The largest difference between the kernel's output and the reference's is printed beside it.

Peers, where importable: flash-linear-attention (``fla-core``) for the Gated DeltaNet ops
(``chunk_gated_delta_rule``, ``fused_recurrent_gated_delta_rule``, ``causal_conv1d``: those rows, their
inputs and byte and FLOP counts come from ``bench_gated_delta.cases``) and for the norms (fused
``rms_norm`` with residual, ``rms_norm_gated``); torch SDPA (flash attention over a contiguous KV cache:
no paging, no output gate); a torch grouped-GEMM MoE (``torch._grouped_mm`` over expert-sorted tokens)
where torch has it. vLLM and flashinfer do not fit the GPU machine (their wheels are 336 MB and 101 MB,
over its 64 MiB carry limit), so they are not peers here; FlexAttention is not one yet.

Timing on CUDA: each call's GPU time between CUDA events with the L2 cache flushed before it (a 256 MB
write), median of the repeats. Kernel and peer calls that a CUDA graph can capture are timed replayed
from one (as the engine's decode steps run, without per-launch host overhead); the references, and
peers that read device values on the host, are timed eagerly (the ``mode`` column). On a CPU (``--tiny``
under ``TRITON_INTERPRET=1``) the times are wall-clock and say nothing about a GPU: that mode exists to
dry-run this script end to end at tiny shapes.

    python benchmarks/kernels.py --device cuda                       # all models (about 2 min on an H200)
    python benchmarks/kernels.py --device cuda --models qwen3.5-9b --ops paged_attention_decode
    TRITON_INTERPRET=1 python benchmarks/kernels.py --device cpu --tiny   # the CPU dry run
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import bench_gated_delta  # benchmarks/bench_gated_delta.py: the Gated DeltaNet rows
from cortex.engine.kernels.compile_specs import MODEL_SHAPES, ModelShape
from cortex.engine.kernels.fused_moe import fused_moe
from cortex.engine.kernels.kv_cache import store_kv_cache
from cortex.engine.kernels.paged_attention import paged_attention_decode, paged_attention_prefill
from cortex.engine.kernels.qk_norm_rotary import qk_norm_rotary
from cortex.engine.kernels.rms_norm import add_rms_norm, gated_rms_norm
from cortex.engine.kernels.rotary import rotary_cos_sin

H200_BANDWIDTH = 4.8e12  # bytes/s, HBM3e (datasheet)
H200_PEAK_FLOPS = {torch.bfloat16: 989e12, torch.float32: 67e12}  # dense (datasheet)
BLOCK_SIZE = 16
# issue 10's kernel target: the 1 x 8192-token Gated DeltaNet prefill at 16 q/k and 32 v heads (9B's shape)
TARGET_CASE = ("gated_delta_rule_prefill", "qwen3.5-9b", "1 x 8192")  # op, model, workload
TARGET_MS = 0.34
EPS = 1e-6

Fn = Callable[[], Any]

# A shape small enough for Triton's interpreter (the CPU dry run), with every feature the real ones
# have: GQA, GVA, an output gate, partial rotary, experts.
TINY = ModelShape(
    name="tiny",
    hidden_size=64,
    num_heads=4,
    num_kv_heads=2,
    head_dim=32,
    rotary_dim=16,
    linear_num_k_heads=2,
    linear_num_v_heads=4,
    linear_head_k_dim=16,
    linear_head_v_dim=16,
    conv_kernel=4,
    intermediate_size=128,
    num_experts=8,
    num_experts_per_tok=2,
    moe_intermediate_size=32,
    shared_expert_intermediate_size=32,
)


@dataclass(frozen=True)
class Sizes:
    """Token counts and batch sizes of the workloads (a model-scale set, and a tiny one)."""

    prefill_tokens: int = 8192
    decode_batches: tuple[int, ...] = (1, 32)
    decode_context: int = 8192
    moe_tokens: tuple[int, ...] = (1, 32, 4096)
    norm_tokens: tuple[int, ...] = (32, 4096)


TINY_SIZES = Sizes(
    prefill_tokens=80,
    decode_batches=(1, 3),
    decode_context=40,
    moe_tokens=(1, 9),
    norm_tokens=(5,),
)


@dataclass(frozen=True)
class Case:
    op: str
    model: str
    workload: str
    bytes: int  # the least the op must read and write
    flops: int
    ours: Fn  # cortex's kernel; returns its output (for the check against ref)
    ref: Fn | None
    peers: tuple[tuple[str, Fn], ...] = ()
    check_against_ref: bool = True  # ours() and ref() write separate outputs (the max abs diff column)


@dataclass
class Result:
    op: str
    model: str
    workload: str
    cortex_ms: float
    cortex_mode: str
    ref_ms: float | None
    peers: dict[str, tuple[float, str]]  # name -> (ms, mode)
    max_abs_diff: float | None
    bytes: int
    flops: int


# ---- timing ---------------------------------------------------------------------------------------


class Timer:
    """Times a call on ``device``: CUDA events with a cold L2, or wall-clock on a CPU."""

    def __init__(self, device: torch.device, repeats: int) -> None:
        self.device = device
        self.repeats = repeats
        self._flush = (
            torch.empty(256 << 20, dtype=torch.uint8, device=device) if device.type == "cuda" else None
        )

    def time_ms(self, fn: Fn, *, graph: bool) -> tuple[float, str]:
        fn()  # compile, load, warm up
        if self.device.type != "cuda":
            times = []
            for _ in range(self.repeats):
                start = time.perf_counter()
                fn()
                times.append((time.perf_counter() - start) * 1e3)
            return statistics.median(times), "wall"
        torch.cuda.synchronize()
        if graph:
            try:
                return self._graph_ms(fn), "graph"
            except Exception:  # the call cannot be captured (it reads back): time it eagerly
                torch.cuda.synchronize()
        return self._eager_ms(fn), "eager"

    def _eager_ms(self, fn: Fn) -> float:
        assert self._flush is not None
        times = []
        for _ in range(self.repeats):
            self._flush.zero_()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        return statistics.median(times)

    def _graph_ms(self, fn: Fn) -> float:
        # one graph of (flush, call) x n and one of flush x n: the difference is n cold calls
        assert self._flush is not None
        n = self.repeats
        flush = self._flush
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            fn()  # warm-up on the capture stream
        torch.cuda.current_stream().wait_stream(stream)
        calls, flushes = torch.cuda.CUDAGraph(), torch.cuda.CUDAGraph()
        with torch.cuda.graph(calls):
            for _ in range(n):
                flush.zero_()
                fn()
        with torch.cuda.graph(flushes):
            for _ in range(n):
                flush.zero_()

        def replay_ms(graph: torch.cuda.CUDAGraph) -> float:
            samples = []
            for _ in range(3):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                graph.replay()
                end.record()
                end.synchronize()
                samples.append(start.elapsed_time(end))
            return statistics.median(samples)

        return max(replay_ms(calls) - replay_ms(flushes), 0.0) / n


def measure_ceilings(device: torch.device) -> dict[str, float]:
    """The machine's own copy bandwidth (bytes read + written) and bf16 matmul rate, on CUDA."""
    if device.type != "cuda":
        return {}
    src = torch.empty(1 << 30, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    a = torch.randn(8192, 8192, dtype=torch.bfloat16, device=device)
    b = torch.randn(8192, 8192, dtype=torch.bfloat16, device=device)

    def best_ms(fn: Fn) -> float:
        fn()
        torch.cuda.synchronize()
        samples = []
        for _ in range(10):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end))
        return statistics.median(samples)

    copy_ms = best_ms(lambda: dst.copy_(src))
    matmul_ms = best_ms(lambda: a @ b)
    return {
        "copy_bytes_per_s": 2 * src.numel() / copy_ms * 1e3,
        "bf16_matmul_flops": 2 * 8192**3 / matmul_ms * 1e3,
    }


# ---- peers ----------------------------------------------------------------------------------------


def _fla() -> tuple[Any | None, str]:
    """flash-linear-attention's norms (``fla-core``) and "yes", or None and why not (not installed; on a
    CPU it needs a GPU driver even under the interpreter). Its Gated DeltaNet ops are bench_gated_delta's
    peers."""
    try:
        from fla.modules.norm.fused_norm_gate import rms_norm_gated
        from fla.modules.norm.layernorm import rms_norm
    except Exception as exc:
        return None, f"not available ({exc!r:.120})"
    return argparse.Namespace(rms_norm=rms_norm, rms_norm_gated=rms_norm_gated), "yes"


FLA, FLA_STATUS = _fla()


# ---- the cases ------------------------------------------------------------------------------------


class Inputs:
    """Random tensors of one case, on one device."""

    def __init__(self, device: torch.device, dtype: torch.dtype, seed: int) -> None:
        self.device = device
        self.dtype = dtype
        self.generator = torch.Generator().manual_seed(seed)

    def randn(self, *shape: int, scale: float = 1.0, dtype: torch.dtype | None = None) -> torch.Tensor:
        t = torch.randn(*shape, generator=self.generator) * scale
        return t.to(dtype or self.dtype).to(self.device)

    def slots(self, count: int, pool: int) -> torch.Tensor:
        return torch.randperm(pool, generator=self.generator)[:count].to(self.device)


def _copies(t: torch.Tensor, *names: str) -> dict[str, torch.Tensor]:
    """One tensor per name, equal: the kernel and the reference each update their own copy of a state."""
    return {name: t.clone() for name in names}


def _elem(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def gated_deltanet_cases(device: torch.device, *, tiny: bool, models: list[str]) -> Iterator[Case]:
    """The Gated DeltaNet rows of ``bench_gated_delta.py`` (part of issue 10, with its own fuller table:
    ragged batches, bfloat16 state, the relative error against flash-linear-attention), for the head
    shapes of ``models``. Their reference shares the kernel's state pool, so they are not checked
    against it here (bench_gated_delta checks against the peer; the tests against the references)."""
    for case in bench_gated_delta.cases(device, tiny=tiny):
        if tiny or any(name in case.models for name in models):
            yield Case(
                case.op,
                case.models,
                case.setup,
                bytes=case.bytes_moved,
                flops=case.flops,
                ours=case.ours,
                ref=case.reference,
                peers=((case.peer.name, case.peer.run),) if case.peer else (),
                check_against_ref=False,
            )


def _paged_cache(
    x: Inputs, lens: list[int], num_kv_heads: int, head_dim: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """(k_cache, v_cache, block_tables, per-sequence block lists) with each sequence's blocks scattered."""
    blocks_per_seq = [-(-n // BLOCK_SIZE) for n in lens]
    num_blocks = sum(blocks_per_seq) + 1
    k_cache = x.randn(num_blocks, BLOCK_SIZE, num_kv_heads, head_dim)
    v_cache = x.randn(num_blocks, BLOCK_SIZE, num_kv_heads, head_dim)
    order = torch.randperm(num_blocks, generator=x.generator).tolist()
    tables, start = [], 0
    for count in blocks_per_seq:
        tables.append(order[start : start + count])
        start += count
    width = max(blocks_per_seq)
    padded = [table + [-1] * (width - len(table)) for table in tables]
    block_tables = torch.tensor(padded, dtype=torch.int32, device=x.device)
    return k_cache, v_cache, block_tables, [torch.tensor(t, device=x.device) for t in tables]


def attention_cases(shape: ModelShape, sizes: Sizes, device: torch.device) -> Iterator[Case]:
    h, kv, d, dtype = shape.num_heads, shape.num_kv_heads, shape.head_dim, shape.dtype
    el = _elem(dtype)
    scale = d**-0.5
    # prefill: one sequence of t new tokens and no cached prefix (causal). FLOPs: QK^T and PV over the
    # causal half, 2 * 2 * t^2 / 2 * h * d.
    t = sizes.prefill_tokens
    x = Inputs(device, dtype, seed=20)
    q = x.randn(t, h, 2 * d)[..., :d]  # a view of q_proj's [query | gate] output, as the layer passes it
    gate = x.randn(t, h, 2 * d)[..., d:]
    k_cache, v_cache, tables, seq_blocks = _paged_cache(x, [t], kv, d)
    cu = torch.tensor([0, t], dtype=torch.int32, device=device)
    seq_lens = torch.tensor([t], dtype=torch.int32, device=device)

    def prefill(kernels: str) -> Fn:
        return lambda: paged_attention_prefill(
            q,
            k_cache,
            v_cache,
            cu_seqlens_q=cu,
            seq_lens=seq_lens,
            block_tables=tables,
            max_query_len=t,
            scale=scale,
            gate=gate,
            kernels=kernels,
        )

    dense_k = k_cache[seq_blocks[0]].flatten(0, 1)[:t].transpose(0, 1)[None].contiguous()  # [1, kv, t, d]
    dense_v = v_cache[seq_blocks[0]].flatten(0, 1)[:t].transpose(0, 1)[None].contiguous()
    dense_q = q.transpose(0, 1)[None].contiguous()
    peers = (
        (
            "torch sdpa (flash, contiguous KV)",
            lambda: F.scaled_dot_product_attention(
                dense_q, dense_k, dense_v, is_causal=True, scale=scale, enable_gqa=True
            ),
        ),
    )
    yield Case(
        "paged_attention_prefill",
        shape.name,
        f"1 x {t} tokens",
        bytes=(2 * t * h * d + t * h * d + 2 * t * kv * d) * el,
        flops=2 * t * t * h * d,
        ours=prefill("triton"),
        ref=prefill("ref"),
        peers=peers,
    )
    # decode: batch sequences of decode_context tokens each; the KV cache read is the bytes that matter
    ctx = sizes.decode_context
    for batch in sizes.decode_batches:
        x = Inputs(device, dtype, seed=21 + batch)
        q = x.randn(batch, h, 2 * d)[..., :d]
        gate = x.randn(batch, h, 2 * d)[..., d:]
        k_cache, v_cache, tables, seq_blocks = _paged_cache(x, [ctx] * batch, kv, d)
        seq_lens = torch.full((batch,), ctx, dtype=torch.int32, device=device)

        def decode(
            kernels: str, q=q, gate=gate, k_cache=k_cache, v_cache=v_cache, tables=tables, lens=seq_lens
        ):
            return lambda: paged_attention_decode(
                q,
                k_cache,
                v_cache,
                seq_lens=lens,
                block_tables=tables,
                max_seq_len=ctx,
                scale=scale,
                gate=gate,
                kernels=kernels,
            )

        def dense(cache: torch.Tensor, seq_blocks=seq_blocks) -> torch.Tensor:
            return (
                torch.stack([cache[b].flatten(0, 1)[:ctx] for b in seq_blocks]).transpose(1, 2).contiguous()
            )

        dq = q[:, :, None, :].contiguous()
        dk_, dv_ = dense(k_cache), dense(v_cache)
        peers = (
            (
                "torch sdpa (flash, contiguous KV)",
                lambda dq=dq, dk_=dk_, dv_=dv_: F.scaled_dot_product_attention(
                    dq, dk_, dv_, scale=scale, enable_gqa=True
                ),
            ),
        )
        yield Case(
            "paged_attention_decode",
            shape.name,
            f"batch {batch} x {ctx} context",
            bytes=batch * (2 * ctx * kv * d + 3 * h * d) * el,
            flops=4 * batch * ctx * h * d,
            ours=decode("triton"),
            ref=decode("ref"),
            peers=peers,
        )
    # the KV store of a prefill chunk
    x = Inputs(device, dtype, seed=30)
    k, v = x.randn(t, kv, d), x.randn(t, kv, d)
    num_blocks = t // BLOCK_SIZE + 4
    k_caches = _copies(x.randn(num_blocks, BLOCK_SIZE, kv, d), "ours", "ref")
    v_caches = _copies(x.randn(num_blocks, BLOCK_SIZE, kv, d), "ours", "ref")
    slot_mapping = torch.randperm(num_blocks * BLOCK_SIZE, generator=x.generator)[:t].to(device)

    def store(kernels: str) -> Fn:
        name = "ours" if kernels == "triton" else "ref"
        kc, vc = k_caches[name], v_caches[name]
        return lambda: (store_kv_cache(k, v, kc, vc, slot_mapping, kernels=kernels), kc)[1]

    yield Case(
        "store_kv_cache",
        shape.name,
        f"{t} tokens",
        bytes=4 * t * kv * d * el + t * 8,
        flops=0,
        ours=store("triton"),
        ref=store("ref"),
    )


def _grouped_mm_moe(
    x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor
) -> torch.Tensor:
    """Routed experts with torch's grouped GEMM: sort the (token, k) pairs by expert, two grouped GEMMs,
    the routing weights, a scatter-add back (the peer for fused_moe)."""
    top_k = ids.shape[1]
    flat = ids.reshape(-1)
    order = torch.argsort(flat, stable=True)
    counts = torch.bincount(flat, minlength=w13.shape[0])
    offsets = counts.cumsum(0).to(torch.int32)
    rows = x[order // top_k]
    gate_up = torch._grouped_mm(rows, w13.transpose(1, 2), offs=offsets)
    gate, up = gate_up.chunk(2, dim=-1)
    y = torch._grouped_mm(F.silu(gate) * up, w2.transpose(1, 2), offs=offsets)
    y = y * weights.reshape(-1)[order, None]
    return torch.zeros_like(x).index_add_(0, order // top_k, y)


def moe_cases(shape: ModelShape, sizes: Sizes, device: torch.device) -> Iterator[Case]:
    if not shape.num_experts:
        return
    e, top_k, inter, hidden, dtype = (
        shape.num_experts,
        shape.num_experts_per_tok,
        shape.moe_intermediate_size,
        shape.hidden_size,
        shape.dtype,
    )
    el = _elem(dtype)
    x = Inputs(device, dtype, seed=40)
    w13 = x.randn(e, 2 * inter, hidden, scale=hidden**-0.5)
    w2 = x.randn(e, hidden, inter, scale=inter**-0.5)
    grouped = hasattr(torch, "_grouped_mm") and device.type == "cuda"
    for num_tokens in sizes.moe_tokens:
        x = Inputs(device, dtype, seed=41 + num_tokens)
        hidden_states = x.randn(num_tokens, hidden)
        logits = torch.randn(num_tokens, e, generator=x.generator)
        weights, ids = logits.softmax(-1).topk(top_k, dim=-1)
        weights, ids = (weights / weights.sum(-1, keepdim=True)).to(dtype).to(device), ids.to(device)
        shared, shared_gate = x.randn(num_tokens, hidden), x.randn(num_tokens, 1)
        touched = min(e, num_tokens * top_k)  # experts whose weights are read (at most)

        def run(kernels: str, hs=hidden_states, w=weights, i=ids, s=shared, g=shared_gate) -> Fn:
            return lambda: fused_moe(hs, w13, w2, w, i, shared=s, shared_gate=g, kernels=kernels)

        peers: tuple[tuple[str, Fn], ...] = ()
        if grouped:
            peers = (
                (
                    "torch _grouped_mm (sorted tokens)",
                    lambda hs=hidden_states, w=weights, i=ids: _grouped_mm_moe(hs, w13, w2, w, i),
                ),
            )
        yield Case(
            "fused_moe",
            shape.name,
            f"{num_tokens} tokens (top-{top_k} of {e})",
            bytes=touched * 3 * inter * hidden * el + 3 * num_tokens * hidden * el,
            flops=2 * num_tokens * top_k * 3 * inter * hidden,
            ours=run("triton"),
            ref=run("ref"),
            peers=peers,
        )


def norm_cases(shape: ModelShape, sizes: Sizes, device: torch.device) -> Iterator[Case]:
    dtype, el = shape.dtype, _elem(shape.dtype)
    for num_tokens in sizes.norm_tokens:
        x = Inputs(device, dtype, seed=50 + num_tokens)
        hidden = shape.hidden_size
        h, residual, w = x.randn(num_tokens, hidden), x.randn(num_tokens, hidden), x.randn(hidden, scale=0.1)

        def add_norm(kernels: str, h=h, residual=residual, w=w) -> Fn:
            return lambda: add_rms_norm(h, residual, w, EPS, zero_centred=True, kernels=kernels)[0]

        peers: tuple[tuple[str, Fn], ...] = ()
        if FLA is not None:
            peers = (
                (
                    "fla rms_norm (residual, prenorm)",
                    lambda h=h, residual=residual, w=w: FLA.rms_norm(
                        h, w, None, residual=residual, eps=EPS, prenorm=True
                    )[0],
                ),
            )
        yield Case(
            "add_rms_norm",
            shape.name,
            f"{num_tokens} tokens",
            bytes=4 * num_tokens * hidden * el,
            flops=0,
            ours=add_norm("triton"),
            ref=add_norm("ref"),
            peers=peers,
        )
        # the Gated DeltaNet output norm: rows of head_v_dim, gated by silu(z)
        rows, dv = num_tokens * shape.linear_num_v_heads, shape.linear_head_v_dim
        o, z, gw = x.randn(rows, dv), x.randn(rows, dv), 1.0 + x.randn(dv, scale=0.1)

        def gated(kernels: str, o=o, z=z, gw=gw) -> Fn:
            return lambda: gated_rms_norm(o, z, gw, EPS, kernels=kernels)

        peers = ()
        if FLA is not None:
            peers = (
                (
                    "fla rms_norm_gated",
                    lambda o=o, z=z, gw=gw: FLA.rms_norm_gated(o, z, gw, None, activation="swish", eps=EPS),
                ),
            )
        yield Case(
            "gated_rms_norm",
            shape.name,
            f"{num_tokens} tokens",
            bytes=3 * rows * dv * el,
            flops=0,
            ours=gated("triton"),
            ref=gated("ref"),
            peers=peers,
        )
        # q/k per-head norm and partial rotary, on q_proj's strided output
        hq, kv, d = shape.num_heads, shape.num_kv_heads, shape.head_dim
        q = x.randn(num_tokens, hq, 2 * d)[..., :d]
        k = x.randn(num_tokens, kv, d)
        qw, kw = x.randn(d, scale=0.1), x.randn(d, scale=0.1)
        inv_freq = 1.0 / (
            1e7 ** (torch.arange(0, shape.rotary_dim, 2, dtype=torch.float32) / shape.rotary_dim)
        )
        positions = torch.arange(num_tokens, device=device) + 1000
        cos, sin = rotary_cos_sin(positions, inv_freq.to(device), dtype)

        def qk(kernels: str, q=q, k=k, qw=qw, kw=kw, cos=cos, sin=sin) -> Fn:
            return lambda: qk_norm_rotary(q, k, qw, kw, cos, sin, EPS, zero_centred=True, kernels=kernels)[0]

        yield Case(
            "qk_norm_rotary",
            shape.name,
            f"{num_tokens} tokens",
            bytes=2 * num_tokens * (hq + kv) * d * el,
            flops=0,
            ours=qk("triton"),
            ref=qk("ref"),
        )


CASE_BUILDERS = (attention_cases, moe_cases, norm_cases)  # per model shape
GATED_DELTANET_OPS = (
    "gated_delta_rule_prefill",
    "gated_delta_rule_decode",
    "gated_delta_rule_decode_multi",
    "causal_conv1d_prefill",
    "causal_conv1d_decode",
)
OPS = (
    *GATED_DELTANET_OPS,
    "paged_attention_prefill",
    "paged_attention_decode",
    "store_kv_cache",
    "fused_moe",
    "add_rms_norm",
    "gated_rms_norm",
    "qk_norm_rotary",
)


# ---- running and reporting ------------------------------------------------------------------------


def _max_abs_diff(ours: Any, ref: Any) -> float | None:
    if not isinstance(ours, torch.Tensor) or not isinstance(ref, torch.Tensor) or ours.shape != ref.shape:
        return None
    return float((ours.float() - ref.float()).abs().max())


def run_case(case: Case, timer: Timer, *, with_ref: bool) -> Result:
    diff = _max_abs_diff(case.ours(), case.ref()) if case.ref is not None and case.check_against_ref else None
    cortex_ms, cortex_mode = timer.time_ms(case.ours, graph=True)
    ref_ms = timer.time_ms(case.ref, graph=False)[0] if with_ref and case.ref is not None else None
    peers = {}
    for name, fn in case.peers:
        try:
            peers[name] = timer.time_ms(fn, graph=True)
        except Exception as exc:  # a peer that fails here is reported, not fatal
            print(f"  peer {name} failed on {case.op} {case.model}: {exc!r}"[:300])
    return Result(
        case.op,
        case.model,
        case.workload,
        cortex_ms,
        cortex_mode,
        ref_ms,
        peers,
        diff,
        case.bytes,
        case.flops,
    )


def _row(result: Result, dtype: torch.dtype) -> str:
    seconds = result.cortex_ms / 1e3
    roofline_s = max(result.bytes / H200_BANDWIDTH, result.flops / H200_PEAK_FLOPS[dtype])
    peer = min(result.peers.items(), key=lambda item: item[1][0], default=None)
    peer_text = f"{peer[0]}: {peer[1][0]:.4f} ms ({peer[1][1]})" if peer else ""
    ratio = f"{peer[1][0] / result.cortex_ms:.2f}x" if peer and result.cortex_ms > 0 else ""
    flops = f"{result.flops / seconds / 1e12:.1f}" if result.flops and seconds > 0 else ""
    diff = "" if result.max_abs_diff is None else f"{result.max_abs_diff:.1e}"
    ref = "" if result.ref_ms is None else f"{result.ref_ms:.4f}"
    return (
        f"| {result.op} | {result.model} | {result.workload} | {result.cortex_ms:.4f} ({result.cortex_mode}) "
        f"| {ref} | {peer_text} | {ratio} | {result.bytes / seconds / 1e9:.0f} | {flops} "
        f"| {roofline_s / seconds:.0%} | {diff} |"
        if seconds > 0
        else f"| {result.op} | {result.model} | {result.workload} | 0 | | | | | | | |"
    )


HEADER = (
    "| op | model | workload | cortex ms (mode) | ref ms | best peer ms (mode) | peer / cortex "
    "| GB/s | TFLOP/s | of H200 roofline | max abs diff vs ref |\n" + "|---" * 11 + "|"
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    names = lambda text: [x for x in text.split(",") if x]  # noqa: E731
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", type=names, default=[s.name for s in MODEL_SHAPES])
    parser.add_argument("--ops", type=names, default=list(OPS))
    parser.add_argument("--tiny", action="store_true", help="tiny shapes and sizes (the CPU dry run)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--no-ref", action="store_true", help="skip timing the references (still checked)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # partial tables survive a kill
    device = torch.device(args.device)
    shapes = [TINY] if args.tiny else [s for s in MODEL_SHAPES if s.name in args.models]
    sizes = TINY_SIZES if args.tiny else Sizes()
    timer = Timer(device, repeats=1 if args.tiny else args.repeats)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (Triton interpreter)"
    print(f"device: {name}; torch {torch.__version__}; flash-linear-attention: {FLA_STATUS}")
    ceilings = measure_ceilings(device)
    if ceilings:
        print(
            f"measured here: copy {ceilings['copy_bytes_per_s'] / 1e12:.2f} TB/s (read + write), bf16 matmul "
            f"{ceilings['bf16_matmul_flops'] / 1e12:.0f} TFLOP/s; the roofline column uses the datasheet's "
            f"{H200_BANDWIDTH / 1e12:.1f} TB/s and {H200_PEAK_FLOPS[torch.bfloat16] / 1e12:.0f} TFLOP/s"
        )
    print(HEADER)
    results: list[Result] = []

    def run(case: Case, dtype: torch.dtype) -> None:
        if case.op not in args.ops:
            return
        result = run_case(case, timer, with_ref=not args.no_ref)
        results.append(result)
        print(_row(result, dtype))
        if device.type == "cuda":
            torch.cuda.empty_cache()

    if any(op in args.ops for op in GATED_DELTANET_OPS):
        for case in gated_deltanet_cases(device, tiny=args.tiny, models=args.models):
            run(case, torch.bfloat16)
    for shape in shapes:
        for build in CASE_BUILDERS:
            for case in build(shape, sizes, device):
                run(case, shape.dtype)
    if args.json:
        args.json.write_text(json.dumps([dataclasses.asdict(r) for r in results], indent=1) + "\n")
    for result in results:
        op, model, workload = TARGET_CASE
        if result.op == op and model in result.model and result.workload.startswith(workload):
            verdict = "met" if result.cortex_ms <= TARGET_MS else "missed"
            print(
                f"\ntarget (issue 10): {result.op} {result.model} {result.workload}: "
                f"{result.cortex_ms:.3f} ms, at most {TARGET_MS} ms wanted ({verdict}; "
                "flash-linear-attention 0.472 ms and FlashQLA 0.280 ms published on an H200)"
            )
    slowest = [r for r in results if r.peers and min(ms for ms, _ in r.peers.values()) < r.cortex_ms]
    print(f"\n{len(results)} cases; cortex slower than its best peer in {len(slowest)}")
    if not math.isfinite(sum(r.cortex_ms for r in results)):
        sys.exit("a timing was not finite")


if __name__ == "__main__":
    main()
