"""Typed reads of untyped JSON bodies: every failure names the field's path in a TranslationError.

Both dialects arrive as plain dicts parsed from JSON. These helpers are the only place that checks a
value's JSON type, so the translators read like the mapping tables in docs/translate.md.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from cortex.translate.errors import TranslationError

JSON = dict[str, Any]


def as_dict(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise TranslationError(f"expected an object, got {type(value).__name__}", param=path)
    return value


def as_list(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise TranslationError(f"expected an array, got {type(value).__name__}", param=path)
    return value


def as_str(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise TranslationError(f"expected a string, got {type(value).__name__}", param=path)
    return value


def field(body: Mapping[str, Any], key: str, path: str) -> Any:
    """``body[key]``, or a TranslationError naming ``path.key`` when the field is missing."""
    if key not in body:
        raise TranslationError("required field is missing", param=join(path, key))
    return body[key]


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def parse_arguments(text: str, path: str) -> JSON:
    """Tool-call arguments (a JSON string) as the object Anthropic's ``input`` holds.

    An empty or blank string means no arguments. Anything that is not a JSON object is malformed.
    """
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TranslationError(f"tool arguments are not valid JSON ({exc.msg})", param=path) from None
    if not isinstance(value, dict):
        raise TranslationError("tool arguments must be a JSON object", param=path)
    return value


def dump_arguments(value: Any, path: str) -> str:
    """Anthropic's tool ``input`` object as OpenAI's ``arguments`` JSON string."""
    return json.dumps(dict(as_dict(value, path)), ensure_ascii=False)


def str_field(body: Mapping[str, Any], key: str, path: str) -> str:
    return as_str(field(body, key, path), join(path, key))


def dict_field(body: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any]:
    return as_dict(field(body, key, path), join(path, key))


def list_field(body: Mapping[str, Any], key: str, path: str) -> list[Any]:
    return as_list(field(body, key, path), join(path, key))
