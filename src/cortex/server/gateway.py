"""The gateway: one OpenAI + Anthropic endpoint over a fleet of neurons (``python -m cortex.server.gateway``).

Routes: ``POST /v1/chat/completions``, ``POST /v1/completions`` (OpenAI), ``POST /v1/messages``,
``POST /v1/messages/count_tokens`` (Anthropic; ``?beta=true`` accepted), ``GET /v1/models`` (Anthropic
shape for Anthropic callers), ``GET /health``, ``GET|HEAD /`` (status page), ``GET /status`` (JSON),
``GET /explain?model=M`` (where the next request for M would go, and why), and the OpenAI Responses
API with its durable store (:mod:`cortex.server.responses_api`): ``POST /v1/responses``,
``GET`` / ``DELETE /v1/responses/{id}``, ``GET /v1/responses/{id}/input_items``.
Metrics are served by a separate app (:func:`create_metrics_app`) on their own listener.
The request path itself is :mod:`cortex.server.relay`: a relay of bytes in the caller's dialect.

Importing this module does not import torch.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import AsyncIterator
from typing import Any, Literal

from litestar import Litestar, Request, Response, delete, get, head, post
from litestar.openapi import OpenAPIConfig
from litestar.params import FromPath, FromQuery

from cortex._version import __version__
from cortex.fleet import Fleet, UpstreamError
from cortex.server.auth import auth_hook, is_authorized
from cortex.server.claude_code import claude_code_command
from cortex.server.config import CortexConfig, load_config
from cortex.server.edge import body_schema, dialect_of, error_response, error_type_name
from cortex.server.fleet_config import build_fleet
from cortex.server.metrics import (
    CONTENT_TYPE,
    UNKNOWN_MODEL,
    FunctionCollector,
    RequestMeter,
    ServerMetrics,
    fleet_gauges,
)
from cortex.server.relay import BODIES, Relay, upstream_error_response
from cortex.server.responses_api import ResponsesGateway
from cortex.server.responses_store import ResponsesStore
from cortex.server.status import LOCKED_PAGE, status_page

PUBLIC_PATHS = frozenset({"/", "/health"})
log = logging.getLogger("cortex.gateway")


def _relay(request: Request[Any, Any, Any]) -> Relay:
    relay: Relay = request.app.state.relay
    return relay


def _handle_error(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    dialect = dialect_of(request)
    meter = request.scope.get("state", {}).get("meter")
    if isinstance(meter, RequestMeter):
        meter.failed(error_type_name(error))
    else:
        _relay(request).metrics.errors.labels(UNKNOWN_MODEL, "", error_type_name(error)).inc()
    if isinstance(error, UpstreamError):
        return upstream_error_response(dialect, error)
    response = error_response(dialect, error)
    if dialect == "anthropic" and response.status_code == 503:
        response.status_code = 529  # Anthropic's "overloaded"
    return response


@post("/v1/chat/completions", status_code=200, dependencies=body_schema(BODIES["chat_completions"]))
async def chat_completions(request: Request[Any, Any, Any]) -> Response[Any]:
    """OpenAI Chat Completions (an SSE stream with `stream: true`), relayed to a neuron that has the
    model, which is cold-loaded first where no neuron has it."""
    return await _relay(request).relay(request, "/v1/chat/completions", "chat_completions")


@post("/v1/completions", status_code=200, dependencies=body_schema(BODIES["completions"]))
async def completions(request: Request[Any, Any, Any]) -> Response[Any]:
    """OpenAI Completions (a text or token-id prompt), relayed as chat completions are."""
    return await _relay(request).relay(request, "/v1/completions", "completions")


@post("/v1/messages", status_code=200, dependencies=body_schema(BODIES["messages"]))
async def messages(request: Request[Any, Any, Any]) -> Response[Any]:
    """Anthropic Messages (an SSE stream with `stream: true`), relayed as chat completions are; translated
    for an `openai`-kind upstream."""
    return await _relay(request).relay(request, "/v1/messages", "messages")


@post("/v1/messages/count_tokens", status_code=200, dependencies=body_schema(BODIES["count_tokens"]))
async def count_tokens(request: Request[Any, Any, Any]) -> Response[Any]:
    """Anthropic token counting: the prompt's tokens under the model's own tokenizer and chat template."""
    return await _relay(request).count_tokens(request)


def _responses(request: Request[Any, Any, Any]) -> ResponsesGateway:
    responses: ResponsesGateway = request.app.state.responses
    return responses


@post("/v1/responses", status_code=200, dependencies=body_schema(BODIES["responses"]))
async def create_response(request: Request[Any, Any, Any]) -> Response[Any]:
    """OpenAI Responses: `previous_response_id` continues a stored conversation, and the response is
    stored (`store`, default true) before the caller sees it end."""
    return await _responses(request).create(request)


@get("/v1/responses/{response_id:str}")
async def retrieve_response(request: Request[Any, Any, Any], response_id: FromPath[str]) -> dict[str, Any]:
    """A stored response, by id."""
    return await _responses(request).retrieve(response_id)


@get("/v1/responses/{response_id:str}/input_items")
async def response_input_items(
    request: Request[Any, Any, Any],
    response_id: FromPath[str],
    after: FromQuery[str | None] = None,
    limit: FromQuery[int] = 20,
    order: FromQuery[Literal["asc", "desc"]] = "desc",
) -> dict[str, Any]:
    """A stored response's input items, a page at a time (`after`, `limit`, `order`)."""
    return await _responses(request).input_items(response_id, after=after, limit=limit, order=order)


