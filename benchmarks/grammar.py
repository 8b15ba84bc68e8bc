"""Grammar libraries for structured outputs, compared in one run: llguidance (cortex's choice) and
xgrammar, with the real Qwen3.5 vocabulary (248,077 tokens, 248,320 logits).

For each library: the one-time tokenizer setup, the compile time of a few JSON schemas, and the
per-token cost of computing the next-token bitmask while a valid document is fed token by token
(median and p99). Then the cost of applying a bitmask to one row of 248,320 logits (cortex's shift
unpack; xgrammar's own CPU kernel), and, for scale, the engine's decode step on the demo model.

    python benchmarks/grammar.py
    python benchmarks/grammar.py --device cuda       # the apply and the step on a GPU

xgrammar is optional (it pulls transformers in at run time, which cortex does not ship); its column is
skipped when it is not installed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import llguidance
import torch

import cortex
from cortex.engine.checkpoint import make_model
from cortex.engine.structured.backend import JSON_COMPILE_OPTIONS
from cortex.engine.structured.bitmask import allocate_token_bitmask, apply_token_bitmask_, fill_bitmask
from cortex.engine.text.qwen import write_qwen_tokenizer_files
from cortex.engine.text.tokenizer import Tokenizer

VOCAB = 248320
SCHEMAS = {
    "flat": (
        {
            "type": "object",
            "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
            "required": ["name", "age"],
        },
        {"name": "Ada Lovelace", "age": 36},
    ),
    "nested": (
        {
            "type": "object",
            "properties": {
                "items": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "id": {"type": "integer"},
                            "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}},
                            "note": {"type": ["string", "null"]},
                        },
                        "required": ["id", "tags"],
                    },
                }
            },
            "required": ["items"],
        },
        {"items": [{"id": i, "tags": ["a", "c"], "note": f"item number {i}"} for i in range(6)]},
    ),
    "text": (
        {"type": "object", "properties": {"body": {"type": "string"}}, "required": ["body"]},
        {"body": "The quick brown fox jumps over the lazy dog. " * 8},
    ),
}


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f}"


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _llguidance(tokenizer: Tokenizer) -> dict[str, object]:
    row: dict[str, object] = {}
    start = time.perf_counter()
    ll_tokenizer = llguidance.LLTokenizer(str(tokenizer.path), n_vocab=VOCAB, eos_token=[248046])
    row["setup_s"] = time.perf_counter() - start
    bitmask = allocate_token_bitmask(1, VOCAB)
    for name, (schema, document) in SCHEMAS.items():
        start = time.perf_counter()
        grammar = llguidance.LLMatcher.grammar_from_json_schema(schema, defaults=JSON_COMPILE_OPTIONS)
        matcher = llguidance.LLMatcher(ll_tokenizer, grammar)
        fill_bitmask(matcher, bitmask[0])
        row[f"compile_{name}"] = time.perf_counter() - start
        times = []
        for token_id in tokenizer.encode(json.dumps(document)):
            times.append(_timed(lambda m=matcher: fill_bitmask(m, bitmask[0])))
            assert matcher.consume_token(token_id), matcher.get_error()
        row[f"mask_{name}"] = times
    return row


def _xgrammar(tokenizer: Tokenizer, logits: torch.Tensor) -> dict[str, object] | None:
    try:
        import xgrammar
    except ImportError:
        return None
    row: dict[str, object] = {}
    start = time.perf_counter()
    vocab = [tokenizer.id_to_token(i) or "" for i in range(tokenizer.vocab_size)]
    info = xgrammar.TokenizerInfo(
        vocab, xgrammar.VocabType.BYTE_LEVEL, vocab_size=VOCAB, stop_token_ids=[248046]
    )
    compiler = xgrammar.GrammarCompiler(info, max_threads=2, cache_enabled=False)
    row["setup_s"] = time.perf_counter() - start
    bitmask = xgrammar.allocate_token_bitmask(1, VOCAB)
    for name, (schema, document) in SCHEMAS.items():
        start = time.perf_counter()
        matcher = xgrammar.GrammarMatcher(
            compiler.compile_json_schema(json.dumps(schema), any_whitespace=False)
        )
        matcher.fill_next_token_bitmask(bitmask)
        row[f"compile_{name}"] = time.perf_counter() - start
        times = []
        for token_id in tokenizer.encode(json.dumps(document)):
            times.append(_timed(lambda m=matcher: m.fill_next_token_bitmask(bitmask)))
            assert matcher.accept_token(token_id)
        row[f"mask_{name}"] = times
    on_device = bitmask.to(logits.device)
    row["apply"] = [
        _timed(lambda: xgrammar.apply_token_bitmask_inplace(logits, on_device)) for _ in range(50)
    ]
    return row


def _step_time(device: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_model(Path(tmp) / "demo", arch="qwen3_5", preset="tiny", vocab_size=VOCAB)
        write_qwen_tokenizer_files(folder)
        with cortex.Engine.from_pretrained(folder, device=device, max_model_len=512) as engine:
            params = cortex.SamplingParams(max_tokens=64, temperature=0.0, ignore_eos=True)
            engine.generate([[1, 2, 3]], params)  # warm up
            start = time.perf_counter()
            engine.generate([[1, 2, 3]], params)
            return (time.perf_counter() - start) / 64


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        write_qwen_tokenizer_files(tmp)
        tokenizer = Tokenizer.from_folder(tmp)
        assert tokenizer is not None
        logits = torch.randn(1, VOCAB, device=args.device)
        rows = {"llguidance": _llguidance(tokenizer)}
        bitmask = allocate_token_bitmask(1, VOCAB)
        rows["llguidance"]["apply"] = [
            _timed(lambda: apply_token_bitmask_(logits, bitmask)) for _ in range(50)
        ]
        xgrammar_row = _xgrammar(tokenizer, logits)
        if xgrammar_row is not None:
            rows["xgrammar"] = xgrammar_row
    step = _step_time(args.device)
    print(f"| measure ({args.device}) | " + " | ".join(rows) + " |")
    print("|---|" + "---|" * len(rows))
    print("| tokenizer setup, s | " + " | ".join(f"{r['setup_s']:.2f}" for r in rows.values()) + " |")
    for name in SCHEMAS:
        print(
            f"| compile `{name}`, ms | " + " | ".join(_ms(r[f"compile_{name}"]) for r in rows.values()) + " |"
        )
    for name in SCHEMAS:
        cells = []
        for r in rows.values():
            times = sorted(r[f"mask_{name}"])
            cells.append(f"{_ms(statistics.median(times))} / {_ms(times[int(0.99 * (len(times) - 1))])}")
        print(f"| mask per token `{name}`, median / p99 ms | " + " | ".join(cells) + " |")
    apply_cell = " | ".join(_ms(statistics.median(r["apply"])) for r in rows.values())
    print(f"| apply bitmask to 248,320 logits, median ms | {apply_cell} |")
    print(f"| engine decode step, demo model, batch 1, ms | {_ms(step)} |" + " |" * (len(rows) - 1))


if __name__ == "__main__":
    main()
