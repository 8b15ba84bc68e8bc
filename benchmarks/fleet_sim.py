"""Replay a synthetic trace through the fleet's routing and eviction policy; print comparable numbers.

A discrete-event simulation: the real ``cortex.fleet.routing.route`` (and through it placement and
eviction) decides every request on ``NeuronView`` snapshots of simulated neurons, with the fleet's
single-flight loads and wait-for-capacity. A naive baseline (random neuron, load on every miss, evict
the oldest load, no single-flight) shows what the policy buys. Pure CPU, runs in seconds:

    python benchmarks/fleet_sim.py [--requests 10000] [--neurons 20] [--models 50] [--seed 0]
"""

from __future__ import annotations

import argparse
import heapq
import random
import statistics
import time
from dataclasses import dataclass, field

from cortex.fleet.profiles import FleetPolicy, ModelProfile
from cortex.fleet.routing import route
from cortex.fleet.snapshot import LoadNeed, ModelSlot, NeuronView

GB = 1 << 30


@dataclass
class SimModel:
    status: str  # "loading" | "loaded"
    in_flight: int = 0  # running + queued on the neuron
    last_used: float = 0.0
    loaded_at: float = 0.0
    waiters: list[int] = field(default_factory=list)


@dataclass
class SimNeuron:
    name: str
    budget: int
    slots: int
    models: dict[str, SimModel] = field(default_factory=dict)
    running: int = 0
    queue: list[int] = field(default_factory=list)


@dataclass
class Trace:
    arrivals: list[float]
    models: list[str]
    service_s: list[float]
    sizes: dict[str, int]
    profiles: dict[str, ModelProfile]


def make_trace(num_requests: int, num_models: int, rate: float, seed: int) -> Trace:
    rng = random.Random(seed)
    names = [f"model-{i:02d}" for i in range(num_models)]
    sizes = {m: rng.choice((2, 4, 4, 8, 8, 16)) * GB for m in names}
    weights = [1 / (rank + 1) ** 0.9 for rank in range(num_models)]
    order = names[:]
    arrivals, models, service = [], [], []
    now = 0.0
    for i in range(num_requests):
        if i % 2000 == 0:  # popularity shifts every 2,000 requests: a new working set must be loaded
            rng.shuffle(order)
        now += rng.expovariate(rate)
        arrivals.append(now)
        models.append(rng.choices(order, weights)[0])
        service.append(rng.expovariate(1 / 0.8))
    # Residency priority by overall popularity rank at the start: the top 10 high, the next 20 medium.
    profiles = {m: ModelProfile(m, priority=2 if r < 10 else 1 if r < 30 else 0) for r, m in enumerate(names)}
    return Trace(arrivals, models, service, sizes, profiles)


def load_time_s(size: int) -> float:
    return 1.0 + 0.5 * size / GB


