"""Typed reading of a JSON request body's fields: every error is a 400 naming the field.

A JSON boolean is never accepted as a number (``True`` is an ``int`` in Python, not in JSON).
"""

from __future__ import annotations

from typing import Any, NoReturn

from cortex.errors import InvalidRequestError

NUMBER = (int, float)
_TYPE_NAMES = {
    "int": "an integer",
    "str": "a string",
    "bool": "a boolean",
    "list": "an array",
    "dict": "an object",
    "int,float": "a number",
}


def field(body: dict[str, Any], name: str, types: type | tuple[type, ...], default: Any = None) -> Any:
    """``body[name]`` when it has one of ``types``; ``default`` when absent or null; else a 400."""
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise InvalidRequestError(f"{name} must be {_type_name(types)}, got a boolean", param=name)
    if not isinstance(value, types):
        raise InvalidRequestError(
            f"{name} must be {_type_name(types)}, got {type(value).__name__}", param=name
        )
    return value


def _type_name(types: type | tuple[type, ...]) -> str:
    key = ",".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
    return _TYPE_NAMES.get(key, key)


def reject(name: str, why: str) -> NoReturn:
    """A field whose meaning cannot be served: a 400 that says why."""
    raise InvalidRequestError(f"{name} is not supported: {why}", param=name)
