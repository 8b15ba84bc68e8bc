"""Running the apps: the ASGI server (uvicorn) wiring for the gateway, the neuron and the embedded default.

One place for listen sockets, logging, signals and the graceful drain. The CLI (``cortex serve``,
``cortex neuron``, and ``python -m cortex.server.gateway`` / ``.neuron``, which run the same CLI) builds
a config and calls one of these.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import uvicorn
import uvloop
from litestar import Litestar

from cortex.server.config import CortexConfig, NeuronConfig
from cortex.server.http_protocol import bounded_request_protocol

log = logging.getLogger("cortex.serve")


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per poll otherwise


def _config(app: Litestar, *, request_timeout_s: float, keep_alive_s: int, **options: Any) -> uvicorn.Config:
    """uvicorn with httptools' C parser (instead of h11) and uvloop's event loop (instead of asyncio's),
    chosen by benchmarks/gateway.py (docs/benchmarks.md); a request must arrive within
    ``request_timeout_s`` (:mod:`cortex.server.http_protocol`); an idle connection is kept
    ``keep_alive_s``."""
    return uvicorn.Config(
        app,
        loop="uvloop",
        http=bounded_request_protocol(request_timeout_s),
        timeout_keep_alive=keep_alive_s,
        **options,
    )


def _gateway_servers(config: CortexConfig, app: Litestar) -> list[uvicorn.Server]:
    """The gateway's API listener and, when configured, its metrics listener."""
    from cortex.server.gateway import create_metrics_app

    listen = config.gateway.listen
    # uvicorn's access log is process-wide: in the embedded default the local neuron's polls show too
    api = _config(
        app,
        request_timeout_s=config.gateway.request_timeout_s,
        keep_alive_s=config.gateway.keep_alive_s,
        host=listen.host,
        port=listen.port,
        log_level="info",
        access_log=config.gateway.access_log,
    )
    servers = [uvicorn.Server(api)]
    metrics = _metrics_server(config, create_metrics_app(app.state.metrics))
    if metrics is not None:
        servers.append(metrics)
    return servers


def _metrics_server(config: CortexConfig, metrics_app: Litestar) -> uvicorn.Server | None:
    listen = config.gateway.metrics_listen
    if listen is None:
        return None
    return uvicorn.Server(
        _config(
            metrics_app,
            request_timeout_s=config.gateway.request_timeout_s,
            keep_alive_s=config.gateway.keep_alive_s,
            host=listen.host,
            port=listen.port,
            log_config=None,  # uvicorn's logging is process-wide: the API server's Config sets it
            log_level=None,
        )
    )


def serve_gateway(config: CortexConfig) -> None:
    """Serve the gateway and its metrics listener until interrupted."""
    uvloop.run(_serve_gateway(config))


async def _serve_gateway(config: CortexConfig) -> None:
    from cortex.server.gateway import create_app

    app = create_app(config)
    servers = _gateway_servers(config, app)
    log.info(
        "gateway on http://%s, metrics on %s", config.gateway.listen, config.gateway.metrics_listen or "(off)"
    )
    await asyncio.gather(*(server.serve() for server in servers))


def serve_neuron(config: NeuronConfig) -> None:
    """Serve a neuron until interrupted; in-flight requests get ``drain_timeout_s`` to end."""
    from cortex.server.neuron import create_app

    app = create_app(config)
    log.info(
        "neuron %s on http://%s (models from %s)",
        config.name,
        config.listen,
        ", ".join(map(str, config.model_dirs)),
    )
    listener = _config(
        app,
        request_timeout_s=config.request_timeout_s,
        keep_alive_s=config.keep_alive_s,
        host=config.listen.host,
        port=config.listen.port,
        log_level="info",
        access_log=config.access_log,
        timeout_graceful_shutdown=int(config.drain_timeout_s) or None,
    )
    uvicorn.Server(listener).run()


def _loopback_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def serve_embedded(config: CortexConfig, *, demo_preset: str = "tiny") -> None:
    """Run a local neuron (on a private loopback port), the gateway over it and its metrics listener
    until interrupted."""
    uvloop.run(_serve_embedded(config, demo_preset=demo_preset))


async def _serve_embedded(config: CortexConfig, *, demo_preset: str) -> None:
    from cortex.server.embedded import embedded_gateway, prepare_models
    from cortex.server.neuron import create_app as create_neuron

    models = await asyncio.to_thread(prepare_models, config, demo_preset=demo_preset)
    sock = _loopback_socket()
    gateway = embedded_gateway(config, neuron_url=f"http://127.0.0.1:{sock.getsockname()[1]}", models=models)
    neuron = _config(
        create_neuron(config.neuron),
        request_timeout_s=config.neuron.request_timeout_s,
        keep_alive_s=config.neuron.keep_alive_s,
        log_config=None,
        log_level=None,
    )
    neuron_server = uvicorn.Server(neuron)
    servers = _gateway_servers(config, gateway)
    log.info(
        "cortex gateway on http://%s with a local neuron over %s",
        config.gateway.listen,
        ", ".join(str(d) for d in config.neuron.model_dirs),
    )
    neuron_task = asyncio.create_task(neuron_server.serve(sockets=[sock]))
    while not neuron_server.started and not neuron_task.done():
        await asyncio.sleep(0.02)
    try:
        await asyncio.gather(*(server.serve() for server in servers))
    finally:
        neuron_server.should_exit = True
        await neuron_task
