"""The configuration reference, generated from the code so that it cannot drift: every key of
``cortex.toml`` (the pydantic models of :mod:`cortex.server.config`, and ``[fleet]`` from
:class:`cortex.fleet.FleetPolicy`), of ``models.toml`` (:class:`cortex.fleet.ModelProfile`) and every
environment override, each with its default, its description and an example.

Descriptions and examples live beside the keys: pydantic ``Field(description=..., examples=[...])``,
dataclass ``field(metadata={"description": ..., "example": ...})``. :func:`reference_sections` is the
data (tests check it against the models); :func:`render_markdown` is the page the documentation site
shows (docs/configuration.md); ``python -m cortex.server.config_reference`` prints it.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from cortex.fleet.profiles import FleetPolicy, ModelProfile
from cortex.server.config import (
    CONFIG_PATH_ENV,
    ENV_OVERRIDES,
    LIST_SEPARATORS,
    CortexConfig,
    Listen,
)

__all__ = ["ReferenceKey", "ReferenceSection", "reference_sections", "render_markdown", "toml_value"]

REQUIRED = "required"
UNSET = "unset"
# [fleet] is a plain table in CortexConfig, validated by FleetPolicy.from_dict
_DATACLASS_SECTIONS: Mapping[str, type] = {"fleet": FleetPolicy}
_VALUE_MODELS: tuple[type[BaseModel], ...] = (Listen,)
_SEPARATOR_NAMES = {",": "comma-separated", ":": "`:`-separated", ";": "`;`-separated"}


@dataclass(frozen=True)
class ReferenceKey:
    """One key: ``name`` in its section, its ``default`` (TOML text, ``required`` or ``unset``), its
    ``description`` and an ``example`` value (a Python value, written as TOML on the page)."""

    name: str
    default: str
    description: str
    example: Any


@dataclass(frozen=True)
class ReferenceSection:
    """A TOML table (``[gateway]``) or array of tables (``[[neurons]]``) of a file."""

    file: str
    table: str
    array: bool
    description: str
    keys: tuple[ReferenceKey, ...]

    @property
    def heading(self) -> str:
        if not self.table:
            return "top level"
        return f"[[{self.table}]]" if self.array else f"[{self.table}]"


def toml_value(value: Any, *, key: str = "") -> str:
    """``value`` as TOML (a key named ``*_bytes`` shows a whole number of MiB or GiB as a size)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and key.endswith("_bytes") and value >= 2**20:
        for unit, size in (("GiB", 2**30), ("MiB", 2**20)):
            if value % size == 0:
                return f'"{value // size}{unit}"'
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path | Listen):
        return json.dumps(str(value))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML form for {value!r}")


def _default_text(value: Any, key: str) -> str:
    if value is None:
        return UNSET
    return toml_value(value, key=key)


def _model_keys(model: type[BaseModel]) -> Iterator[tuple[str, FieldInfo]]:
    for name, info in model.model_fields.items():
        if not info.exclude:
            yield name, info


def _pydantic_key(name: str, info: FieldInfo) -> ReferenceKey:
    default = info.get_default(call_default_factory=True)
    return ReferenceKey(
        name=name,
        default=REQUIRED if default is PydanticUndefined else _default_text(default, name),
        description=info.description or "",
        example=info.examples[0] if info.examples else None,
    )


def _dataclass_key(field: dataclasses.Field[Any]) -> ReferenceKey:
    if field.default is not dataclasses.MISSING:
        default = _default_text(field.default, field.name)
    elif field.default_factory is not dataclasses.MISSING:
        default = _default_text(field.default_factory(), field.name)
    else:
        default = REQUIRED
    return ReferenceKey(
        name=field.name,
        default=default,
        description=str(field.metadata.get("description", "")),
        example=field.metadata.get("example"),
    )


def _docstring(obj: type) -> str:
    """The first paragraph of a class's docstring, joined into one line (roles of ``:mod:`` dropped)."""
    paragraph = (obj.__doc__ or "").strip().split("\n\n")[0]
    text = " ".join(line.strip() for line in paragraph.splitlines())
    for role in (":mod:", ":class:", ":func:"):
        text = text.replace(role, "")
    return text.replace("``", "`")


