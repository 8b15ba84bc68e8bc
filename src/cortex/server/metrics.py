"""Prometheus metrics for the neuron and the gateway, one ``CollectorRegistry`` per app.

Labels are bounded: ``model`` (a configured or discovered model id, or ``"unknown"``), ``neuron`` (a
configured neuron name), and where noted a small fixed ``endpoint`` or ``type``. Never a request id,
user or prompt. Durations are true histograms. docs/metrics.md lists every metric.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cortex.server.model_store import engine_stats

if TYPE_CHECKING:
    from cortex.fleet import FleetStatus
    from cortex.server.model_store import HostedModel

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
ENDPOINTS = ("chat_completions", "completions", "messages", "count_tokens", "models")
UNKNOWN_MODEL = "unknown"

# name -> (help, "counter" | "gauge", [(labels, value)])
MetricValues = tuple[str, str, list[tuple[dict[str, str], float]]]

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_RATE_BUCKETS = (1, 2, 5, 10, 20, 35, 50, 75, 100, 150, 200, 300, 500, 1000)
_LOAD_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class ServerMetrics:
    """The request metrics both servers record."""

    def __init__(self, *, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        labels = ("model", "neuron")
        r = self.registry
        self.requests = Counter("cortex_requests", "Requests received", [*labels, "endpoint"], registry=r)
        self.errors = Counter(
            "cortex_request_errors",
            "Requests that ended in an error, by error type",
            [*labels, "type"],
            registry=r,
        )
        self.prompt_tokens = Counter("cortex_prompt_tokens", "Prompt tokens processed", labels, registry=r)
        self.completion_tokens = Counter(
            "cortex_completion_tokens", "Completion tokens generated", labels, registry=r
        )
        self.cached_tokens = Counter(
            "cortex_cached_tokens", "Prompt tokens served from the prefix cache", labels, registry=r
        )
        self.request_duration = Histogram(
            "cortex_request_duration_seconds",
            "Time from request to last byte",
            [*labels, "endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.time_to_first_token = Histogram(
            "cortex_time_to_first_token_seconds",
            "Time from request to the first generated token",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens_per_second = Histogram(
            "cortex_tokens_per_second",
            "Per-request decode rate (completion tokens after the first / time)",
            labels,
            buckets=_RATE_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("cortex_in_flight_requests", "Requests being served", labels, registry=r)

    def observe_usage(self, model: str, neuron: str, usage: dict[str, Any] | None) -> None:
        """Count an OpenAI-shaped ``usage`` dict's tokens."""
        if not usage:
            return
        self.prompt_tokens.labels(model, neuron).inc(usage.get("prompt_tokens") or 0)
        self.completion_tokens.labels(model, neuron).inc(usage.get("completion_tokens") or 0)
        details = usage.get("prompt_tokens_details") or {}
        self.cached_tokens.labels(model, neuron).inc(details.get("cached_tokens") or 0)

    def observe_timing(
        self, model: str, neuron: str, *, ttft_s: float | None, duration_s: float, num_tokens: int
    ) -> None:
        if ttft_s is None:
            return
        self.time_to_first_token.labels(model, neuron).observe(ttft_s)
        decode_s = duration_s - ttft_s
        if num_tokens > 1 and decode_s > 0:
            self.tokens_per_second.labels(model, neuron).observe((num_tokens - 1) / decode_s)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestMeter:
    """One gateway request's metrics, counted once: labelled with the neuron that served it from
    :meth:`routed` on (``""`` for a request that never reached one)."""

    def __init__(self, metrics: ServerMetrics, model: str, endpoint: str) -> None:
        self._metrics = metrics
        self.model = model
        self.endpoint = endpoint
        self.neuron = ""
        self.started = time.monotonic()
        self.first_output_at: float | None = None
        self._counted = False
        self._streaming = False
        self._finished = False

    def routed(self, neuron: str) -> None:
        self.neuron = neuron
        self._count()

    def _count(self) -> None:
        if not self._counted:
            self._counted = True
            self._metrics.requests.labels(self.model, self.neuron, self.endpoint).inc()

    def failed(self, error_type: str) -> None:
        self._count()
        self._metrics.errors.labels(self.model, self.neuron, error_type).inc()

    def start_stream(self) -> None:
        self._streaming = True
        self._metrics.in_flight.labels(self.model, self.neuron).inc()

    def finished(self, usage: dict[str, Any] | None) -> None:
        """The answer ended (``usage`` OpenAI-shaped, when known): duration, tokens, time to first token."""
        if self._finished:
            return
        self._finished = True
        end = time.monotonic()
        labels = (self.model, self.neuron)
        if self._streaming:
            self._metrics.in_flight.labels(*labels).dec()
        self._metrics.request_duration.labels(*labels, self.endpoint).observe(end - self.started)
        self._metrics.observe_usage(*labels, usage)
        self._metrics.observe_timing(
            *labels,
            ttft_s=None if self.first_output_at is None else self.first_output_at - self.started,
            duration_s=end - self.started,
            num_tokens=(usage or {}).get("completion_tokens") or 0,
        )


