"""What a transport failure says about a neuron, on real loopback sockets: a refused connection is
death; a connection closed before any answer is not (a pooled keep-alive connection the neuron closed
as it was reused looks the same), so the request goes back to that neuron once; a connection broken
while the answer arrives counts against the neuron."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from fake_neuron import GB, FakeNeuron, NeuronServer

from cortex.fleet import Fleet, FleetPolicy, NeuronSpec, NeuronUnavailableError
from cortex.fleet.errors import NeuronTransportError
from cortex.fleet.neuron_client import NeuronClient
from cortex.fleet.poller import NeuronState

pytestmark = pytest.mark.anyio
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
CHAT = "/v1/chat/completions"
BODY: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}]}
CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


@asynccontextmanager
async def raw_server(handle: Handler) -> AsyncIterator[str]:
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    await writer.wait_closed()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def healthy_state(spec: NeuronSpec) -> NeuronState:
    """The fleet's view of a neuron after one good poll."""
    state = NeuronState(spec)
    health = {"status": "ok", "models": [], "in_flight": 0, "queued": 0, "memory_budget_bytes": 1}
    now = time.monotonic()
    state.apply({**health, "memory_used_bytes": 0}, {}, {}, sent_s=now, now_s=now)
    assert state.healthy
    return state


async def failure(
    spec: NeuronSpec, call: Callable[[NeuronClient], Awaitable[object]]
) -> NeuronTransportError:
    client = NeuronClient(spec)
    try:
        with pytest.raises(NeuronTransportError) as caught:
            await call(client)
    finally:
        await client.aclose()
    return caught.value


async def test_a_refused_connection_is_gone() -> None:
    error = await failure(NeuronSpec("a", f"http://127.0.0.1:{free_port()}"), lambda c: c.health(timeout_s=2))
    assert error.gone
    assert not error.dropped


async def test_a_connection_closed_before_any_answer_is_dropped_and_leaves_the_neuron_healthy() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await close(writer)

    async with raw_server(hang_up) as url:
        spec = NeuronSpec("a", url)
        for error in (
            await failure(spec, lambda c: c.health(timeout_s=2)),
            await failure(spec, lambda c: c.send(CHAT, b"{}")),
        ):
            assert error.dropped
            assert not error.gone
            assert not error.timed_out
            state = healthy_state(spec)
            state.record_transport_error(error, unhealthy_after=1)
            assert state.healthy
            assert not state.slow


async def test_a_connection_broken_while_the_answer_arrives_counts_against_the_neuron() -> None:
    async def break_off(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(CHUNKED_HEAD + b"6\r\ndata: \r\n")
        await writer.drain()
        writer.transport.abort()

    async def stream(client: NeuronClient) -> None:
        response = await client.send(CHAT, b"{}")
        try:
            while await response.read_chunk():
                pass
        finally:
            response.close()

    async with raw_server(break_off) as url:
        spec = NeuronSpec("a", url)
        error = await failure(spec, stream)
        assert not error.dropped
        state = healthy_state(spec)
        state.record_transport_error(error, unhealthy_after=1)
        assert not state.healthy


@asynccontextmanager
async def dropping_proxy(upstream: str, drops: list[int]) -> AsyncIterator[str]:
    """A TCP proxy to ``upstream`` that hangs up, unanswered, on the next ``drops[0]`` chat requests."""
    host, port = upstream.removeprefix("http://").split(":")

    async def upward(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client: asyncio.StreamWriter
    ) -> None:
        while data := await reader.read(65536):
            if data.startswith(b"POST " + CHAT.encode()) and drops[0] > 0:
                drops[0] -= 1
                client.transport.abort()
                break
            writer.write(data)
            await writer.drain()
        writer.close()

    async def downward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        await asyncio.gather(
            upward(reader, up_writer, writer), downward(up_reader, writer), return_exceptions=True
        )

    async with raw_server(handle) as url:
        yield url


async def test_a_request_dropped_before_an_answer_goes_back_to_its_neuron_once(
    serve: Callable[[FakeNeuron], NeuronServer],
) -> None:
    a = serve(FakeNeuron("a", {"m": GB}, loaded=["m"]))
    drops = [1]
    async with dropping_proxy(a.url, drops) as url:
        policy = FleetPolicy(poll_interval_s=0.2, unhealthy_after=1, backoff_base_s=0.01, min_residency_s=0.0)
        async with Fleet([NeuronSpec("a", url)], (), policy) as fleet:
            reply = await fleet.post("m", CHAT, BODY)
            assert reply.status == 200
            assert drops == [0]  # the first attempt was dropped, the second served
            assert fleet.status().neurons[0].healthy

            drops[0] = 2  # dropped twice in one request: the neuron is not tried a third time
            with pytest.raises(NeuronUnavailableError, match="ServerDisconnected"):
                await fleet.post("m", CHAT, BODY)
            assert drops == [0]
            assert fleet.status().neurons[0].healthy
