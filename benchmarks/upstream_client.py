"""Which HTTP client the gateway should use for its upstream calls: httpx vs aiohttp, same upstream.

Each client sends the same POSTs (a whole answer, and a 10-chunk SSE stream read to its end) to the
fast fake upstream (benchmarks/fake_upstream.py) from one asyncio loop, at 1 and 64 concurrent
requests, with uvloop; the table shows requests/s and the client process's CPU time per request.
The gateway's choice (aiohttp) was made from this table (docs/benchmarks.md).

    python benchmarks/upstream_client.py [--requests 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import httpx
import uvloop

HERE = Path(__file__).resolve().parent
BODY = {"model": "bench", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def run(send: Callable[[], Awaitable[int]], *, total: int, concurrency: int) -> tuple[float, float]:
    """(requests per second, CPU ms per request) for ``total`` calls of ``send``."""
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            if await send() < 2:
                raise RuntimeError("short answer")

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return total / wall, 1000 * cpu / total


async def measure(url: str, total: int) -> list[tuple[str, str, int, float, float]]:
    rows = []
    payload = json.dumps(BODY).encode()
    stream_payload = json.dumps({**BODY, "stream": True}).encode()
    headers = {"content-type": "application/json"}
    for concurrency in (1, 64):
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:

            async def httpx_whole() -> int:
                reply = await client.post("/v1/chat/completions", content=payload, headers=headers)
                return len(reply.content)

            async def httpx_stream() -> int:
                async with client.stream(
                    "POST", "/v1/chat/completions", content=stream_payload, headers=headers
                ) as r:
                    return sum([len(chunk) async for chunk in r.aiter_raw()])

            for mode, send in (("whole", httpx_whole), ("stream", httpx_stream)):
                await run(send, total=200, concurrency=concurrency)
                rows.append(
                    ("httpx", mode, concurrency, *await run(send, total=total, concurrency=concurrency))
                )
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(url, connector=connector, auto_decompress=False) as session:

            async def aiohttp_whole() -> int:
                async with session.post("/v1/chat/completions", data=payload, headers=headers) as reply:
                    return len(await reply.read())

            async def aiohttp_stream() -> int:
                async with session.post(
                    "/v1/chat/completions", data=stream_payload, headers=headers
                ) as reply:
                    return sum([len(chunk) async for chunk in reply.content.iter_any()])

            for mode, send in (("whole", aiohttp_whole), ("stream", aiohttp_stream)):
                await run(send, total=200, concurrency=concurrency)
                rows.append(
                    ("aiohttp", mode, concurrency, *await run(send, total=total, concurrency=concurrency))
                )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, str(HERE / "fake_upstream.py"), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/health", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        rows = uvloop.run(measure(url, args.requests))
    finally:
        upstream.terminate()
        upstream.wait()
    print(
        f"machine: {os.cpu_count()} cores shared by this client and the upstream; "
        f"{args.requests} requests per row\n"
    )
    print("| client | mode | concurrency | requests/s | client CPU ms/req |")
    print("|---|---|---|---|---|")
    for client, mode, concurrency, rate, cpu in rows:
        print(f"| {client} | {mode} | {concurrency} | {rate:,.0f} | {cpu:.3f} |")


if __name__ == "__main__":
    main()
