"""Neuron state and the poller that keeps it fresh.

``NeuronState`` is the fleet's mutable knowledge of one neuron: health, devices, memory, load and
model statuses from ``/health`` + ``/models``, and loadable models from ``/discovery`` (an ``openai``
neuron: its ``/v1/models``, all loaded). ``Poller`` polls every neuron's three routes concurrently (all
neurons at once, each with a timeout) and tells slow from dead:

- a refused connection, or one dropped while an answer was arriving, is evidence of death: the neuron
  leaves routing at once (a connection closed before any answer is not: a pooled keep-alive connection
  the neuron closed just as it was reused looks the same, so the request is simply tried again);
- a poll that times out (connecting included) is not: the neuron is **slow** (a cortex neuron answers
  ``/health`` even while busy, so it is overloaded or frozen) and routed around while another neuron
  can serve. A slow neuron gets a liveness probe: one ``/health`` left to run for ``frozen_after_s``.
  A neuron starved of CPU answers it late, and stays slow; one that never answers (SIGSTOP, a hung
  host) is
  :attr:`NeuronState.frozen`, and the fleet cuts what it has in flight there that has also gone silent
  (a frozen neuron costs its requests a bounded wait; a busy one is left alone);
- any other failure (an error status, a body that breaks the contract) counts towards
  ``unhealthy_after``, which takes the neuron out of routing;
- its first good poll restores it, within one poll interval of its recovery.

Requests the fleet itself has in flight are snapshotted at each poll so that the load of a
neuron can later be estimated as (others' load at poll) + (our load now). The fleet drives the loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cortex.fleet.errors import NeuronTransportError
from cortex.fleet.neuron_client import NeuronClient
from cortex.fleet.profiles import NeuronSpec
from cortex.fleet.snapshot import DeviceRoom

__all__ = ["LocalLoad", "NeuronState", "Poller"]

# (requests in flight in total, requests in flight per neuron-visible model id), as the fleet counts them
LocalLoad = tuple[int, Mapping[str, int]]

_POLL_ERRORS = (ValueError, KeyError, TypeError)  # a body that is not what the contract says


@dataclass
class NeuronState:
    spec: NeuronSpec
    healthy: bool = False
    slow: bool = False  # the last poll timed out: routed around while another neuron can serve
    frozen: bool = False  # slow, and its liveness probe got no answer in ``frozen_after_s``
    consecutive_failures: int = 0
    last_error: str | None = None
    last_ok_s: float | None = None
    devices: list[dict[str, Any]] = field(default_factory=list)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    loadable: dict[str, dict[str, Any]] = field(default_factory=dict)
    in_flight: int = 0
    queued: int = 0
    memory_budget_bytes: int = 0
    memory_used_bytes: int = 0
    prefill_tokens_per_s: float = 0.0
    decode_tokens_per_s: float = 0.0
    # The fleet's own in-flight counts when the last poll was sent (see module docstring).
    local_at_poll: LocalLoad = (0, {})
    # Memory the fleet has reserved for loads it is performing here, by neuron-visible model id.
    reserved_bytes: dict[str, int] = field(default_factory=dict)
    # When a request last found the neuron gone (monotonic s): only a poll sent after it restores health.
    down_at_s: float = float("-inf")

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def free_bytes(self) -> int:
        return self.memory_budget_bytes - self.memory_used_bytes - sum(self.reserved_bytes.values())

    def record_timeout(self, error: str) -> None:
        """A poll got no answer in time: slow, not dead (see the module docstring)."""
        self.slow = True
        self.last_error = error

    @property
    def gpus(self) -> list[dict[str, Any]]:
        """The GPUs ``/health`` lists (``"device": "cuda:N"``); none on a CPU neuron."""
        return [d for d in self.devices if str(d.get("device", "")).startswith("cuda")]

    def device_rooms(self) -> tuple[DeviceRoom, ...]:
        """Each GPU with the memory its models' estimates leave; empty unless every GPU reports its
        ``memory_reserved_bytes`` (a cortex neuron does)."""
        rooms = []
        for gpu in self.gpus:
            total, reserved = gpu.get("memory_total_bytes"), gpu.get("memory_reserved_bytes")
            if not isinstance(total, int) or not isinstance(reserved, int):
                return ()
            rooms.append(DeviceRoom(str(gpu["device"]), total - reserved))
        return tuple(rooms)

    def note_loaded(self, upstream: str, memory_bytes: int, reply: Any) -> None:
        """Our load of ``upstream`` succeeded (``reply``: its body): count it until the next poll,
        with its share on each device the neuron put it on."""
        spans = reply.get("devices") if isinstance(reply, Mapping) else None
        spans = [str(d) for d in spans] if isinstance(spans, list) and spans else []
        share = memory_bytes // len(spans) if spans else 0
        self.models[upstream] = {
            "id": upstream,
            "status": "loaded",
            "in_flight": 0,
            "queued": 0,
            **({"devices": spans, "memory_per_device_bytes": share} if spans else {}),
        }
        self.memory_used_bytes += memory_bytes
        self._reserve_on(spans, share)

    def note_unloaded(self, upstream: str, memory_bytes: int) -> None:
        """``upstream`` was unloaded: its memory (and its share on each of its devices) is free."""
        entry = self.models.pop(upstream, None)
        if entry is None:
            return
        self.memory_used_bytes = max(0, self.memory_used_bytes - memory_bytes)
        spans, share = entry.get("devices"), entry.get("memory_per_device_bytes")
        if isinstance(spans, list) and isinstance(share, int):
            self._reserve_on([str(d) for d in spans], -share)

    def _reserve_on(self, spans: list[str], share: int) -> None:
        for gpu in self.gpus:
            if isinstance(gpu.get("memory_reserved_bytes"), int):
                gpu["memory_reserved_bytes"] += share * spans.count(str(gpu["device"]))

    def record_failure(self, error: str, *, unhealthy_after: int) -> None:
        self.consecutive_failures += 1
        self.last_error = error
        if self.consecutive_failures >= unhealthy_after:
            self.healthy = False

    def record_transport_error(
        self, exc: NeuronTransportError, *, unhealthy_after: int, context: str = ""
    ) -> str:
        """A request failed in transport: a refused connection, or one dropped while the answer was
        arriving, takes the neuron out of routing at once (until a poll succeeds); a timeout makes it
        slow; a connection dropped before any answer says nothing (the request is tried again). Returns
        the cause as text (after ``context``)."""
        cause = f"{context}{exc}"
        if exc.gone:
            self.mark_down(cause)
        elif exc.timed_out:
            self.record_timeout(cause)
        elif exc.dropped:
            self.last_error = cause
        else:
            self.record_failure(cause, unhealthy_after=unhealthy_after)
        return cause

    def mark_down(self, error: str) -> None:
        """A request could not connect: out of routing until a poll sent after this succeeds."""
        self.healthy = False
        self.last_error = error
        self.down_at_s = time.monotonic()

    def apply(
        self,
        health: Mapping[str, Any],
        models: Mapping[str, Any],
        discovery: Mapping[str, Any],
        *,
        sent_s: float,
        now_s: float,
    ) -> None:
        """Replace the polled facts; raises ``KeyError``/``TypeError``/``ValueError`` on a bad body.

        A poll sent before the neuron was last marked down (its answer raced the failure) does not
        make it healthy again.
        """
        entries: dict[str, dict[str, Any]] = {}
        for entry in list(models.get("models", [])) + list(health["models"]):
            merged = {**entries.get(str(entry["id"]), {}), **dict(entry)}
            merged["in_flight"] = int(merged.get("in_flight", 0))
            merged["queued"] = int(merged.get("queued", 0))
            entries[str(entry["id"])] = merged
        self.models = entries
        self.loadable = {str(m["id"]): dict(m) for m in discovery.get("models", [])}
        self.devices = [dict(d) for d in health.get("devices", [])]
        self.in_flight = int(health["in_flight"])
        self.queued = int(health["queued"])
        self.memory_budget_bytes = int(health["memory_budget_bytes"])
        self.memory_used_bytes = int(health["memory_used_bytes"])
        self.prefill_tokens_per_s = float(health.get("prefill_tokens_per_s", 0.0))
        self.decode_tokens_per_s = float(health.get("decode_tokens_per_s", 0.0))
        status_ok = health.get("status") == "ok"
        if sent_s > self.down_at_s:
            self.healthy = status_ok
            self.last_error = None if status_ok else f"status {health.get('status')!r}"
        self.slow = self.frozen = False
        self.consecutive_failures = 0
        self.last_ok_s = now_s

    def apply_openai(self, catalogue: Mapping[str, Any], *, sent_s: float, now_s: float) -> None:
        """Replace the polled facts of an ``openai`` neuron from its ``/v1/models``: every model it lists
        is loaded; its load is what this fleet sends it."""
        self.models = {
            str(entry["id"]): {
                "id": str(entry["id"]),
                "status": "loaded",
                "in_flight": 0,
                "queued": 0,
                **(
                    {"max_model_len": entry["max_model_len"]}
                    if isinstance(entry.get("max_model_len"), int)
                    else {}
                ),
            }
            for entry in catalogue["data"]
        }
        self.loadable = {}
        self.in_flight = self.queued = 0
        if sent_s > self.down_at_s:
            self.healthy = True
            self.last_error = None
        self.slow = self.frozen = False
        self.consecutive_failures = 0
        self.last_ok_s = now_s


class Poller:
    """Polls all neurons concurrently, each poll bounded by ``timeout_s``."""

    def __init__(
        self,
        states: Sequence[NeuronState],
        clients: Mapping[str, NeuronClient],
        *,
        timeout_s: float,
        frozen_after_s: float,
        unhealthy_after: int,
        local_load: Callable[[str], LocalLoad],
    ) -> None:
        self._states = states
        self._clients = clients
        self._timeout_s = timeout_s
        self._frozen_after_s = frozen_after_s
        self._unhealthy_after = unhealthy_after
        self._local_load = local_load
        self._probes: dict[str, asyncio.Task[None]] = {}  # the liveness probe of each slow neuron

    async def close(self) -> None:
        """Cancel the liveness probes still running."""
        probes = list(self._probes.values())
        for probe in probes:
            probe.cancel()
        await asyncio.gather(*probes, return_exceptions=True)

    async def poll_all(self) -> None:
        await asyncio.gather(*(self.poll(state) for state in self._states))

    async def poll(self, state: NeuronState) -> None:
        client = self._clients[state.name]
        local = self._local_load(state.name)
        sent_s = time.monotonic()
        try:
            async with asyncio.timeout(self._timeout_s):
                if state.spec.kind == "openai":
                    catalogue = await client.openai_models(timeout_s=self._timeout_s)
                    state.apply_openai(catalogue, sent_s=sent_s, now_s=time.monotonic())
                else:
                    health, models, discovery = await asyncio.gather(
                        client.health(timeout_s=self._timeout_s),
                        client.models(timeout_s=self._timeout_s),
                        client.discovery(timeout_s=self._timeout_s),
                    )
                    state.apply(health, models, discovery, sent_s=sent_s, now_s=time.monotonic())
        except TimeoutError:
            self._timed_out(state)
            return
        except NeuronTransportError as exc:
            if exc.timed_out:
                self._timed_out(state)  # slow, and probed
            else:
                state.record_transport_error(
                    exc, unhealthy_after=self._unhealthy_after, context="poll failed: "
                )
            return
        except _POLL_ERRORS as exc:
            state.record_failure(
                f"poll failed: {type(exc).__name__}: {exc}", unhealthy_after=self._unhealthy_after
            )
            return
        state.local_at_poll = local

    def _timed_out(self, state: NeuronState) -> None:
        state.record_timeout(f"no answer to its health check within {self._timeout_s:g} s")
        if state.name not in self._probes:
            self._probes[state.name] = asyncio.create_task(self._probe(state), name=f"probe-{state.name}")

    async def _probe(self, state: NeuronState) -> None:
        """Wait up to ``frozen_after_s`` for any answer to one ``/health``: none makes the neuron frozen, an
        answer (even a bad one) shows it alive. The next poll that times out probes again."""
        try:
            await self._clients[state.name].health(timeout_s=self._frozen_after_s)
        except TimeoutError:
            state.frozen = state.slow
        except NeuronTransportError as exc:
            state.frozen = state.slow and exc.timed_out
        except _POLL_ERRORS:
            state.frozen = False
        else:
            state.frozen = False
        finally:
            del self._probes[state.name]
        if state.frozen:
            state.last_error = f"no answer to its health check within {self._frozen_after_s:g} s"
