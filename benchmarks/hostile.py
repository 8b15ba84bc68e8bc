"""Hostile requests against a real neuron and a real gateway on loopback: status classes, 500s, hangs.

Starts a ``cortex neuron`` process (the tiny random Qwen3.5 with the real tokenizer) and a ``cortex serve``
gateway in front of it, then sends each server ``--requests`` hostile requests from the seeded generator
in tests/hostile_requests.py (wrong types, huge and non-finite numbers, deep nesting, invalid text,
oversized bodies, out-of-range sampling values, hostile model names, wrong methods and routes), with
``--concurrency`` in flight. Meanwhile canaries (ordinary requests in both dialects, streamed and not)
run against the same server; after the run, the time until a canary succeeds again is measured. Then
``--slowloris`` connections send their headers a byte a second for ``--slowloris-s`` seconds and the
table shows how many the server had closed. A request is a **hang** when it gets no answer, or an
error answer, or the head of its stream, after more than 5 s; a successful answer of at least 64
generated tokens (a hostile ``max_tokens`` clamped to the context window is still a valid request) that
took longer is counted apart, as a long generation, with the fewest tokens one of them generated.

    python benchmarks/hostile.py [--requests 10000] [--concurrency 16] [--seed 0] [--src PATH] [--json F]

``--src`` runs the servers from another source tree (an older checkout's ``src``), which is how the
before/after tables in docs/benchmarks.md were made. Targets (issue 16): 0 responses of 500, 0 hangs,
every error in the caller's dialect, canaries served during and after.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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

from hostile_requests import Generator, HostileRequest, error_dialect, normal_requests
from processes import SRC, TINY_MODEL, gateway_process, make_tiny_model, neuron_process, running

HANG_S = 5.0
LONG_TOKENS = 64  # a 2xx answer that generated this many tokens may take longer than HANG_S
TIMEOUT_S = 20.0


@dataclass
class Outcome:
    kind: str
    status: int | None  # None: no response (timeout or transport error)
    seconds: float
    head_s: float = 0.0  # until the response head (a stream's first bytes)
    output_tokens: int | None = None  # a non-streamed 2xx answer's usage
    error: str = ""  # a transport error's class, or what was wrong with the body
    dialect_ok: bool = True
    message_len: int = 0


@dataclass
class Report:
    server: str
    num_requests: int = 0
    by_class: dict[str, int] = field(default_factory=dict)
    num_500: int = 0
    num_5xx: int = 0
    num_hangs: int = 0
    num_long_generations: int = 0  # 2xx answers over HANG_S that generated tokens all along
    fewest_long_tokens: int | None = None
    num_no_response: int = 0
    num_wrong_dialect: int = 0
    longest_error_message: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    canaries_ok: int = 0
    canaries: int = 0
    canary_max_ms: float = 0.0
    recovery_s: float | None = None  # after the run, until a canary succeeded
    slowloris_open: int | None = None
    slowloris_total: int = 0
    examples: list[str] = field(default_factory=list)  # a few of the requests that got a 5xx or hung


def _sse_errors(text: str) -> list[Any]:
    errors = []
    for line in text.splitlines():
        if line.startswith("data: ") and '"error"' in line:
            try:
                errors.append(json.loads(line[6:]))
            except json.JSONDecodeError:
                errors.append(None)
    return errors


async def send(client: httpx.AsyncClient, request: HostileRequest) -> Outcome:
    started = time.monotonic()
    try:
        async with client.stream(
            request.method, request.path, content=request.body or None, headers=request.headers
        ) as reply:
            head_s = time.monotonic() - started
            raw = await reply.aread()
    except httpx.HTTPError as error:
        return Outcome(request.kind, None, time.monotonic() - started, error=type(error).__name__)
    seconds = time.monotonic() - started
    text = raw.decode(errors="replace")
    outcome = Outcome(request.kind, reply.status_code, seconds, head_s)
    if reply.status_code >= 400:
        try:
            body = json.loads(text)
        except json.JSONDecodeError:
            body = None
        found = error_dialect(body)
        outcome.dialect_ok = found == request.expected_dialect
        outcome.error = "" if outcome.dialect_ok else f"error body {text[:120]!r}"
        if found is not None:
            outcome.message_len = len(str(body["error"].get("message", "")))
    elif reply.headers.get("content-type", "").startswith("text/event-stream"):
        for event in _sse_errors(text):
            found = error_dialect(event)
            if found != request.expected_dialect:
                outcome.dialect_ok = False
                outcome.error = f"stream error event {json.dumps(event)[:120]}"
            elif event is not None:
                outcome.message_len = max(outcome.message_len, len(str(event["error"].get("message", ""))))
    elif 200 <= reply.status_code < 300:
        outcome.output_tokens = _output_tokens(text)
    return outcome


def _output_tokens(text: str) -> int | None:
    """The generated token count of a non-streamed answer in either dialect."""
    try:
        usage = json.loads(text).get("usage") or {}
    except (json.JSONDecodeError, AttributeError):
        return None
    count = usage.get("completion_tokens", usage.get("output_tokens"))
    return count if isinstance(count, int) else None


def _long_generation(outcome: Outcome) -> bool:
    """A 2xx answer over HANG_S that is work, not a hang: a stream whose head came in time, or an answer
    of at least LONG_TOKENS generated tokens (a hostile max_tokens clamped to the context window)."""
    if outcome.status is None or not 200 <= outcome.status < 300 or outcome.seconds <= HANG_S:
        return False
    if outcome.output_tokens is None:
        return outcome.head_s <= HANG_S and outcome.head_s < outcome.seconds
    return outcome.output_tokens >= LONG_TOKENS


def _hang(outcome: Outcome) -> bool:
    return (outcome.seconds > HANG_S or outcome.error == "ReadTimeout") and not _long_generation(outcome)


def _complete(request: HostileRequest, text: str) -> bool:
    if not request.streams:
        return '"error"' not in text
    return ("data: [DONE]" in text) if request.expected_dialect == "openai" else ("message_stop" in text)


async def canary(client: httpx.AsyncClient, request: HostileRequest) -> float | None:
    """Seconds an ordinary request took, or None when it failed."""
    started = time.monotonic()
    try:
        reply = await client.request(request.method, request.path, content=request.body, timeout=TIMEOUT_S)
    except httpx.HTTPError:
        return None
    ok = reply.status_code == 200 and _complete(request, reply.text)
    return time.monotonic() - started if ok else None


async def canaries(client: httpx.AsyncClient, stop: asyncio.Event, results: list[float | None]) -> None:
    requests = normal_requests(TINY_MODEL)
    i = 0
    while not stop.is_set():
        results.append(await canary(client, requests[i % len(requests)]))
        i += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)


async def slowloris(url: str, num_connections: int, duration_s: float) -> int:
    """Open connections that send their request line and headers a byte a second; the number the server
    still holds open after ``duration_s``."""
    host, port = url.removeprefix("http://").split(":")
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    closed = 0

    async def one() -> None:
        nonlocal closed
        try:
            reader, writer = await asyncio.open_connection(host, int(port))
        except OSError:
            closed += 1
            return
        deadline = time.monotonic() + duration_s
        try:
            for i in range(10**9):
                if time.monotonic() > deadline:
                    return
                writer.write(head[i % len(head) : i % len(head) + 1])
                await writer.drain()
                try:
                    if await asyncio.wait_for(reader.read(1024), 1.0) == b"":
                        closed += 1
                        return
                except TimeoutError:
                    pass
        except (ConnectionError, OSError):
            closed += 1
        finally:
            writer.close()

    await asyncio.gather(*(one() for _ in range(num_connections)))
    return num_connections - closed


async def attack(name: str, url: str, args: argparse.Namespace, *, neuron: bool) -> Report:
    report = Report(name)
    generator = iter(Generator(TINY_MODEL, args.seed, neuron=neuron))
    outcomes: list[Outcome] = []
    examples: list[str] = []
    limits = httpx.Limits(max_connections=args.concurrency + 8)
    async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT_S, limits=limits) as client:
        stop = asyncio.Event()
        canary_results: list[float | None] = []
        canary_task = asyncio.create_task(canaries(client, stop, canary_results))
        queue: asyncio.Queue[HostileRequest | None] = asyncio.Queue(maxsize=args.concurrency * 2)

        async def worker() -> None:
            while (request := await queue.get()) is not None:
                outcome = await send(client, request)
                outcomes.append(outcome)
                bad = outcome.status is None or outcome.status >= 500 or _hang(outcome)
                if (bad or not outcome.dialect_ok) and len(examples) < 12:
                    status = outcome.status if outcome.status is not None else outcome.error
                    where = f"{request.kind} {request.method} {request.path[:60]}"
                    examples.append(
                        f"{status} {outcome.seconds:.1f}s {where} {request.body[:80]!r} {outcome.error[:80]}"
                    )

        workers = [asyncio.create_task(worker()) for _ in range(args.concurrency)]
        for _ in range(args.requests):
            await queue.put(next(generator))
        for _ in workers:
            await queue.put(None)
        await asyncio.gather(*workers)
        stop.set()
        await canary_task
        recovery_started = time.monotonic()
        while time.monotonic() - recovery_started < 60:
            if await canary(client, normal_requests(TINY_MODEL)[0]) is not None:
                report.recovery_s = time.monotonic() - recovery_started
                break
        if args.slowloris:
            probe = asyncio.create_task(slowloris(url, args.slowloris, args.slowloris_s))
            await asyncio.sleep(1)
            canary_results.append(await canary(client, normal_requests(TINY_MODEL)[1]))
            report.slowloris_open = await probe
            report.slowloris_total = args.slowloris
    seconds = sorted(o.seconds for o in outcomes)
    statuses = Counter("no response" if o.status is None else f"{o.status // 100}xx" for o in outcomes)
    report.num_requests = len(outcomes)
    report.by_class = dict(sorted(statuses.items()))
    report.num_500 = sum(o.status == 500 for o in outcomes)
    report.num_5xx = sum(o.status is not None and o.status >= 500 for o in outcomes)
    long = [o for o in outcomes if _long_generation(o)]
    report.num_long_generations = len(long)
    report.fewest_long_tokens = min(
        (o.output_tokens for o in long if o.output_tokens is not None), default=None
    )
    report.num_hangs = sum(map(_hang, outcomes))
    report.num_no_response = statuses["no response"]
    report.num_wrong_dialect = sum(not o.dialect_ok for o in outcomes)
    report.longest_error_message = max((o.message_len for o in outcomes), default=0)
    report.p50_ms = 1000 * statistics.median(seconds) if seconds else 0.0
    report.p99_ms = 1000 * seconds[int(0.99 * (len(seconds) - 1))] if seconds else 0.0
    done = [c for c in canary_results if c is not None]
    report.canaries, report.canaries_ok = len(canary_results), len(done)
    report.canary_max_ms = 1000 * max(done, default=0.0)
    report.examples = examples
    five_xx = Counter(o.kind for o in outcomes if o.status is not None and o.status >= 500)
    hangs = Counter(o.kind for o in outcomes if _hang(o))
    if five_xx or hangs:
        report.examples.insert(0, f"5xx by kind {dict(five_xx)}; hangs by kind {dict(hangs)}")
    return report


def table(reports: list[Report]) -> str:
    rows = [
        "| server | requests | status classes | 500 | other 5xx | hangs > 5 s | long generations > 5 s "
        "(fewest tokens) | no response | wrong dialect "
        "| longest error message | p50 / p99 ms | canaries ok (during + slowloris) | canary max ms "
        "| recovery s | slowloris still open |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        classes = ", ".join(f"{k}: {v}" for k, v in r.by_class.items())
        recovery = f"{r.recovery_s:.2f}" if r.recovery_s is not None else "never (60 s)"
        slow = f"{r.slowloris_open} / {r.slowloris_total}" if r.slowloris_open is not None else "-"
        rows.append(
            f"| {r.server} | {r.num_requests} | {classes} | {r.num_500} | {r.num_5xx - r.num_500} | "
            f"{r.num_hangs} | {r.num_long_generations} ({r.fewest_long_tokens or '-'}) | "
            f"{r.num_no_response} | {r.num_wrong_dialect} | {r.longest_error_message} | "
            f"{r.p50_ms:.0f} / {r.p99_ms:.0f} | {r.canaries_ok} / {r.canaries} | {r.canary_max_ms:.0f} | "
            f"{recovery} | {slow} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=10_000, help="hostile requests per server")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--slowloris", type=int, default=100, help="slow connections (0: skip)")
    parser.add_argument("--slowloris-s", type=float, default=40.0)
    parser.add_argument("--src", type=Path, default=SRC, help="the source tree the servers run")
    parser.add_argument("--only", choices=("neuron", "gateway"), help="attack one server only")
    parser.add_argument("--json", type=Path, help="also write the reports here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cortex-hostile-") as tmp:
        workdir = Path(tmp)
        make_tiny_model(workdir / "models")
        neuron = neuron_process(workdir, workdir / "models", "n1", src=args.src, max_model_len=96)
        gateway = gateway_process(workdir, [neuron], src=args.src)
        reports = []
        with running(neuron, gateway):
            for name, url, is_neuron in (("neuron", neuron.url, True), ("gateway", gateway.url, False)):
                if args.only in (None, name):
                    reports.append(asyncio.run(attack(name, url, args, neuron=is_neuron)))
    print(f"hostile requests, seed {args.seed}, concurrency {args.concurrency}, servers from {args.src}\n")
    print(table(reports))
    for report in reports:
        for line in report.examples:
            print(f"  {report.server}: {line}")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in reports], indent=2))


if __name__ == "__main__":
    main()
