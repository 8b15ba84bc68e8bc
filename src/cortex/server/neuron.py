"""The neuron: a thin Litestar app serving one host's engines (``python -m cortex.server.neuron``).

Routes (docs/servers.md and docs/fleet.md "Neuron contract" describe the bodies):
``GET /health``, ``GET /discovery``, ``GET /models``, ``POST /models/load``, ``POST /models/unload``,
``GET /v1/models``, ``POST /v1/chat/completions``, ``POST /v1/completions``, ``POST /v1/messages``,
``POST /v1/messages/count_tokens``, ``POST /v1/responses`` (stateless: the gateway keeps conversations,
:mod:`cortex.server.wire.responses`), ``GET /metrics``.

Each inference request holds its model's admission slot from before the response starts (so a
refusal is a real 429/503) until the last byte. Its prompt is rendered and tokenised once and queued on
the engine before the response starts, so a prompt that does not fit is a real 400 too. Streams send
SSE keep-alives while the prompt prefills; a client disconnect closes the engine stream, which aborts
the request. Shutdown drains in-flight requests for at most ``drain_timeout_s``, then closes the
engines.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

from litestar import Litestar, Request, Response, get, post
from litestar.openapi import OpenAPIConfig

from cortex._version import __version__
from cortex.engine.text.chat import render_chat_prompt
from cortex.server import sse
from cortex.server.auth import auth_hook
from cortex.server.config import CortexConfig, NeuronConfig, load_config
from cortex.server.devices import host_facts
from cortex.server.edge import body_schema, dialect_of, error_type_name, exception_handler, read_body
from cortex.server.errors import ModelNotFoundError
from cortex.server.metrics import CONTENT_TYPE, NeuronMetrics
from cortex.server.model_store import validate_model_id
from cortex.server.neuron_state import NeuronState
from cortex.server.served_engine import EngineLoader
from cortex.server.sse import StreamDialect
from cortex.server.wire import anthropic, openai, responses
from cortex.server.wire.bodies import (
    ChatCompletionBody,
    CompletionBody,
    CountTokensBody,
    MessagesBody,
    ModelLoadBody,
    ModelUnloadBody,
    ResponsesBody,
)
from cortex.server.wire.request import ChatRequest


def _state(request: Request[Any, Any, Any]) -> NeuronState:
    state: NeuronState = request.app.state.neuron
    return state


def _label(request: Request[Any, Any, Any], model: str) -> None:
    """Remember the request's model for the error metrics (:func:`_handle_error`)."""
    request.scope.setdefault("state", {})["model"] = model


async def _run_chat(
    request: Request[Any, Any, Any],
    parsed: ChatRequest,
    dialect: StreamDialect,
    endpoint: str,
    *,
    echo: dict[str, Any] | None = None,
) -> Response[Any]:
    """One chat turn in ``dialect``; ``echo`` is the Responses body a Response echoes."""
    state = _state(request)
    stack = contextlib.AsyncExitStack()
    try:
        gen = await stack.enter_async_context(state.generation(parsed.model, endpoint))
        choices = await gen.start_chat(parsed)  # a prompt that does not fit is a 400 here
        model = parsed.model

        def on_error(error: BaseException) -> None:
            state.record_error(model, error_type_name(error))

        if not parsed.stream:
            if dialect == "anthropic":
                return Response(await anthropic.message(gen, choices))
            if echo is not None:
                return Response(await responses.response(gen, parsed, choices, echo))
            return Response(await openai.chat_completion(gen, parsed, choices))
        if dialect == "anthropic":
            events = anthropic.message_events(gen, choices)
        elif echo is not None:
            events = responses.response_events(gen, parsed, choices, echo, on_error=on_error)
        else:
            events = openai.chat_completion_chunks(gen, parsed, choices)
        return sse.event_stream(
            dialect,
            events,
            owner=stack.pop_all(),  # the stream's body holds the slot from here to its last byte
            keepalive_s=state.config.keepalive_s,
            on_error=on_error,
        )
    finally:
        await stack.aclose()


