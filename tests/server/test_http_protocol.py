"""The servers' HTTP protocol on a real loopback socket: a connection whose request does not arrive whole
within ``request_timeout_s`` (silent, or trickling its head or body: slowloris) is closed; requests that
arrive in time are served however long their response takes, also several on one connection."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from server_live import LiveServer, serve

from cortex.server.http_protocol import bounded_request_protocol

TIMEOUT_S = 0.4
BOUND_S = TIMEOUT_S + 1.5  # a loaded machine may be late to fire the timer
REQUEST = b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello"


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await asyncio.sleep(2 * TIMEOUT_S)  # a response slower than the request bound is not cut
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]}
    )
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    with serve(echo, http=bounded_request_protocol(TIMEOUT_S)) as live:
        yield live


def connect(server: LiveServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def read_until_closed(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def trickle(sock: socket.socket, data: bytes, *, until_s: float) -> bool:
    """Send ``data`` a byte at a time, 50 ms apart, until it is sent or ``until_s``; False if the server
    closed the connection first."""
    for byte in data:
        if time.monotonic() > until_s:
            return True
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.parametrize(
    ("sent", "answer"),
    [
        (b"", b"HTTP/1.1 408"),  # connected, then nothing
        (b"POST /echo HTTP/1.1\r\nhost: x\r\nx-padding: " + b"a" * 200, b"HTTP/1.1 408"),  # a trickled head
        (REQUEST[:-5] + b"he", b""),  # a whole head, then a body that stops: the handler sees a disconnect
    ],
    ids=["silent", "head", "body"],
)
def test_a_request_that_does_not_arrive_in_time_closes_its_connection(server, sent, answer):
    with connect(server) as sock:
        opened = time.monotonic()
        trickle(sock, sent, until_s=opened + BOUND_S)
        reply = read_until_closed(sock)
        closed_s = time.monotonic() - opened
    assert reply.startswith(answer)
    assert TIMEOUT_S * 0.9 < closed_s < BOUND_S


def test_requests_that_arrive_in_time_are_served_however_long_they_wait_or_take(server):
    with connect(server) as sock:
        for _ in range(2):  # the second after an idle gap longer than the bound: its clock starts anew
            sock.sendall(REQUEST)
            reply = b""
            while not reply.endswith(b"hello"):
                reply += sock.recv(65536)
            assert reply.startswith(b"HTTP/1.1 200")
            time.sleep(1.5 * TIMEOUT_S)
