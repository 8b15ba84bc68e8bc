"""The root of cortex's exception tree.

    CortexError
    ├── InvalidRequestError (also a ValueError)     bad input from a caller -> 400
    │   └── ContextLengthError                       prompt + max_tokens do not fit the model -> 400
    ├── cortex.engine.errors.EngineError             model loading and runtime failures
    ├── cortex.translate.errors.TranslationError     a body that cannot be translated -> 400
    └── cortex.fleet.errors.FleetError               routing, loading and neuron failures

Servers map each class to an HTTP status and an error envelope in the caller's dialect.
"""

from __future__ import annotations


class CortexError(Exception):
    """Base class of every error cortex raises on purpose."""


class InvalidRequestError(CortexError, ValueError):
    """A caller's input is invalid; ``param`` names the offending field when known."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class ContextLengthError(InvalidRequestError):
    """The prompt (plus the requested output) is longer than the model's context."""