@delete("/v1/responses/{response_id:str}", status_code=200)
async def delete_response(request: Request[Any, Any, Any], response_id: FromPath[str]) -> dict[str, Any]:
    """Deletes a stored response."""
    return await _responses(request).delete(response_id)


@get("/v1/models")
async def v1_models(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """The catalogue (every model the fleet can serve, loaded or not), in the OpenAI form, or in the
    Anthropic form for a caller that sends `anthropic-version` or `x-api-key`."""
    relay = _relay(request)
    relay.metrics.requests.labels(UNKNOWN_MODEL, "", "models").inc()
    if dialect_of(request) == "anthropic":
        return relay.fleet.anthropic_models()
    return relay.fleet.openai_models()


@get("/health")
async def health(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """For load balancers, without a key: `ok`, or `degraded` while no neuron is healthy."""
    status = _relay(request).fleet.status()
    return {
        "status": "ok" if status.num_healthy or not status.neurons else "degraded",
        "neurons": len(status.neurons),
        "healthy_neurons": status.num_healthy,
    }


@get("/status")
async def status(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """The fleet: each neuron's health, memory and models (a load in progress with its fraction done), the
    catalogue, recent routing decisions and counters."""
    return _relay(request).fleet.status().as_dict()


@get("/explain")
async def explain(request: Request[Any, Any, Any], model: FromQuery[str]) -> dict[str, Any]:
    """Where the next request for `model` would go, and why; loads and counts nothing."""
    return _relay(request).fleet.explain(model)


@get("/", media_type="text/html")
async def index(request: Request[Any, Any, Any]) -> str:
    """The status page: public (a probe must reach it), but the fleet's status is shown only to a caller
    with a key."""
    if not is_authorized(request, request.app.state.api_keys):
        return LOCKED_PAGE
    return status_page(_relay(request).fleet.status())


@head("/")
async def probe() -> None:
    """A load balancer's probe of the status page."""


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
    metrics.registry.register(FunctionCollector(lambda: fleet_gauges(the_fleet.status())))

    store = ResponsesStore(
        config.responses_store_path(),
        retention_s=config.responses.retention_s or None,
        max_bytes=config.responses.max_bytes or None,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        try:
            async with the_fleet:  # the first poll is done: the catalogue is known
                line = claude_code_command(
                    the_fleet.catalogue(),
                    base_url=f"http://{config.gateway.listen}",
                    needs_key=bool(config.auth.api_keys),
                )
                if line is not None:
                    log.info("Claude Code with the model's real context window (docs/servers.md): %s", line)
                yield
        finally:
            await store.close()

    app = Litestar(
        [
            chat_completions,
            completions,
            messages,
            count_tokens,
            create_response,
            retrieve_response,
            response_input_items,
            delete_response,
            v1_models,
            health,
            status,
            explain,
            index,
            probe,
        ],
        exception_handlers={Exception: _handle_error},
        before_request=auth_hook(config.auth.api_keys, public_paths=PUBLIC_PATHS),
        lifespan=[lifespan],
        openapi_config=OpenAPIConfig(
            title="cortex gateway",
            version=__version__,
            description="The one OpenAI + Anthropic endpoint over the fleet's neurons (docs/servers.md).",
            use_handler_docstrings=True,
        ),
        request_max_body_size=config.gateway.max_body_bytes,
    )
    relay = Relay(the_fleet, metrics, config.gateway.keepalive_s)
    app.state.relay = relay
    app.state.responses = ResponsesGateway(relay, store)
    app.state.metrics = metrics
    app.state.fleet = the_fleet
    app.state.api_keys = config.auth.api_keys
    return app


@get("/metrics", media_type=CONTENT_TYPE)
async def metrics_route(request: Request[Any, Any, Any]) -> Response[bytes]:
    metrics: ServerMetrics = request.app.state.metrics
    return Response(metrics.render(), media_type=CONTENT_TYPE)


def create_metrics_app(metrics: ServerMetrics) -> Litestar:
    """The metrics listener: ``GET /metrics`` in Prometheus text format."""
    app = Litestar([metrics_route])
    app.state.metrics = metrics
    return app


if __name__ == "__main__":
    from cortex.cli import main

    sys.exit(main(["serve", *sys.argv[1:]]))
