"""Helpers for the real servers tests run on loopback ports (uvicorn in a background thread)."""

from __future__ import annotations

import asyncio

import uvicorn


def drop_connections(server: uvicorn.Server) -> None:
    """Reset every open connection, as a crashed process would, on the server's own event loop, so
    their sockets are closed rather than leaked when the loop stops."""
    connections = list(server.server_state.connections)
    if not connections:
        return

    async def abort_all() -> None:
        for connection in connections:
            connection.transport.abort()
        await asyncio.sleep(0.01)

    asyncio.run_coroutine_threadsafe(abort_all(), connections[0].loop).result(timeout=5)
