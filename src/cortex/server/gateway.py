"""The gateway: one OpenAI + Anthropic endpoint over a fleet of neurons (``python -m cortex.server.gateway``).

Routes: ``POST /v1/chat/completions``, ``POST /v1/completions`` (OpenAI), ``POST /v1/messages``,
``POST /v1/messages/count_tokens`` (Anthropic; ``?beta=true`` accepted), ``GET /v1/models`` (Anthropic
shape for Anthropic callers), ``GET /health``, ``GET|HEAD /`` (status page), ``GET /status`` (JSON),
``GET /explain?model=M`` (where the next request for M would go, and why).
Metrics are served by a separate app (:func:`create_metrics_app`) on their own listener.

Neurons speak OpenAI ``/v1/chat/completions``; Anthropic requests are translated there and back. For
Anthropic streams the gateway asks the neuron for ``continuous_usage_stats``: the neuron's first chunk
(sent after the prompt is rendered, before the prefill) carries the exact prompt token count, which
goes into ``message_start``. ``max_tokens`` is clamped to what the model can still produce
(``clamp_max_tokens``), because Claude Code asks for 128000. While nothing arrives (a cold load, a long
prefill) the gateway sends SSE comments, and ``ping`` events once ``message_start`` is out.

Importing this module does not import torch.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import html
import json
import logging
import sys
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from litestar import Litestar, Request, Response, get, head, post
from litestar.params import FromQuery
from litestar.response import Stream

from cortex import translate
from cortex.errors import InvalidRequestError
from cortex.fleet import Fleet, FleetError, FleetPolicy, KeepAlive, ModelProfile, NeuronSpec, UpstreamError
from cortex.fleet import load_models_toml as load_profiles
from cortex.server import sse
from cortex.server.auth import auth_hook
from cortex.server.config import CortexConfig, load_config
from cortex.server.errors import ConfigError
from cortex.server.http_errors import Dialect, dialect_of, error_body, error_response, error_type_name
from cortex.server.metrics import CONTENT_TYPE, UNKNOWN_MODEL, FunctionCollector, MetricValues, ServerMetrics
from cortex.translate.anthropic_stream import AnthropicStreamBuilder

log = logging.getLogger("cortex.gateway")
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
PUBLIC_PATHS = frozenset({"/", "/health"})


def build_fleet(
    config: CortexConfig, *, default_profiles: Sequence[ModelProfile] = (), **fleet_kwargs: Any
) -> Fleet:
    """A Fleet from cortex.toml's ``[[neurons]]`` and ``[fleet]`` and models.toml's profiles
    (``default_profiles`` when there is no models.toml)."""
    source = str(config.source or "<config>")
    try:
        policy = FleetPolicy.from_dict(config.fleet)
    except FleetError as error:
        raise ConfigError(str(error), file=source, key="fleet") from None
    models_file = config.models_file()
    profiles = list(default_profiles)
    if models_file is not None:
        try:
            profiles = load_profiles(models_file)
        except FleetError as error:
            raise ConfigError(str(error), file=str(models_file)) from None
    neurons = [
        NeuronSpec(name=n.name, url=n.url, api_key=n.api_key, timeout_s=config.gateway.read_timeout_s)
        for n in config.neurons
    ]
    return Fleet(neurons, profiles, policy, **fleet_kwargs)


def _affinity_key(request: Request[Any, Any, Any], body: dict[str, Any]) -> str:
    """Keep a conversation on one neuron (prefix-cache reuse): the client's session id, else its user,
    else a hash of the conversation's start."""
    session = request.headers.get("x-claude-code-session-id")
    if session:
        return f"session:{session}"
    metadata = body.get("metadata")
    user = body.get("user") or (metadata.get("user_id") if isinstance(metadata, dict) else None)
    if isinstance(user, str) and user:
        return f"user:{user}"
    start = json.dumps([body.get("system"), (body.get("messages") or [None])[0]], sort_keys=True, default=str)
    return "prefix:" + hashlib.sha256(start.encode()).hexdigest()[:16]


