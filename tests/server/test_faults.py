"""Faults with real processes on loopback: two ``cortex neuron`` processes (the tiny Qwen3.5) behind a
``cortex serve`` gateway. A neuron is killed mid-stream, frozen with SIGSTOP, restarted on its port;
clients disconnect. Each test checks issue 16's bound and prints what it measured."""

from __future__ import annotations

import asyncio
import http.client
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from hostile_requests import error_dialect
from processes import TINY_MODEL, Process, gateway_process, neuron_process, running

POLL_INTERVAL_S = 0.5
POLL_TIMEOUT_S = 2.0  # the default: a busy neuron on a loaded machine may take a while to answer
FROZEN_AFTER_S = 4.0
# a frozen neuron is cut after a poll times out and its probe has no answer for FROZEN_AFTER_S, found at
# the next poll: each poll at most an interval + a timeout
FROZEN_BOUND_S = FROZEN_AFTER_S + 2 * (POLL_INTERVAL_S + POLL_TIMEOUT_S) + 1.0
MAX_TOKENS = 400  # long enough that a stream is still running when the fault comes
DIALECTS = ["openai", "anthropic"] * 4  # the streams running when a fault comes


@dataclass
class Fleet:
    gateway: Process
    neurons: dict[str, Process]


@pytest.fixture(scope="module")
def fleet(tiny_qwen_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    workdir = tmp_path_factory.mktemp("faults")
    options = {"max_model_len": 512, "keepalive_s": 0.5}
    neurons = {name: neuron_process(workdir, tiny_qwen_root, name, **options) for name in ("n1", "n2")}
    policy = {
        "poll_interval_s": POLL_INTERVAL_S,
        "poll_timeout_s": POLL_TIMEOUT_S,
        "frozen_after_s": FROZEN_AFTER_S,
    }
    gateway = gateway_process(workdir, list(neurons.values()), fleet=policy)
    with running(*neurons.values(), gateway):
        yield Fleet(gateway, neurons)


def request_body(dialect: str, *, max_tokens: int = MAX_TOKENS, stream: bool = True) -> dict[str, Any]:
    return {
        "model": TINY_MODEL,
        "messages": [{"role": "user", "content": "Count to a thousand."}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": stream,
        **({"ignore_eos": True} if dialect == "openai" else {}),
    }


def path_of(dialect: str) -> str:
    return "/v1/chat/completions" if dialect == "openai" else "/v1/messages"


@dataclass
class StreamEnd:
    dialect: str
    completed: bool  # ended with its terminator
    error: Any  # the error event's payload, if the stream ended with one
    ended_at: float
    tail: list[str]  # its last lines, for the failure message


@asynccontextmanager
async def open_stream(client: httpx.AsyncClient, dialect: str) -> AsyncIterator[AsyncIterator[str]]:
    """A stream that has produced its first token: yields the iterator over its remaining lines."""
    async with client.stream("POST", path_of(dialect), json=request_body(dialect)) as reply:
        assert reply.status_code == 200
        lines = reply.aiter_lines()
        async for line in lines:  # up to the first generated text (OpenAI's first chunk has none)
            if line.startswith("data: ") and (
                '"content":"' in line.replace('"content":""', "") or '"delta"' in line
            ):
                break
        yield lines


async def finish(dialect: str, lines: AsyncIterator[str]) -> StreamEnd:
    error = None
    completed = False
    tail: list[str] = []
    try:
        async for line in lines:
            tail = [*tail[-3:], line[:120]]
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]" or '"type":"message_stop"' in line:
                completed = True
            elif '"error"' in line:
                error = json.loads(line[6:])
    except httpx.HTTPError as exc:  # cut without an error event
        error = f"transport: {type(exc).__name__}"
    return StreamEnd(dialect, completed, error, time.monotonic(), tail)


@asynccontextmanager
async def started_streams(client: httpx.AsyncClient) -> AsyncIterator[list[AsyncIterator[str]]]:
    """One started stream per entry of ``DIALECTS`` (the gateway spreads them over both neurons)."""
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(open_stream(client, d)) for d in DIALECTS]


async def neuron_in_flight(url: str, client: httpx.AsyncClient | None = None) -> int:
    if client is None:
        async with httpx.AsyncClient(timeout=5) as client:
            return await neuron_in_flight(url, client)
    return int((await client.get(f"{url}/health")).json()["in_flight"])


async def chat(client: httpx.AsyncClient, dialect: str) -> httpx.Response:
    return await client.post(path_of(dialect), json=request_body(dialect, max_tokens=4, stream=False))


async def test_a_client_that_disconnects_frees_its_slot(fleet):
    """On the neuron itself and through the gateway, the slot is freed by the disconnect, not by the
    generation running to its end: in well under the time the whole generation takes on the same
    neuron, measured beside it (so the check holds on a loaded machine). The time until the neuron's
    /health no longer counts the request (an upper bound, polled every few ms) is printed: issue 16's
    target is 100 ms, and docs/benchmarks.md has the figures from a quiet run."""
    timings = {}
    async with httpx.AsyncClient(timeout=5) as health:
        for name, url in (("neuron", fleet.neurons["n1"].url), ("gateway", fleet.gateway.url)):
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                async with open_stream(client, "openai"):
                    busy = [n.url for n in fleet.neurons.values() if await neuron_in_flight(n.url, health)]
                    assert len(busy) == 1
                    closed_at = time.monotonic()
                while await neuron_in_flight(busy[0], health):
                    await asyncio.sleep(0.002)
                timings[name] = time.monotonic() - closed_at
    async with httpx.AsyncClient(base_url=fleet.neurons["n1"].url, timeout=120) as client:
        started = time.monotonic()
        whole = await client.post(path_of("openai"), json=request_body("openai", stream=False))
        generation_s = time.monotonic() - started
    assert whole.json()["usage"]["completion_tokens"] == MAX_TOKENS
    print(
        f"\nslot freed after a disconnect: {', '.join(f'{k} {v * 1000:.0f} ms' for k, v in timings.items())}"
        f" (the whole {MAX_TOKENS}-token generation: {generation_s * 1000:.0f} ms)"
    )
    assert max(timings.values()) < generation_s / 2


