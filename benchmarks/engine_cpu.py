"""The CPU engine beside Hugging Face transformers, on the same weights and prompts, in the same run.

Writes a random-weight checkpoint (``cortex make-model``; Qwen3.5-0.8B's shape by default) in bf16,
then for each compute dtype (bf16, fp32: both engines load the same bf16 file) runs cortex and
transformers on the same greedy requests and compares their tokens:

- prefill: time to the first token of one prompt of 128 / 512 / 2048 tokens;
- batch-1 decode: tokens/s of one request after a 128-token prompt;
- throughput at 1 / 8 / 16 / 32 concurrent requests (64-token prompts): decode tokens/s across the
  batch, and output tokens/s over the whole run (prefill included); transformers runs its batched
  ``generate`` (one padded-free batch, its own cache), cortex ``Engine.generate`` (continuous batching).

It measures the machine in the same run (read bandwidth; fp32 and bf16 matmul peaks), prints the
batch-1 roofline (bandwidth / bytes read per decoded token: the weights, the recurrent state read and
written, the KV cache), and every figure as a ratio to transformers and a fraction of the roofline or
matmul peak. Run it on a quiet machine; the load average is printed beside the table.

    python benchmarks/engine_cpu.py                                   # everything (about 15 min on 2 cores)
    python benchmarks/engine_cpu.py --dtypes bfloat16 --prompt-lens 512 --concurrency 1,16
    python benchmarks/engine_cpu.py --preset small                    # a quick smoke run

CPU timings say nothing about GPU speed.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

import cortex
from cortex.engine.checkpoint import make_model
from cortex.engine.config import ModelConfig
from cortex.engine.cpu import cpu_capabilities

FLAGS_SHOWN = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
DECODE_PROMPT_LEN = 128
BATCH_PROMPT_LEN = 64


def median_s(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ---- the machine ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Machine:
    cpu: str
    flags: tuple[str, ...]
    torch_capability: str
    num_threads: int
    bandwidth_bytes_per_s: float
    matmul_flops: dict[str, float]


def measure_machine() -> Machine:
    caps = cpu_capabilities()
    # read bandwidth: sum over 1 GiB of float32 (far beyond any cache)
    big = torch.ones(1 << 28, dtype=torch.float32)
    big.sum()
    bandwidth = big.numel() * 4 / median_s(big.sum, 5)
    del big
    flops = {}
    for name in ("float32", "bfloat16"):
        dtype = getattr(torch, name)
        # emulated bf16 multiplies at well under 1 GFLOP/s: a 2048^3 product would take minutes
        size = 2048 if name == "float32" or caps.native_bf16 else 512
        a = torch.randn(size, size).to(dtype)
        b = torch.randn(size, size).to(dtype)
        a @ b
        flops[name] = 2 * size**3 / median_s(lambda a=a, b=b: a @ b, 3)
    return Machine(
        cpu=caps.model_name or platform.processor() or "unknown",
        flags=tuple(f for f in FLAGS_SHOWN if f in caps.flags),
        torch_capability=caps.torch_capability,
        num_threads=torch.get_num_threads(),
        bandwidth_bytes_per_s=bandwidth,
        matmul_flops=flops,
    )


def decode_bytes_per_token(config: ModelConfig, dtype: torch.dtype, context_len: int) -> int:
    """Bytes one batch-1 decode step must read: every matmul weight once (the LM head included; the
    embedding table only when it is the LM head), the recurrent state read and written, the KV cache."""
    with torch.device("meta"):
        model = cortex.engine.models.CausalLM(config, kernels="ref")
    params = {id(p): p for name, p in model.named_parameters() if "embed_tokens" not in name}
    params[id(model.lm_head.weight)] = model.lm_head.weight
    weight_bytes = sum(p.numel() for p in params.values()) * dtype.itemsize
    state_bytes = 0
    for spec in config.layer_cache_specs():
        if isinstance(spec, cortex.engine.cache.layer_cache.AttentionCacheSpec):
            state_bytes += 2 * context_len * spec.num_kv_heads * spec.head_dim * dtype.itemsize
        else:
            ssm = spec.num_v_heads * spec.head_k_dim * spec.head_v_dim * 4
            state_bytes += 2 * ssm + 2 * spec.conv_dim * (spec.conv_kernel - 1) * dtype.itemsize
    return weight_bytes + state_bytes


def matmul_flops_per_token(config: ModelConfig) -> int:
    """2 x the matmul weights a token passes through (attention over the context not counted)."""
    with torch.device("meta"):
        model = cortex.engine.models.CausalLM(config, kernels="ref")
    numel = sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" not in n and "norm" not in n)
    if config.tie_word_embeddings:
        numel += model.lm_head.weight.numel()
    return 2 * numel


# ---- the engines under test -----------------------------------------------------------------------


class Runner:
    """Greedy generation of ``num_tokens`` for a batch of token-id prompts; returns each output."""

    name: str

    def generate(self, prompts: Sequence[Sequence[int]], num_tokens: int) -> list[list[int]]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class CortexRunner(Runner):
    """cortex's engine; prefix caching off, so that repeated prompts are computed each time."""

    name = "cortex"

    def __init__(self, folder: Path, dtype: str, *, device: str = "cpu", max_model_len: int = 4096) -> None:
        self.engine = cortex.Engine.from_pretrained(
            folder,
            device=device,
            dtype=dtype,
            max_num_seqs=32,
            max_model_len=max_model_len,
            enable_prefix_caching=False,
        )

    def generate(self, prompts: Sequence[Sequence[int]], num_tokens: int) -> list[list[int]]:
        params = cortex.SamplingParams(max_tokens=num_tokens, temperature=0.0, ignore_eos=True)
        return [out.token_ids for out in self.engine.generate([list(p) for p in prompts], params)]

    def close(self) -> None:
        self.engine.close()