async def _json_body(request: Request[Any, Any, Any]) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InvalidRequestError(f"the request body is not valid JSON: {error}") from None
    if not isinstance(body, dict):
        raise InvalidRequestError("the request body must be a JSON object")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise InvalidRequestError("model is required and must be a string", param="model")
    return body


def _upstream_error_response(dialect: Dialect, error: UpstreamError) -> Response[Any]:
    """A neuron's 4xx/5xx (OpenAI envelope, or Anthropic for /v1/messages*) in the caller's dialect."""
    body = error.body
    is_anthropic = isinstance(body, dict) and body.get("type") == "error"
    status = error.status
    if dialect == "anthropic" and not is_anthropic:
        status, body = translate.openai_error_to_anthropic(status, body)
    elif dialect == "openai" and is_anthropic:
        status, body = translate.anthropic_error_to_openai(status, body)
    return Response(body, status_code=status, media_type="application/json")


def _status_page(status: dict[str, Any]) -> str:
    def models_of(neuron: dict[str, Any]) -> str:
        return ", ".join(f"{m['id']} ({m['status']})" for m in neuron["models"]) or "-"

    def gib(value: int | None) -> str:
        return f"{(value or 0) / 2**30:.1f}"

    rows = "".join(
        f"<tr><td>{html.escape(n['name'])}</td><td>{'healthy' if n['healthy'] else 'DOWN'}</td>"
        f"<td>{html.escape(models_of(n))}</td>"
        f"<td>{gib(n['memory_used_bytes'])} / {gib(n['memory_budget_bytes'])} GiB</td>"
        f"<td>{n['in_flight']} running, {n['queued']} queued</td></tr>"
        for n in status["neurons"]
    )
    models = "".join(
        f"<li>{html.escape(m['id'])}: loaded on {html.escape(', '.join(m['loaded_on']) or 'none')}</li>"
        for m in status["models"]
    )
    return (
        "<!doctype html><title>cortex</title><h1>cortex gateway</h1>"
        "<p>OpenAI and Anthropic compatible API under <code>/v1</code>.</p>"
        "<table border=1><tr><th>neuron</th><th>health</th><th>models</th><th>memory</th><th>load</th></tr>"
        f"{rows}</table><h2>models</h2><ul>{models}</ul>"
    )


