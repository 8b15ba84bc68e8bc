"""The fleet's status rendered for people: the gateway's HTML page (``GET /``) and ``cortex status``.

``cortex status`` reads a running gateway's ``/status`` (JSON) and prints it as tables (or JSON);
``--explain MODEL`` shows the routing decision the gateway would make for a model.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from cortex.fleet import FleetStatus
    from cortex.fleet.status import NeuronStatus


def fetch_status(
    url: str, *, api_key: str | None = None, explain: str | None = None, timeout_s: float = 5.0
) -> dict[str, Any]:
    """GET ``{url}/status`` (or ``/explain?model=...``) from a gateway; raises httpx errors when it
    cannot be reached or answers with an error."""
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    path, params = ("/explain", {"model": explain}) if explain else ("/status", {})
    reply = httpx.get(f"{url.rstrip('/')}{path}", params=params, headers=headers, timeout=timeout_s)
    reply.raise_for_status()
    status: dict[str, Any] = reply.json()
    return status


def _gib(value: Any) -> str:
    return f"{(value or 0) / 2**30:.1f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=False)]
    lines = [header, ["-" * w for w in widths], *rows]
    return "\n".join(
        "  ".join(str(cell).ljust(w) for cell, w in zip(line, widths, strict=False)).rstrip()
        for line in lines
    )


def _model_state(model_id: str, status: str, load_progress: float | None) -> str:
    """``qwen (loaded)``, ``qwen (loading 42%)``."""
    if status == "loading" and load_progress is not None:
        return f"{model_id} (loading {load_progress:.0%})"
    return f"{model_id} ({status})"


def _health(neuron: dict[str, Any]) -> str:
    if not neuron["healthy"]:
        return f"DOWN ({neuron.get('last_error') or 'no answer'})"
    return f"SLOW ({neuron.get('last_error')})" if neuron.get("slow") else "ok"


def render_status(status: dict[str, Any]) -> str:
    """Neurons (health, memory, load, models) and models (where loaded, where loadable) as text tables."""
    neuron_rows = [
        [
            n["name"],
            _health(n),
            f"{_gib(n.get('memory_used_bytes'))}/{_gib(n.get('memory_budget_bytes'))} GiB",
            f"{n.get('in_flight') or 0} running, {n.get('queued') or 0} queued",
            f"{n.get('decode_tokens_per_s') or 0:.0f} tok/s",
            ", ".join(_model_state(m["id"], m["status"], m.get("load_progress")) for m in n.get("models", []))
            or "-",
        ]
        for n in status.get("neurons", [])
    ]
    model_rows = [
        [
            m["id"],
            ", ".join(m.get("loaded_on") or []) or "-",
            ", ".join(m.get("loadable_on") or []) or "-",
            f"{_gib(m.get('memory_bytes'))} GiB" if m.get("memory_bytes") else "?",
            ", ".join(m.get("aliases") or []) or "-",
        ]
        for m in status.get("models", [])
    ]
    counters = ", ".join(f"{k}={v}" for k, v in sorted((status.get("counters") or {}).items())) or "none"
    eviction = (status.get("policy") or {}).get("eviction", "?")
    return "\n\n".join(
        [
            _table(["NEURON", "HEALTH", "MEMORY", "LOAD", "DECODE", "MODELS"], neuron_rows),
            _table(["MODEL", "LOADED ON", "LOADABLE ON", "MEMORY", "ALIASES"], model_rows),
            f"eviction: {eviction}; counters: {counters}",
        ]
    )


LOCKED_PAGE = (
    "<!doctype html><title>cortex</title><h1>cortex gateway</h1>"
    "<p>OpenAI and Anthropic compatible API under <code>/v1</code>. The fleet's status needs an API key "
    "(<code>x-api-key</code> or <code>Authorization: Bearer</code>).</p>"
)
"""``GET /`` for a caller without a valid key when the gateway has keys: nothing about the fleet."""


def status_page(status: FleetStatus) -> str:
    """The gateway's ``GET /`` page: neurons (health, models with a load's progress, memory, load) and
    where each model is; it reloads itself every 5 s, so a cold load can be watched."""

    def gib(value: int) -> str:
        return f"{value / 2**30:.1f}"

    def models_of(n: NeuronStatus) -> str:
        return ", ".join(_model_state(m.id, m.status, m.load_progress) for m in n.models) or "-"

    rows = "".join(
        f"<tr><td>{html.escape(n.name)}</td><td>{'healthy' if n.healthy else 'DOWN'}</td>"
        f"<td>{html.escape(models_of(n))}</td>"
        f"<td>{gib(n.memory_used_bytes)} / {gib(n.memory_budget_bytes)} GiB</td>"
        f"<td>{n.in_flight} running, {n.queued} queued</td></tr>"
        for n in status.neurons
    )
    models = "".join(
        f"<li>{html.escape(m.id)}: loaded on {html.escape(', '.join(m.loaded_on) or 'none')}</li>"
        for m in status.models
    )
    return (
        '<!doctype html><meta http-equiv="refresh" content="5"><title>cortex</title><h1>cortex gateway</h1>'
        "<p>OpenAI and Anthropic compatible API under <code>/v1</code>.</p>"
        "<table border=1><tr><th>neuron</th><th>health</th><th>models</th><th>memory</th><th>load</th></tr>"
        f"{rows}</table><h2>models</h2><ul>{models}</ul>"
    )
