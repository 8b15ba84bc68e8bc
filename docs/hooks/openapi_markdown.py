"""An OpenAPI 3.1 schema (as Litestar generates it for the neuron and the gateway) as one Markdown page:
every operation (method, path, description, query parameters, request body, responses), then every
schema the bodies use, each a table of its fields with their types and constraints. Static: the page
needs no JavaScript and no network to read, and it is rebuilt from the apps on every site build.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

_METHODS = ("get", "head", "post", "put", "patch", "delete")
_CONSTRAINTS = (
    ("minimum", "≥ {}"),
    ("exclusiveMinimum", "> {}"),
    ("maximum", "≤ {}"),
    ("exclusiveMaximum", "< {}"),
    ("minLength", "at least {} characters"),
    ("maxLength", "at most {} characters"),
    ("minItems", "at least {} items"),
    ("maxItems", "at most {} items"),
    ("pattern", "matches `{}`"),
)


def anchor(name: str) -> str:
    """The id MkDocs gives a ``### `Name` `` heading."""
    return re.sub(r"[^a-z0-9_-]", "", name.lower().replace(" ", "-"))


def type_text(schema: Mapping[str, Any]) -> str:
    """A schema's type in words, with links to the named schemas it uses."""
    if "$ref" in schema:
        name = str(schema["$ref"]).rsplit("/", 1)[-1]
        return f"[{name}](#{anchor(name)})"
    for combinator in ("oneOf", "anyOf"):
        if combinator in schema:
            options = [type_text(option) for option in schema[combinator]]
            nullable = "null" in options
            kinds = " or ".join(dict.fromkeys(o for o in options if o != "null"))
            return f"{kinds} or null" if nullable else kinds
    if "const" in schema:
        return f"`{_json(schema['const'])}`"
    if "enum" in schema:
        return " \\| ".join(f"`{_json(value)}`" for value in schema["enum"])
    kind = schema.get("type")
    if isinstance(kind, list):
        return " or ".join(type_text({**schema, "type": k}) for k in kind)
    if kind == "array":
        items = schema.get("items")
        return f"array of {type_text(items)}" if isinstance(items, Mapping) and items else "array"
    if kind == "object":
        extra = schema.get("additionalProperties")
        if isinstance(extra, Mapping) and extra:
            return f"object of {type_text(extra)}"
        return "object"
    return str(kind) if kind else "any"


def _json(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _constraints(schema: Mapping[str, Any]) -> str:
    found = [template.format(schema[key]) for key, template in _CONSTRAINTS if key in schema]
    for option in [*schema.get("oneOf", ()), *schema.get("anyOf", ())]:
        if isinstance(option, Mapping) and option.get("type") != "null":
            found += [template.format(option[key]) for key, template in _CONSTRAINTS if key in option]
    return ", ".join(found)


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _operations(paths: Mapping[str, Any]) -> Iterator[tuple[str, str, Mapping[str, Any]]]:
    for path, item in paths.items():
        for method in _METHODS:
            if method in item:
                yield method.upper(), path, item[method]


def _operation(method: str, path: str, operation: Mapping[str, Any]) -> list[str]:
    lines = [f"### `{method} {path}`", ""]
    description = operation.get("description") or operation.get("summary") or ""
    if description:
        lines += [description.strip(), ""]
    parameters = operation.get("parameters") or []
    if parameters:
        lines += ["| parameter | in | type | required |", "|---|---|---|---|"]
        for parameter in parameters:
            required = "yes" if parameter.get("required") else "no"
            kind = type_text(parameter.get("schema", {}))
            lines.append(f"| `{parameter['name']}` | {parameter['in']} | {kind} | {required} |")
        lines.append("")
    body = operation.get("requestBody")
    if body:
        for media_type, content in body.get("content", {}).items():
            lines += [f"Request body (`{media_type}`): {type_text(content.get('schema', {}))}.", ""]
    responses = operation.get("responses") or {}
    if responses:
        lines += ["| status | meaning | body |", "|---|---|---|"]
        for status, response in responses.items():
            bodies = [
                f"`{media}`: {type_text(content.get('schema', {}))}"
                for media, content in (response.get("content") or {}).items()
            ]
            meaning = _cell(response.get("description", ""))
            lines.append(f"| {status} | {meaning} | {'; '.join(bodies) or '-'} |")
        lines.append("")
    return lines


def _schema(name: str, schema: Mapping[str, Any]) -> list[str]:
    lines = [f"### `{name}`", ""]
    if schema.get("description"):
        lines += [_cell(schema["description"]), ""]
    properties: Mapping[str, Any] = schema.get("properties") or {}
    required = set(schema.get("required") or ())
    if properties:
        lines += ["| field | type | required | constraints |", "|---|---|---|---|"]
        for field, spec in properties.items():
            mark = "yes" if field in required else "no"
            lines.append(f"| `{field}` | {type_text(spec)} | {mark} | {_cell(_constraints(spec))} |")
        lines.append("")
    else:
        lines += [f"{type_text(schema)}.", ""]
    if schema.get("additionalProperties") is not False and schema.get("type") == "object" and properties:
        lines += ["Other fields are accepted (they are hints, and ignored).", ""]
    return lines


def render(schema: Mapping[str, Any], *, title: str, intro: str) -> str:
    """The page: ``title``, ``intro``, the operations in the schema's order, then its named schemas."""
    info = schema.get("info", {})
    lines = [f"# {title}", "", intro, ""]
    if info.get("description"):
        lines += [info["description"].strip(), ""]
    lines += ["## Routes", ""]
    for method, path, operation in _operations(schema.get("paths", {})):
        lines += _operation(method, path, operation)
    components = schema.get("components", {}).get("schemas", {})
    if components:
        lines += ["## Schemas", ""]
        for name in sorted(components):
            lines += _schema(name, components[name])
    return "\n".join(lines)
