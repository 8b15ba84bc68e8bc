"""The text layer's exceptions.

    CortexError
    └── InvalidRequestError
        └── ChatTemplateError          a chat template refused the messages (or failed to render) -> 400
    CortexError
    └── EngineError
        └── ModelLoadError
            └── TokenizerLoadError     a model folder's tokenizer files cannot be read

The template's own message (e.g. Qwen's "System message must be at the beginning.") is kept verbatim.
"""

from __future__ import annotations

from cortex.engine.errors import ModelLoadError
from cortex.errors import InvalidRequestError


class ChatTemplateError(InvalidRequestError):
    """Rendering the chat template failed; ``message`` is the template's own explanation."""

    def __init__(self, message: str) -> None:
        super().__init__(message, param="messages")


class TokenizerLoadError(ModelLoadError):
    """tokenizer.json, tokenizer_config.json or the chat template of a model folder is unreadable."""
