"""N concurrent streams, both dialects, through a real gateway to two real neurons: lost, garbled, latency.

Starts two ``cortex neuron`` processes (the tiny random Qwen3.5 with the real tokenizer) and a
``cortex serve`` gateway over them, asks each of ``--prompts`` prompts once per dialect without
streaming for its greedy answer, then opens ``--streams`` streams at once, half OpenAI Chat
Completions and half Anthropic Messages, each greedy with a fixed ``max_tokens``. A stream is **lost**
when it fails, is cut, or ends without its terminator (``data: [DONE]`` / ``message_stop``); it is
**garbled** when it completes but its events are malformed, or its text or token count is not its
prompt's answer in its dialect. The table prints both counts, time to first token and to the end
(p50 / p95 / p99), the requests each neuron got and the run's wall time.

    python benchmarks/load.py [--streams 1000] [--max-tokens 16] [--prompts 8] [--json out.json]

Target (issue 16): 1,000 concurrent streams, 0 lost, 0 garbled.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from processes import SRC, TINY_MODEL, gateway_process, make_tiny_model, neuron_process, running

DIALECTS = ("openai", "anthropic")


@dataclass
class StreamResult:
    dialect: str
    prompt: int
    ok: bool = False  # completed with its terminator
    garbled: str = ""  # why, when it completed wrongly
    error: str = ""
    ttft_s: float | None = None
    total_s: float = 0.0
    text: str = ""
    num_tokens: int | None = None


@dataclass
class Report:
    streams: int
    max_tokens: int
    lost: int
    garbled: int
    ttft_ms: tuple[float, float, float]
    total_ms: tuple[float, float, float]
    wall_s: float
    per_neuron: dict[str, int] = field(default_factory=dict)  # requests each neuron got during the run
    examples: list[str] = field(default_factory=list)


def prompts(count: int) -> list[str]:
    topics = ("rivers", "stars", "bread", "clocks", "ships", "trees", "glass", "music", "salt", "bees")
    return [f"Tell me about {topics[i % len(topics)]} number {i}." for i in range(count)]


def body(dialect: str, prompt: str, max_tokens: int, *, stream: bool) -> dict[str, Any]:
    request: dict[str, Any] = {
        "model": TINY_MODEL,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": stream,
    }
    if dialect == "openai":
        request["ignore_eos"] = True  # a cortex extension; Anthropic callers may stop early at eos
        if stream:
            request["stream_options"] = {"include_usage": True}
    return request


async def answer(client: httpx.AsyncClient, dialect: str, prompt: str, max_tokens: int) -> tuple[str, int]:
    """The prompt's greedy text and token count in ``dialect``, asked once without streaming: the
    oracle for that dialect's streams."""
    path = "/v1/chat/completions" if dialect == "openai" else "/v1/messages"
    reply = await client.post(path, json=body(dialect, prompt, max_tokens, stream=False))
    reply.raise_for_status()
    data = reply.json()
    if dialect == "openai":
        message = data["choices"][0]["message"]
        text = (message.get("reasoning_content") or "") + (message.get("content") or "")
        return text, data["usage"]["completion_tokens"]
    text = "".join(block.get("thinking") or block.get("text") or "" for block in data["content"])
    return text, data["usage"]["output_tokens"]


def _parse_openai(lines: list[tuple[float, str]], result: StreamResult, started: float) -> None:
    done = False
    for at, line in lines:
        if not line.startswith("data: "):
            continue
        if line == "data: [DONE]":
            done = True
            continue
        chunk = json.loads(line[6:])
        if "error" in chunk:
            result.error = json.dumps(chunk)[:200]
            return
        if chunk.get("object") != "chat.completion.chunk":
            result.garbled = f"not a chunk: {line[:100]}"
        if chunk.get("usage"):
            result.num_tokens = chunk["usage"].get("completion_tokens")
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            piece = (delta.get("reasoning_content") or "") + (delta.get("content") or "")
            if piece and result.ttft_s is None:
                result.ttft_s = at - started
            result.text += piece
    result.ok = done


def _parse_anthropic(lines: list[tuple[float, str]], result: StreamResult, started: float) -> None:
    event_name = None
    types: list[str] = []
    for at, line in lines:
        if line.startswith("event: "):
            event_name = line[7:]
        elif line.startswith("data: "):
            event = json.loads(line[6:])
            if event.get("type") != event_name:
                result.garbled = f"event {event_name} carries {event.get('type')}"
            types.append(event["type"])
            if event["type"] == "error":
                result.error = json.dumps(event)[:200]
                return
            delta = event.get("delta") or {}
            piece = delta.get("thinking") or delta.get("text") or ""
            if piece and result.ttft_s is None:
                result.ttft_s = at - started
            result.text += piece
            if event["type"] == "message_delta":
                result.num_tokens = (event.get("usage") or {}).get("output_tokens")
    if types[:1] != ["message_start"] and not result.garbled:
        result.garbled = f"starts with {types[:1]}"
    result.ok = "message_stop" in types


