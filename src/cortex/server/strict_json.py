"""Strict JSON: request body bytes -> Python values, within bounds every later layer can take.

Parsed with msgspec (fast, and strict where Python's ``json`` is lax), each refusal a 400
(:class:`InvalidRequestError`) that says what was wrong:

- bytes that are not UTF-8 (``json.loads`` would also guess UTF-16 and UTF-32);
- ``NaN``, ``Infinity`` and ``-Infinity`` (not JSON; nothing downstream could forward them), numbers
  that overflow to infinity (``1e999``) and integers beyond 64 bits (Python's own parser takes 4300
  digits, then raises a ``ValueError`` no caller expects);
- strings or keys holding a lone UTF-16 surrogate (``"\\ud800"``): valid JSON text, but not text, so
  the tokenizer and every encoder after it would fail. Escaped surrogate pairs (emoji written by
  ASCII-only encoders) are ordinary characters and pass;
- nesting deeper than :data:`MAX_DEPTH` (recursive code after the parser, translation, templates,
  schemas, would fail long before a parser's own limit near 1000).

The depth walk is skipped when the bytes prove it needless (fewer brackets than ``MAX_DEPTH``), so an
ordinary body costs one decode.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from cortex.errors import InvalidRequestError

MAX_DEPTH = 64
_NON_FINITE = re.compile(rb"[:,\[]\s*-?(NaN|Infinity)\b")
_HIGH, _LOW = rb"\\u[dD][89abAB][0-9a-fA-F]{2}", rb"\\u[dD][c-fC-F][0-9a-fA-F]{2}"
_LONE_SURROGATE = re.compile(rb"%s(?!%s)|(?<!%s)%s" % (_HIGH, _LOW, _HIGH, _LOW))


def loads(raw: bytes) -> Any:
    """Parse a request body strictly; every refusal is an InvalidRequestError (a 400)."""
    try:
        value = msgspec.json.decode(raw)
    except RecursionError:
        raise _too_deep() from None
    except msgspec.ValidationError as error:  # a number out of range
        raise InvalidRequestError(f"the request body is not accepted: {error}") from None
    except msgspec.DecodeError as error:
        raise InvalidRequestError(_why_not_json(raw, error)) from None
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH:
        _check_depth(value)
    return value


def _why_not_json(raw: bytes, error: msgspec.DecodeError) -> str:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as bad:
        return f"the request body is not UTF-8 (byte {bad.start})"
    if _NON_FINITE.search(raw) is not None:
        return "the request body is not valid JSON: NaN and Infinity are not JSON numbers"
    surrogate = _LONE_SURROGATE.search(raw)
    if surrogate is not None:
        escape = surrogate.group().decode()
        return f"the request body holds a lone UTF-16 surrogate ({escape}), which is not text"
    return f"the request body is not valid JSON: {error}"


def _too_deep() -> InvalidRequestError:
    return InvalidRequestError(f"the request body is nested more than {MAX_DEPTH} levels deep")


def _check_depth(value: Any) -> None:
    """Walk ``value`` (iteratively: it may be deep) for nesting past MAX_DEPTH."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if level > MAX_DEPTH:
            raise _too_deep()
        stack.extend((child, level + 1) for child in children if isinstance(child, dict | list))