class TransformersRunner(Runner):
    name = "transformers"

    def __init__(self, folder: Path, dtype: str, *, device: str = "cpu") -> None:
        from transformers import AutoModelForCausalLM

        self.device = device
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype))
        self.model = model.to(device).eval()

    def generate(self, prompts: Sequence[Sequence[int]], num_tokens: int) -> list[list[int]]:
        ids = torch.tensor([list(p) for p in prompts], device=self.device)  # equal lengths: no padding
        with torch.inference_mode():
            out = self.model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=num_tokens,
                min_new_tokens=num_tokens,
                do_sample=False,
                pad_token_id=0,
            )
        return out[:, ids.shape[1] :].tolist()

    def close(self) -> None:
        del self.model


# ---- workloads ------------------------------------------------------------------------------------


@dataclass
class Figures:
    prefill_s: dict[int, float] = field(default_factory=dict)  # prompt length -> seconds to first token
    decode_tok_s: float = 0.0  # batch-1
    batch_decode_tok_s: dict[int, float] = field(default_factory=dict)  # concurrency -> decode tok/s
    batch_output_tok_s: dict[int, float] = field(default_factory=dict)  # concurrency -> output tok/s, wall
    outputs: dict[str, list[list[int]]] = field(default_factory=dict)  # workload -> greedy tokens


def _prompts(count: int, length: int, vocab: int, seed: int) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (count, length), generator=generator).tolist()


def run_workloads(runner: Runner, args: argparse.Namespace, vocab: int) -> Figures:
    figures = Figures()
    runner.generate(_prompts(1, 16, vocab, seed=99), 2)  # warm-up
    for length in args.prompt_lens:
        prompt = _prompts(1, length, vocab, seed=length)
        figures.prefill_s[length] = median_s(lambda p=prompt: runner.generate(p, 1), args.repeats)
    prompt = _prompts(1, DECODE_PROMPT_LEN, vocab, seed=1)
    first_s = median_s(lambda: runner.generate(prompt, 1), args.repeats)
    start = time.perf_counter()
    figures.outputs["decode"] = runner.generate(prompt, args.decode_tokens)
    figures.decode_tok_s = (args.decode_tokens - 1) / (time.perf_counter() - start - first_s)
    for concurrency in args.concurrency:
        prompts = _prompts(concurrency, BATCH_PROMPT_LEN, vocab, seed=1000 + concurrency)
        first_s = median_s(lambda p=prompts: runner.generate(p, 1), 1)
        start = time.perf_counter()
        figures.outputs[f"c{concurrency}"] = runner.generate(prompts, args.batch_tokens)
        wall_s = time.perf_counter() - start
        figures.batch_output_tok_s[concurrency] = concurrency * args.batch_tokens / wall_s
        figures.batch_decode_tok_s[concurrency] = concurrency * (args.batch_tokens - 1) / (wall_s - first_s)
    return figures


# ---- the report -----------------------------------------------------------------------------------


def agreement(a: dict[str, list[list[int]]], b: dict[str, list[list[int]]]) -> str:
    """Identical greedy sequences, and the mean length of the common prefix where they differ."""
    same = total = 0
    prefixes = []
    for key, seqs in a.items():
        for x, y in zip(seqs, b.get(key, []), strict=False):
            total += 1
            same += x == y
            if x != y:
                prefixes.append(next((i for i, (s, t) in enumerate(zip(x, y, strict=False)) if s != t), 0))
    text = f"{same}/{total} greedy sequences identical"
    if prefixes:
        text += f"; the others agree on their first {statistics.mean(prefixes):.1f} tokens on average"
    return text


