"""The SSE keep-alive wrapper and admission control, without any app."""

from __future__ import annotations

import asyncio

import pytest

from cortex.server import sse
from cortex.server.admission import Admission
from cortex.server.errors import QueueFullError, QueueTimeoutError, ShuttingDownError


async def test_keepalives_fill_silences_and_closing_cancels_the_source():
    closed = asyncio.Event()

    async def source():
        try:
            yield 1
            await asyncio.sleep(0.25)
            yield 2
            await asyncio.sleep(10)
            yield 3
        finally:
            closed.set()

    items = []
    pump = sse.Pump(source())
    stream = sse.with_keepalive(pump.read, 0.05)
    async for item in stream:
        items.append(item)
        if item == 2:
            break
    await stream.aclose()
    await pump.aclose()
    assert items[0] == 1
    assert items[-1] == 2
    assert 1 <= items.count(sse.KEEPALIVE) <= 6  # the timeouts lost no item of the source
    assert closed.is_set()  # closing the pump closed the source (a disconnect reaches the engine)


async def test_a_pumped_source_that_fails_raises_in_the_reader():
    async def source():
        yield 1
        raise ValueError("engine failed")

    pump = sse.Pump(source())
    assert await pump.read() == 1
    with pytest.raises(ValueError, match="engine failed"):
        await pump.read()
    await pump.aclose()


def test_event_encoding():
    assert sse.openai_event({"a": "é"}) == 'data: {"a":"é"}\n\n'.encode()
    assert sse.anthropic_event({"type": "ping"}) == sse.ANTHROPIC_PING


async def test_admission_runs_queues_in_order_and_refuses():
    admission = Admission(max_running=1, max_queue=2, queue_timeout_s=5, retry_after_s=7)
    order: list[int] = []
    release = asyncio.Event()

    async def request(i: int) -> None:
        async with admission.slot():
            order.append(i)
            await release.wait()

    first = asyncio.create_task(request(0))
    await asyncio.sleep(0)
    queued = [asyncio.create_task(request(i)) for i in (1, 2)]
    await asyncio.sleep(0.01)
    assert (admission.num_running, admission.num_queued) == (1, 2)
    with pytest.raises(QueueFullError) as refused:
        await request(3)
    assert refused.value.retry_after_s == 7
    assert refused.value.http_status == 429
    release.set()
    await asyncio.gather(first, *queued)
    assert order == [0, 1, 2]
    assert not admission.busy


async def test_admission_timeout_and_drain():
    admission = Admission(max_running=1, max_queue=5, queue_timeout_s=0.05)
    async with admission.slot():
        with pytest.raises(QueueTimeoutError):
            await admission._acquire()
        waiter = asyncio.create_task(admission._acquire())
        await asyncio.sleep(0.01)
        admission.drain()
        with pytest.raises(ShuttingDownError):
            await waiter
        assert not await admission.wait_idle(0.01)
    assert await admission.wait_idle(0.01)
    with pytest.raises(ShuttingDownError):
        await admission._acquire()