class Simulation:
    def __init__(self, trace: Trace, num_neurons: int, budget_gb: int, policy: str, seed: int) -> None:
        self.trace = trace
        self.policy_name = policy
        self.policy = FleetPolicy(eviction="priority" if policy == "priority" else "lru", min_residency_s=2.0)
        self.neurons = {f"n{i:02d}": SimNeuron(f"n{i:02d}", budget_gb * GB, 8) for i in range(num_neurons)}
        self.rng = random.Random(seed)
        self.events: list[tuple[float, int, str, str, str, int]] = []
        self.seq = 0
        self.now = 0.0
        self.pending: list[int] = []
        self.started: dict[int, float] = {}
        self.load_calls = 0
        self.evictions = 0
        self.rejected = 0

    def push(self, at: float, kind: str, neuron: str = "", model: str = "", request: int = -1) -> None:
        self.seq += 1
        heapq.heappush(self.events, (at, self.seq, kind, neuron, model, request))

    def run(self) -> dict[str, float]:
        for i, at in enumerate(self.trace.arrivals):
            self.push(at, "arrive", request=i)
        while self.events:
            self.now, _, kind, neuron, model, request = heapq.heappop(self.events)
            if kind == "arrive":
                self.arrive(request)
            elif kind == "loaded":
                self.loaded(neuron, model)
            else:
                self.finished(neuron, model)
            if kind != "arrive" and self.pending:
                retry, self.pending = self.pending, []
                for r in retry:
                    self.arrive(r)
        delays = sorted(self.started[i] - self.trace.arrivals[i] for i in self.started)
        return {
            "load_calls": self.load_calls,
            "evictions": self.evictions,
            "p50_s": statistics.median(delays),
            "p99_s": delays[int(0.99 * (len(delays) - 1))],
            "rejected": self.rejected,
        }

    def views(self) -> list[NeuronView]:
        views = []
        for n in self.neurons.values():
            used = sum(self.trace.sizes[m] for m in n.models)
            slots = {
                m: ModelSlot(
                    m,
                    "loaded" if s.status == "loaded" else "loading",
                    load=s.in_flight,
                    memory_bytes=self.trace.sizes[m],
                    priority=self.trace.profiles[m].priority,
                    last_used_s=s.last_used,
                    loaded_at_s=s.loaded_at,
                )
                for m, s in n.models.items()
            }
            load = n.running + len(n.queue)
            loadable = {m: LoadNeed(size) for m, size in self.trace.sizes.items()}
            views.append(NeuronView(n.name, True, load, n.budget - used, slots, loadable))
        return views

    def arrive(self, request: int) -> None:
        model = self.trace.models[request]
        if self.policy_name == "naive":
            self.arrive_naive(request, model)
            return
        decision = route(
            model, self.views(), profile=self.trace.profiles[model], policy=self.policy, now_s=self.now
        )
        if decision.action == "serve":
            assert decision.neuron is not None
            self.dispatch(decision.neuron, model, request)
        elif decision.action == "join":
            assert decision.neuron is not None
            self.neurons[decision.neuron].models[model].waiters.append(request)
        elif decision.action == "load":
            assert decision.neuron is not None
            self.start_load(decision.neuron, model, decision.evict, request)
        elif decision.action == "wait":
            self.pending.append(request)
        else:
            self.rejected += 1

    def arrive_naive(self, request: int, model: str) -> None:
        neuron = self.neurons[self.rng.choice(list(self.neurons))]
        if self.trace.sizes[model] > neuron.budget:
            self.rejected += 1
            return
        slot = neuron.models.get(model)
        if slot is not None and slot.status == "loaded":
            self.dispatch(neuron.name, model, request)
            return
        if slot is not None:  # loading: no single-flight, so the naive client asks again
            self.load_calls += 1
            slot.waiters.append(request)
            return
        free = neuron.budget - sum(self.trace.sizes[m] for m in neuron.models)
        idle = sorted(
            (s.loaded_at, m) for m, s in neuron.models.items() if s.status == "loaded" and not s.in_flight
        )
        victims = []
        while free < self.trace.sizes[model] and idle:
            _, victim = idle.pop(0)
            victims.append(victim)
            free += self.trace.sizes[victim]
        if free < self.trace.sizes[model]:
            self.pending.append(request)
            return
        self.start_load(neuron.name, model, tuple(victims), request)

    def start_load(self, neuron: str, model: str, victims: tuple[str, ...], request: int) -> None:
        n = self.neurons[neuron]
        for victim in victims:
            del n.models[victim]
            self.evictions += 1
        self.load_calls += 1
        n.models[model] = SimModel("loading", waiters=[request])
        self.push(self.now + load_time_s(self.trace.sizes[model]), "loaded", neuron, model)

    def loaded(self, neuron: str, model: str) -> None:
        slot = self.neurons[neuron].models[model]
        slot.status, slot.loaded_at, slot.last_used = "loaded", self.now, self.now
        waiters, slot.waiters = slot.waiters, []
        for request in waiters:
            self.dispatch(neuron, model, request)

    def dispatch(self, neuron: str, model: str, request: int) -> None:
        n = self.neurons[neuron]
        n.models[model].in_flight += 1
        n.models[model].last_used = self.now
        if n.running < n.slots:
            self.begin(n, request)
        else:
            n.queue.append(request)

    def begin(self, n: SimNeuron, request: int) -> None:
        n.running += 1
        self.started[request] = self.now
        self.push(
            self.now + self.trace.service_s[request], "done", n.name, self.trace.models[request], request
        )

    def finished(self, neuron: str, model: str) -> None:
        n = self.neurons[neuron]
        n.running -= 1
        n.models[model].in_flight -= 1
        n.models[model].last_used = self.now
        if n.queue:
            self.begin(n, n.queue.pop(0))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--neurons", type=int, default=20)
    parser.add_argument("--models", type=int, default=50)
    parser.add_argument("--rate", type=float, default=25.0, help="arrivals per second")
    parser.add_argument("--budget-gb", type=int, default=16, help="memory budget per neuron")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    trace = make_trace(args.requests, args.models, args.rate, args.seed)
    print(
        f"{args.requests} requests, {args.neurons} neurons ({args.budget_gb} GiB, 8 slots each), "
        f"{args.models} models, {args.rate:g} req/s, popularity shifts every 2,000 requests"
    )
    print(
        f"{'policy':<10}{'load calls':>12}{'evictions':>11}{'p50 wait s':>12}{'p99 wait s':>12}"
        f"{'rejected':>10}{'sim s':>8}"
    )
    for policy in ("lru", "priority", "naive"):
        started = time.perf_counter()
        result = Simulation(trace, args.neurons, args.budget_gb, policy, args.seed).run()
        elapsed = time.perf_counter() - started
        print(
            f"{policy:<10}{result['load_calls']:>12}{result['evictions']:>11}{result['p50_s']:>12.3f}"
            f"{result['p99_s']:>12.3f}{result['rejected']:>10}{elapsed:>8.2f}"
        )


if __name__ == "__main__":
    main()
