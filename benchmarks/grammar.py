"""Grammar libraries for structured outputs, compared in one run: llguidance (cortex's choice) and
xgrammar, with the real Qwen3.5 vocabulary (248,077 tokens, 248,320 logits).

For each library: the one-time tokenizer setup, the compile time of a few JSON schemas, and the
per-token cost of computing the next-token bitmask while a valid document is fed token by token
(median and p99). Then the cost of applying a bitmask to 248,320-wide logits, 1, 8 and 32 rows, for
three masks taken from a real grammar (everything allowed; inside a JSON string, most tokens allowed;
at a number, a few allowed): cortex's (cortex.engine.structured.bitmask: it lists the denied or the
allowed tokens, whichever takes fewer words), the table gather cortex used before, and xgrammar's own
kernel; and, for scale, the engine's decode step on the demo model, free and constrained.

    python benchmarks/grammar.py
    python benchmarks/grammar.py --device cuda       # the apply and the step on a GPU
    python benchmarks/grammar.py --threads 1         # steadier on a busy CPU

xgrammar is optional (it pulls transformers in at run time, which cortex does not ship); its column is
skipped when it is not installed.
"""

from __future__ import annotations

import argparse
import dataclasses
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
from cortex.engine.structured.params import StructuredOutputsParams
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


def _table_gather_(logits: torch.Tensor, bitmask: torch.Tensor) -> None:
    """How cortex applied a bitmask before it listed tokens, kept here as the reference: each byte of
    the words indexes a [256, 8] table of integer masks, and the logits' bits become
    ``bits & keep | fill`` (two vocabulary-wide intermediates per row)."""
    int_dtype = {4: torch.int32, 2: torch.int16}[logits.element_size()]
    allowed = ((torch.arange(256).unsqueeze(1) >> torch.arange(8)) & 1).bool()
    minus_inf = int(torch.tensor(float("-inf"), dtype=logits.dtype).view(int_dtype))
    keep_table = torch.where(allowed, -1, 0).to(int_dtype).to(logits.device)
    fill_table = torch.where(allowed, 0, minus_inf).to(int_dtype).to(logits.device)
    byte_ids = bitmask.to(logits.device).contiguous().view(torch.uint8).view(-1).int()
    keep = keep_table.index_select(0, byte_ids).view(bitmask.shape[0], -1)[:, : logits.shape[-1]]
    fill = fill_table.index_select(0, byte_ids).view(bitmask.shape[0], -1)[:, : logits.shape[-1]]
    logits.view(int_dtype).bitwise_and_(keep).bitwise_or_(fill)


def _masks(tokenizer: Tokenizer, ll_tokenizer: llguidance.LLTokenizer) -> dict[str, torch.Tensor]:
    """Three real masks of the `nested` schema: all allowed, inside a string, at a number."""
    schema, document = SCHEMAS["nested"]
    text = json.dumps(document)
    grammar = llguidance.LLMatcher.grammar_from_json_schema(schema, defaults=JSON_COMPILE_OPTIONS)
    masks = {"all allowed": allocate_token_bitmask(1, VOCAB)}
    for name, prefix in (
        ("in a string", text[: text.index("item number") + 3]),
        ("at a number", '{"items": [{"id": '),
    ):
        matcher = llguidance.LLMatcher(ll_tokenizer, grammar)
        for token_id in tokenizer.encode(prefix):
            assert matcher.consume_token(token_id), matcher.get_error()
        bitmask = allocate_token_bitmask(1, VOCAB)
        fill_bitmask(matcher, bitmask[0])
        masks[name] = bitmask
    return masks


