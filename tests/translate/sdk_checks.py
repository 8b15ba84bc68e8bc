"""Validation through the official SDKs: their generated types and their own stream accumulators.

Every translated body or event in these tests goes through one of these functions, so "valid" means
"what the openai / anthropic Python SDKs accept", not what this project believes the protocols are.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic.types
import pydantic
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types.message_create_params import MessageCreateParamsBase
from anthropic.types.shared.error_response import ErrorResponse
from openai import ContentFilterFinishReasonError, LengthFinishReasonError, omit
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.chat.completion_create_params import CompletionCreateParamsBase
from openai.types.responses import Response, ResponseStreamEvent
from openai.types.responses.response_create_params import ResponseCreateParamsBase

_EVENT = pydantic.TypeAdapter(anthropic.types.RawMessageStreamEvent)
_ANTHROPIC_REQUEST = pydantic.TypeAdapter(MessageCreateParamsBase)
_OPENAI_REQUEST = pydantic.TypeAdapter(CompletionCreateParamsBase)


def _force(value: Any) -> Any:
    """Consume the lazy validators pydantic builds for ``Iterable[...]`` fields, so that every
    nested message and block is validated, not only the top level."""
    if isinstance(value, dict):
        return {key: _force(item) for key, item in value.items()}
    if isinstance(value, list | tuple | Iterator) or type(value).__name__ == "ValidatorIterator":
        return [_force(item) for item in value]
    return value


def anthropic_request(body: dict[str, Any]) -> dict[str, Any]:
    return _force(_ANTHROPIC_REQUEST.validate_python(body))


def openai_request(body: dict[str, Any]) -> dict[str, Any]:
    return _force(_OPENAI_REQUEST.validate_python(body))


def anthropic_message(body: dict[str, Any]) -> anthropic.types.Message:
    return anthropic.types.Message.model_validate(body)


def anthropic_event(event: dict[str, Any]) -> Any:
    if event["type"] == "error":
        return ErrorResponse.model_validate(event)
    return _EVENT.validate_python(event)


def openai_completion(body: dict[str, Any]) -> ChatCompletion:
    return ChatCompletion.model_validate(body)


def openai_chunk(chunk: dict[str, Any]) -> ChatCompletionChunk:
    return ChatCompletionChunk.model_validate(chunk)


def assemble_anthropic(events: list[dict[str, Any]]) -> anthropic.types.Message:
    """Feed events through the SDK's accumulator, checking event order and indices as a client would."""
    assert events[0]["type"] == "message_start"
    assert events[-1]["type"] == "message_stop"
    snapshot = None
    json_bufs: dict[int, bytes] = {}
    open_index: int | None = None
    next_index = 0
    for event in events:
        parsed = anthropic_event(event)
        if event["type"] == "content_block_start":
            assert open_index is None, "a block started before the previous one stopped"
            assert event["index"] == next_index, "block indices must be contiguous"
            open_index = event["index"]
        elif event["type"] == "content_block_delta":
            assert event["index"] == open_index
        elif event["type"] == "content_block_stop":
            assert event["index"] == open_index
            open_index = None
            next_index += 1
        snapshot = accumulate_event(event=parsed, current_snapshot=snapshot, json_bufs=json_bufs)
    assert open_index is None
    assert snapshot is not None
    return anthropic_message(snapshot.model_dump())


def assemble_openai(chunks: list[dict[str, Any]]) -> ChatCompletion:
    """The SDK's final completion; for ``length`` / ``content_filter`` finishes the SDK raises with
    the assembled completion attached, which is used instead."""
    state: ChatCompletionStreamState[None] = ChatCompletionStreamState()
    for chunk in chunks:
        state.handle_chunk(openai_chunk(chunk))
    try:
        final: Any = state.get_final_completion()
    except (LengthFinishReasonError, ContentFilterFinishReasonError):
        final = state.current_completion_snapshot
    return openai_completion(final.model_dump())


_RESPONSES_REQUEST = pydantic.TypeAdapter(ResponseCreateParamsBase)
_RESPONSES_EVENT = pydantic.TypeAdapter(ResponseStreamEvent)


def responses_request(body: dict[str, Any]) -> dict[str, Any]:
    return _force(_RESPONSES_REQUEST.validate_python(body))


def responses_response(body: dict[str, Any]) -> Response:
    return Response.model_validate(body)


def responses_event(event: dict[str, Any]) -> Any:
    return _RESPONSES_EVENT.validate_python(event)


def assemble_responses(events: list[dict[str, Any]]) -> Response:
    """The SDK's stream helper state (what ``client.responses.stream`` uses): events in order, the
    final Response from ``response.completed``, or the last lifecycle event's response otherwise."""
    assert events[0]["type"] == "response.created"
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    state: ResponseStreamState[Any] = ResponseStreamState(input_tools=omit, text_format=omit)
    for event in events:
        state.handle_event(responses_event(event))
    final = state._completed_response
    if final is None:
        return responses_response(events[-1]["response"])
    return responses_response(final.model_dump(exclude={"output_parsed"}))
