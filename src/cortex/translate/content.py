"""Content pieces shared by requests and responses: text lists, images, tool calls, thinking blocks.

Anthropic content *blocks* (``{"type": "text" | "image" | ...}``) and OpenAI content *parts*
(``{"type": "text" | "image_url" | ...}``) map one to one for text and images. Tool calls and thinking
need a message-level view and are converted here too, so requests and responses share one rule.

Thinking signatures survive a round trip through OpenAI's dialect in the assistant message's
``thinking_blocks`` list (the exact Anthropic blocks, in order), next to ``reasoning_content`` (their
text, for chat templates).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from cortex.translate.errors import TranslationError
from cortex.translate.fields import (
    JSON,
    as_dict,
    as_list,
    as_str,
    dict_field,
    dump_arguments,
    field,
    parse_arguments,
    str_field,
)

_DATA_URL = re.compile(r"^data:(?P<media_type>[\w.+-]+/[\w.+-]+);base64,(?P<data>.*)$", re.DOTALL)


def block_type(block: Mapping[str, Any], path: str) -> str:
    return str_field(block, "type", path)


def unsupported(kind: str, path: str) -> TranslationError:
    return TranslationError(f"content of type {kind!r} cannot be translated", param=f"{path}.type")


def typed_items(content: Any, path: str) -> Iterator[tuple[str, Mapping[str, Any], str]]:
    """A list of Anthropic blocks or OpenAI parts as ``(type, item, item path)``, each item checked to
    be an object with a string ``type``."""
    for i, item in enumerate(as_list(content, path)):
        item_path = f"{path}[{i}]"
        block = as_dict(item, item_path)
        yield block_type(block, item_path), block, item_path


def text_blocks(text: str | list[JSON]) -> list[JSON]:
    """``text_content``'s result as a list of text items (a string becomes one)."""
    return [{"type": "text", "text": text}] if isinstance(text, str) else text


def text_content(content: Any, path: str) -> str | list[JSON]:
    """A string, or a list of text items, checked and copied with only their own fields. Anthropic
    text blocks and OpenAI text parts have the same shape, ``{"type": "text", "text": ...}``."""
    if isinstance(content, str):
        return content
    items: list[JSON] = []
    for kind, block, item_path in typed_items(content, path):
        if kind != "text":
            raise unsupported(kind, item_path)
        items.append({"type": "text", "text": str_field(block, "text", item_path)})
    return items


def image_block_to_part(block: Mapping[str, Any], path: str) -> JSON:
    """An Anthropic image block (base64 or URL source) as an OpenAI ``image_url`` part."""
    source = dict_field(block, "source", path)
    kind = str_field(source, "type", f"{path}.source")
    if kind == "base64":
        media_type = str_field(source, "media_type", f"{path}.source")
        data = str_field(source, "data", f"{path}.source")
        url = f"data:{media_type};base64,{data}"
    elif kind == "url":
        url = str_field(source, "url", f"{path}.source")
    else:
        raise TranslationError(
            f"image source of type {kind!r} cannot be translated", param=f"{path}.source.type"
        )
    return {"type": "image_url", "image_url": {"url": url}}


def image_part_to_block(part: Mapping[str, Any], path: str) -> JSON:
    """An OpenAI ``image_url`` part (data URL or http URL) as an Anthropic image block."""
    image_url = dict_field(part, "image_url", path)
    url = str_field(image_url, "url", f"{path}.image_url")
    if url.startswith("data:"):
        match = _DATA_URL.match(url)
        if match is None:
            raise TranslationError(
                "a data URL must be data:<media type>;base64,<data>", param=f"{path}.image_url.url"
            )
        source: JSON = {"type": "base64", "media_type": match["media_type"], "data": match["data"]}
    else:
        source = {"type": "url", "url": url}
    return {"type": "image", "source": source}


def tool_use_to_call(block: Mapping[str, Any], path: str) -> JSON:
    """An Anthropic ``tool_use`` block as an OpenAI function tool call."""
    return {
        "id": str_field(block, "id", path),
        "type": "function",
        "function": {
            "name": str_field(block, "name", path),
            "arguments": dump_arguments(field(block, "input", path), f"{path}.input"),
        },
    }