def _apply_rows(device: str, masks: dict[str, torch.Tensor]) -> dict[str, dict[str, list[float]]]:
    """Median-ready timings of each way to apply each mask, for 1, 8 and 32 rows."""
    appliers: dict[str, Callable[[torch.Tensor, torch.Tensor], object]] = {
        "cortex: listed tokens": apply_token_bitmask_,
        "table gather + bit ops (before)": _table_gather_,
    }
    try:
        import xgrammar

        appliers["xgrammar kernel"] = xgrammar.apply_token_bitmask_inplace
    except ImportError:
        pass
    out: dict[str, dict[str, list[float]]] = {}
    for name, apply in appliers.items():
        for mask_name, mask in masks.items():
            for num_rows in (1, 8, 32):
                logits = torch.randn(num_rows, VOCAB, device=device)
                bitmask = mask.expand(num_rows, -1).contiguous()
                if name == "xgrammar kernel":
                    bitmask = bitmask.to(device)
                times = []
                for _ in range(30):
                    fresh = logits.clone()
                    if device == "cuda":
                        torch.cuda.synchronize()
                    start = time.perf_counter()
                    apply(fresh, bitmask)
                    if device == "cuda":
                        torch.cuda.synchronize()
                    times.append(time.perf_counter() - start)
                out.setdefault(name, {})[f"{mask_name}, {num_rows} row{'s' if num_rows > 1 else ''}"] = times
    return out


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
    row["masks"] = _masks(tokenizer, ll_tokenizer)
    return row


def _xgrammar(tokenizer: Tokenizer) -> dict[str, object] | None:
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
    return row


def _step_times(device: str, threads: int | None) -> tuple[float, float]:
    """Per generated token: the demo model's decode step unconstrained, and constrained by the `text`
    schema (the mask computed and applied every step)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_model(Path(tmp) / "demo", arch="qwen3_5", preset="tiny", vocab_size=VOCAB)
        write_qwen_tokenizer_files(folder)
        with cortex.Engine.from_pretrained(
            folder, device=device, max_model_len=512, num_threads=threads
        ) as engine:
            free = cortex.SamplingParams(max_tokens=64, temperature=0.0, ignore_eos=True)
            constrained = dataclasses.replace(
                free, structured_outputs=StructuredOutputsParams.from_schema(SCHEMAS["text"][0])
            )
            times = []
            for params in (free, constrained):
                engine.generate([[1, 2, 3]], params)  # warm up
                start = time.perf_counter()
                (output,) = engine.generate([[1, 2, 3]], params)
                times.append((time.perf_counter() - start) / len(output.token_ids))
            return times[0], times[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads", type=int, help="torch CPU threads (default: torch's); 1 steadies timings on a busy CPU"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        write_qwen_tokenizer_files(tmp)
        tokenizer = Tokenizer.from_folder(tmp)
        assert tokenizer is not None
        rows = {"llguidance": _llguidance(tokenizer)}
        xgrammar_row = _xgrammar(tokenizer)
        if xgrammar_row is not None:
            rows["xgrammar"] = xgrammar_row
    masks = rows["llguidance"].pop("masks")
    assert isinstance(masks, dict)
    allowed = {}
    for name, mask in masks.items():
        logits = torch.zeros(1, VOCAB)
        apply_token_bitmask_(logits, mask)
        allowed[name] = int(torch.isfinite(logits).sum())
    applies = _apply_rows(args.device, masks)
    step, constrained_step = _step_times(args.device, args.threads)
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
    print()
    print(
        f"| apply a bitmask to 248,320 logits ({args.device}), median / best ms | "
        + " | ".join(applies)
        + " |"
    )
    print("|---|" + "---|" * len(applies))
    for case in next(iter(applies.values())):
        mask_name = case.split(",")[0]
        cells = [f"{_ms(statistics.median(t[case]))} / {_ms(min(t[case]))}" for t in applies.values()]
        print(f"| {case} ({allowed[mask_name]:,} tokens allowed) | " + " | ".join(cells) + " |")
    print(f"| engine decode step, demo model, batch 1 | {_ms(step)} |" + " |" * (len(applies) - 1))
    print(
        f"| engine decode step, demo model, batch 1, `text` schema | {_ms(constrained_step)} |"
        + " |" * (len(applies) - 1)
    )


if __name__ == "__main__":
    main()
