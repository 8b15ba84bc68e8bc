"""The engine on a CUDA GPU beside Hugging Face transformers, and vLLM where it is installed, on the same
random-weight bf16 checkpoints, in the same run.

For each preset (``0.8b`` and ``9b``: Qwen3.5-0.8B's and -9B's shapes, written by ``make_model`` with
the values drawn on the GPU), every engine loads the same folder and runs the same greedy requests
(``ignore_eos``), with the workloads of ``engine_cpu.py`` at GPU sizes:

- prefill: time to the first token of one 8192-token prompt (median of ``--repeats``);
- batch-1 decode: tokens/s of one request after a 128-token prompt (the time to its first token taken
  out);
- throughput at 32 concurrent requests (64-token prompts): decode tokens/s across the batch, and output
  tokens/s over the whole run (prefill included).

Targets (issue 10): batch-1 decode of the 9B shape at least 85% of the bandwidth roofline, i.e. of
``4.8 TB/s / (weight + state + KV bytes read per token)`` (the H200 datasheet's bandwidth; the copy
rate measured here is printed beside it); throughput at 32 concurrent requests at least vLLM's. vLLM's
wheel (336 MB) is over the GPU machine's 64 MiB carry limit, so there it is reported as not installed;
on a machine that has it, it runs as a third engine (``LLM.generate`` over token-id prompts).

cortex runs its Triton kernels with CUDA graphs for decode batches (its defaults on CUDA) and prefix
caching off (the repeated prefill prompt would otherwise be served from the cache). transformers runs
its batched ``generate`` (one equal-length batch). Greedy tokens are compared between engines: with
random weights and bf16, near-ties make some sequences diverge after a while, so agreement is reported,
not required.

    python benchmarks/engine_gpu.py                                 # 0.8b and 9b (about 3 min on an H200)
    python benchmarks/engine_gpu.py --presets 0.8b --engines cortex
    python benchmarks/engine_gpu.py --tiny                          # the CPU dry run (tiny preset, seconds)
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch

from cortex.engine.checkpoint import make_model
from cortex.engine.config import ModelConfig
from engine_cpu import (
    DECODE_PROMPT_LEN,
    CortexRunner,
    Figures,
    Runner,
    TransformersRunner,
    agreement,
    decode_bytes_per_token,
    matmul_flops_per_token,
    run_workloads,
)
from kernels import H200_BANDWIDTH, H200_PEAK_FLOPS, measure_ceilings

ENGINES = ("transformers", "vllm", "cortex")


class VllmRunner(Runner):
    """vLLM's offline ``LLM`` on the same folder (its defaults: CUDA graphs, chunked prefill)."""

    name = "vllm"

    def __init__(self, folder: Path, dtype: str, *, max_model_len: int) -> None:
        from vllm import LLM

        self.llm = LLM(
            model=str(folder),
            tokenizer=None,
            skip_tokenizer_init=True,
            dtype=dtype,
            max_model_len=max_model_len,
            max_num_seqs=32,
            gpu_memory_utilization=0.5,
            enable_prefix_caching=False,
        )

    def generate(self, prompts: Sequence[Sequence[int]], num_tokens: int) -> list[list[int]]:
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=num_tokens, temperature=0.0, ignore_eos=True, detokenize=False)
        outputs = self.llm.generate([{"prompt_token_ids": list(p)} for p in prompts], params, use_tqdm=False)
        return [list(out.outputs[0].token_ids) for out in outputs]

    def close(self) -> None:
        del self.llm


def _vllm_status() -> str:
    try:
        import vllm
    except Exception as exc:
        return f"not installed ({type(exc).__name__})"
    return f"vllm {vllm.__version__}"


def make_runner(name: str, folder: Path, args: argparse.Namespace) -> Runner:
    max_model_len = max(args.prompt_lens) + args.decode_tokens + DECODE_PROMPT_LEN
    if name == "cortex":
        return CortexRunner(folder, args.dtype, device=args.device, max_model_len=max_model_len)
    if name == "transformers":
        return TransformersRunner(folder, args.dtype, device=args.device)
    return VllmRunner(folder, args.dtype, max_model_len=max_model_len)