def create_app(
    config: CortexConfig | None = None,
    *,
    fleet: Fleet | None = None,
    metrics: ServerMetrics | None = None,
) -> Litestar:
    """Build the gateway app. ``fleet`` defaults to one built from ``config``; the app's lifespan
    starts and closes it. ``app.state.metrics`` holds the metrics the metrics listener serves."""
    config = config or load_config()
    the_fleet = fleet if fleet is not None else build_fleet(config)
    metrics = metrics or ServerMetrics()
    keepalive_s = config.gateway.keepalive_s

    def fleet_gauges() -> dict[str, MetricValues]:
        status = the_fleet.status()
        neurons = status["neurons"]
        loaded = [
            ({"model": m["id"], "neuron": n["name"]}, 1.0)
            for n in neurons
            for m in n["models"]
            if m["status"] == "loaded"
        ]
        return {
            "cortex_fleet_events": (
                "Fleet events (loads, evictions, failovers, ...) by type",
                "counter",
                [({"type": k}, float(v)) for k, v in sorted(status["counters"].items())],
            ),
            "cortex_neuron_healthy": (
                "1 when the neuron answers its health checks",
                "gauge",
                [({"neuron": n["name"]}, float(n["healthy"])) for n in neurons],
            ),
            "cortex_neuron_in_flight_requests": (
                "Requests running on the neuron",
                "gauge",
                [({"neuron": n["name"]}, float(n["in_flight"] or 0)) for n in neurons],
            ),
            "cortex_queue_depth": (
                "Requests queued on the neuron",
                "gauge",
                [({"neuron": n["name"]}, float(n["queued"] or 0)) for n in neurons],
            ),
            "cortex_neuron_memory_used_bytes": (
                "Estimated memory of the neuron's models",
                "gauge",
                [({"neuron": n["name"]}, float(n["memory_used_bytes"] or 0)) for n in neurons],
            ),
            "cortex_neuron_memory_budget_bytes": (
                "The neuron's memory budget",
                "gauge",
                [({"neuron": n["name"]}, float(n["memory_budget_bytes"] or 0)) for n in neurons],
            ),
            "cortex_model_loaded": ("1 per model loaded on a neuron", "gauge", loaded),
        }

    metrics.registry.register(FunctionCollector(fleet_gauges))

    def model_label(model: str) -> str:
        try:
            return the_fleet.resolve(model)
        except FleetError:
            return UNKNOWN_MODEL

    def handle_error(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
        dialect = dialect_of(request)
        label = request.scope.get("state", {}).get("model", UNKNOWN_MODEL)
        metrics.errors.labels(label, "", error_type_name(error)).inc()
        if isinstance(error, UpstreamError):
            return _upstream_error_response(dialect, error)
        response = error_response(dialect, error)
        if dialect == "anthropic" and response.status_code == 503:
            response.status_code = 529  # Anthropic's "overloaded"
        return response

    async def start(request: Request[Any, Any, Any], endpoint: str) -> tuple[dict[str, Any], str]:
        body = await _json_body(request)
        label = model_label(body["model"])
        request.scope.setdefault("state", {})["model"] = label
        metrics.requests.labels(label, "", endpoint).inc()
        return body, label

    def observe(
        label: str, endpoint: str, started: float, usage: dict[str, Any] | None, first_token_at: float | None
    ) -> None:
        end = time.monotonic()
        metrics.request_duration.labels(label, "", endpoint).observe(end - started)
        metrics.observe_usage(label, "", usage)
        metrics.observe_timing(
            label,
            "",
            ttft_s=None if first_token_at is None else first_token_at - started,
            duration_s=end - started,
            num_tokens=(usage or {}).get("completion_tokens") or 0,
        )

    async def openai_passthrough(request: Request[Any, Any, Any], path: str, endpoint: str) -> Response[Any]:
        body, label = await start(request, endpoint)
        started = time.monotonic()
        affinity = _affinity_key(request, body)
        if not body.get("stream"):
            reply = await the_fleet.post(body["model"], path, body, affinity_key=affinity)
            observe(
                label,
                endpoint,
                started,
                reply.json.get("usage") if isinstance(reply.json, dict) else None,
                None,
            )
            return Response(reply.json, status_code=reply.status, media_type="application/json")
        # Usage is always asked of the neuron (for the metrics); the caller gets it only if it asked.
        stream_options = body.get("stream_options")
        wants_usage = isinstance(stream_options, dict) and stream_options.get("include_usage") is True
        upstream_body = {**body, "stream_options": {**(stream_options or {}), "include_usage": True}}
        items = the_fleet.stream(
            body["model"], path, upstream_body, affinity_key=affinity, keepalive_s=keepalive_s
        )
        source = await _early_start(items, keepalive_s)

        async def events() -> AsyncIterator[bytes]:
            usage: dict[str, Any] | None = None
            first_token_at: float | None = None
            metrics.in_flight.labels(label, "").inc()
            try:
                async for item in sse.with_keepalive(source, keepalive_s):
                    if isinstance(item, sse.KeepAlive | KeepAlive):
                        yield sse.KEEPALIVE_COMMENT
                        continue
                    if first_token_at is None and _has_output(item):
                        first_token_at = time.monotonic()
                    usage = item.get("usage") or usage
                    if wants_usage or item.get("choices"):
                        yield sse.openai_event(item if wants_usage else _without_usage(item))
                yield sse.OPENAI_DONE
            except FleetError as error:
                metrics.errors.labels(label, "", "stream_error").inc()
                yield sse.openai_event(error_body("openai", error.http_status, str(error)))
            finally:
                metrics.in_flight.labels(label, "").dec()
                observe(label, endpoint, started, usage, first_token_at)

        return Stream(events(), media_type="text/event-stream", headers=SSE_HEADERS)

    @post("/v1/chat/completions", status_code=200)
    async def chat_completions(request: Request[Any, Any, Any]) -> Response[Any]:
        return await openai_passthrough(request, "/v1/chat/completions", "chat_completions")

    @post("/v1/completions", status_code=200)
    async def completions(request: Request[Any, Any, Any]) -> Response[Any]:
        return await openai_passthrough(request, "/v1/completions", "completions")

    @post("/v1/messages", status_code=200)
    async def messages(request: Request[Any, Any, Any]) -> Response[Any]:
        body, label = await start(request, "messages")
        started = time.monotonic()
        requested = body["model"]
        openai_body = translate.anthropic_to_openai_request(body)
        openai_body["clamp_max_tokens"] = True
        affinity = _affinity_key(request, body)
        if not body.get("stream"):
            openai_body.pop("stream", None)
            openai_body.pop("stream_options", None)
            reply = await the_fleet.post(
                requested, "/v1/chat/completions", openai_body, affinity_key=affinity
            )
            if reply.status != 200:
                raise UpstreamError(reply.neuron, reply.status, reply.json)
            observe(label, "messages", started, reply.json.get("usage"), None)
            message = translate.openai_to_anthropic_response(reply.json)
            message["model"] = requested
            return Response(message, media_type="application/json")
        openai_body["stream"] = True
        openai_body["stream_options"] = {"include_usage": True, "continuous_usage_stats": True}
        items = the_fleet.stream(
            requested, "/v1/chat/completions", openai_body, affinity_key=affinity, keepalive_s=keepalive_s
        )
        source = await _early_start(items, keepalive_s)

        async def events() -> AsyncIterator[bytes]:
            builder: AnthropicStreamBuilder | None = None
            started_message = False
            usage: dict[str, Any] | None = None
            first_token_at: float | None = None
            metrics.in_flight.labels(label, "").inc()
            try:
                async for item in sse.with_keepalive(source, keepalive_s):
                    if isinstance(item, sse.KeepAlive | KeepAlive):
                        yield sse.ANTHROPIC_PING if started_message else sse.KEEPALIVE_COMMENT
                        continue
                    usage = item.get("usage") or usage
                    if builder is None:
                        prompt_tokens = (usage or {}).get("prompt_tokens")
                        builder = AnthropicStreamBuilder(
                            model=requested, message_id=None, input_tokens=prompt_tokens
                        )
                    if first_token_at is None and _has_output(item):
                        first_token_at = time.monotonic()
                    for event in builder.feed(item):
                        started_message = True
                        yield sse.anthropic_event(event)
                    if builder.done:
                        break
                if builder is None:  # the upstream ended without a chunk: still a complete message
                    builder = AnthropicStreamBuilder(model=requested, message_id=None, input_tokens=None)
                for event in builder.finish():
                    yield sse.anthropic_event(event)
            except (FleetError, InvalidRequestError) as error:
                metrics.errors.labels(label, "", "stream_error").inc()
                status = getattr(error, "http_status", 400)
                yield sse.anthropic_event(error_body("anthropic", status, str(error)))
            finally:
                metrics.in_flight.labels(label, "").dec()
                observe(label, "messages", started, usage, first_token_at)

        return Stream(events(), media_type="text/event-stream", headers=SSE_HEADERS)

    @post("/v1/messages/count_tokens", status_code=200)
    async def count_tokens(request: Request[Any, Any, Any]) -> Response[Any]:
        body, _ = await start(request, "count_tokens")
        reply = await the_fleet.post(
            body["model"], "/v1/messages/count_tokens", body, affinity_key=_affinity_key(request, body)
        )
        if reply.status != 200:
            raise UpstreamError(reply.neuron, reply.status, reply.json)
        return Response(reply.json, media_type="application/json")

    @get("/v1/models")
    async def v1_models(request: Request[Any, Any, Any]) -> dict[str, Any]:
        metrics.requests.labels(UNKNOWN_MODEL, "", "models").inc()
        if dialect_of(request) == "anthropic":
            return the_fleet.anthropic_models()
        return the_fleet.openai_models()

    @get("/health")
    async def health() -> dict[str, Any]:
        neurons = the_fleet.status()["neurons"]
        healthy = sum(1 for n in neurons if n["healthy"])
        return {
            "status": "ok" if healthy or not neurons else "degraded",
            "neurons": len(neurons),
            "healthy_neurons": healthy,
        }

    @get("/status")
    async def status() -> dict[str, Any]:
        return the_fleet.status()

    @get("/explain")
    async def explain(model: FromQuery[str]) -> dict[str, Any]:
        return the_fleet.explain(model)

    @get("/", media_type="text/html")
    async def index() -> str:
        return _status_page(the_fleet.status())

    @head("/")
    async def probe() -> None:
        return None

    @contextlib.asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        async with the_fleet:
            yield

    app = Litestar(
        [
            chat_completions,
            completions,
            messages,
            count_tokens,
            v1_models,
            health,
            status,
            explain,
            index,
            probe,
        ],
        exception_handlers={Exception: handle_error},
        before_request=auth_hook(config.auth.api_keys, public_paths=PUBLIC_PATHS),
        lifespan=[lifespan],
        request_max_body_size=config.gateway.max_body_bytes,
    )
    app.state.metrics = metrics
    app.state.fleet = the_fleet
    return app


async def _first_item(items: AsyncIterator[Any]) -> Any:
    async for item in items:
        if not isinstance(item, KeepAlive):
            return item
    return None


async def _early_start(items: AsyncIterator[Any], wait_s: float) -> AsyncIterator[Any]:
    """Wait up to ``wait_s`` for the stream's first data item, so that routing failures and neuron 4xx
    still become a proper error response; when it takes longer (a cold load) the response starts and
    the caller gets keep-alives, and a later failure becomes an error event in the stream."""
    first = asyncio.ensure_future(_first_item(items))
    await asyncio.wait({first}, timeout=wait_s)
    if first.done():
        first.result()  # raise now, before the response starts
    return _continue(first, items)


async def _continue(first: asyncio.Future[Any], rest: AsyncIterator[Any]) -> AsyncIterator[Any]:
    try:
        item = await first
        if item is not None:
            yield item
        async for item in rest:
            yield item
    finally:
        first.cancel()
        await sse.aclose_quietly(rest)


def _without_usage(chunk: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in chunk.items() if key != "usage"}


def _has_output(chunk: dict[str, Any]) -> bool:
    return any(
        (choice.get("delta") or {}).get(key) or choice.get("text")
        for choice in chunk.get("choices") or ()
        for key in ("content", "reasoning_content", "tool_calls")
    )


def create_metrics_app(metrics: ServerMetrics) -> Litestar:
    """The metrics listener: ``GET /metrics`` in Prometheus text format."""

    @get("/metrics", media_type=CONTENT_TYPE)
    async def metrics_route() -> Response[bytes]:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    return Litestar([metrics_route])


async def run_gateway(config: CortexConfig) -> None:
    """Serve the gateway and its metrics listener with uvicorn until interrupted."""
    import uvicorn

    app = create_app(config)
    listen = config.gateway.listen
    servers = [uvicorn.Server(uvicorn.Config(app, host=listen.host, port=listen.port, log_level="info"))]
    if config.gateway.metrics_listen is not None:
        metrics = config.gateway.metrics_listen
        servers.append(
            uvicorn.Server(
                uvicorn.Config(
                    create_metrics_app(app.state.metrics),
                    host=metrics.host,
                    port=metrics.port,
                    log_config=None,  # uvicorn's logging is process-wide: the API server's Config sets it
                    log_level=None,
                )
            )
        )
    log.info("gateway on http://%s, metrics on %s", listen, config.gateway.metrics_listen or "(off)")
    await asyncio.gather(*(server.serve() for server in servers))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cortex.server.gateway``: the same as ``cortex serve`` with neurons configured."""
    from cortex.cli import main as cli_main

    return cli_main(["serve", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