def tool_call_to_use(call: Mapping[str, Any], path: str) -> JSON:
    """An OpenAI function tool call as an Anthropic ``tool_use`` block (arguments parsed)."""
    kind = call.get("type", "function")
    if kind != "function":
        raise TranslationError(f"tool call of type {kind!r} cannot be translated", param=f"{path}.type")
    function = dict_field(call, "function", path)
    arguments = as_str(function.get("arguments", ""), f"{path}.function.arguments")
    return {
        "type": "tool_use",
        "id": str_field(call, "id", path),
        "name": str_field(function, "name", f"{path}.function"),
        "input": parse_arguments(arguments, f"{path}.function.arguments"),
    }


def thinking_block(block: Mapping[str, Any], path: str) -> JSON:
    """A ``thinking`` or ``redacted_thinking`` block, checked and copied with only its own fields."""
    if block_type(block, path) == "redacted_thinking":
        return {"type": "redacted_thinking", "data": str_field(block, "data", path)}
    return {
        "type": "thinking",
        "thinking": str_field(block, "thinking", path),
        "signature": as_str(block.get("signature", ""), f"{path}.signature"),
    }


def reasoning_text(blocks: list[JSON]) -> str:
    """The text of thinking blocks, joined, as ``reasoning_content``."""
    return "\n\n".join(block["thinking"] for block in blocks if block["type"] == "thinking")


def openai_thinking_blocks(message: Mapping[str, Any], path: str) -> list[JSON]:
    """The thinking blocks an OpenAI assistant message carries: its exact ``thinking_blocks`` when
    present (signatures kept), else one unsigned block holding ``reasoning_content``."""
    carried = message.get("thinking_blocks")
    if carried is not None:
        items = as_list(carried, f"{path}.thinking_blocks")
        return [
            thinking_block(as_dict(b, f"{path}.thinking_blocks[{i}]"), f"{path}.thinking_blocks[{i}]")
            for i, b in enumerate(items)
        ]
    for key in ("reasoning_content", "reasoning"):
        text = message.get(key)
        if text:
            return [{"type": "thinking", "thinking": as_str(text, f"{path}.{key}"), "signature": ""}]
    return []


def assistant_blocks_to_message(content: Any, path: str) -> JSON:
    """Anthropic assistant content (a string or blocks) as an OpenAI assistant message: text joined
    into ``content``, thinking into ``reasoning_content`` + ``thinking_blocks``, ``tool_use`` into
    ``tool_calls``."""
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts: list[str] = []
    thinking: list[JSON] = []
    tool_calls: list[JSON] = []
    for kind, block, item_path in typed_items(content, path):
        if kind == "text":
            texts.append(str_field(block, "text", item_path))
        elif kind in ("thinking", "redacted_thinking"):
            thinking.append(thinking_block(block, item_path))
        elif kind == "tool_use":
            tool_calls.append(tool_use_to_call(block, item_path))
        else:
            raise unsupported(kind, item_path)
    message: JSON = {"role": "assistant", "content": "".join(texts) if texts or not tool_calls else None}
    reasoning = reasoning_text(thinking)
    if reasoning:
        message["reasoning_content"] = reasoning
    if thinking:
        message["thinking_blocks"] = thinking
    if tool_calls:
        message["tool_calls"] = tool_calls
    return message


def assistant_message_to_blocks(message: Mapping[str, Any], path: str) -> list[JSON]:
    """An OpenAI assistant message as Anthropic blocks: thinking, then text (and any refusal), then
    one ``tool_use`` per tool call."""
    blocks = openai_thinking_blocks(message, path)
    content = message.get("content")
    if content:
        blocks.extend(text_blocks(text_content(content, f"{path}.content")))
    if message.get("refusal"):
        blocks.append({"type": "text", "text": as_str(message["refusal"], f"{path}.refusal")})
    for i, call in enumerate(as_list(message.get("tool_calls") or [], f"{path}.tool_calls")):
        blocks.append(tool_call_to_use(as_dict(call, f"{path}.tool_calls[{i}]"), f"{path}.tool_calls[{i}]"))
    return blocks
