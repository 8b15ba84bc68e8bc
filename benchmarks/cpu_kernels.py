"""cortex's C kernels for AVX2 CPUs beside the torch ops they replace, at Qwen3.5-0.8B's shapes.

- ``Bf16Linear`` (fp32 activations x bf16 weights, fp32 sums) against what torch offers for the same
  product: ``F.linear`` over an fp32 copy of the weights (MKL), over the bf16 weights upcast per call,
  and in bf16 (one row: ATen's bf16 gemv with oneDNN off; several: oneDNN); for 1 to 512 rows over
  the MLP weights of 24 layers (350 MB in bf16, past the caches) and the 248k-token LM head.
- ``GatedDeltaDecode`` against the reference decode (``gated_delta_rule_decode_ref``) for 1 and 16
  sequences over 18 layers of state (16 heads x 128 x 128 fp32, 1 MiB per sequence and layer).
- ``Conv1dDecode`` against the reference (``causal_conv1d_decode_ref``) over 18 layers of bf16
  history (6,144 channels, 4 taps).

Every figure is a median in one run, with the machine's read bandwidth measured beside it.

    python benchmarks/cpu_kernels.py
    python benchmarks/cpu_kernels.py --rows 1,16 --repeats 3
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
import torch.nn.functional as F

from cortex.engine.cpu import cpu_capabilities
from cortex.engine.kernels import cpu_bf16_linear, cpu_conv1d_decode, cpu_gated_delta_decode
from cortex.engine.kernels.causal_conv1d import causal_conv1d_decode_ref
from cortex.engine.kernels.gated_delta import gated_delta_rule_decode_ref
from engine_cpu import median_s  # this folder's: run as `python benchmarks/cpu_kernels.py`

HIDDEN, INTERMEDIATE, VOCAB, LAYERS, GDN_LAYERS = 1024, 3584, 248320, 24, 18
HEADS, HEAD_DIM = 16, 128
CONV_DIM, CONV_KERNEL = 6144, 4


def _warm_median_s(fn: Callable[[], object], repeats: int) -> float:
    fn()  # the first call builds caches and touches the pages
    return median_s(fn, repeats)


def _without_onednn(fn: Callable[[], object]) -> Callable[[], object]:
    def run() -> object:
        enabled = torch._C._get_mkldnn_enabled()
        torch._C._set_mkldnn_enabled(False)
        try:
            return fn()
        finally:
            torch._C._set_mkldnn_enabled(enabled)

    return run


def _linear_candidates(
    kernel: cpu_bf16_linear.Bf16Linear, weights: list[torch.Tensor], fp32: list[torch.Tensor], count: int
) -> dict[str, Callable[[], object]]:
    xs = {w.shape[1]: torch.randn(count, w.shape[1]) for w in weights}

    def bf16() -> object:
        return [F.linear(xs[w.shape[1]].bfloat16(), w) for w in weights]

    candidates: dict[str, Callable[[], object]] = {
        "kernel": lambda: [kernel(xs[w.shape[1]], w) for w in weights],
        "fp32": lambda: [F.linear(xs[w.shape[1]], w) for w in fp32],
        "upcast": lambda: [F.linear(xs[w.shape[1]], w.float()) for w in weights],
    }
    if count == 1:
        candidates["bf16"] = _without_onednn(bf16)  # ATen's bf16 gemv, what the plan used before
    elif count <= 64:
        candidates["bf16"] = bf16  # emulated bf16 through oneDNN; minutes per call at 512 rows
    return candidates


def linear_table(kernel: cpu_bf16_linear.Bf16Linear, rows: list[int], repeats: int) -> None:
    mlp = [torch.randn(2 * INTERMEDIATE, HIDDEN).bfloat16() for _ in range(LAYERS)]
    mlp += [torch.randn(HIDDEN, INTERMEDIATE).bfloat16() for _ in range(LAYERS)]
    head = [torch.randn(VOCAB, HIDDEN).bfloat16()]
    print("| weights | rows | cortex Bf16Linear | fp32 copy | upcast per call | bf16 (emulated) |")
    print("|---|---|---|---|---|---|")
    for name, weights in (("MLP x 24 layers", mlp), ("LM head", head)):
        fp32 = [w.float() for w in weights]
        numel = sum(w.numel() for w in weights)
        for count in rows:
            candidates = _linear_candidates(kernel, weights, fp32, count)
            cells = []
            for key in ("kernel", "fp32", "upcast", "bf16"):
                if key not in candidates:
                    cells.append("-")
                    continue
                seconds = _warm_median_s(candidates[key], repeats)
                cells.append(f"{seconds * 1e3:.1f} ms, {2 * count * numel / seconds / 1e9:.1f} GFLOP/s")
            print(f"| {name} | {count} | " + " | ".join(cells) + " |")
        del fp32


def _gated_delta_case(
    kernel: cpu_gated_delta_decode.GatedDeltaDecode, num_seqs: int
) -> tuple[Callable[[], object], Callable[[], object], int]:
    states = [torch.randn(num_seqs, HEADS, HEAD_DIM, HEAD_DIM) * 0.01 for _ in range(GDN_LAYERS)]
    slots = torch.arange(num_seqs)
    q, k, v = (torch.randn(num_seqs, HEADS, HEAD_DIM) for _ in range(3))
    a, b = torch.randn(num_seqs, HEADS), torch.randn(num_seqs, HEADS)
    A_log, dt_bias = torch.randn(HEADS), torch.randn(HEADS)
    qn, kn = F.normalize(q, dim=-1) * HEAD_DIM**-0.5, F.normalize(k, dim=-1)
    decay, beta = torch.rand(num_seqs, HEADS), torch.rand(num_seqs, HEADS)

    def ours() -> None:
        for state in states:
            kernel(state, slots, qn, kn, v, decay, beta)

    def reference() -> None:
        for state in states:
            gated_delta_rule_decode_ref(
                q, k, v, a=a, b=b, A_log=A_log, dt_bias=dt_bias, state=state, state_slots=slots
            )

    return ours, reference, 2 * sum(s.numel() * 4 for s in states)


def gated_delta_table(kernel: cpu_gated_delta_decode.GatedDeltaDecode, repeats: int) -> None:
    print("\n| sequences | cortex GatedDeltaDecode | reference decode | state read + written |")
    print("|---|---|---|---|")
    for num_seqs in (1, 16):
        ours, reference, moved = _gated_delta_case(kernel, num_seqs)
        mine, theirs = _warm_median_s(ours, repeats), _warm_median_s(reference, repeats)
        print(
            f"| {num_seqs} | {mine * 1e3:.1f} ms ({moved / mine / 1e9:.1f} GB/s) | {theirs * 1e3:.1f} ms "
            f"({moved / theirs / 1e9:.1f} GB/s) | {moved / 1e6:.0f} MB |"
        )


def conv1d_table(kernel: cpu_conv1d_decode.Conv1dDecode, repeats: int) -> None:
    print("\n| sequences | cortex Conv1dDecode | reference decode |")
    print("|---|---|---|")
    for num_seqs in (1, 16):
        x = torch.randn(num_seqs, CONV_DIM)
        weight = torch.randn(CONV_DIM, CONV_KERNEL)
        pools = [torch.randn(num_seqs, CONV_DIM, CONV_KERNEL - 1).bfloat16() for _ in range(GDN_LAYERS)]

        def ours(
            x: torch.Tensor = x, weight: torch.Tensor = weight, pools: list[torch.Tensor] = pools
        ) -> None:
            for pool in pools:
                kernel(x, weight, pool, torch.arange(x.shape[0]))

        def reference(
            x: torch.Tensor = x, weight: torch.Tensor = weight, pools: list[torch.Tensor] = pools
        ) -> None:
            for pool in pools:
                causal_conv1d_decode_ref(x, weight, pool, state_slots=torch.arange(x.shape[0]))

        mine, theirs = _warm_median_s(ours, repeats), _warm_median_s(reference, repeats)
        print(f"| {num_seqs} | {mine * 1e3:.2f} ms | {theirs * 1e3:.2f} ms |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rows", default="1,2,4,8,16,32,64,512", type=lambda t: [int(x) for x in t.split(",")]
    )
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    caps = cpu_capabilities()
    linear, delta = cpu_bf16_linear.load(caps.flags), cpu_gated_delta_decode.load(caps.flags)
    conv = cpu_conv1d_decode.load(caps.flags)
    if linear is None or delta is None or conv is None:
        raise SystemExit(
            "cortex's CPU kernels are not available here (an x86 CPU with AVX2 + FMA and a C compiler)"
        )
    big = torch.ones(1 << 28)
    bandwidth = big.numel() * 4 / _warm_median_s(big.sum, 5)
    del big
    print(
        f"cpu: {caps.model_name}; torch capability {caps.torch_capability}; {torch.get_num_threads()} threads"
    )
    print(f"read bandwidth {bandwidth / 1e9:.1f} GB/s\n")
    linear_table(linear, args.rows, args.repeats)
    gated_delta_table(delta, args.repeats)
    conv1d_table(conv, args.repeats)


if __name__ == "__main__":
    main()
