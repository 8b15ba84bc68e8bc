"""cortex.translate: OpenAI Chat Completions <-> Anthropic Messages, and OpenAI Responses -> Chat
Completions and back, as pure functions over dicts.

Requests, responses, streams (sync and async) and error envelopes, both ways; no I/O, no torch.
docs/translate.md holds the field-by-field mapping. Module map:

    requests.py     request bodies                 responses.py    non-streamed responses
    streams.py      the four stream functions      anthropic_stream.py / openai_stream.py  their state
    envelopes.py    error bodies and statuses      content.py, tools.py, thinking.py, usage.py,
    errors.py       TranslationError               stop_reasons.py, ids.py, fields.py: shared pieces
    responses_input.py   Responses request -> Chat Completions request; input items as stored
    responses_output.py  chat.completion / chunks -> Response object / Responses events
    responses_items.py   ids, namespaced tool names, the reasoning carrier both directions share
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
from cortex.translate.responses_input import responses_input_items, responses_to_openai_request
from cortex.translate.responses_output import (
    aopenai_to_responses_stream,
    openai_to_responses_response,
    openai_to_responses_stream,
)
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
    "aopenai_to_responses_stream",
    "openai_error",
    "openai_error_to_anthropic",
    "openai_error_type_for_status",
    "openai_to_anthropic_request",
    "openai_to_anthropic_response",
    "openai_to_anthropic_stream",
    "openai_to_responses_response",
    "openai_to_responses_stream",
    "responses_input_items",
    "responses_to_openai_request",
    "status_for_anthropic_error_type",
    "status_for_openai_error_type",
]
