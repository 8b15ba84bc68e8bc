"""schemathesis over both apps' OpenAPI schemas (Litestar generates them; every POST route documents
its typed body): requests generated from the schemas, valid and not, must never get a 5xx, and every
error must come in the caller's dialect. The neuron runs over the scripted engine, the gateway in front
of one on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from litestar import Litestar
from server_fakes import make_neuron, write_fake_model
from server_live import LiveServer

from cortex.server.config import NeuronConfig, config_from_dict
from cortex.server.gateway import create_app as create_gateway
from cortex.server.neuron import create_app as create_neuron
from hostile_requests import HostileRequest, error_dialect

EXAMPLES = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))


def _schema(app: Litestar) -> schemathesis.schemas.BaseSchema:
    """The app's OpenAPI schema, as Litestar serves it at /schema/openapi.json."""
    return schemathesis.openapi.from_dict(app.openapi_schema.to_schema())


# Built at import, so that each operation becomes a test; no lifespan runs for these two apps.
NEURON_SCHEMA = _schema(create_neuron(NeuronConfig(model_dirs=(Path("/nonexistent"),), device="cpu")))
GATEWAY_SCHEMA = _schema(
    create_gateway(config_from_dict({"neurons": [{"name": "n1", "url": "http://127.0.0.1:9"}]}, environ={}))
)


def _neuron_app(root: Path) -> Litestar:
    write_fake_model(root, "alpha", reply="hello world", memory_bytes=1000)
    return make_neuron(root, name="n1")[0]


@pytest.fixture(scope="module")
def neuron(tmp_path_factory) -> Iterator[LiveServer]:
    server = LiveServer(_neuron_app(tmp_path_factory.mktemp("models"))).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(neuron) -> Iterator[LiveServer]:
    config = config_from_dict(
        {"fleet": {"poll_interval_s": 0.5}, "neurons": [{"name": "n1", "url": neuron.url}]}, environ={}
    )
    server = LiveServer(create_gateway(config)).start()
    yield server
    server.stop()


def _check(case: schemathesis.Case, server: LiveServer) -> None:
    response = case.call(base_url=server.url, timeout=15)
    what = f"{case.method} {case.formatted_path} {str(case.body)[:200]}"
    assert response.status_code < 500, f"{response.status_code} for {what}: {response.text[:300]}"
    if response.status_code >= 400 and not case.formatted_path.startswith("/schema"):
        headers = {k.lower(): v for k, v in (case.headers or {}).items()}
        request = HostileRequest("schema", case.method, case.formatted_path, headers=headers)
        assert error_dialect(response.json()) == request.expected_dialect, f"{what}: {response.text[:300]}"


@NEURON_SCHEMA.parametrize()
@EXAMPLES
def test_neuron_schema(case, neuron):
    _check(case, neuron)


@GATEWAY_SCHEMA.parametrize()
@EXAMPLES
def test_gateway_schema(case, gateway):
    _check(case, gateway)
