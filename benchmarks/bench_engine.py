"""Engine throughput against Hugging Face transformers on the same checkpoint, in the same run.

Builds a random-weight checkpoint (``cortex.engine.checkpoint.make_model``), then runs the same batch
of greedy requests through ``transformers``' ``generate`` (its own cache, static batch) and through
``cortex.Engine.generate`` (paged KV cache, state slots, continuous batching), checks that both
produce the same tokens, and prints a table of prefill and decode throughput.

    python benchmarks/bench_engine.py                          # CPU, small preset
    python benchmarks/bench_engine.py --device cuda --dtype bfloat16 --preset 0.8b --batch 32

CPU timings say nothing about GPU speed; report GPU numbers only from a GPU run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

import cortex
from cortex.engine.checkpoint import ARCHS, make_model


def _timed(fn: Callable[[], object], device: str) -> tuple[object, float]:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


def _transformers_generate(folder: Path, prompts: torch.Tensor, new_tokens: int, args: argparse.Namespace):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, args.dtype)).to(args.device)
    model.eval()
    ids = prompts.to(args.device)

    def run(max_new_tokens: int) -> torch.Tensor:
        with torch.inference_mode():
            return model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                min_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=0,
            )

    run(2)
    _, prefill_s = _timed(lambda: run(1), args.device)
    out, total_s = _timed(lambda: run(new_tokens), args.device)
    assert isinstance(out, torch.Tensor)
    return out[:, prompts.shape[1] :].tolist(), prefill_s, total_s


def _cortex_generate(folder: Path, prompts: torch.Tensor, new_tokens: int, args: argparse.Namespace):
    engine = cortex.Engine.from_pretrained(
        folder, device=args.device, dtype=args.dtype, max_num_seqs=max(args.batch, 1)
    )
    prompt_ids = prompts.tolist()

    def run(max_tokens: int) -> list[list[int]]:
        params = cortex.SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
        return [out.token_ids for out in engine.generate(prompt_ids, params)]

    with engine:
        run(2)
        _, prefill_s = _timed(lambda: run(1), args.device)
        out, total_s = _timed(lambda: run(new_tokens), args.device)
    assert isinstance(out, list)
    return out, prefill_s, total_s


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arch", default="qwen3_5", choices=list(ARCHS))
    parser.add_argument("--preset", default="small")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=32)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = make_model(Path(tmp) / "model", arch=args.arch, preset=args.preset, dtype=args.dtype)
        vocab = int(json.loads((folder / "config.json").read_text())["vocab_size"])
        generator = torch.Generator().manual_seed(0)
        prompts = torch.randint(0, vocab, (args.batch, args.prompt_len), generator=generator)
        rows = []
        results = {}
        for name, fn in (("transformers", _transformers_generate), ("cortex", _cortex_generate)):
            tokens, prefill_s, total_s = fn(folder, prompts, args.new_tokens, args)
            results[name] = tokens
            decode_s = max(total_s - prefill_s, 1e-9)
            rows.append(
                (
                    name,
                    args.batch * args.prompt_len / prefill_s,
                    args.batch * (args.new_tokens - 1) / decode_s,
                    total_s,
                )
            )
    same = sum(a == b for a, b in zip(results["transformers"], results["cortex"], strict=True))
    print(
        f"arch={args.arch} preset={args.preset} device={args.device} dtype={args.dtype} "
        f"batch={args.batch} prompt_len={args.prompt_len} new_tokens={args.new_tokens}"
    )
    print(f"{'engine':<14}{'prefill tok/s':>16}{'decode tok/s':>16}{'total s':>10}")
    for name, prefill, decode, total in rows:
        print(f"{name:<14}{prefill:>16.1f}{decode:>16.1f}{total:>10.2f}")
    print(f"greedy outputs identical for {same}/{args.batch} prompts")


if __name__ == "__main__":
    main()