def report(
    machine: Machine,
    config: ModelConfig,
    dtype_name: str,
    results: dict[str, Figures],
    args: argparse.Namespace,
    load: tuple[float, float],
) -> None:
    dtype = getattr(torch, dtype_name)
    ours, theirs = results["cortex"], results.get("transformers")
    bytes_per_token = decode_bytes_per_token(config, dtype, DECODE_PROMPT_LEN + args.decode_tokens)
    roofline = machine.bandwidth_bytes_per_s / bytes_per_token
    peak = max(machine.matmul_flops[dtype_name], machine.matmul_flops["float32"])  # the best this CPU does
    flops_per_token = matmul_flops_per_token(config)
    print(
        f"\n### compute dtype {dtype_name} (weights stored bf16)  load average {load[0]:.2f} -> {load[1]:.2f}"
    )
    print(
        f"batch-1 roofline: {bytes_per_token / 1e9:.2f} GB per token at "
        f"{machine.bandwidth_bytes_per_s / 1e9:.1f} GB/s = {roofline:.1f} tok/s; "
        f"matmul peak {peak / 1e9:.0f} GFLOP/s = {peak / flops_per_token:.0f} tok/s compute-bound"
    )
    print("| workload | transformers | cortex | cortex / transformers | cortex vs roofline or peak |")
    print("|---|---|---|---|---|")

    def row(label: str, mine: float, other: float | None, unit: str, bound: float, higher: bool) -> None:
        ratio = "" if other is None else f"{(mine / other if higher else other / mine):.2f}x"
        print(
            f"| {label} | {'' if other is None else f'{other:.2f} {unit}'} | {mine:.2f} {unit} | {ratio} "
            f"| {(mine / bound if higher else bound / mine):.0%} |"
        )

    for length, seconds in ours.prefill_s.items():
        other = theirs.prefill_s[length] if theirs else None
        row(f"prefill {length} tokens", seconds, other, "s", length * flops_per_token / peak, higher=False)
    row("batch-1 decode", ours.decode_tok_s, theirs.decode_tok_s if theirs else None, "tok/s", roofline, True)
    for concurrency, rate in ours.batch_decode_tok_s.items():
        other = theirs.batch_decode_tok_s[concurrency] if theirs else None
        row(f"{concurrency} concurrent: decode", rate, other, "tok/s", peak / flops_per_token, True)
        other = theirs.batch_output_tok_s[concurrency] if theirs else None
        row(
            f"{concurrency} concurrent: output (wall)",
            ours.batch_output_tok_s[concurrency],
            other,
            "tok/s",
            peak / flops_per_token,
            True,
        )
    for concurrency, rate in ours.batch_decode_tok_s.items():
        print(f"cortex {concurrency} concurrent decode = {rate / ours.decode_tok_s:.1f}x its batch-1 rate")
    if theirs is not None:
        print(agreement(ours.outputs, theirs.outputs))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ints = lambda text: [int(x) for x in text.split(",") if x]  # noqa: E731
    parser.add_argument("--preset", default="0.8b")
    parser.add_argument("--dtypes", default="bfloat16,float32", type=lambda t: t.split(","))
    parser.add_argument("--prompt-lens", default="128,512,2048", type=ints)
    parser.add_argument("--concurrency", default="1,8,16,32", type=ints)
    parser.add_argument("--decode-tokens", type=int, default=32)
    parser.add_argument("--batch-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="prefill runs per figure (median)")
    parser.add_argument("--engines", default="transformers,cortex", type=lambda t: t.split(","))
    parser.add_argument("--model", type=Path, help="an existing checkpoint folder instead of a new one")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # partial tables survive a kill

    machine = measure_machine()
    print(
        f"cpu: {machine.cpu}; flags: {' '.join(machine.flags)}; torch capability {machine.torch_capability}"
    )
    print(
        f"torch {torch.__version__}, {machine.num_threads} threads; read bandwidth "
        f"{machine.bandwidth_bytes_per_s / 1e9:.1f} GB/s; matmul peak (2048^3; emulated bf16 512^3) fp32 "
        f"{machine.matmul_flops['float32'] / 1e9:.0f} GFLOP/s, "
        f"bf16 {machine.matmul_flops['bfloat16'] / 1e9:.1f} GFLOP/s"
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.model or make_model(
            Path(tmp) / "model", arch="qwen3_5", preset=args.preset, dtype="bfloat16"
        )
        config = ModelConfig.from_hf(folder)
        print(f"model: qwen3_5 preset {args.preset} (random weights, stored bf16), {os.fspath(folder)}")
        for dtype_name in args.dtypes:
            load_before = os.getloadavg()[0]
            results: dict[str, Figures] = {}
            for cls in (TransformersRunner, CortexRunner):
                if cls.name not in args.engines:
                    continue
                runner = cls(folder, dtype_name)
                try:
                    results[cls.name] = run_workloads(runner, args, config.vocab_size)
                finally:
                    runner.close()
                    del runner
                    gc.collect()
            report(machine, config, dtype_name, results, args, (load_before, os.getloadavg()[0]))


if __name__ == "__main__":
    main()
