"""Hostile requests against a real neuron (the tiny Qwen3.5 with the real tokenizer) and a gateway in
front of it, both on loopback: a bounded sample of benchmarks/hostile.py's generator, plus bodies that
hypothesis builds around valid ones. Nothing may answer 5xx or hang, every error comes in the caller's
dialect, and ordinary requests are served afterwards."""

from __future__ import annotations

import json
from collections.abc import Iterator
from itertools import islice
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from server_live import LiveServer

from cortex.server.config import NeuronConfig, config_from_dict
from cortex.server.gateway import create_app as create_gateway
from cortex.server.neuron import create_app as create_neuron
from hostile_requests import ROUTES, Generator, HostileRequest, error_dialect, normal_requests
from processes import TINY_MODEL

NUM_HOSTILE = 150  # per server; benchmarks/hostile.py sends 10,000
TIMEOUT_S = 15.0


@pytest.fixture(scope="module")
def servers(tiny_qwen_root) -> Iterator[dict[str, LiveServer]]:
    neuron_config = NeuronConfig(
        name="n1",
        model_dirs=(tiny_qwen_root,),
        device="cpu",
        dtype="float32",
        max_model_len=96,
        cache_memory_bytes=32 * 2**20,
        memory_budget_bytes=2 * 10**9,
        keepalive_s=0.5,
        preload=(TINY_MODEL,),
    )
    neuron = LiveServer(create_neuron(neuron_config)).start()
    config = config_from_dict(
        {
            "gateway": {"keepalive_s": 0.5},
            "fleet": {"poll_interval_s": 0.5},
            "neurons": [{"name": "n1", "url": neuron.url}],
        },
        environ={},
    )
    gateway = LiveServer(create_gateway(config)).start()
    try:
        yield {"neuron": neuron, "gateway": gateway}
    finally:
        gateway.stop()
        neuron.stop()


def check(client: httpx.Client, request: HostileRequest) -> None:
    """No 5xx, an answer within the timeout, and an error (or a stream's error event) in the dialect."""
    reply = client.request(request.method, request.path, content=request.body, headers=request.headers)
    what = f"{request.kind} {request.method} {request.path[:60]} {request.body[:200]!r}"
    assert reply.status_code < 500, f"{reply.status_code} for {what}: {reply.text[:300]}"
    if reply.status_code >= 400:
        assert error_dialect(reply.json()) == request.expected_dialect, f"{what}: {reply.text[:300]}"
        assert len(reply.text) < 2000, f"an error quoting too much for {what}"
    elif reply.headers.get("content-type", "").startswith("text/event-stream"):
        for line in reply.text.splitlines():
            if line.startswith("data: ") and '"error"' in line:
                assert error_dialect(json.loads(line[6:])) == request.expected_dialect, what


def served(client: httpx.Client) -> None:
    for request in normal_requests(TINY_MODEL):
        reply = client.request(request.method, request.path, content=request.body)
        assert reply.status_code == 200, reply.text[:300]
        assert '"error"' not in reply.text


@pytest.mark.parametrize("server", ["neuron", "gateway"])
def test_hostile_requests_get_no_5xx_and_errors_in_the_callers_dialect(servers, server):
    generator = Generator(TINY_MODEL, seed=16, neuron=server == "neuron", oversized_every=50)
    with httpx.Client(base_url=servers[server].url, timeout=TIMEOUT_S) as client:
        for request in islice(generator, NUM_HOSTILE):
            check(client, request)
        served(client)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def bodies(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """A valid body for a route with fields replaced by (or added as) arbitrary JSON values."""
    path = draw(st.sampled_from(sorted(ROUTES)))
    body: dict[str, Any] = {"model": TINY_MODEL, **ROUTES[path]}
    keys = [*body, "temperature", "top_p", "top_k", "stop", "tools", "tool_choice", "stream", "system", "n"]
    for key in draw(st.lists(st.sampled_from(keys), min_size=1, max_size=3)):
        body[key] = draw(JSON)
    return path, body


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=bodies())
def test_generated_bodies_get_no_5xx(servers, case):
    path, body = case
    request = HostileRequest("generated", "POST", path, json.dumps(body).encode())
    for server in ("neuron", "gateway"):
        with httpx.Client(base_url=servers[server].url, timeout=TIMEOUT_S) as client:
            check(client, request)
