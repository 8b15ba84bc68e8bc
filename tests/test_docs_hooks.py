"""docs/hooks: the site's generated pages cover what the code has (every route of both apps' OpenAPI
schemas, every named schema, every command), so a route or a command added later appears in the site."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

HOOKS = Path(__file__).resolve().parents[1] / "docs" / "hooks"
pytest.importorskip("mkdocs")


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, HOOKS / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = sys.modules[name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


openapi_markdown = _load("openapi_markdown")
cortex_docs = _load("cortex_docs")


@pytest.fixture(scope="module")
def schemas() -> dict:
    return cortex_docs.openapi_schemas()


@pytest.mark.parametrize("app", ["neuron", "gateway"])
def test_the_http_reference_has_every_route_and_schema(schemas, app: str):
    schema = schemas[app]
    page = openapi_markdown.render(schema, title=app, intro="")
    routes = [(method.upper(), path) for path, item in schema["paths"].items() for method in item]
    assert ("POST", "/v1/chat/completions") in routes
    for method, path in routes:
        assert f"### `{method} {path}`" in page
    for name in schema["components"]["schemas"]:
        assert f"### `{name}`" in page


def test_the_command_line_reference_has_every_command():
    page = cortex_docs.cli_reference()
    for command in ("serve", "neuron", "status", "make-model"):
        assert f"## `cortex {command}`" in page


def test_sphinx_roles_render_as_code():
    html = "twin of :meth:<code>chat</code>, see :class:<code>Progress</code>; a: <code>b</code>"
    out = cortex_docs.on_page_content(html, page=None, config=None, files=None)
    assert out == "twin of <code>chat</code>, see <code>Progress</code>; a: <code>b</code>"


def test_page_names_in_prose_link_to_their_pages():
    text = (
        'see docs/fleet.md ("Health"), [docs/engine.md](engine.md), `docs/fleet.md`, x/docs/fleet.md '
        "and docs/nothing.md\n```\ndocs/fleet.md\n```\nthen docs/engine.md."
    )
    assert cortex_docs.link_page_names(text, "operations.md", {"fleet.md", "engine.md"}) == (
        'see [docs/fleet.md](fleet.md) ("Health"), [docs/engine.md](engine.md), `docs/fleet.md`, '
        "x/docs/fleet.md and docs/nothing.md\n```\ndocs/fleet.md\n```\nthen [docs/engine.md](engine.md)."
    )
    assert cortex_docs.link_page_names("docs/fleet.md", "reference/cli.md", {"fleet.md"}) == (
        "[docs/fleet.md](../fleet.md)"
    )