def _handle_error(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    state = _state(request)
    state.record_error(state.known_label(request.scope.get("state", {}).get("model")), error_type_name(error))
    return exception_handler(request, error)


@get("/health")
async def health(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Liveness and load, without a key: devices, memory budget and use, each model's status (a load in
    progress with its fraction done), requests running and queued, token rates."""
    return _state(request).health()


@get("/discovery")
async def discovery(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """The host (its devices) and every model folder this neuron can load: path, architecture,
    estimated memory and context length."""
    state = _state(request)
    return {
        "host": {**host_facts(state.device), "name": state.name},
        "models": [m.describe() for m in state.store.discover()],
    }


@get("/models")
async def models(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """The models loaded or loading on this neuron."""
    return {"models": [h.describe() for h in _state(request).store.hosted()]}


@post("/models/load", status_code=200, dependencies=body_schema(ModelLoadBody))
async def load(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Loads a model (single-flight: concurrent loads of one model share one), split over
    ``tensor_parallel`` devices (``devices``: which GPUs) when asked; 400 for a split its shapes do not
    allow, 507 when it would exceed the memory budget or too few devices have room."""
    body = await read_body(request, ModelLoadBody)
    model_id = validate_model_id(body["model"])
    devices = body.get("devices")
    tensor_parallel = body.get("tensor_parallel") or (len(devices) if devices else None)
    hosted = await _state(request).store.load(model_id, tensor_parallel=tensor_parallel, devices=devices)
    return {
        "id": model_id,
        "status": "loaded",
        "tensor_parallel": hosted.plan.tensor_parallel,
        "devices": list(hosted.plan.devices),
    }


@post("/models/unload", status_code=200, dependencies=body_schema(ModelUnloadBody))
async def unload(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Unloads a model; 409 while requests run or wait on it, unless `force` aborts them."""
    state = _state(request)
    body = await read_body(request, ModelUnloadBody)
    model_id = validate_model_id(body["model"])
    force = bool(body.get("force", False))
    if not await state.store.unload(model_id, force=force):
        raise ModelNotFoundError(f"model {model_id!r} is not loaded on this neuron")
    state.metrics.model_unloads.labels(model_id, state.name, "forced" if force else "requested").inc()
    return {"id": model_id, "status": "unloaded"}


@get("/v1/models")
async def v1_models(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """The models this neuron can serve, in the OpenAI form, or in the Anthropic form for a caller that
    sends `anthropic-version` or `x-api-key`."""
    state = _state(request)
    windows = {m.id: m.facts.max_model_len for m in state.store.discover()}
    windows.update({h.id: h.model.facts.max_model_len for h in state.store.hosted() if h.id not in windows})
    if dialect_of(request) == "anthropic":
        data = [
            {
                "type": "model",
                "id": i,
                "display_name": i,
                "created_at": "1970-01-01T00:00:00Z",
                "lifecycle": "active",
                "max_input_tokens": n,
                "max_tokens": n,
            }
            for i, n in windows.items()
        ]
        ids = list(windows)
        return {
            "data": data,
            "has_more": False,
            "first_id": ids[0] if ids else None,
            "last_id": ids[-1] if ids else None,
        }
    return {
        "object": "list",
        "data": [
            {"id": i, "object": "model", "created": 0, "owned_by": state.name, "max_model_len": n}
            for i, n in windows.items()
        ],
    }


@post("/v1/chat/completions", status_code=200, dependencies=body_schema(ChatCompletionBody))
async def chat_completions(request: Request[Any, Any, Any]) -> Response[Any]:
    """OpenAI Chat Completions (an SSE stream with `stream: true`), loading the model first when
    `auto_load` is on."""
    parsed = openai.parse_chat_request(await read_body(request, ChatCompletionBody))
    _label(request, parsed.model)
    return await _run_chat(request, parsed, "openai", "chat_completions")


@post("/v1/messages", status_code=200, dependencies=body_schema(MessagesBody))
async def messages(request: Request[Any, Any, Any]) -> Response[Any]:
    """Anthropic Messages (an SSE stream with `stream: true`), loading the model first when `auto_load` is
    on."""
    parsed = anthropic.parse_messages_request(await read_body(request, MessagesBody))
    _label(request, parsed.model)
    return await _run_chat(request, parsed, "anthropic", "messages")


@post("/v1/responses", status_code=200, dependencies=body_schema(ResponsesBody))
async def create_response(request: Request[Any, Any, Any]) -> Response[Any]:
    """OpenAI Responses, stateless: `previous_response_id` is the gateway's to expand."""
    parsed, echo = responses.parse_responses_request(await read_body(request, ResponsesBody))
    _label(request, parsed.model)
    return await _run_chat(request, parsed, "responses", "responses", echo=echo)


@post("/v1/messages/count_tokens", status_code=200, dependencies=body_schema(CountTokensBody))
async def count_tokens(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Anthropic token counting: the prompt's tokens under the model's own tokenizer and chat template."""
    state = _state(request)
    body = await read_body(request, CountTokensBody)
    model_id = body["model"]
    state.metrics.requests.labels(state.known_label(model_id), state.name, "count_tokens").inc()
    parsed = anthropic.parse_count_tokens_request(body)
    tokenizer = await asyncio.to_thread(state.tokenizer_for, model_id)  # may read it from the folder
    prompt_ids = await asyncio.to_thread(
        render_chat_prompt, tokenizer, parsed.messages, parsed.tools, **parsed.template_kwargs
    )
    return {"input_tokens": len(prompt_ids)}


@post("/v1/completions", status_code=200, dependencies=body_schema(CompletionBody))
async def completions(request: Request[Any, Any, Any]) -> Response[Any]:
    """OpenAI Completions: a text or token-id prompt, no chat template."""
    state = _state(request)
    parsed = openai.parse_completion_request(await read_body(request, CompletionBody))
    _label(request, parsed.model)
    stack = contextlib.AsyncExitStack()
    try:
        gen = await stack.enter_async_context(state.generation(parsed.model, "completions"))
        choices = await gen.start_completion(parsed)  # a prompt that does not fit is a 400 here
        if not parsed.stream:
            return Response(await openai.completion(gen, parsed, choices))
        model = parsed.model
        return sse.event_stream(
            "openai",
            openai.completion_chunks(gen, parsed, choices),
            owner=stack.pop_all(),
            keepalive_s=state.config.keepalive_s,
            on_error=lambda e: state.record_error(model, error_type_name(e)),
        )
    finally:
        await stack.aclose()


@get("/metrics", media_type=CONTENT_TYPE)
async def metrics_route(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Prometheus metrics of this neuron."""
    return Response(_state(request).metrics.render(), media_type=CONTENT_TYPE)


def create_app(
    config: NeuronConfig | CortexConfig | None = None,
    *,
    loader: EngineLoader | None = None,
    metrics: NeuronMetrics | None = None,
    probe_devices: Callable[[], list[dict[str, Any]]] | None = None,
) -> Litestar:
    """Build a neuron app. ``loader`` defaults to real cortex Engines on the configured device;
    ``probe_devices`` to the host's devices (``cortex.server.devices``)."""
    if config is None:
        config = load_config()
    neuron_config = config.neuron if isinstance(config, CortexConfig) else config
    state = NeuronState.create(neuron_config, loader=loader, metrics=metrics, probe_devices=probe_devices)

    @contextlib.asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        for model_id in neuron_config.preload:
            await state.store.load(model_id)
        try:
            yield
        finally:
            await state.store.drain(neuron_config.drain_timeout_s)

    app = Litestar(
        [
            health,
            discovery,
            models,
            load,
            unload,
            v1_models,
            chat_completions,
            messages,
            create_response,
            count_tokens,
            completions,
            metrics_route,
        ],
        exception_handlers={Exception: _handle_error},
        before_request=auth_hook(neuron_config.api_keys, public_paths={"/health"}),
        lifespan=[lifespan],
        openapi_config=OpenAPIConfig(
            title="cortex neuron",
            version=__version__,
            description="One host's models behind the neuron contract (docs/fleet.md, docs/servers.md).",
            use_handler_docstrings=True,
        ),
        request_max_body_size=neuron_config.max_body_bytes,
    )
    app.state.neuron = state
    return app


if __name__ == "__main__":
    from cortex.cli import main

    sys.exit(main(["neuron", *sys.argv[1:]]))