def report(config: ModelConfig, results: dict[str, Figures], args: argparse.Namespace, preset: str) -> None:
    dtype = getattr(torch, args.dtype)
    bytes_per_token = decode_bytes_per_token(config, dtype, DECODE_PROMPT_LEN + args.decode_tokens)
    roofline = H200_BANDWIDTH / bytes_per_token
    peak = H200_PEAK_FLOPS.get(dtype, H200_PEAK_FLOPS[torch.bfloat16])
    flops_per_token = matmul_flops_per_token(config)
    names = [name for name in ENGINES if name in results]
    print(f"\n### preset {preset}, {args.dtype}")
    print(
        f"batch-1 roofline: {bytes_per_token / 1e9:.2f} GB per token at {H200_BANDWIDTH / 1e12:.1f} TB/s "
        f"= {roofline:.0f} tok/s; matmul peak {peak / 1e12:.0f} TFLOP/s = {peak / flops_per_token:.0f} tok/s"
    )
    others = [n for n in names if n != "cortex"]
    print(
        "| workload | "
        + " | ".join(names)
        + " | "
        + " | ".join(f"cortex / {n}" for n in others)
        + " | cortex of roofline or peak |"
    )
    print("|---" * (len(names) + len(others) + 2) + "|")

    def row(label: str, pick: dict[str, float], unit: str, bound: float, higher: bool) -> None:
        cells = [f"{pick[n]:.3f} {unit}" if n in pick else "" for n in names]
        ours = pick.get("cortex")
        ratios = [
            f"{(ours / pick[n] if higher else pick[n] / ours):.2f}x" if ours and n in pick and pick[n] else ""
            for n in others
        ]
        fraction = f"{(ours / bound if higher else bound / ours):.0%}" if ours else ""
        print(f"| {label} | " + " | ".join(cells + ratios) + f" | {fraction} |")

    for length in args.prompt_lens:
        row(
            f"prefill {length} tokens (time to first token)",
            {n: results[n].prefill_s[length] for n in names},
            "s",
            length * flops_per_token / peak,
            higher=False,
        )
    row("batch-1 decode", {n: results[n].decode_tok_s for n in names}, "tok/s", roofline, True)
    for concurrency in args.concurrency:
        bound = peak / flops_per_token
        row(
            f"{concurrency} concurrent: decode",
            {n: results[n].batch_decode_tok_s[concurrency] for n in names},
            "tok/s",
            bound,
            True,
        )
        row(
            f"{concurrency} concurrent: output (wall)",
            {n: results[n].batch_output_tok_s[concurrency] for n in names},
            "tok/s",
            bound,
            True,
        )
    if "cortex" in results:
        for name in others:
            print(f"cortex vs {name}: {agreement(results['cortex'].outputs, results[name].outputs)}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ints = lambda text: [int(x) for x in text.split(",") if x]  # noqa: E731
    names = lambda text: [x for x in text.split(",") if x]  # noqa: E731
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--presets", type=names, default=["0.8b", "9b"])
    parser.add_argument("--engines", type=names, default=list(ENGINES))
    parser.add_argument("--prompt-lens", type=ints, default=[8192])
    parser.add_argument("--concurrency", type=ints, default=[32])
    parser.add_argument("--decode-tokens", type=int, default=128)
    parser.add_argument("--batch-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tiny", action="store_true", help="the CPU dry run: tiny preset and sizes")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args()
    if args.tiny:
        args.device, args.presets, args.prompt_lens, args.concurrency = "cpu", ["tiny"], [48], [3]
        args.decode_tokens, args.batch_tokens, args.repeats = 4, 4, 1
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # partial tables survive a kill
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device: {name}; torch {torch.__version__}; vLLM: {_vllm_status()}")
    ceilings = measure_ceilings(device)
    if ceilings:
        print(f"measured here: copy {ceilings['copy_bytes_per_s'] / 1e12:.2f} TB/s (read + write)")
    everything: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets:
            start = time.perf_counter()
            folder = make_model(
                Path(tmp) / preset, arch="qwen3_5", preset=preset, dtype="bfloat16", device=args.device
            )
            config = ModelConfig.from_hf(folder)
            print(f"\npreset {preset}: random weights written in {time.perf_counter() - start:.0f} s")
            results: dict[str, Figures] = {}
            for engine in args.engines:
                if engine == "vllm" and not _vllm_status().startswith("vllm"):
                    continue
                start = time.perf_counter()
                try:
                    runner = make_runner(engine, folder, args)
                except Exception as exc:
                    print(f"{engine} did not load: {exc!r}"[:400])
                    continue
                print(f"{engine} loaded in {time.perf_counter() - start:.0f} s")
                try:
                    results[engine] = run_workloads(runner, args, config.vocab_size)
                finally:
                    runner.close()
                    del runner
                    gc.collect()
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
            report(config, results, args, preset)
            everything[preset] = {name: asdict(figures) for name, figures in results.items()}
            for child in sorted(folder.iterdir()):
                child.unlink()  # free the disk before the next preset
    if args.json:
        args.json.write_text(json.dumps(everything, indent=1) + "\n")


if __name__ == "__main__":
    main()