class NeuronMetrics(ServerMetrics):
    """The neuron's metrics: the request metrics plus model loads and unloads."""

    def __init__(self, *, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry=registry)
        labels = ("model", "neuron")
        r = self.registry
        self.model_loads = Counter("cortex_model_loads", "Models loaded (cold loads)", labels, registry=r)
        self.model_load_duration = Histogram(
            "cortex_model_load_duration_seconds",
            "Time to load a model",
            labels,
            buckets=_LOAD_BUCKETS,
            registry=r,
        )
        self.model_unloads = Counter(
            "cortex_model_unloads",
            "Models unloaded, by type (requested, forced)",
            [*labels, "type"],
            registry=r,
        )


class FunctionCollector(Collector):
    """Exports values read at scrape time: ``read()`` returns ``{name: (help, kind, [(labels, value)])}``.

    Used for state the library already keeps (the fleet's load and eviction counters, the neuron's
    queues and device memory), so nothing is counted twice.
    """

    def __init__(self, read: Callable[[], dict[str, MetricValues]]) -> None:
        self._read = read

    def collect(self) -> Iterable[Metric]:
        for name, (doc, kind, samples) in self._read().items():
            label_names = sorted({key for labels, _ in samples for key in labels})
            family: CounterMetricFamily | GaugeMetricFamily
            if kind == "counter":
                family = CounterMetricFamily(name, doc, labels=label_names)
            else:
                family = GaugeMetricFamily(name, doc, labels=label_names)
            for labels, value in samples:
                family.add_metric([labels.get(key, "") for key in label_names], value)
            yield family

    def describe(self) -> Iterable[Metric]:
        return []


def fleet_gauges(status: FleetStatus) -> dict[str, MetricValues]:
    """The gateway's view of the fleet, read from ``Fleet.status()`` at scrape time."""
    neurons = status.neurons
    loaded = [
        ({"model": m.id, "neuron": n.name}, 1.0) for n in neurons for m in n.models if m.status == "loaded"
    ]
    return {
        "cortex_fleet_events": (
            "Fleet events (loads, evictions, failovers, ...) by type",
            "counter",
            [({"type": k}, float(v)) for k, v in sorted(status.counters.items())],
        ),
        "cortex_neuron_healthy": (
            "1 when the neuron is in routing (no evidence of death)",
            "gauge",
            [({"neuron": n.name}, float(n.healthy)) for n in neurons],
        ),
        "cortex_neuron_slow": (
            "1 when the neuron's last health check timed out (routed around while another can serve)",
            "gauge",
            [({"neuron": n.name}, float(n.slow)) for n in neurons],
        ),
        "cortex_neuron_in_flight_requests": (
            "Requests running on the neuron",
            "gauge",
            [({"neuron": n.name}, float(n.in_flight)) for n in neurons],
        ),
        "cortex_queue_depth": (
            "Requests queued on the neuron",
            "gauge",
            [({"neuron": n.name}, float(n.queued)) for n in neurons],
        ),
        "cortex_neuron_memory_used_bytes": (
            "Estimated memory of the neuron's models",
            "gauge",
            [({"neuron": n.name}, float(n.memory_used_bytes)) for n in neurons],
        ),
        "cortex_neuron_memory_budget_bytes": (
            "The neuron's memory budget",
            "gauge",
            [({"neuron": n.name}, float(n.memory_budget_bytes)) for n in neurons],
        ),
        "cortex_model_loaded": ("1 per model loaded on a neuron", "gauge", loaded),
    }