def _tuple_item_model(annotation: Any) -> type[BaseModel] | None:
    """``Model`` for a ``tuple[Model, ...]`` annotation, else None."""
    if typing.get_origin(annotation) is tuple:
        (item, *_rest) = typing.get_args(annotation)
        if isinstance(item, type) and issubclass(item, BaseModel):
            return item
    return None


def _pydantic_sections(model: type[BaseModel], file: str, prefix: str = "") -> Iterator[ReferenceSection]:
    """``model``'s own keys as one section, then, in their order, a section per nested table
    (a model, or a dataclass validated later) and per array of tables (a tuple of models)."""
    keys = []
    nested: list[tuple[str, FieldInfo]] = []
    for name, info in _model_keys(model):
        if (
            (name in _DATACLASS_SECTIONS and not prefix)
            or _table_model(info.annotation) is not None
            or _tuple_item_model(info.annotation) is not None
        ):
            nested.append((name, info))
        else:
            keys.append(_pydantic_key(name, info))
    if prefix or keys:
        yield ReferenceSection(file, prefix, False, _docstring(model), tuple(keys))
    for name, info in nested:
        table = f"{prefix}.{name}" if prefix else name
        section = _table_model(info.annotation)
        item = _tuple_item_model(info.annotation)
        if section is not None:
            yield from _pydantic_sections(section, file, table)
        elif item is not None:
            fields = tuple(_pydantic_key(n, i) for n, i in _model_keys(item))
            yield ReferenceSection(file, table, True, info.description or _docstring(item), fields)
        else:
            policy = _DATACLASS_SECTIONS[name]
            fields = tuple(_dataclass_key(f) for f in dataclasses.fields(policy))
            yield ReferenceSection(file, table, False, info.description or _docstring(policy), fields)


def _table_model(annotation: Any) -> type[BaseModel] | None:
    """The model of a nested table; value types written as one string (``Listen``) are keys."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel) and annotation not in _VALUE_MODELS:
        return annotation
    return None


def reference_sections() -> tuple[ReferenceSection, ...]:
    """Every section of cortex.toml, then models.toml's ``[[models]]``."""
    models = ReferenceSection(
        "models.toml",
        "models",
        True,
        "One model profile per table: what the fleet knows about a model beyond what neurons report.",
        tuple(_dataclass_key(f) for f in dataclasses.fields(ModelProfile)),
    )
    return (*_pydantic_sections(CortexConfig, "cortex.toml"), models)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _section_markdown(section: ReferenceSection) -> list[str]:
    lines = [
        f"### `{section.heading}`",
        "",
        f"{section.description}",
        "",
        "| key | default | description | example |",
        "|---|---|---|---|",
    ]
    for key in section.keys:
        default = key.default if key.default in (REQUIRED, UNSET) else f"`{_cell(key.default)}`"
        example = (
            ""
            if key.example is None
            else f"`{_cell(f'{key.name} = {toml_value(key.example, key=key.name)}')}`"
        )
        lines.append(f"| `{key.name}` | {default} | {_cell(key.description)} | {example} |")
    return [*lines, ""]


def _assignment(key: ReferenceKey) -> str:
    return f"{key.name} = {toml_value(key.example, key=key.name)}"


def _environment_markdown() -> list[str]:
    lines = [
        "### Environment overrides",
        "",
        "Read in one place (`cortex/server/config.py`), applied on top of the file and validated like it; "
        "an invalid value names the variable.",
        "",
        "| variable | key |",
        "|---|---|",
        f"| `{CONFIG_PATH_ENV}` | the config file's path (when `--config` is not given) |",
    ]
    for variable, (section, key) in ENV_OVERRIDES.items():
        separator = LIST_SEPARATORS.get(key)
        note = f" ({_SEPARATOR_NAMES.get(separator, f'`{separator}`-separated')})" if separator else ""
        lines.append(f"| `{variable}` | `{section}.{key}`{note} |")
    return [*lines, ""]


def render_markdown() -> str:
    """The generated part of docs/configuration.md: one table per section, then the environment."""
    lines: list[str] = []
    for file in ("cortex.toml", "models.toml"):
        lines += [f"## `{file}` keys", ""]
        for section in reference_sections():
            if section.file == file:
                lines += _section_markdown(section)
        if file == "cortex.toml":
            lines += _environment_markdown()
    return "\n".join(lines)


if __name__ == "__main__":
    print(render_markdown())
