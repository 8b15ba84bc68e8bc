"""Errors raised by cortex.translate.

    cortex.errors.CortexError
    └── cortex.errors.InvalidRequestError (also a ValueError)
        └── TranslationError      a body that cannot be translated; ``param`` names the field -> 400

Servers turn a ``TranslationError`` into a 400 in the caller's dialect with
``openai_error(400, err.message, param=err.param)`` or ``anthropic_error(400, err.message)``.
"""

from __future__ import annotations

from cortex.errors import InvalidRequestError


class TranslationError(InvalidRequestError):
    """A field holds something the other dialect cannot express; ``param`` is its path, e.g.
    ``messages[2].content[0].type``."""

    def __init__(self, message: str, *, param: str) -> None:
        super().__init__(f"{param}: {message}", param=param)
