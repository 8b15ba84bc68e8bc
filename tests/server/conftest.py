"""Fixtures for the server tests: fake model folders and a neuron app over the scripted engine."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from litestar import Litestar
from server_fakes import FakeLoader, make_neuron, write_fake_model


@pytest.fixture(scope="session")
def tiny_qwen_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model folder root holding ``tiny``: the real Qwen3.5 architecture (random weights) and tokenizer."""
    from processes import make_tiny_model

    root = tmp_path_factory.mktemp("qwen-models")
    make_tiny_model(root)
    return root


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def models_root(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    write_fake_model(root, "alpha", reply="hello world", memory_bytes=1000)
    write_fake_model(root, "thinker", reasoning="let me think", reply="42", memory_bytes=1000)
    write_fake_model(root, "tooler", reply="", tool_call={"name": "get_weather", "args": {"city": "Paris"}})
    write_fake_model(root, "huge", memory_bytes=10**12)
    write_fake_model(root, "slow", reply="x" * 200, token_delay_s=0.02, memory_bytes=1000)
    write_fake_model(root, "broken", fail_load=True)
    return root


@pytest.fixture
def neuron(models_root: Path) -> tuple[Litestar, FakeLoader]:
    return make_neuron(models_root)


@pytest.fixture
async def client(neuron: tuple[Litestar, FakeLoader]) -> AsyncIterator[httpx.AsyncClient]:
    app, _ = neuron
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://neuron") as c:
        yield c