async def test_a_killed_neuron_ends_its_streams_cleanly_and_new_requests_go_elsewhere(fleet):
    n1 = fleet.neurons["n1"]
    async with httpx.AsyncClient(base_url=fleet.gateway.url, timeout=30) as client:
        async with started_streams(client) as streams:
            on_n1 = await neuron_in_flight(n1.url)
            assert on_n1 > 0, "every stream went to n2; nothing to cut"
            killed_at = time.monotonic()
            n1.kill()
            ends = await asyncio.gather(*(finish(d, s) for d, s in zip(DIALECTS, streams, strict=True)))
        cut = [end for end in ends if not end.completed]
        assert len(cut) == on_n1, [(end.error, end.tail) for end in cut]
        for end in cut:
            assert error_dialect(end.error) == end.dialect, end.error  # an error event, in its dialect
        worst = max(end.ended_at - killed_at for end in cut)
        replies = await asyncio.gather(*(chat(client, d) for d in DIALECTS * 2))
        failed = sum(reply.status_code != 200 for reply in replies)
        print(
            f"\nkilled under {len(DIALECTS)} streams: {len(cut)} cut with an error event, the last "
            f"{worst:.2f} s after the kill; {failed} of {len(replies)} new requests failed"
        )
        assert worst < 2.0
        assert failed == 0
    restarted_at = time.monotonic()
    n1.start()
    ready_at = time.monotonic()
    while not await gateway_routes_to(fleet, "n1"):
        await asyncio.sleep(0.05)
    routed_s = time.monotonic() - ready_at
    print(
        f"restarted on its port: ready after {ready_at - restarted_at:.1f} s, routed to again "
        f"{routed_s:.2f} s after it was ready (poll interval {POLL_INTERVAL_S} s)"
    )
    assert routed_s < POLL_INTERVAL_S + 1.0


async def gateway_routes_to(fleet: Fleet, name: str) -> bool:
    async with httpx.AsyncClient(base_url=fleet.gateway.url, timeout=5) as client:
        status = (await client.get("/status")).json()
    return any(n["name"] == name and n["healthy"] for n in status["neurons"])


async def test_a_frozen_neuron_costs_its_requests_a_bounded_wait_and_never_hangs_the_gateway(fleet):
    n1 = fleet.neurons["n1"]
    async with httpx.AsyncClient(base_url=fleet.gateway.url, timeout=60) as client:
        async with started_streams(client) as streams:
            on_n1 = await neuron_in_flight(n1.url)
            assert on_n1 > 0
            frozen_at = time.monotonic()
            n1.freeze()
            try:
                new = [asyncio.ensure_future(timed(chat(client, d))) for d in DIALECTS * 2]
                ends = await asyncio.gather(*(finish(d, s) for d, s in zip(DIALECTS, streams, strict=True)))
                replies = await asyncio.gather(*new)
            finally:
                n1.thaw()
        thawed_at = time.monotonic()
        cut = [end for end in ends if not end.completed]
        for end in cut:
            assert error_dialect(end.error) == end.dialect, end.error
        worst = max((end.ended_at - frozen_at for end in cut), default=0.0)
        failed = sum(reply.status_code != 200 for reply, _ in replies)
        slowest = max(seconds for _, seconds in replies)
        while not await gateway_routes_to(fleet, "n1"):
            await asyncio.sleep(0.05)
        restored_s = time.monotonic() - thawed_at
        print(
            f"\nfrozen under {len(DIALECTS)} streams ({on_n1} on it): {len(cut)} cut with an error event, "
            f"the last {worst:.2f} s after the freeze (bound {FROZEN_BOUND_S:.1f} s); {failed} of "
            f"{len(replies)} new requests failed, the slowest took {slowest:.2f} s; routed to again "
            f"{restored_s:.2f} s after SIGCONT"
        )
        assert len(cut) == on_n1
        assert worst < FROZEN_BOUND_S
        assert failed == 0
        assert slowest < FROZEN_BOUND_S + 2.0
        assert restored_s < POLL_INTERVAL_S + POLL_TIMEOUT_S + 1.0


async def timed(reply: Any) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    return await reply, time.monotonic() - started


def test_an_idle_connection_outlives_the_clients_own_pool_expiry(fleet):
    """httpx (and so the OpenAI and Anthropic SDKs) keeps an idle connection 5 s; a server that closed it
    at the same moment would reset a request sent on it, unanswered. Both servers keep it longer."""
    servers = [fleet.gateway, *fleet.neurons.values()]
    connections = [http.client.HTTPConnection("127.0.0.1", server.port, timeout=10) for server in servers]
    try:
        for connection in connections:
            connection.request("GET", "/health")
            reply = connection.getresponse()
            reply.read()
            assert reply.status == 200
        sockets = [connection.sock for connection in connections]
        time.sleep(httpx.Limits().keepalive_expiry + 1.0)
        for connection, sock in zip(connections, sockets, strict=True):
            connection.request("GET", "/health")  # on the same connection, idle all that while
            reply = connection.getresponse()  # a connection the server closed: RemoteDisconnected
            reply.read()
            assert reply.status == 200
            assert connection.sock is sock
    finally:
        for connection in connections:
            connection.close()
