"""cortex.translate: OpenAI Chat Completions <-> Anthropic Messages, as pure functions over dicts.

Requests, responses, streams (sync and async) and error envelopes, both ways; no I/O, no torch.
docs/translate.md holds the field-by-field mapping. Module map:

    requests.py     request bodies                 responses.py    non-streamed responses
    streams.py      the four stream functions      anthropic_stream.py / openai_stream.py  their state
    envelopes.py    error bodies and statuses      content.py, tools.py, thinking.py, usage.py,
    errors.py       TranslationError               stop_reasons.py, ids.py, fields.py: shared pieces
"""

from __future__ import annotations

from cortex.translate.envelopes import (
    anthropic_error,
    anthropic_error_to_openai,
    anthropic_error_type_for_status,
    openai_error,
    openai_error_to_anthropic,
    openai_error_type_for_status,
    status_for_anthropic_error_type,
    status_for_openai_error_type,
)
from cortex.translate.errors import TranslationError
from cortex.translate.requests import anthropic_to_openai_request, openai_to_anthropic_request
from cortex.translate.responses import anthropic_to_openai_response, openai_to_anthropic_response
from cortex.translate.streams import (
    aanthropic_to_openai_stream,
    anthropic_to_openai_stream,
    aopenai_to_anthropic_stream,
    openai_to_anthropic_stream,
)

__all__ = [
    "TranslationError",
    "aanthropic_to_openai_stream",
    "anthropic_error",
    "anthropic_error_to_openai",
    "anthropic_error_type_for_status",
    "anthropic_to_openai_request",
    "anthropic_to_openai_response",
    "anthropic_to_openai_stream",
    "aopenai_to_anthropic_stream",
    "openai_error",
    "openai_error_to_anthropic",
    "openai_error_type_for_status",
    "openai_to_anthropic_request",
    "openai_to_anthropic_response",
    "openai_to_anthropic_stream",
    "status_for_anthropic_error_type",
    "status_for_openai_error_type",
]
