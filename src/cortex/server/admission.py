"""Admission control: at most ``max_running`` requests at once, a bounded FIFO queue, a queue timeout.

A request either runs at once, waits in the queue (first come, first served) for at most
``queue_timeout_s``, or is refused: :class:`QueueFullError` (429) when the queue is full,
:class:`QueueTimeoutError` (503) after the wait, :class:`ShuttingDownError` (503) once draining began.
Each refusal carries ``retry_after_s`` for the Retry-After header.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator

from cortex.server.errors import QueueFullError, QueueTimeoutError, ShuttingDownError


class Admission:
    def __init__(
        self, *, max_running: int, max_queue: int, queue_timeout_s: float, retry_after_s: int = 1
    ) -> None:
        self.max_running = max_running
        self.max_queue = max_queue
        self.queue_timeout_s = queue_timeout_s
        self.retry_after_s = retry_after_s
        self.num_running = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._draining = False
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def num_queued(self) -> int:
        return len(self._waiters)

    @property
    def busy(self) -> bool:
        return self.num_running > 0 or bool(self._waiters)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one running slot for the body of the ``async with``."""
        await self._acquire()
        try:
            yield
        finally:
            self._release()

    async def _acquire(self) -> None:
        if self._draining:
            raise ShuttingDownError("the server is shutting down", retry_after_s=self.retry_after_s)
        if self.num_running < self.max_running and not self._waiters:
            self._start()
            return
        if len(self._waiters) >= self.max_queue:
            raise QueueFullError(
                f"too many requests: {self.num_running} running and {len(self._waiters)} queued",
                retry_after_s=self.retry_after_s,
            )
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._idle.clear()
        try:
            await asyncio.wait_for(asyncio.shield(waiter), self.queue_timeout_s)
        except TimeoutError:
            if _granted(waiter):
                return  # granted in the same instant the timeout fired: keep the slot
            self._remove(waiter)
            raise QueueTimeoutError(
                f"waited {self.queue_timeout_s:g} s in the queue without a free slot",
                retry_after_s=self.retry_after_s,
            ) from None
        except BaseException:
            if _granted(waiter):
                self._release()  # granted, but the caller went away before using it
            else:
                self._remove(waiter)
            raise

    def _start(self) -> None:
        self.num_running += 1
        self._idle.clear()

    def _remove(self, waiter: asyncio.Future[None]) -> None:
        with contextlib.suppress(ValueError):
            self._waiters.remove(waiter)
        waiter.cancel()
        self._update_idle()

    def _release(self) -> None:
        self.num_running -= 1
        while self._waiters and self.num_running < self.max_running:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.num_running += 1
                waiter.set_result(None)
        self._update_idle()

    def _update_idle(self) -> None:
        if not self.busy:
            self._idle.set()

    def drain(self) -> None:
        """Refuse new requests from now on; queued ones are refused too."""
        self._draining = True
        while self._waiters:
            self._waiters.popleft().set_exception(
                ShuttingDownError("the server is shutting down", retry_after_s=self.retry_after_s)
            )
        self._update_idle()

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until nothing runs or queues; False when ``timeout_s`` passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True


def _granted(waiter: asyncio.Future[None]) -> bool:
    return waiter.done() and not waiter.cancelled() and waiter.exception() is None
