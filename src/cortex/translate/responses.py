"""Non-streaming responses: OpenAI ``chat.completion`` <-> Anthropic ``message``.

Content order on the Anthropic side is thinking, text, then tool calls, which is the order a model
produces them in and the only order OpenAI's message shape can express.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from cortex.translate.content import assistant_blocks_to_message, assistant_message_to_blocks
from cortex.translate.errors import TranslationError
from cortex.translate.fields import JSON, as_dict, dict_field, field, list_field, str_field
from cortex.translate.ids import anthropic_message_id, openai_completion_id
from cortex.translate.stop_reasons import anthropic_stop, openai_finish
from cortex.translate.usage import anthropic_usage_to_openai, openai_usage_to_anthropic


def openai_to_anthropic_response(body: Mapping[str, Any], *, model: str | None = None) -> JSON:
    """An OpenAI ``chat.completion`` as an Anthropic ``message``; only ``choices[0]`` is used.

    ``model`` overrides the upstream's model name (e.g. with the alias the client asked for).
    """
    body = as_dict(body, "body")
    choices = list_field(body, "choices", "")
    if not choices:
        raise TranslationError("a completion needs at least one choice", param="choices")
    choice = as_dict(choices[0], "choices[0]")
    message = dict_field(choice, "message", "choices[0]")
    content = assistant_message_to_blocks(message, "choices[0].message")
    called_tool = any(block["type"] == "tool_use" for block in content)
    stop_reason, stop_sequence = anthropic_stop(
        choice.get("finish_reason"), choice.get("stop_reason"), called_tool=called_tool
    )
    return {
        "id": anthropic_message_id(str_field(body, "id", "")),
        "type": "message",
        "role": "assistant",
        "model": model or str_field(body, "model", ""),
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": openai_usage_to_anthropic(body.get("usage"), "usage"),
    }


def anthropic_to_openai_response(
    body: Mapping[str, Any], *, model: str | None = None, created: int | None = None
) -> JSON:
    """An Anthropic ``message`` as an OpenAI ``chat.completion`` with one choice.

    ``created`` defaults to now (Anthropic messages carry no timestamp).
    """
    body = as_dict(body, "body")
    message = assistant_blocks_to_message(field(body, "content", ""), "content")
    choice: JSON = {
        "index": 0,
        "message": message,
        "finish_reason": openai_finish(body.get("stop_reason"), called_tool="tool_calls" in message),
        "logprobs": None,
    }
    if body.get("stop_sequence") is not None:
        choice["stop_reason"] = body["stop_sequence"]
    return {
        "id": openai_completion_id(str_field(body, "id", "")),
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": model or str_field(body, "model", ""),
        "choices": [choice],
        "usage": anthropic_usage_to_openai(body.get("usage"), "usage"),
    }
