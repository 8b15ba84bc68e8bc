from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fake_neuron import FakeNeuron, NeuronServer


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def serve() -> Iterator[Callable[[FakeNeuron], NeuronServer]]:
    """Start fake neurons on loopback ports; every one still running is killed at teardown."""
    servers: list[NeuronServer] = []

    def start(neuron: FakeNeuron) -> NeuronServer:
        server = NeuronServer(neuron).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        if server.running:
            server.kill()
