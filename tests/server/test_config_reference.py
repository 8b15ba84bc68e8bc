"""The configuration reference is generated from the code: every key of cortex.toml, models.toml and
every environment override appears in it, each with a description, a default and an example that is
itself a valid value of that key; docs/configuration.md is where the site shows it."""

from __future__ import annotations

import dataclasses
import re
import tomllib
import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from cortex.fleet.profiles import FleetPolicy, ModelProfile
from cortex.server.config import ENV_OVERRIDES, CortexConfig, Listen, config_from_dict
from cortex.server.config_reference import REQUIRED, UNSET, reference_sections, render_markdown, toml_value

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _code_keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Every key of cortex.toml as ``table.key``, walked from the pydantic models (independently of
    the generator); ``[fleet]`` from FleetPolicy's fields."""
    keys = set()
    for name, info in model.model_fields.items():
        if name == "source":  # where the file came from, not a key
            continue
        annotation = info.annotation
        args = typing.get_args(annotation)
        dotted = f"{prefix}.{name}" if prefix else name
        if name == "fleet" and not prefix:
            keys |= {f"fleet.{f.name}" for f in dataclasses.fields(FleetPolicy)}
        elif _is_model(annotation) and annotation is not Listen:
            keys |= _code_keys(annotation, dotted)
        elif (
            typing.get_origin(annotation) is tuple
            and isinstance(args[0], type)
            and issubclass(args[0], BaseModel)
        ):
            keys |= _code_keys(args[0], dotted)
        else:
            keys.add(dotted)
    return keys


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _page_keys(markdown: str) -> dict[str, set[str]]:
    """``{"cortex.toml": {"gateway.listen", ...}, "models.toml": {...}}`` from the rendered tables."""
    found: dict[str, set[str]] = {}
    file = table = ""
    for line in markdown.splitlines():
        if match := re.fullmatch(r"## `(.+)` keys", line):
            file = match.group(1)
        elif match := re.fullmatch(r"### `\[\[?([\w.]+)\]\]?`", line):
            table = match.group(1)
        elif match := re.match(r"\| `([a-z_]+)` \|", line):
            found.setdefault(file, set()).add(f"{table}.{match.group(1)}")
    return found


def test_every_key_in_the_code_is_in_the_reference() -> None:
    page = _page_keys(render_markdown())
    assert page["cortex.toml"] == _code_keys(CortexConfig)
    assert page["models.toml"] == {f"models.{f.name}" for f in dataclasses.fields(ModelProfile)}


def test_every_environment_override_is_in_the_reference() -> None:
    markdown = render_markdown()
    for variable, (section, key) in ENV_OVERRIDES.items():
        assert re.search(rf"^\| `{variable}` \| `{section}\.{key}`", markdown, re.M), variable
    assert "| `CORTEX_CONFIG` |" in markdown


def _toml(assignment: str) -> Any:
    return tomllib.loads(assignment)


def _validate(file: str, table: str, array: bool, values: dict[str, Any]) -> None:
    """Raise unless ``values`` are valid keys of ``table``."""
    if file == "models.toml":
        ModelProfile.from_dict({"id": "m", **values})
    elif table == "fleet":
        FleetPolicy.from_dict(values)
    elif array:
        required = {
            "neurons": {"name": "n", "url": "http://h:1"},
            "neuron.catalogue": {"id": "m", "path": "/m"},
        }
        data: dict[str, Any] = {}
        head, _, tail = table.partition(".")
        entry = [{**required[table], **values}]
        data = {head: {tail: entry}} if tail else {head: entry}
        config_from_dict(data, environ={})
    else:
        config_from_dict({table: values}, environ={})


@pytest.mark.parametrize("section", reference_sections(), ids=lambda s: s.heading)
def test_every_key_has_a_description_a_default_and_a_valid_example(section) -> None:
    assert section.description
    for key in section.keys:
        assert key.description, f"{section.heading} {key.name}: no description (Field(description=...))"
        assert key.example is not None, f"{section.heading} {key.name}: no example (Field(examples=[...]))"
        assert key.default
        example = f"{key.name} = {toml_value(key.example, key=key.name)}"  # as the page shows it
        _validate(section.file, section.table, section.array, _toml(example))
        if key.default not in (REQUIRED, UNSET):
            _validate(section.file, section.table, section.array, _toml(f"{key.name} = {key.default}"))


def test_defaults_shown_are_the_defaults() -> None:
    sections = {s.table: s for s in reference_sections()}
    gateway = {k.name: k.default for k in sections["gateway"].keys}
    assert gateway["listen"] == '"127.0.0.1:31313"'
    assert gateway["max_body_bytes"] == '"32MiB"'
    assert gateway["models_file"] == UNSET
    assert {k.name: k.default for k in sections["neurons"].keys}["name"] == REQUIRED
    defaults = config_from_dict({}, environ={})
    for key in sections["neuron"].keys:
        if key.default not in (REQUIRED, UNSET):
            parsed = config_from_dict({"neuron": _toml(f"{key.name} = {key.default}")}, environ={})
            assert getattr(parsed.neuron, key.name) == getattr(defaults.neuron, key.name), key.name


def test_the_configuration_page_shows_the_reference() -> None:
    assert "<!-- cortex:config-reference -->" in (DOCS / "configuration.md").read_text(encoding="utf-8")
