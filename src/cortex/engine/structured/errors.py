"""Structured outputs' errors.

CortexError
└── InvalidRequestError (cortex.errors)
    └── UnsupportedSchemaError    a JSON schema or grammar llguidance cannot compile -> 400
"""

from __future__ import annotations

from cortex.errors import InvalidRequestError


class UnsupportedSchemaError(InvalidRequestError):
    """The request's schema or grammar uses a feature that cannot be enforced; the message names it."""
