"""One queued request's deltas for an asyncio consumer: the sink the engine's step thread feeds, and the
async iterator the consumer reads.

:meth:`cortex.engine.engine.Engine.add_request` validates and queues a request, then hands back its
:class:`DeltaStream`; ``Engine.stream`` iterates one. The stream ends after the delta with
``finish_reason`` set, or raises the error that ended the request. Closing it (``aclose``) before then
aborts the request in the engine at once, also when it was never iterated: whoever holds a DeltaStream
must close it. Imports no torch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from cortex.engine.outputs import StreamDelta


class DeltaStream:
    """The deltas of request ``request_id``, fed by :meth:`sink` from any thread; see the module docstring.

    ``abort(request_id)`` is called when the consumer leaves early. ``num_prompt_tokens``: the prompt's
    length as the engine took it.
    """

    def __init__(self, request_id: str, *, num_prompt_tokens: int, abort: Callable[[str], object]) -> None:
        self.request_id = request_id
        self.num_prompt_tokens = num_prompt_tokens
        self._abort = abort
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[StreamDelta | BaseException] = asyncio.Queue()
        self._finished = False

    def sink(self, item: StreamDelta | BaseException) -> None:
        """Hand over one delta, or the error that ended the request (the engine's step thread calls this)."""
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the consumer's loop is closed: nobody is listening any more
            if isinstance(item, StreamDelta) and item.finish_reason is None:
                self._abort(item.request_id)

    def __aiter__(self) -> DeltaStream:
        return self

    async def __anext__(self) -> StreamDelta:
        if self._finished:
            raise StopAsyncIteration
        item = await self._queue.get()
        if isinstance(item, BaseException):
            self._finished = True
            raise item
        self._finished = item.finish_reason is not None
        return item

    async def aclose(self) -> None:
        """Abort the request unless it has finished. Idempotent."""
        if not self._finished:
            self._finished = True
            self._abort(self.request_id)
