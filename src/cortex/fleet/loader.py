"""Cold loads, evictions and unloads on neurons, single-flight per model.

``Loader.wait_loaded(model)`` joins the model's load in progress or starts one: a task that routes
the model (``route``), evicts the planned victims, calls ``POST /models/load``, tries another neuron
when one fails (507, 404, connection error) and waits, bounded by ``max_load_wait_s``, when room will
appear once busy models drain (``capacity_freed`` is set whenever a request ends or a model is
unloaded). Memory is reserved and victims leave routing before the first ``await`` of a load.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal

from cortex.fleet.errors import LoadTimeoutError, NeuronTransportError, NoCapacityError, UpstreamError
from cortex.fleet.ledger import Ledger
from cortex.fleet.neuron_client import NeuronClient, UpstreamReply
from cortex.fleet.poller import NeuronState
from cortex.fleet.profiles import FleetPolicy
from cortex.fleet.routing import RouteDecision

__all__ = ["LoadOutcome", "Loader", "reply_ok"]

LoadOutcome = Literal["loaded", "replan", "failed"]


class Loader:
    def __init__(
        self,
        *,
        states: Mapping[str, NeuronState],
        clients: Mapping[str, NeuronClient],
        ledger: Ledger,
        policy: FleetPolicy,
        route: Callable[[str, frozenset[str]], RouteDecision],
        refresh: Callable[[], Awaitable[None]],
        counters: Counter[str],
        decisions: deque[dict[str, Any]],
    ) -> None:
        self._states = states
        self._clients = clients
        self._ledger = ledger
        self._policy = policy
        self._route = route
        self._refresh = refresh
        self._counters = counters
        self._decisions = decisions
        self.loads: dict[str, asyncio.Task[str]] = {}
        self.load_errors: dict[str, str] = {}
        self.capacity_freed = asyncio.Event()

    async def wait_loaded(self, model: str, *, exclude: frozenset[str]) -> None:
        """Join the model's load in progress, or start one (single-flight per model); bounded wait."""
        task = self.loads.get(model) or self.start_load(model, exclude)
        try:
            await asyncio.wait_for(asyncio.shield(task), self._policy.max_load_wait_s)
        except TimeoutError:
            raise LoadTimeoutError(model, f"not loaded within {self._policy.max_load_wait_s} s") from None

    def start_load(self, model: str, exclude: frozenset[str]) -> asyncio.Task[str]:
        task = asyncio.create_task(self._worker(model, exclude), name=f"fleet-load-{model}")
        self.loads[model] = task
        task.add_done_callback(lambda t: self._load_finished(model, t))
        return task

    def _load_finished(self, model: str, task: asyncio.Task[str]) -> None:
        if self.loads.get(model) is task:
            del self.loads[model]
        if task.cancelled():
            return
        error = task.exception()
        if error is None:
            self.load_errors.pop(model, None)
        else:
            self.load_errors[model] = str(error)

    async def _worker(self, model: str, exclude: frozenset[str]) -> str:
        """Place and load ``model``, trying other neurons on failure and waiting for capacity."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._policy.max_load_wait_s
        failed = set(exclude)
        causes: list[str] = []
        while True:
            decision = self._route(model, frozenset(failed))
            if decision.action == "serve":
                assert decision.neuron is not None
                return decision.neuron
            if decision.action in ("load", "join"):
                assert decision.neuron is not None
                outcome, cause = await self.load_on(decision.neuron, model, decision.evict)
                if outcome == "loaded":
                    return decision.neuron
                if outcome == "failed":
                    failed.add(decision.neuron)
                    causes.append(f"{decision.neuron}: {cause}")
                else:  # a victim got busy behind our back (another gateway): re-plan on fresh state
                    await self._refresh()
                continue
            if decision.action == "none":
                raise NoCapacityError(model, "; ".join([*causes, decision.reason]))
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise LoadTimeoutError(model, f"{decision.reason}: {decision.notes}")
            await self._wait_for_capacity(min(remaining, self._policy.poll_interval_s))

    async def _wait_for_capacity(self, timeout_s: float) -> None:
        self.capacity_freed.clear()
        try:
            await asyncio.wait_for(self.capacity_freed.wait(), timeout_s)
        except TimeoutError:
            await self._refresh()

    async def load_on(self, neuron: str, model: str, evict: Sequence[str]) -> tuple[LoadOutcome, str]:
        """Evict ``evict`` then load ``model`` on ``neuron``. Memory is reserved and victims leave
        routing before the first ``await``."""
        state = self._states[neuron]
        upstream = self._ledger.upstream(model)
        victims = [(neuron, victim) for victim in evict]
        self._ledger.unloading.update(victims)
        need = self._ledger.load_need(model, state)
        profile = self._ledger.profile(model)
        # the split is sent only when the profile asks for one; else the neuron uses its own
        split = need.tensor_parallel if profile is not None and profile.min_devices else None
        state.reserved_bytes[upstream] = need.memory_bytes
        try:
            for _, victim in victims:
                reply = await self.unload(neuron, victim, force=False, reason=f"evicted for {model}")
                if not reply_ok(reply):
                    return "replan", f"eviction of {victim} refused: HTTP {reply.status}"
                self._counters["evictions"] += 1
            self._counters["load_calls"] += 1
            try:
                reply = await self._clients[neuron].load(
                    upstream, tensor_parallel=split, timeout_s=self._policy.max_load_wait_s
                )
            except NeuronTransportError as exc:
                self._counters["load_failures"] += 1
                return "failed", self._transport_failed(neuron, exc)
            if reply.status != 200:
                self._counters["load_failures"] += 1
                if reply.status == 404:
                    state.loadable.pop(upstream, None)
                return (
                    "failed",
                    f"load answered HTTP {reply.status}: {UpstreamError(neuron, reply.status, reply.body)}",
                )
            state.note_loaded(upstream, need.memory_bytes, reply.body)
            self._ledger.mark_loaded(neuron, model)
            self._counters["loads"] += 1
            return "loaded", ""
        except NeuronTransportError as exc:
            return "failed", self._transport_failed(neuron, exc)
        finally:
            state.reserved_bytes.pop(upstream, None)
            self._ledger.unloading.difference_update(victims)

    async def unload(self, neuron: str, model: str, *, force: bool, reason: str) -> UpstreamReply:
        key = (neuron, model)
        state = self._states[neuron]
        upstream = self._ledger.upstream(model)
        self._ledger.unloading.add(key)
        try:
            reply = await self._clients[neuron].unload(upstream, force=force)
        finally:
            self._ledger.unloading.discard(key)
        if reply_ok(reply):
            state.note_unloaded(upstream, self._ledger.memory_need(model, state))
            self._ledger.forget(neuron, model)
            self._decisions.append(
                {"time": time.time(), "model": model, "action": "unload", "neuron": neuron, "reason": reason}
            )
            self.capacity_freed.set()
        return reply

    def _transport_failed(self, neuron: str, exc: NeuronTransportError) -> str:
        return self._states[neuron].record_transport_error(exc, unhealthy_after=self._policy.unhealthy_after)


def reply_ok(reply: object) -> bool:
    """An unload answer meaning the model is gone: 200, or 404 (it was not loaded)."""
    return isinstance(reply, UpstreamReply) and reply.status in (200, 404)
