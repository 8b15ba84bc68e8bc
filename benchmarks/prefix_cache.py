"""Prefix caching on a replayed agent session: the same six calls through an engine with the cache on and
one with it off, in the same run.

The session is the recorded Claude Code request (``../shared/data/claude_code_request.json``: system
prompt, 12 tools, the first user turn) made into 6 calls that each grow by one turn, as Claude Code sends
them: an assistant turn (thinking, a tool call) and its tool result, then a final answer and a new user
message, then two more tool turns. Each call goes the way the neuron takes an Anthropic request:
``cortex.translate`` to the OpenAI shape, the real Qwen3.6 template and tokenizer (``render_chat``, which
also finds the turn boundary), then ``Engine.stream``. The model is a random-weight Qwen3.5 checkpoint
written by ``make_model`` (``--preset small``: hidden 256, 8 layers, the real 248,320-token vocabulary),
loaded once and shared by both engines, so the two differ only in ``enable_prefix_caching``.

Per call: prompt tokens, tokens served from the cache, prompt tokens computed, time to first token with
the cache on and off, and the snapshot memory in use. The calls are interleaved (off, on, off, on, ...)
so that load on the machine hits both alike; ``--repeats`` reruns the whole session with fresh engines
and reports medians. Greedy outputs must be identical with the cache on and off.

    python benchmarks/prefix_cache.py                      # CPU, small preset (a few minutes on 2 cores)
    python benchmarks/prefix_cache.py --device cuda --dtype bfloat16 --preset 0.8b

Targets (issue 11): calls 2..6 compute at most 10% of their prompt tokens, and their time to first token
is at most 20% of the cache-off engine's. CPU timings say nothing about GPU speed.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cortex import translate
from cortex.engine.checkpoint import make_model
from cortex.engine.engine import Engine
from cortex.engine.engine_config import EngineConfig
from cortex.engine.models import load_model
from cortex.engine.sampling_params import SamplingParams
from cortex.engine.text.chat import render_chat
from cortex.engine.text.qwen import write_qwen_tokenizer_files
from cortex.engine.text.tokenizer import Tokenizer

RECORDED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "claude_code_request.json"
README = "# project\n\nA small tool.\n\n## Usage\n\n" + "".join(
    f"- `tool {verb}`: {verb}s the current project, printing what changed.\n"
    for verb in ("build", "test", "lint", "format", "package", "publish", "clean", "watch")
)
DIFF = (
    "diff --git a/README.md b/README.md\n--- a/README.md\n+++ b/README.md\n@@ -3,3 +3,9 @@\n A small tool.\n"
    "+\n+## Installation\n+\n+    pip install tool\n+\n+Python 3.10 or newer.\n"
)


def _tool_turn(
    n: int, thinking: str, name: str, tool_input: dict[str, Any], result: str
) -> list[dict[str, Any]]:
    """An assistant turn calling a tool (as Claude Code sends it back, thinking included) and its result."""
    tool_id = f"toolu_{n:02d}"
    return [
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": thinking, "signature": ""},
                {"type": "tool_use", "id": tool_id, "name": name, "input": tool_input},
            ],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_id, "content": result}]},
    ]


def session(recorded: dict[str, Any]) -> list[dict[str, Any]]:
    """The six Anthropic request bodies, each one turn longer than the last."""
    turns: list[list[dict[str, Any]]] = [
        _tool_turn(
            1,
            "The user says hi. Let me look at the project first.",
            "Bash",
            {"command": "ls -la", "description": "List the project files"},
            "total 16\ndrwxr-xr-x 3 user user 4096 .\n-rw-r--r-- 1 user user  412 README.md\n"
            "drwxr-xr-x 2 user user 4096 src",
        ),
        _tool_turn(
            2, "There is a README; read it.", "Read", {"file_path": "/home/user/project/README.md"}, README
        ),
        [
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "text",
                        "text": "Hi! This is a small tool with eight commands. What would you like to do?",
                    }
                ],
            },
            {
                "role": "user",
                "content": [{"type": "text", "text": "Add an installation section to the README."}],
            },
        ],
        _tool_turn(
            3,
            "Insert the section after the intro.",
            "Edit",
            {
                "file_path": "/home/user/project/README.md",
                "old_string": "A small tool.\n",
                "new_string": "A small tool.\n\n## Installation\n\n    pip install tool\n",
            },
            "The file /home/user/project/README.md has been updated.",
        ),
        _tool_turn(
            4, "Show the change.", "Bash", {"command": "git diff", "description": "Show the diff"}, DIFF
        ),
    ]
    bodies = [copy.deepcopy(recorded)]
    for turn in turns:
        body = copy.deepcopy(bodies[-1])
        body["messages"].extend(copy.deepcopy(turn))
        bodies.append(body)
    return bodies


@dataclass
class CallResult:
    prompt_tokens: int
    cached_tokens: int
    ttft_s: float
    token_ids: list[int]
    snapshot_bytes: int


async def _call(engine: Engine, body: dict[str, Any], params: SamplingParams) -> CallResult:
    assert engine.tokenizer is not None
    request = translate.anthropic_to_openai_request(body)
    rendered = render_chat(
        engine.tokenizer, request["messages"], request.get("tools"), **request.get("chat_template_kwargs", {})
    )
    start = time.perf_counter()
    ttft_s, tokens, cached = 0.0, [], 0
    async for delta in engine.stream(rendered.token_ids, params, turn_boundary=rendered.turn_boundary):
        if not tokens and delta.token_ids:
            ttft_s = time.perf_counter() - start
        tokens.extend(delta.token_ids)
        cached = delta.num_cached_tokens
    stats = engine.stats().prefix_cache
    return CallResult(
        prompt_tokens=len(rendered.token_ids),
        cached_tokens=cached,
        ttft_s=ttft_s,
        token_ids=tokens,
        snapshot_bytes=stats.snapshot_bytes_used if stats is not None else 0,
    )


def run_session(
    model: Any,
    model_config: Any,
    tokenizer: Tokenizer,
    bodies: list[dict[str, Any]],
    args: argparse.Namespace,
) -> dict[bool, list[CallResult]]:
    params = SamplingParams(max_tokens=args.new_tokens, temperature=0.0, ignore_eos=True)
    engines = {
        caching: Engine(
            model,
            model_config,
            EngineConfig(
                device=args.device,
                dtype=args.dtype,
                max_model_len=args.max_model_len,
                cache_memory_bytes=args.cache_memory_bytes,
                enable_prefix_caching=caching,
            ),
            tokenizer=tokenizer,
        )
        for caching in (False, True)
    }
    results: dict[bool, list[CallResult]] = {False: [], True: []}
    try:
        for engine in engines.values():  # warm up allocators and kernels on an unrelated prompt
            engine.generate([[1, 2, 3, 4] * 8], params)
        for body in bodies:
            for caching, engine in engines.items():
                results[caching].append(asyncio.run(_call(engine, body, params)))
    finally:
        for engine in engines.values():
            engine.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="small")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--new-tokens", type=int, default=8)
    parser.add_argument("--max-model-len", type=int, default=8192)
    parser.add_argument("--cache-memory-bytes", type=int, default=1 << 30)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--recorded", type=Path, default=RECORDED, help="the recorded Claude Code request")
    args = parser.parse_args()
    if not args.recorded.is_file():
        sys.exit(f"needs the recorded request at {args.recorded} (../shared/data; or pass --recorded)")
    bodies = session(json.loads(args.recorded.read_text()))
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_model(
            Path(tmp) / "model", arch="qwen3_5", preset=args.preset, dtype=args.dtype, vocab_size=248320
        )
        write_qwen_tokenizer_files(folder)
        model, model_config = load_model(folder, dtype=args.dtype, device=args.device)
        tokenizer = Tokenizer.from_folder(folder)
        assert tokenizer is not None
        with torch.inference_mode():
            runs = [run_session(model, model_config, tokenizer, bodies, args) for _ in range(args.repeats)]

    first = runs[0]
    identical = all(r[True][i].token_ids == r[False][i].token_ids for r in runs for i in range(len(bodies)))
    print(
        f"preset={args.preset} (random weights, real Qwen3.6 template and tokenizer) device={args.device} "
        f"dtype={args.dtype} new_tokens={args.new_tokens} repeats={args.repeats} (medians)"
    )
    header = (
        "call",
        "prompt",
        "cached",
        "computed",
        "computed %",
        "TTFT off s",
        "TTFT on s",
        "on/off",
        "snapshots MiB",
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    met = True
    for i in range(len(bodies)):
        on = first[True][i]
        computed = on.prompt_tokens - on.cached_tokens
        ttft_off = statistics.median(r[False][i].ttft_s for r in runs)
        ttft_on = statistics.median(r[True][i].ttft_s for r in runs)
        share, ratio = computed / on.prompt_tokens, ttft_on / ttft_off
        if i > 0:
            met = met and share <= 0.10 and ratio <= 0.20
        print(
            f"| {i + 1} | {on.prompt_tokens} | {on.cached_tokens} | {computed} | {100 * share:.1f}% | "
            f"{ttft_off:.3f} | {ttft_on:.3f} | {ratio:.2f} | {on.snapshot_bytes / 2**20:.1f} |"
        )
    later = range(1, len(bodies))
    hit_rate = sum(first[True][i].cached_tokens for i in later) / sum(
        first[True][i].prompt_tokens for i in later
    )
    print(f"calls 2..6: hit rate {100 * hit_rate:.1f}% of prompt tokens")
    print(f"greedy outputs identical with the cache on and off: {identical}")
    verdict = "met" if met else "MISSED"
    print(f"targets (calls 2..6 compute <= 10% of the prompt, TTFT <= 20% of cache-off): {verdict}")


if __name__ == "__main__":
    main()
