"""``Fleet``: one catalogue over many neurons; routes requests, cold-loads, evicts and fails over.

Composes the pieces: ``Poller`` keeps ``NeuronState`` fresh, ``Ledger`` holds the fleet's own
bookkeeping and builds the snapshots that the pure ``routing.route`` decides from, ``Loader`` runs
single-flight cold loads and evictions. This module owns the request path (``post``, ``stream``:
route, claim a slot, send, fail over), the catalogue and status views, and the background poll and
idle-TTL loops. Everything runs on one asyncio event loop; a route decision and the bookkeeping it
implies (claiming a request slot, reserving memory, marking victims as unloading) happen without an
``await`` in between, so concurrent requests never see a half-made decision.
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
import time
import weakref
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from cortex.fleet.catalogue import (
    CatalogueEntry,
    anthropic_models,
    build_catalogue,
    openai_models,
    resolve_model,
)
from cortex.fleet.errors import (
    FleetConfigError,
    ModelNotFoundError,
    NeuronTransportError,
    NeuronUnavailableError,
    NoCapacityError,
    UpstreamError,
)
from cortex.fleet.eviction import idle_expired
from cortex.fleet.ledger import Ledger
from cortex.fleet.loader import Loader, reply_ok
from cortex.fleet.neuron_client import NeuronClient, UpstreamReply, UpstreamResponse, decode
from cortex.fleet.poller import NeuronState, Poller
from cortex.fleet.profiles import FleetPolicy, ModelProfile, NeuronKind, NeuronSpec
from cortex.fleet.routing import RouteDecision, route
from cortex.fleet.status import FleetStatus, NeuronModelStatus, NeuronStatus, load_fraction
from cortex.fleet.upstream import FleetUpstream

__all__ = ["Fleet", "FleetResponse"]

_MAX_ROUTE_ROUNDS = 4


@dataclass(frozen=True)
class FleetResponse:
    """A neuron's complete answer: ``status`` and ``json`` body, the ``neuron`` that served it, the
    canonical ``model`` and how many ``attempts`` it took (more than 1 after a failover)."""

    status: int
    json: Any
    neuron: str
    model: str
    attempts: int


class Fleet:
    """Many neurons behind one catalogue. Use as ``async with Fleet(...) as fleet:``."""

    def __init__(
        self,
        neurons: Sequence[NeuronSpec],
        profiles: Sequence[ModelProfile] = (),
        policy: FleetPolicy = FleetPolicy(),  # noqa: B008 - frozen, so a shared default is safe
    ) -> None:
        for kind, names in (("neuron", [n.name for n in neurons]), ("model", [p.id for p in profiles])):
            duplicates = sorted({x for x in names if names.count(x) > 1})
            if duplicates:
                raise FleetConfigError(f"duplicate {kind} names {duplicates}")
        self.policy = policy
        self._profiles = list(profiles)
        self._states = {spec.name: NeuronState(spec) for spec in neurons}
        self._ledger = Ledger(profiles, self._states)
        self._clients = {spec.name: NeuronClient(spec) for spec in neurons}
        # what is in flight on each neuron and can be cut when it freezes: answers still to arrive and
        # answers being read
        self._waiting: dict[str, set[asyncio.Timeout]] = {spec.name: set() for spec in neurons}
        self._answers: dict[str, weakref.WeakSet[FleetUpstream]] = {
            spec.name: weakref.WeakSet() for spec in neurons
        }
        self._poller = Poller(
            list(self._states.values()),
            self._clients,
            timeout_s=policy.poll_timeout_s,
            frozen_after_s=policy.frozen_after_s,
            unhealthy_after=policy.unhealthy_after,
            local_load=self._ledger.local_load,
        )
        self._decisions: deque[dict[str, Any]] = deque(maxlen=policy.recent_decisions)
        self._background: list[asyncio.Task[None]] = []
        self._random = random.Random()
        self._created = int(time.time())
        self.counters: Counter[str] = Counter()
        self._loader = Loader(
            states=self._states,
            clients=self._clients,
            ledger=self._ledger,
            policy=policy,
            route=lambda model, exclude: self._route(model, affinity_key=None, exclude=exclude, record=True),
            refresh=self.refresh,
            counters=self.counters,
            decisions=self._decisions,
        )

    # ---- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> Fleet:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Poll every neuron once, then start the poller, the idle-TTL sweeper and pinned-model loads."""
        await self.refresh()
        self._background = [
            asyncio.create_task(self._poll_loop(), name="fleet-poller"),
            asyncio.create_task(self._sweep_loop(), name="fleet-ttl-sweeper"),
        ]
        for profile in self._profiles:
            if profile.pinned and not self._ledger.where(profile.id, ("loaded", "loading")):
                self._loader.start_load(profile.id, frozenset())

    async def close(self) -> None:
        tasks = [*self._background, *self._loader.loads.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._background = []
        await self._poller.close()
        await asyncio.gather(*(client.aclose() for client in self._clients.values()))

    async def refresh(self) -> None:
        """Poll all neurons once, concurrently; cut what is in flight on the neurons found frozen."""
        await self._poller.poll_all()
        self._ledger.prune()
        for name, state in self._states.items():
            if state.frozen:
                self._cut_silent(name, f"neuron {name} is frozen: {state.last_error}")

    # ---- catalogue ---------------------------------------------------------------------------------

    def catalogue(self) -> list[CatalogueEntry]:
        return build_catalogue(self._profiles, list(self._states.values()), self._ledger.canonical)

    def openai_models(self) -> dict[str, Any]:
        return openai_models(self.catalogue(), created=self._created)

    def anthropic_models(self) -> dict[str, Any]:
        return anthropic_models(self.catalogue(), created=self._created)

    def profile(self, model: str) -> ModelProfile | None:
        """The profile of a canonical model id, if models.toml has one."""
        return self._ledger.profile(model)

    def max_model_len(self, model: str) -> int | None:
        """The context of a canonical model id: its profile's, else the shortest a neuron reports."""
        return next((entry.max_model_len for entry in self.catalogue() if entry.id == model), None)

    def resolve(self, model: str) -> str:
        """The canonical id for a model name or alias; raises ``ModelNotFoundError``."""
        known = {
            self._ledger.canonical(upstream)
            for state in self._states.values()
            for upstream in [*state.models, *state.loadable]
        }
        resolved = resolve_model(model, self._profiles, known)
        if resolved is None:
            raise ModelNotFoundError(model)
        return resolved

    def explain(
        self, model: str, *, affinity_key: str | None = None, prefix_key: str | None = None
    ) -> dict[str, Any]:
        """Where the next request for ``model`` would go and why; loads, claims and counts nothing."""
        canonical = self.resolve(model)
        decision = self._route(
            canonical, affinity_key=affinity_key, prefix_key=prefix_key, exclude=frozenset(), record=False
        )
        return {
            "requested": model,
            "eviction_strategy": self.policy.eviction,
            "load_in_progress": canonical in self._loader.loads,
            **decision.as_dict(),
        }

    def status(self) -> FleetStatus:
        now = time.monotonic()
        views = {view.name: view for view in self._ledger.views(now)}
        neurons = []
        for name, state in self._states.items():
            view = views[name]
            polled = {self._ledger.canonical(upstream): entry for upstream, entry in state.models.items()}
            neurons.append(
                NeuronStatus(
                    name=name,
                    url=state.spec.url,
                    healthy=state.healthy,
                    slow=state.slow,
                    consecutive_failures=state.consecutive_failures,
                    last_error=state.last_error,
                    seconds_since_ok=None if state.last_ok_s is None else round(now - state.last_ok_s, 3),
                    memory_budget_bytes=state.memory_budget_bytes,
                    memory_used_bytes=state.memory_used_bytes,
                    memory_free_bytes=view.free_bytes,
                    load=view.load,
                    in_flight=state.in_flight,
                    queued=state.queued,
                    prefill_tokens_per_s=state.prefill_tokens_per_s,
                    decode_tokens_per_s=state.decode_tokens_per_s,
                    devices=tuple(state.devices),
                    models=tuple(
                        NeuronModelStatus(
                            s.model,
                            s.status,
                            s.load,
                            round(now - s.last_used_s, 3),
                            load_fraction(polled.get(s.model)),
                        )
                        for s in view.models.values()
                    ),
                )
            )
        return FleetStatus(
            neurons=tuple(neurons),
            models=tuple(self.catalogue()),
            loads_in_progress=tuple(sorted(self._loader.loads)),
            load_errors=dict(self._loader.load_errors),
            decisions=tuple(self._decisions),
            counters=dict(self.counters),
            eviction=self.policy.eviction,
        )

    # ---- requests -----------------------------------------------------------------------------------

    async def open(
        self,
        model: str,
        build: Callable[[NeuronKind, str], tuple[str, bytes]],
        *,
        affinity_key: str | None = None,
        prefix_key: str | None = None,
        cold_load: bool = True,
    ) -> FleetUpstream:
        """Route a request for ``model``, send it and return the answer as soon as its head (and, for a
        200, its first bytes) arrived. ``build(kind, upstream_model)`` makes the ``(path, body)`` for the
        chosen neuron's kind and the id it knows the model by. Connection errors, 5xx and a 404 for a
        model unloaded since the last poll fail over to another neuron (jittered, bounded); other
        answers are returned as they are. ``cold_load=False`` never loads a model: a neuron where it is
        loaded, else one that could load it, serves (count_tokens). Close the answer when done.
        ``affinity_key`` (a conversation) goes back to the neuron it last went to unless that one is
        overloaded; a key not routed before falls back to ``prefix_key`` (what conversations share: their
        system prompt and tools), so a new conversation starts where that prefix is cached."""
        canonical = self.resolve(model)
        upstream_id = self._ledger.upstream(canonical)
        self.counters["requests"] += 1
        failover = _Failover(canonical)
        for attempt in range(self.policy.retry_attempts):
            if attempt:
                await self._backoff(attempt)
            release: Callable[[], None]
            try:
                if cold_load:
                    neuron = await self._acquire(
                        canonical, affinity_key=affinity_key, prefix_key=prefix_key, exclude=failover.excluded
                    )
                    release = functools.partial(self._release, neuron, canonical)
                else:
                    neuron, release = self._any_holder(canonical, failover.excluded), _nothing
            except NoCapacityError:
                if not failover.failures:
                    raise
                break
            kind = self._states[neuron].spec.kind
            response: UpstreamResponse | None = None
            try:
                path, body = build(kind, upstream_id)
                async with asyncio.timeout(None) as waiting:  # fired at once by _cut
                    self._waiting[neuron].add(waiting)
                    try:
                        response = await self._clients[neuron].send(path, body)
                        first = await (response.read() if response.status != 200 else response.read_chunk())
                    finally:
                        self._waiting[neuron].discard(waiting)
            except TimeoutError:
                _close(response)
                release()
                failover.failed(neuron, f"neuron {neuron} froze before answering")
                continue
            except NeuronTransportError as exc:
                _close(response)
                release()
                failover.failed(neuron, self._transport_failed(neuron, exc), exclude=not exc.dropped)
                continue
            except BaseException:
                _close(response)
                release()
                raise
            if response.status == 200 and not first:
                response.close()
                release()
                failover.failed(neuron, "the answer ended before its first byte")
                continue
            if response.status != 200:
                response.close()
                reply = UpstreamReply(response.status, decode(first), response.headers)
                if await self._should_retry(neuron, canonical, reply):
                    release()
                    failover.retry(neuron, reply)
                    continue
            answer = FleetUpstream(
                response,
                first=first,
                complete=response.status != 200,
                neuron=neuron,
                kind=kind,
                model=canonical,
                attempts=attempt + 1,
                idle_timeout_s=self.policy.stream_idle_timeout_s,
                on_broken=functools.partial(self._stream_broke, neuron),
                on_close=release,
            )
            self._answers[neuron].add(answer)
            return answer
        self.counters["request_failures"] += 1
        raise failover.error()

    async def post(
        self,
        model: str,
        path: str,
        body: Mapping[str, Any],
        *,
        affinity_key: str | None = None,
        prefix_key: str | None = None,
    ) -> FleetResponse:
        """Send a non-streamed request and read its JSON answer (failing over like :meth:`open`)."""
        build = _json_request(path, body)
        async with await self.open(
            model, build, affinity_key=affinity_key, prefix_key=prefix_key
        ) as upstream:
            raw = await upstream.read()
        return FleetResponse(upstream.status, decode(raw), upstream.neuron, upstream.model, upstream.attempts)

    async def stream(
        self,
        model: str,
        path: str,
        body: Mapping[str, Any],
        *,
        affinity_key: str | None = None,
        prefix_key: str | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Stream a request's SSE ``data`` dicts. Before the first bytes, failures fail over like
        :meth:`open` and finally raise (``UpstreamError`` for a 4xx); after them a broken stream raises
        ``FleetStreamError``."""
        build = _json_request(path, body)
        async with await self.open(
            model, build, affinity_key=affinity_key, prefix_key=prefix_key
        ) as upstream:
            if upstream.status != 200:
                raw = await upstream.read()
                raise UpstreamError(
                    upstream.neuron,
                    upstream.status,
                    decode(raw),
                    retry_after=upstream.headers.get("retry-after"),
                )
            async for event in upstream.events():
                yield event

    # ---- explicit model management -------------------------------------------------------------------

    async def load(self, model: str, neuron: str | None = None) -> str:
        """Make sure ``model`` is loaded (on ``neuron`` if given); returns the neuron that has it."""
        canonical = self.resolve(model)
        if neuron is None:
            await self._loader.wait_loaded(canonical, exclude=frozenset())
            where = self._ledger.where(canonical, ("loaded",))
            if not where:
                raise NoCapacityError(canonical, "loaded, but its neuron is no longer available")
            return where[0]
        self._require_neuron(neuron)
        others = frozenset(self._states) - {neuron}
        decision = self._route(canonical, affinity_key=None, exclude=others, record=True)
        if decision.action == "serve":
            return neuron
        if decision.action not in ("load", "join"):
            raise NoCapacityError(canonical, decision.reason)
        outcome, cause = await self._loader.load_on(neuron, canonical, decision.evict)
        if outcome != "loaded":
            raise NoCapacityError(canonical, cause)
        return neuron

    async def unload(self, model: str, neuron: str, *, force: bool = False) -> None:
        """Unload ``model`` from ``neuron``; the neuron refuses (409) while requests are in flight."""
        canonical = self.resolve(model)
        self._require_neuron(neuron)
        reply = await self._loader.unload(neuron, canonical, force=force, reason="explicit unload")
        if reply.status != 200:
            raise UpstreamError(neuron, reply.status, reply.body)

    async def sweep_idle(self) -> list[tuple[str, str]]:
        """Unload every model idle for longer than its ``idle_ttl_s``; returns (neuron, model) pairs."""
        ttl = {p.id: p.idle_ttl_s for p in self._profiles if p.idle_ttl_s is not None}
        if not ttl:
            return []
        now = time.monotonic()
        expired = [
            (view.name, model)
            for view in self._ledger.views(now)
            if view.healthy and self._states[view.name].spec.kind == "cortex"  # openai: never unloaded
            for model in idle_expired(view, ttl, now_s=now)
            if model not in self._loader.loads
        ]
        self._ledger.unloading.update(expired)  # out of routing from now on, before any await
        replies = await asyncio.gather(
            *(self._loader.unload(n, m, force=False, reason="idle ttl") for n, m in expired),
            return_exceptions=True,
        )
        done = [pair for pair, reply in zip(expired, replies, strict=True) if reply_ok(reply)]
        self.counters["ttl_unloads"] += len(done)
        return done

    # ---- routing and loading -------------------------------------------------------------------------

    def _route(
        self,
        model: str,
        *,
        affinity_key: str | None,
        exclude: frozenset[str],
        record: bool,
        prefix_key: str | None = None,
    ) -> RouteDecision:
        now = time.monotonic()
        sticky = self._ledger.sticky(model, affinity_key, prefix_key)
        decision = route(
            model,
            self._ledger.views(now),
            profile=self._ledger.profile(model),
            policy=self.policy,
            now_s=now,
            affinity_neuron=sticky,
            exclude=exclude,
        )
        if record and decision.action != "wait":
            self._decisions.append(
                {
                    "time": time.time(),
                    "model": model,
                    "action": decision.action,
                    "neuron": decision.neuron,
                    "evict": list(decision.evict),
                    "reason": decision.reason,
                }
            )
        return decision

    async def _acquire(
        self, model: str, *, affinity_key: str | None, prefix_key: str | None, exclude: frozenset[str]
    ) -> str:
        """A neuron with ``model`` loaded, its request slot claimed; cold-loads first if needed."""
        for _ in range(_MAX_ROUTE_ROUNDS):
            decision = self._route(
                model, affinity_key=affinity_key, prefix_key=prefix_key, exclude=exclude, record=True
            )
            if decision.action == "serve":
                assert decision.neuron is not None
                self._ledger.claim(decision.neuron, model, affinity_key, prefix_key)
                return decision.neuron
            if decision.action == "none" and model not in self._loader.loads:
                raise NoCapacityError(model, decision.reason)
            await self._loader.wait_loaded(model, exclude=exclude)
        raise NoCapacityError(model, "loaded, but every neuron holding it is unavailable to this request")

    # ---- bookkeeping ---------------------------------------------------------------------------------

    def _release(self, neuron: str, model: str) -> None:
        self._ledger.release(neuron, model)
        self._loader.capacity_freed.set()

    def _any_holder(self, model: str, exclude: frozenset[str]) -> str:
        """A healthy neuron where ``model`` is loaded, else one that could load it; claims nothing."""
        decision = self._route(model, affinity_key=None, exclude=exclude, record=False)
        if decision.action == "serve" and decision.neuron is not None:
            return decision.neuron
        upstream = self._ledger.upstream(model)
        profile = self._ledger.profile(model)
        for name, state in self._states.items():
            allowed = profile is None or profile.allows(name)
            if state.healthy and name not in exclude and allowed and upstream in state.loadable:
                return name
        raise NoCapacityError(model, decision.reason)

    def _cut_silent(self, neuron: str, reason: str) -> None:
        """When nothing has come from frozen ``neuron`` for a poll timeout, end what is in flight there:
        answers not yet arrived fail over, answers being read end with ``FleetStreamError(reason)``. A
        neuron still streaming is busy, not frozen, and is left alone."""
        answers = [answer for answer in self._answers[neuron] if not answer.closed]
        last_bytes_s = max((answer.last_bytes_s for answer in answers), default=float("-inf"))
        if time.monotonic() - last_bytes_s < self.policy.poll_timeout_s:
            return
        for waiting in list(self._waiting[neuron]):
            waiting.reschedule(asyncio.get_running_loop().time())
        for answer in answers:
            answer.cut(reason)

    def _transport_failed(self, neuron: str, exc: NeuronTransportError) -> str:
        return self._states[neuron].record_transport_error(exc, unhealthy_after=self.policy.unhealthy_after)

    def _stream_broke(self, neuron: str, exc: NeuronTransportError) -> str:
        self.counters["stream_errors"] += 1
        return self._transport_failed(neuron, exc)

    async def _should_retry(self, neuron: str, model: str, reply: UpstreamReply) -> bool:
        """A 5xx, or a 404 because the model is no longer loaded there (unloaded since the last poll).
        Without the contract's ``model_not_found`` code the neuron is re-polled to tell that apart from
        a 404 for another reason, which is the caller's answer."""
        if reply.status >= 500:
            return True
        if reply.status != 404:
            return False
        state = self._states[neuron]
        upstream = self._ledger.upstream(model)
        error = reply.body.get("error") if isinstance(reply.body, dict) else None
        if isinstance(error, dict) and error.get("code") == "model_not_found":
            state.models.pop(upstream, None)
            return True
        await self._poller.poll(state)
        return state.models.get(upstream, {}).get("status") != "loaded"

    async def _backoff(self, attempt: int) -> None:
        self.counters["failovers"] += 1
        delay = min(self.policy.backoff_max_s, self.policy.backoff_base_s * 2 ** (attempt - 1))
        await asyncio.sleep(delay * (1 - self.policy.backoff_jitter * self._random.random()))

    def _require_neuron(self, neuron: str) -> None:
        if neuron not in self._states:
            raise FleetConfigError(f"unknown neuron {neuron!r}; known: {sorted(self._states)}")

    async def _poll_loop(self) -> None:
        while True:
            await asyncio.sleep(self.policy.poll_interval_s)
            await self.refresh()

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.policy.ttl_sweep_interval_s)
            await self.sweep_idle()


@dataclass
class _Failover:
    """One request's failed attempts, ``(neuron, cause)`` in order, and the last 5xx reply's error."""

    model: str
    failures: list[tuple[str, str]] = field(default_factory=list)
    last_5xx: UpstreamError | None = None
    _excluded: set[str] = field(default_factory=set)

    @property
    def excluded(self) -> frozenset[str]:
        """The neurons the next attempt avoids: every one that failed, but for a first dropped connection."""
        return frozenset(self._excluded)

    def failed(self, neuron: str, cause: str, *, exclude: bool = True) -> None:
        """Record a failed attempt. ``exclude=False`` (a connection dropped before any answer, as a pooled
        one the neuron closed at that moment is) lets the next attempt go back to the same neuron, once."""
        if exclude or any(name == neuron for name, _ in self.failures):
            self._excluded.add(neuron)
        self.failures.append((neuron, cause))

    def retry(self, neuron: str, reply: UpstreamReply) -> None:
        """Record a reply that ``_should_retry`` sent elsewhere (a 5xx, or a stale 404)."""
        self.failed(neuron, f"HTTP {reply.status}")
        retry_after = reply.headers.get("retry-after")
        self.last_5xx = (
            UpstreamError(neuron, reply.status, reply.body, retry_after=retry_after)
            if reply.status >= 500
            else None
        )

    def error(self) -> UpstreamError | NeuronUnavailableError:
        """What to raise once every attempt failed: the neuron's own 5xx if it was the last failure."""
        if self.last_5xx is not None and self.failures[-1][0] == self.last_5xx.neuron:
            return self.last_5xx
        return NeuronUnavailableError(self.model, self.failures)


def _close(response: UpstreamResponse | None) -> None:
    if response is not None:
        response.close()


def _nothing() -> None:
    """The release of a request that claimed no slot."""


def _json_request(path: str, body: Mapping[str, Any]) -> Callable[[NeuronKind, str], tuple[str, bytes]]:
    def build(_: NeuronKind, upstream_model: str) -> tuple[str, bytes]:
        return path, json.dumps({**body, "model": upstream_model}).encode()

    return build
