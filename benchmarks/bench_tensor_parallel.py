"""Tensor parallelism against one device, in the same run: decode latency and batched throughput.

Builds a random-weight checkpoint (``cortex.engine.checkpoint.make_model``), then runs the same greedy
requests through ``cortex.Engine`` at ``tensor_parallel_size=1`` and at ``--tp`` (rank processes over
gloo on CPU, NCCL on CUDA), checks that both produce the same tokens, and prints a table: decode tokens/s
of one request, generated tokens/s of ``--batch`` concurrent requests, and the time to start the ranks.

    python benchmarks/bench_tensor_parallel.py                               # CPU, 2 ranks, small preset
    python benchmarks/bench_tensor_parallel.py --device cuda --dtype bfloat16 --preset 0.8b --batch 32

On CUDA it needs ``--tp`` devices and otherwise says so and exits 0 (``gpu_check.sh`` runs it on
whatever machine it gets). CPU timings say nothing about GPU speed: the CPU ranks share the same cores.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

import cortex
from cortex.engine.checkpoint import make_model

PROMPT_LEN = 64


def _measure(folder: Path, tp: int, args: argparse.Namespace) -> dict[str, object]:
    started = time.perf_counter()
    engine = cortex.Engine.from_pretrained(
        folder,
        device=args.device,
        dtype=args.dtype,
        max_num_seqs=max(args.batch, 1),
        max_model_len=PROMPT_LEN + args.tokens + 16,
        tensor_parallel_size=tp,
    )
    start_s = time.perf_counter() - started
    prompts = [[(7 * i + j) % 997 + 1 for j in range(PROMPT_LEN)] for i in range(args.batch)]
    params = cortex.SamplingParams(max_tokens=args.tokens, temperature=0.0, ignore_eos=True)
    with engine:
        engine.generate(prompts[:1], cortex.SamplingParams(max_tokens=4, temperature=0.0))  # warm-up
        single, batched = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            (one,) = engine.generate(prompts[:1], params)
            t1 = time.perf_counter()
            many = engine.generate(prompts, params)
            t2 = time.perf_counter()
            single.append(args.tokens / (t1 - t0))
            batched.append(args.tokens * len(prompts) / (t2 - t1))
    return {
        "tokens": [one.token_ids, *[out.token_ids for out in many]],
        "decode_tok_s": statistics.median(single),
        "batched_tok_s": statistics.median(batched),
        "start_s": start_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--arch", default="qwen3_5")
    parser.add_argument("--tp", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.device == "cuda" and torch.cuda.device_count() < args.tp:
        print(
            f"tensor parallelism needs {args.tp} CUDA devices; {torch.cuda.device_count()} visible: skipped"
        )
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_model(Path(tmp) / "model", arch=args.arch, preset=args.preset)
        one = _measure(folder, 1, args)
        split = _measure(folder, args.tp, args)
    same = one["tokens"] == split["tokens"]
    print(f"{args.arch} {args.preset}, {args.device} {args.dtype}, prompt {PROMPT_LEN}, {args.tokens} tokens")
    print(f"same greedy tokens at tp=1 and tp={args.tp}: {same}\n")
    print(f"| measure | tp=1 | tp={args.tp} | tp={args.tp} / tp=1 |")
    print("|---|---|---|---|")
    for key, label in (
        ("decode_tok_s", "decode tok/s, 1 request (median)"),
        ("batched_tok_s", f"generated tok/s, {args.batch} requests (median)"),
        ("start_s", "engine start, s"),
    ):
        a, b = float(one[key]), float(split[key])  # type: ignore[arg-type]
        print(f"| {label} | {a:.1f} | {b:.1f} | {b / a:.2f} |")
    if not same:
        raise SystemExit("tensor-parallel tokens differ from one device")


if __name__ == "__main__":
    main()
