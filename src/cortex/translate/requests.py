"""Request bodies: Anthropic Messages <-> OpenAI Chat Completions.

``anthropic_to_openai_request`` is what the gateway runs on every ``POST /v1/messages`` before a
neuron sees it; ``openai_to_anthropic_request`` is its inverse. docs/translate.md has the full
field table, including the hint fields that are accepted and dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cortex.translate.content import (
    assistant_blocks_to_message,
    assistant_message_to_blocks,
    image_block_to_part,
    image_part_to_block,
    text_blocks,
    text_content,
    typed_items,
    unsupported,
)
from cortex.translate.errors import TranslationError
from cortex.translate.fields import JSON, as_dict, as_list, as_str, dict_field, field, list_field, str_field
from cortex.translate.thinking import anthropic_thinking_to_openai, openai_thinking_to_anthropic
from cortex.translate.tools import (
    anthropic_tool_choice_to_openai,
    anthropic_tools_to_openai,
    openai_tool_choice_to_anthropic,
    openai_tools_to_anthropic,
)

DEFAULT_MAX_TOKENS = 4096
"""``max_tokens`` for an Anthropic request made from an OpenAI one that set no limit (Anthropic
requires one)."""

_SAMPLING_KEYS = ("temperature", "top_p", "top_k")
_BILLING_HEADER = "x-anthropic-billing-header:"
# OpenAI fields Anthropic cannot serve, with the value that means "not used".
_UNSERVABLE_DEFAULTS: dict[str, Any] = {
    "n": 1,
    "logprobs": False,
    "top_logprobs": 0,
    "presence_penalty": 0,
    "frequency_penalty": 0,
    "repetition_penalty": 1,
    "min_p": 0,
    "logit_bias": {},
    "audio": None,
    "modalities": ["text"],
    "prediction": None,
    "function_call": None,
    "functions": None,
    "web_search_options": None,
}
# service tiers both dialects name: Anthropic's "standard_only" is OpenAI's "default"
_TIER_TO_OPENAI = {"auto": "auto", "standard_only": "default"}
_TIER_TO_ANTHROPIC = {value: key for key, value in _TIER_TO_OPENAI.items()}


def anthropic_to_openai_request(body: Mapping[str, Any]) -> JSON:
    """An Anthropic ``POST /v1/messages`` body as an OpenAI ``POST /v1/chat/completions`` body."""
    body = as_dict(body, "body")
    out: JSON = {"model": str_field(body, "model", "")}
    messages: list[JSON] = []
    system = without_billing_header(body.get("system"))
    if system:
        messages.append({"role": "system", "content": text_content(system, "system")})
    anthropic_messages = list_field(body, "messages", "")
    for i, item in enumerate(anthropic_messages):
        messages.extend(_anthropic_message_to_openai(as_dict(item, f"messages[{i}]"), f"messages[{i}]"))
    out["messages"] = messages
    out["max_completion_tokens"] = field(body, "max_tokens", "")
    for key in _SAMPLING_KEYS:
        if body.get(key) is not None:
            out[key] = body[key]
    if body.get("stop_sequences"):
        out["stop"] = list(as_list(body["stop_sequences"], "stop_sequences"))
    metadata = as_dict(body.get("metadata") or {}, "metadata")
    if metadata.get("user_id") is not None:
        out["user"] = as_str(metadata["user_id"], "metadata.user_id")
    if body.get("service_tier") in _TIER_TO_OPENAI:
        out["service_tier"] = _TIER_TO_OPENAI[body["service_tier"]]
    if body.get("tools"):
        out["tools"] = anthropic_tools_to_openai(body["tools"], "tools", _loaded_tools(anthropic_messages))
    if body.get("tool_choice") is not None:
        out.update(anthropic_tool_choice_to_openai(body["tool_choice"], "tool_choice"))
    output_config = as_dict(body.get("output_config") or {}, "output_config")
    out.update(anthropic_thinking_to_openai(body.get("thinking"), output_config.get("effort")))
    if output_config.get("format") is not None:
        out["response_format"] = _anthropic_format_to_openai(output_config["format"], "output_config.format")
    if body.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out


def openai_to_anthropic_request(
    body: Mapping[str, Any], *, default_max_tokens: int = DEFAULT_MAX_TOKENS
) -> JSON:
    """An OpenAI ``POST /v1/chat/completions`` body as an Anthropic ``POST /v1/messages`` body.

    Fields Anthropic cannot serve (``n > 1``, logprobs, penalties, ...) raise TranslationError when
    set to anything but their neutral value.
    """
    body = as_dict(body, "body")
    for key, neutral in _UNSERVABLE_DEFAULTS.items():
        if body.get(key) is not None and body[key] != neutral:
            raise TranslationError("has no Anthropic equivalent; leave it unset", param=key)
    system, messages = _openai_messages_to_anthropic(list_field(body, "messages", ""))
    out: JSON = {"model": str_field(body, "model", "")}
    if system is not None:
        out["system"] = system
    out["messages"] = messages
    limit = body.get("max_completion_tokens")
    out["max_tokens"] = limit if limit is not None else body.get("max_tokens") or default_max_tokens
    for key in _SAMPLING_KEYS:
        if body.get(key) is not None:
            out[key] = body[key]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(as_list(stop, "stop"))
    user_key = "user" if body.get("user") is not None else "safety_identifier"
    if body.get(user_key) is not None:
        out["metadata"] = {"user_id": as_str(body[user_key], user_key)}
    if body.get("service_tier") in _TIER_TO_ANTHROPIC:
        out["service_tier"] = _TIER_TO_ANTHROPIC[body["service_tier"]]
    if body.get("tools"):
        out["tools"] = openai_tools_to_anthropic(body["tools"], "tools")
    tool_choice = openai_tool_choice_to_anthropic(body.get("tool_choice"), body.get("parallel_tool_calls"))
    if tool_choice is not None:
        out["tool_choice"] = tool_choice
    out.update(openai_thinking_to_anthropic(body.get("reasoning_effort"), body.get("chat_template_kwargs")))
    if body.get("response_format") is not None:
        output_format = _openai_format_to_anthropic(body["response_format"], "response_format")
        if output_format is not None:
            out.setdefault("output_config", {})["format"] = output_format
    if body.get("stream"):
        out["stream"] = True
    return out


def without_billing_header(system: Any) -> Any:
    """``system`` less Claude Code's ``x-anthropic-billing-header: ...`` text block: a billing hint
    that changes on every request, so keeping it would defeat prefix caching."""
    if not isinstance(system, list):
        return system
    return [block for block in system if not _is_billing_header(block)]


def _is_billing_header(block: Any) -> bool:
    return isinstance(block, Mapping) and str(block.get("text", "")).startswith(_BILLING_HEADER)


def _loaded_tools(messages: list[Any]) -> set[str]:
    """Names of deferred tools (``defer_loading``) that a tool search has loaded: the
    ``tool_reference`` blocks in tool results. Called on already translated (so checked) messages."""
    names: set[str] = set()
    for message in messages:
        for block in message["content"] if isinstance(message["content"], list) else []:
            if block["type"] == "tool_result" and isinstance(block.get("content"), list):
                names.update(
                    inner["tool_name"] for inner in block["content"] if inner["type"] == "tool_reference"
                )
    return names


def _anthropic_message_to_openai(message: Mapping[str, Any], path: str) -> list[JSON]:
    role = str_field(message, "role", path)
    content = field(message, "content", path)
    if role == "system":
        return [{"role": "system", "content": text_content(content, f"{path}.content")}]
    if role == "user":
        return _anthropic_user_to_openai(content, f"{path}.content")
    if role == "assistant":
        return [assistant_blocks_to_message(content, f"{path}.content")]
    raise TranslationError(f"unknown role {role!r}", param=f"{path}.role")


def _anthropic_user_to_openai(content: Any, path: str) -> list[JSON]:
    """One user turn as OpenAI messages: a ``tool`` message per ``tool_result`` (OpenAI wants them
    right after the assistant's tool calls), then one user message with the remaining parts and any
    images the tool results held (OpenAI tool messages carry text only)."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    tool_messages: list[JSON] = []
    parts: list[JSON] = []
    moved_images: list[JSON] = []
    for kind, block, item_path in typed_items(content, path):
        if kind == "text":
            parts.append({"type": "text", "text": str_field(block, "text", item_path)})
        elif kind == "image":
            parts.append(image_block_to_part(block, item_path))
        elif kind == "tool_result":
            tool_messages.append(_tool_result_to_openai(block, item_path, moved_images))
        else:
            raise unsupported(kind, item_path)
    user_parts = moved_images + parts
    if user_parts or not tool_messages:
        return [*tool_messages, {"role": "user", "content": user_parts}]
    return tool_messages


def _tool_result_to_openai(block: Mapping[str, Any], path: str, moved_images: list[JSON]) -> JSON:
    message: JSON = {
        "role": "tool",
        "tool_call_id": str_field(block, "tool_use_id", path),
    }
    content = block.get("content", "")
    if isinstance(content, str):
        message["content"] = content
    else:
        texts: list[JSON] = []
        for kind, inner, inner_path in typed_items(content, f"{path}.content"):
            if kind == "text":
                texts.append({"type": "text", "text": str_field(inner, "text", inner_path)})
            elif kind == "image":
                moved_images.append(image_block_to_part(inner, inner_path))
            elif kind == "tool_reference":
                name = str_field(inner, "tool_name", inner_path)
                texts.append({"type": "text", "text": f"Tool loaded: {name}"})
            else:
                raise unsupported(kind, inner_path)
        message["content"] = texts
    if block.get("is_error"):
        message["is_error"] = True
    return message


def _openai_messages_to_anthropic(items: list[Any]) -> tuple[str | list[JSON] | None, list[JSON]]:
    """OpenAI messages as Anthropic ``(system, messages)``: leading system/developer messages become
    ``system``; later ones stay in place as ``system`` turns; ``tool`` messages (and a user message
    right after them) fold into one user turn of ``tool_result`` blocks."""
    system_parts: list[str | list[JSON]] = []
    messages: list[JSON] = []
    tool_turn: JSON | None = None  # the user turn collecting tool results while it is the last message
    for i, item in enumerate(items):
        path = f"messages[{i}]"
        message = as_dict(item, path)
        role = str_field(message, "role", path)
        if role == "tool":
            if tool_turn is None:
                tool_turn = {"role": "user", "content": []}
                messages.append(tool_turn)
            tool_turn["content"].append(_openai_tool_to_anthropic(message, path))
            continue
        if role in ("system", "developer"):
            content = text_content(field(message, "content", path), f"{path}.content")
            if messages:
                messages.append({"role": "system", "content": content})
            else:
                system_parts.append(content)
        elif role == "user":
            blocks = _openai_user_content_to_anthropic(field(message, "content", path), f"{path}.content")
            if tool_turn is not None:
                tool_turn["content"].extend(text_blocks(blocks))
            else:
                messages.append({"role": "user", "content": blocks})
        elif role == "assistant":
            messages.append({"role": "assistant", "content": assistant_message_to_blocks(message, path)})
        else:
            raise TranslationError(f"unknown role {role!r}", param=f"{path}.role")
        tool_turn = None
    return _join_system(system_parts), messages


def _join_system(parts: list[str | list[JSON]]) -> str | list[JSON] | None:
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    blocks: list[JSON] = []
    for part in parts:
        blocks.extend(text_blocks(part))
    return blocks


def _openai_user_content_to_anthropic(content: Any, path: str) -> str | list[JSON]:
    if isinstance(content, str):
        return content
    blocks: list[JSON] = []
    for kind, part, part_path in typed_items(content, path):
        if kind == "text":
            blocks.append({"type": "text", "text": str_field(part, "text", part_path)})
        elif kind == "image_url":
            blocks.append(image_part_to_block(part, part_path))
        else:
            raise unsupported(kind, part_path)
    return blocks


def _openai_tool_to_anthropic(message: Mapping[str, Any], path: str) -> JSON:
    result: JSON = {
        "type": "tool_result",
        "tool_use_id": str_field(message, "tool_call_id", path),
        "content": text_content(field(message, "content", path), f"{path}.content"),
    }
    if message.get("is_error"):
        result["is_error"] = True
    return result


def _anthropic_format_to_openai(value: Any, path: str) -> JSON:
    output_format = as_dict(value, path)
    kind = str_field(output_format, "type", path)
    if kind != "json_schema":
        raise TranslationError(f"output format {kind!r} cannot be translated", param=f"{path}.type")
    schema = dict_field(output_format, "schema", path)
    return {"type": "json_schema", "json_schema": {"name": "output", "schema": dict(schema), "strict": True}}


def _openai_format_to_anthropic(value: Any, path: str) -> JSON | None:
    response_format = as_dict(value, path)
    kind = str_field(response_format, "type", path)
    if kind == "text":
        return None
    if kind != "json_schema":
        raise TranslationError(f"response format {kind!r} has no Anthropic equivalent", param=f"{path}.type")
    json_schema = dict_field(response_format, "json_schema", path)
    schema = dict_field(json_schema, "schema", f"{path}.json_schema")
    return {"type": "json_schema", "schema": dict(schema)}
