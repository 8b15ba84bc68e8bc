"""Serving an ASGI app for real on a loopback port, in a background thread (uvicorn)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from loopback import drop_connections


class LiveServer:
    def __init__(self, app: Any, *, graceful_s: float | None = None, http: Any = "auto") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(
            app, log_level="warning", lifespan="on", timeout_graceful_shutdown=graceful_s, http=http
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Graceful stop: no new connections; in-flight requests finish (up to ``graceful_s``)."""
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.sock.close()

    def kill(self) -> None:
        """Like a crashed process: every open connection is reset at once, then the server stops."""
        drop_connections(self.server)
        self.server.force_exit = True
        self.stop()


@contextmanager
def serve(app: Any, *, graceful_s: float | None = None, http: Any = "auto") -> Iterator[LiveServer]:
    server = LiveServer(app, graceful_s=graceful_s, http=http).start()
    try:
        yield server
    finally:
        if server.thread.is_alive():
            server.stop()
