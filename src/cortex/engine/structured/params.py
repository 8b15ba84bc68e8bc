"""StructuredOutputsParams: the constraint a request's output must satisfy (vLLM's name for it).

Exactly one of ``json`` (a JSON schema, as JSON text), ``json_object`` (any JSON object) or ``grammar``
(an llguidance Lark grammar) is set. ``reasoning_end_token_id``, when set, leaves the output free until
that token (``</think>``) has been generated: the constraint applies to what follows. This module does
not import llguidance; the engine compiles the constraint when it admits the request.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cortex.errors import InvalidRequestError


@dataclass(frozen=True, slots=True)
class StructuredOutputsParams:
    json: str | None = None
    json_object: bool = False
    grammar: str | None = None
    reasoning_end_token_id: int | None = None

    def __post_init__(self) -> None:
        chosen = sum((self.json is not None, self.json_object, self.grammar is not None))
        if chosen != 1:
            raise InvalidRequestError(
                "structured outputs need exactly one of json, json_object or grammar",
                param="structured_outputs",
            )

    @classmethod
    def from_schema(cls, schema: Mapping[str, Any]) -> StructuredOutputsParams:
        """A JSON-schema constraint; the schema must be a JSON object."""
        if not isinstance(schema, Mapping):
            raise InvalidRequestError("a JSON schema must be an object", param="schema")
        return cls(json=json.dumps(schema, sort_keys=True))
