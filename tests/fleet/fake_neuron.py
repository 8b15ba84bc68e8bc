"""A scripted neuron that follows the neuron HTTP contract in docs/fleet.md, as a plain ASGI app.

``FakeNeuron`` holds the script (what it can load and how big each model is, its memory budget,
load and inference latency, injected failures) and records every load, unload and request in
``events``. ``NeuronServer`` serves it with uvicorn on a loopback port in a thread, and can be
killed (connections dropped, port closed) and restarted on the same port.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from loopback import drop_connections

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

GB = 1 << 30


@dataclass
class FakeNeuron:
    name: str
    catalogue: dict[str, int]  # model id -> memory bytes, the models it can load
    memory_budget_bytes: int = 8 * GB
    loaded: list[str] = field(default_factory=list)
    load_delay_s: float = 0.0
    infer_delay_s: float = 0.0
    num_chunks: int = 3
    chunk_delay_s: float = 0.0
    extra_queued: int = 0  # reported on /health as queued requests, to script load
    health_delay_s: float = 0.0
    health_error: bool = False  # answer /health with 500
    fail_next: int = 0  # answer the next N inference requests with 500
    break_stream_after: int | None = None  # drop the connection after N chunks of every stream
    bad_data_after: int | None = None  # send an undecodable data line after N chunks of every stream
    not_loaded_code: str | None = "model_not_found"  # error code of a 404 for a model not loaded
    # GPUs (bytes each) reported the way a cortex neuron does; a model split over N of them takes
    # (its catalogue bytes) // N on each. Empty: one device that is the whole budget.
    gpus: list[int] = field(default_factory=list)
    placed: dict[str, list[int]] = field(default_factory=dict)  # model -> the GPU indices it is on
    load_bodies: list[dict[str, Any]] = field(default_factory=list)  # every POST /models/load body
    events: list[tuple[str, str]] = field(default_factory=list)  # ("load"|"unload"|"start"|"end", model)
    status: dict[str, str] = field(default_factory=dict)
    in_flight: Counter[str] = field(default_factory=Counter)
    _loading: dict[str, asyncio.Event] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.status = dict.fromkeys(self.loaded, "loaded")

    def calls(self, kind: str) -> list[str]:
        return [model for k, model in self.events if k == kind]

    def used_bytes(self) -> int:
        return sum(self.catalogue[m] for m, s in self.status.items() if s in ("loaded", "loading"))

    def _share(self, model: str) -> int:
        return self.catalogue[model] // max(1, len(self.placed.get(model, [])))

    def _reserved(self, gpu: int) -> int:
        return sum(self._share(m) for m, on in self.placed.items() if gpu in on)

    def _devices(self) -> list[dict[str, Any]]:
        if not self.gpus:
            used = self.used_bytes()
            return [
                {
                    "index": 0,
                    "name": "fake",
                    "memory_total_bytes": self.memory_budget_bytes,
                    "memory_used_bytes": used,
                    "memory_free_bytes": self.memory_budget_bytes - used,
                }
            ]
        return [
            {
                "index": i,
                "device": f"cuda:{i}",
                "name": "fake",
                "memory_total_bytes": total,
                "memory_reserved_bytes": self._reserved(i),
                "models": sorted(m for m, on in self.placed.items() if i in on),
            }
            for i, total in enumerate(self.gpus)
        ]

    def _place(self, model: str, split: int) -> list[int] | None:
        """The ``split`` GPUs with the most room, if each holds the model's share; None otherwise."""
        share = self.catalogue[model] // split
        by_room = sorted(range(len(self.gpus)), key=lambda i: (self._reserved(i) - self.gpus[i], i))[:split]
        if len(by_room) < split or any(self._reserved(i) + share > self.gpus[i] for i in by_room):
            return None
        return sorted(by_room)

    # ---- ASGI ------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        payload = json.loads(body) if body else {}
        route = (scope["method"], scope["path"])
        if route == ("GET", "/health"):
            await asyncio.sleep(self.health_delay_s)
            if self.health_error:
                await _error(send, 500, "scripted health failure", "internal_error")
            else:
                await _json(send, 200, self.health())
        elif route == ("GET", "/models"):
            await _json(send, 200, {"models": [{"id": m, "status": s} for m, s in self.status.items()]})
        elif route == ("GET", "/discovery"):
            await _json(send, 200, self.discovery())
        elif route == ("POST", "/models/load"):
            self.load_bodies.append(payload)
            await self.load(payload["model"], send, int(payload.get("tensor_parallel", 1)))
        elif route == ("POST", "/models/unload"):
            await self.unload(payload["model"], bool(payload.get("force")), send)
        elif scope["method"] == "POST" and scope["path"].startswith("/v1/"):
            await self.infer(scope["path"], payload, send)
        else:
            await _error(send, 404, "not found", "not_found")

    def health(self) -> dict[str, Any]:
        used = self.used_bytes()
        return {
            "status": "ok",
            "devices": self._devices(),
            "models": [
                {
                    "id": m,
                    "status": s,
                    "in_flight": self.in_flight[m],
                    "queued": 0,
                    "kv_cache_usage": 0.0,
                    **(
                        {
                            "devices": [f"cuda:{i}" for i in self.placed[m]],
                            "memory_per_device_bytes": self._share(m),
                        }
                        if m in self.placed
                        else {}
                    ),
                }
                for m, s in self.status.items()
            ],
            "in_flight": sum(self.in_flight.values()),
            "queued": self.extra_queued,
            "memory_budget_bytes": self.memory_budget_bytes,
            "memory_used_bytes": used,
            "prefill_tokens_per_s": 0.0,
            "decode_tokens_per_s": 0.0,
        }

    def discovery(self) -> dict[str, Any]:
        return {
            "host": {"name": self.name},
            "models": [
                {
                    "id": m,
                    "architecture": "Fake",
                    "estimated_memory_bytes": b,
                    "max_model_len": 4096,
                    "tensor_parallel": 1,
                    "memory_per_device_bytes": {str(n): b // n for n in range(1, len(self.gpus) + 1)},
                }
                for m, b in self.catalogue.items()
            ],
        }

    async def load(self, model: str, send: Send, split: int = 1) -> None:
        self.events.append(("load", model))
        if model not in self.catalogue:
            await _error(send, 404, f"unknown model {model}", "model_not_found")
            return
        if self.status.get(model) == "loaded":
            await _json(send, 200, {"id": model, "status": "loaded"})
            return
        if model in self._loading:  # single-flight: join the load in progress
            await self._loading[model].wait()
        else:
            if self.used_bytes() + self.catalogue[model] > self.memory_budget_bytes:
                await _error(send, 507, f"{model} does not fit", "insufficient_memory")
                return
            if self.gpus:
                on = self._place(model, split)
                if on is None:
                    await _error(send, 507, f"{model} does not fit on {split} GPUs", "insufficient_memory")
                    return
                self.placed[model] = on
            self._loading[model] = asyncio.Event()
            self.status[model] = "loading"
            await asyncio.sleep(self.load_delay_s)
            self.status[model] = "loaded"
            self._loading.pop(model).set()
        devices = {"devices": [f"cuda:{i}" for i in self.placed[model]]} if model in self.placed else {}
        await _json(send, 200, {"id": model, "status": "loaded", **devices})

    async def unload(self, model: str, force: bool, send: Send) -> None:
        if model not in self.status:
            await _error(send, 404, f"{model} is not loaded", "model_not_found")
            return
        if self.in_flight[model] and not force:
            self.events.append(("unload_refused", model))
            await _error(send, 409, f"{model} has requests in flight", "model_busy")
            return
        self.events.append(("unload", model))
        del self.status[model]
        self.placed.pop(model, None)
        await _json(send, 200, {"id": model, "status": "unloaded"})

    async def infer(self, path: str, payload: dict[str, Any], send: Send) -> None:
        model = payload.get("model", "")
        if self.status.get(model) != "loaded":
            await _error(send, 404, f"model {model} is not loaded", self.not_loaded_code)
            return
        if self.fail_next > 0:
            self.fail_next -= 1
            await _error(send, 500, "injected failure", "internal_error")
            return
        self.in_flight[model] += 1
        self.events.append(("start", model))
        try:
            await asyncio.sleep(self.infer_delay_s)
            text = f"{self.name}:{model}"
            if payload.get("stream"):
                await self.stream(model, path, send)
            else:
                await _json(send, 200, _completion(path, model, text))
        finally:
            self.in_flight[model] -= 1
            self.events.append(("end", model))

    async def stream(self, model: str, path: str, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        for i in range(self.num_chunks):
            if self.break_stream_after is not None and i >= self.break_stream_after:
                raise ConnectionAbortedError("scripted stream break")
            if self.bad_data_after is not None and i >= self.bad_data_after:
                await send({"type": "http.response.body", "body": b"data: {oops\n\n", "more_body": True})
            chunk = {"object": "chat.completion.chunk", "model": model, "index": i, "neuron": self.name}
            if path == "/v1/messages":
                chunk = {"type": "content_block_delta", "index": i, "neuron": self.name}
                await send(
                    {"type": "http.response.body", "body": b"event: content_block_delta\n", "more_body": True}
                )
            await send(
                {
                    "type": "http.response.body",
                    "body": f"data: {json.dumps(chunk)}\n\n".encode(),
                    "more_body": True,
                }
            )
            await asyncio.sleep(self.chunk_delay_s)
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})


def _completion(path: str, model: str, text: str) -> dict[str, Any]:
    if path == "/v1/messages":
        return {
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": text}],
        }
    return {
        "object": "chat.completion",
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
    }


async def _json(send: Send, status: int, body: Any) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


async def _error(send: Send, status: int, message: str, code: str | None) -> None:
    await _json(send, status, {"error": {"message": message, "type": "invalid_request_error", "code": code}})


class NeuronServer:
    """Serves a ``FakeNeuron`` with uvicorn on 127.0.0.1 in a daemon thread."""

    def __init__(self, neuron: FakeNeuron) -> None:
        self.neuron = neuron
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> NeuronServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.neuron, log_level="critical", lifespan="off", ws="none", http="h11", loop="asyncio"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError(f"fake neuron {self.neuron.name} did not start")
            time.sleep(0.01)
        return self

    @property
    def running(self) -> bool:
        return self._server is not None

    def kill(self) -> None:
        """Stop at once: the port closes and open connections are dropped."""
        assert self._server is not None
        assert self._thread is not None
        drop_connections(self._server)
        self._server.should_exit = True
        self._server.force_exit = True
        self._thread.join(10)
        self._server = None
        self.neuron.in_flight.clear()
