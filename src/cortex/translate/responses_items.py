"""Pieces both directions of the Responses mapping share: ids, namespaced tool names, reasoning carriers.

- Ids: ``resp_<hex>`` for a response; items get ``msg_``, ``rs_``, ``fc_`` and ``fco_`` ids.
- Namespaced tools: a function ``f`` inside a ``{"type": "namespace", "name": "ns"}`` tool is offered
  to the model as ``ns.f`` (a plain function name cannot hold a dot), and a call to ``ns.f`` comes back
  as a ``function_call`` with ``name: "f", namespace: "ns"``.
- Reasoning: cortex has no encrypted reasoning. A client that asks for ``reasoning.encrypted_content``
  (Codex, which sends ``store: false``) gets the reasoning text in an opaque carrier,
  ``cortex:<base64 of the UTF-8 text>``, which it sends back unchanged; it is encoded, not encrypted.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

NAMESPACE_SEPARATOR = "."
ENCRYPTED_PREFIX = "cortex:"
INCLUDE_ENCRYPTED_REASONING = "reasoning.encrypted_content"
INCLUDE_LOGPROBS = "message.output_text.logprobs"


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def namespaced_name(namespace: str | None, name: str) -> str:
    return f"{namespace}{NAMESPACE_SEPARATOR}{name}" if namespace else name


def split_namespace(name: str, namespaces: frozenset[str]) -> tuple[str | None, str]:
    """``ns.f`` -> ``("ns", "f")`` when ``ns`` is one of the request's namespaces, else ``(None, name)``."""
    namespace, separator, inner = name.partition(NAMESPACE_SEPARATOR)
    if separator and inner and namespace in namespaces:
        return namespace, inner
    return None, name


def namespaces_of(tools: Any) -> frozenset[str]:
    """The names of a Responses request's namespace tools (nothing if ``tools`` is not a list)."""
    if not isinstance(tools, list):
        return frozenset()
    return frozenset(
        tool["name"]
        for tool in tools
        if isinstance(tool, Mapping) and tool.get("type") == "namespace" and isinstance(tool.get("name"), str)
    )


def encode_reasoning(text: str) -> str:
    return ENCRYPTED_PREFIX + base64.b64encode(text.encode()).decode("ascii")


def decode_reasoning(carrier: str) -> str | None:
    """The text of a carrier made by :func:`encode_reasoning`; None for anything else (another
    server's encrypted reasoning cannot be read here)."""
    if not carrier.startswith(ENCRYPTED_PREFIX):
        return None
    try:
        return base64.b64decode(carrier.removeprefix(ENCRYPTED_PREFIX), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None


def includes(body: Mapping[str, Any], what: str) -> bool:
    include = body.get("include")
    return isinstance(include, Sequence) and not isinstance(include, str) and what in include