async def one_stream(
    client: httpx.AsyncClient, dialect: str, index: int, prompt: str, max_tokens: int
) -> StreamResult:
    result = StreamResult(dialect, index)
    path = "/v1/chat/completions" if dialect == "openai" else "/v1/messages"
    started = time.monotonic()
    status: int | None = None  # where a transport error struck: before the head, or after some lines
    lines: list[tuple[float, str]] = []
    try:
        async with client.stream("POST", path, json=body(dialect, prompt, max_tokens, stream=True)) as reply:
            status = reply.status_code
            if reply.status_code != 200:
                result.error = f"{reply.status_code} {(await reply.aread())[:200]!r}"
                return result
            async for line in reply.aiter_lines():
                lines.append((time.monotonic(), line))
    except httpx.HTTPError as error:
        result.error = f"{type(error).__name__}: {error} (status {status}, {len(lines)} lines read)"
        return result
    finally:
        result.total_s = time.monotonic() - started
    try:
        (_parse_openai if dialect == "openai" else _parse_anthropic)(lines, result, started)
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        result.garbled = f"unparseable stream: {error}"
    return result


def _percentiles(values: list[float]) -> tuple[float, float, float]:
    if not values:
        return (0.0, 0.0, 0.0)
    ordered = sorted(values)

    def at(q: float) -> float:
        return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return (1000 * statistics.median(ordered), at(0.95), at(0.99))


async def _neuron_requests(url: str) -> float:
    """A neuron's requests so far (its ``cortex_requests_total``, all endpoints)."""
    async with httpx.AsyncClient(base_url=url) as client:
        text = (await client.get("/metrics")).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("cortex_requests_total{")
    )


async def run(gateway_url: str, neuron_urls: dict[str, str], args: argparse.Namespace) -> Report:
    texts = prompts(args.prompts)
    limits = httpx.Limits(max_connections=args.streams + 16, max_keepalive_connections=args.streams)
    timeout = httpx.Timeout(args.timeout_s, connect=60)
    async with httpx.AsyncClient(base_url=gateway_url, limits=limits, timeout=timeout) as client:
        expected = {
            (dialect, i): await answer(client, dialect, text, args.max_tokens)
            for dialect in DIALECTS
            for i, text in enumerate(texts)
        }
        before = {name: await _neuron_requests(url) for name, url in neuron_urls.items()}
        started = time.monotonic()
        results = await asyncio.gather(
            *(
                one_stream(client, DIALECTS[i % 2], i % len(texts), texts[i % len(texts)], args.max_tokens)
                for i in range(args.streams)
            )
        )
        wall_s = time.monotonic() - started
        after = {name: await _neuron_requests(url) for name, url in neuron_urls.items()}
    for result in results:
        text, num_tokens = expected[(result.dialect, result.prompt)]
        if result.ok and not result.garbled:
            if result.text != text:
                result.garbled = f"text {result.text[:40]!r} is not the answer {text[:40]!r}"
            elif result.num_tokens != num_tokens:
                result.garbled = f"{result.num_tokens} tokens, not {num_tokens}"
    lost = [r for r in results if not r.ok]
    garbled = [r for r in results if r.ok and r.garbled]
    examples = [f"lost {r.dialect} after {r.total_s:.1f} s: {r.error[:160]}" for r in lost[:5]]
    examples += [f"garbled {r.dialect}: {r.garbled[:160]}" for r in garbled[:5]]
    done = [r for r in results if r.ok and not r.garbled]
    return Report(
        streams=args.streams,
        max_tokens=args.max_tokens,
        lost=len(lost),
        garbled=len(garbled),
        ttft_ms=_percentiles([r.ttft_s for r in done if r.ttft_s is not None]),
        total_ms=_percentiles([r.total_s for r in done]),
        wall_s=wall_s,
        per_neuron={name: int(after[name] - before[name]) for name in neuron_urls},
        examples=examples
        + [f"errors: {dict(Counter(r.error.split(':')[0][:40] for r in lost))}"] * bool(lost),
    )


def table(report: Report) -> str:
    ms = "{:.0f} / {:.0f} / {:.0f}"
    spread = ", ".join(f"{name}: {count}" for name, count in report.per_neuron.items())
    return "\n".join(
        [
            "| streams (half each dialect) | max_tokens | lost | garbled | TTFT p50 / p95 / p99 ms "
            "| total p50 / p95 / p99 ms | wall s | requests per neuron |",
            "|---|---|---|---|---|---|---|---|",
            f"| {report.streams} | {report.max_tokens} | {report.lost} | {report.garbled} | "
            f"{ms.format(*report.ttft_ms)} | {ms.format(*report.total_ms)} | {report.wall_s:.1f} "
            f"| {spread} |",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--timeout-s", type=float, default=600)
    parser.add_argument("--src", type=Path, default=SRC, help="the source tree the servers run")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cortex-load-") as tmp:
        workdir = Path(tmp)
        make_tiny_model(workdir / "models")
        # each neuron runs up to 64 streams at once and queues the rest (no 429 at this load)
        options = {"max_running": 64, "max_queue": 4 * args.streams, "queue_timeout_s": args.timeout_s}
        neurons = [
            neuron_process(workdir, workdir / "models", f"n{i}", src=args.src, **options) for i in (1, 2)
        ]
        gateway = gateway_process(workdir, neurons, src=args.src)
        with running(*neurons, gateway):
            report = asyncio.run(run(gateway.url, {n.name: n.url for n in neurons}, args))
    print(f"concurrent streams through a gateway to two neurons (tiny model), servers from {args.src}\n")
    print(table(report))
    for line in report.examples:
        print(f"  {line}")
    if args.json:
        args.json.write_text(json.dumps(asdict(report), indent=2))


if __name__ == "__main__":
    main()