def neuron_gauges(
    neuron: str,
    hosted: Sequence[HostedModel],
    devices: Sequence[dict[str, Any]],
    *,
    memory_budget_bytes: int,
    memory_used_bytes: int,
) -> dict[str, MetricValues]:
    """A neuron's queues, caches, models and device memory, read at scrape time."""
    labels = [({"model": h.id, "neuron": neuron}, h) for h in hosted]
    cache_stats = [(lab, stats) for lab, h in labels if "prefix_cache_hit_rate" in (stats := engine_stats(h))]

    def cache_samples(key: str, **extra: str) -> list[tuple[dict[str, str], float]]:
        return [({**lab, **extra}, stats[key]) for lab, stats in cache_stats]

    return {
        "cortex_prefix_cache_hit_rate": (
            "Fraction of looked-up prompt tokens served from the prefix cache since the model loaded",
            "gauge",
            cache_samples("prefix_cache_hit_rate"),
        ),
        "cortex_prefix_cache_query_tokens": (
            "Prompt tokens looked up in the prefix cache",
            "counter",
            cache_samples("prefix_cache_query_tokens"),
        ),
        "cortex_prefix_cache_hit_tokens": (
            "Prompt tokens served from the prefix cache (not computed)",
            "counter",
            cache_samples("prefix_cache_hit_tokens"),
        ),
        "cortex_prefix_cache_snapshot_miss_tokens": (
            "Prompt tokens whose KV blocks were cached but recomputed for want of a state snapshot "
            "(caching not effective: prompts diverge between snapshots)",
            "counter",
            cache_samples("prefix_cache_snapshot_miss_tokens"),
        ),
        "cortex_prefix_cache_snapshots": (
            "Recurrent-state snapshots of the prefix cache, used and total",
            "gauge",
            cache_samples("prefix_cache_snapshots_used", type="used")
            + cache_samples("prefix_cache_snapshots_total", type="total"),
        ),
        "cortex_prefix_cache_snapshot_bytes": (
            "Memory held by recurrent-state snapshots",
            "gauge",
            cache_samples("prefix_cache_snapshot_bytes"),
        ),
        "cortex_queue_depth": (
            "Requests waiting for a running slot",
            "gauge",
            [(lab, float(h.admission.num_queued)) for lab, h in labels],
        ),
        "cortex_kv_cache_usage": (
            "Fraction of KV-cache blocks in use",
            "gauge",
            [(lab, float(h.describe()["kv_cache_usage"])) for lab, h in labels],
        ),
        "cortex_model_loaded": (
            "1 when the model is loaded on the neuron",
            "gauge",
            [(lab, float(h.status == "loaded")) for lab, h in labels],
        ),
        "cortex_device_memory_used_bytes": (
            "Device memory in use",
            "gauge",
            [({"neuron": neuron, "device": str(d["index"])}, float(d["memory_used_bytes"])) for d in devices],
        ),
        "cortex_device_memory_total_bytes": (
            "Device memory in total",
            "gauge",
            [
                ({"neuron": neuron, "device": str(d["index"])}, float(d["memory_total_bytes"]))
                for d in devices
            ],
        ),
        "cortex_memory_budget_bytes": (
            "The neuron's model memory budget and its estimated use",
            "gauge",
            [
                ({"neuron": neuron, "type": "budget"}, float(memory_budget_bytes)),
                ({"neuron": neuron, "type": "used"}, float(memory_used_bytes)),
            ],
        ),
    }
