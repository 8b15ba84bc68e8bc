"""The neuron: a thin Litestar app serving one host's engines (``python -m cortex.server.neuron``).

Routes (docs/servers.md and docs/fleet.md "Neuron contract" describe the bodies):
``GET /health``, ``GET /discovery``, ``GET /models``, ``POST /models/load``, ``POST /models/unload``,
``GET /v1/models``, ``POST /v1/chat/completions``, ``POST /v1/completions``, ``POST /v1/messages``,
``POST /v1/messages/count_tokens``, ``GET /metrics``.

Each inference request holds its model's admission slot from before the response starts (so a
refusal is a real 429/503) until the last byte. Streams send SSE keep-alives while the prompt
prefills; a client disconnect cancels the engine stream, which aborts the request. Shutdown drains
in-flight requests for at most ``drain_timeout_s``, then closes the engines.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from litestar import Litestar, Request, Response, get, post
from litestar.response import Stream
from pydantic import ValidationError

from cortex import translate
from cortex.engine.text.chat import render_chat_prompt
from cortex.errors import InvalidRequestError
from cortex.server import sse
from cortex.server.auth import auth_hook
from cortex.server.config import CortexConfig, NeuronConfig, load_config
from cortex.server.devices import devices_for, host_facts, resolve_device
from cortex.server.engine_loader import TorchEngineLoader
from cortex.server.errors import ConfigError, ModelNotFoundError
from cortex.server.generation import Generation
from cortex.server.http_errors import Dialect, dialect_of, error_body, error_type_name, exception_handler
from cortex.server.metrics import CONTENT_TYPE, FunctionCollector, MetricValues, NeuronMetrics
from cortex.server.model_store import EngineLoader, HostedModel, ModelStore, validate_model_id
from cortex.server.openai_wire import (
    ChatRequest,
    clamp_params,
    parse_chat_request,
    parse_completion_request,
)

log = logging.getLogger("cortex.neuron")
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@dataclass(slots=True)
class NeuronState:
    config: NeuronConfig
    store: ModelStore
    metrics: NeuronMetrics
    device: str
    tokenizers: dict[Path, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.config.name

    def health(self) -> dict[str, Any]:
        hosted = self.store.hosted()
        described = [h.describe() for h in hosted]
        return {
            "status": "ok",
            "name": self.name,
            "devices": devices_for(self.device),
            "models": described,
            "in_flight": sum(h.admission.num_running for h in hosted),
            "queued": sum(h.admission.num_queued for h in hosted),
            "memory_budget_bytes": self.store.memory_budget_bytes,
            "memory_used_bytes": self.store.memory_used_bytes,
            "prefill_tokens_per_s": sum(m["prefill_tokens_per_s"] for m in described),
            "decode_tokens_per_s": sum(m["decode_tokens_per_s"] for m in described),
        }

    def tokenizer_for(self, model_id: str) -> Any:
        """The model's tokenizer: the loaded engine's, else read from its folder (cached)."""
        hosted = self.store.get(model_id)
        if hosted is not None and hosted.engine.tokenizer is not None:
            return hosted.engine.tokenizer
        path = self.store.find(model_id).path
        if path not in self.tokenizers:
            from cortex.engine.text.tokenizer import Tokenizer

            self.tokenizers[path] = Tokenizer.from_folder(path)
        if self.tokenizers[path] is None:
            raise InvalidRequestError(
                f"model {model_id!r} has no tokenizer; send token ids to /v1/completions"
            )
        return self.tokenizers[path]

    def gauges(self) -> dict[str, MetricValues]:
        labels = [({"model": h.id, "neuron": self.name}, h) for h in self.store.hosted()]
        devices = devices_for(self.device)
        return {
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
                [
                    ({"neuron": self.name, "device": str(d["index"])}, float(d["memory_used_bytes"]))
                    for d in devices
                ],
            ),
            "cortex_device_memory_total_bytes": (
                "Device memory in total",
                "gauge",
                [
                    ({"neuron": self.name, "device": str(d["index"])}, float(d["memory_total_bytes"]))
                    for d in devices
                ],
            ),
            "cortex_memory_budget_bytes": (
                "The neuron's model memory budget and its estimated use",
                "gauge",
                [
                    ({"neuron": self.name, "type": "budget"}, float(self.store.memory_budget_bytes)),
                    ({"neuron": self.name, "type": "used"}, float(self.store.memory_used_bytes)),
                ],
            ),
        }


async def _json_body(request: Request[Any, Any, Any]) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InvalidRequestError(f"the request body is not valid JSON: {error}") from None


def _model_field(body: Any) -> str:
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        raise InvalidRequestError("body must be a JSON object with a string 'model'", param="model")
    return str(body["model"])


def _stream_response(
    dialect: Dialect,
    chunks: AsyncIterator[dict[str, Any]],
    *,
    slot: AbstractAsyncContextManager[None],
    keepalive_s: float,
    on_error: Any,
) -> Stream:
    """Encode ``chunks`` (OpenAI chunk dicts, or Anthropic events) as SSE, with keep-alives; release
    ``slot`` (already entered) when the stream ends, however it ends."""

    async def body() -> AsyncIterator[bytes]:
        try:
            async for item in sse.with_keepalive(chunks, keepalive_s):
                if isinstance(item, sse.KeepAlive):
                    yield sse.ANTHROPIC_PING if dialect == "anthropic" else sse.KEEPALIVE_COMMENT
                elif dialect == "anthropic":
                    yield sse.anthropic_event(item)
                else:
                    yield sse.openai_event(item)
            if dialect == "openai":
                yield sse.OPENAI_DONE
        except Exception as error:  # after the 200: the error goes into the stream
            on_error(error)
            status = getattr(error, "http_status", 400 if isinstance(error, InvalidRequestError) else 500)
            envelope = error_body(dialect, status, str(error))
            yield sse.anthropic_event(envelope) if dialect == "anthropic" else sse.openai_event(envelope)
        finally:
            await slot.__aexit__(None, None, None)

    return Stream(body(), media_type="text/event-stream", headers=SSE_HEADERS)


def create_app(
    config: NeuronConfig | CortexConfig | None = None,
    *,
    loader: EngineLoader | None = None,
    metrics: NeuronMetrics | None = None,
) -> Litestar:
    """Build a neuron app. ``loader`` defaults to real cortex Engines on the configured device."""
    if config is None:
        config = load_config()
    neuron_config = config.neuron if isinstance(config, CortexConfig) else config
    device = resolve_device(neuron_config.device)
    if loader is None:
        loader = TorchEngineLoader(
            device=device,
            dtype=neuron_config.dtype,
            max_num_seqs=neuron_config.max_running,
            max_model_len=neuron_config.max_model_len,
            cache_memory_bytes=neuron_config.cache_memory_bytes,
        )
    metrics = metrics or NeuronMetrics()
    budget = neuron_config.memory_budget_bytes
    if budget is None:
        budget = sum(d["memory_total_bytes"] for d in devices_for(device))
    name = neuron_config.name

    def on_loaded(model_id: str, seconds: float) -> None:
        metrics.model_loads.labels(model_id, name).inc()
        metrics.model_load_duration.labels(model_id, name).observe(seconds)

    store = ModelStore(neuron_config, loader, memory_budget_bytes=budget, on_loaded=on_loaded)
    state = NeuronState(config=neuron_config, store=store, metrics=metrics, device=device)
    metrics.registry.register(FunctionCollector(state.gauges))

    async def admitted(model_id: str, endpoint: str) -> tuple[HostedModel, AbstractAsyncContextManager[None]]:
        hosted = await store.ensure(model_id)  # unknown ids raise here, before they could become labels
        metrics.requests.labels(model_id, name, endpoint).inc()
        slot = hosted.admission.slot()
        await slot.__aenter__()
        return hosted, slot

    async def run_chat(request: ChatRequest, dialect: Dialect, endpoint: str) -> Response[Any]:
        hosted, slot = await admitted(request.model, endpoint)
        started = time.monotonic()
        metrics.in_flight.labels(request.model, name).inc()
        streaming = False
        try:
            engine = hosted.engine
            prompt_ids = render_chat_prompt(
                engine.tokenizer, request.messages, request.tools, **request.template_kwargs
            )
            params = clamp_params(
                request.params,
                prompt_len=len(prompt_ids),
                max_model_len=engine.max_model_len,
                clamp=request.clamp_max_tokens,
            )
            request = dataclasses.replace(request, params=params)
            gen = Generation(engine, request.model, name, metrics, num_prompt_tokens=len(prompt_ids))
            if not request.stream:
                completion = await gen.chat(request)
                if dialect == "anthropic":
                    return Response(translate.openai_to_anthropic_response(completion))
                return Response(completion)
            chunks: AsyncIterator[dict[str, Any]] = gen.chat_chunks(request)
            if dialect == "anthropic":
                chunks = translate.aopenai_to_anthropic_stream(
                    chunks, model=request.model, input_tokens=len(prompt_ids)
                )
            streaming = True
            return _stream_response(
                dialect,
                _finally(chunks, lambda: _ended(request.model, endpoint, started)),
                slot=slot,
                keepalive_s=neuron_config.keepalive_s,
                on_error=lambda e: record_error(request.model, e),
            )
        finally:
            if not streaming:
                _ended(request.model, endpoint, started)
                await slot.__aexit__(None, None, None)

    def _ended(model_id: str, endpoint: str, started: float) -> None:
        metrics.in_flight.labels(model_id, name).dec()
        metrics.request_duration.labels(model_id, name, endpoint).observe(time.monotonic() - started)

    def record_error(model_id: str, error: BaseException) -> None:
        metrics.errors.labels(model_id, name, error_type_name(error)).inc()

    def known_label(model: Any) -> str:
        return model if isinstance(model, str) and store.get(model) is not None else "unknown"

    def handle_error(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
        model = request.scope.get("state", {}).get("model")
        record_error(known_label(model), error)
        return exception_handler(request, error)

    @get("/health")
    async def health() -> dict[str, Any]:
        return state.health()

    @get("/discovery")
    async def discovery() -> dict[str, Any]:
        return {
            "host": {**host_facts(device), "name": name},
            "models": [m.describe() for m in store.discover()],
        }

    @get("/models")
    async def models() -> dict[str, Any]:
        return {"models": [h.describe() for h in store.hosted()]}

    @post("/models/load", status_code=200)
    async def load(request: Request[Any, Any, Any]) -> dict[str, Any]:
        model_id = validate_model_id(_model_field(await _json_body(request)))
        await store.load(model_id)
        return {"id": model_id, "status": "loaded"}

    @post("/models/unload", status_code=200)
    async def unload(request: Request[Any, Any, Any]) -> dict[str, Any]:
        body = await _json_body(request)
        model_id = validate_model_id(_model_field(body))
        force = bool(body.get("force", False))
        if not await store.unload(model_id, force=force):
            raise ModelNotFoundError(f"model {model_id!r} is not loaded on this neuron")
        metrics.model_unloads.labels(model_id, name, "forced" if force else "requested").inc()
        return {"id": model_id, "status": "unloaded"}

    @get("/v1/models")
    async def v1_models(request: Request[Any, Any, Any]) -> dict[str, Any]:
        ids = [m.id for m in store.discover()]
        ids += [h.id for h in store.hosted() if h.id not in ids]
        if dialect_of(request) == "anthropic":
            data = [
                {"type": "model", "id": i, "display_name": i, "created_at": "1970-01-01T00:00:00Z"}
                for i in ids
            ]
            return {
                "data": data,
                "has_more": False,
                "first_id": ids[0] if ids else None,
                "last_id": ids[-1] if ids else None,
            }
        return {
            "object": "list",
            "data": [{"id": i, "object": "model", "created": 0, "owned_by": name} for i in ids],
        }

    @post("/v1/chat/completions", status_code=200)
    async def chat_completions(request: Request[Any, Any, Any]) -> Response[Any]:
        body = await _json_body(request)
        parsed = parse_chat_request(body)
        request.scope.setdefault("state", {})["model"] = parsed.model
        return await run_chat(parsed, "openai", "chat_completions")

    @post("/v1/messages", status_code=200)
    async def messages(request: Request[Any, Any, Any]) -> Response[Any]:
        body = await _json_body(request)
        if not isinstance(body, dict):
            raise InvalidRequestError("the request body must be a JSON object")
        # As at the gateway: Anthropic callers (Claude Code asks for 128000) get max_tokens clamped.
        parsed = parse_chat_request({**translate.anthropic_to_openai_request(body), "clamp_max_tokens": True})
        request.scope.setdefault("state", {})["model"] = parsed.model
        return await run_chat(parsed, "anthropic", "messages")

    @post("/v1/messages/count_tokens", status_code=200)
    async def count_tokens(request: Request[Any, Any, Any]) -> dict[str, Any]:
        body = await _json_body(request)
        if not isinstance(body, dict):
            raise InvalidRequestError("the request body must be a JSON object")
        model_id = _model_field(body)
        metrics.requests.labels(known_label(model_id), name, "count_tokens").inc()
        openai_body = translate.anthropic_to_openai_request({**body, "max_tokens": body.get("max_tokens", 1)})
        parsed = parse_chat_request(openai_body)
        tokenizer = state.tokenizer_for(model_id)
        return {
            "input_tokens": len(
                render_chat_prompt(tokenizer, parsed.messages, parsed.tools, **parsed.template_kwargs)
            )
        }

    @post("/v1/completions", status_code=200)
    async def completions(request: Request[Any, Any, Any]) -> Response[Any]:
        parsed = parse_completion_request(await _json_body(request))
        request.scope.setdefault("state", {})["model"] = parsed.model
        hosted, slot = await admitted(parsed.model, "completions")
        started = time.monotonic()
        metrics.in_flight.labels(parsed.model, name).inc()
        streaming = False
        try:
            engine = hosted.engine
            prompt = parsed.prompt
            if isinstance(prompt, str):
                if engine.tokenizer is None:
                    raise InvalidRequestError("this model has no tokenizer; send token ids", param="prompt")
                num_prompt_tokens = len(engine.tokenizer.encode(prompt))
            else:
                num_prompt_tokens = len(prompt)
            params = clamp_params(
                parsed.params,
                prompt_len=num_prompt_tokens,
                max_model_len=engine.max_model_len,
                clamp=parsed.clamp_max_tokens,
            )
            parsed = dataclasses.replace(parsed, params=params)
            gen = Generation(engine, parsed.model, name, metrics, num_prompt_tokens=num_prompt_tokens)
            if not parsed.stream:
                return Response(await gen.completion(parsed))
            streaming = True
            model_id = parsed.model
            return _stream_response(
                "openai",
                _finally(gen.completion_chunks(parsed), lambda: _ended(model_id, "completions", started)),
                slot=slot,
                keepalive_s=neuron_config.keepalive_s,
                on_error=lambda e: record_error(model_id, e),
            )
        finally:
            if not streaming:
                _ended(parsed.model, "completions", started)
                await slot.__aexit__(None, None, None)

    @get("/metrics", media_type=CONTENT_TYPE)
    async def metrics_route() -> Response[bytes]:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @contextlib.asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        for model_id in neuron_config.preload:
            await store.load(model_id)
        try:
            yield
        finally:
            await store.drain(neuron_config.drain_timeout_s)

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
            count_tokens,
            completions,
            metrics_route,
        ],
        exception_handlers={Exception: handle_error},
        before_request=auth_hook(neuron_config.api_keys, public_paths={"/health"}),
        lifespan=[lifespan],
        request_max_body_size=neuron_config.max_body_bytes,
    )
    app.state.neuron = state
    return app


async def _finally(source: AsyncIterator[dict[str, Any]], done: Any) -> AsyncIterator[dict[str, Any]]:
    """Yield ``source`` and call ``done()`` once it ends, fails or is closed."""
    try:
        async for item in source:
            yield item
    finally:
        done()
        await sse.aclose_quietly(source)


def config_from_args(args: argparse.Namespace) -> NeuronConfig:
    """The [neuron] section of the config file with the command-line flags applied."""
    base = load_config(args.config).neuron
    updates: dict[str, Any] = {}
    if args.listen:
        updates["listen"] = args.listen
    if args.models:
        updates["model_dirs"] = args.models
    if args.device:
        updates["device"] = args.device
    if args.name:
        updates["name"] = args.name
    try:
        return NeuronConfig.model_validate({**base.model_dump(), **updates})
    except ValidationError as error:
        raise ConfigError(str(error).splitlines()[-1].strip(), key="command line") from None


def run_neuron(config: NeuronConfig) -> None:
    """Serve a neuron with uvicorn until interrupted; in-flight requests get ``drain_timeout_s`` to end."""
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per poll otherwise
    app = create_app(config)
    log.info(
        "neuron %s on http://%s (models from %s)",
        config.name,
        config.listen,
        ", ".join(map(str, config.model_dirs)),
    )
    uvicorn.run(
        app,
        host=config.listen.host,
        port=config.listen.port,
        log_level="info",
        timeout_graceful_shutdown=int(config.drain_timeout_s) or None,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cortex.server.neuron``: the same as ``cortex neuron``."""
    from cortex.cli import main as cli_main

    return cli_main(["neuron", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
