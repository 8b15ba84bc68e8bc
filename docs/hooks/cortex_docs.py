"""MkDocs hooks (``hooks:`` in mkdocs.yml): the pages generated from the code at every build, so that
none of them can drift from it, and none is committed.

- ``reference/neuron-http.md``, ``reference/gateway-http.md``: the HTTP reference, rendered from the
  OpenAPI schema each app generates (the one it serves at ``/schema/openapi.json``), with the schemas
  themselves beside them as ``reference/neuron-openapi.json`` and ``reference/gateway-openapi.json``;
- ``reference/cli.md``: ``cortex --help`` and each command's help;
- ``configuration.md``: the key tables (``cortex.server.config_reference``) where the page says
  ``<!-- cortex:config-reference -->``.

The docstrings use Sphinx roles (``:class:`Progress```); the Python API page shows their names as
code, without the role. The pages name each other as ``docs/fleet.md`` in prose (which reads well in
the repository); on the site each such name links to its page.
"""

from __future__ import annotations

import json
import posixpath
import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page
from openapi_markdown import render

CONFIG_MARKER = "<!-- cortex:config-reference -->"
# ":meth:`stream`" as Markdown renders to ":meth:<code>stream</code>"
_SPHINX_ROLE = re.compile(r":(?:class|meth|func|mod|attr|exc|data|obj):(?=<code>)")
# "docs/fleet.md" in prose: not in a link's text or target, a code span or a longer path
_PAGE_NAME = re.compile(r"(?<![\w/.\[(-])docs/([a-z][a-z0-9-]*)\.md(?![\w\])])")
_FENCE = re.compile(r"^\s*(```|~~~)")

_HTTP_INTRO = {
    "neuron": (
        "Generated from the neuron app's OpenAPI schema (`cortex.server.neuron`), which a running neuron "
        "also serves at `/schema/openapi.json` (with `[neuron] api_keys` set, to a caller with a key; "
        "[download it](neuron-openapi.json)). What each route "
        "answers and how the fleet relies on it: [servers.md](../servers.md#neuron-api) and the "
        "[neuron contract](../fleet.md#neuron-contract)."
    ),
    "gateway": (
        "Generated from the gateway app's OpenAPI schema (`cortex.server.gateway`), which a running "
        "gateway also serves at `/schema/openapi.json`, and as a browsable page at `/schema` (with "
        "`[auth] api_keys` set, to a caller with a key; [download it](gateway-openapi.json)); "
        "`/metrics` is on its own listener ([metrics.md](../metrics.md)). How requests are routed, "
        "relayed and failed over: [servers.md](../servers.md#gateway-api)."
    ),
}


def openapi_schemas() -> dict[str, dict[str, Any]]:
    """Both apps' OpenAPI schemas, from apps built as ``cortex neuron`` and ``cortex serve`` build
    them (no lifespan runs: nothing is loaded, polled or listened on)."""
    from cortex.server.config import NeuronConfig, config_from_dict
    from cortex.server.gateway import create_app as create_gateway
    from cortex.server.neuron import create_app as create_neuron

    neuron = create_neuron(NeuronConfig(model_dirs=(Path("/nonexistent"),), device="cpu"))
    one_neuron = {"neurons": [{"name": "n1", "url": "http://127.0.0.1:9"}]}
    gateway = create_gateway(config_from_dict(one_neuron, environ={}))
    return {"neuron": neuron.openapi_schema.to_schema(), "gateway": gateway.openapi_schema.to_schema()}


def cli_reference() -> str:
    """``cortex --help`` and every subcommand's help, as argparse prints them."""
    import argparse

    from cortex.cli import build_parser

    parser = build_parser()
    lines = [
        "# Command line",
        "",
        "Generated from `cortex.cli` at each site build. `cortex`, `python -m cortex` and "
        "`python -m cortex.server.gateway` / `.neuron` are one command line.",
        "",
        "```text",
        parser.format_help().rstrip(),
        "```",
        "",
    ]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                lines += [f"## `cortex {name}`", "", "```text", sub.format_help().rstrip(), "```", ""]
    return "\n".join(lines)


def on_files(files: Files, config: MkDocsConfig) -> Files:
    for app, schema in openapi_schemas().items():
        text = json.dumps(schema, indent=2)
        files.append(File.generated(config, f"reference/{app}-openapi.json", content=text))
        title = f"{app.capitalize()} HTTP API"
        page = render(schema, title=title, intro=_HTTP_INTRO[app])
        files.append(File.generated(config, f"reference/{app}-http.md", content=page))
    files.append(File.generated(config, "reference/cli.md", content=cli_reference()))
    return files


def link_page_names(markdown: str, src_uri: str, pages: set[str]) -> str:
    """``docs/NAME.md`` in prose as a link to that page, for each NAME.md in ``pages``; fenced blocks and
    code spans are left as they are."""
    here = posixpath.dirname(src_uri)

    def link(match: re.Match[str]) -> str:
        target = f"{match.group(1)}.md"
        if target not in pages:
            return match.group(0)
        return f"[{match.group(0)}]({posixpath.relpath(target, here or '.')})"

    lines = []
    fenced = False
    for line in markdown.split("\n"):
        if _FENCE.match(line):
            fenced = not fenced
        if not fenced:
            spans = line.split("`")  # the odd pieces are code spans
            line = "`".join(piece if i % 2 else _PAGE_NAME.sub(link, piece) for i, piece in enumerate(spans))
        lines.append(line)
    return "\n".join(lines)


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    pages = {file.src_uri for file in files.documentation_pages()}
    markdown = link_page_names(markdown, page.file.src_uri, pages)
    if page.file.src_uri != "configuration.md":
        return markdown
    if CONFIG_MARKER not in markdown:
        raise ValueError(f"configuration.md lost its {CONFIG_MARKER} marker")
    from cortex.server.config_reference import render_markdown

    return markdown.replace(CONFIG_MARKER, render_markdown())


def on_page_content(html: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    return _SPHINX_ROLE.sub("", html)
